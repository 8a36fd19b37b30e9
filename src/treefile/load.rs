//! Reading a treefile and its includes (`include`, `arch-include`,
//! `conditional-include`) into one fragment, as rpm-ostree does:
//!
//! - variables flow down: a file sees its ancestors' variables (which win
//!   over its own) and those of the subtrees read before it;
//! - a file's includes are read in order, then merged so that the earlier
//!   include wins scalars and the later one's list items come first
//!   (rpm-ostree merges each include into the includer in turn);
//! - an inline `conditional-include` is merged into its file first.
//!
//! Errors are collected, not returned: a broken include is reported and
//! the rest is still read, so one run shows every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::compat;
use super::fields;
use super::fragment::{Fragment, IncludeTarget, VarValue};
use super::merge::merge;
use super::parse::{self, Parsed};
use super::{MAX_INCLUDE_DEPTH, basearch, relative_path};

pub struct Loader {
    rootdir: PathBuf,
    seen: BTreeSet<PathBuf>,
    stack: Vec<PathBuf>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// A file could not be read or found: checks of the whole treefile
    /// (a missing `ref`, ...) would only add noise.
    pub incomplete: bool,
}

type Vars = BTreeMap<String, VarValue>;

impl Loader {
    pub fn new(rootdir: PathBuf) -> Self {
        Self {
            rootdir,
            seen: BTreeSet::new(),
            stack: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            incomplete: false,
        }
    }

    /// Read `file` (canonical) and its includes; `None` when it could not
    /// be read at all (the error is recorded).
    pub fn file(&mut self, file: &Path, vars: &mut Vars) -> Option<Fragment> {
        let f = self.read_file(file, vars);
        if f.is_none() {
            self.incomplete = true;
        }
        f
    }

    fn read_file(&mut self, file: &Path, vars: &mut Vars) -> Option<Fragment> {
        let shown = file.display().to_string();
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.errors.push(format!(
                "{shown}: include: nesting deeper than {MAX_INCLUDE_DEPTH} files"
            ));
            return None;
        }
        if self.stack.iter().any(|p| p == file) {
            let chain: Vec<String> = self.stack.iter().map(|p| p.display().to_string()).collect();
            self.errors.push(format!(
                "{shown}: include: cycle ({} -> {shown})",
                chain.join(" -> ")
            ));
            return None;
        }
        if !self.seen.insert(file.to_path_buf()) {
            self.errors
                .push(format!("{shown}: include: file is included more than once"));
            return None;
        }
        let text = match fs_err::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(format!("{shown}: cannot read: {e}"));
                return None;
            }
        };
        let parsed = parse::parse_file(&shown, &text);
        self.incomplete |= parsed.unreadable;
        let dir = file.parent().expect("a file has a parent").to_path_buf();
        Some(self.fragment(&shown, &dir, parsed, vars))
    }

    /// A parsed file (or inline treefile) with its includes resolved.
    fn fragment(&mut self, shown: &str, dir: &Path, p: Parsed, vars: &mut Vars) -> Fragment {
        let Parsed {
            mut frag,
            errors,
            warnings,
            ..
        } = p;
        self.errors.extend(errors);
        self.warnings.extend(warnings);
        check_sources_exist(shown, &frag, dir, &mut self.errors);
        rebase_paths(&mut frag, dir, &self.rootdir);
        fold_variables(&frag, vars);

        let includes = self.includes(shown, dir, &mut frag, vars);

        self.stack.push(PathBuf::from(shown));
        let mut children = Vec::new();
        for (field, inc) in includes {
            let target = dir.join(&inc);
            match target.canonicalize() {
                Ok(t) => children.extend(self.file(&t, vars)),
                Err(_) => {
                    self.incomplete = true;
                    self.errors.push(format!(
                        "{shown}: {field}: included file {} not found",
                        target.display()
                    ));
                }
            }
        }
        self.stack.pop();
        // rpm-ostree merges include 1, then 2, ... into the includer: the
        // earlier include wins scalars, the later one's lists come first.
        let base = children.into_iter().rev().reduce(merge);
        match base {
            None => frag,
            Some(b) => merge(b, frag),
        }
    }

    /// `include`, this machine's `arch-include`, and the `conditional-include`
    /// entries whose conditions hold, in that order, with the field each
    /// comes from. An inline conditional treefile is merged into `frag`.
    fn includes(
        &mut self,
        shown: &str,
        dir: &Path,
        frag: &mut Fragment,
        vars: &mut Vars,
    ) -> Vec<(String, String)> {
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
                match fields::arch_name(&arch) {
                    None => self.errors.push(format!(
                        "{shown}: arch-include.{arch}: unknown architecture (known: {})",
                        fields::known_arches()
                    )),
                    Some(a) if Some(a) == fields::arch_name(basearch()) => {
                        for (i, p) in files.into_vec().into_iter().enumerate() {
                            includes.push((format!("arch-include.{arch}[{i}]"), p));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        let conditional = std::mem::take(&mut frag.conditional_include);
        for (i, ci) in conditional.into_iter().enumerate() {
            let field = format!("conditional-include[{i}]");
            if !self.condition_holds(shown, &field, &ci.condition.into_vec(), vars) {
                continue;
            }
            match ci.include {
                IncludeTarget::Files(files) => {
                    for (j, p) in files.into_vec().into_iter().enumerate() {
                        includes.push((format!("{field}.include[{j}]"), p));
                    }
                }
                IncludeTarget::Inline(map) => {
                    let where_ = format!("{shown}: {field}.include");
                    let inner = parse::parse_value(&where_, serde_json::Value::Object(map));
                    let inline = self.fragment(&where_, dir, inner, vars);
                    *frag = merge(inline, std::mem::take(frag));
                }
            }
        }
        includes
    }

    fn condition_holds(&mut self, shown: &str, field: &str, conds: &[String], vars: &Vars) -> bool {
        let mut all = true;
        // Every condition is evaluated, so that each bad one is reported.
        for (j, c) in conds.iter().enumerate() {
            let Ok(cond) = compat::parse_condition(c) else {
                return false; // reported by the file's own validation
            };
            match compat::evaluate(&cond, vars) {
                Ok(b) => all &= b,
                Err(e) => {
                    self.errors.push(format!("{shown}: {field}.if[{j}]: {e}"));
                    all = false;
                }
            }
        }
        all
    }
}

/// A file's variables (and `releasever`, `basearch`) join those defined so
/// far; a variable already defined (by an includer) keeps its value.
fn fold_variables(frag: &Fragment, vars: &mut Vars) {
    let mut new: Vars = frag.variables.clone();
    new.insert("basearch".into(), VarValue::Str(basearch().into()));
    if let Some(r) = &frag.releasever {
        new.insert("releasever".into(), r.clone());
    }
    new.append(vars);
    *vars = new;
}

/// Files named by the treefile must exist now, not fail after a long
/// package installation.
fn check_sources_exist(shown: &str, frag: &Fragment, dir: &Path, e: &mut Vec<String>) {
    let mut need = |field: String, rel: &str| {
        let p = dir.join(rel);
        if !rel.is_empty() && !p.is_file() {
            e.push(format!(
                "{shown}: {field}: {} is not a readable file",
                p.display()
            ));
        }
    };
    for (i, (src, _)) in frag.add_files.iter().enumerate() {
        need(format!("add-files[{i}][0]"), src);
    }
    for (i, src) in frag.deb.extra_sources.iter().enumerate() {
        if let Some(key) = &src.signed_by {
            need(format!("deb.extra-sources[{i}].signed-by"), key);
        }
    }
    if let Some(s) = &frag.postprocess_script {
        need("postprocess-script".into(), s);
    }
    for (field, c) in [
        ("check-passwd", &frag.check_passwd),
        ("check-groups", &frag.check_groups),
    ] {
        if let Some(super::CheckPasswd::File { filename }) = c {
            need(format!("{field}.filename"), filename);
        }
    }
}

/// Make paths that are relative to the file's own directory relative to the
/// top-level treefile's directory, so the merged treefile can resolve them.
fn rebase_paths(frag: &mut Fragment, dir: &Path, rootdir: &Path) {
    let prefix = relative_path(rootdir, dir);
    let rebase = |p: &mut String| {
        if !(p.starts_with('/') || prefix.as_os_str().is_empty()) {
            *p = prefix.join(&*p).display().to_string();
        }
    };
    for (src, _) in frag.add_files.iter_mut() {
        rebase(src);
    }
    if let Some(s) = frag.postprocess_script.as_mut() {
        rebase(s);
    }
    for src in frag.deb.extra_sources.iter_mut() {
        if let Some(k) = src.signed_by.as_mut() {
            rebase(k);
        }
    }
    for c in [&mut frag.check_passwd, &mut frag.check_groups] {
        if let Some(super::CheckPasswd::File { filename }) = c {
            rebase(filename);
        }
    }
}
