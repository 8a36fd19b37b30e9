//! Every treefile key keelson knows: rpm-ostree's documented fields (its
//! `docs/treefile.md` and the struct behind it), their aliases, and
//! keelson's own extensions, each with what keelson does with it. This
//! table is the one list: the parser classifies keys through it, a compose
//! refuses what the deb backend cannot honour through it, and
//! `docs/treefile.md` of this repository is checked against it.

/// What keelson does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Honoured as rpm-ostree documents it.
    Implemented,
    /// Honoured, with the Debian meaning given.
    Debian(&'static str),
    /// Flattened (`--print-only`), but a compose on the deb backend refuses
    /// it when set: it only means something to an RPM backend.
    NeedsRpm(&'static str),
    /// Flattened, but a compose refuses values keelson cannot honour; the
    /// text says which and why.
    Limited(&'static str),
    /// A keelson extension (not in rpm-ostree).
    Keelson,
}

/// How a field's value is stored before it is flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A typed field of [`super::Fragment`] (serde checks the type).
    Typed,
    /// Kept as a JSON value of this shape in `Fragment::extra`, merged by
    /// rpm-ostree's rules for that shape (lists concatenate, maps union,
    /// scalars: the includer wins).
    Generic(Shape),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Bool,
    Str,
    Int,
    StrList,
    Map,
    List,
}

impl Shape {
    pub fn matches(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match self {
            Shape::Bool => v.is_boolean(),
            Shape::Str => v.is_string(),
            Shape::Int => v.is_u64(),
            Shape::StrList => v.as_array().is_some_and(|a| a.iter().all(V::is_string)),
            Shape::Map => v.is_object(),
            Shape::List => v.is_array(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Bool => "a boolean",
            Shape::Str => "a string",
            Shape::Int => "a non-negative integer",
            Shape::StrList => "a list of strings",
            Shape::Map => "a mapping",
            Shape::List => "a list",
        }
    }
}

#[derive(Debug)]
pub struct Field {
    pub key: &'static str,
    pub store: Store,
    pub support: Support,
}

const fn f(key: &'static str, store: Store, support: Support) -> Field {
    Field {
        key,
        store,
        support,
    }
}

use Shape::*;
use Store::{Generic as G, Typed as T};
use Support::*;

const RPM_REPOS: &str = "RPM repositories need an rpm backend; Debian sources go in `deb`";
const RPMDB: &str = "the RPM database needs an rpm backend; Debian trees carry dpkg's database";
const SELINUX: &str = "keelson's Debian trees are not SELinux-labelled";
const CLIENT: &str = "an rpm-ostree client-side (derivation) field, not a compose field";

/// Every key, in rpm-ostree's documentation order, then the fields its
/// struct has beyond the docs, then keelson's.
pub const FIELDS: &[Field] = &[
    f(
        "edition",
        T,
        Implemented, // 2024: tmp-is-dir and boot-location defaults
    ),
    f("ref", T, Implemented),
    f("metadata", T, Implemented),
    f("gpg-key", T, Implemented),
    f("gpg_key", T, Implemented),
    f("repos", G(StrList), NeedsRpm(RPM_REPOS)),
    f(
        "selinux",
        T,
        Limited("only `false`: the trees are not SELinux-labelled"),
    ),
    f(
        "ignore-devices",
        G(Bool),
        Limited("only `true`: device nodes are never committed (the compose names any it finds)"),
    ),
    f(
        "ima",
        G(Bool),
        NeedsRpm("IMA signatures come from RPM headers"),
    ),
    f(
        "boot-location",
        T,
        Debian(
            "the kernel always goes to /usr/lib/modules only (`new` is accepted with a warning)",
        ),
    ),
    f("boot_location", T, Implemented),
    f(
        "etc-group-members",
        T,
        Debian(
            "Debian keeps every group in /etc/group; the listed groups must exist, keep their members there, and get no member lines in the generated sysusers.d",
        ),
    ),
    f(
        "install-langs",
        T,
        Debian("dpkg path-excludes keep only these locales' /usr/share/locale and man page files"),
    ),
    f("mutate-os-release", T, Implemented),
    f(
        "documentation",
        T,
        Debian("false: dpkg path-excludes for man, info and doc files"),
    ),
    f(
        "packages",
        T,
        Debian("Debian package names, resolved by apt"),
    ),
    f(
        "exclude-packages",
        T,
        Debian("apt's `pkg-` marker: a hard dependency on one fails"),
    ),
    f("repo-packages", G(List), NeedsRpm(RPM_REPOS)),
    f("ostree-layers", T, Implemented),
    f("ostree-override-layers", T, Implemented),
    f(
        "container-cmd",
        G(StrList),
        Limited("not set: keelson does not export OCI images"),
    ),
    f("bootstrap_packages", T, Implemented), // deprecated: folded into packages
    f("recommends", T, Debian("apt's Install-Recommends")),
    f("units", T, Implemented),
    f("default-target", T, Implemented),
    f("default_target", T, Implemented),
    f("initramfs-args", T, Implemented),
    f("rpmdb", G(Str), NeedsRpm(RPMDB)),
    f("rpmdb-normalize", G(Bool), NeedsRpm(RPMDB)),
    f("selinux-label-version", G(Int), Limited(SELINUX)),
    f(
        "cliwrap",
        G(Bool),
        NeedsRpm("cliwrap wraps rpm and dracut for RPM-based hosts"),
    ),
    f(
        "cliwrap-binaries",
        G(StrList),
        NeedsRpm("cliwrap wraps rpm and dracut for RPM-based hosts"),
    ),
    f("readonly-executables", T, Implemented),
    f("remove-files", T, Implemented),
    f(
        "remove-from-packages",
        T,
        Debian("package names are dpkg's; regexes match its file lists"),
    ),
    f("preserve-passwd", T, Implemented),
    f("check-passwd", T, Implemented),
    f("check-groups", T, Implemented),
    f("ignore-removed-users", T, Implemented),
    f("ignore-removed-groups", T, Implemented),
    f("releasever", T, Implemented),
    f("automatic-version-prefix", T, Implemented),
    f("automatic_version_prefix", T, Implemented),
    f("automatic-version-suffix", T, Implemented),
    f("add-commit-metadata", T, Implemented),
    f("postprocess-script", T, Implemented),
    f("postprocess", T, Implemented),
    f("include", T, Implemented),
    f(
        "arch-include",
        T,
        Debian("Debian architecture names are aliases (amd64 = x86_64)"),
    ),
    f("conditional-include", T, Implemented),
    f(
        "container",
        G(Bool),
        Limited("only `false`: keelson composes bootable node trees"),
    ),
    f("add-files", T, Implemented),
    f("tmp-is-dir", T, Implemented),
    f("machineid-compat", T, Implemented),
    f(
        "platform-module",
        G(Str),
        NeedsRpm("platform modules are DNF modularity"),
    ),
    f("variables", T, Implemented),
    f("repo_metadata", G(Str), NeedsRpm("RPM repository metadata")),
    f("lockfile-repos", G(StrList), NeedsRpm(RPM_REPOS)),
    f(
        "repovars",
        T,
        Debian("`$name` / `${name}` in deb.mirror and deb.extra-sources URIs and suites"),
    ),
    f(
        "opt-usrlocal",
        G(Str),
        Limited("only `var`: /opt is a link to /var/opt, as on every keelson node"),
    ),
    // In rpm-ostree's struct, not (or no longer) in its docs.
    f("basearch", T, Implemented),
    f("modules", G(Map), NeedsRpm("DNF modularity")),
    f(
        "sysusers",
        G(Str),
        NeedsRpm(
            "rpm-ostree's sysusers conversion rewrites RPM scriptlets; keelson always writes sysusers.d from the tree's passwd and group",
        ),
    ),
    f(
        "no-initramfs",
        G(Bool),
        Limited("only `false`: every keelson tree boots with keelson's initramfs"),
    ),
    f("repo-metadata", G(Str), NeedsRpm("RPM repository metadata")),
    f(
        "advisories-metadata",
        G(Str),
        NeedsRpm("RPM update advisories"),
    ),
    f("base-refspec", G(Str), NeedsRpm(CLIENT)),
    f("container-image-reference", G(Str), NeedsRpm(CLIENT)),
    f("packages-local", G(Map), NeedsRpm(CLIENT)),
    f("packages-local-fileoverride", G(Map), NeedsRpm(CLIENT)),
    f("override-remove", G(StrList), NeedsRpm(CLIENT)),
    f("ex-override-replace", G(List), NeedsRpm(CLIENT)),
    f("override-replace-local", G(Map), NeedsRpm(CLIENT)),
    f("initramfs", G(Map), NeedsRpm(CLIENT)),
    f("custom", G(Map), NeedsRpm(CLIENT)),
    f("override-commit", G(Str), NeedsRpm(CLIENT)),
    f("unconfigured-state", G(Str), NeedsRpm(CLIENT)),
    // keelson's own.
    f("backend", T, Keelson),
    f("deb", T, Keelson),
    f("osname", T, Keelson),
];

/// Keys rpm-ostree has retired (rojig and its jigdo predecessor) but that
/// old files still carry: accepted with a warning and dropped.
pub const RETIRED: &[&str] = &["rojig", "ex-rojig-spec", "ex-jigdo-spec"];

/// rpm basearch names (dnf's list), with the Debian architecture names
/// that mean the same machine. `packages-<arch>` and `arch-include` accept both; the
/// flattened treefile uses the rpm name.
pub const ARCHES: &[(&str, &str)] = &[
    ("x86_64", "amd64"),
    ("aarch64", "arm64"),
    ("ppc64le", "ppc64el"),
    ("s390x", "s390x"),
    ("armhfp", "armhf"),
    ("i386", "i386"),
    ("riscv64", "riscv64"),
    ("loongarch64", "loong64"),
    ("ppc64", "ppc64"),
    ("ppc", "powerpc"),
    ("s390", "s390"),
    ("arm", "armel"),
    ("mips64el", "mips64el"),
    ("mipsel", "mipsel"),
    ("sparc64", "sparc64"),
    ("alpha", "alpha"),
    ("ia64", "ia64"),
];

/// The rpm basearch name for an rpm or Debian architecture name.
pub fn arch_name(name: &str) -> Option<&'static str> {
    ARCHES
        .iter()
        .find(|(rpm, deb)| *rpm == name || *deb == name)
        .map(|(rpm, _)| *rpm)
}

pub fn known_arches() -> String {
    ARCHES
        .iter()
        .map(|(r, d)| {
            if r == d {
                r.to_string()
            } else {
                format!("{r} ({d})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn lookup(key: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.key == key)
}

/// `comment`, `*-comment` and `comment-*`: notes in the file, not fields.
pub fn is_comment(key: &str) -> bool {
    key == "comment" || key.ends_with("-comment") || key.starts_with("comment-")
}

/// The known key closest to `key`, when one is close enough to be a typo.
pub fn suggest(key: &str) -> Option<&'static str> {
    let candidates = FIELDS
        .iter()
        .map(|f| f.key)
        .chain(["packages-x86_64", "packages-aarch64"]);
    candidates
        .map(|c| (strsim::damerau_levenshtein(key, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < key.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// What one top-level key of a file is.
#[derive(Debug)]
pub enum Key {
    Field(&'static Field),
    /// `packages-<arch>`, with the rpm basearch name.
    ArchPackages(&'static str),
    Comment,
    Retired,
    Unknown,
}

pub fn classify(key: &str) -> Key {
    if let Some(f) = lookup(key) {
        return Key::Field(f);
    }
    if is_comment(key) {
        return Key::Comment;
    }
    if RETIRED.contains(&key) {
        return Key::Retired;
    }
    if let Some(arch) = key.strip_prefix("packages-")
        && let Some(a) = arch_name(arch)
    {
        return Key::ArchPackages(a);
    }
    Key::Unknown
}

/// The message for a key [`classify`] calls unknown.
pub fn unknown_message(key: &str) -> String {
    if let Some(arch) = key.strip_prefix("packages-") {
        return format!(
            "unknown architecture {arch:?} in `packages-<arch>` (known: {})",
            known_arches()
        );
    }
    match suggest(key) {
        Some(s) => format!("unknown field `{key}`; did you mean `{s}`?"),
        None => format!("unknown field `{key}`"),
    }
}

/// The field table of `docs/treefile.md` (checked against this module by
/// a test, so the two cannot drift apart).
pub fn docs_table() -> String {
    let mut out = String::from("| field | keelson | notes |\n|---|---|---|\n");
    for f in FIELDS {
        let (what, note) = match f.support {
            Support::Implemented => ("implemented", ""),
            Support::Debian(n) => ("Debian meaning", n),
            Support::NeedsRpm(n) => ("needs an rpm backend", n),
            Support::Limited(n) => ("limited", n),
            Support::Keelson => ("keelson extension", ""),
        };
        out += &format!("| `{}` | {what} | {note} |\n", f.key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_table_is_current() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/treefile.md"))
            .unwrap();
        let (_, rest) = doc
            .split_once("<!-- fields:begin -->\n")
            .expect("begin marker");
        let (table, _) = rest.split_once("<!-- fields:end -->").expect("end marker");
        assert_eq!(
            table,
            docs_table(),
            "docs/treefile.md: regenerate the table from fields::docs_table()"
        );
    }

    #[test]
    fn classify_table() {
        let t: &[(&str, &str)] = &[
            ("packages", "field"),
            ("gpg_key", "field"),
            ("packages-x86_64", "arch x86_64"),
            ("packages-amd64", "arch x86_64"),
            ("packages-arm64", "arch aarch64"),
            ("packages-local", "field"),
            ("packages-bogus", "unknown"),
            ("comment", "comment"),
            ("install-langs-comment", "comment"),
            ("comment-packages-s390x", "comment"),
            ("rojig", "retired"),
            ("ex-jigdo-spec", "retired"),
            ("ex-rojig-spec", "retired"),
            ("pakages", "unknown"),
        ];
        for (key, want) in t {
            let got = match classify(key) {
                Key::Field(_) => "field".to_string(),
                Key::ArchPackages(a) => format!("arch {a}"),
                Key::Comment => "comment".into(),
                Key::Retired => "retired".into(),
                Key::Unknown => "unknown".into(),
            };
            assert_eq!(&got, want, "{key}");
        }
    }

    #[test]
    fn did_you_mean_table() {
        let t: &[(&str, Option<&str>)] = &[
            ("pakages", Some("packages")),
            ("exclude-package", Some("exclude-packages")),
            ("postproces", Some("postprocess")),
            ("defualt-target", Some("default-target")),
            ("install_langs", Some("install-langs")),
            ("conditional-includes", Some("conditional-include")),
            ("zzz", None),
            ("frobnicate-everything", None),
        ];
        for (key, want) in t {
            assert_eq!(suggest(key), *want, "{key}");
        }
        assert_eq!(
            unknown_message("pakages"),
            "unknown field `pakages`; did you mean `packages`?"
        );
        let m = unknown_message("packages-bogus");
        assert!(
            m.contains("\"bogus\"") && m.contains("x86_64 (amd64)"),
            "{m}"
        );
    }

    #[test]
    fn keys_are_unique() {
        let mut keys: Vec<&str> = FIELDS.iter().map(|f| f.key).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is listed twice");
    }
}
