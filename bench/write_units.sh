#!/usr/bin/env bash
# DynamoDB write units per successful call (design §16): one `toolgate serve` on a DynamoDB-API table
# (dynalite, started here on a free loopback port and stopped at the end), 256 B and 1 KB inputs,
# one call at a time, 16 and 64 at once, with the units by kind of item written.
#   bash bench/write_units.sh [build_dir]     WRITE_UNITS_CALLS (default 300); WRITE_UNITS_SHARDS (the
#   connector's concurrency_shards, default 1); WRITE_UNITS_KEEP=1 keeps the work directory
set -euo pipefail
build_dir=${1:-build}
root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d)
pid=""
trap '[ -z "${WRITE_UNITS_KEEP:-}" ] && rm -rf "$work"; [ -n "$pid" ] && kill $pid 2>/dev/null || true' EXIT
cli="$root/tests/node/node_modules/dynalite/cli.js"
[ -f "$cli" ] || bash "$root/scripts/install-deps.sh"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$cli" --port "$port" --host 127.0.0.1 --createTableMs 0 >/dev/null &
pid=$!
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.1
done
"$build_dir/bench/toolgate_write_units_bench" --toolgate "$build_dir/toolgate" --dir "$work" \
  --dynamodb "http://127.0.0.1:$port" --calls "${WRITE_UNITS_CALLS:-300}" --concurrency 16,64 \
  --shards "${WRITE_UNITS_SHARDS:-1}"
