#!/usr/bin/env bash
# Runs the store and service micro-benchmarks (Google Benchmark) from the build directory $1.
set -euo pipefail
build_dir=${1:-build}
"$build_dir/bench/toolgate_store_bench" "${@:2}"
bash bench/dynamodb.sh "$build_dir"
bash bench/e2e.sh "$build_dir"
