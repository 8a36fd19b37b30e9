//! One treefile as written on disk, before includes are merged.
//!
//! Every field is optional so that a fragment can be a partial treefile that
//! only adds packages. Unknown keys are rejected (rpm-ostree silently keeps
//! them in JSON, which hides typos); fields rpm-ostree knows but keelson does
//! not implement get their own message rather than being dropped.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
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

/// `check-passwd` / `check-groups`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckPasswd {
    #[serde(rename = "type")]
    pub kind: CheckPasswdKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckPasswdKind {
    None,
    Previous,
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
        pub repos: Vec<String>,
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
        /// `packages-<arch>` keys, collected before deserialisation (folded
        /// into `packages` when the treefile is finalised).
        #[serde(skip)]
        pub arch_packages: BTreeMap<String, Vec<String>>,
    }
}

impl Fragment {
    /// `check-passwd` as the compose uses it (default: previous).
    pub fn check_passwd_kind(&self) -> CheckPasswdKind {
        self.check_passwd
            .as_ref()
            .map(|c| c.kind)
            .unwrap_or(CheckPasswdKind::Previous)
    }

    pub fn check_groups_kind(&self) -> CheckPasswdKind {
        self.check_groups
            .as_ref()
            .map(|c| c.kind)
            .unwrap_or(CheckPasswdKind::Previous)
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

/// rpm-ostree fields keelson does not implement: named so the error says so
/// instead of "unknown field".
const NOT_IMPLEMENTED: &[&str] = &[
    "install-langs",
    "etc-group-members",
    "gpg-key",
    "gpg_key",
    "lockfile-repos",
    "container",
    "cliwrap",
    "rojig",
    "modules",
    "opt-usrlocal",
    "rpmdb",
    "sysusers",
    "conditional-include",
];

/// Parse one file's JSON into a fragment. `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Fragment> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| anyhow!("{file}: invalid JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        bail!("{file}: a treefile must be a JSON object");
    };
    for key in NOT_IMPLEMENTED {
        if map.contains_key(*key) {
            bail!("{file}: {key}: field is not supported by keelson");
        }
    }
    // `packages-<arch>` keys are open-ended, so take them out before the
    // strict deserialisation below.
    let mut arch_packages = BTreeMap::new();
    let arch_keys: Vec<String> = map
        .keys()
        .filter(|k| k.starts_with("packages-"))
        .cloned()
        .collect();
    for key in arch_keys {
        let v = map.remove(&key).expect("key listed above");
        let list: Vec<String> = serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow!("{file}: {key}{}", describe(&e)))?;
        arch_packages.insert(key["packages-".len()..].to_string(), list);
    }
    let mut frag: Fragment = serde_path_to_error::deserialize(Value::Object(map))
        .map_err(|e| anyhow!("{file}: {}", describe_root(&e)))?;
    frag.arch_packages = arch_packages;
    validate(file, &frag)?;
    Ok(frag)
}

/// Render a serde_path_to_error error as `field[3]: message`.
fn describe_root(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        // Unknown top-level keys are reported by serde with the key in the message.
        return simplify(e.inner());
    }
    format!("{}: {}", path, simplify(e.inner()))
}

/// Same, for a value already under a named key.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let sub = if path == "." { String::new() } else { path };
    format!("{sub}: {}", simplify(e.inner()))
}

/// serde_json appends " at line 1 column 0" for values deserialised from a
/// `Value`, which is noise here.
fn simplify(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.find(" at line ") {
        s.truncate(i);
    }
    // serde lists every accepted key after an unknown one; the key's path
    // already says where the problem is, and the list would swamp it.
    if s.starts_with("unknown field")
        && let Some(i) = s.find(", expected")
    {
        s.truncate(i);
    }
    s
}

/// Checks that need more than types: paths in add-files/remove-files and the
/// shape of remove-from-packages.
fn validate(file: &str, f: &Fragment) -> Result<()> {
    validate_paths(file, f)?;
    validate_scalars(file, f)?;
    validate_extra_sources(file, f)
}

/// add-files, remove-files and remove-from-packages.
fn validate_paths(file: &str, f: &Fragment) -> Result<()> {
    for (i, (src, dst)) in f.add_files.iter().enumerate() {
        if src.is_empty() {
            bail!("{file}: add-files[{i}][0]: source path is empty");
        }
        if !dst.starts_with('/') {
            bail!("{file}: add-files[{i}][1]: destination {dst:?} must be absolute");
        }
        if dst.split('/').any(|c| c == "..") {
            bail!("{file}: add-files[{i}][1]: destination {dst:?} must not contain '..'");
        }
        if dst == "/var" || dst.starts_with("/var/") {
            bail!(
                "{file}: add-files[{i}][1]: destination {dst:?} is under /var, which ostree does not carry; use tmpfiles.d"
            );
        }
    }
    for (i, p) in f.remove_files.iter().enumerate() {
        if p.starts_with('/') {
            bail!("{file}: remove-files[{i}]: {p:?} must be relative (no leading '/')");
        }
        if p.split('/').any(|c| c == "..") {
            bail!("{file}: remove-files[{i}]: {p:?} must not contain '..'");
        }
        if p.is_empty() {
            bail!("{file}: remove-files[{i}]: path is empty");
        }
    }
    for (i, entry) in f.remove_from_packages.iter().enumerate() {
        if entry.len() < 2 {
            bail!("{file}: remove-from-packages[{i}]: expected [package, regex, ...]");
        }
        for (j, re) in entry.iter().enumerate().skip(1) {
            regex::Regex::new(re).map_err(|e| {
                // The regex crate draws a multi-line caret diagram; one line here.
                let msg = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                anyhow!("{file}: remove-from-packages[{i}][{j}]: invalid regex: {msg}")
            })?;
        }
    }
    Ok(())
}

fn validate_scalars(file: &str, f: &Fragment) -> Result<()> {
    if let Some(script) = &f.postprocess_script
        && script.is_empty()
    {
        bail!("{file}: postprocess-script: path is empty");
    }
    if f.selinux == Some(true) {
        bail!("{file}: selinux: labelling is not supported by keelson (set false)");
    }
    if !f.repos.is_empty() && f.backend != Some(Backend::Rpm) {
        // `repos` only means something to the rpm backend; a deb treefile that
        // lists them is most likely a copy of a Fedora one.
        bail!("{file}: repos: only used by the rpm backend; deb sources go in `deb`");
    }
    for (i, p) in f.packages.iter().enumerate() {
        if p.trim().is_empty() {
            bail!("{file}: packages[{i}]: empty package name");
        }
    }
    Ok(())
}

/// deb.extra-sources: a URL apt can use inside the tree, a suite, a key.
fn validate_extra_sources(file: &str, f: &Fragment) -> Result<()> {
    for (i, src) in f.deb.extra_sources.iter().enumerate() {
        let field = format!("deb.extra-sources[{i}]");
        if src.uri.starts_with("file:") {
            // apt hands dpkg the .deb in place, and dpkg runs inside the
            // tree where the host path does not exist.
            bail!(
                "{file}: {field}.uri: {:?}: use copy:/… for a local repository (apt copies the packages into the tree's cache)",
                src.uri
            );
        }
        let scheme_ok = ["http://", "https://", "copy:/"]
            .iter()
            .any(|p| src.uri.starts_with(p));
        if !scheme_ok || src.uri.contains(char::is_whitespace) {
            bail!(
                "{file}: {field}.uri: {:?} is not an http://, https:// or copy:/ URL",
                src.uri
            );
        }
        if src.suite.is_empty() || src.suite.contains(char::is_whitespace) {
            bail!(
                "{file}: {field}.suite: {:?} is not a suite name (or / for a flat repository)",
                src.suite
            );
        }
        if src.suite.ends_with('/') != src.components.is_empty() {
            bail!(
                "{file}: {field}.components: a flat repository (suite ending in /) has none, any other needs some"
            );
        }
        match (&src.signed_by, src.trusted) {
            (None, false) => bail!(
                "{file}: {field}.signed-by: the repository's key file is required (or trusted: true for a local unsigned repository)"
            ),
            (Some(_), true) => {
                bail!("{file}: {field}: signed-by and trusted: true exclude each other")
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse("t.json", text).unwrap_err())
    }

    #[test]
    fn accepts_aliases_and_arch_packages() {
        let f = parse(
            "t.json",
            r#"{"default_target":"multi-user.target","packages-x86_64":["a"],
                "automatic_version_prefix":"1","boot_location":"modules"}"#,
        )
        .unwrap();
        assert_eq!(f.default_target.as_deref(), Some("multi-user.target"));
        assert_eq!(f.arch_packages["x86_64"], vec!["a".to_string()]);
        assert_eq!(f.automatic_version_prefix.as_deref(), Some("1"));
    }

    /// Each bad input must name the file and the field (with its index).
    #[test]
    fn errors_name_file_and_field() {
        let table: &[(&str, &str)] = &[
            (
                r#"{"packagez":["a"]}"#,
                "t.json: packagez: unknown field `packagez`",
            ),
            (
                r#"{"packages":["a","b","c",4]}"#,
                "t.json: packages[3]: invalid type",
            ),
            (
                r#"{"recommends":"yes"}"#,
                "t.json: recommends: invalid type",
            ),
            (r#"{"ref":7}"#, "t.json: ref: invalid type"),
            (
                r#"{"packages-x86_64":[1]}"#,
                "t.json: packages-x86_64[0]: invalid type",
            ),
            (
                r#"{"add-files":[["a","/var/lib/x"]]}"#,
                "t.json: add-files[0][1]: destination \"/var/lib/x\" is under /var",
            ),
            (
                r#"{"add-files":[["a","/etc/x"],["b","/usr/../etc"]]}"#,
                "t.json: add-files[1][1]: destination \"/usr/../etc\" must not contain '..'",
            ),
            (
                r#"{"add-files":[["a","etc/x"]]}"#,
                "t.json: add-files[0][1]: destination \"etc/x\" must be absolute",
            ),
            (
                r#"{"remove-files":["usr/a","/etc/b"]}"#,
                "t.json: remove-files[1]: \"/etc/b\" must be relative",
            ),
            (
                r#"{"remove-files":["usr/../../x"]}"#,
                "t.json: remove-files[0]: \"usr/../../x\" must not contain '..'",
            ),
            (
                r#"{"remove-from-packages":[["pkg","("]]}"#,
                "t.json: remove-from-packages[0][1]: invalid regex",
            ),
            (
                r#"{"remove-from-packages":[["pkg"]]}"#,
                "t.json: remove-from-packages[0]: expected [package, regex, ...]",
            ),
            (
                r#"{"install-langs":["en"]}"#,
                "t.json: install-langs: field is not supported",
            ),
            (
                r#"{"check-passwd":{"type":"file"}}"#,
                "t.json: check-passwd.type: unknown variant",
            ),
            (
                r#"{"deb":{"suit":"x"}}"#,
                "t.json: deb.suit: unknown field `suit`",
            ),
            (
                r#"{"backend":"apk"}"#,
                "t.json: backend: unknown variant `apk`",
            ),
            (
                r#"{"selinux":true}"#,
                "t.json: selinux: labelling is not supported",
            ),
            (
                r#"{"repos":["fedora"]}"#,
                "t.json: repos: only used by the rpm backend",
            ),
            (
                r#"{"deb":{"extra-sources":[{"uri":"pkgs.k8s.io/deb/","suite":"/","signed-by":"k.gpg"}]}}"#,
                "t.json: deb.extra-sources[0].uri: \"pkgs.k8s.io/deb/\" is not an http://",
            ),
            (
                r#"{"deb":{"extra-sources":[{"uri":"file:/srv/apt","suite":"./","trusted":true}]}}"#,
                "t.json: deb.extra-sources[0].uri: \"file:/srv/apt\": use copy:/",
            ),
            (
                r#"{"deb":{"extra-sources":[{"uri":"https://x/deb/","suite":"/"}]}}"#,
                "t.json: deb.extra-sources[0].signed-by: the repository's key file is required",
            ),
            (
                r#"{"deb":{"extra-sources":[{"uri":"https://x/deb/","suite":"stable","signed-by":"k.gpg"}]}}"#,
                "t.json: deb.extra-sources[0].components: a flat repository",
            ),
            (
                r#"{"deb":{"extra-sources":[{"uri":"https://x/deb/","suite":"/","signed-by":"k","key":"x"}]}}"#,
                "t.json: deb.extra-sources[0].key: unknown field `key`",
            ),
            (r#"["a"]"#, "t.json: a treefile must be a JSON object"),
            (r#"{"a":"#, "t.json: invalid JSON"),
        ];
        for (input, want) in table {
            let got = err(input);
            assert!(
                got.starts_with(want),
                "input {input}\n got: {got}\nwant: {want}…"
            );
            assert!(!got.contains('\n'), "error must be one line: {got}");
        }
    }
}
