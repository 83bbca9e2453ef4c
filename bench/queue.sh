#!/usr/bin/env bash
# Queued calls (design §15): write units per queued call (in process), then enqueue rate, dispatch
# rate and low-load latency through 1 and 3 `toolgate serve` processes on SQLite and on a DynamoDB-API
# table (dynalite, started here on a free loopback port and stopped at the end).
#   bash bench/queue.sh [build_dir]     QUEUE_BENCH_CALLS (default 2000; 500 on dynalite)
set -euo pipefail
build_dir=${1:-build}
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$build_dir/bench/toolgate_queue_bench"
calls=${QUEUE_BENCH_CALLS:-2000}
work=$(mktemp -d)
pid=""
trap 'rm -rf "$work"; [ -n "$pid" ] && kill $pid 2>/dev/null || true' EXIT
"$bench" --units
for n in 1 3; do
  mkdir -p "$work/sqlite$n"
  "$bench" --toolgate "$build_dir/toolgate" --dir "$work/sqlite$n" --gateways "$n" --calls "$calls"
done
cli="$root/tests/node/node_modules/dynalite/cli.js"
[ -f "$cli" ] || bash "$root/scripts/install-deps.sh"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$cli" --port "$port" --host 127.0.0.1 --createTableMs 0 >/dev/null &
pid=$!
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.1
done
for n in 1 3; do
  mkdir -p "$work/dynamo$n"
  "$bench" --toolgate "$build_dir/toolgate" --dir "$work/dynamo$n" --gateways "$n" --calls "${QUEUE_BENCH_DYNAMO_CALLS:-500}" \
    --dynamodb "http://127.0.0.1:$port" --table "queue_bench_$n"
done
