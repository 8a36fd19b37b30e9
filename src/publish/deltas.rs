//! Static deltas for a published commit: which ones (pure), and generating
//! them, independent deltas in parallel (libostree's generator is
//! single-threaded; a from-empty delta dominates a publish).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use fs_err as fs;
use ostree::gio;

use super::layout::{delta_dir, delta_name};

/// Pure: the deltas `to` needs: from each of its newest `from_parents`
/// ancestors (newest first in `ancestors`) and from empty if asked, the
/// from-empty one first (the longest job starts first).
pub fn plan(to: &str, ancestors: &[String], from_parents: usize, from_empty: bool) -> Vec<String> {
    let mut out = Vec::new();
    if from_empty {
        out.push(delta_name(None, to));
    }
    out.extend(
        ancestors
            .iter()
            .take(from_parents)
            .map(|a| delta_name(Some(a), to)),
    );
    out
}

/// A delta is complete when its superblock exists (libostree links it
/// last, after every part).
pub fn complete(store: &Path, name: &str) -> bool {
    delta_dir(name).is_ok_and(|d| store.join(d).join("superblock").is_file())
}

/// Remove delta directories without a superblock: a generation killed
/// half-way. No index names them, so nothing served points at them.
pub fn remove_incomplete(store: &Path) -> Result<usize> {
    let top = store.join("deltas");
    let mut n = 0;
    if !top.is_dir() {
        return Ok(0);
    }
    for a in fs::read_dir(&top)? {
        let a = a?.path();
        if !a.is_dir() {
            continue;
        }
        for b in fs::read_dir(&a)? {
            let b = b?.path();
            if b.is_dir() && !b.join("superblock").exists() {
                crate::util::fsutil::remove_any(&b)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Generate `names` in the store with up to `jobs` at a time.
pub fn generate(store: &Path, names: &[String], jobs: usize) -> Result<Vec<(String, f64)>> {
    let todo: Vec<&String> = names.iter().filter(|n| !complete(store, n)).collect();
    let results = std::sync::Mutex::new(Vec::new());
    crate::util::try_for_each(&todo, vec![(); jobs.max(1)], |(), name| {
        let secs = generate_one(store, name)?;
        results
            .lock()
            .expect("results lock")
            .push((name.to_string(), secs));
        Ok(())
    })?;
    Ok(results.into_inner().expect("results"))
}

fn generate_one(store: &Path, name: &str) -> Result<f64> {
    let (from, to) = super::layout::parse_delta(name);
    let what = match from {
        Some(f) => format!("{}→{}", &f[..10], &to[..10]),
        None => format!("empty→{}", &to[..10]),
    };
    tracing::info!("generating static delta {what}");
    let start = Instant::now();
    // One repo object per thread: libostree's are not shared across threads.
    let repo = ostree::Repo::new_for_path(store);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening {}", store.display()))?;
    // libostree 2022.7 reads its parameters unconditionally: an empty
    // a{sv} (its defaults), never NULL.
    let params = ostree::glib::VariantDict::new(None).end();
    repo.static_delta_generate(
        ostree::StaticDeltaGenerateOpt::Major,
        from,
        to,
        None,
        Some(&params),
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("generating the static delta {what} in {}", store.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let size = dir_size(&store.join(delta_dir(name)?));
    tracing::info!("static delta {what}: {} KiB in {secs:.1}s", size / 1024);
    Ok(secs)
}

pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every complete delta in the store (hex names).
pub fn list(store: &ostree::Repo) -> Result<BTreeSet<String>> {
    Ok(store
        .list_static_delta_names(gio::Cancellable::NONE)
        .context("listing static deltas")?
        .into_iter()
        .map(|s| s.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plan_table() {
        let anc: Vec<String> = ["b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        let t: &[(&[String], usize, bool, &[&str])] = &[
            (&anc, 3, false, &["b-a", "c-a", "d-a"]),
            (&anc, 3, true, &["a", "b-a", "c-a", "d-a"]),
            (&anc, 0, true, &["a"]),
            (&anc, 10, false, &["b-a", "c-a", "d-a", "e-a"]),
            (&[], 3, false, &[]),
            (&[], 3, true, &["a"]),
        ];
        for (ancestors, n, empty, want) in t {
            assert_eq!(
                plan("a", ancestors, *n, *empty),
                want.to_vec(),
                "{n} {empty}"
            );
        }
    }
}
