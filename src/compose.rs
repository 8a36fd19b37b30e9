//! `keelson compose`: treefile → packages → postprocess → ostree commit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::backend::deb::DebBackend;
use crate::commit::{self, metadata, version};
use crate::inputhash::{self, Blob};
use crate::postprocess;
use crate::treefile::Treefile;
use crate::util::fsutil::write_atomic;
use crate::util::progress::step;

pub struct Options {
    pub treefile: PathBuf,
    pub repo: PathBuf,
    pub cachedir: Option<PathBuf>,
    pub print_only: bool,
    pub dry_run: bool,
    pub force_nocache: bool,
    pub touch_if_changed: Option<PathBuf>,
    pub write_composejson_to: Option<PathBuf>,
    pub threads: usize,
    /// SOURCE_DATE_EPOCH, when set: commit timestamp and reproducible builds.
    pub source_date_epoch: Option<i64>,
    /// GPG key id to sign the commit with, and GnuPG's home directory.
    pub gpg_sign: Option<String>,
    pub gpg_homedir: Option<PathBuf>,
}

/// The machine-readable result (`--write-composejson-to`, `--json`).
#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(rename = "ref")]
    pub ref_: String,
    /// The ref's commit after the compose (new or unchanged).
    pub commit: Option<String>,
    pub parent: Option<String>,
    pub version: Option<String>,
    pub inputhash: String,
    /// false when the inputs matched the ref's last commit (or a dry run).
    pub changed: bool,
    pub dry_run: bool,
    pub packages: usize,
    pub seconds: f64,
}

/// SHA-256 inputs that are not in the treefile itself: referenced files and
/// keelson's own binary (it is embedded in the tree, along with the dracut
/// module compiled into it).
fn blobs_for(tf: &Treefile, agent: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for f in tf.referenced_files() {
        let bytes = std::fs::read(&f).with_context(|| {
            format!("{}: cannot read (referenced by the treefile)", f.display())
        })?;
        let label = crate::treefile::relative_path(&tf.basedir, &f)
            .display()
            .to_string();
        out.push((label, bytes));
    }
    let bin = std::fs::read(agent)
        .with_context(|| format!("{}: cannot read the keelson binary", agent.display()))?;
    out.push(("keelson-agent".into(), bin));
    Ok(out)
}

pub fn run(opts: &Options) -> Result<Outcome> {
    let start = Instant::now();
    let tf = Treefile::load(&opts.treefile)?;
    if opts.print_only {
        let v: serde_json::Value = serde_json::from_str(&tf.canonical_json())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Outcome {
            ref_: tf.ref_.clone(),
            commit: None,
            parent: None,
            version: None,
            inputhash: String::new(),
            changed: false,
            dry_run: true,
            packages: tf.packages.len(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let backend = DebBackend::new(&tf)?;
    let agent = std::env::current_exe().context("locating the keelson binary")?;

    let scratch_parent = match &opts.cachedir {
        Some(c) => {
            std::fs::create_dir_all(c)
                .with_context(|| format!("{}: cannot create cache directory", c.display()))?;
            c.clone()
        }
        None => std::env::temp_dir(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("keelson-compose-")
        .tempdir_in(&scratch_parent)
        .with_context(|| {
            format!(
                "{}: cannot create a work directory",
                scratch_parent.display()
            )
        })?;

    let previous = match commit::open_existing(&opts.repo)? {
        Some(repo) => commit::previous(&repo, &tf.ref_)?,
        None => None,
    };

    let resolved = step("resolving packages", || backend.resolve(scratch.path()))?;
    let blobs = blobs_for(&tf, &agent)?;
    let blob_refs: Vec<Blob> = blobs
        .iter()
        .map(|(l, b)| Blob { label: l, bytes: b })
        .collect();
    let hash = inputhash::inputhash(&tf.canonical_json(), &blob_refs, &resolved);
    let next_version = tf
        .automatic_version_prefix
        .as_deref()
        .map(|p| version::next_version(p, previous.as_ref().and_then(|p| p.version.as_deref())));

    let unchanged = previous.as_ref().and_then(|p| p.inputhash.as_deref()) == Some(hash.as_str());
    if (unchanged && !opts.force_nocache) || opts.dry_run {
        let prev = previous.as_ref();
        if opts.dry_run {
            tracing::info!(
                "dry run: {} packages resolved, inputhash {hash}; {}",
                resolved.len(),
                if unchanged {
                    "no changes since the previous commit"
                } else {
                    "a new commit would be written"
                }
            );
        } else {
            tracing::info!(
                "no apparent changes since the previous commit {} (inputhash {hash}); nothing written (--force-nocache composes anyway)",
                prev.map(|p| p.checksum.as_str()).unwrap_or("")
            );
        }
        let out = Outcome {
            ref_: tf.ref_.clone(),
            commit: prev.map(|p| p.checksum.clone()),
            parent: None,
            version: prev.and_then(|p| p.version.clone()),
            inputhash: hash,
            changed: false,
            dry_run: opts.dry_run,
            packages: resolved.len(),
            seconds: start.elapsed().as_secs_f64(),
        };
        if !opts.dry_run {
            write_outputs(opts, &out)?;
        }
        return Ok(out);
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let sde = opts.source_date_epoch.unwrap_or(now);

    let rootfs = scratch.path().join("rootfs");
    let debcache = opts.cachedir.as_ref().map(|c| c.join("debs"));
    let seed = passwd_seed(&tf, previous.as_ref(), scratch.path())?;
    let installed = step("installing packages (mmdebstrap)", || {
        backend.install(&rootfs, debcache.as_deref(), seed.as_deref())
    })?;
    if installed.len() != resolved.len() {
        tracing::warn!(
            "installed {} packages but resolved {} beforehand (did the mirror change?)",
            installed.len(),
            resolved.len()
        );
    }

    let ctx = postprocess::Ctx {
        root: &rootfs,
        tf: &tf,
        version: next_version.clone(),
        previous_passwd: previous.as_ref().and_then(|p| p.passwd.clone()),
        previous_group: previous.as_ref().and_then(|p| p.group.clone()),
        agent,
        source_date_epoch: sde,
    };
    postprocess::run(&ctx)?;

    let treefile_json = tf.canonical_json();
    let meta = metadata::build(
        &metadata::Fields {
            version: next_version.as_deref(),
            inputhash: &hash,
            packages: &installed,
            treefile_json: &treefile_json,
            extra: &tf.add_commit_metadata,
        },
        &rootfs,
    )?;
    // ostree refuses to upgrade to a commit older than the booted one: never
    // go back in time relative to the parent.
    let timestamp = (sde.max(0) as u64).max(previous.as_ref().map(|p| p.timestamp).unwrap_or(0));
    let repo = commit::open_or_create(&opts.repo)?;
    let subject = match &next_version {
        Some(v) => format!("{} {v}", tf.ref_),
        None => tf.ref_.clone(),
    };
    let parent = previous.as_ref().map(|p| p.checksum.clone());
    let checksum = step("committing", || {
        commit::write(
            &repo,
            &commit::Request {
                ref_: &tf.ref_,
                parent: parent.as_deref(),
                rootfs: &rootfs,
                metadata: &meta,
                subject: &subject,
                timestamp,
                threads: opts.threads,
                gpg: opts.gpg_sign.as_deref().map(|key_id| commit::GpgSign {
                    key_id,
                    homedir: opts.gpg_homedir.as_deref(),
                }),
            },
        )
    })?;
    tracing::info!(
        "committed {checksum} to {}{}",
        tf.ref_,
        next_version
            .as_ref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default()
    );

    let out = Outcome {
        ref_: tf.ref_.clone(),
        commit: Some(checksum),
        parent,
        version: next_version,
        inputhash: hash,
        changed: true,
        dry_run: false,
        packages: installed.len(),
        seconds: start.elapsed().as_secs_f64(),
    };
    write_outputs(opts, &out)?;
    Ok(out)
}

/// With `preserve-passwd` (the default), the previous commit's passwd and
/// group seed the new tree so ids stay stable across composes.
fn passwd_seed(
    tf: &Treefile,
    previous: Option<&commit::Previous>,
    scratch: &Path,
) -> Result<Option<PathBuf>> {
    let Some((passwd, group)) =
        previous.and_then(|p| Some((p.passwd.as_ref()?, p.group.as_ref()?)))
    else {
        return Ok(None);
    };
    if !tf.preserve_passwd {
        return Ok(None);
    }
    let dir = scratch.join("passwd-seed");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("passwd"), passwd)?;
    std::fs::write(dir.join("group"), group)?;
    Ok(Some(dir))
}

fn write_outputs(opts: &Options, out: &Outcome) -> Result<()> {
    if let Some(p) = &opts.write_composejson_to {
        let text = serde_json::to_string_pretty(out)? + "\n";
        write_atomic(p, text.as_bytes())
            .with_context(|| format!("--write-composejson-to {}", p.display()))?;
    }
    if out.changed
        && let Some(p) = &opts.touch_if_changed
    {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("--touch-if-changed {}", p.display()))?;
        f.set_modified(std::time::SystemTime::now())
            .with_context(|| format!("--touch-if-changed {}: cannot set mtime", p.display()))?;
    }
    Ok(())
}
