#!/usr/bin/env bash
# Peer comparison, in one run on the same machine: the default treefile's
# package set built
#   - by mkosi (Debian 12's mkosi 14: debootstrap + apt into a GPT/ext4 raw
#     disk image; no ostree commit, not bootable here: Bootable=no), and
#   - by `keelson build` (compose to an ostree commit, then the A/B-updatable
#     qcow2 of images/default.json), with the install cache and without it,
# both with warm package caches (each tool's own, filled by a first run
# that is not timed). Prints the times and the ratios against mkosi.
# Usage (as root): bench/peer-mkosi.sh [CACHEDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=$(realpath -m "${1:-$here/cache}")
keelson=${KEELSON:-$here/target/release/keelson}
treefile=$here/treefiles/k8s-node.json
[ -x "$keelson" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v mkosi >/dev/null || { echo "apt-get install mkosi" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
now() { date +%s.%N; }

# The same package list: the flattened treefile's packages (mkosi adds
# Debian's required set itself, as mmdebstrap's minbase does).
pkgs=$("$keelson" compose --print-only --repo /nonexistent "$treefile" 2>/dev/null |
  python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)["packages"]))')
mkdir -p "$work/mkosi" "$cache/mkosi"
cat > "$work/mkosi/mkosi.default" <<CONF
[Distribution]
Distribution=debian
Release=bookworm

[Output]
Format=gpt_ext4
Bootable=no
OutputDirectory=$work/mkosi/out

[Content]
Packages=$pkgs
WithDocs=yes
Cache=$cache/mkosi

[Partitions]
RootSize=4G
CONF
mkosi_build() { (cd "$work/mkosi" && mkosi --force build) >"$work/mkosi.log" 2>&1 ||
  { tail -30 "$work/mkosi.log" >&2; exit 1; }; }
keelson_build() {
  rm -rf "$work/k"
  "$keelson" build "$treefile" --output "$work/k" --definition "$here/images/default.json" \
    --cachedir "$cache" "$@" >"$work/keelson.log" 2>&1 || { tail -30 "$work/keelson.log" >&2; exit 1; }
}

mkosi_build                       # warm mkosi's package cache
keelson_build                     # warm the .debs and the install cache
t0=$(now); mkosi_build; t1=$(now)
keelson_build; t2=$(now)
steps=$(grep -o '[a-z0-9 ./()→'"'"'-]*: done in [0-9.]*s' "$work/keelson.log" |
  grep -v 'done in 0.0s' | sed 's/^ */  /')
keelson_build --no-install-cache; t3=$(now)
m=$(echo "$t1 - $t0" | bc); k=$(echo "$t2 - $t1" | bc); kn=$(echo "$t3 - $t2" | bc)
printf 'mkosi (raw GPT/ext4 image) %.1f s\n' "$m"
printf 'keelson build (commit + qcow2), install cache %.1f s (%.2fx mkosi)\n' "$k" "$(echo "$k / $m" | bc -l)"
echo "$steps"
printf 'keelson build (commit + qcow2), packages installed afresh %.1f s (%.2fx mkosi)\n' "$kn" "$(echo "$kn / $m" | bc -l)"
ls -l "$work/mkosi/out" "$work/k" | grep -E 'raw|qcow2' || true
