#!/bin/bash
# keelson's network installer: an initramfs that brings the network up with
# systemd-networkd, runs `keelson install --from-cmdline` (device, URL and
# ref from keelson.install.* kernel arguments) and reboots into the installed
# node. Built by `keelson pxe` inside the tree; never part of a node's own
# initramfs (check returns 255: only when asked for).

check() {
    return 255
}

depends() {
    # systemd-networkd with DHCP on every Ethernet link.
    echo systemd systemd-udevd keelson-networkd
}

installkernel() {
    # Disks and NICs of common servers and VMs, and the filesystems written.
    hostonly='' instmods ext4 vfat nls_cp437 nls_iso8859_1 nls_utf8 af_packet
    hostonly='' instmods virtio_net virtio_blk virtio_scsi virtio_pci e1000 e1000e igb ixgbe \
        nvme ahci sd_mod
    hostonly='' instmods =drivers/net/ethernet
}

install() {
    # keelson install and what it runs.
    inst_multiple keelson ostree sfdisk wipefs blockdev partx mkfs.ext4 mke2fs mkfs.fat \
        grub-mkimage grub-editenv mount umount sync du cp chattr udevadm sh
    # Signature checks (gpgme runs gpg) and https URLs.
    inst_multiple -o gpg gpgv gpgconf gpg-agent gpgsm dirmngr
    # Ignition configs given to the installer are validated before the disk.
    inst_multiple -o ignition-validate
    inst_simple "$moddir/keelson-installer.service" "$systemdsystemunitdir/keelson-installer.service"
    inst_simple "$moddir/keelson-installer.target" "$systemdsystemunitdir/keelson-installer.target"
}
