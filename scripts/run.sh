#!/usr/bin/env bash
# `make run`: toolgate on the embedded SQLite store with examples/toolgate.toml and two demo
# downstreams (crm on :9101, email on :9102). Ctrl-C stops everything.
set -euo pipefail
build_dir=${1:-build}
cd "$(dirname "$0")/.."

if [ -z "${TOOLGATE_JWT_SECRET:-}" ]; then
  export TOOLGATE_JWT_SECRET="dev-secret-change-me-0123456789abcdef"
  echo "toolgate: TOOLGATE_JWT_SECRET was not set; using a development secret for this run"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
"$build_dir/examples/demo_downstream" --port 9101 --name crm --fail-percent 5 & pids+=($!)
"$build_dir/examples/demo_downstream" --port 9102 --name email --fail-percent 0 & pids+=($!)

token=$("$build_dir/toolgate" dev-token --config examples/toolgate.toml --tenant demo-tenant --role operator)
cat <<MSG

Try it (token for tenant demo-tenant, valid 1 h):
  TOKEN=$token
  curl -s -X POST localhost:8080/v1/tools/crm.update_opportunity/invoke \\
       -H "Authorization: Bearer \$TOKEN" -d '{"input":{"id":42,"stage":"won"}}'
  curl -s localhost:9901/admin/connectors
  $build_dir/toolgate status --config examples/toolgate.toml
  $build_dir/toolgate slo status --config examples/toolgate.toml

The operator dashboard: http://127.0.0.1:9901/

MSG
"$build_dir/toolgate" serve --config examples/toolgate.toml
