//! Parser tests: types, aliases, every error naming file and field.

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
            r#"{"install-langs":["en US"]}"#,
            "t.json: install-langs[0]: \"en US\" is not a locale name",
        ),
        (
            r#"{"check-passwd":{"type":"file"}}"#,
            "t.json: check-passwd: missing field `filename`",
        ),
        (
            r#"{"check-passwd":{"type":"shadow"}}"#,
            "t.json: check-passwd.type: unknown variant `shadow`",
        ),
        (
            r#"{"check-groups":{"type":"data","entries":{"adm":[3,4]}}}"#,
            "t.json: check-groups.entries.adm: a group has one id",
        ),
        (
            r#"{"conditional-include":[{"if":"x ~ 1","include":"a.yaml"}]}"#,
            "t.json: conditional-include[0].if[0]: \"x ~ 1\": expected one of",
        ),
        (
            r#"{"pakages":["a"]}"#,
            "t.json: pakages: unknown field `pakages`; did you mean `packages`?",
        ),
        (
            r#"{"packages-bogus":["a"]}"#,
            "t.json: packages-bogus: unknown architecture \"bogus\"",
        ),
        (
            r#"{"repos":"fedora"}"#,
            "t.json: repos: invalid type: expected a list of strings",
        ),
        (
            r#"{"automatic-version-suffix":"--"}"#,
            "t.json: automatic-version-suffix: \"--\" must be a single ASCII character",
        ),
        (
            r#"{"edition":"2025"}"#,
            "t.json: edition: unknown variant `2025`",
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
        (r#"["a"]"#, "t.json: a treefile must be a mapping of fields"),
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

#[test]
fn yaml_and_json_read_alike() {
    let yaml = "# FCOS style\nref: os/${basearch}\npackages:\n  - a b\n  - c\nrecommends: false\ncheck-passwd:\n  type: data\n  entries:\n    bin: 1\n    adm: [3, 4]\n";
    let json = r#"{"ref":"os/${basearch}","packages":["a b","c"],"recommends":false,
        "check-passwd":{"type":"data","entries":{"bin":1,"adm":[3,4]}}}"#;
    let y = parse("t.yaml", yaml).unwrap();
    let j = parse("t.json", json).unwrap();
    assert_eq!(y, j);
}

#[test]
fn yaml_errors_name_line_and_hint_json_names() {
    let e = format!(
        "{:#}",
        parse("m.yaml", "ref: a\npackages: [a, b\n").unwrap_err()
    );
    assert_eq!(
        e,
        "m.yaml: invalid YAML: line 2 column 11: unclosed bracket '['"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let e = format!(
        "{:#}",
        parse("m.json", "ref: a\npackages:\n  - a\n").unwrap_err()
    );
    assert!(
        e.contains("invalid JSON") && e.contains("looks like YAML"),
        "{e}"
    );
    // broken JSON is not taken for YAML
    let e = format!("{:#}", parse("m.json", "\"ref\": \"a\"\n").unwrap_err());
    assert!(!e.contains("YAML"), "{e}");
}

/// Every bad key in a file is reported, not just the first.
#[test]
fn all_errors_of_a_file() {
    let p = parse_file(
        "t.yaml",
        "pakages: [a]\nrecommends: yes-please\nremove-files: [/etc/x]\nunits: 3\nref: r\n",
    );
    let want = [
        "t.yaml: pakages: unknown field `pakages`; did you mean `packages`?",
        "t.yaml: recommends: invalid type",
        "t.yaml: units: invalid type",
        "t.yaml: remove-files[0]: \"/etc/x\" must be relative",
    ];
    assert_eq!(p.errors.len(), want.len(), "{:#?}", p.errors);
    for w in want {
        assert!(
            p.errors.iter().any(|e| e.starts_with(w)),
            "missing {w}: {:#?}",
            p.errors
        );
    }
}

#[test]
fn comments_and_retired_keys_warn() {
    let p = parse_file(
        "t.json",
        r#"{"ref":"r","comment":"x","install-langs-comment":"y","comment-packages":"z",
            "rojig":{"name":"n","summary":"s","license":"MIT"},"ex-jigdo-spec":"f.spec"}"#,
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.warnings.len(), 5, "{:?}", p.warnings);
    let w = p.warnings.join("\n");
    assert!(
        w.contains("t.json: rojig: retired rpm-ostree field, ignored"),
        "{w}"
    );
    assert!(
        w.contains("t.json: install-langs-comment: comment key, ignored"),
        "{w}"
    );
}

/// Every field of the table is accepted by the parser with a value of its
/// kind, and a typed field really is a Fragment field (and a generic one
/// is not), so the table and the struct cannot drift apart.
#[test]
fn every_field_in_the_table_parses() {
    use crate::treefile::fields::{FIELDS, Shape, Store};
    let typed_samples: &[(&str, &str)] = &[
        ("edition", r#""2024""#),
        ("ref", r#""r""#),
        ("metadata", r#"{"a":1}"#),
        ("gpg-key", r#""K""#),
        ("gpg_key", r#""K""#),
        ("selinux", "false"),
        ("boot-location", r#""modules""#),
        ("boot_location", r#""modules""#),
        ("etc-group-members", r#"["wheel"]"#),
        ("install-langs", r#"["en_US"]"#),
        ("mutate-os-release", r#""12""#),
        ("documentation", "false"),
        ("packages", r#"["a"]"#),
        ("exclude-packages", r#"["b"]"#),
        ("ostree-layers", r#"["l/1"]"#),
        ("ostree-override-layers", r#"["l/2"]"#),
        ("bootstrap_packages", r#"["c"]"#),
        ("recommends", "false"),
        ("units", r#"["u.service"]"#),
        ("default-target", r#""multi-user.target""#),
        ("default_target", r#""multi-user.target""#),
        ("initramfs-args", r#"["--omit","x"]"#),
        ("readonly-executables", "true"),
        ("remove-files", r#"["usr/x"]"#),
        ("remove-from-packages", r#"[["p","/usr/x"]]"#),
        ("preserve-passwd", "false"),
        ("check-passwd", r#"{"type":"none"}"#),
        ("check-groups", r#"{"type":"previous"}"#),
        ("ignore-removed-users", r#"["*"]"#),
        ("ignore-removed-groups", r#"["g"]"#),
        ("releasever", "12"),
        ("automatic-version-prefix", r#""1""#),
        ("automatic_version_prefix", r#""1""#),
        ("automatic-version-suffix", r#""-""#),
        ("add-commit-metadata", r#"{"k":"v"}"#),
        ("postprocess-script", r#""p.sh""#),
        ("postprocess", r#"["true"]"#),
        ("include", r#""a.json""#),
        ("arch-include", r#"{"x86_64":"a.json"}"#),
        (
            "conditional-include",
            r#"[{"if":"a == 1","include":"a.json"}]"#,
        ),
        ("add-files", r#"[["a","/etc/a"]]"#),
        ("tmp-is-dir", "true"),
        ("machineid-compat", "false"),
        ("variables", r#"{"a":1}"#),
        ("repovars", r#"{"stream":"stable"}"#),
        ("basearch", r#""x86_64""#),
        ("backend", r#""deb""#),
        ("deb", r#"{"suite":"bookworm"}"#),
        ("osname", r#""keelson""#),
    ];
    for f in FIELDS {
        let sample = match f.store {
            Store::Typed => typed_samples
                .iter()
                .find(|(k, _)| *k == f.key)
                .unwrap_or_else(|| panic!("no sample for typed field {}", f.key))
                .1
                .to_string(),
            Store::Generic(Shape::Bool) => "true".into(),
            Store::Generic(Shape::Str) => r#""x""#.into(),
            Store::Generic(Shape::Int) => "1".into(),
            Store::Generic(Shape::StrList) => r#"["x"]"#.into(),
            Store::Generic(Shape::Map) => r#"{"x":1}"#.into(),
            Store::Generic(Shape::List) => r#"[{"x":1}]"#.into(),
        };
        let text = format!("{{\"{}\":{sample}}}", f.key);
        let p = parse_file("t.json", &text);
        assert!(p.errors.is_empty(), "{}: {:?}", f.key, p.errors);
        let direct: Result<Fragment, _> = serde_json::from_str(&text);
        assert_eq!(
            direct.is_ok(),
            f.store == Store::Typed,
            "{}: the table says {:?}, the struct disagrees",
            f.key,
            f.store
        );
    }
}
