//! Helpers shared by integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Package cache shared by the tests that compose (kept across runs).
pub fn cache() -> PathBuf {
    std::env::var_os("KEELSON_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/keelson-test-cache"))
}

/// Run `cmd`, fail the test with its output unless it succeeds; stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway GPG signing key in `home`; returns its fingerprint and the
/// exported public key file.
pub fn gpg_key(home: &Path) -> (String, PathBuf) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let generated = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "keelson test <test@keelson.invalid>",
            "rsa2048",
            "sign",
            "never",
        ])
        .output()
        .expect("gpg");
    assert!(
        generated.status.success(),
        "gpg key generation: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let keys = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--list-keys", "--with-colons"])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout);
    let fpr = keys
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    let exported = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--export", &fpr])
        .output()
        .unwrap();
    let pubkey = home.with_extension("pub.gpg");
    std::fs::write(&pubkey, exported.stdout).unwrap();
    (fpr, pubkey)
}
