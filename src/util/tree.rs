//! Paths inside a tree being composed, resolved inside that tree.
//!
//! Compose runs as root over a Debian tree full of absolute symlinks
//! (`/var/run -> /run`, `/var/lock -> /run/lock`); `Path::join` plus a
//! plain `remove_file` would follow them onto the build host. Here every
//! path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`: links
//! are interpreted with the tree as `/` and `..` stops at the tree's root,
//! as in a chroot. The last component is never followed, so removing a
//! link removes the link.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};

pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

impl Tree {
    pub fn open(root: &Path) -> Result<Tree> {
        let root = root
            .canonicalize()
            .with_context(|| format!("{}: cannot open the tree", root.display()))?;
        let fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("{}: cannot open the tree", root.display()))?;
        Ok(Tree { root, fd })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of `rel` (relative or absolute, as the tree sees it):
    /// every component but the last resolved inside the tree; components
    /// that do not exist yet are kept as written. An error when the path
    /// runs through a link whose target does not exist in the tree.
    pub fn path(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let rel = rel.as_ref();
        self.path_opt(rel)?.with_context(|| {
            format!(
                "{}: runs through a symbolic link to a path that does not exist inside the tree",
                rel.display()
            )
        })
    }

    /// As [`Tree::path`]; `None` for a path through a dangling link
    /// (nothing can exist there).
    fn path_opt(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let comps = normal_components(rel)?;
        let Some((last, parents)) = comps.split_last() else {
            return Ok(Some(self.root.clone()));
        };
        for known in (0..=parents.len()).rev() {
            let prefix: PathBuf = parents[..known].iter().collect();
            match self.resolve_dir(&prefix) {
                Ok(host) => {
                    if let Some(next) = parents.get(known)
                        && fs_err::symlink_metadata(host.join(next)).is_ok()
                    {
                        // It exists, yet cannot be resolved: a dangling link
                        // (or a file used as a directory).
                        return Ok(None);
                    }
                    let mut p = host;
                    p.extend(&parents[known..]);
                    p.push(last);
                    return Ok(Some(p));
                }
                Err(rustix::io::Errno::NOENT) => continue,
                Err(rustix::io::Errno::NOTDIR) => return Ok(None),
                Err(e) => {
                    return Err(std::io::Error::from(e)).with_context(|| {
                        format!("{}: cannot resolve inside the tree", rel.display())
                    });
                }
            }
        }
        unreachable!("the empty prefix is the tree's root")
    }

    /// The host path of the directory `rel` with every link, the last one
    /// too, resolved inside the tree: safe to list, empty or join names to.
    /// A directory that does not exist yet is returned as [`Tree::path`]
    /// gives it (nothing there to follow).
    pub fn dir(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let rel = rel.as_ref();
        let comps: PathBuf = normal_components(rel)?.iter().collect();
        match self.resolve_dir(&comps) {
            Ok(p) => Ok(p),
            Err(rustix::io::Errno::NOENT) => {
                let p = self.path(rel)?;
                if std::fs::symlink_metadata(&p).is_ok() {
                    // A link whose target is not in the tree: following it
                    // on the host would leave the tree.
                    bail!(
                        "{}: a symbolic link to a path that does not exist inside the tree",
                        rel.display()
                    );
                }
                Ok(p)
            }
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("{}: not a directory inside the tree", rel.display())),
        }
    }

    /// Replace whatever is at `rel` (a link is removed, never followed) with
    /// a regular file holding `bytes`; returns its host path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.path(rel)?;
        crate::util::fsutil::remove_any(&p)?;
        fs_err::write(&p, bytes)?;
        Ok(p)
    }

    /// An `O_PATH` descriptor for `rel` (normal components only), every
    /// link followed inside the tree.
    fn open_in(&self, rel: &Path, extra: OFlags) -> rustix::io::Result<OwnedFd> {
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        openat2(
            self.fd.as_fd(),
            target,
            OFlags::PATH | OFlags::CLOEXEC | extra,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// The host path of a directory `rel`, links followed inside the tree.
    fn resolve_dir(&self, rel: &Path) -> rustix::io::Result<PathBuf> {
        let fd = self.open_in(rel, OFlags::DIRECTORY)?;
        let host = fs_err::read_link(format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|_| rustix::io::Errno::NOENT)?;
        if !host.starts_with(&self.root) {
            // The kernel resolved inside the root; a path outside it means the
            // tree was moved under us.
            return Err(rustix::io::Errno::XDEV);
        }
        Ok(host)
    }

    /// Whether `rel` exists, following links inside the tree.
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        let Ok(comps) = normal_components(rel.as_ref()) else {
            return false;
        };
        let p: PathBuf = comps.iter().collect();
        self.open_in(&p, OFlags::empty()).is_ok()
    }

    /// Create `rel` and its parents inside the tree; returns its host path.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let rel = rel.as_ref();
        let comps = normal_components(rel)?;
        let mut sofar = PathBuf::new();
        for c in &comps {
            sofar.push(c);
            let host = self.path(&sofar)?;
            match fs_err::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => continue,
                // A link to a directory inside the tree: resolved next round.
                Ok(m) if m.is_symlink() && self.resolve_dir(&sofar).is_ok() => continue,
                Ok(m) if m.is_symlink() => bail!(
                    "{}: {} is a symbolic link to a path that does not exist inside the tree",
                    rel.display(),
                    sofar.display()
                ),
                Ok(_) => bail!(
                    "{}: {} exists and is not a directory",
                    rel.display(),
                    sofar.display()
                ),
                Err(_) => fs_err::create_dir(&host)
                    .with_context(|| format!("{}: cannot create", host.display()))?,
            }
        }
        self.dir(rel)
    }

    /// Remove the file, link or directory tree at `rel` if it exists (a
    /// link itself, never what it points at).
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<()> {
        match self.path_opt(rel.as_ref())? {
            Some(p) => crate::util::fsutil::remove_any(&p),
            None => Ok(()),
        }
    }
}

/// The path's normal components; `..` is refused (steps never need it, and
/// treefile validation rejects it earlier with the field's name).
fn normal_components(p: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("{}: '..' is not allowed in a tree path", p.display())
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A tree whose links point outside it, next to a directory standing in
    /// for the build host's /run.
    fn hostile() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let host_run = d.path().join("host-run");
        fs_err::create_dir_all(&host_run).unwrap();
        fs_err::write(host_run.join("x"), "host file").unwrap();
        let root = d.path().join("tree");
        fs_err::create_dir_all(root.join("var")).unwrap();
        fs_err::create_dir_all(root.join("run")).unwrap();
        fs_err::write(root.join("run/x"), "tree file").unwrap();
        // Absolute link (what Debian ships) to a path that also exists on the host.
        symlink(&host_run, root.join("var/abs")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        // Relative escape.
        symlink("../../../../../../host-run", root.join("var/up")).unwrap();
        (d, root, host_run)
    }

    #[test]
    fn links_resolve_inside_the_tree() {
        let (_d, root, host_run) = hostile();
        let t = Tree::open(&root).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(t.path("var/run/x").unwrap(), root.join("run/x"));
        assert_eq!(t.path("/var/run/x").unwrap(), root.join("run/x"));
        t.remove("var/run/x").unwrap();
        assert!(!root.join("run/x").exists());
        // `..` in a link stops at the tree's root, and an absolute link to a
        // host directory is a path that does not exist in the tree: nothing
        // to remove, and no host path handed out.
        t.remove("var/up/x").unwrap();
        t.remove("var/abs/x").unwrap();
        let e = t.path("var/abs/x").unwrap_err().to_string();
        assert!(
            e.starts_with("var/abs/x: runs through a symbolic link"),
            "{e}"
        );
        assert_eq!(
            fs_err::read_to_string(host_run.join("x")).unwrap(),
            "host file",
            "the host stays untouched"
        );
        // Removing the link removes the link.
        t.remove("var/run").unwrap();
        assert!(fs_err::symlink_metadata(root.join("var/run")).is_err());
        assert!(root.join("run").is_dir());
    }

    #[test]
    fn create_dirs_inside_and_refuse_dotdot() {
        let (_d, root, host_run) = hostile();
        let t = Tree::open(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let p = t.create_dir_all("var/run/new/dir").unwrap();
        assert_eq!(p, root.join("run/new/dir"));
        assert!(p.is_dir());
        let e = t.create_dir_all("var/up/new").unwrap_err().to_string();
        assert!(e.contains("var/up"), "{e}");
        assert!(!host_run.join("new").exists());
        let e = t.path("usr/../../x").unwrap_err().to_string();
        assert!(e.contains("'..' is not allowed"), "{e}");
        assert!(t.exists("var/run") && !t.exists("var/abs/x"));
        // A new file's path under missing directories is kept as written.
        assert_eq!(t.path("opt/a/b").unwrap(), root.join("opt/a/b"));
    }
}
