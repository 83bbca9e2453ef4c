#!/usr/bin/env bash
# Runs the micro-benchmarks (Google Benchmark) and the end-to-end scripts from the build directory $1.
# Extra arguments go to the store benchmark.
set -euo pipefail
build_dir=${1:-build}
"$build_dir/bench/toolgate_store_bench" "${@:2}"
"$build_dir/bench/toolgate_schema_bench"       # input schema check and request shaping per call
"$build_dir/bench/toolgate_tls_client_bench"   # kept-alive HTTPS vs plain, handshakes per 1,000 calls
bash bench/dynamodb.sh "$build_dir"
bash bench/queue.sh "$build_dir"              # queued calls: rates, latency, write units
bash bench/write_units.sh "$build_dir"        # DynamoDB write units per successful call, by item
bash bench/e2e.sh "$build_dir"                 # includes an HTTPS downstream
bash bench/mcp.sh "$build_dir"                 # MCP tools/call through toolgate vs the SDK client directly
bash bench/mcp_saturation.sh "$build_dir"      # the same at saturation, the server on a core of its own
bash bench/rss.sh "$build_dir" 120             # resident memory under 64 connections (600 s for the §16 figure)
