#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets with clang (ASan + UBSan) in $BUILD_DIR (default
# build-fuzz; `make fuzz FUZZ_DIR=build-asan` uses the tree `make asan` built) and runs each for
# FUZZ_SECONDS (default 30) from a copy of its seed corpus (fuzz/corpus/<target>), so new inputs
# never dirty the tree; FUZZ_JOBS targets at a time (default: one per core). Fails on any crash,
# leak, sanitizer report, timeout or out-of-memory; the reproducer is left in
# $BUILD_DIR/findings/<target>/ and named in the output.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-30}
targets=(fuzz_http_request fuzz_json_body fuzz_jwt fuzz_config fuzz_dynamodb_expressions fuzz_stored_item fuzz_mcp_jsonrpc fuzz_event_stream fuzz_own_events)

# A tree configured with the fuzz targets already (`make asan` configures build-asan so: clang, ASan +
# UBSan, every library instrumented for coverage) is used as it is; CI fuzzes in that tree rather than
# build the libraries under ASan a second time. Otherwise $build_dir is configured here at -O1, as
# libFuzzer's own documentation builds: the instrumented build is the larger part of this step, and
# -O1 compiles it ~10 % faster than -O2 (the engine's coroutine batch: 51 s against 62 s).
if ! grep -qs "^TOOLGATE_BUILD_FUZZERS:BOOL=ON" "$build_dir/CMakeCache.txt"; then
  CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
    -DTOOLGATE_BUILD_FUZZERS=ON -DTOOLGATE_BUILD_TESTS=OFF -DTOOLGATE_BUILD_BENCHMARKS=OFF >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

# One target's run; its verdict goes to $build_dir/fuzz-$t.verdict (printed in order afterwards).
run_target() {
  local t=$1 work="$build_dir/fuzz-work/$1" findings="$build_dir/findings/$1" verdict="$build_dir/fuzz-$1.verdict"
  rm -rf "$work" && mkdir -p "$work" "$findings"
  cp fuzz/corpus/"$t"/* "$work"/
  if "$build_dir/fuzz/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$findings/" "$work" >"$build_dir/fuzz-$t.log" 2>&1; then
    { echo "== $t: ${seconds}s"; grep -E "^stat::number_of_executed_units|^Done" "$build_dir/fuzz-$t.log" | tail -1; } >"$verdict"
  else
    {
      echo "== $t: ${seconds}s"
      echo "!! $t failed: $(ls "$findings" | head -1) (log: $build_dir/fuzz-$t.log)"
      # The sanitizer's verdict, and what the target itself printed before it aborted.
      grep -a -E "ERROR|SUMMARY|runtime error|Check failed|terminate called|^[a-z0-9 ]+[^=]*: " "$build_dir/fuzz-$t.log" |
        grep -a -v -E "^(INFO|MS|NEW_FUNC|artifact_prefix|Base64|stat::|\s+#)" | cut -c1-400 | head -8 || true
      echo "FAILED"
    } >"$verdict"
  fi
}

# Each target is one single-threaded process: as many run at once as there are cores.
parallel=${FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
  rm -f "$build_dir/fuzz-$t.verdict"
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=()
for t in "${targets[@]}"; do
  verdict="$build_dir/fuzz-$t.verdict"
  if [ ! -f "$verdict" ]; then
    echo "!! $t: no verdict (the run itself failed)"
    failed+=("$t")
    continue
  fi
  grep -v "^FAILED$" "$verdict"
  grep -q "^FAILED$" "$verdict" && failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, $parallel at a time, nothing found"
