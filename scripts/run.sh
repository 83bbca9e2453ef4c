#!/usr/bin/env bash
# Starts toolgate from the build directory given as $1.
set -euo pipefail
build_dir=${1:-build}
exec "$build_dir/toolgate" serve "${@:2}"
