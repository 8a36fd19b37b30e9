//! One treefile as written on disk, before includes are merged: the typed
//! fields and the checks that need more than types. Reading a file's text
//! into a fragment (JSON or YAML, every error collected) is `parse.rs`;
//! which keys exist and what keelson does with each is `fields.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A string or a list of strings (`include`, `arch-include` values).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A scalar variable value: rpm-ostree allows strings, numbers and booleans.
/// Merged as a scalar: the includer's value wins.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum VarValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl VarValue {
    pub fn render(&self) -> String {
        match self {
            VarValue::Str(s) => s.clone(),
            VarValue::Int(i) => i.to_string(),
            VarValue::Bool(b) => b.to_string(),
        }
    }
}

/// `check-passwd` / `check-groups`: what the new tree's ids are checked
/// against.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckPasswd {
    None,
    Previous,
    /// A passwd (or group) file, relative to the treefile. With
    /// `preserve-passwd` it also seeds the tree, as rpm-ostree does.
    File {
        filename: String,
    },
    /// Names and ids in the treefile: `{"bin": 1, "adm": [3, 4]}` (passwd
    /// entries may give `[uid, gid]`).
    Data {
        entries: BTreeMap<String, IdEntry>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IdEntry {
    Id(u32),
    Pair(u32, u32),
}

/// `edition`: 2014 (the default) or 2024, which changes defaults.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize, Serialize)]
pub enum Edition {
    #[serde(rename = "2014")]
    E2014,
    #[serde(rename = "2024")]
    E2024,
}

/// One `conditional-include` entry: every condition must hold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalInclude {
    #[serde(rename = "if")]
    pub condition: OneOrMany,
    pub include: IncludeTarget,
}

/// Files (a path or a list), or a treefile written inline.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IncludeTarget {
    Files(OneOrMany),
    Inline(Map<String, Value>),
}

crate::mergeable! {
    /// The Debian backend's source settings (keelson extension).
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub struct DebSource {
        /// Suite or codename, e.g. `bookworm`.
        pub suite: Option<String>,
        /// Mirror URL; without it the build host's apt sources for the suite are used.
        pub mirror: Option<String>,
        /// Archive components, e.g. `["main"]`.
        pub components: Option<Vec<String>>,
        /// mmdebstrap variant (`minbase` by default).
        pub variant: Option<String>,
        /// More apt repositories, e.g. the upstream Kubernetes one for the
        /// kubelet. Lists from included files are concatenated.
        pub extra_sources: Vec<ExtraSource>,
    }
}

/// One extra apt repository (`deb [signed-by=KEY] URI SUITE COMPONENT...`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtraSource {
    pub uri: String,
    /// Suite, or `/` for a flat repository such as pkgs.k8s.io.
    pub suite: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// The repository's OpenPGP key file, relative to the treefile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Unsigned repository (local test repositories only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Deb,
    Rpm,
}

crate::mergeable! {
    /// Fields as they appear in one file, and (finalised) the flattened
    /// treefile. This is the one list of keys: the include merge follows
    /// each field's type (scalars `Option`/[`Flag`]: the includer wins;
    /// lists `Vec`: the included items first; maps: union, the includer
    /// winning; `deb`: field by field). A new key is one line here.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Fragment {
        #[serde(rename = "ref")]
        pub ref_: Option<String>,
        pub include: Option<OneOrMany>,
        pub arch_include: Option<BTreeMap<String, OneOrMany>>,
        pub variables: BTreeMap<String, VarValue>,
        pub releasever: Option<VarValue>,
        pub backend: Option<Backend>,
        pub deb: DebSource,
        pub packages: Vec<String>,
        pub exclude_packages: Vec<String>,
        pub recommends: Flag<true>,
        pub documentation: Flag<true>,
        pub add_files: Vec<(String, String)>,
        pub remove_files: Vec<String>,
        pub remove_from_packages: Vec<Vec<String>>,
        pub postprocess: Vec<String>,
        pub postprocess_script: Option<String>,
        pub units: Vec<String>,
        #[serde(alias = "default_target")]
        pub default_target: Option<String>,
        pub initramfs_args: Vec<String>,
        pub preserve_passwd: Flag<true>,
        pub check_passwd: Option<CheckPasswd>,
        pub check_groups: Option<CheckPasswd>,
        pub ignore_removed_users: Vec<String>,
        pub ignore_removed_groups: Vec<String>,
        pub machineid_compat: Flag<true>,
        pub readonly_executables: Flag<false>,
        pub tmp_is_dir: Flag<false>,
        #[serde(alias = "automatic_version_prefix")]
        pub automatic_version_prefix: Option<String>,
        pub mutate_os_release: Option<String>,
        pub add_commit_metadata: Map<String, Value>,
        pub selinux: Option<bool>,
        pub osname: Option<String>,
        #[serde(alias = "boot_location")]
        pub boot_location: Option<String>,
        pub edition: Option<Edition>,
        pub metadata: Map<String, Value>,
        #[serde(alias = "gpg_key")]
        pub gpg_key: Option<String>,
        pub basearch: Option<String>,
        pub repovars: BTreeMap<String, String>,
        pub conditional_include: Vec<ConditionalInclude>,
        #[serde(rename = "bootstrap_packages")]
        pub bootstrap_packages: Vec<String>,
        pub install_langs: Vec<String>,
        pub etc_group_members: Vec<String>,
        pub ostree_layers: Vec<String>,
        pub ostree_override_layers: Vec<String>,
        pub automatic_version_suffix: Option<String>,
        /// Fields kept as JSON (`fields::Store::Generic`): flattened and
        /// printed, refused by a deb compose when set (`Treefile::check_compose`).
        #[serde(skip)]
        pub extra: BTreeMap<String, Value>,
        /// `packages-<arch>` keys, collected before deserialisation (folded
        /// into `packages` when the treefile is finalised).
        #[serde(skip)]
        pub arch_packages: BTreeMap<String, Vec<String>>,
    }
}

/// A boolean with a default: unset in a fragment lets an included file's
/// value (or the default `D`) through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Flag<const D: bool>(pub Option<bool>);

impl<const D: bool> Flag<D> {
    pub fn get(&self) -> bool {
        self.0.unwrap_or(D)
    }
}

/// Checks that need more than types: paths in add-files/remove-files and the
/// shape of remove-from-packages.
pub fn validate(file: &str, f: &Fragment) -> Vec<String> {
    let mut e = Vec::new();
    validate_paths(file, f, &mut e);
    validate_scalars(file, f, &mut e);
    validate_extra_sources(file, f, &mut e);
    super::compat::validate(file, f, &mut e);
    e
}

/// add-files, remove-files and remove-from-packages.
fn validate_paths(file: &str, f: &Fragment, e: &mut Vec<String>) {
    for (i, (src, dst)) in f.add_files.iter().enumerate() {
        if src.is_empty() {
            e.push(format!("{file}: add-files[{i}][0]: source path is empty"));
        }
        if !dst.starts_with('/') {
            e.push(format!(
                "{file}: add-files[{i}][1]: destination {dst:?} must be absolute"
            ));
        }
        if dst.split('/').any(|c| c == "..") {
            e.push(format!(
                "{file}: add-files[{i}][1]: destination {dst:?} must not contain '..'"
            ));
        }
        if dst == "/var" || dst.starts_with("/var/") {
            e.push(format!(
                "{file}: add-files[{i}][1]: destination {dst:?} is under /var, which ostree does not carry; use tmpfiles.d"
            ));
        }
    }
    for (i, p) in f.remove_files.iter().enumerate() {
        if p.starts_with('/') {
            e.push(format!(
                "{file}: remove-files[{i}]: {p:?} must be relative (no leading '/')"
            ));
        }
        if p.split('/').any(|c| c == "..") {
            e.push(format!(
                "{file}: remove-files[{i}]: {p:?} must not contain '..'"
            ));
        }
        if p.is_empty() {
            e.push(format!("{file}: remove-files[{i}]: path is empty"));
        }
    }
    for (i, entry) in f.remove_from_packages.iter().enumerate() {
        if entry.len() < 2 {
            e.push(format!(
                "{file}: remove-from-packages[{i}]: expected [package, regex, ...]"
            ));
        }
        for (j, re) in entry.iter().enumerate().skip(1) {
            if let Err(err) = regex::Regex::new(re) {
                // The regex crate draws a multi-line caret diagram; one line here.
                let msg = err
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                e.push(format!(
                    "{file}: remove-from-packages[{i}][{j}]: invalid regex: {msg}"
                ));
            }
        }
    }
}

fn validate_scalars(file: &str, f: &Fragment, e: &mut Vec<String>) {
    if let Some(script) = &f.postprocess_script
        && script.is_empty()
    {
        e.push(format!("{file}: postprocess-script: path is empty"));
    }
    for (i, p) in f.packages.iter().enumerate() {
        if p.trim().is_empty() {
            e.push(format!("{file}: packages[{i}]: empty package name"));
        }
    }
}

/// deb.extra-sources: a URL apt can use inside the tree, a suite, a key.
fn validate_extra_sources(file: &str, f: &Fragment, e: &mut Vec<String>) {
    for (i, src) in f.deb.extra_sources.iter().enumerate() {
        let field = format!("deb.extra-sources[{i}]");
        if src.uri.starts_with("file:") {
            // apt hands dpkg the .deb in place, and dpkg runs inside the
            // tree where the host path does not exist.
            e.push(format!(
                "{file}: {field}.uri: {:?}: use copy:/… for a local repository (apt copies the packages into the tree's cache)",
                src.uri
            ));
        }
        let scheme_ok = ["http://", "https://", "copy:/"]
            .iter()
            .any(|p| src.uri.starts_with(p));
        if !src.uri.starts_with("file:") && (!scheme_ok || src.uri.contains(char::is_whitespace)) {
            e.push(format!(
                "{file}: {field}.uri: {:?} is not an http://, https:// or copy:/ URL",
                src.uri
            ));
        }
        if src.suite.is_empty() || src.suite.contains(char::is_whitespace) {
            e.push(format!(
                "{file}: {field}.suite: {:?} is not a suite name (or / for a flat repository)",
                src.suite
            ));
        }
        if src.suite.ends_with('/') != src.components.is_empty() {
            e.push(format!(
                "{file}: {field}.components: a flat repository (suite ending in /) has none, any other needs some"
            ));
        }
        match (&src.signed_by, src.trusted) {
            (None, false) => e.push(format!(
                "{file}: {field}.signed-by: the repository's key file is required (or trusted: true for a local unsigned repository)"
            )),
            (Some(_), true) => {
                e.push(format!("{file}: {field}: signed-by and trusted: true exclude each other"))
            }
            _ => {}
        }
    }
}
