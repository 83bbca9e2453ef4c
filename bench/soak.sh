#!/usr/bin/env bash
# A bounded soak run: SOAK_SECONDS (default 240) of mixed traffic at 3 `toolgate serve` processes on
# one SQLite store, with random downstream failures and outage windows, invariants checked as it
# runs (see bench/soak.cc). Stops by itself; exits 1 on any invariant violation. Results of a run
# are recorded in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
make --no-print-directory build BUILD_DIR="$build_dir" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build_dir/bench/toolgate_soak" --toolgate "$build_dir/toolgate" --seconds "${SOAK_SECONDS:-240}" \
  --gateways "${SOAK_GATEWAYS:-3}" --clients "${SOAK_CLIENTS:-32}" --retention "${SOAK_RETENTION_S:-60}" --dir "$work"
