//! rpm-ostree-shaped treefiles written for this repository (one in Fedora
//! CoreOS's multi-file YAML shape, one in CentOS Atomic Host's JSON shape)
//! flatten through `keelson compose --print-only` exactly as rpm-ostree's
//! rules give: the expected results (`tests/fixtures/compat/*.flat.json`)
//! were worked out by hand from rpm-ostree's merge code (later includes'
//! list items first, earlier includes win scalars, variables flow down,
//! conditional includes evaluated before includes). A real compose of
//! either refuses the RPM-only fields, each named with its reason.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

fn keelson(args: &[&str], treefile: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .arg(treefile)
        .output()
        .unwrap()
}

fn flatten(treefile: &Path) -> (serde_json::Value, String) {
    let out = keelson(
        &["compose", "--print-only", "--repo", "/nonexistent/repo"],
        treefile,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", treefile.display());
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

#[test]
fn fcos_style_yaml_manifest_flattens_as_rpm_ostree_does() {
    let (v, stderr) = flatten(&fixtures().join("fcos/manifest.yaml"));
    assert!(
        stderr.contains("rojig: retired rpm-ostree field, ignored"),
        "{stderr}"
    );
    assert!(
        stderr.contains("manifest.yaml: packages-comment: comment key, ignored"),
        "{stderr}"
    );
    if std::env::consts::ARCH != "x86_64" {
        return; // the expected result takes the x86_64 arch lists
    }
    assert_eq!(v, expected("fcos.flat.json"));
    // the points rpm-ostree's rules decide, spelled out
    assert_eq!(
        v["postprocess"].as_array().unwrap()[..3],
        ["echo ignition", "echo base", "echo fedora-coreos"],
        "later includes first, the includer last"
    );
    assert_eq!(
        v["ostree-layers"],
        serde_json::json!(["overlay/99dev", "overlay/05core"])
    );
    assert_eq!(v["ref"], "fedora/x86_64/coreos/testing-devel");
    let pkgs = v["packages"].as_array().unwrap();
    assert!(
        pkgs.contains(&"strace".into()),
        "prod == false included dev-tools"
    );
    assert!(!pkgs.contains(&"never-in-testing-devel".into()));
    assert!(pkgs.contains(&"microcode_ctl".into()) && !pkgs.contains(&"s390utils-core".into()));
}

#[test]
fn centos_atomic_style_json_flattens_as_rpm_ostree_does() {
    let (v, stderr) = flatten(&fixtures().join("centos-atomic/centos-atomic-host.json"));
    for w in [
        "bootstrap_packages: deprecated",
        "boot-location: `new` is deprecated",
        "ex-jigdo-spec: retired",
    ] {
        assert!(stderr.contains(w), "missing warning {w}: {stderr}");
    }
    assert_eq!(v, expected("centos-atomic.flat.json"));
    assert_eq!(
        v["check-passwd"]["type"], "file",
        "the includer wins a scalar"
    );
    assert_eq!(
        v["units"],
        serde_json::json!(["sshd.service", "docker.socket", "cloud-init.service"])
    );
}

/// A real compose stops before any package work, naming every field the
/// deb backend cannot honour; nothing is written.
#[test]
fn composing_them_on_the_deb_backend_names_each_rpm_only_field() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let out = keelson(
        &["compose", "--repo", repo.to_str().unwrap()],
        &fixtures().join("fcos/manifest.yaml"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "manifest.yaml: repos: RPM repositories need an rpm backend; Debian sources go in `deb`",
        "manifest.yaml: selinux: only `false`",
    ] {
        assert!(stderr.contains(want), "missing {want}:\n{stderr}");
    }
    assert!(!repo.exists(), "nothing written");
}

/// The flattened output is itself a treefile that flattens to the same
/// result, read as JSON and as YAML.
#[test]
fn flattened_output_round_trips_as_json_and_yaml() {
    let d = tempfile::tempdir().unwrap();
    for (dir, top) in [
        ("fcos", "manifest.yaml"),
        ("centos-atomic", "centos-atomic-host.json"),
    ] {
        let (v, _) = flatten(&fixtures().join(dir).join(top));
        // Paths in the flattened treefile are relative to the top file's
        // directory: the copies are written into a scratch copy of it.
        let scratch = d.path().join(dir);
        copy_dir(&fixtures().join(dir), &scratch);
        for ext in ["json", "yaml"] {
            let p = scratch.join(format!("flat.{ext}"));
            let text = if ext == "json" {
                serde_json::to_string(&v).unwrap()
            } else {
                serde_saphyr::to_string(&v).unwrap()
            };
            std::fs::write(&p, text).unwrap();
            let (again, _) = flatten(&p);
            assert_eq!(again, v, "{dir}/{top} read back from flat.{ext}");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
