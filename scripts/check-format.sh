#!/usr/bin/env bash
# `make check-format`: fails (exit 1) when a C++ file of the repository is not formatted as
# .clang-format says (clang-format 14, Debian's), printing clang-format's complaints. `make format`
# rewrites the files in place. Checks every tracked .h/.cc (a second or two), so a fresh clone is
# checked the same way as a branch.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || bash scripts/install-deps.sh
mapfile -t files < <(git ls-files '*.h' '*.cc' ':!:tests/node/*')
report=$(mktemp)
trap 'rm -f "$report"' EXIT
if ! clang-format --dry-run -Werror "${files[@]}" 2>"$report"; then
  grep -E "error:" "$report" | sed 's/:[0-9]*:[0-9]*: error:.*//' | sort -u | sed 's/^/not formatted: /' | head -50
  echo "run 'make format' to fix ($(grep -c 'error:' "$report") places)"
  exit 1
fi
echo "format: ${#files[@]} files as .clang-format says"
