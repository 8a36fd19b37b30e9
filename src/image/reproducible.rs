//! Same commit and definition, same image bytes: every timestamp in the
//! staged trees clamped to SOURCE_DATE_EPOCH before the filesystems are
//! built from them, and the inode change times `mkfs.ext4 -d` copies from
//! the staging files (the kernel's clock, not settable) rewritten
//! afterwards with debugfs under the same fixed clock. Ids and hash seeds
//! come from [`super::disk::Ids`].

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

/// Pure: the inode numbers in use, from `dumpe2fs` output (each group's
/// "Free inodes:" ranges, and the inodes per group).
pub fn used_inodes(dumpe2fs: &str) -> Result<Vec<u64>> {
    let per_group: u64 = dumpe2fs
        .lines()
        .find_map(|l| l.strip_prefix("Inodes per group:"))
        .and_then(|v| v.trim().parse().ok())
        .context("dumpe2fs: no \"Inodes per group\"")?;
    let mut used = Vec::new();
    let mut group: Option<u64> = None;
    for line in dumpe2fs.lines() {
        if let Some(rest) = line.strip_prefix("Group ") {
            group = rest.split(':').next().and_then(|g| g.trim().parse().ok());
            continue;
        }
        let (Some(g), Some(free)) = (group, line.trim_start().strip_prefix("Free inodes:")) else {
            continue;
        };
        let mut is_free = vec![false; per_group as usize];
        let first = g * per_group + 1;
        for part in free.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u64>()?, b.parse::<u64>()?),
                None => (part.parse::<u64>()?, part.parse::<u64>()?),
            };
            for i in a.max(first)..=b.min(first + per_group - 1) {
                is_free[(i - first) as usize] = true;
            }
        }
        used.extend(
            (0..per_group)
                .filter(|i| !is_free[*i as usize])
                .map(|i| first + i),
        );
        group = None;
    }
    Ok(used)
}

/// Set every used inode's change and access time in the ext4 filesystem at `offset`
/// of `disk` to `epoch`, with debugfs's clock at `epoch` too (it stamps the
/// superblock's write time when it closes the filesystem).
pub fn fix_ctimes(disk: &Path, offset: u64, epoch: u64) -> Result<()> {
    let dev = format!("{}?offset={offset}", disk.display());
    let info = crate::util::cmd::Cmd::new("dumpe2fs").arg(&dev).run()?;
    let mut script = format!("set_current_time @{epoch}\n");
    for ino in used_inodes(&info)? {
        // Access times too: reading the staged tree (du, mkfs) moves them.
        script += &format!("sif <{ino}> ctime @{epoch}\nsif <{ino}> atime @{epoch}\n");
    }
    let out = crate::util::cmd::Cmd::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(&dev)
        .stdin(script.into_bytes())
        .output()?;
    let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !errors.is_empty() {
        anyhow::bail!(
            "debugfs on {dev}: {}",
            crate::util::cmd::tail(&errors.join("\n"), 5)
        );
    }
    Ok(())
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
    fn used_inodes_from_free_ranges() {
        let text = "Inode count: 12\nInodes per group:         4\n\
            Group 0: (Blocks 1-8192) csum 0x1\n  Free inodes: 3-4\n\
            Group 1: (Blocks 8193-16384)\n  Free inodes: 5, 7\n\
            Group 2: (Blocks 16385-24576)\n  Free inodes: \n";
        assert_eq!(used_inodes(text).unwrap(), [1, 2, 6, 8, 9, 10, 11, 12]);
        assert!(used_inodes("Group 0:\n  Free inodes: 1\n").is_err());
    }

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
