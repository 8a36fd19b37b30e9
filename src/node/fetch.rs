//! Pulling an update the way Debian 12's libostree (2022.7) really uses a
//! static delta.
//!
//! Measured on 2022.7 (ostreedev/ostree#2053, fixed upstream in 2023.7): a
//! plain `pull REMOTE REF` applies the delta and then fetches the target's
//! objects one by one again. Pulling the commit's metadata first, then the
//! commit by checksum, then the ref, downloads the delta once. libostree
//! picks a delta whose source commit the repo holds (the booted one), and
//! verifies the summary's signature itself when the remote has a keyring
//! (`gpg-verify-summary=true`, set by `keelson image/install --gpg-keyring`).

use anyhow::{Context, Result};
use ostree::{gio, glib};
use serde::{Deserialize, Serialize};

/// What one update pull fetched (ostree's own counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    pub commit: String,
    pub bytes: u64,
    /// Objects fetched one by one.
    pub objects: u32,
    pub delta_parts: u32,
    pub via_delta: bool,
    pub seconds: f64,
}

fn pull_once(
    repo: &ostree::Repo,
    remote: &str,
    what: &str,
    flags: ostree::RepoPullFlags,
) -> Result<(u64, u32, u32)> {
    let opts = glib::VariantDict::new(None);
    opts.insert_value("refs", &glib::Variant::from(vec![what.to_string()]));
    opts.insert_value("flags", &glib::Variant::from(flags.bits() as i32));
    let progress = ostree::AsyncProgress::new();
    repo.pull_with_options(remote, &opts.end(), Some(&progress), gio::Cancellable::NONE)
        .with_context(|| format!("pulling {what} from remote {remote}"))?;
    let counters = (
        progress.uint64("bytes-transferred"),
        progress.uint("fetched"),
        progress.uint("fetched-delta-parts"),
    );
    progress.finish();
    Ok(counters)
}

/// Only the commit object (and its signature) of the remote's head; moves
/// the local `remote:ref` to it and returns its checksum.
pub fn pull_commit(repo: &ostree::Repo, remote: &str, ref_: &str) -> Result<String> {
    pull_once(repo, remote, ref_, ostree::RepoPullFlags::COMMIT_ONLY)?;
    let refspec = format!("{remote}:{ref_}");
    Ok(repo
        .resolve_rev(&refspec, false)
        .with_context(|| format!("{refspec}: not found after pull"))?
        .with_context(|| format!("{refspec}: not found after pull"))?
        .to_string())
}

/// Everything of the remote's head, through a static delta when the remote
/// has one from a commit this repo holds.
pub fn pull_update(
    repo: &ostree::Repo,
    remote: &str,
    ref_: &str,
    from: Option<&str>,
) -> Result<Fetched> {
    let head = pull_commit(repo, remote, ref_)?;
    pull_resolved(repo, remote, ref_, &head, from)
}

/// Everything of `head` (the remote's head, its commit object already
/// here): by checksum, then the ref.
pub fn pull_resolved(
    repo: &ostree::Repo,
    remote: &str,
    ref_: &str,
    head: &str,
    from: Option<&str>,
) -> Result<Fetched> {
    let start = std::time::Instant::now();
    let head = head.to_string();
    let mut f = Fetched {
        commit: head.clone(),
        ..Default::default()
    };
    for (what, flags) in [
        (head.as_str(), ostree::RepoPullFlags::NONE),
        (ref_, ostree::RepoPullFlags::NONE),
    ] {
        let (bytes, objects, parts) = pull_once(repo, remote, what, flags)?;
        f.bytes += bytes;
        f.objects += objects;
        f.delta_parts += parts;
    }
    f.via_delta = f.delta_parts > 0;
    f.seconds = start.elapsed().as_secs_f64();
    let from = from.map(|c| &c[..c.len().min(12)]).unwrap_or("nothing");
    if f.via_delta {
        tracing::info!(
            "fetched {} through a static delta from {from}: {} part(s), {} object(s), {} KiB",
            &head[..12],
            f.delta_parts,
            f.objects,
            f.bytes / 1024
        );
    } else {
        tracing::info!(
            "no static delta from {from} to {} on remote {remote}: fetched {} object(s) one by one, {} KiB",
            &head[..12],
            f.objects,
            f.bytes / 1024
        );
    }
    Ok(f)
}
