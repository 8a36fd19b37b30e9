//! PUB/history.json: every published commit, newest last, with its package
//! diff against its parent (machine-readable release notes).

use std::path::Path;

use anyhow::{Context, Result};
use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::diff::{PackageDiff, commit_packages, packages};

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Release {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub version: Option<String>,
    pub commit: String,
    pub parent: Option<String>,
    /// Commit timestamp, RFC 3339 (UTC).
    pub date: String,
    /// Unix seconds when it was published.
    pub published: u64,
    pub packages: PackageDiff,
}

pub fn load(path: &Path) -> Result<Vec<Release>> {
    match fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{}: not a keelson history", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The release record for `commit` (its parent, if in the store, gives the diff).
pub fn release(store: &ostree::Repo, ref_: &str, commit: &str, published: u64) -> Result<Release> {
    let v = store.load_variant(ostree::ObjectType::Commit, commit)?;
    let parent = ostree::commit_get_parent(&v).map(|p| p.to_string());
    let (new, version) = commit_packages(store, commit)?;
    let old = match &parent {
        Some(p) if store.load_variant(ostree::ObjectType::Commit, p).is_ok() => {
            commit_packages(store, p)?.0
        }
        _ => Vec::new(),
    };
    let ts = ostree::commit_get_timestamp(&v) as i64;
    let date = ostree::glib::DateTime::from_unix_utc(ts)
        .and_then(|d| d.format("%Y-%m-%dT%H:%M:%SZ"))
        .map(|s| s.to_string())
        .unwrap_or_default();
    Ok(Release {
        ref_: ref_.to_string(),
        version,
        commit: commit.to_string(),
        parent,
        date,
        published,
        packages: packages(&old, &new),
    })
}

/// Append `r` (replacing an earlier record of the same commit), atomically.
pub fn append(path: &Path, r: Release) -> Result<()> {
    let mut all = load(path)?;
    all.retain(|x| x.commit != r.commit || x.ref_ != r.ref_);
    all.push(r);
    let text = serde_json::to_string_pretty(&all)? + "\n";
    super::layout::write_public(path, text.as_bytes())
}
