#!/bin/bash
# keelson's Ignition glue: Debian's Ignition 2.14 (package ignition: the
# binary, its stage units and generator in modules.d/30ignition) wired to
# the ostree deployment, in the way Fedora CoreOS's ignition-ostree module
# does it. Pulled in by 50keelson when the tree has Ignition.
#
# First boot only (GRUB adds ignition.firstboot while /boot/ignition.firstboot
# exists; ignition-generator then requires ignition-complete.target):
#   keelson-ignition-setup    the config `keelson install` embedded on /boot
#                             becomes Ignition's user config
#   ignition-fetch-offline    config from the platform (qemu: fw_cfg), checked
#   keelson-ignition-network  DHCP, only when the config needs the network
#   ignition-fetch            ... then fetched
#   ignition-disks, -mount    (after ostree-prepare-root: /sysroot is the
#                             deployment)
#   keelson-ignition-var      the stateroot's /var bound at /sysroot/var
#   ignition-files            users, SSH keys, files, units into the
#                             deployment's /etc and /var
#   keelson-ignition-finish   the units the config enables, enabled
# Any failure isolates emergency.target: keelson-ignition-failed prints
# Ignition's errors on the console and the boot stops there.
# Debian's own 30ignition module is not used: it depends on dracut's
# network modules (package dracut-network, dhclient); this one brings up
# systemd-networkd (45keelson-networkd) only when a config needs it.

ign=/usr/lib/dracut/modules.d/30ignition

check() {
    [ -x "$ign/ignition" ] || return 1
    # Only when asked for (50keelson depends on it).
    return 255
}

depends() {
    # keelson-networkd: started by keelson-ignition-network only when needed.
    echo systemd systemd-udevd keelson-networkd
}

installkernel() {
    # The qemu platform reads its config from QEMU's fw_cfg.
    hostonly='' instmods qemu_fw_cfg
}

# Install unit $1 (from $2, default: this module) and make $3 (default:
# ignition-complete.target) require it.
ign_unit() {
    local unit=$1 from=${2:-$moddir} target=${3:-ignition-complete.target}
    inst_simple "$from/$unit" "$systemdsystemunitdir/$unit"
    mkdir -p "$initdir$systemdsystemunitdir/$target.requires"
    ln_r "$systemdsystemunitdir/$unit" "$systemdsystemunitdir/$target.requires/$unit"
}

install() {
    # What Ignition runs (users, groups, filesystems) and keelson's helpers.
    inst_multiple basename lsblk useradd usermod groupadd chpasswd modprobe \
        mount umount mountpoint cp mkdir rm chmod sed tr cut tail sleep cat grep sort \
        systemctl systemd-tmpfiles journalctl
    inst_multiple -o userdel groupdel mkfs.ext4 mkfs.fat mkfs.xfs mkswap wipefs sgdisk
    inst_simple "$ign/ignition" /usr/bin/ignition
    inst_simple "$ign/ignition-generator" "$systemdutildir/system-generators/ignition-generator"
    for t in complete subsequent diskful diskful-subsequent; do
        inst_simple "$ign/ignition-$t.target" "$systemdsystemunitdir/ignition-$t.target"
    done
    for s in fetch-offline fetch kargs disks mount files; do
        ign_unit "ignition-$s.service" "$ign"
    done
    ign_unit ignition-remount-sysroot.service "$ign" ignition-diskful.target
    # Kernel arguments from a config: not supported on keelson yet (fails
    # the boot with a message rather than dropping them).
    inst_script "$moddir/keelson-ignition-kargs-helper" /usr/sbin/ignition-kargs-helper
    # No SELinux policy in the tree: Ignition's relabeling is a no-op.
    if [ -x /usr/sbin/setfiles ]; then
        inst_multiple setfiles
    else
        inst_script "$moddir/keelson-ignition-setfiles" /usr/sbin/setfiles
    fi
    for s in setup network var finish; do
        ign_unit "keelson-ignition-$s.service"
        inst_script "$moddir/keelson-ignition-$s" "/usr/libexec/keelson-ignition-$s"
    done
    inst_script "$moddir/keelson-ignition-failed" /usr/libexec/keelson-ignition-failed
    inst_simple "$moddir/keelson-ignition-failed.service" \
        "$systemdsystemunitdir/keelson-ignition-failed.service"
    mkdir -p "$initdir$systemdsystemunitdir/emergency.target.wants"
    ln_r "$systemdsystemunitdir/keelson-ignition-failed.service" \
        "$systemdsystemunitdir/emergency.target.wants/keelson-ignition-failed.service"
}
