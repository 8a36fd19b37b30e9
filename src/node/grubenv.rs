//! The grubenv on /boot, read and written with `grub-editenv`, and /boot
//! frozen and thawed after every write: ostree 2022.7 on ext4 /boot lost
//! freshly written metadata on a power cut (measured), FIFREEZE/FITHAW
//! forces it to disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::bootcount::Env;
use crate::util::cmd::Cmd;

pub struct GrubEnv {
    pub file: PathBuf,
    /// The mount point to freeze after writes (`/boot` on a node).
    pub mountpoint: Option<PathBuf>,
}

impl GrubEnv {
    pub fn for_sysroot(sysroot: &Path) -> Self {
        let boot = sysroot.join("boot");
        let mountpoint = is_mountpoint(&boot).then(|| boot.clone());
        GrubEnv {
            file: boot.join("grubenv"),
            mountpoint,
        }
    }

    pub fn read(&self) -> Result<Env> {
        if !self.file.exists() {
            return Ok(Env::default());
        }
        let out = Cmd::new("grub-editenv").arg(&self.file).arg("list").run()?;
        Ok(Env::parse(&out))
    }

    pub fn write(&self, env: &Env) -> Result<()> {
        if !self.file.exists() {
            Cmd::new("grub-editenv")
                .arg(&self.file)
                .arg("create")
                .run()?;
        }
        let (set, unset) = env.assignments();
        if !set.is_empty() {
            Cmd::new("grub-editenv")
                .arg(&self.file)
                .arg("set")
                .args(set)
                .run()?;
        }
        if !unset.is_empty() {
            Cmd::new("grub-editenv")
                .arg(&self.file)
                .arg("unset")
                .args(unset)
                .run()?;
        }
        self.sync()
    }

    /// Freeze and thaw /boot so everything written there is on disk.
    pub fn sync(&self) -> Result<()> {
        if let Some(m) = &self.mountpoint {
            freeze_thaw(m)?;
        }
        Ok(())
    }
}

pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// FIFREEZE then FITHAW on the filesystem mounted at `mountpoint`.
pub fn freeze_thaw(mountpoint: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    const FIFREEZE: libc::c_ulong = 0xC004_5877;
    const FITHAW: libc::c_ulong = 0xC004_5878;
    let f = std::fs::File::open(mountpoint)
        .with_context(|| format!("{}: cannot open", mountpoint.display()))?;
    // SAFETY: plain ioctls on an open directory fd; the argument is unused.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // EBUSY: already frozen by someone else; thaw anyway.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e).with_context(|| format!("FIFREEZE {}", mountpoint.display()));
        }
    }
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FITHAW, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("FITHAW {}", mountpoint.display()));
    }
    Ok(())
}
