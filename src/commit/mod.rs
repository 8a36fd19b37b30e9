//! Writing the composed tree into an ostree repo through libostree: one
//! transaction, the ref moved only when the commit is complete, explicit
//! timestamp so equal inputs give an equal commit checksum.

pub mod layers;
pub mod metadata;
pub mod parallel;
pub mod version;

use std::path::Path;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use ostree::prelude::*;

/// What the compose needs to know about the ref's current commit.
#[derive(Debug, Default, Clone)]
pub struct Previous {
    pub checksum: String,
    pub version: Option<String>,
    pub inputhash: Option<String>,
    pub timestamp: u64,
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// Open the repo at `path`, creating an archive repo if nothing is there.
pub fn open_or_create(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    if path.join("config").exists() {
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("{}: cannot open ostree repo", path.display()))?;
    } else {
        fs_err::create_dir_all(path)
            .with_context(|| format!("{}: cannot create repo directory", path.display()))?;
        repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("{}: cannot create archive repo", path.display()))?;
    }
    Ok(repo)
}

/// Open an existing repo read-only (for `--dry-run` and no-op checks).
pub fn open_existing(path: &Path) -> Result<Option<ostree::Repo>> {
    if !path.join("config").exists() {
        return Ok(None);
    }
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("{}: cannot open ostree repo", path.display()))?;
    Ok(Some(repo))
}

/// The repo at `path`, which must exist: an error naming the path if it
/// is not an ostree repo.
pub fn open_required(path: &Path) -> Result<ostree::Repo> {
    open_existing(path)?.with_context(|| format!("{}: not an ostree repo", path.display()))
}

/// A regular file's text from a commit. Read through the content object:
/// `g_file_load_contents` on a repo file asks the stream it gets for file
/// info, which libostree's stream is not, and GLib logs a CRITICAL.
fn read_text(repo: &ostree::Repo, root: &gio::File, path: &str) -> Option<String> {
    use std::io::Read;
    let f = root
        .resolve_relative_path(path)
        .downcast::<ostree::RepoFile>()
        .ok()?;
    f.ensure_resolved().ok()?;
    let checksum = f.checksum();
    let (stream, _, _) = repo.load_file(&checksum, gio::Cancellable::NONE).ok()?;
    let mut text = String::new();
    stream?.into_read().read_to_string(&mut text).ok()?;
    Some(text)
}

/// SOURCE_DATE_EPOCH from the environment (the build side's one reproducible
/// clock): `None` when unset or empty.
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH: {v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

/// The commit timestamp: the one given, else SOURCE_DATE_EPOCH, else now.
pub fn timestamp(explicit: Option<u64>) -> Result<u64> {
    if let Some(t) = explicit {
        return Ok(t);
    }
    if let Some(t) = source_date_epoch()? {
        return Ok(t);
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs())
}

/// `keelson commit`: an already ostree-shaped directory into a repo.
#[derive(Debug, Clone, clap::Args)]
pub struct DirOptions {
    /// The directory to commit.
    pub dir: std::path::PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    pub repo: std::path::PathBuf,
    /// The ref (branch) to point at the new commit.
    #[arg(long, short = 'b')]
    pub branch: String,
    /// Commit subject line.
    #[arg(long, short = 's', default_value = "keelson commit")]
    pub subject: String,
    /// Threads hashing and compressing objects (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Commit timestamp in seconds since the epoch (default:
    /// SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "SECONDS")]
    pub timestamp: Option<u64>,
    /// Sign the commit with this GPG key id.
    #[arg(long, value_name = "KEYID")]
    pub gpg_sign: Option<String>,
    /// GnuPG home directory holding the signing key.
    #[arg(long, value_name = "DIR", requires = "gpg_sign")]
    pub gpg_homedir: Option<std::path::PathBuf>,
}

/// Commit `o.dir` on top of the branch's current commit; returns the checksum.
pub fn commit_dir(o: &DirOptions) -> Result<String> {
    let ts = timestamp(o.timestamp)?;
    let repo = open_or_create(&o.repo)?;
    let parent = previous(&repo, &o.branch)?.map(|p| p.checksum);
    let meta = glib::VariantDict::new(None).end();
    write(
        &repo,
        &Request {
            ref_: &o.branch,
            parent: parent.as_deref(),
            rootfs: &o.dir,
            metadata: &meta,
            subject: &o.subject,
            timestamp: ts,
            threads: crate::util::threads(o.threads),
            gpg: o.gpg_sign.as_deref().map(|key_id| GpgSign {
                key_id,
                homedir: o.gpg_homedir.as_deref(),
            }),
        },
    )
}

/// The ref's current commit and what keelson recorded in it.
pub fn previous(repo: &ostree::Repo, ref_: &str) -> Result<Option<Previous>> {
    let Some(rev) = repo
        .resolve_rev(ref_, true)
        .with_context(|| format!("resolving ref {ref_}"))?
    else {
        return Ok(None);
    };
    let (commit, _) = repo
        .load_commit(&rev)
        .with_context(|| format!("loading commit {rev}"))?;
    let meta = glib::VariantDict::new(Some(&commit.child_value(0)));
    let get = |k: &str| meta.lookup::<String>(k).ok().flatten();
    let timestamp = u64::from_be(commit.child_value(5).get::<u64>().unwrap_or(0));
    let (root, _) = repo.read_commit(&rev, gio::Cancellable::NONE)?;
    Ok(Some(Previous {
        checksum: rev.to_string(),
        version: get("version"),
        inputhash: get(metadata::INPUTHASH),
        timestamp,
        passwd: read_text(repo, &root, "usr/etc/passwd"),
        group: read_text(repo, &root, "usr/etc/group"),
    }))
}

/// One commit to write.
pub struct Request<'a> {
    pub ref_: &'a str,
    pub parent: Option<&'a str>,
    pub rootfs: &'a Path,
    pub metadata: &'a glib::Variant,
    pub subject: &'a str,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Threads hashing and compressing content objects.
    pub threads: usize,
    /// Sign the commit with this GPG key (and GnuPG home directory).
    pub gpg: Option<GpgSign<'a>>,
}

#[derive(Clone, Copy)]
pub struct GpgSign<'a> {
    pub key_id: &'a str,
    pub homedir: Option<&'a Path>,
}

/// Commit `req.rootfs` to `req.ref_`; returns the new checksum.
/// Any failure aborts the transaction: the ref is left as it was.
pub fn write(repo: &ostree::Repo, req: &Request<'_>) -> Result<String> {
    let tx = repo
        .auto_transaction(gio::Cancellable::NONE)
        .context("starting transaction")?;
    let mtree = parallel::write_tree(repo, req.rootfs, req.threads)
        .with_context(|| format!("writing {} into the repo", req.rootfs.display()))?;
    let root = repo
        .write_mtree(&mtree, gio::Cancellable::NONE)
        .context("writing the tree")?;
    let root = root
        .downcast::<ostree::RepoFile>()
        .expect("write_mtree returns a RepoFile");
    let checksum = repo
        .write_commit_with_time(
            req.parent,
            Some(req.subject),
            None,
            Some(req.metadata),
            &root,
            req.timestamp,
            gio::Cancellable::NONE,
        )
        .context("writing the commit object")?;
    if let Some(g) = req.gpg {
        // Inside the transaction: the ref never points at an unsigned commit.
        let home = g.homedir.map(|h| h.display().to_string());
        repo.sign_commit(&checksum, g.key_id, home.as_deref(), gio::Cancellable::NONE)
            .with_context(|| format!("--gpg-sign {}: signing commit {checksum}", g.key_id))?;
    }
    repo.transaction_set_ref(None, req.ref_, Some(&checksum));
    tx.commit(gio::Cancellable::NONE)
        .context("committing the transaction")?;
    Ok(checksum.to_string())
}
