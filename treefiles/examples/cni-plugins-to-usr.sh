#!/bin/sh
# kubernetes-cni installs its plugins in /opt/cni/bin, but /opt is /var/opt on
# a keelson node: per-node state, empty in the image. Ship the plugins under
# /usr (updated with the image) and link them into /opt/cni/bin at boot,
# where network add-ons also drop theirs (containerd's bin_dir).
set -eu
[ -d /opt/cni/bin ] || exit 0
mkdir -p /usr/lib/cni
mv /opt/cni/bin/* /usr/lib/cni/
rm -rf /opt/cni
for plugin in /usr/lib/cni/*; do
    echo "L+ /var/opt/cni/bin/${plugin##*/} - - - - $plugin"
done > /usr/lib/tmpfiles.d/keelson-cni-plugins.conf
