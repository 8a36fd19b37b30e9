//! `keelson publish`: a commit from a build repo into an update stream
//! served as static files: imported, GPG-signed, static deltas from the
//! last published commits (and from empty), a signed summary, then one
//! atomic switch (see `layout`), then retention. One publish at a time.

pub mod deltas;
pub mod history;
pub mod layout;
pub mod retention;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ostree::{gio, glib};
use serde::Serialize;

use crate::util::cmd::Cmd;
use crate::util::progress::step;
use layout::{Generation, Layout};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// The build repository holding the commit (e.g. `keelson build`'s repo).
    #[arg(long, value_name = "REPO")]
    pub from: PathBuf,
    /// The publish directory; serve it as static files, nodes use URL/repo.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The ref to publish (default: the build repo's only ref).
    #[arg(long = "ref", value_name = "REF")]
    pub ref_: Option<String>,
    /// Publish this commit instead of the ref's head.
    #[arg(long, value_name = "CHECKSUM")]
    pub commit: Option<String>,
    /// Accept a commit whose parent is not the published head (history restarts).
    #[arg(long)]
    pub reset: bool,
    /// Sign the commit and the summary with this GPG key.
    #[arg(long, value_name = "KEYID")]
    pub gpg_sign: Option<String>,
    /// GnuPG home holding the key.
    #[arg(long, value_name = "DIR", requires = "gpg_sign")]
    pub gpg_homedir: Option<PathBuf>,
    /// Static deltas from this many previously published commits.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub deltas_from: usize,
    /// Also a from-empty delta (what network installs pull).
    #[arg(long)]
    pub delta_from_empty: bool,
    /// Keep at most N commits of the ref (the head counts).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// Keep only commits younger than DAYS (the head always stays).
    #[arg(long, value_name = "DAYS")]
    pub keep_younger_than: Option<u64>,
    /// Seconds a replaced summary may still be cached (CDN TTL): what it
    /// names is deleted only after that.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub grace: u64,
    /// Then copy the served repo to DIR in CDN upload order.
    #[arg(long, value_name = "DIR")]
    pub sync_to: Option<PathBuf>,
    /// Deltas generated at once (default: CPUs).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Test hook: SIGKILL this process right after the named step
    /// (import, deltas, summary, generation).
    #[arg(long, hide = true, value_name = "STEP")]
    pub kill_self_after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub commit: String,
    pub version: Option<String>,
    pub parent: Option<String>,
    pub generation: u64,
    pub already_published: bool,
    pub signed: bool,
    pub deltas: Vec<String>,
    pub delta_seconds: BTreeMap<String, f64>,
    pub kept: Vec<String>,
    pub collected: retention::Collected,
    pub synced: Option<sync::Synced>,
    pub seconds: f64,
}

fn checkpoint(o: &Options, name: &str) {
    if o.kill_self_after.as_deref() == Some(name) {
        tracing::warn!("test hook: killing myself after {name}");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn open_repo(path: &std::path::Path, flag: &str) -> Result<ostree::Repo> {
    if !path.join("config").is_file() || !path.join("objects").is_dir() {
        bail!(
            "{flag} {}: not an ostree repository (no config/objects)",
            path.display()
        );
    }
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("{flag} {}: cannot open the repository", path.display()))?;
    Ok(repo)
}

/// The ref and commit to publish, from the build repo.
fn resolve(src: &ostree::Repo, o: &Options) -> Result<(String, String)> {
    let from = o.from.display();
    let ref_ = match &o.ref_ {
        Some(r) => r.clone(),
        None => {
            let refs = src.list_refs(None, gio::Cancellable::NONE)?;
            let heads: Vec<&String> = refs.keys().filter(|k| !k.contains(':')).collect();
            match heads.as_slice() {
                [one] => (*one).clone(),
                [] => bail!("--from {from}: holds no ref"),
                _ => bail!(
                    "--from {from}: several refs ({}); pass --ref",
                    heads
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let commit = match &o.commit {
        Some(c) => src
            .resolve_rev(c, false)
            .ok()
            .flatten()
            .with_context(|| format!("--commit {c}: not in {from}"))?
            .to_string(),
        None => src
            .resolve_rev(&ref_, false)
            .ok()
            .flatten()
            .with_context(|| format!("--ref {ref_}: not found in {from}"))?
            .to_string(),
    };
    src.load_variant(ostree::ObjectType::Commit, &commit)
        .with_context(|| format!("{from}: commit {commit} is not in the repository"))?;
    Ok((ref_, commit))
}

/// Signing fails early, before anything is written, when the key is not there.
fn check_key(repo: &ostree::Repo, o: &Options) -> Result<()> {
    let Some(key) = &o.gpg_sign else {
        return Ok(());
    };
    let home = o.gpg_homedir.as_ref().map(|h| h.display().to_string());
    repo.gpg_sign_data(
        &glib::Bytes::from_static(b"keelson publish key check"),
        None,
        &[key.as_str()],
        home.as_deref(),
        gio::Cancellable::NONE,
    )
    .map(|_| ())
    .with_context(|| {
        format!(
            "--gpg-sign {key}: cannot sign with this key (gpg home {})",
            home.as_deref().unwrap_or("~/.gnupg")
        )
    })
}

fn check_parent(
    src: &ostree::Repo,
    commit: &str,
    head: Option<&str>,
    reset: bool,
) -> Result<Option<String>> {
    let v = src.load_variant(ostree::ObjectType::Commit, commit)?;
    let parent = ostree::commit_get_parent(&v).map(|p| p.to_string());
    if let Some(h) = head
        && parent.as_deref() != Some(h)
        && !reset
    {
        bail!(
            "commit {commit}: its parent is {}, not the published head {h}; publish the commits in order, or pass --reset to restart the history",
            parent.as_deref().unwrap_or("none (a root commit)")
        );
    }
    Ok(parent)
}

fn open_store(layout: &Layout) -> Result<ostree::Repo> {
    let path = layout.store();
    if !path.join("config").is_file() {
        let repo = format!("--repo={}", path.display());
        Cmd::new("ostree")
            .args([&repo, "init", "--mode=archive"])
            .run()?;
        // Deltas are found through the generation's delta-indexes, which
        // name exactly the live deltas; the summary lists none.
        Cmd::new("ostree")
            .args([&repo, "config", "set", "core.no-deltas-in-summary", "true"])
            .run()?;
    }
    open_repo(&path, "--to")
}

fn import_and_sign(store: &ostree::Repo, layout: &Layout, o: &Options, commit: &str) -> Result<()> {
    step("importing the commit", || {
        Cmd::new("ostree")
            .arg(format!("--repo={}", layout.store().display()))
            .arg("pull-local")
            .arg(&o.from)
            .arg(commit)
            .run()
            .map(|_| ())
    })?;
    let Some(key) = &o.gpg_sign else {
        tracing::warn!("publishing without --gpg-sign: nodes with a keyring refuse this update");
        return Ok(());
    };
    let home = o.gpg_homedir.as_ref().map(|h| h.display().to_string());
    match store.sign_commit(commit, key, home.as_deref(), gio::Cancellable::NONE) {
        Ok(()) => Ok(()),
        // A publish that is run again after being interrupted.
        Err(e) if e.to_string().contains("already signed") => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--gpg-sign {key}: signing commit {commit}")),
    }
}

/// Summary (and signature) in the store, from its refs.
fn summary(store: &ostree::Repo, o: &Options) -> Result<()> {
    store
        .regenerate_summary(None, gio::Cancellable::NONE)
        .context("writing the summary")?;
    if let Some(key) = &o.gpg_sign {
        let home = o.gpg_homedir.as_ref().map(|h| h.display().to_string());
        store
            .add_gpg_signature_summary(&[key.as_str()], home.as_deref(), gio::Cancellable::NONE)
            .with_context(|| format!("--gpg-sign {key}: signing the summary"))?;
    }
    Ok(())
}

/// The new generation: the live one with this ref moved to `commit`.
fn next_generation(
    live: Option<&Generation>,
    ref_: &str,
    commit: &str,
    kept: &[String],
    deltas: &[String],
) -> Generation {
    let mut g = live.cloned().unwrap_or(Generation {
        id: 0,
        created: 0,
        refs: BTreeMap::new(),
        commits: BTreeMap::new(),
        deltas: BTreeSet::new(),
    });
    // Deltas towards this ref's old head are not needed any more (nodes go
    // to the new head); other refs keep theirs.
    let others: BTreeSet<&String> = g
        .refs
        .iter()
        .filter(|(r, _)| *r != ref_)
        .map(|(_, c)| c)
        .collect();
    g.deltas
        .retain(|d| others.contains(&layout::parse_delta(d).1.to_string()));
    g.deltas.extend(deltas.iter().cloned());
    g.id += 1;
    g.created = now();
    g.refs.insert(ref_.to_string(), commit.to_string());
    g.commits
        .insert(ref_.to_string(), kept.iter().cloned().collect());
    g
}

pub fn run(o: &Options) -> Result<Outcome> {
    let start = std::time::Instant::now();
    let src = open_repo(&o.from, "--from")?;
    let (ref_, commit) = resolve(&src, o)?;
    check_key(&src, o)?;
    let layout = Layout::new(&o.to);
    let _lock = layout::lock(&o.to)?;
    let live_id = layout.live_id()?;
    let live = live_id.map(|id| layout.load_generation(id)).transpose()?;
    let head = live.as_ref().and_then(|g| g.refs.get(&ref_).cloned());
    let mut out = Outcome {
        version: crate::diff::commit_packages(&src, &commit)?.1,
        signed: o.gpg_sign.is_some(),
        generation: live_id.unwrap_or(0),
        already_published: head.as_deref() == Some(commit.as_str()),
        parent: None,
        deltas: Vec::new(),
        delta_seconds: BTreeMap::new(),
        kept: Vec::new(),
        collected: Default::default(),
        synced: None,
        seconds: 0.0,
        ref_,
        commit,
    };
    if out.already_published {
        tracing::info!("{}: {} is already the published head", out.ref_, out.commit);
    } else {
        out.parent = check_parent(&src, &out.commit, head.as_deref(), o.reset)?;
        layout.clean_unfinished(live_id)?;
        publish_new(o, &layout, live.as_ref(), &mut out)?;
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// Import, sign, deltas, summary, the new generation live, then history,
/// deletions and the mirror copy.
fn publish_new(
    o: &Options,
    layout: &Layout,
    live: Option<&Generation>,
    out: &mut Outcome,
) -> Result<()> {
    let (ref_, commit) = (out.ref_.clone(), out.commit.clone());
    let store = open_store(layout)?;
    import_and_sign(&store, layout, o, &commit)?;
    checkpoint(o, "import");
    let policy = retention::Policy {
        keep: o.keep.map(|k| k as usize),
        younger_than_days: o.keep_younger_than,
    };
    out.kept = retention::kept(&retention::history(&store, &commit), policy, now());
    let ancestors: Vec<String> = out.kept.iter().skip(1).cloned().collect();
    out.deltas = deltas::plan(&commit, &ancestors, o.deltas_from, o.delta_from_empty);
    deltas::remove_incomplete(&layout.store())?;
    let jobs = crate::util::threads(o.jobs).min(out.deltas.len().max(1));
    let what = format!(
        "generating {} static delta(s), {jobs} at a time",
        out.deltas.len()
    );
    out.delta_seconds = step(&what, || {
        deltas::generate(&layout.store(), &out.deltas, jobs)
    })?
    .into_iter()
    .collect();
    checkpoint(o, "deltas");
    store
        .set_ref_immediate(None, &ref_, Some(&commit), gio::Cancellable::NONE)
        .with_context(|| format!("setting {ref_} in the store"))?;
    step("writing the summary", || summary(&store, o))?;
    checkpoint(o, "summary");
    let next = next_generation(live, &ref_, &commit, &out.kept, &out.deltas);
    layout.write_generation(&next, out.signed)?;
    checkpoint(o, "generation");
    layout.go_live(next.id)?;
    out.generation = next.id;
    tracing::info!("{ref_} → {commit}: generation {} is live", next.id);
    history::append(
        &layout.history(),
        history::release(&store, &ref_, &commit, next.created)?,
    )?;
    out.collected = step("deleting what no live generation names", || {
        retention::collect(layout, &store, now(), o.grace)
    })?;
    if let Some(d) = &o.sync_to {
        out.synced = Some(step(&format!("syncing to {}", d.display()), || {
            sync::sync(&layout.served(), d)
        })?);
    }
    Ok(())
}
