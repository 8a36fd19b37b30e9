//! Upgrade, deploy and rollback on a node, through libostree.
//!
//! Mutations happen in a private mount namespace where libostree remounts
//! the read-only /sysroot writable (what `ostree admin` does). Deployments
//! are staged (finalized by ostree-finalize-staged.service at shutdown), so
//! a power cut before the reboot leaves the old boot configuration intact.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::glib;

use super::bootcount;
use super::fetch;
use super::grubenv::GrubEnv;

/// Pure: the deployment order that boots `order[target]` by default,
/// the others keeping their relative order.
pub fn promote<T: Clone>(order: &[T], target: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(order.len());
    out.push(order[target].clone());
    out.extend(
        order
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .map(|(_, d)| d.clone()),
    );
    out
}

pub struct Node {
    pub sysroot: ostree::Sysroot,
    pub path: std::path::PathBuf,
}

/// Enter a private mount namespace and make /sysroot writable in it (on a
/// node it is mounted read-only; the host's mount is not touched). Must run
/// before any thread is started.
fn private_writable_sysroot() -> Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount_change, mount_remount};
    crate::util::sys::private_mount_namespace()?;
    // Nothing done here may propagate back to the host's mounts.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::DOWNSTREAM,
    )
    .context("making mounts private")?;
    let read_only = crate::util::fsutil::fs_stats(Path::new("/sysroot")).is_ok_and(|s| s.read_only);
    if read_only {
        mount_remount("/sysroot", MountFlags::BIND | MountFlags::SILENT, "")
            .context("remounting /sysroot writable")?;
    }
    Ok(())
}

/// Open the sysroot for changes: private mount namespace, loaded, locked.
pub fn open_writable(path: &Path) -> Result<Node> {
    if path == Path::new("/") {
        private_writable_sysroot()?;
    }
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot.set_mount_namespace_in_use();
    sysroot
        .load(gio::Cancellable::NONE)
        .context("loading the ostree sysroot")?;
    sysroot
        .lock()
        .context("locking the sysroot (another ostree operation running?)")?;
    Ok(Node {
        sysroot,
        path: path.to_path_buf(),
    })
}

/// Pull `what` (refs or commit checksums) from `remote`.
fn pull(repo: &ostree::Repo, remote: &str, what: &str, flags: ostree::RepoPullFlags) -> Result<()> {
    repo.pull(remote, &[what], flags, None, gio::Cancellable::NONE)
        .with_context(|| format!("pulling {what} from remote {remote}"))
}

/// The deployments in boot order, without a staged one.
fn settled(sysroot: &ostree::Sysroot) -> Vec<ostree::Deployment> {
    sysroot
        .deployments()
        .into_iter()
        .filter(|d| !d.is_staged())
        .collect()
}

fn refspec_of(d: &ostree::Deployment) -> Result<String> {
    d.origin()
        .and_then(|o| o.string("origin", "refspec").ok())
        .map(|s| s.to_string())
        .context("the booted deployment has no origin refspec (was it deployed by keelson?)")
}

fn kargs_of(d: &ostree::Deployment) -> Vec<String> {
    d.bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| {
            o.split_whitespace()
                // ostree adds its own `ostree=` argument for every deployment.
                .filter(|a| !a.starts_with("ostree="))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn commit_info(repo: &ostree::Repo, rev: &str) -> Result<(Option<String>, u64)> {
    let v = repo
        .load_variant(ostree::ObjectType::Commit, rev)
        .with_context(|| format!("loading commit {rev}"))?;
    let meta = glib::VariantDict::new(Some(&v.child_value(0)));
    Ok((
        meta.lookup::<String>("version").ok().flatten(),
        ostree::commit_get_timestamp(&v),
    ))
}

/// What an upgrade check found.
#[derive(Debug, serde::Serialize)]
pub struct Available {
    pub refspec: String,
    pub commit: String,
    pub version: Option<String>,
    /// Equal to the booted commit: nothing to do.
    pub current: bool,
    /// Set when the commit failed a trial on this node before.
    pub blocked: Option<String>,
}

/// Fetch the booted deployment's ref: its commit object first; unless
/// `commit_only`, or the commit is the booted one or blocked, the whole
/// commit (through a static delta where the remote has one, see `fetch`).
pub fn check(ctx: &super::context::NodeCtx, node: &Node, commit_only: bool) -> Result<Available> {
    let booted = node
        .sysroot
        .require_booted_deployment()
        .context("not booted into an ostree deployment")?;
    let refspec = refspec_of(&booted)?;
    let (remote, branch) = match refspec.split_once(':') {
        Some((r, b)) => (r.to_string(), b.to_string()),
        None => bail!("origin {refspec:?} names no remote; cannot pull updates"),
    };
    let repo = node.sysroot.repo();
    let rev = fetch::pull_commit(&repo, &remote, &branch)?;
    let (version, _) = commit_info(&repo, &rev)?;
    let mut st = ctx.load_state()?;
    let a = Available {
        current: rev == booted.csum().as_str(),
        blocked: st.is_blocked(&rev).map(|b| b.reason.clone()),
        refspec,
        commit: rev,
        version,
    };
    if !commit_only && !a.current && a.blocked.is_none() {
        let got = fetch::pull_resolved(
            &repo,
            &remote,
            &branch,
            &a.commit,
            Some(booted.csum().as_str()),
        )?;
        st.last_fetch = Some(got);
        ctx.save_state(&st)?;
    }
    Ok(a)
}

/// Stage `rev` (already in the repo) with the booted deployment's kernel
/// arguments and /etc, then arm boot counting for it.
pub fn stage(node: &Node, rev: &str, attempts: u32) -> Result<()> {
    let booted = node.sysroot.require_booted_deployment()?;
    let repo = node.sysroot.repo();
    let (_, new_ts) = commit_info(&repo, rev)?;
    let (_, cur_ts) = commit_info(&repo, booted.csum().as_str())?;
    if new_ts < cur_ts {
        bail!(
            "commit {rev} is older than the booted one; refusing to go back in time (use `keelson rollback`)"
        );
    }
    let kargs = kargs_of(&booted);
    let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let origin = booted.origin();
    node.sysroot
        .stage_tree(
            Some(booted.osname().as_str()),
            rev,
            origin.as_ref(),
            Some(&booted),
            &kargs,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("staging {rev}"))?;
    GrubEnv::for_sysroot(&node.path).write(&bootcount::arm(attempts))?;
    Ok(())
}

/// A commit checksum, or a version on the booted deployment's ref (found
/// in the ref's history after pulling it).
pub fn resolve_target(node: &Node, target: &str) -> Result<String> {
    let booted = node.sysroot.require_booted_deployment()?;
    let refspec = refspec_of(&booted)?;
    let (remote, branch) = refspec.split_once(':').context("origin names no remote")?;
    let repo = node.sysroot.repo();
    if target.len() == 64 && target.chars().all(|c| c.is_ascii_hexdigit()) {
        if repo
            .load_variant(ostree::ObjectType::Commit, target)
            .is_err()
        {
            // Metadata first: the 2022.7 workaround (see `fetch`).
            pull(&repo, remote, target, ostree::RepoPullFlags::COMMIT_ONLY)?;
            pull(&repo, remote, target, ostree::RepoPullFlags::NONE)?;
        }
        return Ok(target.to_string());
    }
    fetch::pull_update(&repo, remote, branch, Some(booted.csum().as_str()))?;
    let mut rev = repo.resolve_rev(&refspec, false)?.map(|r| r.to_string());
    while let Some(r) = rev {
        let Ok(v) = repo.load_variant(ostree::ObjectType::Commit, &r) else {
            break;
        };
        let (version, _) = commit_info(&repo, &r)?;
        if version.as_deref() == Some(target) {
            return Ok(r);
        }
        rev = ostree::commit_get_parent(&v).map(|p| p.to_string());
    }
    bail!(
        "{target}: no commit with that version in the local history of {refspec}; give the commit checksum"
    )
}

/// Make the rollback deployment the default: the first two non-staged
/// deployments swap places. Returns the commit now booting by default.
pub fn rollback(node: &Node) -> Result<String> {
    let deployments = settled(&node.sysroot);
    if deployments.len() < 2 {
        bail!(
            "no rollback deployment: only {} deployment(s)",
            deployments.len()
        );
    }
    let order = promote(&deployments, 1);
    let target = order[0].csum().to_string();
    node.sysroot
        .write_deployments(&order, gio::Cancellable::NONE)
        .context("writing the new deployment order")?;
    // A rollback is a deliberate choice: no trial, no counting.
    GrubEnv::for_sysroot(&node.path).write(&bootcount::mark_good())?;
    Ok(target)
}

/// After GRUB fell back: make the booted deployment the default for good
/// and drop the failed one (it must never be a rollback target). Returns
/// the commit that failed (the old default).
pub fn make_booted_default(node: &Node) -> Result<Option<String>> {
    let booted = node.sysroot.require_booted_deployment()?;
    let deployments = settled(&node.sysroot);
    let Some(idx) = deployments.iter().position(|d| d.equal(&booted)) else {
        bail!("the booted deployment is not in the deployment list");
    };
    if idx == 0 {
        return Ok(None);
    }
    let failed = deployments[0].csum().to_string();
    let order: Vec<ostree::Deployment> = promote(&deployments, idx)
        .into_iter()
        .filter(|d| !d.equal(&deployments[0]))
        .collect();
    node.sysroot
        .write_deployments(&order, gio::Cancellable::NONE)
        .context("making the booted deployment the default")?;
    Ok(Some(failed))
}

#[cfg(test)]
mod tests {
    use super::promote;

    #[test]
    fn promote_table() {
        let t: &[(&[u32], usize, &[u32])] = &[
            (&[1, 2], 1, &[2, 1]),
            (&[1, 2], 0, &[1, 2]),
            (&[1, 2, 3], 2, &[3, 1, 2]),
            (&[1, 2, 3], 1, &[2, 1, 3]),
            (&[7], 0, &[7]),
        ];
        for (order, target, want) in t {
            assert_eq!(promote(order, *target), want.to_vec(), "{order:?} {target}");
        }
    }
}
