#!/usr/bin/env bash
# Update streams on the default tree: what `keelson publish` costs (static
# delta generation, from empty and from the parent, in parallel) and what a
# node downloads with and without deltas, for an install (from empty) and
# for an upgrade by one small package. The anchor is the same pull without
# deltas (objects one by one from the build repo), measured in the same run.
# Usage (as root): bench/publish.sh [TREEFILE] [CACHEDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
treefile=$(realpath "${1:-$here/treefiles/k8s-node.json}")
cache=${2:-$here/cache}
keelson=${KEELSON:-$here/target/release/keelson}
[ -x "$keelson" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server"; rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
# ostree's last line: "… N KiB transferred in S seconds" → bytes.
transferred() {
  tail -n 1 "$1" | sed -n 's/.*; \([0-9.]*\) \([KMG]*i*B\) transferred.*/\1 \2/p' |
    awk '{m=1; if ($2=="KiB") m=1024; if ($2=="MiB") m=1048576; if ($2=="GiB") m=1073741824; printf "%d", $1*m}'
}

# v1: the treefile; v2: the same plus one small package (`tree`).
"$keelson" compose "$treefile" --repo "$work/build" --cachedir "$cache" >/dev/null 2>&1
v1=$(ostree --repo="$work/build" rev-parse "$(ostree --repo="$work/build" refs | head -n 1)")
ref=$(ostree --repo="$work/build" refs | head -n 1)
printf '{"include": "%s", "packages": ["tree"]}\n' "$treefile" > "$work/plus.json"

publish() { # COMMIT LOGNAME
  local t0 t1
  t0=$(now)
  "$keelson" publish --from "$work/build" --to "$work/pub" --ref "$ref" --commit "$1" \
    --delta-from-empty --json >"$work/$2.json" 2>"$work/$2.log"
  t1=$(now)
  printf 'publish %s: %.1f s wall; deltas: %s\n' "$2" "$(secs "$t0" "$t1")" \
    "$(grep -o '"[0-9a-f-]*": [0-9.]*' "$work/$2.json" | awk -F'": ' '{n=split($1,a,"-"); printf "%s %.1f s; ", (n>1 ? "from-parent" : "from-empty"), $2}')"
}
publish "$v1" v1

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
server=$!
sleep 1
client() { # DIR URL
  ostree --repo="$1" init --mode=bare
  ostree --repo="$1" remote add --no-gpg-verify o "$2"
}
pull() { # DIR COMMIT LOG [metadata-first]
  local t0 t1
  t0=$(now)
  if [ "${4:-}" = metadata-first ]; then
    ostree --repo="$1" pull --commit-metadata-only o "$2" >/dev/null
  fi
  ostree --repo="$1" pull o "$2" >"$3"
  t1=$(now)
  secs "$t0" "$t1"
}
client "$work/node-delta" "http://127.0.0.1:$port/pub/repo"
client "$work/node-objects" "http://127.0.0.1:$port/build"
i_delta=$(pull "$work/node-delta" "$v1" "$work/i-delta.out" metadata-first)
i_obj=$(pull "$work/node-objects" "$v1" "$work/i-obj.out")
ib_delta=$(transferred "$work/i-delta.out"); ib_obj=$(transferred "$work/i-obj.out")

"$keelson" compose "$work/plus.json" --repo "$work/build" --cachedir "$cache" >/dev/null 2>&1
v2=$(ostree --repo="$work/build" rev-parse "$ref")
publish "$v2" v2
u_delta=$(pull "$work/node-delta" "$v2" "$work/u-delta.out" metadata-first)
u_obj=$(pull "$work/node-objects" "$v2" "$work/u-obj.out")
ub_delta=$(transferred "$work/u-delta.out"); ub_obj=$(transferred "$work/u-obj.out")

printf 'install pull (from empty): delta %.1f s, %s bytes; objects %.1f s, %s bytes (delta time %.0f%% of objects)\n' \
  "$i_delta" "$ib_delta" "$i_obj" "$ib_obj" "$(echo "100 * $i_delta / $i_obj" | bc -l)"
printf 'upgrade pull (+1 package): delta %.1f s, %s bytes; objects %.1f s, %s bytes (delta time %.0f%% of objects)\n' \
  "$u_delta" "$ub_delta" "$u_obj" "$ub_obj" "$(echo "100 * $u_delta / $u_obj" | bc -l)"
printf 'one-package upgrade through the delta: %.2f%% of the full install download\n' \
  "$(echo "100 * $ub_delta / $ib_delta" | bc -l)"
echo "ostree's own lines: install delta: $(tail -n1 "$work/i-delta.out")"
echo "                    install objects: $(tail -n1 "$work/i-obj.out")"
echo "                    upgrade delta: $(tail -n1 "$work/u-delta.out")"
echo "                    upgrade objects: $(tail -n1 "$work/u-obj.out")"
