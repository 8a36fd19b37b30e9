//! Treefiles: rpm-ostree's JSON format, read with includes merged, variables
//! substituted and defaults filled in, into one immutable [`Treefile`].

pub mod fragment;
pub mod merge;
pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

pub use fragment::{Backend, CheckPasswdKind, DebSource, Fragment};

/// Includes deeper than this are almost certainly a mistake.
const MAX_INCLUDE_DEPTH: usize = 32;

/// The architecture name treefiles use (`basearch`, `packages-<arch>`).
pub fn basearch() -> &'static str {
    std::env::consts::ARCH
}

/// A flattened, validated treefile. Serialises to the canonical JSON that
/// `--print-only` prints and the inputhash covers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Treefile {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub backend: Backend,
    pub deb: DebSource,
    pub packages: BTreeSet<String>,
    pub exclude_packages: BTreeSet<String>,
    pub recommends: bool,
    pub documentation: bool,
    /// Sources relative to the directory of the top-level treefile.
    pub add_files: Vec<(String, String)>,
    pub remove_files: Vec<String>,
    pub remove_from_packages: Vec<Vec<String>>,
    pub postprocess: Vec<String>,
    /// Relative to the directory of the top-level treefile.
    pub postprocess_script: Option<String>,
    pub units: Vec<String>,
    pub default_target: Option<String>,
    pub initramfs_args: Vec<String>,
    pub preserve_passwd: bool,
    pub check_passwd: CheckPasswdKind,
    pub check_groups: CheckPasswdKind,
    pub ignore_removed_users: Vec<String>,
    pub ignore_removed_groups: Vec<String>,
    pub machineid_compat: bool,
    pub readonly_executables: bool,
    pub tmp_is_dir: bool,
    pub automatic_version_prefix: Option<String>,
    pub mutate_os_release: Option<String>,
    pub add_commit_metadata: Map<String, Value>,
    pub osname: Option<String>,
    #[serde(skip)]
    pub basedir: PathBuf,
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

    /// Canonical JSON: keys in struct order, sets sorted. Stable across runs.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("treefile serialises")
    }

    /// Absolute paths of every file the treefile references (for the inputhash).
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .add_files
            .iter()
            .map(|(src, _)| self.basedir.join(src))
            .collect();
        if let Some(s) = &self.postprocess_script {
            files.push(self.basedir.join(s));
        }
        files
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
    let text = std::fs::read_to_string(file).with_context(|| format!("{shown}: cannot read"))?;
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
    for (i, (src, _)) in frag.add_files.iter().flatten().enumerate() {
        let p = dir.join(src);
        if !p.is_file() {
            bail!(
                "{shown}: add-files[{i}][0]: {} is not a readable file",
                p.display()
            );
        }
    }
    let extra = frag.deb.as_ref().and_then(|d| d.extra_sources.as_ref());
    for (i, src) in extra.into_iter().flatten().enumerate() {
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
    for (src, _) in frag.add_files.iter_mut().flatten() {
        *src = rebase(src);
    }
    if let Some(s) = frag.postprocess_script.as_mut() {
        *s = rebase(s);
    }
    let extra = frag.deb.as_mut().and_then(|d| d.extra_sources.as_mut());
    for src in extra.into_iter().flatten() {
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

/// Apply arch lists, variables and defaults.
fn finalize(f: Fragment, basedir: PathBuf, shown: &str) -> Result<Treefile> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("basearch".into(), basearch().into());
    if let Some(r) = &f.releasever {
        vars.insert("releasever".into(), r.render());
    }
    for (k, v) in f.variables.iter().flatten() {
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

    let mut packages: BTreeSet<String> = BTreeSet::new();
    let arch_pkgs = f.arch_packages.get(basearch()).cloned().unwrap_or_default();
    for entry in f.packages.iter().flatten().chain(arch_pkgs.iter()) {
        // rpm-ostree splits entries on whitespace.
        packages.extend(entry.split_whitespace().map(str::to_string));
    }
    let exclude: BTreeSet<String> = f
        .exclude_packages
        .iter()
        .flatten()
        .flat_map(|e| e.split_whitespace().map(str::to_string))
        .collect();
    if let Some(p) = packages.intersection(&exclude).next() {
        bail!("{shown}: exclude-packages: {p:?} is both requested in packages and excluded");
    }

    let backend = f.backend.unwrap_or(Backend::Deb);
    if backend == Backend::Rpm {
        bail!("{shown}: backend: the rpm backend is not implemented yet; use \"deb\"");
    }

    let mut metadata = Map::new();
    for (k, v) in f.add_commit_metadata.unwrap_or_default() {
        let v = match v {
            Value::String(s) => Value::String(subst(&format!("add-commit-metadata.{k}"), &s)?),
            other => other,
        };
        metadata.insert(k, v);
    }

    let kind =
        |c: Option<fragment::CheckPasswd>| c.map(|c| c.kind).unwrap_or(CheckPasswdKind::Previous);

    Ok(Treefile {
        ref_,
        backend,
        deb: f.deb.unwrap_or_default(),
        packages,
        exclude_packages: exclude,
        recommends: f.recommends.unwrap_or(true),
        documentation: f.documentation.unwrap_or(true),
        add_files: f.add_files.unwrap_or_default(),
        remove_files: f.remove_files.unwrap_or_default(),
        remove_from_packages: f.remove_from_packages.unwrap_or_default(),
        postprocess: f.postprocess.unwrap_or_default(),
        postprocess_script: f.postprocess_script,
        units: f.units.unwrap_or_default(),
        default_target: f.default_target,
        initramfs_args: f.initramfs_args.unwrap_or_default(),
        preserve_passwd: f.preserve_passwd.unwrap_or(true),
        check_passwd: kind(f.check_passwd),
        check_groups: kind(f.check_groups),
        ignore_removed_users: f.ignore_removed_users.unwrap_or_default(),
        ignore_removed_groups: f.ignore_removed_groups.unwrap_or_default(),
        machineid_compat: f.machineid_compat.unwrap_or(true),
        readonly_executables: f.readonly_executables.unwrap_or(false),
        tmp_is_dir: f.tmp_is_dir.unwrap_or(false),
        automatic_version_prefix: f
            .automatic_version_prefix
            .map(|p| subst("automatic-version-prefix", &p))
            .transpose()?,
        mutate_os_release: f
            .mutate_os_release
            .map(|p| subst("mutate-os-release", &p))
            .transpose()?,
        add_commit_metadata: metadata,
        osname: f.osname,
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
