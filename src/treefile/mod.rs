//! Treefiles: rpm-ostree's format (JSON or YAML), read with includes
//! merged, variables substituted and defaults filled in, into one immutable
//! [`Treefile`]. Every error in the treefile and its includes is reported
//! in one run; nothing is composed from a treefile with errors.

pub mod compat;
pub mod fields;
pub mod fragment;
mod load;
pub mod merge;
pub mod parse;
pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

pub use fragment::{Backend, CheckPasswd, DebSource, Fragment, IdEntry};

/// Includes deeper than this are almost certainly a mistake.
const MAX_INCLUDE_DEPTH: usize = 32;

/// At most this many errors are printed; the rest are counted.
const MAX_ERRORS: usize = 50;

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
    /// Warnings from reading it (comment keys, retired keys, deprecated
    /// values), one line each; logged by [`Treefile::load`].
    pub warnings: Vec<String>,
}

impl std::ops::Deref for Treefile {
    type Target = Fragment;
    fn deref(&self) -> &Fragment {
        &self.flat
    }
}

impl Treefile {
    /// Read `path` and everything it includes. Every error found is in the
    /// returned error, one line each (file, field, message).
    /// The warnings are logged (and kept in [`Treefile::warnings`]).
    pub fn load(path: &Path) -> Result<Self> {
        let top = path
            .canonicalize()
            .with_context(|| format!("{}: cannot open treefile", path.display()))?;
        let basedir = top.parent().expect("a file has a parent").to_path_buf();
        let mut l = load::Loader::new(basedir.clone());
        let frag = l.file(&top, &mut BTreeMap::new());
        let shown = path.display().to_string();
        let mut errors = l.errors;
        let t = frag
            .filter(|_| !l.incomplete)
            .map(|f| finalize(f, basedir, &shown, &mut errors));
        if !errors.is_empty() {
            return Err(error_report(&shown, errors));
        }
        let mut t = t.expect("no errors means a fragment");
        for w in &l.warnings {
            tracing::warn!("{w}");
        }
        t.warnings = l.warnings;
        Ok(t)
    }

    /// What a compose needs beyond a valid treefile: a `ref`, and no field
    /// the deb backend cannot honour. All problems at once.
    pub fn check_compose(&self, shown: &str) -> Result<()> {
        let mut errors = Vec::new();
        if self.ref_.is_empty() {
            errors.push(format!("{shown}: ref: missing (the branch to commit to)"));
        }
        errors.extend(compat::backend_errors(shown, &self.flat));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(error_report(shown, errors))
        }
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
            for (k, x) in &self.flat.extra {
                m.insert(k.clone(), x.clone());
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
        for c in [&s.check_passwd, &s.check_groups] {
            if let Some(CheckPasswd::File { filename }) = c {
                files.push(self.basedir.join(filename));
            }
        }
        files
    }
}

/// One error, or all of them (capped) under a count.
fn error_report(shown: &str, mut errors: Vec<String>) -> anyhow::Error {
    errors.dedup();
    if errors.len() == 1 {
        return anyhow::anyhow!(errors.remove(0));
    }
    let n = errors.len();
    let mut text = format!("{shown}: {n} errors in the treefile and its includes:");
    for e in errors.iter().take(MAX_ERRORS) {
        text += "\n  ";
        text += e;
    }
    if n > MAX_ERRORS {
        text += &format!("\n  … and {} more", n - MAX_ERRORS);
    }
    anyhow::anyhow!(text)
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
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

/// Apply arch lists, variables and edition defaults; check what only the
/// whole treefile can tell. Errors go to `errors`; the result is only used
/// when there are none.
fn finalize(mut f: Fragment, basedir: PathBuf, shown: &str, errors: &mut Vec<String>) -> Treefile {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("basearch".into(), basearch().into());
    if let Some(r) = &f.releasever {
        vars.insert("releasever".into(), r.render());
    }
    for (k, v) in &f.variables {
        vars.insert(k.clone(), v.render());
    }
    let mut ref_ = f.ref_.clone().unwrap_or_default();
    let ref_ok = match vars::substitute(&ref_, &vars) {
        Ok(r) => {
            ref_ = r;
            true
        }
        Err(e) => {
            errors.push(format!("{shown}: ref: {e}"));
            false
        }
    };
    let mut subst = |field: &str, s: &mut String| match vars::substitute(s, &vars) {
        Ok(v) => *s = v,
        Err(e) => errors.push(format!("{shown}: {field}: {e}")),
    };
    for (k, v) in f.add_commit_metadata.iter_mut() {
        if let Value::String(s) = v {
            subst(&format!("add-commit-metadata.{k}"), s);
        }
    }
    for (k, v) in f.metadata.iter_mut() {
        if let Value::String(s) = v {
            subst(&format!("metadata.{k}"), s);
        }
    }
    for (field, value) in [
        ("automatic-version-prefix", &mut f.automatic_version_prefix),
        ("mutate-os-release", &mut f.mutate_os_release),
    ] {
        if let Some(v) = value.as_mut() {
            subst(field, v);
        }
    }
    match f.ref_.is_some() {
        // rpm-ostree flattens a treefile without a ref (`compose rootfs`
        // needs none); a compose needs one (`check_compose`).
        false => {}
        true if ref_ok => {
            if let Err(e) = validate_ref(&ref_) {
                errors.push(format!("{shown}: ref: {e}"));
            }
        }
        true => {}
    }
    if f.ref_.is_some() {
        f.ref_ = Some(ref_.clone());
    }
    apply_repovars(&mut f);
    if f.edition == Some(fragment::Edition::E2024) && f.tmp_is_dir.0.is_none() {
        f.tmp_is_dir = fragment::Flag(Some(true));
    }
    if f.backend == Some(Backend::Rpm) {
        errors.push(format!(
            "{shown}: backend: the rpm backend is not implemented yet; use \"deb\""
        ));
    }
    let (packages, exclude) = package_sets(&mut f, shown, errors);
    Treefile {
        ref_,
        packages,
        exclude_packages: exclude,
        flat: f,
        basedir,
        warnings: Vec::new(),
    }
}

/// `packages`, `bootstrap_packages` and this architecture's
/// `packages-<arch>` as one set (rpm-ostree splits entries on whitespace).
fn package_sets(
    f: &mut Fragment,
    shown: &str,
    errors: &mut Vec<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let arch = fields::arch_name(basearch()).unwrap_or(basearch());
    let arch_pkgs = f.arch_packages.remove(arch).unwrap_or_default();
    f.arch_packages.clear();
    let split = |l: &[String]| -> BTreeSet<String> {
        l.iter()
            .flat_map(|e| e.split_whitespace().map(str::to_string))
            .collect()
    };
    let mut packages = split(&f.packages);
    packages.extend(split(&std::mem::take(&mut f.bootstrap_packages)));
    packages.extend(split(&arch_pkgs));
    let exclude = split(&f.exclude_packages);
    for p in packages.intersection(&exclude) {
        errors.push(format!(
            "{shown}: exclude-packages: {p:?} is both requested in packages and excluded"
        ));
    }
    f.packages = packages.iter().cloned().collect();
    f.exclude_packages = exclude.iter().cloned().collect();
    (packages, exclude)
}

/// `repovars` in the apt sources keelson writes (the Debian meaning of
/// yum's repository variables).
fn apply_repovars(f: &mut Fragment) {
    if f.repovars.is_empty() {
        return;
    }
    let rv = &f.repovars;
    let s = |x: &mut String| *x = compat::substitute_repovars(x, rv);
    if let Some(m) = f.deb.mirror.as_mut() {
        s(m);
    }
    if let Some(m) = f.deb.suite.as_mut() {
        s(m);
    }
    for src in f.deb.extra_sources.iter_mut() {
        s(&mut src.uri);
        s(&mut src.suite);
        src.components.iter_mut().for_each(&s);
    }
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
