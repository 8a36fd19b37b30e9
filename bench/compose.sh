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

# A configuration change: the treefile plus a file and a postprocess line
# that differ per variant (the package set stays the same).
variant() {
  mkdir -p "$work/$1"
  echo "bench $1" > "$work/$1/motd"
  cat > "$work/$1/t.json" <<JSON
{"include": "$treefile",
 "add-files": [["motd", "/usr/lib/keelson/bench-motd"]],
 "postprocess": ["echo $1 > /usr/lib/keelson/bench-change"]}
JSON
  echo "$work/$1/t.json"
}
compose() { "$keelson" compose "$@" --repo "$work/repo" --cachedir "$cache"; }

# Warm the package cache and the install cache, so the figures are compose
# work, not downloads. Composes into one repo seed the next one's users and
# groups from the previous commit (part of the install cache's key), so the
# second warm-up fills the entry the measured composes use.
compose "$treefile" >/dev/null 2>&1
compose "$(variant warm)" >/dev/null 2>&1

t0=$(now)
compose "$(variant full)" --no-install-cache --write-composejson-to "$work/full.json" >/dev/null 2>"$work/full.log"
t1=$(now)
t2=$(now)
compose "$(variant config)" --write-composejson-to "$work/config.json" >/dev/null 2>"$work/config.log"
t3=$(now)
compose "$work/config/t.json" --write-composejson-to "$work/noop.json" >/dev/null 2>&1
t4=$(now)

full=$(echo "$t1 - $t0" | bc); config=$(echo "$t3 - $t2" | bc); noop=$(echo "$t4 - $t3" | bc)
echo "full compose (packages installed afresh):"; steps "$work/full.log"
echo "recompose after a configuration change (packages from the install cache):"; steps "$work/config.log"
printf 'full %.1f s; after a config change %.1f s (%.2fx of full); unchanged %.1f s (%.1f%% of full)\n' \
  "$full" "$config" "$(echo "$config / $full" | bc -l)" "$noop" "$(echo "100 * $noop / $full" | bc -l)"
grep -q '"changed": true' "$work/config.json" || { echo "the config change wrote no commit" >&2; exit 1; }
grep -q "a copy of the install cache's entry" "$work/config.log" || { echo "the config change did not use the install cache" >&2; exit 1; }
grep -q '"changed": false' "$work/noop.json" || { echo "the unchanged recompose wrote a commit" >&2; exit 1; }
