#!/usr/bin/env bash
# End-to-end benchmark (not a test): wrk with 64 connections against
#   1. the downstream directly (baseline),
#   2. nginx as a plain reverse proxy with max_conns on the upstream (the hop a user would otherwise add),
#   3. toolgate POST /v1/tools/bench.echo/invoke with HS256 tokens, on SQLite (synchronous normal and full).
# Usage: bench/e2e.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS=64]. Installs wrk and nginx-light when missing (as root).
set -euo pipefail
build_dir=$(realpath "${1:-build}")
duration=${2:-10}
connections=${3:-64}
threads=$(( connections < 2 ? 1 : 2 ))
cd "$(dirname "$0")/.."
for p in wrk nginx-light; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
done
if [ -n "${missing:-}" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

down_port=19101; nginx_port=19102; api_port=19103; admin_port=19104
"$build_dir/examples/demo_downstream" --port $down_port --name bench --fail-percent 0 --latency-ms 0 >/dev/null & pids+=($!)

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"input":{"id":42,"stage":"won"}}'
wrk.headers["Content-Type"] = "application/json"
if os.getenv("TOKEN") then wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN") end
LUA

run_wrk() {  # name url
  echo "== $1"
  wrk -t$threads -c$connections -d"${duration}s" --latency -s "$work/post.lua" "$2" | grep -E "Requests/sec|Latency|50%|90%|99%|Non-2xx|Socket errors"
}

sleep 0.3
run_wrk "downstream directly" "http://127.0.0.1:$down_port/bench.echo"

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream down { server 127.0.0.1:$down_port max_conns=64; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://down; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g "daemon off;" & pids+=($!)
sleep 0.5
run_wrk "nginx reverse proxy (max_conns=64)" "http://127.0.0.1:$nginx_port/bench.echo"

export TOOLGATE_JWT_SECRET=bench-secret
for sync in normal full; do
  cat > "$work/toolgate-$sync.toml" <<TOML
[server]
listen = "127.0.0.1:$api_port"
store_threads = 16
[admin]
listen = "127.0.0.1:$admin_port"
[store]
path = "$work/toolgate-$sync.db"
sqlite_synchronous = "$sync"
[connectors.bench]
base_url = "http://127.0.0.1:$down_port"
max_in_flight = 1000
TOML
  "$build_dir/toolgate" serve --config "$work/toolgate-$sync.toml" >/dev/null 2>"$work/toolgate-$sync.log" &
  tg=$!
  sleep 0.7
  TOKEN=$("$build_dir/toolgate" dev-token --config "$work/toolgate-$sync.toml" --tenant bench) \
    run_wrk "toolgate (sqlite synchronous=$sync)" "http://127.0.0.1:$api_port/v1/tools/bench.echo/invoke"
  echo "   store: $(sqlite3 "$work/toolgate-$sync.db" "select count(*) from items where sk like 'EXEC#%'") executions recorded"
  kill $tg; wait $tg 2>/dev/null || true
done
