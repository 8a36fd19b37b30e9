#!/usr/bin/env bash
# Times a full compose of a treefile into a fresh repo (packages already in
# the cache) against a recompose with unchanged inputs (the no-op path).
# Usage (as root): bench/compose.sh [TREEFILE] [CACHEDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
treefile=${1:-$here/treefiles/k8s-node.json}
cache=${2:-$here/cache}
keelson=${KEELSON:-$here/target/release/keelson}
[ -x "$keelson" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
now() { date +%s.%N; }

# Warm the package cache first so the figure is compose work, not downloads.
"$keelson" compose "$treefile" --repo "$work/warm" --cachedir "$cache" >/dev/null 2>&1
t0=$(now)
"$keelson" compose "$treefile" --repo "$work/repo" --cachedir "$cache" --write-composejson-to "$work/full.json" >/dev/null 2>"$work/full.log"
t1=$(now)
"$keelson" compose "$treefile" --repo "$work/repo" --cachedir "$cache" --write-composejson-to "$work/noop.json" >/dev/null 2>&1
t2=$(now)
full=$(echo "$t1 - $t0" | bc); noop=$(echo "$t2 - $t1" | bc)
grep -o '[a-z0-9 ./()→-]*: done in [0-9.]*s' "$work/full.log" | sed 's/^ */  step /'
printf 'full compose %.1f s; unchanged recompose %.1f s (%.1f%% of full); changed=%s\n' \
  "$full" "$noop" "$(echo "100 * $noop / $full" | bc -l)" \
  "$(grep -o '"changed": [a-z]*' "$work/noop.json" | cut -d' ' -f2)"
