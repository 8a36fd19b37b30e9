#!/usr/bin/env bash
# Times `keelson image` (commit → qcow2) for a composed commit, beside the
# floor: copying the deployed tree's bytes once (cp -a of a checkout), both
# followed by `sync`. ROUNDS rounds (default 3), the two alternating, so
# both see the same state of the machine; prints every round, then the
# medians and their ratio, and the steps of the median image run. The
# copies stay until the end: ext4 skips inodes freed in the last minutes
# when it allocates new ones (recently_deleted()), and a copy made just
# after removing another took 8.7 s here instead of 2-3 s. Run it a few
# minutes after anything removed many files on the same filesystem.
# Usage (as root): bench/image.sh REPO REF
set -euo pipefail
repo=${1:?usage: bench/image.sh REPO REF}
ref=${2:?usage: bench/image.sh REPO REF}
rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
keelson=${KEELSON:-$here/target/release/keelson}
[ -x "$keelson" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ostree --repo="$repo" checkout "$ref" "$work/tree"
for r in $(seq "$rounds"); do
  tar -C "$work/tree" -cf - . | cat > /dev/null
  sync
  t0=$(now)
  cp -a "$work/tree" "$work/copy-$r"
  sync
  t1=$(now)
  t2=$(now)
  "$keelson" image --repo "$repo" --ref "$ref" --output "$work/node.qcow2" \
    2>"$work/image-$r.log" >/dev/null
  sync
  t3=$(now)
  floor=$(echo "$t1 - $t0" | bc); image=$(echo "$t3 - $t2" | bc)
  echo "$floor" >> "$work/floor"; echo "$image $r" >> "$work/image"
  printf 'round %s: floor %.2f s, keelson image %.2f s (%.2fx)\n' \
    "$r" "$floor" "$image" "$(echo "$image / $floor" | bc -l)"
done
floor=$(median < "$work/floor")
image=$(cut -d' ' -f1 "$work/image" | median)
mid=$(sort -g "$work/image" | awk -v m="$image" '$1 == m {print $2; exit}')
echo "steps of round $mid:"
grep -o '[a-z0-9 /()-]*: done in [0-9.]*s' "$work/image-$mid.log" | sed 's/^ */  step /'
printf 'tree %s MB: copy (floor) %.2f s; keelson image → qcow2 %.2f s (%.2fx the floor); qcow2 %s MB; medians of %s rounds\n' \
  "$(ostree --repo="$repo" ls -R "$ref" | awk '{s+=$4} END {print int(s/1000000)}')" \
  "$floor" "$image" "$(echo "$image / $floor" | bc -l)" \
  "$(( $(stat -c %s "$work/node.qcow2") / 1000000 ))" "$rounds"
