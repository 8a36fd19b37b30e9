#!/usr/bin/env bash
# Times, in one run with the .debs already in the cache:
#   full:    a compose of TREEFILE into a fresh repo, packages installed
#            afresh (--no-install-cache): the anchor;
#   config:  a recompose after a configuration change that leaves the
#            package set alone (an extra file and a postprocess line, as a
#            CI change to a unit or fragment would), the packages copied
#            from the install cache;
#   noop:    a recompose with unchanged inputs (nothing written).
# Usage (as root): bench/compose.sh [TREEFILE] [CACHEDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
treefile=$(realpath "${1:-$here/treefiles/k8s-node.json}")
cache=${2:-$here/cache}
keelson=${KEELSON:-$here/target/release/keelson}
[ -x "$keelson" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
now() { date +%s.%N; }
steps() { grep -o '[a-z0-9 ./()→'"'"'-]*: done in [0-9.]*s' "$1" | sed 's/^ */  step /'; }

# Warm the package cache and the install cache first, so the figures are
# compose work, not downloads.
"$keelson" compose "$treefile" --repo "$work/warm" --cachedir "$cache" >/dev/null 2>&1

t0=$(now)
"$keelson" compose "$treefile" --repo "$work/repo" --cachedir "$cache" --no-install-cache \
  --write-composejson-to "$work/full.json" >/dev/null 2>"$work/full.log"
t1=$(now)

# The configuration change: the same treefile plus a file and a line.
mkdir -p "$work/changed"
echo "bench $(date +%s)" > "$work/changed/motd"
cat > "$work/changed/changed.json" <<JSON
{"include": "$treefile",
 "add-files": [["motd", "/usr/lib/keelson/bench-motd"]],
 "postprocess": ["echo configuration change > /usr/lib/keelson/bench-change"]}
JSON
t2=$(now)
"$keelson" compose "$work/changed/changed.json" --repo "$work/repo" --cachedir "$cache" \
  --write-composejson-to "$work/config.json" >/dev/null 2>"$work/config.log"
t3=$(now)
"$keelson" compose "$work/changed/changed.json" --repo "$work/repo" --cachedir "$cache" \
  --write-composejson-to "$work/noop.json" >/dev/null 2>&1
t4=$(now)

full=$(echo "$t1 - $t0" | bc); config=$(echo "$t3 - $t2" | bc); noop=$(echo "$t4 - $t3" | bc)
echo "full compose (packages installed afresh):"; steps "$work/full.log"
echo "recompose after a configuration change (packages from the install cache):"; steps "$work/config.log"
printf 'full %.1f s; after a config change %.1f s (%.2fx of full); unchanged %.1f s (%.1f%% of full)\n' \
  "$full" "$config" "$(echo "$config / $full" | bc -l)" "$noop" "$(echo "100 * $noop / $full" | bc -l)"
grep -q '"changed": true' "$work/config.json" || { echo "the config change wrote no commit" >&2; exit 1; }
grep -q '"changed": false' "$work/noop.json" || { echo "the unchanged recompose wrote a commit" >&2; exit 1; }
