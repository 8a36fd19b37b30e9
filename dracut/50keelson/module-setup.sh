#!/bin/bash
# keelson's dracut module: what every keelson node needs at early boot.
#
# It wires ostree-prepare-root the way ostree's own module does (binary,
# unit, enabled under initrd-root-fs.target), so the initramfs does not
# depend on the distribution's packaging of that module, and adds the
# storage drivers a node may boot from, whatever machine built the image.

check() {
    # Only when asked for (keelson.conf adds it); never picked up by hostonly.
    require_binaries /usr/lib/ostree/ostree-prepare-root || return 1
    return 255
}

depends() {
    echo systemd
    # First-boot provisioning, when the tree has Debian's Ignition.
    if [ -x /usr/lib/dracut/modules.d/30ignition/ignition ]; then
        echo keelson-ignition
    fi
}

installkernel() {
    # Not hostonly: the builder's hardware says nothing about the node's.
    instmods virtio_blk virtio_scsi virtio_pci virtio_net nvme ahci sd_mod ata_piix ext4 vfat
}

install() {
    inst_multiple /usr/lib/ostree/ostree-prepare-root
    inst_simple "${systemdsystemunitdir}/ostree-prepare-root.service"
    mkdir -p "${initdir}${systemdsystemconfdir}/initrd-root-fs.target.wants"
    ln_r "${systemdsystemunitdir}/ostree-prepare-root.service" \
        "${systemdsystemconfdir}/initrd-root-fs.target.wants/ostree-prepare-root.service"
}
