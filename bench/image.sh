#!/usr/bin/env bash
# Times `keelson image` (commit → qcow2) for a composed commit, beside the
# floor: copying the deployed tree's bytes once (cp -a of a checkout).
# Usage (as root): bench/image.sh REPO REF
set -euo pipefail
repo=${1:?usage: bench/image.sh REPO REF}
ref=${2:?usage: bench/image.sh REPO REF}
here=$(cd "$(dirname "$0")/.." && pwd)
keelson=${KEELSON:-$here/target/release/keelson}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

ostree --repo="$repo" checkout "$ref" "$work/tree"
tar -C "$work/tree" -cf - . | cat > /dev/null
sync
t0=$(now)
cp -a "$work/tree" "$work/copy"
sync
t1=$(now)
rm -rf "$work/copy" "$work/tree"
"$keelson" image --repo "$repo" --ref "$ref" --output "$work/node.qcow2" 2>"$work/image.log" >/dev/null
sync
t2=$(now)
floor=$(echo "$t1 - $t0" | bc); image=$(echo "$t2 - $t1" | bc)
grep -o '[a-z0-9 /()-]*: done in [0-9.]*s' "$work/image.log" | sed 's/^ */  step /'
printf 'tree %s MB: copy (floor) %.1f s; keelson image → qcow2 %.1f s (%.2fx the floor); qcow2 %s MB\n' \
  "$(ostree --repo="$repo" ls -R "$ref" | awk '{s+=$4} END {print int(s/1000000)}')" \
  "$floor" "$image" "$(echo "$image / $floor" | bc -l)" "$(( $(stat -c %s "$work/node.qcow2") / 1000000 ))"
