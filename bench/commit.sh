#!/usr/bin/env bash
# Times keelson's commit step against `ostree commit --tree=dir=` on the same
# composed tree, each into a fresh archive repo, and checks both give the same
# commit checksum. Usage (as root, so the checkout keeps owners and xattrs):
#   bench/commit.sh REPO REF [ROUNDS]
# REPO/REF: a composed commit, e.g. from the README's first command.
set -euo pipefail
repo=${1:?usage: bench/commit.sh REPO REF [ROUNDS]}
ref=${2:?usage: bench/commit.sh REPO REF [ROUNDS]}
rounds=${3:-2}
keelson=${KEELSON:-$(dirname "$0")/../target/release/keelson}
[ -x "$keelson" ] || { echo "build first: cargo build --release ($keelson missing)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ostree --repo="$repo" checkout "$ref" "$work/tree"
# Warm the page cache so neither side pays for the first read.
tar -C "$work/tree" -cf - . | cat > /dev/null
files=$(find "$work/tree" -type f | wc -l)
bytes=$(du -sb "$work/tree" | cut -f1)
ts=1700000000

now() { date +%s.%N; }
printf 'tree: %s files, %s MB; %s CPUs; %s rounds\n' "$files" "$((bytes / 1000000))" "$(nproc)" "$rounds"
for i in $(seq "$rounds"); do
  rm -rf "$work/a" "$work/b"
  ostree --repo="$work/a" init --mode=archive
  t0=$(now)
  a=$(ostree --repo="$work/a" commit --no-bindings --timestamp="@$ts" -s bench -b bench --tree=dir="$work/tree")
  t1=$(now)
  b=$("$keelson" commit --repo "$work/b" -b bench -s bench --timestamp "$ts" "$work/tree" 2>/dev/null)
  t2=$(now)
  oc=$(echo "$t1 - $t0" | bc); kc=$(echo "$t2 - $t1" | bc)
  printf 'round %s: ostree commit %.1f s, keelson commit %.1f s, speed-up %.2fx\n' "$i" "$oc" "$kc" "$(echo "$oc / $kc" | bc -l)"
  if [ "$a" != "$b" ]; then
    echo "checksums differ: ostree $a keelson $b" >&2
    exit 1
  fi
done
echo "same commit checksum: $a"
ostree fsck --repo="$work/b" | tail -1
