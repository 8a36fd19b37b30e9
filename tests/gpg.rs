//! Signed updates: `keelson commit --gpg-sign` signs inside the
//! transaction, and a remote configured the way `keelson image
//! --gpg-keyring` configures the node's (gpg-verify=true plus the imported
//! key) accepts that commit and refuses an unsigned one. Needs gpg and the
//! ostree CLI; no root.

use std::process::Command;

mod common;
use common::ostree;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(cmd: &mut Command) -> String {
    let (s, out) = run(cmd);
    assert!(s, "{cmd:?}:\n{out}");
    out
}

#[test]
fn signed_commits_pass_and_unsigned_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("gnupg");
    let (fpr, pubkey) = common::gpg_key(&home);

    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("usr/bin/x"), "x").unwrap();
    let src = d.path().join("src");
    ok(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["commit", "--repo"])
        .arg(&src)
        .args(["-b", "os/stable", "--gpg-sign", &fpr, "--gpg-homedir"])
        .arg(&home)
        .arg(&tree));
    let shown = ok(ostree(&src)
        .args(["show", "os/stable", "--gpg-homedir"])
        .arg(&home));
    assert!(shown.contains("Found 1 signature"), "{shown}");

    // The node's side: a remote with gpg-verify and the imported key.
    let node = d.path().join("node");
    ok(ostree(&node).args(["init", "--mode=bare-user"]));
    ok(ostree(&node)
        .args(["remote", "add", "--set=gpg-verify=true"])
        .arg(format!("--gpg-import={}", pubkey.display()))
        .arg("updates")
        .arg(format!("file://{}", src.display()))
        .arg("os/stable"));
    ok(ostree(&node).args(["pull", "updates", "os/stable"]));

    // An unsigned commit on the same ref is refused.
    std::fs::write(tree.join("usr/bin/x"), "tampered").unwrap();
    ok(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["commit", "--repo"])
        .arg(&src)
        .args(["-b", "os/stable"])
        .arg(&tree));
    let (pulled, out) = run(ostree(&node).args(["pull", "updates", "os/stable"]));
    assert!(!pulled, "an unsigned commit must be refused");
    assert!(out.contains("GPG") && out.contains("signature"), "{out}");

    // Signing with an unknown key fails and leaves the ref alone.
    let before = ok(ostree(&src).args(["rev-parse", "os/stable"]));
    let (signed, out) = run(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["commit", "--repo"])
        .arg(&src)
        .args([
            "-b",
            "os/stable",
            "--gpg-sign",
            "0000DEADBEEF",
            "--gpg-homedir",
        ])
        .arg(&home)
        .arg(&tree));
    assert!(!signed && out.contains("--gpg-sign 0000DEADBEEF"), "{out}");
    assert_eq!(ok(ostree(&src).args(["rev-parse", "os/stable"])), before);
}
