#!/usr/bin/env bash
# MCP benchmark (not a test): is toolgate the bottleneck in front of a Node MCP server when each has
# cores of its own? bench/mcp.sh runs everything on shared cores, where the SDK client's own CPU (about
# twice the server's per call) sets the pace and toolgate's CPU per call depends on how busy it is
# kept. Here:
#   - the server (tests/node/mcp_fixture_server.mjs, the TypeScript SDK's Server, tool test_simple_text,
#     JSON answers) is pinned to the last core, alone;
#   - toolgate (kind = "mcp" connector, SQLite with sqlite_synchronous = $SYNC (default "full"), default
#     io_threads: one loop per core it may run on) is pinned to the other cores, and so is the load
#     generator, wrk (C, CLIENTS connections, a `tools/call` per request): toolgate shares its cores
#     with wrk, the server has its own;
#   - direct (wrk -> the server, one session) and through toolgate (wrk -> /mcp), ROUNDS times each,
#     alternating, SECONDS each.
# Prints calls/s, p50, each process's CPU time per call and share of its cores. The server is the
# bottleneck when its core is near 100 % and toolgate's CPU per call is below the server's.
# Usage: bench/mcp_saturation.sh [BUILD_DIR] [SECONDS=8] [CLIENTS=64] [ROUNDS=2]. Needs ≥ 2 cores, wrk,
# taskset and tests/node's npm packages (scripts/install-deps.sh; bench/e2e.sh installs wrk).
set -euo pipefail
build_dir=$(realpath "${1:-build}")
seconds=${2:-8}
clients=${3:-64}
rounds=${4:-2}
sync=${SYNC:-full}
cd "$(dirname "$0")/.."
node_dir=$(pwd)/tests/node
cores=$(nproc)
if [ "$cores" -lt 2 ]; then echo "bench/mcp_saturation.sh: needs at least 2 cores" >&2; exit 1; fi
command -v wrk >/dev/null || { echo "bench/mcp_saturation.sh: wrk is not installed (bench/e2e.sh installs it)" >&2; exit 1; }
server_core=$((cores - 1))
gateway_cores="0-$((cores - 2))"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/mcp_common.sh  # wait_line, wait_for_tool
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # user+system CPU time, in clock ticks
hz=$(getconf CLK_TCK)

PORT=0 JSON_RESPONSE=1 taskset -c "$server_core" node "$node_dir/mcp_fixture_server.mjs" >"$work/fixture.out" \
  2>"$work/fixture.log" & pids+=($!)
server=$!
server_port=$(wait_line "$work/fixture.out" "listening on" | sed 's/.*://')

export TOOLGATE_JWT_SECRET=bench-secret-for-toolgate-benchmarks-0123
cat > "$work/toolgate.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "$work/toolgate.db"
sqlite_synchronous = "$sync"
[connectors.fixture]
kind = "mcp"
url = "http://127.0.0.1:$server_port/mcp"
tool_prefix = ""
timeout_ms = 10000
max_in_flight = 1000
TOML
taskset -c "$gateway_cores" "$build_dir/toolgate" serve --config "$work/toolgate.toml" >"$work/toolgate.out" \
  2>"$work/toolgate.log" & pids+=($!)
gateway=$!
api_port=$(wait_line "$work/toolgate.out" "public API" | sed 's#.*:\([0-9]*\)/v1#\1#')
token=$("$build_dir/toolgate" dev-token --config "$work/toolgate.toml" --tenant bench)
wait_for_tool "http://127.0.0.1:$api_port/mcp" "$token" test_simple_text
session=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$server_port/mcp" -H 'Content-Type: application/json' \
  -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' \
  | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }' | tr -d '\r')

script() {  # file extra-header: a wrk script posting one tools/call
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
$2
LUA
}
script "$work/direct.lua" "wrk.headers[\"Mcp-Session-Id\"] = \"$session\""
script "$work/gateway.lua" "wrk.headers[\"Authorization\"] = \"Bearer $token\""

run() {  # label url script
  local s0 g0 s1 g1 n
  # Warm-up (the server's JIT, toolgate's connections to it), then the measured run.
  taskset -c "$gateway_cores" wrk -t1 -c"$clients" -d2s -s "$3" "$2" >/dev/null
  s0=$(ticks "$server"); g0=$(ticks "$gateway")
  taskset -c "$gateway_cores" wrk -t1 -c"$clients" -d"${seconds}s" --latency -s "$3" "$2" >"$work/wrk.txt"
  s1=$(ticks "$server"); g1=$(ticks "$gateway")
  n=$(grep -o '[0-9]* requests in' "$work/wrk.txt" | cut -d' ' -f1)
  python3 - "$1" "$n" "$seconds" "$hz" "$((s1 - s0))" "$((g1 - g0))" "$(grep -c 'Non-2xx' "$work/wrk.txt" || true)" \
    "$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")" "$((cores - 1))" <<'PY'
import sys
label, n, secs, hz, s, g, bad, p50, gw_cores = sys.argv[1:]
n, secs, hz, s, g, gw_cores = int(n), float(secs), int(hz), int(s), int(g), int(gw_cores)
us = lambda t: t * 1e6 / hz / max(1, n)
share = lambda t, c: 100.0 * t / hz / secs / c
line = f"   {label}: {n / secs:,.0f} calls/s, p50 {p50}; server {us(s):.0f} us/call ({share(s, 1):.0f} % of its core)"
if label != "direct":
    line += f"; toolgate {us(g):.0f} us/call ({share(g, gw_cores):.0f} % of its {gw_cores} core(s), shared with wrk)"
print(line + ("" if bad == "0" else "; NON-2xx ANSWERS"))
PY
}

echo "== MCP tools/call at saturation (sqlite_synchronous = $sync): the server alone on core $server_core; toolgate and wrk on $gateway_cores; ${clients} connections, ${seconds} s"
for _ in $(seq "$rounds"); do
  run "direct" "http://127.0.0.1:$server_port/mcp" "$work/direct.lua"
  run "through toolgate" "http://127.0.0.1:$api_port/mcp" "$work/gateway.lua"
done
grep -m1 "event loops" "$work/toolgate.log" | sed 's/^.*\] /   toolgate: /'
kill "$gateway"; wait "$gateway" 2>/dev/null || true
echo "   store: $(sqlite3 "$work/toolgate.db" \
  "select group_concat(n || ' ' || o, ', ') from (select json_extract(attrs, '$.outcome') o, count(*) n from items where sk like 'EXEC#%' group by o)") executions recorded"
