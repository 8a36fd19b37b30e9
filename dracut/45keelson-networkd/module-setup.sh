#!/bin/bash
# keelson: systemd-networkd in the initramfs with DHCP on every Ethernet
# link, for the modules that need a network: 90keelson-installer (always
# started) and 40keelson-ignition (started only when a config needs it).
# Installs the units but enables nothing: the module using it starts it.

check() {
    # Only as a dependency.
    return 255
}

depends() {
    echo systemd
}

install() {
    inst_multiple /usr/lib/systemd/systemd-networkd /usr/lib/systemd/systemd-networkd-wait-online
    inst_multiple "$systemdsystemunitdir/systemd-networkd.service" \
        "$systemdsystemunitdir/systemd-networkd.socket" \
        "$systemdsystemunitdir/systemd-networkd-wait-online.service" \
        "$systemdsystemunitdir/network.target" \
        "$systemdsystemunitdir/network-online.target" \
        "$systemdsystemunitdir/network-pre.target"
    inst_simple "$moddir/90-keelson-dhcp.network" /etc/systemd/network/90-keelson-dhcp.network
    # networkd runs as its own user.
    grep -E '^systemd-network:' /etc/passwd >> "$initdir/etc/passwd"
    grep -E '^systemd-network:' /etc/group >> "$initdir/etc/group"
    # https URLs (installer pulls, Ignition configs).
    inst_multiple -o /etc/ssl/certs/ca-certificates.crt
}
