//! `ostree-layers` / `ostree-override-layers`: commits already in the
//! target repository, checked out over the installed packages (before
//! postprocessing), as rpm-ostree does. A plain layer may add files but not
//! change one a package (or an earlier layer) wrote; an override layer may.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::treefile::Treefile;
use crate::util::cmd::Cmd;

/// One layer, resolved to its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// `ostree-layers[0]` etc., for messages.
    pub field: String,
    pub ref_: String,
    pub checksum: String,
    pub overrides: bool,
}

/// Resolve every layer ref in `repo` (all missing ones in one error).
pub fn resolve(repo_path: &Path, tf: &Treefile) -> Result<Vec<Layer>> {
    let wanted: Vec<(String, &String, bool)> = tf
        .ostree_layers
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("ostree-layers[{i}]"), r, false))
        .chain(
            tf.ostree_override_layers
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("ostree-override-layers[{i}]"), r, true)),
        )
        .collect();
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    let Some(repo) = super::open_existing(repo_path)? else {
        bail!(
            "{}: ostree-layers: the repository does not exist; layers must already be committed there",
            repo_path.display()
        );
    };
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (field, r, overrides) in wanted {
        match repo.resolve_rev(r, true) {
            Ok(Some(c)) => out.push(Layer {
                field,
                ref_: r.clone(),
                checksum: c.to_string(),
                overrides,
            }),
            Ok(None) => missing.push(format!("{field}: {r:?}")),
            Err(e) => missing.push(format!("{field}: {r:?}: {e}")),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: layer refs not in the repository (commit them there first): {}",
            repo_path.display(),
            missing.join("; ")
        );
    }
    Ok(out)
}

/// Check the layers out over `rootfs`, in order (plain layers, then
/// override layers). A plain layer is first checked out into `scratch` and
/// compared with the tree: a path it would change is an error naming it.
pub fn apply(repo_path: &Path, rootfs: &Path, scratch: &Path, layers: &[Layer]) -> Result<()> {
    for l in layers {
        let how = if l.overrides {
            String::new()
        } else {
            let probe = scratch.join(format!("layer-{}", &l.checksum[..12]));
            checkout(repo_path, &l.checksum, &probe, false)?;
            let clashes = conflicts(&probe, rootfs)?;
            fs_err::remove_dir_all(&probe)?;
            if !clashes.is_empty() {
                bail!(
                    "{}: layer {} would change what the packages installed: {} (use ostree-override-layers to replace files)",
                    l.field,
                    l.ref_,
                    clashes.join(", ")
                );
            }
            " (plain layer)".into()
        };
        checkout(repo_path, &l.checksum, rootfs, true).with_context(|| {
            format!(
                "{}: checking out layer {}{how} over the tree",
                l.field, l.ref_
            )
        })?;
    }
    Ok(())
}

fn checkout(repo: &Path, commit: &str, dest: &Path, union: bool) -> Result<()> {
    let mut c = Cmd::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .arg("checkout");
    if union {
        c = c.arg("--union");
    }
    c.arg(commit).arg(dest).run()?;
    Ok(())
}

/// Paths (relative) where `layer` has an entry that differs from what
/// `tree` has there: a different file or link, or a file where the tree has
/// a directory (and the reverse). Identical files are fine.
pub fn conflicts(layer: &Path, tree: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(layer, tree, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(layer: &Path, tree: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs_err::read_dir(layer.join(rel))? {
        let e = e?;
        let r = rel.join(e.file_name());
        let lm = e.file_type()?;
        let Ok(tm) = fs_err::symlink_metadata(tree.join(&r)) else {
            continue; // new in the layer
        };
        let same = if lm.is_dir() {
            tm.is_dir()
        } else if lm.is_symlink() {
            tm.file_type().is_symlink()
                && fs_err::read_link(layer.join(&r))? == fs_err::read_link(tree.join(&r))?
        } else {
            tm.is_file() && fs_err::read(layer.join(&r))? == fs_err::read(tree.join(&r))?
        };
        if !same {
            out.push(format!("/{}", r.display()));
        } else if lm.is_dir() {
            walk(layer, tree, &r, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_table() {
        let d = tempfile::tempdir().unwrap();
        let (layer, tree) = (d.path().join("l"), d.path().join("t"));
        for (root, files) in [
            (
                &layer,
                &[
                    ("usr/share/new", "n"),
                    ("usr/share/same", "s"),
                    ("usr/share/diff", "L"),
                    ("etc/x/y", "f"),
                ][..],
            ),
            (
                &tree,
                &[
                    ("usr/share/same", "s"),
                    ("usr/share/diff", "T"),
                    ("etc/x", "a file"),
                ][..],
            ),
        ] {
            for (p, text) in files {
                let p = root.join(p);
                fs_err::create_dir_all(p.parent().unwrap()).unwrap();
                fs_err::write(&p, text).unwrap();
            }
        }
        std::os::unix::fs::symlink("a", layer.join("usr/link")).unwrap();
        std::os::unix::fs::symlink("b", tree.join("usr/link")).unwrap();
        let mut got = conflicts(&layer, &tree).unwrap();
        got.sort();
        assert_eq!(got, ["/etc/x", "/usr/link", "/usr/share/diff"]);
    }
}
