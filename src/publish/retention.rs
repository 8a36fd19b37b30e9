//! Retention: which commits a ref keeps (pure), which generations may still
//! be cached by a CDN (pure), and deleting what no such generation names.
//!
//! Nothing is deleted the moment it is retired: a generation stays "live"
//! for `grace` seconds after the next one replaced it (a CDN may still serve
//! its summary), and every commit and delta a live generation names stays.

use anyhow::{Context, Result};
use ostree::gio;
use std::collections::BTreeSet;

use super::layout::{Generation, Layout, delta_dir};

/// A commit in a ref's history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub commit: String,
    pub timestamp: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep at most this many commits (the head counts).
    pub keep: Option<usize>,
    /// Keep only commits younger than this many days.
    pub younger_than_days: Option<u64>,
}

/// Pure: the commits kept, newest first. With both limits a commit must
/// pass both; the head is always kept.
pub fn kept(history: &[Entry], p: Policy, now: u64) -> Vec<String> {
    history
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            *i == 0
                || (p.keep.is_none_or(|k| *i < k)
                    && p.younger_than_days
                        .is_none_or(|d| now.saturating_sub(e.timestamp) < d * 86_400))
        })
        .map(|(_, e)| e.commit.clone())
        .collect()
}

/// Pure: generations that may still be served or cached (the live one and
/// those replaced less than `grace` seconds ago), and the expired ids.
pub fn split_generations(
    gens: &[Generation],
    live: u64,
    now: u64,
    grace: u64,
) -> (Vec<&Generation>, Vec<u64>) {
    let mut keep = Vec::new();
    let mut expired = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        let replaced_at = gens.get(i + 1).map(|n| n.created);
        let alive = g.id >= live || replaced_at.is_none_or(|t| now < t.saturating_add(grace));
        if alive {
            keep.push(g);
        } else {
            expired.push(g.id);
        }
    }
    (keep, expired)
}

/// Pure: what the live generations still name.
pub fn still_named(live: &[&Generation]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut commits = BTreeSet::new();
    let mut deltas = BTreeSet::new();
    for g in live {
        commits.extend(g.commits.values().flatten().cloned());
        deltas.extend(g.deltas.iter().cloned());
    }
    (commits, deltas)
}

const KEEP_REMOTE: &str = "keelson-keep";

/// Protect `commits` from pruning: one ref each under
/// refs/remotes/keelson-keep/commit/ (remote refs never enter a summary). Refs for
/// commits no longer protected are removed.
pub fn protect(store: &ostree::Repo, commits: &BTreeSet<String>) -> Result<()> {
    let existing = store
        .list_refs(Some(&format!("{KEEP_REMOTE}:")), gio::Cancellable::NONE)
        .context("listing the store's keep refs")?;
    for name in existing.keys() {
        let c = name.rsplit('/').next().unwrap_or(name);
        if !commits.contains(c) {
            store.set_ref_immediate(
                Some(KEEP_REMOTE),
                &format!("commit/{c}"),
                None,
                gio::Cancellable::NONE,
            )?;
        }
    }
    for c in commits {
        store
            .set_ref_immediate(
                Some(KEEP_REMOTE),
                &format!("commit/{c}"),
                Some(c),
                gio::Cancellable::NONE,
            )
            .with_context(|| format!("protecting commit {c}"))?;
    }
    Ok(())
}

/// What a collection removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Collected {
    pub generations: Vec<u64>,
    pub deltas: Vec<String>,
    pub objects: i32,
    pub bytes: u64,
}

/// Delete expired generations, then deltas and objects no live generation
/// names. Runs after the new generation is live; deletions come last.
pub fn collect(layout: &Layout, store: &ostree::Repo, now: u64, grace: u64) -> Result<Collected> {
    let Some(live) = layout.live_id()? else {
        return Ok(Collected::default());
    };
    let gens = layout.all_generations()?;
    let (alive, expired) = split_generations(&gens, live, now, grace);
    let (commits, deltas) = still_named(&alive);
    let mut out = Collected {
        generations: expired.clone(),
        ..Default::default()
    };
    for id in expired {
        crate::util::fsutil::remove_any(&layout.generation(id))?;
    }
    for name in super::deltas::list(store)? {
        if !deltas.contains(&name) {
            crate::util::fsutil::remove_any(&layout.store().join(delta_dir(&name)?))?;
            out.deltas.push(name);
        }
    }
    protect(store, &commits)?;
    let (_, pruned, bytes) = store
        .prune(ostree::RepoPruneFlags::REFS_ONLY, 0, gio::Cancellable::NONE)
        .with_context(|| format!("pruning {}", layout.store().display()))?;
    out.objects = pruned;
    out.bytes = bytes;
    Ok(out)
}

/// The commit's history in the store, newest first (stops at the first
/// commit the store does not hold).
pub fn history(store: &ostree::Repo, head: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut next = Some(head.to_string());
    while let Some(c) = next {
        let Ok(v) = store.load_variant(ostree::ObjectType::Commit, &c) else {
            break;
        };
        next = ostree::commit_get_parent(&v).map(|p| p.to_string());
        out.push(Entry {
            commit: c,
            timestamp: ostree::commit_get_timestamp(&v),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: usize, step: u64) -> Vec<Entry> {
        // Newest first: c0 at t=100000000, c1 one step older, …
        (0..n)
            .map(|i| Entry {
                commit: format!("c{i}"),
                timestamp: 100_000_000 - i as u64 * step,
            })
            .collect()
    }

    #[test]
    fn kept_table() {
        let day = 86_400;
        let now = 100_000_000;
        type Row<'a> = (usize, Option<usize>, Option<u64>, &'a [&'a str]);
        let t: &[Row] = &[
            (4, None, None, &["c0", "c1", "c2", "c3"]),
            (4, Some(2), None, &["c0", "c1"]),
            (4, Some(1), None, &["c0"]),
            (4, Some(0), None, &["c0"]),
            (4, None, Some(2), &["c0", "c1"]),
            (4, Some(3), Some(2), &["c0", "c1"]),
            (4, Some(1), Some(10), &["c0"]),
            (1, Some(5), None, &["c0"]),
            (0, Some(5), None, &[]),
        ];
        for (n, keep, days, want) in t {
            let p = Policy {
                keep: *keep,
                younger_than_days: *days,
            };
            assert_eq!(
                kept(&h(*n, day), p, now),
                want.to_vec(),
                "{n} {keep:?} {days:?}"
            );
        }
        // The head survives even when older than the age limit.
        let old = h(2, 30 * day);
        let p = Policy {
            keep: None,
            younger_than_days: Some(1),
        };
        assert_eq!(kept(&old, p, now + 40 * day), vec!["c0"]);
    }

    fn g(id: u64, created: u64) -> Generation {
        Generation {
            id,
            created,
            refs: Default::default(),
            commits: [("r".to_string(), [format!("c{id}")].into())].into(),
            deltas: [format!("d{id}")].into(),
        }
    }

    #[test]
    fn generations_expire_after_grace() {
        let gens = vec![g(1, 100), g(2, 200), g(3, 300)];
        // (live, now, grace) → expired ids
        let t: &[(u64, u64, u64, &[u64])] = &[
            (3, 300, 3600, &[]),
            (3, 3799, 3600, &[]),
            (3, 3800, 3600, &[1]),
            (3, 3900, 3600, &[1, 2]),
            (3, 10_000, 0, &[1, 2]),
            (3, 300, 0, &[1, 2]),
            // A rollback of the link (live = 2): 3 is newer, never expired here.
            (2, 10_000, 0, &[1]),
        ];
        for (live, now, grace, want) in t {
            let (alive, expired) = split_generations(&gens, *live, *now, *grace);
            assert_eq!(&expired, want, "{live} {now} {grace}");
            assert_eq!(alive.len() + expired.len(), gens.len());
        }
        let (alive, _) = split_generations(&gens, 3, 3800, 3600);
        let (commits, deltas) = still_named(&alive);
        assert_eq!(commits, ["c2".to_string(), "c3".to_string()].into());
        assert_eq!(deltas, ["d2".to_string(), "d3".to_string()].into());
    }
}
