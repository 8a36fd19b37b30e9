#!/usr/bin/env bash
# Installs the Debian 12 packages keelson needs to build, compose and test.
# Run as root. Idempotent. The Rust toolchain (>= 1.88, edition 2024) must
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
  # images: GPT, filesystems, GRUB images, qcow2
  fdisk e2fsprogs dosfstools mtools grub-common qemu-utils/bookworm
  # booting images: QEMU, UEFI firmware, the NIC boot ROMs (network installs)
  qemu-system-x86 ovmf ipxe-qemu
  # Ignition configs: ignition-validate checks them before they are used;
  # ssh into provisioned VMs (tests/vm.rs)
  ignition openssh-client
  # tests and benchmarks: setfattr, bc, gpg (signed updates), python3 (a
  # venv for pykickstart's ksvalidator)
  attr bc gnupg python3 python3-venv
)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# qemu-utils/bookworm: some builders carry a newer qemu-utils from
# backports, which qemu-system-x86 from bookworm cannot be installed beside.
apt-get install -y -q --no-install-recommends --allow-downgrades "${packages[@]}"
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install a Rust toolchain >= 1.88 first" >&2
  exit 1
fi
# pykickstart's ksvalidator checks every rendered kickstart (tests/kickstart.rs).
# Not packaged in Debian 12: from PyPI into its own venv.
if [ ! -x /opt/keelson-pyenv/bin/ksvalidator ]; then
  python3 -m venv /opt/keelson-pyenv
  /opt/keelson-pyenv/bin/pip install -q pykickstart
fi
