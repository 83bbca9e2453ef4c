# Helpers shared by the MCP benchmarks (sourced by bench/mcp.sh and bench/mcp_saturation.sh).

# Waits (up to 30 s) for a line matching $2 in file $1 and prints it.
wait_line() {
  for _ in $(seq 300); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
    sleep 0.1
  done
  echo "$(basename "$0"): no '$2' in $1" >&2; cat "$1" >&2; return 1
}

# Waits (up to 10 s) until toolgate's /mcp at $1 lists tool $3 to token $2: the connector lists the
# server's tools once it has initialized.
wait_for_tool() {
  for _ in $(seq 100); do
    curl -s -X POST "$1" -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
      -H 'Accept: application/json, text/event-stream' -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' \
      | grep -q "$3" && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): $1 never listed $3" >&2; return 1
}
