#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 30) from a copy of its seed corpus (fuzz/corpus/<target>), so new inputs
# never dirty the tree. Fails on any crash, leak, sanitizer report, timeout or out-of-memory; the
# reproducer is left in $BUILD_DIR/findings/<target>/ and named in the output.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-30}
targets=(fuzz_http_request fuzz_json_body fuzz_jwt fuzz_config fuzz_dynamodb_expressions fuzz_stored_item fuzz_mcp_jsonrpc fuzz_event_stream)

CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTOOLGATE_BUILD_FUZZERS=ON -DTOOLGATE_BUILD_TESTS=OFF -DTOOLGATE_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

failed=()
for t in "${targets[@]}"; do
  work="$build_dir/fuzz-work/$t"
  findings="$build_dir/findings/$t"
  rm -rf "$work" && mkdir -p "$work" "$findings"
  cp fuzz/corpus/"$t"/* "$work"/
  echo "== $t: ${seconds}s"
  if "$build_dir/fuzz/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$findings/" "$work" >"$build_dir/fuzz-$t.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^Done" "$build_dir/fuzz-$t.log" | tail -1
  else
    echo "!! $t failed: $(ls "$findings" | head -1) (log: $build_dir/fuzz-$t.log)"
    # The sanitizer's verdict, and what the target itself printed before it aborted.
    grep -a -E "ERROR|SUMMARY|runtime error|Check failed|terminate called|^[a-z0-9 ]+[^=]*: " "$build_dir/fuzz-$t.log" |
      grep -a -v -E "^(INFO|MS|NEW_FUNC|artifact_prefix|Base64|stat::|\s+#)" | cut -c1-400 | head -8 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, nothing found"
