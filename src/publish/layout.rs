//! The publish directory: a libostree store, immutable served generations
//! and the one symlink that makes a generation live.
//!
//! ```text
//! PUB/store/                 archive repo libostree writes (objects, deltas, refs)
//! PUB/generations/N/         one published state: config, refs/, summary,
//!                            summary.sig, delta-indexes/, generation.json;
//!                            objects -> ../../store/objects, deltas -> ../../store/deltas
//! PUB/repo -> generations/N  what nodes use: http://HOST/repo
//! PUB/history.json           every published commit, with its package diff
//! PUB/.lock                  one publish at a time
//! ```
//!
//! A summary and its signature are two files that a client reads one after
//! the other; no pair of renames can switch both at once. Here they never
//! change in place: a new generation is written complete beside the live
//! one and `repo` is flipped with one rename(2). A publish killed anywhere
//! leaves `repo` on the old generation, whose files are all still there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fs_err as fs;
use ostree::glib;
use serde::{Deserialize, Serialize};

use crate::util::fsutil;

pub struct Layout {
    pub root: PathBuf,
}

/// What a generation serves: recorded in it, read by retention.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    pub id: u64,
    /// Unix seconds when it was written (it went live right after).
    pub created: u64,
    /// ref → head commit.
    pub refs: std::collections::BTreeMap<String, String>,
    /// ref → the commits of its history kept (objects stay while this
    /// generation may be cached).
    pub commits: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// Delta names (`FROM-TO` or `TO`, hex) its delta-indexes name.
    pub deltas: BTreeSet<String>,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn served(&self) -> PathBuf {
        self.root.join("repo")
    }
    pub fn generations(&self) -> PathBuf {
        self.root.join("generations")
    }
    pub fn generation(&self, id: u64) -> PathBuf {
        self.generations().join(id.to_string())
    }
    pub fn history(&self) -> PathBuf {
        self.root.join("history.json")
    }

    /// The live generation's id (`repo`'s target), if anything was published.
    pub fn live_id(&self) -> Result<Option<u64>> {
        let link = self.served();
        match fs::read_link(&link) {
            Ok(t) => {
                let name = t.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.parse().map(Some).with_context(|| {
                    format!("{}: unexpected target {}", link.display(), t.display())
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading the served repo link"),
        }
    }

    pub fn load_generation(&self, id: u64) -> Result<Generation> {
        let p = self.generation(id).join("generation.json");
        let text = fs::read_to_string(&p)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a generation record", p.display()))
    }

    /// Every complete generation on disk, oldest first.
    pub fn all_generations(&self) -> Result<Vec<Generation>> {
        let mut out = Vec::new();
        if !self.generations().is_dir() {
            return Ok(out);
        }
        for name in fsutil::sorted_names(&self.generations())? {
            let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if let Ok(g) = self.load_generation(id) {
                out.push(g);
            }
        }
        out.sort_by_key(|g| g.id);
        Ok(out)
    }

    /// Remove what a killed publish left: generations newer than the live
    /// one (never served) and `.tmp` directories.
    pub fn clean_unfinished(&self, live: Option<u64>) -> Result<()> {
        if !self.generations().is_dir() {
            return Ok(());
        }
        for name in fsutil::sorted_names(&self.generations())? {
            let n = name.to_string_lossy();
            let stale = match n.parse::<u64>() {
                Ok(id) => live.is_none_or(|l| id > l),
                Err(_) => true,
            };
            if stale {
                tracing::info!("removing generation {n} left by an interrupted publish");
                fsutil::remove_any(&self.generations().join(&*name))?;
            }
        }
        Ok(())
    }

    /// Write generation `g` complete under a temporary name, then rename it.
    /// The store must hold its summary (and signature) already.
    pub fn write_generation(&self, g: &Generation, signed: bool) -> Result<PathBuf> {
        let dir = self.generation(g.id);
        let tmp = self.generations().join(format!("{}.tmp", g.id));
        fsutil::remove_any(&tmp)?;
        fs::create_dir_all(&tmp)?;
        let store = self.store();
        for f in ["config", "summary"] {
            copy_synced(&store.join(f), &tmp.join(f))?;
        }
        if signed {
            copy_synced(&store.join("summary.sig"), &tmp.join("summary.sig"))?;
        }
        for (r, c) in &g.refs {
            let p = tmp.join("refs/heads").join(r);
            fs::create_dir_all(p.parent().expect("ref path has a parent"))?;
            write_public(&p, format!("{c}\n").as_bytes())?;
        }
        fs::create_dir_all(tmp.join("refs/remotes"))?;
        write_indexes(&store, &tmp, &g.deltas)?;
        std::os::unix::fs::symlink("../../store/objects", tmp.join("objects"))?;
        std::os::unix::fs::symlink("../../store/deltas", tmp.join("deltas"))?;
        let record = serde_json::to_vec_pretty(g)?;
        write_public(&tmp.join("generation.json"), &record)?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &dir)?;
        sync_dir(&self.generations())?;
        Ok(dir)
    }

    /// Make generation `id` the served one: one rename(2) of a symlink.
    pub fn go_live(&self, id: u64) -> Result<()> {
        let tmp = self.root.join(".repo.new");
        fsutil::remove_any(&tmp)?;
        std::os::unix::fs::symlink(format!("generations/{id}"), &tmp)
            .with_context(|| format!("{}: cannot create the link", tmp.display()))?;
        fs::rename(&tmp, self.served())?;
        sync_dir(&self.root)
    }
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from)?;
    write_public(to, &bytes)
}

/// Atomically, and readable by the web server (0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fsutil::write_atomic(path, bytes)?;
    fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?
        .sync_all()
        .with_context(|| format!("{}: fsync", dir.display()))
}

/// ostree's "modified base64" of a checksum: standard alphabet, `/` as `_`,
/// no padding (what names delta directories and index files).
pub fn b64(checksum: &str) -> Result<String> {
    use base64::Engine;
    let bytes = hex::decode(checksum).with_context(|| format!("{checksum}: not a checksum"))?;
    if bytes.len() != 32 {
        bail!("{checksum}: not a SHA-256 checksum");
    }
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(bytes)
        .replace('/', "_"))
}

/// Parse a delta name (`FROM-TO` or `TO`, hex).
pub fn parse_delta(name: &str) -> (Option<&str>, &str) {
    match name.split_once('-') {
        Some((f, t)) => (Some(f), t),
        None => (None, name),
    }
}

pub fn delta_name(from: Option<&str>, to: &str) -> String {
    match from {
        Some(f) => format!("{f}-{to}"),
        None => to.to_string(),
    }
}

/// `deltas/XX/REST[-TO]`, relative to a repo.
pub fn delta_dir(name: &str) -> Result<PathBuf> {
    let (from, to) = parse_delta(name);
    let to64 = b64(to)?;
    Ok(match from {
        Some(f) => {
            let f64 = b64(f)?;
            PathBuf::from(format!("deltas/{}/{}-{to64}", &f64[..2], &f64[2..]))
        }
        None => PathBuf::from(format!("deltas/{}/{}", &to64[..2], &to64[2..])),
    })
}

fn index_path(to: &str) -> Result<PathBuf> {
    let t = b64(to)?;
    Ok(PathBuf::from(format!(
        "delta-indexes/{}/{}.index",
        &t[..2],
        &t[2..]
    )))
}

/// The bytes of a delta index as libostree writes it: `a{sv}` with
/// `ostree.static-deltas` mapping each delta name to its superblock's
/// SHA-256 (`ay`), names sorted.
pub fn index_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let deltas = glib::VariantDict::new(None);
    for (name, digest) in entries {
        deltas.insert_value(name, &glib::Variant::array_from_fixed_array(digest));
    }
    let top = glib::VariantDict::new(None);
    top.insert_value("ostree.static-deltas", &deltas.end());
    top.end().data().to_vec()
}

/// Write `delta-indexes/` into `dir` for exactly `deltas` (whose
/// superblocks are read from the store).
fn write_indexes(store: &Path, dir: &Path, deltas: &BTreeSet<String>) -> Result<()> {
    use sha2::Digest;
    let mut by_target: std::collections::BTreeMap<&str, Vec<(String, Vec<u8>)>> =
        Default::default();
    for name in deltas {
        let sb = store.join(delta_dir(name)?).join("superblock");
        let bytes = fs::read(&sb)?;
        let digest = sha2::Sha256::digest(&bytes).to_vec();
        by_target
            .entry(parse_delta(name).1)
            .or_default()
            .push((name.clone(), digest));
    }
    for (to, mut entries) in by_target {
        // libostree inserts in order of the source commit, from-empty first.
        entries.sort_by(|a, b| parse_delta(&a.0).0.cmp(&parse_delta(&b.0).0));
        let p = dir.join(index_path(to)?);
        fs::create_dir_all(p.parent().expect("index path has a parent"))?;
        write_public(&p, &index_bytes(&entries))?;
    }
    fs::create_dir_all(dir.join("delta-indexes"))?;
    Ok(())
}

/// One publish at a time per directory: an exclusive flock on PUB/.lock,
/// held until the returned file is dropped.
pub fn lock(root: &Path) -> Result<fs::File> {
    use rustix::fs::{FlockOperation, flock};
    fs::create_dir_all(root).with_context(|| format!("--to {}: cannot create", root.display()))?;
    let p = root.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "{}: another keelson publish holds the lock; one publish at a time per repo",
            p.display()
        );
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_and_paths_match_ostree() {
        // tests/publish.rs checks the paths and index bytes against what
        // libostree itself writes; here the shape.
        let from = "b3b2218cd369b61b6d16b45eb44b6aa5e2c1f4bf0a6a7c13b1947da73bcf5dba";
        let got = b64(from).unwrap();
        assert_eq!(got.len(), 43);
        assert!(!got.contains('/') && !got.contains('='));
        for bad in ["ab", "", "zz"] {
            assert!(b64(bad).is_err(), "{bad}");
        }
        let to = "4421d7e3d59b6e1cbf61c34fb4fd6a87b218759e549d0a50b656ded0848b0205";
        let name = delta_name(Some(from), to);
        assert_eq!(parse_delta(&name), (Some(from), to));
        let d = delta_dir(&name).unwrap();
        assert!(d.starts_with("deltas"));
        assert_eq!(
            delta_dir(to).unwrap(),
            PathBuf::from(format!(
                "deltas/{}/{}",
                &b64(to).unwrap()[..2],
                &b64(to).unwrap()[2..]
            ))
        );
    }
}
