//! The initramfs cache (`CACHEDIR/initramfs`): the image dracut built,
//! kept with a record of everything it was built from, so a compose whose
//! initramfs inputs did not change (a unit file, a config fragment or a
//! postprocess line elsewhere changed) copies it instead of running dracut
//! (~27 s) again.
//!
//! What decides the image, and so what an entry is checked against:
//! - the slot ([`slot`]): the kernel version, dracut's command line, the
//!   installed package set with versions (dracut, its modules and every
//!   tool it runs come from packages), SOURCE_DATE_EPOCH and the format;
//! - the state in the tree of every path the image holds (as `lsinitrd`
//!   lists it): content hash, mode and owner for files, the target for
//!   links, and the names in each directory (so a file that a module's
//!   glob would pick up, added next to the ones it took, counts);
//! - the state of what dracut reads without copying ([`READ_PATHS`],
//!   recursively: its config and modules, keelson's among them, the
//!   os-release it writes initrd-release from, locale, modprobe and udev
//!   config), and the names and sizes of every kernel module available.
//!
//! An entry is used only when all of these are equal, so the commit is
//! byte-identical to a compose that ran dracut (the root tier checks it
//! against one with the cache off). The image itself is checked against
//! its recorded size and SHA-256 before use; a damaged entry is removed
//! and dracut runs. Entries live in a [`CacheDir`] (keep [`KEEP`]).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inputhash::LabelledHash;
use crate::util::cache_dir::CacheDir;
use crate::util::fsutil::sha256_file;
use crate::util::tree::Tree;

pub const KEEP: usize = 3;
const FORMAT: &str = "keelson-initramfs-cache-1";

/// Read by dracut (or its modules) whether or not they land in the image;
/// directories are recorded recursively.
pub const READ_PATHS: &[&str] = &[
    "usr/lib/dracut",
    "etc/dracut.conf",
    "etc/dracut.conf.d",
    "usr/bin/dracut",
    "usr/lib/os-release",
    "etc/os-release",
    "etc/initrd-release",
    "etc/vconsole.conf",
    "etc/locale.conf",
    "etc/default/locale",
    "etc/default/keyboard",
    "etc/kernel",
    "etc/cmdline",
    "etc/cmdline.d",
    "etc/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/modules-load.d",
    "usr/lib/modules-load.d",
    "etc/ld.so.conf",
    "etc/ld.so.conf.d",
    "etc/udev",
    "etc/fstab",
    "etc/crypttab",
    "etc/sysctl.conf",
    "etc/sysctl.d",
    "etc/systemd",
    "etc/passwd",
    "etc/group",
    "etc/hostname",
    "etc/machine-id",
];

/// The slot an image belongs to (pure).
pub fn slot(
    kver: &str,
    argv: &[&str],
    packages: &[crate::backend::Package],
    sde: Option<&str>,
) -> String {
    let mut h = LabelledHash::default();
    h.part("format", FORMAT.as_bytes());
    h.part("kernel", kver.as_bytes());
    h.part("argv", argv.join("\0").as_bytes());
    h.packages(packages);
    h.part("source-date-epoch", sde.unwrap_or("unset").as_bytes());
    h.finish()
}

/// The paths an image holds, from `lsinitrd`'s listing (pure): device
/// nodes (dracut makes them) and the header are left out; `.` is the root.
pub fn parse_listing(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(mode) = fields.first() else { continue };
        let kind = mode.chars().next().unwrap_or(' ');
        let is_mode = mode.len() == 10
            && "-dlps".contains(kind)
            && mode[1..].chars().all(|c| "rwxsStT-".contains(c));
        // mode links user group size month day time|year path [-> target]
        if !is_mode || fields.len() < 9 {
            continue;
        }
        let rest = fields[8..].join(" ");
        let path = rest.split(" -> ").next().unwrap_or("").to_string();
        let path = if path == "." { String::new() } else { path };
        out.push(path);
    }
    out.sort();
    out.dedup();
    out
}

/// One path to check, with whether its bytes count or only its metadata,
/// and (in a manifest) the hash of its state when the image was built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub path: String,
    pub content: bool,
    #[serde(default)]
    pub state: String,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    slot: String,
    image_sha256: String,
    image_size: u64,
    paths: Vec<Input>,
}

/// A path's state in the tree, as one line (`exclude` is left out of
/// directory listings and never read: the image being replaced).
fn state(tree: &Tree, input: &Input, exclude: &str) -> Result<String> {
    let rel = &input.path;
    let Ok(p) = tree.path(rel) else {
        return Ok(format!("{rel}\tdangling"));
    };
    let Ok(m) = std::fs::symlink_metadata(&p) else {
        return Ok(format!("{rel}\tabsent"));
    };
    let owner = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
    let s = if m.is_dir() {
        let names: Vec<String> = crate::util::fsutil::sorted_names(&p)?
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| join(rel, n) != exclude)
            .collect();
        format!("d {owner} {}", names.join("/"))
    } else if m.file_type().is_symlink() {
        format!("l {}", fs_err::read_link(&p)?.display())
    } else if m.is_file() && input.content {
        format!("f {owner} {} {}", m.size(), sha256_file(&p)?)
    } else {
        format!("o {owner} {} {}", m.size(), m.rdev())
    };
    Ok(format!("{rel}\t{s}"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `inputs` with the hash of each one's state in the tree.
fn with_states(tree: &Tree, inputs: Vec<Input>, exclude: &str) -> Result<Vec<Input>> {
    inputs
        .into_iter()
        .map(|i| {
            let line = state(tree, &i, exclude)?;
            Ok(Input {
                state: hex::encode(&Sha256::digest(line.as_bytes())[..16]),
                ..i
            })
        })
        .collect()
}

/// The recorded paths whose state in the tree is not the recorded one.
fn changed(tree: &Tree, recorded: &[Input], exclude: &str) -> Result<Vec<String>> {
    let now = with_states(tree, recorded.to_vec(), exclude)?;
    Ok(recorded
        .iter()
        .zip(now)
        .filter(|(r, n)| r.state != n.state)
        .map(|(r, _)| r.path.clone())
        .collect())
}

/// `rel` and, when it is a directory in the tree, everything under it.
fn expand(tree: &Tree, rel: &str, content: bool, exclude: &str, out: &mut BTreeMap<String, bool>) {
    if rel == exclude {
        return;
    }
    let e = out.entry(rel.to_string()).or_insert(content);
    *e |= content;
    let Ok(p) = tree.path(rel) else { return };
    let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return;
    }
    for n in crate::util::fsutil::sorted_names(&p).unwrap_or_default() {
        expand(
            tree,
            &join(rel, &n.to_string_lossy()),
            content,
            exclude,
            out,
        );
    }
}

/// Every input of an image holding `listed` paths (pure over the tree).
pub fn inputs(tree: &Tree, listed: &[String], kver: &str, exclude: &str) -> Vec<Input> {
    let mut all: BTreeMap<String, bool> = BTreeMap::new();
    for p in listed {
        all.insert(p.clone(), true);
    }
    for p in READ_PATHS {
        expand(tree, p, true, exclude, &mut all);
    }
    expand(
        tree,
        &format!("usr/lib/modules/{kver}"),
        false,
        exclude,
        &mut all,
    );
    all.into_iter()
        .filter(|(p, _)| p != exclude)
        .map(|(path, content)| Input {
            path,
            content,
            state: String::new(),
        })
        .collect()
}

pub struct InitramfsCache {
    dir: CacheDir,
}

impl InitramfsCache {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: CacheDir::open(dir, "initramfs cache")?,
        })
    }

    /// Copy a cached image for `slot` whose inputs equal the tree's to
    /// `out` (the tree's image path, relative `out_rel`); false when none.
    pub fn restore(&self, slot: &str, tree: &Tree, out_rel: &str, out: &Path) -> Result<bool> {
        let lock = self.dir.lock(true)?;
        let mut keys = self.dir.keys()?;
        keys.sort_by_key(|k| std::cmp::Reverse(k.1));
        for (key, _) in keys {
            let Some(m) = self.read_manifest(&key)? else {
                continue;
            };
            if m.slot != slot {
                continue;
            }
            let differ = changed(tree, &m.paths, out_rel)?;
            if !differ.is_empty() {
                tracing::info!(
                    "initramfs cache: entry {key} not reused: {} of its inputs changed ({}{})",
                    differ.len(),
                    differ[..differ.len().min(5)].join(", "),
                    if differ.len() > 5 { ", ..." } else { "" }
                );
                continue;
            }
            let data = self.dir.data(&key);
            let intact = std::fs::metadata(&data).is_ok_and(|d| d.len() == m.image_size)
                && sha256_file(&data)? == m.image_sha256;
            if !intact {
                self.dir
                    .discard(&key, "does not match its recorded size and SHA-256")?;
                continue;
            }
            self.dir.downgrade(&lock)?;
            fs_err::copy(&data, out)?;
            self.dir.touch(&key)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The manifest of `key`; an unreadable one removes the entry.
    fn read_manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let text = fs_err::read_to_string(self.dir.manifest(key))?;
        match serde_json::from_str(&text) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                self.dir
                    .discard(key, &format!("has an unreadable manifest ({e})"))?;
                Ok(None)
            }
        }
    }

    /// Keep `image` (just built by dracut; the tree holds it at `out_rel`)
    /// as an entry for `slot`, with the inputs of the `listed` paths.
    pub fn store(
        &self,
        slot: &str,
        tree: &Tree,
        listed: &[String],
        kver: &str,
        out_rel: &str,
        image: &Path,
    ) -> Result<()> {
        let paths = inputs(tree, listed, kver, out_rel);
        let paths = with_states(tree, paths, out_rel)?;
        let mut h = LabelledHash::default();
        h.part("slot", slot.as_bytes());
        for i in &paths {
            h.part(&i.path, i.state.as_bytes());
        }
        let key = h.finish();
        let _lock = self.dir.lock(true)?;
        let tmp = self.dir.tmp(&key);
        fs_err::copy(image, &tmp)?;
        let manifest = Manifest {
            slot: slot.to_string(),
            image_sha256: sha256_file(&tmp)?,
            image_size: fs_err::metadata(&tmp)?.len(),
            paths,
        };
        let bytes = serde_json::to_vec(&manifest)?;
        self.dir.commit(&key, &tmp, &bytes, KEEP)
    }
}

#[cfg(test)]
mod tests;
