//! `keelson compose`: treefile → packages → postprocess → ostree commit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::backend::deb::DebBackend;
use crate::commit::{self, metadata, version};
use crate::inputhash::{self, Blob};
use crate::postprocess;
use crate::treefile::{CheckPasswd, Treefile};
use crate::util::fsutil::write_atomic;
use crate::util::progress::step;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The treefile (rpm-ostree JSON format) to compose.
    pub treefile: PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    pub repo: PathBuf,
    /// Directory for downloaded packages and the work tree; a recompose with
    /// the same cache downloads nothing again.
    #[arg(long)]
    pub cachedir: Option<PathBuf>,
    /// Print the flattened treefile (includes merged) as JSON and exit.
    #[arg(long)]
    pub print_only: bool,
    /// Resolve packages and compute the inputhash, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compose even when the inputhash matches the ref's last commit.
    #[arg(long)]
    pub force_nocache: bool,
    /// Install the packages afresh: neither use nor fill the package-install
    /// cache under --cachedir (`installs/`).
    #[arg(long)]
    pub no_install_cache: bool,
    /// Run dracut afresh: neither use nor fill the initramfs cache under
    /// --cachedir (`initramfs/`).
    #[arg(long)]
    pub no_initramfs_cache: bool,
    /// Create or update the mtime of FILE when a new commit is written.
    #[arg(long, value_name = "FILE")]
    pub touch_if_changed: Option<PathBuf>,
    /// Write the result (ref, commit, version, inputhash, ...) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub write_composejson_to: Option<PathBuf>,
    /// Threads hashing and compressing objects during the commit
    /// (default: the number of CPUs).
    #[arg(long = "commit-threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Sign the commit with this GPG key id (overrides the treefile's
    /// `gpg-key`).
    #[arg(long, value_name = "KEYID")]
    pub gpg_sign: Option<String>,
    /// GnuPG home directory holding the signing key (for --gpg-sign or the
    /// treefile's `gpg-key`).
    #[arg(long, value_name = "DIR")]
    pub gpg_homedir: Option<PathBuf>,
}

impl Options {
    /// Compose `treefile` into `repo` with every other setting at its default.
    pub fn new(treefile: PathBuf, repo: PathBuf) -> Self {
        Options {
            treefile,
            repo,
            cachedir: None,
            print_only: false,
            dry_run: false,
            force_nocache: false,
            no_install_cache: false,
            no_initramfs_cache: false,
            touch_if_changed: None,
            write_composejson_to: None,
            threads: None,
            gpg_sign: None,
            gpg_homedir: None,
        }
    }
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

impl Outcome {
    /// The result for people (compose.json is the machine-readable one);
    /// nothing for --print-only, which printed the treefile.
    pub fn summary(&self, print_only: bool) -> Option<String> {
        let commit = self.commit.as_deref().unwrap_or("-");
        let version = self
            .version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        Some(if print_only {
            return None;
        } else if self.dry_run {
            format!(
                "Dry run: {} packages resolved, inputhash {} (the log says whether a commit would be written)",
                self.packages, self.inputhash
            )
        } else if self.changed {
            format!("Committed {commit} to {}{version}", self.ref_)
        } else {
            format!(
                "No apparent changes since {commit} on {} (inputhash {}); nothing written. --force-nocache composes anyway.",
                self.ref_, self.inputhash
            )
        })
    }
}

/// SHA-256 inputs that are not in the treefile itself: referenced files and
/// keelson's own binary (it is embedded in the tree, along with the dracut
/// module compiled into it).
fn blobs_for(tf: &Treefile, agent: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for f in tf.referenced_files() {
        let bytes = fs_err::read(&f).with_context(|| {
            format!("{}: cannot read (referenced by the treefile)", f.display())
        })?;
        let label = crate::treefile::relative_path(&tf.basedir, &f)
            .display()
            .to_string();
        out.push((label, bytes));
    }
    let bin = fs_err::read(agent)
        .with_context(|| format!("{}: cannot read the keelson binary", agent.display()))?;
    out.push(("keelson-agent".into(), bin));
    Ok(out)
}

/// What the compose knows once packages are resolved.
struct Planned {
    tf: Treefile,
    backend: DebBackend,
    agent: PathBuf,
    previous: Option<commit::Previous>,
    resolved: Vec<crate::backend::Package>,
    hash: String,
    next_version: Option<String>,
    layers: Vec<commit::layers::Layer>,
}

pub fn run(opts: &Options) -> Result<Outcome> {
    let start = Instant::now();
    let tf = Treefile::load(&opts.treefile)?;
    if opts.print_only {
        crate::util::print_stdout(&(serde_json::to_string_pretty(&tf.value())? + "\n"))?;
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
    let scratch_parent = opts.cachedir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = crate::workdir::WorkDir::create(&scratch_parent)?;
    let p = plan(opts, tf, scratch.path())?;
    let unchanged =
        p.previous.as_ref().and_then(|p| p.inputhash.as_deref()) == Some(p.hash.as_str());
    if (unchanged && !opts.force_nocache) || opts.dry_run {
        return no_commit(opts, &p, unchanged, start);
    }
    let (checksum, installed) = build_and_commit(opts, &p, scratch.path())?;
    let out = Outcome {
        ref_: p.tf.ref_.clone(),
        commit: Some(checksum),
        parent: p.previous.as_ref().map(|p| p.checksum.clone()),
        version: p.next_version,
        inputhash: p.hash,
        changed: true,
        dry_run: false,
        packages: installed,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_outputs(opts, &out)?;
    Ok(out)
}

/// Resolve the packages and compute the inputhash and the next version.
fn plan(opts: &Options, tf: Treefile, scratch: &Path) -> Result<Planned> {
    tf.check_compose(&opts.treefile.display().to_string())?;
    let layers = commit::layers::resolve(&opts.repo, &tf)?;
    let backend = DebBackend::new(&tf)?;
    let agent = std::env::current_exe().context("locating the keelson binary")?;
    let previous = match commit::open_existing(&opts.repo)? {
        Some(repo) => commit::previous(&repo, &tf.ref_)?,
        None => None,
    };
    let resolved = step("resolving packages", || backend.resolve(scratch))?;
    let mut blobs = blobs_for(&tf, &agent)?;
    for l in &layers {
        blobs.push((
            format!("{}:{}", l.field, l.ref_),
            l.checksum.clone().into_bytes(),
        ));
    }
    let blob_refs: Vec<Blob> = blobs
        .iter()
        .map(|(l, b)| Blob { label: l, bytes: b })
        .collect();
    let hash = inputhash::inputhash(&tf.canonical_json(), &blob_refs, &resolved);
    let next_version = tf.automatic_version_prefix.as_deref().map(|p| {
        let suffix = tf.automatic_version_suffix.as_deref().unwrap_or(".");
        let prev = previous.as_ref().and_then(|p| p.version.as_deref());
        version::next_version(p, suffix, prev)
    });
    Ok(Planned {
        layers,
        tf,
        backend,
        agent,
        previous,
        resolved,
        hash,
        next_version,
    })
}

/// A dry run, or inputs equal to the previous commit's: nothing written.
fn no_commit(opts: &Options, p: &Planned, unchanged: bool, start: Instant) -> Result<Outcome> {
    let prev = p.previous.as_ref();
    let hash = &p.hash;
    if opts.dry_run {
        tracing::info!(
            "dry run: {} packages resolved, inputhash {hash}; {}",
            p.resolved.len(),
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
        ref_: p.tf.ref_.clone(),
        commit: prev.map(|p| p.checksum.clone()),
        parent: None,
        version: prev.and_then(|p| p.version.clone()),
        inputhash: hash.clone(),
        changed: false,
        dry_run: opts.dry_run,
        packages: p.resolved.len(),
        seconds: start.elapsed().as_secs_f64(),
    };
    if !opts.dry_run {
        write_outputs(opts, &out)?;
    }
    Ok(out)
}

/// Packages, postprocess, commit: returns the checksum and the number of
/// installed packages.
fn build_and_commit(opts: &Options, p: &Planned, scratch: &Path) -> Result<(String, usize)> {
    let given = commit::source_date_epoch()?;
    let sde = commit::timestamp(given)? as i64;
    // SOURCE_DATE_EPOCH as given ("unset" in the cache keys when it is not)
    let sde_label = given.map(|v| v.to_string());
    let rootfs = scratch.join("rootfs");
    let debcache = opts.cachedir.as_ref().map(|c| c.join("debs"));
    let seed = passwd_seed(&p.tf, p.previous.as_ref(), scratch)?;
    let installed = install_packages(
        opts,
        p,
        &rootfs,
        debcache.as_deref(),
        seed.as_deref(),
        sde_label.as_deref(),
    )?;
    let unpredicted = crate::backend::deb::unpredicted(&p.resolved, &installed);
    if !unpredicted.is_empty() {
        tracing::warn!(
            "installed packages the resolve step did not predict (did the mirror change during the compose?): {}",
            unpredicted.join(", ")
        );
    }
    if !p.layers.is_empty() {
        step("ostree-layers", || {
            commit::layers::apply(&opts.repo, &rootfs, scratch, &p.layers)
        })?;
    }
    let tree = crate::util::tree::Tree::open(&rootfs)?;
    let initramfs_cache = opts
        .cachedir
        .as_ref()
        .filter(|_| !opts.no_initramfs_cache)
        .map(|c| postprocess::CacheCtx {
            dir: c.join("initramfs"),
            packages: &installed,
            source_date_epoch: sde_label.clone(),
        });
    postprocess::run(&postprocess::Ctx {
        root: &rootfs,
        tree: &tree,
        tf: &p.tf,
        version: p.next_version.clone(),
        previous_passwd: p.previous.as_ref().and_then(|p| p.passwd.clone()),
        previous_group: p.previous.as_ref().and_then(|p| p.group.clone()),
        agent: p.agent.clone(),
        source_date_epoch: sde,
        initramfs_cache,
    })?;
    let checksum = commit_tree(opts, p, &rootfs, &installed, sde)?;
    Ok((checksum, installed.len()))
}

/// The package step: a copy of the install cache's entry when one matches,
/// else mmdebstrap (then the entry is stored and superseded .debs pruned).
fn install_packages(
    opts: &Options,
    p: &Planned,
    rootfs: &Path,
    debcache: Option<&Path>,
    seed: Option<&Path>,
    sde: Option<&str>,
) -> Result<Vec<crate::backend::Package>> {
    use crate::backend::install_cache::{self, InstallCache};
    let fresh = || {
        step("installing packages (mmdebstrap)", || {
            p.backend.install(rootfs, debcache, seed)
        })
    };
    let Some(cachedir) = opts.cachedir.as_ref().filter(|_| !opts.no_install_cache) else {
        return fresh();
    };
    let cache = InstallCache::open(&cachedir.join("installs"))?;
    let mut seed_parts = Vec::new();
    for name in ["passwd", "group"] {
        if let Some(f) = seed.map(|s| s.join(name)).filter(|f| f.is_file()) {
            seed_parts.push((name, fs_err::read(&f)?));
        }
    }
    let key = install_cache::key(&p.backend.identity(), &p.resolved, &seed_parts, sde);
    if let Some(held) = cache.find(&key)? {
        step(
            "installing packages (a copy of the install cache's entry)",
            || held.copy_to(rootfs),
        )?;
        drop(held);
        return crate::backend::deb::installed_packages(rootfs);
    }
    let installed = fresh()?;
    step("saving the install to the install cache", || {
        cache.store(&key, rootfs)
    })?;
    if let Some(debs) = debcache {
        prune_debs(debs, &installed)?;
    }
    Ok(installed)
}

/// Remove .debs that a newer installed version superseded.
fn prune_debs(dir: &Path, installed: &[crate::backend::Package]) -> Result<()> {
    let files: Vec<String> = fs_err::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let old = crate::backend::install_cache::superseded_debs(&files, installed);
    for f in &old {
        fs_err::remove_file(dir.join(f))?;
    }
    if !old.is_empty() {
        tracing::info!("package cache: removed {} superseded .deb files", old.len());
    }
    Ok(())
}

fn commit_tree(
    opts: &Options,
    p: &Planned,
    rootfs: &Path,
    installed: &[crate::backend::Package],
    sde: i64,
) -> Result<String> {
    let (tf, next_version) = (&p.tf, &p.next_version);
    let treefile_json = tf.canonical_json();
    let meta = metadata::build(
        &metadata::Fields {
            version: next_version.as_deref(),
            inputhash: &p.hash,
            packages: installed,
            treefile_json: &treefile_json,
            extra: &tf.add_commit_metadata,
        },
        rootfs,
    )?;
    // ostree refuses to upgrade to a commit older than the booted one: never
    // go back in time relative to the parent.
    let previous = p.previous.as_ref();
    let timestamp = (sde.max(0) as u64).max(previous.map(|p| p.timestamp).unwrap_or(0));
    let repo = commit::open_or_create(&opts.repo)?;
    let subject = match next_version {
        Some(v) => format!("{} {v}", tf.ref_),
        None => tf.ref_.clone(),
    };
    let parent = previous.map(|p| p.checksum.clone());
    let checksum = step("committing", || {
        commit::write(
            &repo,
            &commit::Request {
                ref_: &tf.ref_,
                parent: parent.as_deref(),
                rootfs,
                metadata: &meta,
                subject: &subject,
                timestamp,
                threads: crate::util::threads(opts.threads),
                // --gpg-sign wins over the treefile's gpg-key.
                gpg: opts
                    .gpg_sign
                    .as_deref()
                    .or(tf.gpg_key.as_deref())
                    .map(|key_id| commit::GpgSign {
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
    Ok(checksum)
}

/// With `preserve-passwd` (the default), the previous commit's passwd and
/// group seed the new tree so ids stay stable across composes; a
/// `check-passwd`/`check-groups` of type `file` seeds from that file
/// instead (rpm-ostree's rule).
fn passwd_seed(
    tf: &Treefile,
    previous: Option<&commit::Previous>,
    scratch: &Path,
) -> Result<Option<PathBuf>> {
    if !tf.preserve_passwd.get() {
        return Ok(None);
    }
    let pick = |check: &Option<CheckPasswd>, prev: Option<&String>| -> Result<Option<String>> {
        match check {
            Some(CheckPasswd::File { filename }) => {
                let p = tf.basedir.join(filename);
                Ok(Some(fs_err::read_to_string(&p).with_context(|| {
                    format!(
                        "{}: cannot read (check-passwd/check-groups file)",
                        p.display()
                    )
                })?))
            }
            _ => Ok(prev.cloned()),
        }
    };
    let passwd = pick(&tf.check_passwd, previous.and_then(|p| p.passwd.as_ref()))?;
    let group = pick(&tf.check_groups, previous.and_then(|p| p.group.as_ref()))?;
    if passwd.is_none() && group.is_none() {
        return Ok(None);
    }
    let dir = scratch.join("passwd-seed");
    fs_err::create_dir_all(&dir)?;
    for (name, text) in [("passwd", passwd), ("group", group)] {
        if let Some(t) = text {
            fs_err::write(dir.join(name), t)?;
        }
    }
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
