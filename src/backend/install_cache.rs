//! The package-install cache: the root filesystem mmdebstrap produced,
//! kept under `--cachedir` (`installs/`) keyed by everything that decides
//! it, so a compose whose package set and backend options did not change
//! (a unit file, a config fragment or a postprocess line changed) copies
//! the install instead of running mmdebstrap again.
//!
//! - Key ([`key`]): the resolved packages with versions, the mmdebstrap
//!   options (suite, variant, sources, includes, apt and dpkg options: so
//!   `recommends`, `documentation` and `install-langs`), the passwd/group
//!   seed, SOURCE_DATE_EPOCH, and the cache format. The treefile's other
//!   fields only act after the install, so they are not in the key.
//! - Entries live in a [`CacheDir`] (built under `tmp-`, renamed, manifest
//!   last, a shared/exclusive lock, pruning). The manifest is [`digest`]:
//!   every path with its type, mode, owner, size and link target. An entry
//!   whose tree no longer matches its manifest is removed and rebuilt,
//!   never used.
//! - `cp -a` copies both ways (owners, modes, xattrs, hard links, device
//!   nodes and timestamps kept), so the tree the postprocess steps see is
//!   the one mmdebstrap wrote.
//! - Pruned to the [`KEEP`] most recently used entries.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::Package;
use crate::util::cache_dir::CacheDir;
use crate::util::cmd::Cmd;

/// Entries kept (most recently used first).
pub const KEEP: usize = 3;
/// Bumped when what an entry holds changes meaning.
const FORMAT: &str = "keelson-install-cache-1";

/// The cache key: labelled, length-prefixed parts (pure).
pub fn key(
    backend_identity: &str,
    resolved: &[Package],
    seed: &[(&str, Vec<u8>)],
    sde: Option<&str>,
) -> String {
    let mut h = crate::inputhash::LabelledHash::default();
    h.part("format", FORMAT.as_bytes());
    h.part("backend", backend_identity.as_bytes());
    h.packages(resolved);
    for (name, bytes) in seed {
        h.part(&format!("seed:{name}"), bytes);
    }
    h.part("source-date-epoch", sde.unwrap_or("unset").as_bytes());
    h.finish()
}

/// A manifest of a tree: every path (sorted) with its type, mode, owner,
/// size and link target. Detects a truncated, partly deleted or altered
/// copy without reading every byte.
pub fn digest(root: &Path) -> Result<String> {
    let mut lines = Vec::new();
    walk(root, Path::new(""), &mut lines)?;
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    Ok(format!(
        "{} entries {}",
        lines.len(),
        hex::encode(h.finalize())
    ))
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(rel);
    for e in fs_err::read_dir(&dir)? {
        let e = e?;
        let r = rel.join(e.file_name());
        let m = fs_err::symlink_metadata(root.join(&r))?;
        let target = if m.file_type().is_symlink() {
            fs_err::read_link(root.join(&r))?.display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {}",
            r.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            target
        ));
        if m.is_dir() {
            walk(root, &r, out)?;
        }
    }
    Ok(())
}

/// The cache directory (`CACHEDIR/installs`).
pub struct InstallCache {
    dir: CacheDir,
}

impl InstallCache {
    /// Open (create) the cache and remove what killed runs left.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: CacheDir::open(dir, "install cache")?,
        })
    }

    /// The intact entry for `key`, held under the shared lock until the
    /// returned [`Held`] is dropped (so no other compose prunes it while it
    /// is copied). The check may remove a damaged entry, so it runs under
    /// the exclusive lock, then downgrades.
    pub fn find(&self, key: &str) -> Result<Option<Held<'_>>> {
        let lock = self.dir.lock(true)?;
        if !self.intact_locked(key)? {
            return Ok(None);
        }
        self.dir.downgrade(&lock)?;
        Ok(Some(Held {
            cache: self,
            key: key.to_string(),
            _lock: lock,
        }))
    }

    /// Whether the entry for `key` is complete and intact; a damaged one
    /// is removed (and false returned, so the install runs afresh). The
    /// caller holds the exclusive lock.
    fn intact_locked(&self, key: &str) -> Result<bool> {
        let tree = self.dir.data(key);
        let Ok(want) = fs_err::read_to_string(self.dir.manifest(key)) else {
            self.dir.remove(key)?; // renamed into place, manifest never written
            return Ok(false);
        };
        if tree.is_dir() && digest(&tree)? == want.trim() {
            return Ok(true);
        }
        self.dir.discard(key, "does not match its manifest")?;
        Ok(false)
    }

    /// Keep `rootfs` (just installed) as the entry for `key`, then prune.
    pub fn store(&self, key: &str, rootfs: &Path) -> Result<()> {
        let _lock = self.dir.lock(true)?;
        let tmp = self.dir.tmp(key);
        copy_tree(rootfs, &tmp)?;
        let d = digest(&tmp)?;
        self.dir
            .commit(key, &tmp, format!("{d}\n").as_bytes(), KEEP)
    }
}

/// An entry found by [`InstallCache::find`], locked against pruning.
pub struct Held<'a> {
    cache: &'a InstallCache,
    key: String,
    _lock: std::fs::File,
}

impl Held<'_> {
    /// Copy the entry to `rootfs` (which must not exist) and mark it used.
    pub fn copy_to(&self, rootfs: &Path) -> Result<()> {
        copy_tree(&self.cache.dir.data(&self.key), rootfs)?;
        self.cache.dir.touch(&self.key)
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    Cmd::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .run()
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// `.deb` files in the package cache superseded by the version just
/// installed (same package and architecture, another version): the cache
/// keeps one version of each package it has seen (pure).
pub fn superseded_debs(files: &[String], installed: &[Package]) -> Vec<String> {
    let now: BTreeMap<(&str, &str), &str> = installed
        .iter()
        .map(|p| ((p.name.as_str(), p.arch.as_str()), p.version.as_str()))
        .collect();
    files
        .iter()
        .filter(|f| {
            let Some(stem) = f.strip_suffix(".deb") else {
                return false;
            };
            let parts: Vec<&str> = stem.split('_').collect();
            let [name, version, arch] = parts[..] else {
                return false;
            };
            // apt writes an epoch's colon as %3a
            let version = version.replace("%3a", ":");
            now.get(&(name, arch)).is_some_and(|v| *v != version)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::test_pkg as pkg;

    #[test]
    fn every_part_changes_the_key() {
        let base = key(
            "opts",
            &[pkg("a", "1")],
            &[("passwd", b"x".to_vec())],
            Some("1"),
        );
        let variants = [
            key(
                "opts2",
                &[pkg("a", "1")],
                &[("passwd", b"x".to_vec())],
                Some("1"),
            ),
            key(
                "opts",
                &[pkg("a", "2")],
                &[("passwd", b"x".to_vec())],
                Some("1"),
            ),
            key(
                "opts",
                &[pkg("a", "1")],
                &[("passwd", b"y".to_vec())],
                Some("1"),
            ),
            key("opts", &[pkg("a", "1")], &[], Some("1")),
            key("opts", &[pkg("a", "1")], &[("passwd", b"x".to_vec())], None),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        // the package order does not matter
        assert_eq!(
            key("o", &[pkg("a", "1"), pkg("b", "1")], &[], None),
            key("o", &[pkg("b", "1"), pkg("a", "1")], &[], None)
        );
    }

    #[test]
    fn superseded_debs_table() {
        let files: Vec<String> = [
            "a_1_amd64.deb",
            "a_0.9_amd64.deb",
            "b_1%3a2.0-1_amd64.deb",
            "b_1%3a1.0-1_amd64.deb",
            "c_5_all.deb",
            "lock",
            "partial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut got = superseded_debs(&files, &[pkg("a", "1"), pkg("b", "1:2.0-1")]);
        got.sort();
        assert_eq!(got, ["a_0.9_amd64.deb", "b_1%3a1.0-1_amd64.deb"]);
    }

    /// A compose copying an entry holds off another's store (and its
    /// pruning) until the copy is done.
    #[test]
    fn a_held_entry_blocks_changes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        fs_err::create_dir_all(root.join("etc")).unwrap();
        let dir = d.path().join("installs");
        let cache = InstallCache::open(&dir).unwrap();
        cache.store("k", &root).unwrap();
        let held = cache.find("k").unwrap().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (dir2, root2) = (dir.clone(), root.clone());
        let t = std::thread::spawn(move || {
            let other = InstallCache::open(&dir2).unwrap();
            other.store("k2", &root2).unwrap();
            tx.send(()).unwrap();
        });
        let waited = rx.recv_timeout(std::time::Duration::from_millis(500));
        assert!(waited.is_err(), "the store must wait for the held entry");
        held.copy_to(&d.path().join("copy")).unwrap();
        drop(held);
        rx.recv().unwrap();
        t.join().unwrap();
        assert!(cache.find("k2").unwrap().is_some());
    }

    /// A stored entry is found intact; a damaged one is removed, not used;
    /// a killed run's `tmp-` copy is removed on open.
    #[test]
    fn entries_are_checked_before_use() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        fs_err::create_dir_all(root.join("usr/bin")).unwrap();
        fs_err::write(root.join("usr/bin/x"), "x").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let cache = InstallCache::open(&d.path().join("installs")).unwrap();
        assert!(cache.find("k").unwrap().is_none());
        cache.store("k", &root).unwrap();
        assert!(cache.find("k").unwrap().is_some(), "stored");
        let entry = cache.dir.data("k");
        let out = d.path().join("restored");
        cache
            .find("k")
            .unwrap()
            .expect("found")
            .copy_to(&out)
            .unwrap();
        assert!(cache.find("other").unwrap().is_none());
        assert_eq!(digest(&out).unwrap(), digest(&root).unwrap());
        // damage: a file cut short
        fs_err::write(entry.join("usr/bin/x"), "").unwrap();
        assert!(cache.find("k").unwrap().is_none());
        assert!(!entry.exists(), "a damaged entry is removed");
        // the compose then installs afresh and stores it again: rebuilt
        cache.store("k", &root).unwrap();
        let again = d.path().join("again");
        cache
            .find("k")
            .unwrap()
            .expect("rebuilt")
            .copy_to(&again)
            .unwrap();
        assert_eq!(digest(&again).unwrap(), digest(&root).unwrap());
        // a killed run's partial copy
        fs_err::create_dir_all(d.path().join("installs/tmp-zzz/usr")).unwrap();
        InstallCache::open(&d.path().join("installs")).unwrap();
        assert!(!d.path().join("installs/tmp-zzz").exists());
    }
}
