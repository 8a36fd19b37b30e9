//! Treefiles: rpm-ostree's JSON format, read with includes merged, variables
//! substituted and defaults filled in, into one immutable [`Treefile`].

pub mod fragment;
pub mod merge;
pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use fragment::{Backend, CheckPasswdKind, DebSource, Fragment};

/// Includes deeper than this are almost certainly a mistake.
const MAX_INCLUDE_DEPTH: usize = 32;

/// The architecture name treefiles use (`basearch`, `packages-<arch>`).
pub fn basearch() -> &'static str {
    std::env::consts::ARCH
}

/// A flattened, validated treefile: the merged [`Fragment`] with variables
/// substituted, `packages-<arch>` folded in and lists made sets where
/// rpm-ostree treats them as sets. Its fields are the fragment's (Deref);
/// `ref_` and the package sets are here in their final types.
#[derive(Debug, Clone)]
pub struct Treefile {
    pub ref_: String,
    pub packages: BTreeSet<String>,
    pub exclude_packages: BTreeSet<String>,
    /// The finalised fragment: what `--print-only` prints.
    pub flat: Fragment,
    pub basedir: PathBuf,
}

impl std::ops::Deref for Treefile {
    type Target = Fragment;
    fn deref(&self) -> &Fragment {
        &self.flat
    }
}

impl Treefile {
    /// Read `path` and everything it includes.
    pub fn load(path: &Path) -> Result<Self> {
        let top = path
            .canonicalize()
            .with_context(|| format!("{}: cannot open treefile", path.display()))?;
        let basedir = top.parent().expect("a file has a parent").to_path_buf();
        let mut seen = BTreeSet::new();
        let mut stack = Vec::new();
        let frag = load_recursive(&top, &basedir, &mut seen, &mut stack)?;
        finalize(frag, basedir, &path.display().to_string())
    }

    /// Canonical JSON: keys in struct order, sets sorted, unset keys left
    /// out. Stable across runs, and a treefile that reads back to the same
    /// result (`--print-only`).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.value()).expect("treefile serialises")
    }

    /// The flattened treefile as a JSON object, without unset keys.
    pub fn value(&self) -> Value {
        let mut v = serde_json::to_value(&self.flat).expect("treefile serialises");
        if let Value::Object(m) = &mut v {
            m.retain(|_, x| !is_unset(x));
            if let Some(Value::Object(deb)) = m.get_mut("deb") {
                deb.retain(|_, x| !is_unset(x));
            }
            if m.get("deb").is_some_and(is_unset) {
                m.remove("deb");
            }
        }
        v
    }

    /// Absolute paths of every file the treefile references (for the inputhash).
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let s = &self.flat;
        let mut files: Vec<PathBuf> = s
            .add_files
            .iter()
            .map(|(src, _)| self.basedir.join(src))
            .collect();
        if let Some(p) = &s.postprocess_script {
            files.push(self.basedir.join(p));
        }
        files
    }
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn load_recursive(
    file: &Path,
    rootdir: &Path,
    seen: &mut BTreeSet<PathBuf>,
    stack: &mut Vec<PathBuf>,
) -> Result<Fragment> {
    let shown = file.display().to_string();
    if stack.len() >= MAX_INCLUDE_DEPTH {
        bail!("{shown}: include: nesting deeper than {MAX_INCLUDE_DEPTH} files");
    }
    if stack.contains(&file.to_path_buf()) {
        let chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{shown}: include: cycle ({} -> {shown})",
            chain.join(" -> ")
        );
    }
    if !seen.insert(file.to_path_buf()) {
        bail!("{shown}: include: file is included more than once");
    }
    let text = fs_err::read_to_string(file).with_context(|| format!("{shown}: cannot read"))?;
    let mut frag = fragment::parse(&shown, &text)?;
    let dir = file.parent().expect("a file has a parent");
    check_sources_exist(&shown, &frag, dir)?;
    rebase_paths(&mut frag, dir, rootdir);

    let mut includes: Vec<(String, String)> = frag
        .include
        .take()
        .map(|i| i.into_vec())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, p)| (format!("include[{i}]"), p))
        .collect();
    if let Some(arch_inc) = frag.arch_include.take() {
        for (arch, files) in arch_inc {
            if arch == basearch() {
                for (i, p) in files.into_vec().into_iter().enumerate() {
                    includes.push((format!("arch-include.{arch}[{i}]"), p));
                }
            }
        }
    }
    stack.push(file.to_path_buf());
    let mut base: Option<Fragment> = None;
    for (field, inc) in includes {
        let target = dir.join(&inc);
        let target = target.canonicalize().with_context(|| {
            format!(
                "{shown}: {field}: included file {} not found",
                target.display()
            )
        })?;
        let child = load_recursive(&target, rootdir, seen, stack)?;
        // Several includes: each later one is merged over the earlier ones.
        base = Some(match base {
            None => child,
            Some(prev) => merge::merge(prev, child),
        });
    }
    stack.pop();
    Ok(match base {
        None => frag,
        Some(b) => merge::merge(b, frag),
    })
}

/// Files named by the treefile must exist now, not fail after a long
/// package installation.
fn check_sources_exist(shown: &str, frag: &Fragment, dir: &Path) -> Result<()> {
    for (i, (src, _)) in frag.add_files.iter().enumerate() {
        let p = dir.join(src);
        if !p.is_file() {
            bail!(
                "{shown}: add-files[{i}][0]: {} is not a readable file",
                p.display()
            );
        }
    }
    for (i, src) in frag.deb.extra_sources.iter().enumerate() {
        if let Some(key) = &src.signed_by {
            let p = dir.join(key);
            if !p.is_file() {
                bail!(
                    "{shown}: deb.extra-sources[{i}].signed-by: {} is not a readable file",
                    p.display()
                );
            }
        }
    }
    if let Some(s) = &frag.postprocess_script {
        let p = dir.join(s);
        if !p.is_file() {
            bail!(
                "{shown}: postprocess-script: {} is not a readable file",
                p.display()
            );
        }
    }
    Ok(())
}

/// Make paths that are relative to the file's own directory relative to the
/// top-level treefile's directory, so the merged treefile can resolve them.
fn rebase_paths(frag: &mut Fragment, dir: &Path, rootdir: &Path) {
    let prefix = relative_path(rootdir, dir);
    let rebase = |p: &str| -> String {
        if p.starts_with('/') || prefix.as_os_str().is_empty() {
            p.to_string()
        } else {
            prefix.join(p).display().to_string()
        }
    };
    for (src, _) in frag.add_files.iter_mut() {
        *src = rebase(src);
    }
    if let Some(s) = frag.postprocess_script.as_mut() {
        *s = rebase(s);
    }
    for src in frag.deb.extra_sources.iter_mut() {
        if let Some(k) = src.signed_by.as_mut() {
            *k = rebase(k);
        }
    }
}

/// `to` expressed relative to `from` (both absolute, canonical).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Apply arch lists and variables; check what only the whole treefile can
/// tell. Defaults stay unset (each field's type knows its default).
fn finalize(mut f: Fragment, basedir: PathBuf, shown: &str) -> Result<Treefile> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("basearch".into(), basearch().into());
    if let Some(r) = &f.releasever {
        vars.insert("releasever".into(), r.render());
    }
    for (k, v) in &f.variables {
        vars.insert(k.clone(), v.render());
    }
    let subst = |field: &str, s: &str| -> Result<String> {
        vars::substitute(s, &vars).map_err(|e| anyhow::anyhow!("{shown}: {field}: {e}"))
    };

    let Some(raw_ref) = f.ref_.as_deref() else {
        bail!("{shown}: ref: missing (the branch to commit to)");
    };
    let ref_ = subst("ref", raw_ref)?;
    validate_ref(&ref_).map_err(|e| anyhow::anyhow!("{shown}: ref: {e}"))?;
    f.ref_ = Some(ref_.clone());

    let arch_pkgs = f.arch_packages.remove(basearch()).unwrap_or_default();
    f.arch_packages.clear();
    // rpm-ostree splits entries on whitespace.
    let split = |l: &[String]| -> BTreeSet<String> {
        l.iter()
            .flat_map(|e| e.split_whitespace().map(str::to_string))
            .collect()
    };
    let mut packages = split(&f.packages);
    packages.extend(split(&arch_pkgs));
    let exclude = split(&f.exclude_packages);
    if let Some(p) = packages.intersection(&exclude).next() {
        bail!("{shown}: exclude-packages: {p:?} is both requested in packages and excluded");
    }
    f.packages = packages.iter().cloned().collect();
    f.exclude_packages = exclude.iter().cloned().collect();

    if f.backend == Some(Backend::Rpm) {
        bail!("{shown}: backend: the rpm backend is not implemented yet; use \"deb\"");
    }
    for (k, v) in f.add_commit_metadata.iter_mut() {
        if let Value::String(s) = v {
            *s = subst(&format!("add-commit-metadata.{k}"), s)?;
        }
    }
    for (field, value) in [
        ("automatic-version-prefix", &mut f.automatic_version_prefix),
        ("mutate-os-release", &mut f.mutate_os_release),
    ] {
        if let Some(v) = value.as_mut() {
            *v = subst(field, v)?;
        }
    }
    Ok(Treefile {
        ref_,
        packages,
        exclude_packages: exclude,
        flat: f,
        basedir,
    })
}

/// ostree ref syntax: path components of `[A-Za-z0-9._-]`, no empty parts.
fn validate_ref(r: &str) -> Result<(), String> {
    if r.is_empty() {
        return Err("empty ref".into());
    }
    for part in r.split('/') {
        if part.is_empty()
            || part.starts_with('.')
            || !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!("{r:?} is not a valid ostree ref"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
