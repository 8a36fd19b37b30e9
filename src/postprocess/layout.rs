//! Steps that give the tree ostree's layout: kernel placement, /etc and
//! /var handling, the dpkg database under /usr, top-level links.

use fs_err as fs;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Ctx, users, var};
use crate::util::fsutil::{empty_dir, remove_any, symlink_replace};

/// Where the dpkg database travels with /usr.
pub const DPKG_DB: &str = "usr/lib/sysimage/dpkg";

/// mmdebstrap leaves device nodes in /dev and runtime files elsewhere;
/// ostree refuses device nodes, and none of it belongs in an image.
pub fn clean_pseudo_fs(ctx: &Ctx) -> Result<()> {
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        empty_dir(&ctx.dir(d)?)?;
    }
    Ok(())
}

/// Every image carries the keelson binary itself as the node agent.
pub fn embed_agent(ctx: &Ctx) -> Result<()> {
    let dst = ctx.path("usr/bin/keelson")?;
    remove_any(&dst)?;
    fs::copy(&ctx.agent, &dst).with_context(|| {
        format!(
            "copying the node agent {} to {}",
            ctx.agent.display(),
            dst.display()
        )
    })?;
    fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// ostree's grub2 backend runs `/usr/sbin/grub-mkconfig` on the node
/// (`ostree admin`, ostree-finalize-staged): divert Debian's script, which
/// does not work on an ostree system, and let keelson's menu generator
/// answer under that name (it dispatches on argv[0]).
pub fn divert_grub_mkconfig(ctx: &Ctx) -> Result<()> {
    let prog = "/usr/sbin/grub-mkconfig";
    if ctx.path(prog)?.exists() {
        super::sandbox::run(
            ctx.root,
            &[
                "dpkg-divert",
                "--local",
                "--rename",
                "--divert",
                "/usr/sbin/grub-mkconfig.debian",
                "--add",
                prog,
            ],
            ctx.source_date_epoch,
        )
        .context("diverting /usr/sbin/grub-mkconfig")?;
    }
    symlink_replace("../bin/keelson", &ctx.path(prog)?)
}

/// Secrets and identities every node would otherwise share; they are
/// created on first boot (machine-id by systemd, host keys by the
/// keygen unit the base treefile ships).
pub fn remove_machine_secrets(ctx: &Ctx) -> Result<()> {
    if let Ok(rd) = fs::read_dir(ctx.dir("etc/ssh")?) {
        for e in rd {
            let p = e?.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ssh_host_"))
            {
                remove_any(&p)?;
            }
        }
    }
    for p in [
        "var/lib/systemd/random-seed",
        "var/lib/dbus/machine-id",
        "etc/ssl/private/ssl-cert-snakeoil.key",
    ] {
        remove_any(&ctx.path(p)?)?;
    }
    let mid = ctx.path("etc/machine-id")?;
    if ctx.tf.machineid_compat.get() {
        // An empty file: systemd treats it as "first boot" and fills it.
        ctx.tree.write("etc/machine-id", b"")?;
        fs::set_permissions(&mid, std::fs::Permissions::from_mode(0o444))?;
    } else {
        remove_any(&mid)?;
    }
    Ok(())
}

/// Debian puts the kernel in /boot; ostree wants
/// /usr/lib/modules/K/vmlinuz. /boot must end up empty.
pub fn move_kernel(ctx: &Ctx) -> Result<()> {
    let kver = super::kernel_version(ctx.tree)?;
    let moddir = ctx.dir(format!("usr/lib/modules/{kver}"))?;
    let boot = ctx.dir("boot")?;
    let src = boot.join(format!("vmlinuz-{kver}"));
    if !src.exists() {
        bail!("{}: kernel image missing for modules {kver}", src.display());
    }
    fs::rename(&src, moddir.join("vmlinuz")).context("moving the kernel")?;
    for (from, to) in [("config", "config"), ("System.map", "System.map")] {
        let f = boot.join(format!("{from}-{kver}"));
        if f.exists() {
            fs::rename(&f, moddir.join(to))?;
        }
    }
    empty_dir(&boot)?;
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        remove_any(&ctx.path(link)?)?;
    }
    Ok(())
}

/// sysusers.d for system accounts, and the uid/gid check against the
/// previous commit.
pub fn sysusers(ctx: &Ctx) -> Result<()> {
    let read = |p: &str| {
        fs::read_to_string(ctx.path(p)?).with_context(|| format!("{p}: cannot read in the tree"))
    };
    let passwd = users::parse_passwd("etc/passwd", &read("etc/passwd")?)?;
    let group = users::parse_group("etc/group", &read("etc/group")?)?;
    let tf = ctx.tf;
    let missing: Vec<&str> = tf
        .etc_group_members
        .iter()
        .filter(|m| !group.iter().any(|g| &&g.name == m))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "etc-group-members: no such group in the tree's /etc/group: {}",
            missing.join(", ")
        );
    }
    let checks = [
        (
            "check-passwd",
            "user",
            &tf.check_passwd,
            &ctx.previous_passwd,
        ),
        (
            "check-groups",
            "group",
            &tf.check_groups,
            &ctx.previous_group,
        ),
    ];
    for (field, what, check, previous) in checks {
        let users = what == "user";
        let Some((source, expected)) =
            users::reference(&tf.basedir, check.as_ref(), previous.as_deref(), users)?
        else {
            continue;
        };
        let (current, ignore) = if users {
            (users::user_ids(&passwd), &tf.ignore_removed_users)
        } else {
            (users::group_ids(&group), &tf.ignore_removed_groups)
        };
        let c = users::Check {
            field,
            what,
            source: &source,
        };
        users::check_ids(&c, &expected, &current, ignore)?;
    }
    ctx.mkdirs("usr/lib/sysusers.d")?;
    ctx.tree.write(
        "usr/lib/sysusers.d/keelson-compose.conf",
        users::render_sysusers(&passwd, &group, &tf.etc_group_members).as_bytes(),
    )?;
    Ok(())
}

/// The dpkg database must travel with /usr (it describes /usr); /var keeps
/// a link to it.
pub fn dpkg_to_usr(ctx: &Ctx) -> Result<()> {
    let src = ctx.path("var/lib/dpkg")?;
    ctx.mkdirs("usr/lib/sysimage")?;
    let dst = ctx.path(DPKG_DB)?;
    fs::rename(&src, &dst)
        .with_context(|| format!("moving {} to {}", src.display(), dst.display()))?;
    // Lock files are runtime state.
    for f in ["lock", "lock-frontend", "triggers/Lock"] {
        ctx.tree.remove(format!("{DPKG_DB}/{f}"))?;
    }
    Ok(())
}

fn id_names(ctx: &Ctx) -> Result<(BTreeMap<u32, String>, BTreeMap<u32, String>)> {
    let passwd = fs::read_to_string(ctx.path("etc/passwd")?).context("etc/passwd")?;
    let group = fs::read_to_string(ctx.path("etc/group")?).context("etc/group")?;
    let u = users::parse_passwd("etc/passwd", &passwd)?
        .into_iter()
        .map(|u| (u.uid, u.name))
        .collect();
    let g = users::parse_group("etc/group", &group)?
        .into_iter()
        .map(|g| (g.gid, g.name))
        .collect();
    Ok((u, g))
}

/// Express /var as tmpfiles.d and empty it (ostree 2022.7 ignores /var at
/// deploy). Regular files are kept in /usr/share/factory and copied at boot.
pub fn var_to_tmpfiles(ctx: &Ctx) -> Result<()> {
    let (unames, gnames) = id_names(ctx)?;
    let entries = var::collect(&ctx.dir("var")?, &unames, &gnames)?;
    let declared = var::declared_paths(ctx.tree)?;
    for e in entries.iter().filter(|e| e.kind == var::Kind::File) {
        let src = ctx.path(&e.path)?;
        let rel = format!("{}{}", var::FACTORY, e.path);
        let parent = Path::new(&rel).parent().expect("has parent");
        ctx.mkdirs(parent)?;
        let dst = ctx.path(&rel)?;
        fs::copy(&src, &dst)
            .with_context(|| format!("copying {} to the factory", src.display()))?;
    }
    let mut text = var::render(&entries, &declared);
    // The links and homes ostree's layout points into /var.
    text.push_str(&format!(
        "L /var/lib/dpkg - - - - ../../{DPKG_DB}\n\
         d /var/home 0755 root root - -\n\
         d /var/roothome 0700 root root - -\n\
         d /var/srv 0755 root root - -\n\
         d /var/mnt 0755 root root - -\n\
         d /var/opt 0755 root root - -\n\
         d /var/usrlocal 0755 root root - -\n"
    ));
    ctx.mkdirs("usr/lib/tmpfiles.d")?;
    ctx.tree
        .write("usr/lib/tmpfiles.d/keelson-var.conf", text.as_bytes())?;
    empty_dir(&ctx.dir("var")?)?;
    Ok(())
}

/// ostree 3-way merges /usr/etc into /etc at deploy.
pub fn etc_to_usr_etc(ctx: &Ctx) -> Result<()> {
    let (src, dst) = (ctx.path("etc")?, ctx.path("usr/etc")?);
    if dst.exists() {
        bail!(
            "{}: already exists; the tree must not ship /usr/etc itself",
            dst.display()
        );
    }
    fs::rename(&src, &dst).context("moving /etc to /usr/etc")
}

/// The links of ostree's layout. Directories that should be links must be
/// empty: content there would be silently hidden on the node.
pub fn toplevel_links(ctx: &Ctx) -> Result<()> {
    let mut links = vec![
        ("home", "var/home"),
        ("srv", "var/srv"),
        ("mnt", "var/mnt"),
        ("opt", "var/opt"),
        ("media", "run/media"),
        ("ostree", "sysroot/ostree"),
    ];
    if !ctx.tf.tmp_is_dir.get() {
        links.push(("tmp", "sysroot/tmp"));
    }
    for (name, target) in links {
        let p = ctx.path(name)?;
        if p.is_dir() && !p.is_symlink() && fs::read_dir(&p)?.next().is_some() {
            bail!(
                "/{name} is not empty in the tree, but becomes a link to /{target} on the node; move that content under /usr"
            );
        }
        symlink_replace(target, &p)?;
    }
    // /root holds only skeleton dotfiles; root's home is /var/roothome.
    symlink_replace("var/roothome", &ctx.path("root")?)?;
    for d in ["sysroot", "boot", "var"] {
        let p = ctx.mkdirs(d)?;
        empty_dir(&p)?;
    }
    if ctx.tf.tmp_is_dir.get() {
        let tmp = ctx.mkdirs("tmp")?;
        fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    }
    Ok(())
}
