#!/usr/bin/env bash
# `make check-layers`: fails (exit 1) when a file includes a header of a higher layer, so the layers
# in the tree stay what STYLE.md says they are. CMake's target_link_libraries only stops a lower
# layer from *linking* a higher one; a header-only include slips past it, and this catches it.
#
# Every C++ file under src/, include/ and app/ must belong to a layer of the table below, and every
# `#include "..."` that names a file of this repository must resolve (next to the including file,
# then under include/, then under src/) to a file of a layer at or below the includer's. A project
# header of no layer is an error too: a new directory is added to the table on purpose, not by
# accident. Some layers also refuse outside headers (the domain does no I/O). Tests, benchmarks,
# fuzzers and examples may include anything and are not checked.
#
# Prints one line per violation — file:line: the include, and the rule it breaks. Exit 0: clean;
# 1: violations; 2: the script itself is misused. Needs only bash and coreutils; takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# The layers, lowest first: rank, name, then the paths of the layer (a directory ends in "/"). A
# file may include headers of its own rank or lower; config and auth share a rank, and so do the
# store and net (the HTTP client), which both sit on the domain: the DynamoDB store sends its
# requests through the net client (one network client for the store and the downstreams), and the
# net layer has no use for the store. A directory that does not exist yet simply holds nothing.
LAYERS=(
  "0 domain     src/domain/ include/toolgate/domain/ include/toolgate/clock.h include/toolgate/status_macros.h"
  "1 store      src/store/ include/toolgate/store/"
  "1 net        src/net/ include/toolgate/net/"
  "2 services   src/services/ include/toolgate/services/"
  "3 config     src/config/ include/toolgate/config.h include/toolgate/store_factory.h"
  "3 auth       src/auth/ include/toolgate/auth/"
  "4 engine     src/engine/ include/toolgate/engine/"
  "5 connectors src/connectors/ include/toolgate/connectors/"
  "6 api        src/api/"
  "7 app        app/"
)

# Outside headers a layer may not include (prefixes of the include path, either spelling).
# The domain is pure: no database, network, TLS/crypto, logging, files or metrics. A store adapter
# never includes a breaker or services header: that is the layer order above (store < services).
FORBIDDEN=(
  "domain sqlite3.h boost/asio boost/beast openssl/ spdlog/ fmt/ prometheus/ toml++/ fstream iostream filesystem"
)

# Where the files to check live, and how C++ files are named.
ROOTS=(src include app)
CPP_FILE='\.(h|hh|hpp|cc|cpp)$'
INCLUDE_LINE='^[[:space:]]*#[[:space:]]*include[[:space:]]*(["<])([^">]+)[">]'

if [ $# -ne 0 ]; then
  echo "usage: $0   (checks the tree it lives in)" >&2
  exit 2
fi

# The helpers answer in REPLY (no subshell per include keeps the whole check near a second).

# layer_of PATH: REPLY="rank name" of the layer holding the repository-relative PATH, or empty.
layer_of() {
  local path=$1 row rank name entries entry
  REPLY=
  for row in "${LAYERS[@]}"; do
    read -r rank name entries <<<"$row"
    for entry in $entries; do
      if [[ $entry == */ && $path == "$entry"* ]] || [[ $path == "$entry" ]]; then
        REPLY="$rank $name"
        return 0
      fi
    done
  done
}

# forbidden_for NAME INCLUDE: REPLY=the forbidden prefix INCLUDE matches for layer NAME, or empty.
forbidden_for() {
  local name=$1 inc=$2 row layer prefixes p
  REPLY=
  for row in "${FORBIDDEN[@]}"; do
    read -r layer prefixes <<<"$row"
    [ "$layer" = "$name" ] || continue
    for p in $prefixes; do
      if [[ $inc == "$p"* ]]; then
        REPLY=$p
        return 0
      fi
    done
  done
}

# resolve FILE INCLUDE QUOTED: REPLY=the repository-relative path INCLUDE names, or empty when it
# is not a file of this repository. Quoted includes look next to FILE first, as the compiler does.
resolve() {
  local file=$1 inc=$2 quoted=$3 candidate
  local candidates=("include/$inc" "src/$inc")
  [ "$quoted" = 1 ] && candidates=("${file%/*}/$inc" "${candidates[@]}")
  REPLY=
  for candidate in "${candidates[@]}"; do
    if [ -f "$candidate" ]; then
      if [[ $candidate == *./* ]]; then candidate=$(realpath -m --relative-to=. "$candidate"); fi
      REPLY=$candidate
      return 0
    fi
  done
}

violations=0
report() {
  echo "$1"
  violations=$((violations + 1))
}

existing_roots=()
for r in "${ROOTS[@]}"; do if [ -d "$r" ]; then existing_roots+=("$r"); fi; done
mapfile -t files < <(find "${existing_roots[@]}" -type f | grep -E "$CPP_FILE" | sort)

for file in "${files[@]}"; do
  layer_of "$file"
  from=$REPLY
  if [ -z "$from" ]; then
    report "$file: belongs to no layer: add its directory to LAYERS in scripts/check-layers.sh"
    continue
  fi
  read -r from_rank from_name <<<"$from"
  while IFS= read -r hit; do
    line=${hit%%:*}
    text=${hit#*:}
    [[ $text =~ $INCLUDE_LINE ]] || continue
    quoted=0
    if [ "${BASH_REMATCH[1]}" = '"' ]; then quoted=1; fi
    inc=${BASH_REMATCH[2]}
    if [ "$quoted" = 1 ]; then where="$file:$line: #include \"$inc\""; else where="$file:$line: #include <$inc>"; fi

    resolve "$file" "$inc" "$quoted"
    target=$REPLY
    if [ -n "$target" ]; then
      layer_of "$target"
      to=$REPLY
      if [ -z "$to" ]; then
        report "$where: $target belongs to no layer: add it to LAYERS in scripts/check-layers.sh"
        continue
      fi
      read -r to_rank to_name <<<"$to"
      if [ "$to_rank" -gt "$from_rank" ]; then
        report "$where: $from_name (layer $from_rank) may not include $to_name (layer $to_rank)"
      fi
    elif [[ $inc == toolgate/* ]]; then
      report "$where: no such project header"
    else
      forbidden_for "$from_name" "$inc"
      bad=$REPLY
      if [ -n "$bad" ]; then report "$where: $from_name may not include $bad* (FORBIDDEN in scripts/check-layers.sh)"; fi
    fi
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$file" || true)
done

if [ "$violations" -gt 0 ]; then
  echo "check-layers: $violations violation(s) in ${#files[@]} files" >&2
  exit 1
fi
echo "check-layers: ${#files[@]} files, layers respected"
