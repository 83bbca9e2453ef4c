#!/usr/bin/env bash
# Memory under sustained load (not a test): wrk with 64 connections against toolgate's
# POST /v1/tools/bench.echo/invoke (default config: SQLite, synchronous = "full") for DURATION_S,
# sampling the gateway's resident set (VmRSS) every SAMPLE_S. Prints the samples, the peak, and the
# change between the second and the last minute's average — the first minute is warm-up, while SQLite's
# page caches and the allocator's arenas fill (DESIGN §16: <= 64 MB, flat within 5 %).
# With VARY=1 the calls are a fleet's rather than one client's: TENANTS (default 500) tenants, each
# with its own token, every call with an idempotency key and an input of its own, so per-tenant,
# per-token and per-key state (the token memory, metrics, intents) is exercised as well.
# Usage: [VARY=1 [TENANTS=500]] bench/rss.sh [BUILD_DIR] [DURATION_S=600] [CONNECTIONS=64] [SAMPLE_S=10]
set -euo pipefail
build_dir=$(realpath "${1:-build}")
duration=${2:-600}
connections=${3:-64}
sample=${4:-10}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
down_port=$(free_port); api_port=$(free_port); admin_port=$(free_port)
"$build_dir/examples/demo_downstream" --port "$down_port" --name bench --fail-percent 0 --latency-ms 0 >/dev/null &
pids+=($!)

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"input":{"id":42,"stage":"won"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
LUA
vary=${VARY:-0}
tenants=${TENANTS:-500}
if [ "$vary" = 1 ]; then
  # Tokens are made below, once the config exists; each wrk thread numbers its own calls.
  cat > "$work/post.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local n = 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("thread_id", threads) end
function request()
  n = n + 1
  local key = thread_id .. "-" .. n
  local body = '{"input":{"id":' .. n .. ',"stage":"won"},"idempotency_key":"k-' .. key .. '"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(n * 7 + thread_id) % #tokens + 1]}, body)
end
LUA
fi
cat > "$work/toolgate.toml" <<TOML
[server]
listen = "127.0.0.1:$api_port"
[admin]
listen = "127.0.0.1:$admin_port"
[store]
path = "$work/toolgate.db"
[connectors.bench]
base_url = "http://127.0.0.1:$down_port"
max_in_flight = 1000
TOML
export TOOLGATE_JWT_SECRET=bench-secret-for-toolgate-benchmarks-0123
"$build_dir/toolgate" serve --config "$work/toolgate.toml" >/dev/null 2>"$work/toolgate.log" &
tg=$!
pids+=($tg)
sleep 0.7
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
echo "idle RSS: $(( $(rss_kb $tg) / 1024 )) MB"

if [ "$vary" = 1 ]; then
  for t in $(seq 1 "$tenants"); do
    "$build_dir/toolgate" dev-token --config "$work/toolgate.toml" --tenant "tenant-$t" --ttl 86400
  done > "$work/tokens"
  export TOKENS="$work/tokens"
  echo "$tenants tenants, a token each; an idempotency key and an input of its own per call"
fi
TOKEN=$("$build_dir/toolgate" dev-token --config "$work/toolgate.toml" --tenant bench) \
  wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" \
  "http://127.0.0.1:$api_port/v1/tools/bench.echo/invoke" > "$work/wrk.txt" &
wrk_pid=$!
pids+=($wrk_pid)
: > "$work/rss"
elapsed=0
while kill -0 "$wrk_pid" 2>/dev/null && [ "$elapsed" -lt $(( duration + 5 )) ]; do
  sleep "$sample"
  elapsed=$(( elapsed + sample ))
  kill -0 "$wrk_pid" 2>/dev/null || break
  # VmRSS, then its anonymous (heap) and file-backed (binary, memory-mapped store) parts, in kB.
  echo "$elapsed $(rss_kb $tg) $(awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a, f}' "/proc/$tg/status")" |
    tee -a "$work/rss"
done
wait "$wrk_pid" || true
grep -E "Requests/sec|Latency|50%|99%|Non-2xx|Socket errors|requests in" "$work/wrk.txt"
echo "store: $(sqlite3 "$work/toolgate.db" "select count(*) from items where sk like 'EXEC#%'") executions recorded"
awk -v s="$sample" '
  { t[NR] = $1; r[NR] = $2; a[NR] = $3; f[NR] = $4; if ($2 > peak) peak = $2 }
  END {
    n = int(60 / s); if (n < 1) n = 1
    if (NR < 3 * n) { printf "RSS peak %.1f MB (run too short to compare minutes)\n", peak / 1024; exit }
    for (i = n + 1; i <= 2 * n; i++) second += r[i]
    for (i = NR - n + 1; i <= NR; i++) last += r[i]
    second /= n; last /= n
    printf "RSS peak %.1f MB; second minute %.1f MB, last minute %.1f MB (%+.1f %%); last sample: %.1f MB anonymous, %.1f MB file-backed\n",
      peak / 1024, second / 1024, last / 1024, 100 * (last - second) / second, a[NR] / 1024, f[NR] / 1024
  }' "$work/rss"
