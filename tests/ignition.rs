//! Ignition configs at keelson's entry points, through the real command
//! line: the shipped examples pass; a broken config (bad JSON, an unknown
//! field, an unsupported version) is refused naming the problem before
//! anything runs or is written. Needs `ignition-validate` (package
//! ignition, from scripts/install-deps.sh); no root, no network.

use std::path::Path;
use std::process::Command;

mod common;
use common::manifest;

fn keelson(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .output()
        .expect("run keelson");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_examples_are_valid() {
    let dir = manifest().join("examples/ignition");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ign") {
            keelson::provision::ignition::load_file(&p)
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "no examples in {}", dir.display());
}

/// The keelson configuration fragments the examples drop are valid
/// keelson configuration (each parsed on its own, as a node would).
#[test]
fn example_fragments_are_valid_keelson_config() {
    let dir = manifest().join("examples/ignition");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        for f in cfg["storage"]["files"].as_array().into_iter().flatten() {
            let path = f["path"].as_str().unwrap();
            if !path.starts_with("/etc/keelson/config.d/") {
                continue;
            }
            let src = f["contents"]["source"].as_str().unwrap();
            let text = common::percent_decode(src.strip_prefix("data:,").unwrap());
            keelson::node::config::from_fragments(&[(path.to_string(), text)])
                .unwrap_or_else(|e| panic!("{}: {path}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected fragments in the examples");
}

#[test]
fn broken_configs_are_refused_naming_the_problem() {
    let d = tempfile::tempdir().unwrap();
    // `keelson vm` checks the config before QEMU starts: a stand-in disk.
    let image = d.path().join("disk.raw");
    std::fs::write(&image, [0u8; 512]).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "badjson.ign",
            r#"{"ignition":{"version":"3.3.0"}"#,
            "unexpected end of JSON input",
        ),
        (
            "unknown.ign",
            r#"{"ignition":{"version":"3.3.0"},"passwd":{"user":[{"name":"core"}]}}"#,
            "error at $.passwd.user, line 1 col 43: unknown field user",
        ),
        (
            "version.ign",
            r#"{"ignition":{"version":"9.9.0"}}"#,
            "unsupported config version",
        ),
        (
            "badfield.ign",
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"relative/x"}]}}"#,
            "$.storage.files.0.path",
        ),
    ];
    for (name, text, want) in cases {
        let f = d.path().join(name);
        std::fs::write(&f, text).unwrap();
        let (ok, err) = keelson(&[
            "vm",
            image.to_str().unwrap(),
            "--ignition",
            f.to_str().unwrap(),
            "--serial-log",
            d.path().join("serial.log").to_str().unwrap(),
        ]);
        assert!(!ok, "{name}: accepted");
        assert!(
            err.contains(&format!("{}: not a valid Ignition config", f.display()))
                && err.contains(want),
            "{name}: want {want:?} in:\n{err}"
        );
        assert!(
            !d.path().join("serial.log").exists(),
            "{name}: QEMU was started"
        );
    }
}

#[test]
fn ssh_key_must_be_a_public_key() {
    let d = tempfile::tempdir().unwrap();
    let image = d.path().join("disk.raw");
    std::fs::write(&image, [0u8; 512]).unwrap();
    let key = d.path().join("id.pub");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let (ok, err) = keelson(&[
        "vm",
        image.to_str().unwrap(),
        "--ssh-key",
        key.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "--ssh-key {}: not an OpenSSH public key",
            key.display()
        )),
        "{err}"
    );
}

#[test]
fn pxe_ignition_url_must_be_http() {
    let d = tempfile::tempdir().unwrap();
    let (ok, err) = keelson(&[
        "pxe",
        "--repo",
        d.path().to_str().unwrap(),
        "--ref",
        "r",
        "--output",
        d.path().join("out").to_str().unwrap(),
        "--ignition-url",
        "ftp://configs/node.ign",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--ignition-url \"ftp://configs/node.ign\": not an http:// or https:// URL"),
        "{err}"
    );
    assert!(!Path::new(&d.path().join("out")).exists());
}
