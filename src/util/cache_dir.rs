//! A keyed cache directory under `--cachedir` (the install cache, the
//! initramfs cache): each entry is `KEY` (a file or a directory) plus
//! `KEY.manifest`, which says what the entry must be and is written last.
//!
//! - An entry is built under `tmp-KEY` and renamed into place, then its
//!   manifest is written atomically: a killed run leaves a `tmp-` name
//!   (removed at the next open) or an entry without a manifest (removed
//!   when looked up), never an entry that looks complete.
//! - Composes sharing a cache directory take `.lock`: shared while they
//!   read an entry, exclusive while they check, store or prune, so none
//!   removes what another is writing or reading.
//! - Pruned to the `keep` most recently used entries; the manifest's
//!   mtime is the last use.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

const TMP: &str = "tmp-";
const MANIFEST: &str = ".manifest";

/// Which entries to remove so that the `keep` most recently used remain
/// (pure; `entries` are names with their last use).
pub fn to_prune(mut entries: Vec<(String, SystemTime)>, keep: usize) -> Vec<String> {
    entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    entries.into_iter().skip(keep).map(|(n, _)| n).collect()
}

pub struct CacheDir {
    dir: PathBuf,
    /// What the cache holds, for logs ("install cache").
    what: &'static str,
}

impl CacheDir {
    /// Open (create) the directory and remove what killed runs left.
    pub fn open(dir: &Path, what: &'static str) -> Result<Self> {
        fs_err::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the {what}", dir.display()))?;
        let cache = Self {
            dir: dir.to_path_buf(),
            what,
        };
        let _lock = cache.lock(true)?;
        for e in fs_err::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP) {
                tracing::info!("{what}: removing {name}, left by an interrupted compose");
                crate::util::fsutil::remove_any(&e.path())?;
            }
        }
        Ok(cache)
    }

    /// The cache-wide lock (blocking): shared to read entries, exclusive
    /// to change the directory. Released when the file is dropped.
    pub fn lock(&self, exclusive: bool) -> Result<std::fs::File> {
        use rustix::fs::{FlockOperation, flock};
        let path = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(&f, op).with_context(|| format!("{}: cannot lock", path.display()))?;
        Ok(f)
    }

    /// Turn an exclusive lock into a shared one (atomically for readers).
    pub fn downgrade(&self, lock: &std::fs::File) -> Result<()> {
        use rustix::fs::{FlockOperation, flock};
        flock(lock, FlockOperation::LockShared)
            .with_context(|| format!("{}: downgrading the lock", self.what))
    }

    /// The entry's data (file or directory).
    pub fn data(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    pub fn manifest(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}{MANIFEST}"))
    }

    /// Where to build the entry for `key` before [`CacheDir::commit`].
    pub fn tmp(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{TMP}{key}"))
    }

    /// The entries that have a manifest, with their last use.
    pub fn keys(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for e in fs_err::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(k) = name.strip_suffix(MANIFEST) {
                out.push((k.to_string(), e.metadata()?.modified()?));
            }
        }
        Ok(out)
    }

    /// Remove an entry (data and manifest; either may be missing).
    pub fn remove(&self, key: &str) -> Result<()> {
        let manifest = self.manifest(key);
        if manifest.exists() {
            fs_err::remove_file(&manifest)?;
        }
        let data = self.data(key);
        if std::fs::symlink_metadata(&data).is_ok() {
            crate::util::fsutil::remove_any(&data)
                .with_context(|| format!("{}: cannot remove", data.display()))?;
        }
        Ok(())
    }

    /// Remove a damaged entry, saying why.
    pub fn discard(&self, key: &str, why: &str) -> Result<()> {
        tracing::warn!(
            "{}: entry {} {why}; removing it and building afresh",
            self.what,
            self.data(key).display()
        );
        self.remove(key)
    }

    /// Mark an entry used (for pruning).
    pub fn touch(&self, key: &str) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.manifest(key))?;
        f.set_modified(SystemTime::now())?;
        Ok(())
    }

    /// Move the built `tmp` into place as `key` and write its manifest
    /// (the caller holds the exclusive lock), then prune to `keep`.
    pub fn commit(&self, key: &str, tmp: &Path, manifest: &[u8], keep: usize) -> Result<()> {
        self.remove(key)?;
        fs_err::rename(tmp, self.data(key))?;
        crate::util::fsutil::write_atomic(&self.manifest(key), manifest)?;
        self.prune(keep)
    }

    fn prune(&self, keep: usize) -> Result<()> {
        for k in to_prune(self.keys()?, keep) {
            tracing::info!(
                "{}: pruning entry {k} (keeping the {keep} most recently used)",
                self.what
            );
            self.remove(&k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_most_recent() {
        let t = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let e = vec![
            ("a".into(), t(1)),
            ("b".into(), t(3)),
            ("c".into(), t(2)),
            ("d".into(), t(4)),
        ];
        assert_eq!(to_prune(e.clone(), 3), ["a"]);
        assert_eq!(to_prune(e.clone(), 1), ["b", "c", "a"]);
        assert!(to_prune(e, 4).is_empty());
    }

    /// Entries without a manifest are not listed; commit replaces, prune
    /// keeps the newest; tmp- names go at open.
    #[test]
    fn commit_prune_and_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let c = CacheDir::open(d.path(), "test cache").unwrap();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            let tmp = c.tmp(k);
            fs_err::write(&tmp, k).unwrap();
            c.commit(k, &tmp, b"m", 2).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10 + i as u64);
            std::fs::File::options()
                .append(true)
                .open(c.manifest(k))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // "a" was pruned when "c" came in (keep 2)
        let mut keys: Vec<String> = c.keys().unwrap().into_iter().map(|k| k.0).collect();
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
        assert!(!c.data("a").exists());
        fs_err::write(c.data("orphan"), "x").unwrap();
        fs_err::create_dir_all(c.tmp("killed").join("sub")).unwrap();
        let c = CacheDir::open(d.path(), "test cache").unwrap();
        assert!(!c.tmp("killed").exists());
        assert_eq!(c.keys().unwrap().len(), 2, "no manifest, no entry");
    }
}
