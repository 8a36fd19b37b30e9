//! The grubenv on /boot, read and written with `grub-editenv`, and /boot
//! frozen and thawed after every write: ostree 2022.7 on ext4 /boot lost
//! freshly written metadata on a power cut (measured), FIFREEZE/FITHAW
//! forces it to disk.

use std::path::{Path, PathBuf};

use anyhow::Result;

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

pub use crate::util::fsutil::is_mountpoint;

pub use crate::util::sys::freeze_thaw;
