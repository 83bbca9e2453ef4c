#!/usr/bin/env bash
# MCP benchmark (not a test): tools/call end to end through toolgate's /mcp to an MCP server, against the
# official SDK client calling that server directly, in the same run.
#   - the server: tests/node/mcp_fixture_server.mjs (the TypeScript SDK's Server over Streamable HTTP,
#     one Node process), tool test_simple_text (one text block), answering application/json (SSE with
#     RESPONSE=sse: then the direct client pays for parsing SSE in JavaScript, toolgate's client does not);
#   - the clients: tests/node/mcp_bench_client.mjs (the SDK's Client, one session per client, calls back
#     to back), with 1 client and with CLIENTS clients;
#   - toolgate: a `kind = "mcp"` connector in front of the same server, SQLite store, HS256 token, once per
#     sqlite_synchronous value in SYNC (default "normal full").
# Prints each run's JSON line and a summary: calls/s, the latency toolgate adds per call (its p50/p99
# minus the direct ones), and the CPU time per call of the server, of toolgate and of the client (from
# /proc and the driver; on a shared machine CPU per call is steadier than wall-clock numbers).
# Everything shares this machine's cores.
# Usage: bench/mcp.sh [BUILD_DIR] [SECONDS=10] [CLIENTS=64]. Needs node and tests/node's npm packages
# (scripts/install-deps.sh).
set -euo pipefail
build_dir=$(realpath "${1:-build}")
seconds=${2:-10}
clients=${3:-64}
syncs=${SYNC:-normal full}
cd "$(dirname "$0")/.."
node_dir=$(pwd)/tests/node
if [ ! -f "$node_dir/node_modules/@modelcontextprotocol/sdk/package.json" ]; then
  echo "bench/mcp.sh: @modelcontextprotocol/sdk is not installed (run scripts/install-deps.sh)" >&2
  exit 1
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/mcp_common.sh  # wait_line, wait_for_tool

PORT=0 JSON_RESPONSE=$([ "${RESPONSE:-json}" = sse ] && echo 0 || echo 1) node "$node_dir/mcp_fixture_server.mjs" >"$work/fixture.out" 2>"$work/fixture.log" & pids+=($!)
server_pid=$!
server_port=$(wait_line "$work/fixture.out" "listening on" | sed 's/.*://')
direct_url="http://127.0.0.1:$server_port/mcp"

cpu_ms() {  # pid: its user+system CPU time so far, in ms
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }' "/proc/$1/stat"
}

drive() {  # label url [token]: the driver's JSON line plus server_cpu_ms and toolgate_cpu_ms
  local line s0 t0 s1 t1
  s0=$(cpu_ms "$server_pid"); t0=$(cpu_ms "$tg")
  line=$(TOOLGATE_TOKEN="${3:-}" node "$node_dir/mcp_bench_client.mjs" "$2" test_simple_text "$clients_now" "$seconds")
  s1=$(cpu_ms "$server_pid"); t1=$(cpu_ms "$tg")
  line="${line%\}},\"server_cpu_ms\":$(awk "BEGIN{print $s1 - $s0}"),\"toolgate_cpu_ms\":$(awk "BEGIN{print $t1 - $t0}")}"
  echo "   $1: $line" >&2
  echo "$line"
}

summary() {  # label direct_json toolgate_json
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
label, d, t = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
per = lambda r, k: r[k] / max(1, r['all_calls'])
print(f"   {label}: direct {d['calls_per_s']} calls/s (p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms); "
      f"toolgate {t['calls_per_s']} calls/s (p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms, "
      f"{t['errors']} errors, {t['with_execution_id']}/{t['calls']} with an execution id); "
      f"added p50 {t['p50_ms'] - d['p50_ms']:+.2f} ms, p99 {t['p99_ms'] - d['p99_ms']:+.2f} ms")
print(f"      CPU per call: server {per(d, 'server_cpu_ms'):.3f} ms direct, {per(t, 'server_cpu_ms'):.3f} ms behind toolgate; "
      f"toolgate {per(t, 'toolgate_cpu_ms'):.3f} ms; client {d['client_cpu_ms_per_call']:.3f} ms direct, "
      f"{t['client_cpu_ms_per_call']:.3f} ms to toolgate")
PY
}

# Warm the server up first (V8 optimizes it as it runs), so the first measured run is not the slowest.
node "$node_dir/mcp_bench_client.mjs" "$direct_url" test_simple_text "$clients" 5 >/dev/null

export TOOLGATE_JWT_SECRET=bench-secret-for-toolgate-benchmarks-0123
tg=$server_pid  # toolgate's pid once it runs
for sync in $syncs; do
  cat > "$work/toolgate-$sync.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "$work/toolgate-$sync.db"
sqlite_synchronous = "$sync"
[connectors.fixture]
kind = "mcp"
url = "$direct_url"
tool_prefix = ""
timeout_ms = 10000
max_in_flight = 1000
TOML
  "$build_dir/toolgate" serve --config "$work/toolgate-$sync.toml" >"$work/toolgate-$sync.out" 2>"$work/toolgate-$sync.log" &
  tg=$!
  api_port=$(wait_line "$work/toolgate-$sync.out" "public API" | sed 's#.*:\([0-9]*\)/v1#\1#')
  token=$("$build_dir/toolgate" dev-token --config "$work/toolgate-$sync.toml" --tenant bench)
  gateway_url="http://127.0.0.1:$api_port/mcp"
  wait_for_tool "$gateway_url" "$token" test_simple_text

  echo "== MCP tools/call, toolgate with sqlite_synchronous=$sync, ${seconds} s per run"
  for clients_now in 1 "$clients"; do
    direct=$(drive "direct, $clients_now client(s)" "$direct_url")
    through=$(drive "toolgate, $clients_now client(s)" "$gateway_url" "$token")
    summary "$clients_now client(s)" "$direct" "$through"
  done
  echo "   store: $(sqlite3 "$work/toolgate-$sync.db" \
    "select group_concat(n || ' ' || o, ', ') from (select json_extract(attrs, '$.outcome') o, count(*) n from items where sk like 'EXEC#%' group by o)") executions recorded"
  kill $tg; wait $tg 2>/dev/null || true
done
