//! Steps that apply treefile fields: add-files, remove-files,
//! remove-from-packages, units, default-target, postprocess scripts,
//! mutate-os-release, readonly-executables.

use fs_err as fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Ctx, sandbox};
use crate::util::fsutil::{remove_any, symlink_replace};
use crate::util::tree::Tree;

pub fn add_files(ctx: &Ctx) -> Result<()> {
    for (i, (src, dst)) in ctx.tf.add_files.iter().enumerate() {
        let from = ctx.tf.basedir.join(src);
        let meta = fs::metadata(&from)
            .with_context(|| format!("add-files[{i}][0]: {} not found", from.display()))?;
        if !meta.is_file() {
            bail!(
                "add-files[{i}][0]: {} is not a regular file",
                from.display()
            );
        }
        ctx.mkdirs(Path::new(dst).parent().expect("absolute dst has a parent"))?;
        let to = ctx.path(dst)?;
        remove_any(&to)?;
        fs::copy(&from, &to)
            .with_context(|| format!("add-files[{i}]: copying {} to {dst}", from.display()))?;
        // Keep the executable bit, drop group/other write and special bits.
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

pub fn remove_files(ctx: &Ctx) -> Result<()> {
    for p in &ctx.tf.remove_files {
        ctx.tree
            .remove(p)
            .with_context(|| format!("remove-files: {p}"))?;
    }
    Ok(())
}

/// The file list dpkg keeps for `pkg` (`pkg.list` or `pkg:ARCH.list`).
fn dpkg_file_list(tree: &Tree, pkg: &str) -> Option<String> {
    let info = tree
        .path("var/lib/dpkg/info/x")
        .ok()?
        .parent()?
        .to_path_buf();
    let plain = info.join(format!("{pkg}.list"));
    if let Ok(t) = fs::read_to_string(plain) {
        return Some(t);
    }
    let prefix = format!("{pkg}:");
    fs::read_dir(&info)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(&prefix) && name.ends_with(".list"))
                .then(|| fs::read_to_string(e.path()).ok())
                .flatten()
        })
}

pub fn remove_from_packages(ctx: &Ctx) -> Result<()> {
    for (i, entry) in ctx.tf.remove_from_packages.iter().enumerate() {
        let pkg = &entry[0];
        let list = dpkg_file_list(ctx.tree, pkg).with_context(|| {
            format!("remove-from-packages[{i}][0]: package {pkg:?} is not installed")
        })?;
        let res: Vec<regex::Regex> = entry[1..]
            .iter()
            .map(|r| regex::Regex::new(r))
            .collect::<Result<_, _>>()?;
        for path in list.lines() {
            if !res.iter().any(|re| re.is_match(path)) {
                continue;
            }
            let Ok(p) = ctx.path(path) else {
                // Runs through a link to nowhere: nothing there to remove.
                continue;
            };
            // Directories are shared between packages; only entries go.
            if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Where a unit file lives in the tree, as the path systemd sees.
fn find_unit(tree: &Tree, unit: &str) -> Option<String> {
    // Template instances (`getty@tty1.service`) come from `getty@.service`.
    let file = match unit.split_once('@') {
        Some((base, rest)) if !rest.starts_with('.') => {
            format!("{base}@{}", &rest[rest.rfind('.').unwrap_or(rest.len())..])
        }
        _ => unit.to_string(),
    };
    ["etc/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| format!("{d}/{file}"))
        .find(|p| tree.exists(p))
        .map(|p| format!("/{p}"))
}

pub fn enable_units(ctx: &Ctx) -> Result<()> {
    for (i, unit) in ctx.tf.units.iter().enumerate() {
        let target = find_unit(ctx.tree, unit)
            .with_context(|| format!("units[{i}]: unit {unit:?} not found in the tree"))?;
        let wants = ctx.mkdirs("etc/systemd/system/multi-user.target.wants")?;
        symlink_replace(&target, &wants.join(unit))?;
    }
    Ok(())
}

pub fn default_target(ctx: &Ctx) -> Result<()> {
    let Some(t) = &ctx.tf.default_target else {
        return Ok(());
    };
    let target = find_unit(ctx.tree, t)
        .with_context(|| format!("default-target: {t:?} not found in the tree"))?;
    let dir = ctx.mkdirs("etc/systemd/system")?;
    symlink_replace(&target, &dir.join("default.target"))
}

/// Inline `postprocess` scripts in order, then `postprocess-script`, each
/// in the sandbox with the tree as `/` and no network.
pub fn run_scripts(ctx: &Ctx) -> Result<()> {
    let mut scripts: Vec<(String, String)> = ctx
        .tf
        .postprocess
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("postprocess[{i}]"), s.clone()))
        .collect();
    if let Some(p) = &ctx.tf.postprocess_script {
        let path = ctx.tf.basedir.join(p);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("postprocess-script: cannot read {}", path.display()))?;
        scripts.push(("postprocess-script".into(), text));
    }
    for (field, text) in scripts {
        let name = ".keelson-postprocess";
        let host = ctx.tree.write(name, text.as_bytes())?;
        fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
        let inside = format!("/{name}");
        let argv: Vec<&str> = if text.starts_with("#!") {
            vec![&inside]
        } else {
            vec!["/bin/sh", "-e", &inside]
        };
        let r = sandbox::run(ctx.root, &argv, ctx.source_date_epoch);
        remove_any(&host)?;
        r.with_context(|| format!("{field}: script failed inside the tree"))?;
    }
    Ok(())
}

/// Pure: replace `from` with `version` in VERSION, VERSION_ID and
/// PRETTY_NAME, and add OSTREE_VERSION (rpm-ostree's behaviour).
pub fn mutate_os_release_text(text: &str, from: &str, version: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("");
        if matches!(key, "VERSION" | "VERSION_ID" | "PRETTY_NAME") {
            out.push_str(&line.replace(from, version));
        } else if key == "OSTREE_VERSION" {
            continue;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str(&format!("OSTREE_VERSION='{version}'\n"));
    out
}

pub fn mutate_os_release(ctx: &Ctx) -> Result<()> {
    let (Some(from), Some(version)) = (&ctx.tf.mutate_os_release, &ctx.version) else {
        return Ok(());
    };
    let p = ctx.path("usr/lib/os-release")?;
    let text = fs::read_to_string(&p)
        .with_context(|| format!("mutate-os-release: cannot read {}", p.display()))?;
    if !text.contains(from.as_str()) {
        bail!("mutate-os-release: {from:?} does not occur in /usr/lib/os-release");
    }
    ctx.tree.write(
        "usr/lib/os-release",
        mutate_os_release_text(&text, from, version).as_bytes(),
    )?;
    Ok(())
}

pub fn readonly_executables(ctx: &Ctx) -> Result<()> {
    if !ctx.tf.readonly_executables.get() {
        return Ok(());
    }
    fn walk(dir: &Path) -> Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let m = e.metadata()?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(&e.path())?;
            } else if ft.is_file() && m.permissions().mode() & 0o111 != 0 {
                let mode = m.permissions().mode() & !0o222;
                fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }
    walk(&ctx.dir("usr")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps on a tree whose links point outside it (as root on a build
    /// host): they act inside the tree or fail naming the path, and the
    /// "host" directory next to the tree stays untouched.
    #[test]
    fn steps_stay_inside_a_tree_with_hostile_links() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        fs::create_dir_all(host.join("etc")).unwrap();
        fs::write(host.join("x"), "host").unwrap();
        fs::write(host.join("etc/motd"), "host").unwrap();
        let root = d.path().join("tree");
        for dir in ["var", "run", "etc", "usr/lib/systemd/system"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("run/x"), "tree").unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink(&host, root.join("var/abs")).unwrap();
        symlink("../../../../../../../host", root.join("var/up")).unwrap();
        // A link standing where add-files writes: replaced, not followed.
        symlink(host.join("etc/motd"), root.join("etc/motd")).unwrap();
        // The systemd unit directory is a link out of the tree.
        fs::remove_dir(root.join("usr/lib/systemd/system")).unwrap();
        symlink(&host, root.join("usr/lib/systemd/system")).unwrap();
        fs::write(host.join("evil.service"), "").unwrap();
        let tfdir = d.path().join("tf");
        fs::create_dir_all(&tfdir).unwrap();
        fs::write(tfdir.join("motd"), "tree motd").unwrap();
        fs::write(
            tfdir.join("t.json"),
            r#"{"ref":"t","remove-files":["var/run/x","var/abs/x","var/up/x"],
                "add-files":[["motd","/etc/motd"]],"units":["evil.service"]}"#,
        )
        .unwrap();
        let tf = crate::treefile::Treefile::load(&tfdir.join("t.json")).unwrap();
        let tree = Tree::open(&root).unwrap();
        let ctx = Ctx {
            root: &root,
            tree: &tree,
            tf: &tf,
            version: None,
            previous_passwd: None,
            previous_group: None,
            agent: "/bin/true".into(),
            source_date_epoch: 0,
            initramfs_cache: None,
        };
        remove_files(&ctx).unwrap();
        assert!(
            !root.join("run/x").exists(),
            "var/run/x is the tree's /run/x"
        );
        add_files(&ctx).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/motd")).unwrap(),
            "tree motd"
        );
        assert!(!root.join("etc/motd").is_symlink());
        let e = format!("{:#}", enable_units(&ctx).unwrap_err());
        assert!(
            e.contains("units[0]: unit \"evil.service\" not found in the tree"),
            "{e}"
        );
        // Layout steps: /dev and /tmp are links out of the tree, and
        // /usr/bin/keelson is a link to a host file.
        symlink(&host, root.join("dev")).unwrap();
        symlink("../../../../../../../host", root.join("tmp")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink(host.join("x"), root.join("usr/bin/keelson")).unwrap();
        // A directory the step would empty is a link out: it fails, naming it.
        let e = format!(
            "{:#}",
            super::super::layout::clean_pseudo_fs(&ctx).unwrap_err()
        );
        assert!(
            e.contains("dev: a symbolic link to a path that does not exist inside"),
            "{e}"
        );
        fs::remove_file(root.join("dev")).unwrap();
        let e = format!(
            "{:#}",
            super::super::layout::clean_pseudo_fs(&ctx).unwrap_err()
        );
        assert!(e.contains("tmp: a symbolic link"), "{e}");
        super::super::layout::embed_agent(&ctx).unwrap();
        assert!(!root.join("usr/bin/keelson").is_symlink());
        assert_eq!(fs::read_to_string(host.join("x")).unwrap(), "host");
        assert_eq!(fs::read_to_string(host.join("etc/motd")).unwrap(), "host");
        assert!(host.join("evil.service").exists());
    }

    #[test]
    fn os_release_golden() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                    VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
        let got = mutate_os_release_text(text, "12", "12.3");
        assert_eq!(
            got,
            "PRETTY_NAME=\"Debian GNU/Linux 12.3 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12.3\"\nVERSION=\"12.3 (bookworm)\"\nID=debian\nOSTREE_VERSION='12.3'\n"
        );
    }

    #[test]
    fn unit_lookup() {
        let d = tempfile::tempdir().unwrap();
        let t = Tree::open(d.path()).unwrap();
        let lib = d.path().join("usr/lib/systemd/system");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("ssh.service"), "").unwrap();
        fs::write(lib.join("getty@.service"), "").unwrap();
        assert_eq!(
            find_unit(&t, "ssh.service").unwrap(),
            "/usr/lib/systemd/system/ssh.service"
        );
        assert_eq!(
            find_unit(&t, "getty@tty1.service").unwrap(),
            "/usr/lib/systemd/system/getty@.service"
        );
        assert!(find_unit(&t, "nope.service").is_none());
    }
}
