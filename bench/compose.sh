#!/usr/bin/env bash
# Times, in one run with the .debs already in the cache:
#   full:    a compose into the repo with the packages installed and the
#            initramfs built afresh (--no-install-cache --no-initramfs-cache):
#            the anchor;
#   file:    a recompose after changing one add-files file (the package
#            set and everything the initramfs holds stay the same): the
#            packages and the initramfs come from the caches;
#   noop:    a recompose with unchanged inputs (nothing written);
#   package: a recompose after adding one package (`tree`): mmdebstrap and
#            dracut run again (the package set is in both caches' keys).
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

# The treefile plus one add-files file whose content differs per variant
# (and, with a second argument, one more package).
variant() {
  mkdir -p "$work/$1"
  echo "bench $1" > "$work/$1/motd"
  local pkgs=""
  [ -n "${2:-}" ] && pkgs=", \"packages\": [\"$2\"]"
  cat > "$work/$1/t.json" <<JSON
{"include": "$treefile",
 "add-files": [["motd", "/usr/lib/keelson/bench-motd"]]$pkgs}
JSON
  echo "$work/$1/t.json"
}
compose() { "$keelson" compose "$@" --repo "$work/repo" --cachedir "$cache"; }
timed() { # NAME TREEFILE [ARGS...]: compose, log to NAME.log, print seconds
  local name=$1 t0 t1; shift
  t0=$(now)
  compose "$@" --write-composejson-to "$work/$name.json" >/dev/null 2>"$work/$name.log" \
    || { cat "$work/$name.log" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc
}

# Warm the package cache and both compose caches, so the figures are
# compose work, not downloads. Composes into one repo seed the next one's
# users and groups from the previous commit (part of the install cache's
# key), so the second warm-up fills the entries the measured composes use.
compose "$treefile" >/dev/null 2>&1
compose "$(variant warm)" >/dev/null 2>&1
# fetch tree's .deb, leaving both caches without that package set
compose "$(variant warm-pkg tree)" --no-install-cache --no-initramfs-cache >/dev/null 2>&1

full=$(timed full "$(variant full)" --no-install-cache --no-initramfs-cache)
file=$(timed file "$(variant file)")
noop=$(timed noop "$work/file/t.json")
package=$(timed package "$(variant package tree)")

for v in full file package; do echo "$v:"; steps "$work/$v.log"; done
ratio() { echo "$1 / $full" | bc -l; }
printf 'full %.1f s; one add-files file changed %.1f s (%.1f%% of full); unchanged %.1f s (%.1f%%); one package added %.1f s (%.1f%%)\n' \
  "$full" "$file" "$(echo "100 * $file / $full" | bc -l)" "$noop" "$(echo "100 * $noop / $full" | bc -l)" \
  "$package" "$(echo "100 * $package / $full" | bc -l)"
check() { grep -q "$2" "$work/$1" || { echo "$1: expected \"$2\"" >&2; exit 1; }; }
check file.json '"changed": true'
check file.log "a copy of the install cache's entry"
check file.log "copied from the initramfs cache"
check noop.json '"changed": false'
check package.json '"changed": true'
check package.log "installing packages (mmdebstrap)"
