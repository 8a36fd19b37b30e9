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
# Drops the page cache before each round (root).
# With BASE=path/to/an/older/keelson, each round also times that binary's
# `keelson image` (the same commit), for a before/after in one run.
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
  # The same start for both in every round: the page cache dropped (the
  # earlier rounds' copies fill it, and allocating memory then got slower
  # here: mkfs 1.5 s after a drop, 3.0 s with 5 copies cached), then the
  # tree and the repo read back in, so neither reads the disk.
  sync
  echo 3 > /proc/sys/vm/drop_caches
  tar -C "$work/tree" -cf - . | cat > /dev/null
  tar -C "$repo" -cf - . | cat > /dev/null
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
  printf 'round %s: floor %.2f s, keelson image %.2f s (%.2fx): %s\n' \
    "$r" "$floor" "$image" "$(echo "$image / $floor" | bc -l)" \
    "$(grep -o '[a-z ]*: done in [0-9.]*s' "$work/image-$r.log" | sed 's/: done in /=/' | tr '\n' ',')"
  if [ -n "${BASE:-}" ]; then
    t4=$(now)
    "$BASE" image --repo "$repo" --ref "$ref" --output "$work/base.qcow2" 2>/dev/null >/dev/null
    sync
    base=$(echo "$(now) - $t4" | bc)
    echo "$base" >> "$work/base"
    printf 'round %s: BASE keelson image %.2f s (%.2fx the floor)\n' \
      "$r" "$base" "$(echo "$base / $floor" | bc -l)"
  fi
done
if [ -n "${BASE:-}" ]; then
  printf 'BASE: keelson image %.2f s (median); this keelson image takes %.2fx its time\n' \
    "$(median < "$work/base")" \
    "$(echo "$(cut -d' ' -f1 "$work/image" | median) / $(median < "$work/base")" | bc -l)"
fi
floor=$(median < "$work/floor")
image=$(cut -d' ' -f1 "$work/image" | median)
mid=$(sort -g "$work/image" | awk -v m="$image" '$1 == m {print $2; exit}')
echo "steps of round $mid:"
grep -o '[a-z0-9 /()-]*: done in [0-9.]*s' "$work/image-$mid.log" | sed 's/^ */  step /'
printf 'tree %s MB: copy (floor) %.2f s; keelson image → qcow2 %.2f s (%.2fx the floor); qcow2 %s MB; medians of %s rounds\n' \
  "$(ostree --repo="$repo" ls -R "$ref" | awk '{s+=$4} END {print int(s/1000000)}')" \
  "$floor" "$image" "$(echo "$image / $floor" | bc -l)" \
  "$(( $(stat -c %s "$work/node.qcow2") / 1000000 ))" "$rounds"
