//! The initramfs, built by dracut inside the tree (so it matches the tree's
//! kernel, systemd and ostree), generic rather than host-only, with
//! ostree's module and keelson's own from `dracut/` (embedded in the binary).

use fs_err as fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};

use super::{Ctx, sandbox};

/// keelson's dracut modules (50keelson; 40keelson-ignition, used when the
/// tree has Ignition) and config, as shipped in the repo's `dracut/`.
const MODULE_FILES: &[(&str, &str, u32)] = &[
    (
        "usr/lib/dracut/modules.d/50keelson/module-setup.sh",
        include_str!("../../dracut/50keelson/module-setup.sh"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/module-setup.sh",
        include_str!("../../dracut/40keelson-ignition/module-setup.sh"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-setup.service",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-setup.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-setup",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-setup"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-network.service",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-network.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-network",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-network"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-var.service",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-var.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-var",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-var"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-finish.service",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-finish.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-finish",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-finish"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-setfiles",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-setfiles"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-kargs-helper",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-kargs-helper"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-failed.service",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-failed.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/40keelson-ignition/keelson-ignition-failed",
        include_str!("../../dracut/40keelson-ignition/keelson-ignition-failed"),
        0o755,
    ),
    (
        "usr/lib/dracut/dracut.conf.d/50-keelson.conf",
        include_str!("../../dracut/keelson.conf"),
        0o644,
    ),
];

/// systemd-networkd for the initramfs (repo `dracut/45keelson-networkd/`):
/// used by 40keelson-ignition and by the network installer (`keelson pxe`).
pub const NETWORKD_MODULE: &[(&str, &str, u32)] = &[
    (
        "usr/lib/dracut/modules.d/45keelson-networkd/module-setup.sh",
        include_str!("../../dracut/45keelson-networkd/module-setup.sh"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/45keelson-networkd/90-keelson-dhcp.network",
        include_str!("../../dracut/45keelson-networkd/90-keelson-dhcp.network"),
        0o644,
    ),
];

pub fn install_module(ctx: &Ctx) -> Result<()> {
    write_embedded(ctx.tree, MODULE_FILES)?;
    write_embedded(ctx.tree, NETWORKD_MODULE)
}

/// Write files embedded in the binary (path inside the tree, text, mode)
/// into a tree: keelson's dracut modules and their configs.
pub fn write_embedded(tree: &crate::util::tree::Tree, files: &[(&str, &str, u32)]) -> Result<()> {
    for (path, text, mode) in files {
        tree.create_dir_all(std::path::Path::new(path).parent().expect("has parent"))?;
        let p = tree.write(path, text.as_bytes())?;
        fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// dracut inside the tree, or the initramfs cache's copy of an image
/// built from the same inputs (see [`super::initramfs_cache`]).
pub fn build(ctx: &Ctx) -> Result<()> {
    use super::initramfs_cache::{InitramfsCache, parse_listing, slot};
    let kver = super::kernel_version(ctx.tree)?;
    let out_rel = format!("usr/lib/modules/{kver}/initramfs.img");
    let out = format!("/{out_rel}");
    let mut argv: Vec<&str> = vec!["dracut", "--force", "--reproducible", "--no-hostonly"];
    argv.extend(ctx.tf.initramfs_args.iter().map(String::as_str));
    argv.extend([out.as_str(), kver.as_str()]);
    let img = ctx.path(&out_rel)?;
    let cache = match &ctx.initramfs_cache {
        Some(c) => Some((
            InitramfsCache::open(&c.dir)?,
            slot(&kver, &argv, c.packages, c.source_date_epoch.as_deref()),
        )),
        None => None,
    };
    if let Some((cache, slot)) = &cache
        && cache.restore(slot, ctx.tree, &out_rel, &img)?
    {
        tracing::info!("initramfs: copied from the initramfs cache (its inputs are unchanged)");
        fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644))?;
        return Ok(());
    }
    sandbox::run(ctx.root, &argv, ctx.source_date_epoch)
        .context("initramfs-args: dracut failed inside the tree")?;
    fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644))?;
    if let Some((cache, slot)) = &cache {
        let listing = sandbox::run(ctx.root, &["lsinitrd", &out], ctx.source_date_epoch)
            .context("listing the new initramfs for the initramfs cache")?;
        let listed = parse_listing(&listing);
        if listed.is_empty() {
            // without the list an entry could not tell what it depends on
            tracing::warn!("initramfs cache: lsinitrd listed nothing; not saving this image");
        } else {
            cache.store(slot, ctx.tree, &listed, &kver, &out_rel, &img)?;
            tracing::info!("initramfs: built by dracut and saved to the initramfs cache");
        }
    }
    Ok(())
}
