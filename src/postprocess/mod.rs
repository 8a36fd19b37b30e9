//! Making an installed root filesystem ostree-shaped: a flat, ordered list
//! of steps, each a function over the rootfs directory (DESIGN §3).
//!
//! The order matters: treefile steps and scripts see a normal Debian layout;
//! the initramfs is built before /var is emptied; /etc moves last.

pub mod initramfs;
pub mod initramfs_cache;
pub mod layout;
pub mod sandbox;
pub mod treefile_steps;
pub mod users;
pub mod var;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::treefile::Treefile;

/// What the steps need besides the rootfs.
pub struct Ctx<'a> {
    pub root: &'a Path,
    /// The same tree, for paths resolved inside it ([`Ctx::path`]).
    pub tree: &'a crate::util::tree::Tree,
    pub tf: &'a Treefile,
    /// The version this commit will carry (for `mutate-os-release`).
    pub version: Option<String>,
    /// `/usr/etc/passwd` and `/usr/etc/group` of the previous commit.
    pub previous_passwd: Option<String>,
    pub previous_group: Option<String>,
    /// The keelson binary to embed as the node agent.
    pub agent: PathBuf,
    /// SOURCE_DATE_EPOCH for reproducible output.
    pub source_date_epoch: i64,
    /// Where the initramfs step may reuse an earlier image (None: dracut
    /// runs, nothing stored).
    pub initramfs_cache: Option<CacheCtx<'a>>,
}

/// What the initramfs cache needs besides the tree.
pub struct CacheCtx<'a> {
    /// `CACHEDIR/initramfs`.
    pub dir: PathBuf,
    /// The installed packages (dracut and its tools among them).
    pub packages: &'a [crate::backend::Package],
    /// SOURCE_DATE_EPOCH as the user gave it (None: unset).
    pub source_date_epoch: Option<String>,
}

impl Ctx<'_> {
    /// The host path of `rel` in the tree, links resolved inside the tree.
    pub fn path(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        self.tree.path(rel)
    }

    /// The directory `rel`, every link resolved inside the tree: safe to
    /// list, empty or join names to.
    pub fn dir(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        self.tree.dir(rel)
    }

    /// Create the directory `rel` (and parents) inside the tree; returns it
    /// resolved as [`Ctx::dir`] does.
    pub fn mkdirs(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        self.tree.create_dir_all(rel)
    }
}

type Step = fn(&Ctx) -> Result<()>;

/// The steps, in order, with the names used in logs and errors.
pub const STEPS: &[(&str, Step)] = &[
    ("clean pseudo filesystems", layout::clean_pseudo_fs),
    ("embed node agent", layout::embed_agent),
    (
        "grub-mkconfig → keelson menu generator",
        layout::divert_grub_mkconfig,
    ),
    ("install dracut module", initramfs::install_module),
    ("add-files", treefile_steps::add_files),
    ("remove-from-packages", treefile_steps::remove_from_packages),
    ("units", treefile_steps::enable_units),
    ("default-target", treefile_steps::default_target),
    ("postprocess scripts", treefile_steps::run_scripts),
    ("remove-files", treefile_steps::remove_files),
    ("remove machine secrets", layout::remove_machine_secrets),
    ("kernel to /usr/lib/modules", layout::move_kernel),
    // before mutate-os-release: the initramfs carries the packages'
    // os-release, not the commit's version, so a new version alone does
    // not make a new initramfs (the initramfs cache can reuse it)
    ("initramfs (dracut)", initramfs::build),
    ("mutate-os-release", treefile_steps::mutate_os_release),
    ("sysusers.d for system users", layout::sysusers),
    ("dpkg database to /usr", layout::dpkg_to_usr),
    ("/var to tmpfiles.d", layout::var_to_tmpfiles),
    ("/etc to /usr/etc", layout::etc_to_usr_etc),
    ("ostree top-level links", layout::toplevel_links),
    ("readonly-executables", treefile_steps::readonly_executables),
];

/// Run every step; the error names the step that failed.
pub fn run(ctx: &Ctx) -> Result<()> {
    for (name, step) in STEPS {
        crate::util::progress::step(&format!("postprocess: {name}"), || step(ctx))
            .with_context(|| format!("postprocess step '{name}'"))?;
    }
    Ok(())
}

/// The kernel version of the tree: the single directory in /usr/lib/modules.
pub fn kernel_version(tree: &crate::util::tree::Tree) -> Result<String> {
    let dir = tree.dir("usr/lib/modules")?;
    let mut versions: Vec<String> = fs_err::read_dir(&dir)
        .with_context(|| {
            format!(
                "{}: no kernel modules directory (is a kernel package in `packages`?)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("packages: no kernel installed ({} is empty)", dir.display()),
        many => anyhow::bail!(
            "packages: more than one kernel installed: {}",
            many.join(", ")
        ),
    }
}
