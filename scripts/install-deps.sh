#!/usr/bin/env bash
# Installs the Debian 12 packages keelson needs to build, compose and test.
# Run as root. Idempotent. The Rust toolchain (>= 1.85, edition 2024) must
# already be on PATH: Debian 12's own cargo is too old.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (apt-get install)" >&2
  exit 1
fi
packages=(
  # building keelson (libostree bindings)
  gcc pkg-config libostree-dev libglib2.0-dev
  # composing: package installation, sandbox, ostree CLI for checks
  mmdebstrap bubblewrap ostree dpkg ca-certificates debian-archive-keyring
  # tests and benchmarks: chattr, setfattr, bc
  e2fsprogs attr bc
)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install a Rust toolchain >= 1.85 first" >&2
  exit 1
fi
