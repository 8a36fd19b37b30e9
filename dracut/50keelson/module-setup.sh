#!/bin/bash
# keelson's dracut module: what every keelson node needs at early boot.
# ostree's own module (98ostree, from Debian's ostree-boot) installs
# ostree-prepare-root and its unit; this module pulls it in and adds the
# storage drivers a node may boot from, whatever machine built the image.

check() {
    # Only when asked for (keelson.conf adds it); never picked up by hostonly.
    return 255
}

depends() {
    echo ostree systemd
}

installkernel() {
    # Not hostonly: the builder's hardware says nothing about the node's.
    instmods virtio_blk virtio_scsi virtio_pci virtio_net nvme ahci sd_mod ata_piix ext4 vfat
}

install() {
    :
}
