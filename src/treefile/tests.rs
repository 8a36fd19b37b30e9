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
        ("noref.json", "noref.json: ref: missing"),
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
