//! Release notes between two commits: packages added, removed and changed
//! (from the `keelson.packages` commit metadata) and files changed under
//! /usr/etc and /usr/lib/systemd (`ostree diff`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ostree::{gio, glib};
use serde::Serialize;

use crate::commit::metadata::PACKAGES;
use crate::util::cmd::Cmd;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// The repository holding both commits.
    #[arg(long, default_value = "repo")]
    pub repo: PathBuf,
    /// The older commit, ref or `REF^`.
    pub old: String,
    /// The newer commit or ref.
    pub new: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct Changed {
    pub name: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct PackageDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

#[derive(Debug, Serialize)]
pub struct Notes {
    pub old: Side,
    pub new: Side,
    pub packages: PackageDiff,
    /// `A`/`M`/`D` and the path, under /usr/etc and /usr/lib/systemd.
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub commit: String,
    pub version: Option<String>,
}

/// `name:arch=version` → (`name:arch`, version).
fn split(p: &str) -> (&str, &str) {
    p.split_once('=').unwrap_or((p, ""))
}

/// Pure: the package diff of two `name:arch=version` lists. Packages are
/// named `name` when one architecture carries them, `name:arch` otherwise.
pub fn packages(old: &[String], new: &[String]) -> PackageDiff {
    let o: BTreeMap<&str, &str> = old.iter().map(|p| split(p)).collect();
    let n: BTreeMap<&str, &str> = new.iter().map(|p| split(p)).collect();
    let short = |k: &str| k.split(':').next().unwrap_or(k).to_string();
    let mut d = PackageDiff::default();
    for (k, v) in &n {
        match o.get(k) {
            None => d.added.push(format!("{} {v}", short(k))),
            Some(ov) if ov != v => d.changed.push(Changed {
                name: short(k),
                from: ov.to_string(),
                to: v.to_string(),
            }),
            _ => {}
        }
    }
    for (k, v) in &o {
        if !n.contains_key(k) {
            d.removed.push(format!("{} {v}", short(k)));
        }
    }
    d
}

/// The commit's package list and version.
pub fn commit_packages(repo: &ostree::Repo, commit: &str) -> Result<(Vec<String>, Option<String>)> {
    let v = repo
        .load_variant(ostree::ObjectType::Commit, commit)
        .with_context(|| format!("loading commit {commit}"))?;
    let meta = glib::VariantDict::new(Some(&v.child_value(0)));
    let pkgs = meta
        .lookup::<Vec<String>>(PACKAGES)
        .ok()
        .flatten()
        .unwrap_or_default();
    let version = meta.lookup::<String>("version").ok().flatten();
    Ok((pkgs, version))
}

/// Pure: keep `ostree diff` lines under the watched directories.
pub fn watched_files(ostree_diff: &str) -> Vec<String> {
    ostree_diff
        .lines()
        .filter_map(|l| {
            let (kind, path) = l.trim().split_once(char::is_whitespace)?;
            let path = path.trim();
            let watched = ["/usr/etc/", "/usr/lib/systemd/"]
                .iter()
                .any(|d| path.starts_with(d));
            watched.then(|| format!("{kind} {path}"))
        })
        .collect()
}

fn resolve(repo: &ostree::Repo, path: &std::path::Path, rev: &str) -> Result<String> {
    repo.resolve_rev(rev, false)
        .ok()
        .flatten()
        .map(|c| c.to_string())
        .with_context(|| format!("{rev}: no such commit or ref in {}", path.display()))
}

pub fn run(o: &Options) -> Result<Notes> {
    let repo = ostree::Repo::new_for_path(&o.repo);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("--repo {}: not an ostree repository", o.repo.display()))?;
    let old = resolve(&repo, &o.repo, &o.old)?;
    let new = resolve(&repo, &o.repo, &o.new)?;
    let (op, ov) = commit_packages(&repo, &old)?;
    let (np, nv) = commit_packages(&repo, &new)?;
    let out = Cmd::new("ostree")
        .arg(format!("--repo={}", o.repo.display()))
        .args(["diff", &old, &new])
        .run()?;
    Ok(Notes {
        packages: packages(&op, &np),
        files: watched_files(&out),
        old: Side {
            commit: old,
            version: ov,
        },
        new: Side {
            commit: new,
            version: nv,
        },
    })
}

/// Human-readable release notes.
pub fn render(n: &Notes) -> String {
    let v = |s: &Side| {
        s.version
            .clone()
            .unwrap_or_else(|| s.commit[..12].to_string())
    };
    let mut out = format!("{} → {}\n", v(&n.old), v(&n.new));
    let p = &n.packages;
    if p.added.is_empty() && p.removed.is_empty() && p.changed.is_empty() {
        out.push_str("Packages: unchanged\n");
    }
    for a in &p.added {
        out.push_str(&format!("  + {a}\n"));
    }
    for r in &p.removed {
        out.push_str(&format!("  - {r}\n"));
    }
    for c in &p.changed {
        out.push_str(&format!("  ~ {} {} → {}\n", c.name, c.from, c.to));
    }
    if !n.files.is_empty() {
        out.push_str("Files (/usr/etc, /usr/lib/systemd):\n");
        for f in &n.files {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn packages_table() {
        let old = v(&["a:amd64=1", "b:amd64=2", "c:all=3"]);
        let new = v(&["a:amd64=1", "b:amd64=2.1", "d:amd64=0.5"]);
        let d = packages(&old, &new);
        assert_eq!(d.added, v(&["d 0.5"]));
        assert_eq!(d.removed, v(&["c 3"]));
        assert_eq!(
            d.changed,
            vec![Changed {
                name: "b".into(),
                from: "2".into(),
                to: "2.1".into()
            }]
        );
        assert_eq!(packages(&old, &old), PackageDiff::default());
        assert_eq!(packages(&[], &v(&["x:amd64=1"])).added, v(&["x 1"]));
    }

    #[test]
    fn watched_files_table() {
        let diff = "M    /usr/etc/hosts\nA    /usr/lib/systemd/system/x.service\nM    /usr/bin/ls\nD    /usr/etc/old.conf\n";
        assert_eq!(
            watched_files(diff),
            v(&[
                "M /usr/etc/hosts",
                "A /usr/lib/systemd/system/x.service",
                "D /usr/etc/old.conf"
            ])
        );
        assert!(watched_files("").is_empty());
    }
}
