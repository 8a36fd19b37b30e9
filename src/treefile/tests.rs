//! Loader tests: includes on disk, arch handling, variables, error messages.

use super::*;
use fs_err as fs;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

fn load_err(path: &Path) -> String {
    format!("{:#}", Treefile::load(path).unwrap_err())
}

#[test]
fn include_merge_order_and_rebased_paths() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "base/base.json",
        r#"{"ref":"base/ref","packages":["systemd  udev","dbus"],
            "postprocess":["echo base"],"add-files":[["f/one","/etc/one"]],
            "recommends":false,"units":["a.service"]}"#,
    );
    write(d.path(), "base/f/one", "1");
    let top = write(
        d.path(),
        "node.json",
        r#"{"include":"base/base.json","ref":"node/${basearch}",
            "packages":["containerd","dbus"],"postprocess":["echo node"],
            "units":["b.service"],"packages-x86_64":["x86pkg"],
            "packages-aarch64":["armpkg"]}"#,
    );
    let t = Treefile::load(&top).unwrap();
    assert_eq!(t.ref_, format!("node/{}", basearch()));
    let pkgs: Vec<&str> = t.packages.iter().map(String::as_str).collect();
    if basearch() == "x86_64" {
        assert_eq!(pkgs, ["containerd", "dbus", "systemd", "udev", "x86pkg"]);
    }
    assert_eq!(t.postprocess, ["echo base", "echo node"]);
    assert_eq!(t.units, ["a.service", "b.service"]);
    assert!(!t.recommends.get(), "included scalar fills a gap");
    assert_eq!(
        t.add_files,
        [("base/f/one".to_string(), "/etc/one".to_string())]
    );
    assert!(t.referenced_files()[0].ends_with("base/f/one"));
}

#[test]
fn arch_include_and_variables() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "arch.json", r#"{"packages":["archonly"]}"#);
    write(d.path(), "other.json", r#"{"packages":["never"]}"#);
    let top = write(
        d.path(),
        "t.json",
        &format!(
            r#"{{"ref":"os/${{releasever}}/${{flavour}}","releasever":12,
                "variables":{{"flavour":"node"}},
                "arch-include":{{"{}":"arch.json","s390x":"other.json"}},
                "automatic-version-prefix":"${{releasever}}",
                "add-commit-metadata":{{"k":"${{flavour}}-x","n":3}}}}"#,
            basearch()
        ),
    );
    let t = Treefile::load(&top).unwrap();
    assert_eq!(t.ref_, "os/12/node");
    assert!(t.packages.contains("archonly"));
    assert!(!t.packages.contains("never"));
    assert_eq!(t.automatic_version_prefix.as_deref(), Some("12"));
    assert_eq!(t.add_commit_metadata["k"], "node-x");
    assert_eq!(t.add_commit_metadata["n"], 3);
}

#[test]
fn canonical_json_is_stable() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.json", r#"{"ref":"r","packages":["b","a"]}"#);
    let b = write(d.path(), "b.json", r#"{"packages":["a","b"],"ref":"r"}"#);
    let ja = Treefile::load(&a).unwrap().canonical_json();
    let jb = Treefile::load(&b).unwrap().canonical_json();
    assert_eq!(ja, jb);
}

/// Every loader-level error names the file and the field.
#[test]
fn loader_errors_name_file_and_field() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(p, "cyc-a.json", r#"{"ref":"r","include":"cyc-b.json"}"#);
    write(p, "cyc-b.json", r#"{"include":"cyc-a.json"}"#);
    write(p, "self.json", r#"{"ref":"r","include":"self.json"}"#);
    write(p, "leaf.json", r#"{"packages":["a"]}"#);
    write(
        p,
        "twice.json",
        r#"{"ref":"r","include":["leaf.json","leaf.json"]}"#,
    );
    write(
        p,
        "missing.json",
        r#"{"ref":"r","include":["leaf.json","nope.json"]}"#,
    );
    write(
        p,
        "badchild.json",
        r#"{"ref":"r","include":"child-bad.json"}"#,
    );
    write(p, "child-bad.json", r#"{"packages":["a",{"x":1}]}"#);
    write(p, "noref.json", r#"{"packages":["a"]}"#);
    write(p, "badvar.json", r#"{"ref":"os/${nope}"}"#);
    write(p, "badref.json", r#"{"ref":"os//x"}"#);
    write(
        p,
        "excl.json",
        r#"{"ref":"r","packages":["a"],"exclude-packages":["a"]}"#,
    );
    write(
        p,
        "rpm.json",
        r#"{"ref":"r","backend":"rpm","repos":["fedora"]}"#,
    );
    write(
        p,
        "nosrc.json",
        r#"{"ref":"r","add-files":[["files/none","/etc/x"]]}"#,
    );
    write(
        p,
        "noscript.json",
        r#"{"ref":"r","postprocess-script":"post.sh"}"#,
    );
    let table: &[(&str, &str)] = &[
        ("cyc-a.json", "cyc-a.json: include: cycle ("),
        ("self.json", "self.json: include: cycle"),
        (
            "twice.json",
            "leaf.json: include: file is included more than once",
        ),
        ("missing.json", "missing.json: include[1]: included file"),
        ("badchild.json", "child-bad.json: packages[1]: invalid type"),
        ("badvar.json", "badvar.json: ref: unknown variable ${nope}"),
        (
            "badref.json",
            "badref.json: ref: \"os//x\" is not a valid ostree ref",
        ),
        (
            "excl.json",
            "excl.json: exclude-packages: \"a\" is both requested",
        ),
        (
            "rpm.json",
            "rpm.json: backend: the rpm backend is not implemented yet",
        ),
        ("nosrc.json", "nosrc.json: add-files[0][0]: "),
        ("noscript.json", "noscript.json: postprocess-script: "),
    ];
    for (file, want) in table {
        let got = load_err(&p.join(file));
        assert!(got.contains(want), "{file}\n got: {got}\nwant: …{want}…");
        assert!(!got.contains('\n'), "one line: {got}");
    }
    let t = Treefile::load(&p.join("noref.json")).expect("flattens without a ref");
    let e = format!("{:#}", t.check_compose("noref.json").unwrap_err());
    assert_eq!(e, "noref.json: ref: missing (the branch to commit to)");
    let got = load_err(&p.join("does-not-exist.json"));
    assert!(
        got.contains("does-not-exist.json: cannot open treefile"),
        "{got}"
    );
}

#[test]
fn depth_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..40 {
        write(
            d.path(),
            &format!("{i}.json"),
            &format!(r#"{{"include":"{}.json"}}"#, i + 1),
        );
    }
    write(d.path(), "40.json", r#"{"ref":"r"}"#);
    let got = load_err(&d.path().join("0.json"));
    assert!(
        got.contains("include: nesting deeper than 32 files"),
        "{got}"
    );
}

#[test]
fn relative_path_table() {
    let t = [
        ("/a/b", "/a/b", ""),
        ("/a/b", "/a/b/c", "c"),
        ("/a/b", "/a/x", "../x"),
        ("/a/b/c", "/d", "../../../d"),
    ];
    for (from, to, want) in t {
        assert_eq!(
            relative_path(Path::new(from), Path::new(to)),
            PathBuf::from(want)
        );
    }
}

/// JSON including YAML including JSON; conditional includes over variables
/// that flow down from the top; an inline conditional treefile.
#[test]
fn mixed_formats_and_conditional_include() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(
        p,
        "top.json",
        r#"{"ref":"os/${stream}","variables":{"stream":"stable","dev":false},
            "include":"m/base.yaml","packages":["top"]}"#,
    );
    write(
        p,
        "m/base.yaml",
        "variables:\n  stream: ignored-the-includer-wins\n  level: 3\nreleasever: 12\n\
         include: leaf.json\n\
         conditional-include:\n\
         \x20 - if: stream == \"stable\"\n    include: stable.yaml\n\
         \x20 - if:\n      - dev == true\n      - level > 1\n    include: [dev.yaml]\n\
         \x20 - if: releasever >= 12\n    include:\n      packages: [inline-pkg]\n      postprocess: [echo inline]\n\
         postprocess: [echo base]\n",
    );
    write(
        p,
        "m/leaf.json",
        r#"{"packages":["leaf"],"postprocess":["echo leaf"]}"#,
    );
    write(p, "m/stable.yaml", "packages: [stable-only]\n");
    write(p, "m/dev.yaml", "packages: [dev-only]\n");
    let t = Treefile::load(&p.join("top.json")).unwrap();
    assert_eq!(t.ref_, "os/stable");
    let pkgs: Vec<&str> = t.packages.iter().map(String::as_str).collect();
    assert_eq!(pkgs, ["inline-pkg", "leaf", "stable-only", "top"]);
    assert_eq!(t.postprocess, ["echo leaf", "echo inline", "echo base"]);
}

/// rpm-ostree merges include 1, then 2 into the includer: the later
/// include's list items come first and the earlier include wins scalars.
#[test]
fn several_includes_merge_as_rpm_ostree_does() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(
        p,
        "manifest.yaml",
        "ref: r\ninclude: [kernel.yaml, bootupd.yaml]\npostprocess: [echo foo]\n",
    );
    write(
        p,
        "kernel.yaml",
        "postprocess: [echo bar]\ndefault-target: a.target\n",
    );
    write(
        p,
        "bootupd.yaml",
        "postprocess: [echo baz]\ndefault-target: b.target\n",
    );
    let t = Treefile::load(&p.join("manifest.yaml")).unwrap();
    // the order rpm-ostree's docs give: baz, bar, then foo
    assert_eq!(t.postprocess, ["echo baz", "echo bar", "echo foo"]);
    assert_eq!(t.default_target.as_deref(), Some("a.target"));
}

/// Every error in every file, one line each, then a non-zero exit.
#[test]
fn all_errors_across_includes_in_one_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(
        p,
        "top.yaml",
        "ref: r\ninclude: [a.yaml, missing.yaml]\npakages: [x]\n\
         conditional-include:\n  - if: nope == 1\n    include: a2.yaml\n",
    );
    write(
        p,
        "a.yaml",
        "packages: [1, {x: 2}]\npostproces: [x]\npackages-bogus: [y]\n",
    );
    let e = load_err(&p.join("top.yaml"));
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines[0].ends_with("top.yaml: 6 errors in the treefile and its includes:"),
        "{e}"
    );
    for want in [
        "top.yaml: pakages: unknown field `pakages`; did you mean `packages`?",
        "top.yaml: conditional-include[0].if[0]: undefined variable `nope`",
        "top.yaml: include[1]: included file",
        "a.yaml: packages[0]: invalid type",
        "a.yaml: postproces: unknown field `postproces`; did you mean `postprocess`?",
        "a.yaml: packages-bogus: unknown architecture \"bogus\"",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "missing {want}:\n{e}"
        );
    }
}

/// `--print-only` output read back flattens to the same treefile.
#[test]
fn flattened_output_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(p, "f/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    write(
        p,
        "top.yaml",
        "ref: os/${releasever}\nreleasever: 12\ninclude: f/base.json\n\
         packages: ['a b']\npackages-amd64: [deb-arch]\nrepos: [fedora]\nrpmdb: target\n\
         metadata: {summary: \"os ${releasever}\"}\ninstall-langs: [en_US]\n\
         check-passwd: {type: file, filename: f/passwd}\nedition: \"2024\"\n",
    );
    write(
        p,
        "f/base.json",
        r#"{"repos":["updates"],"packages":["base"],"bootstrap_packages":["boot"],
            "ostree-layers":["overlay/1"],"modules":{"enable":["a:1"]}}"#,
    );
    let t = Treefile::load(&p.join("top.yaml")).unwrap();
    let v = t.value();
    assert_eq!(v["repos"], serde_json::json!(["updates", "fedora"]));
    assert_eq!(v["metadata"]["summary"], "os 12");
    assert_eq!(v["tmp-is-dir"], true, "edition 2024 default");
    assert!(t.packages.contains("boot") && t.packages.contains("a"));
    if basearch() == "x86_64" {
        assert!(
            t.packages.contains("deb-arch"),
            "Debian arch names are aliases"
        );
    }
    for name in ["again.json", "again.yaml"] {
        let text = if name.ends_with(".json") {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_saphyr::to_string(&v).unwrap()
        };
        let again = write(p, name, &text);
        let t2 = Treefile::load(&again).unwrap();
        assert_eq!(t2.canonical_json(), t.canonical_json(), "{name}");
    }
    // a deb compose refuses the RPM-only fields, all at once, naming each
    let e = format!("{:#}", t.check_compose("top.yaml").unwrap_err());
    for want in [
        "top.yaml: repos: RPM repositories need an rpm backend; Debian sources go in `deb`",
        "top.yaml: rpmdb: the RPM database needs an rpm backend",
        "top.yaml: modules: DNF modularity",
    ] {
        assert!(e.contains(want), "missing {want}:\n{e}");
    }
}
