#!/usr/bin/env bash
# Acquire+release throughput of the connector semaphore on a DynamoDB-API server (dynalite, started
# here on a free loopback port and stopped at the end), with 1, 4 and 16 shards.
#   bash bench/dynamodb.sh [build_dir]
set -euo pipefail
build_dir=${1:-build}
root="$(cd "$(dirname "$0")/.." && pwd)"
cli="$root/tests/node/node_modules/dynalite/cli.js"
[ -f "$cli" ] || bash "$root/scripts/install-deps.sh"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$cli" --port "$port" --host 127.0.0.1 --createTableMs 0 >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.1
done
TOOLGATE_BENCH_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" \
  "$build_dir/bench/toolgate_store_bench" --benchmark_filter=DynamoDb "${@:2}"
