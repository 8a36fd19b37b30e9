//! Same commit and definition, same image bytes: every timestamp in the
//! staged trees clamped to SOURCE_DATE_EPOCH before the filesystems are
//! built from them (ids and hash seeds come from [`super::disk::Ids`]).

use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};

/// Set atime and mtime of everything under `dir` (links themselves, not
/// their targets) to at most `epoch`.
pub fn clamp_times(dir: &Path, epoch: u64) -> Result<()> {
    let t = Timespec {
        tv_sec: epoch as i64,
        tv_nsec: 0,
    };
    walk(dir, &mut |p, meta| {
        use std::os::unix::fs::MetadataExt;
        if meta.mtime() <= epoch as i64 && meta.atime() <= epoch as i64 {
            return Ok(());
        }
        let keep = Timespec {
            tv_sec: meta.mtime().min(epoch as i64),
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: keep,
        };
        utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("{}: cannot set timestamps", p.display()))
    })
}

fn walk(p: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<()>) -> Result<()> {
    let meta =
        fs_err::symlink_metadata(p).with_context(|| format!("{}: cannot stat", p.display()))?;
    if meta.is_dir() {
        for e in fs_err::read_dir(p).with_context(|| format!("{}: cannot list", p.display()))? {
            walk(&e?.path(), f)?;
        }
    }
    f(p, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn clamps_files_dirs_and_links() {
        let d = tempfile::tempdir().unwrap();
        fs_err::create_dir(d.path().join("a")).unwrap();
        fs_err::write(d.path().join("a/f"), "x").unwrap();
        std::os::unix::fs::symlink("/nowhere", d.path().join("l")).unwrap();
        clamp_times(d.path(), 1000).unwrap();
        for p in ["a", "a/f", "l", ""] {
            let m = fs_err::symlink_metadata(d.path().join(p)).unwrap();
            assert_eq!((m.mtime(), m.atime()), (1000, 1000), "{p}");
        }
    }
}
