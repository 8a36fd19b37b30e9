//! The real compose of the default treefile, end to end: mmdebstrap from
//! the host's apt sources, dracut inside the tree, libostree commit. Then
//! the commit is deployed with `ostree admin` into a scratch sysroot, a
//! recompose with unchanged inputs must write nothing, and a compose into a
//! second fresh repo must give the same commit checksum.
//!
//! Needs root, mmdebstrap, bubblewrap, ostree and the host's Debian mirror
//! (`.ci/run` installs them). Downloaded packages are cached in
//! `target/keelson-test-cache` (or $KEELSON_TEST_CACHE) across runs.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{cache, manifest, run as sh};

const SDE: &str = "1700000000";

fn compose(repo: &Path, json: &Path) -> serde_json::Value {
    sh(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .env("SOURCE_DATE_EPOCH", SDE)
        .arg("compose")
        .arg(manifest().join("treefiles/k8s-node.json"))
        .arg("--repo")
        .arg(repo)
        .arg("--cachedir")
        .arg(cache())
        .arg("--write-composejson-to")
        .arg(json));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn ostree(repo: &Path, args: &[&str]) -> String {
    sh(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(args))
}

fn object_count(repo: &Path) -> usize {
    walkdir(repo.join("objects"))
}

fn walkdir(p: PathBuf) -> usize {
    std::fs::read_dir(&p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        walkdir(e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn compose_default_treefile_deploy_noop_and_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let first = compose(&repo, &d.path().join("c1.json"));
    let reference = first["ref"].as_str().unwrap().to_string();
    let commit = first["commit"].as_str().unwrap().to_string();
    assert_eq!(first["changed"], true);
    assert_eq!(first["version"], "12");

    // The repo is sound and the tree has ostree's layout.
    let fsck = ostree(&repo, &["fsck"]);
    assert!(fsck.contains("no errors found"), "{fsck}");
    let top = ostree(&repo, &["ls", &reference, "/"]);
    assert!(
        !top.lines().any(|l| l.ends_with(" /etc")),
        "no /etc at the top:\n{top}"
    );
    assert!(
        top.contains("/home -> var/home") && top.contains("/ostree -> sysroot/ostree"),
        "{top}"
    );
    let usr_etc = ostree(
        &repo,
        &[
            "ls",
            &reference,
            "/usr/etc/os-release",
            "/usr/etc/machine-id",
        ],
    );
    assert!(
        usr_etc.contains(" 0 /usr/etc/machine-id"),
        "empty machine-id: {usr_etc}"
    );
    let var = ostree(&repo, &["ls", &reference, "/var"]);
    assert_eq!(var.lines().count(), 1, "/var must be empty:\n{var}");
    let boot = ostree(&repo, &["ls", &reference, "/boot"]);
    assert_eq!(boot.lines().count(), 1, "/boot must be empty:\n{boot}");
    let modules = ostree(&repo, &["ls", &reference, "/usr/lib/modules"]);
    let kver = modules
        .lines()
        .nth(1)
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let kfiles = ostree(
        &repo,
        &[
            "ls",
            &reference,
            &format!("/usr/lib/modules/{kver}/vmlinuz"),
            &format!("/usr/lib/modules/{kver}/initramfs.img"),
            "/usr/bin/keelson",
            "/usr/lib/sysimage/dpkg/status",
            "/usr/lib/sysusers.d/keelson-compose.conf",
            "/usr/lib/tmpfiles.d/keelson-var.conf",
        ],
    );
    assert_eq!(kfiles.lines().count(), 6, "{kfiles}");
    // No machine-specific secrets.
    let ssh = ostree(&repo, &["ls", &reference, "/usr/etc/ssh"]);
    assert!(
        !ssh.contains("ssh_host_"),
        "host keys must not ship:\n{ssh}"
    );
    // The embedded agent is this very binary.
    let agent = ostree(&repo, &["cat", &reference, "/usr/bin/keelson"]);
    assert!(!agent.is_empty());
    // Metadata.
    let meta = ostree(
        &repo,
        &["show", "--print-metadata-key=ostree.linux", &reference],
    );
    assert!(meta.contains(&kver), "{meta}");
    let hash = ostree(
        &repo,
        &["show", "--print-metadata-key=keelson.inputhash", &reference],
    );
    assert!(
        hash.contains(first["inputhash"].as_str().unwrap()),
        "{hash}"
    );
    let pkgs = ostree(
        &repo,
        &["show", "--print-metadata-key=keelson.packages", &reference],
    );
    assert!(pkgs.contains("containerd:amd64="), "{pkgs}");

    // Deploy with ostree admin into a scratch sysroot, as on a host.
    let sysroot = d.path().join("sysroot");
    std::fs::create_dir_all(&sysroot).unwrap();
    let sr = format!("--sysroot={}", sysroot.display());
    sh(Command::new("ostree")
        .args(["admin", "init-fs"])
        .arg(&sysroot));
    sh(Command::new("ostree").args(["admin", "os-init", &sr, "keelson"]));
    ostree(
        &sysroot.join("ostree/repo"),
        &["pull-local", repo.to_str().unwrap(), &reference],
    );
    sh(Command::new("ostree").args([
        "admin",
        "deploy",
        &sr,
        "--os=keelson",
        "--karg=root=LABEL=root",
        &reference,
    ]));
    let status = sh(Command::new("ostree").args(["admin", "status", &sr]));
    assert!(status.contains(&commit), "{status}");
    let deploy = sysroot.join(format!("ostree/deploy/keelson/deploy/{commit}.0"));
    assert!(
        deploy.join("etc/os-release").exists(),
        "/etc merged from /usr/etc"
    );
    let entries: Vec<_> = std::fs::read_dir(sysroot.join("boot/loader/entries"))
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1, "one BLS entry");
    // ostree admin deploy marks deployments immutable; let the tempdir go.
    let _ = Command::new("chattr").arg("-i").arg(&deploy).status();

    // Unchanged inputs: nothing written.
    let before = object_count(&repo);
    let again = compose(&repo, &d.path().join("c2.json"));
    assert_eq!(again["changed"], false);
    assert_eq!(again["commit"], commit.as_str());
    assert_eq!(ostree(&repo, &["rev-parse", &reference]).trim(), commit);
    assert_eq!(
        object_count(&repo),
        before,
        "a no-op compose must write no objects"
    );

    // Same inputs, fresh repo: same commit checksum.
    let repo2 = d.path().join("repo2");
    let second = compose(&repo2, &d.path().join("c3.json"));
    assert_eq!(
        second["commit"],
        commit.as_str(),
        "composes must be reproducible"
    );
}
