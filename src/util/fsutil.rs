//! Filesystem helpers that keep the "nothing half-written" rule.

use fs_err as fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Write `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers see the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path)
        .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

/// A different device than its parent directory: something is mounted here.
pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(p), p.parent().map(fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Figures of the filesystem holding a path (statvfs).
#[derive(Debug)]
pub struct FsStats {
    pub total_bytes: u64,
    /// Available to unprivileged users.
    pub avail_bytes: u64,
    pub read_only: bool,
}

pub fn fs_stats(path: &Path) -> Result<FsStats> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(FsStats {
        total_bytes: st.f_blocks * st.f_frsize,
        avail_bytes: st.f_bavail * st.f_frsize,
        read_only: st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
    })
}

/// Whether the file at `path` can be opened for direct I/O (`O_DIRECT`):
/// ext4 and xfs can; tmpfs on older kernels and some network filesystems
/// cannot.
pub fn supports_direct_io(path: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, open};
    open(
        path,
        OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .is_ok()
}

/// The names in `dir`, sorted (byte order, as ostree's dirtrees are).
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list", dir.display()))?;
    names.sort();
    Ok(names)
}

/// Remove everything inside `dir` but keep `dir` itself.
pub fn empty_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let p = entry?.path();
        let meta = fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .with_context(|| format!("{}: cannot remove", p.display()))?;
    }
    Ok(())
}

/// Remove a file, link or tree if it exists.
pub fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).with_context(|| format!("{}: cannot remove", p.display()))
        }
        Ok(_) => fs::remove_file(p).with_context(|| format!("{}: cannot remove", p.display())),
    }
}

/// Create a symlink, replacing whatever is at `link`.
pub fn symlink_replace(target: &str, link: &Path) -> Result<()> {
    remove_any(link)?;
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("{}: cannot create symlink to {target}", link.display()))
}

/// SHA-256 of a file's bytes, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        fs_err::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn fs_stats_of_a_tempdir() {
        let d = tempfile::tempdir().unwrap();
        let st = fs_stats(d.path()).unwrap();
        assert!(st.total_bytes > 0 && st.avail_bytes <= st.total_bytes && !st.read_only);
        assert!(
            fs_stats(&d.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("statvfs")
        );
    }

    #[test]
    fn empty_dir_keeps_dir() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/nowhere", d.path().join("l")).unwrap();
        empty_dir(d.path()).unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
