//! Compose work directories (`keelson-compose-*` in the cache directory)
//! that a killed run cannot leave behind for long: each run holds a lock in
//! its directory, and the next run removes every directory whose lock
//! nobody holds, unmounting whatever is still mounted under it first (a
//! user who deletes the cache directory must never walk into the host's
//! /proc or /sys).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};

pub const PREFIX: &str = "keelson-compose-";
const LOCK: &str = ".keelson-lock";

/// A live work directory; removed on drop, lock released with it.
pub struct WorkDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl WorkDir {
    /// Clean up stale directories in `parent`, then create and lock a new one.
    pub fn create(parent: &Path) -> Result<WorkDir> {
        fs_err::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create cache directory", parent.display()))?;
        remove_stale(parent)?;
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(parent)
            .with_context(|| format!("{}: cannot create a work directory", parent.display()))?;
        let lock_path = dir.path().join(LOCK);
        let lock = File::create(&lock_path)
            .with_context(|| format!("{}: cannot create", lock_path.display()))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .with_context(|| format!("{}: cannot lock", lock_path.display()))?;
        Ok(WorkDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

/// Whether a work directory is in use by a running compose.
fn in_use(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK)) else {
        // No lock file: created by a run killed at once, or by an older
        // keelson; in use only if it is brand new.
        return fs_err::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 60));
    };
    flock(&f, FlockOperation::NonBlockingLockShared).is_err()
}

/// Remove the `keelson-compose-*` directories in `parent` no run holds.
pub fn remove_stale(parent: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(rd) = fs_err::read_dir(parent) else {
        return Ok(removed);
    };
    for e in rd.flatten() {
        let p = e.path();
        let stale = e.file_name().to_string_lossy().starts_with(PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir())
            && !in_use(&p);
        if !stale {
            continue;
        }
        let mounts = unmount_under(&p);
        fs_err::remove_dir_all(&p)
            .with_context(|| format!("{}: cannot remove a stale work directory", p.display()))?;
        tracing::info!(
            "removed the stale work directory {} of a compose that did not finish ({mounts} mounts left by it unmounted first)",
            p.display()
        );
        removed.push(p);
    }
    Ok(removed)
}

/// Pure: the mount points under `dir` in /proc/self/mountinfo text,
/// deepest first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Detach every mount under `dir`; returns how many there were.
fn unmount_under(dir: &Path) -> usize {
    let Ok(dir) = dir.canonicalize() else {
        return 0;
    };
    let info = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mounts_under(&info, &dir);
    for m in &mounts {
        if let Err(e) = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!("{}: cannot unmount: {e}", m.display());
        }
    }
    mounts.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_dir_deepest_first() {
        let info = "\
22 1 0:21 / /proc rw - proc proc rw
90 30 0:5 / /c/keelson-compose-a/rootfs/proc rw - proc proc rw
91 90 0:6 / /c/keelson-compose-a/rootfs/dev/pts rw - devpts devpts rw
92 30 0:7 / /c/keelson-compose-a/root\\040fs rw - tmpfs tmpfs rw
93 30 0:7 / /c/keelson-compose-ab rw - tmpfs tmpfs rw
";
        let got = mounts_under(info, Path::new("/c/keelson-compose-a"));
        assert_eq!(
            got,
            [
                PathBuf::from("/c/keelson-compose-a/rootfs/dev/pts"),
                PathBuf::from("/c/keelson-compose-a/rootfs/proc"),
                PathBuf::from("/c/keelson-compose-a/root fs"),
            ]
        );
    }

    #[test]
    fn stale_dirs_go_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let live = WorkDir::create(d.path()).unwrap();
        let stale = d.path().join(format!("{PREFIX}dead"));
        fs_err::create_dir_all(stale.join("rootfs/etc")).unwrap();
        File::create(stale.join(LOCK)).unwrap();
        let other = d.path().join("debs");
        fs_err::create_dir(&other).unwrap();
        let removed = remove_stale(d.path()).unwrap();
        assert_eq!(removed, std::slice::from_ref(&stale));
        assert!(live.path().is_dir() && other.is_dir() && !stale.exists());
        let p = live.path().to_path_buf();
        drop(live);
        assert!(!p.exists());
    }
}
