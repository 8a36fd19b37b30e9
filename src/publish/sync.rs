//! Copying the live generation to a mirror directory (what a CDN origin or
//! an `rsync`/`aws s3 sync` target receives), in the order that keeps every
//! state a client can see consistent: objects, then deltas and
//! delta-indexes, then refs and config, then `summary.sig` and `summary`,
//! and deletions last.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fs_err as fs;

/// Pure: upload rank of a repo-relative path (lower goes first).
pub fn rank(rel: &Path) -> u8 {
    let s = rel.to_string_lossy();
    match s.split('/').next().unwrap_or("") {
        "objects" => 0,
        "deltas" => 1,
        "delta-indexes" => 2,
        "refs" | "config" => 3,
        "summary.sig" => 4,
        "summary" => 5,
        _ => 3,
    }
}

/// Every directory and file of the served tree (symlinks followed),
/// relative paths; files in upload order.
fn tree(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut dirs, mut out) = (Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let r = rel.join(e.file_name());
            if r == Path::new("generation.json") {
                continue;
            }
            let meta = fs::metadata(e.path())?;
            if meta.is_dir() {
                dirs.push(r.clone());
                stack.push(r);
            } else {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    Ok((dirs, out))
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Synced {
    pub copied: usize,
    pub deleted: usize,
}

/// Mirror `served` into `dest` in upload order. Immutable files (objects,
/// deltas) already there are not copied again.
pub fn sync(served: &Path, dest: &Path) -> Result<Synced> {
    let mut out = Synced::default();
    let (dirs, wanted) = tree(served)?;
    // Empty directories too (refs/remotes, …): the mirror is a whole repo.
    for d in &dirs {
        fs::create_dir_all(dest.join(d))?;
    }
    let set: BTreeSet<&PathBuf> = wanted.iter().collect();
    for rel in &wanted {
        let to = dest.join(rel);
        let immutable = rank(rel) <= 1;
        if immutable && to.exists() {
            continue;
        }
        fs::create_dir_all(to.parent().expect("file has a parent"))?;
        let bytes = fs::read(served.join(rel))?;
        super::layout::write_public(&to, &bytes)
            .with_context(|| format!("--sync-to {}", dest.display()))?;
        out.copied += 1;
    }
    if dest.is_dir() {
        for rel in tree(dest)?.1 {
            if !set.contains(&rel) {
                fs::remove_file(dest.join(&rel))?;
                out.deleted += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::rank;
    use std::path::Path;

    #[test]
    fn upload_order() {
        let order = [
            "objects/ab/cd.filez",
            "deltas/x/y/superblock",
            "delta-indexes/a/b.index",
            "refs/heads/k",
            "summary.sig",
            "summary",
        ];
        let ranks: Vec<u8> = order.iter().map(|p| rank(Path::new(p))).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted);
        assert!(rank(Path::new("summary.sig")) < rank(Path::new("summary")));
        assert!(rank(Path::new("config")) < rank(Path::new("summary.sig")));
    }
}
