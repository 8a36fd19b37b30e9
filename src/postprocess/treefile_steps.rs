//! Steps that apply treefile fields: add-files, remove-files,
//! remove-from-packages, units, default-target, postprocess scripts,
//! mutate-os-release, readonly-executables.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Ctx, sandbox};
use crate::util::fsutil::{remove_any, symlink_replace};

pub fn add_files(ctx: &Ctx) -> Result<()> {
    for (i, (src, dst)) in ctx.tf.add_files.iter().enumerate() {
        let from = ctx.tf.basedir.join(src);
        let to = ctx.root.join(dst.trim_start_matches('/'));
        let meta = fs::metadata(&from)
            .with_context(|| format!("add-files[{i}][0]: {} not found", from.display()))?;
        if !meta.is_file() {
            bail!(
                "add-files[{i}][0]: {} is not a regular file",
                from.display()
            );
        }
        fs::create_dir_all(to.parent().expect("absolute dst has a parent"))?;
        remove_any(&to)?;
        fs::copy(&from, &to)
            .with_context(|| format!("add-files[{i}]: copying {} to {dst}", from.display()))?;
        // Keep the executable bit, drop group/other write and special bits.
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

pub fn remove_files(ctx: &Ctx) -> Result<()> {
    for p in &ctx.tf.remove_files {
        remove_any(&ctx.root.join(p))?;
    }
    Ok(())
}

/// The file list dpkg keeps for `pkg` (`pkg.list` or `pkg:ARCH.list`).
fn dpkg_file_list(root: &Path, pkg: &str) -> Option<String> {
    let info = root.join("var/lib/dpkg/info");
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
        let list = dpkg_file_list(ctx.root, pkg).with_context(|| {
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
            let p = ctx.root.join(path.trim_start_matches('/'));
            // Directories are shared between packages; only entries go.
            if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Where a unit file lives in the tree, as the path systemd sees.
fn find_unit(root: &Path, unit: &str) -> Option<String> {
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
        .find(|p| root.join(p).exists())
        .map(|p| format!("/{p}"))
}

pub fn enable_units(ctx: &Ctx) -> Result<()> {
    let wants = ctx.root.join("etc/systemd/system/multi-user.target.wants");
    for (i, unit) in ctx.tf.units.iter().enumerate() {
        let target = find_unit(ctx.root, unit)
            .with_context(|| format!("units[{i}]: unit {unit:?} not found in the tree"))?;
        fs::create_dir_all(&wants)?;
        symlink_replace(&target, &wants.join(unit))?;
    }
    Ok(())
}

pub fn default_target(ctx: &Ctx) -> Result<()> {
    let Some(t) = &ctx.tf.default_target else {
        return Ok(());
    };
    let target = find_unit(ctx.root, t)
        .with_context(|| format!("default-target: {t:?} not found in the tree"))?;
    let dir = ctx.root.join("etc/systemd/system");
    fs::create_dir_all(&dir)?;
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
        let host = ctx.root.join(name);
        fs::write(&host, &text)?;
        fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
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
    let p = ctx.root.join("usr/lib/os-release");
    let text = fs::read_to_string(&p)
        .with_context(|| format!("mutate-os-release: cannot read {}", p.display()))?;
    if !text.contains(from.as_str()) {
        bail!("mutate-os-release: {from:?} does not occur in /usr/lib/os-release");
    }
    fs::write(&p, mutate_os_release_text(&text, from, version))?;
    Ok(())
}

pub fn readonly_executables(ctx: &Ctx) -> Result<()> {
    if !ctx.tf.readonly_executables {
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
                fs::set_permissions(e.path(), fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }
    walk(&ctx.root.join("usr"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lib = d.path().join("usr/lib/systemd/system");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("ssh.service"), "").unwrap();
        fs::write(lib.join("getty@.service"), "").unwrap();
        assert_eq!(
            find_unit(d.path(), "ssh.service").unwrap(),
            "/usr/lib/systemd/system/ssh.service"
        );
        assert_eq!(
            find_unit(d.path(), "getty@tty1.service").unwrap(),
            "/usr/lib/systemd/system/getty@.service"
        );
        assert!(find_unit(d.path(), "nope.service").is_none());
    }
}
