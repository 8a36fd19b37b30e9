//! Every shipped kickstart template, rendered through `keelson kickstart`
//! with and without signature checks and template variables, passes
//! pykickstart's `ksvalidator` for RHEL 9 (scripts/install-deps.sh installs
//! pykickstart from PyPI into /opt/keelson-pyenv). Bad parameters fail
//! before anything is written.

use std::process::Command;

mod common;
use common::{ksvalidator, manifest};

fn keelson(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .current_dir(manifest())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn rendered_kickstarts_pass_ksvalidator() {
    let validator = ksvalidator();
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("ostree", &["--nogpg"]),
        (
            "ostree",
            &[
                "--update-url",
                "https://updates.example.com/keelson/repo",
                "--var",
                "ssh_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelsonTestKeyOnly test",
                "--var",
                "hostname=node-1",
                "--var",
                "disk=vda",
                "--var",
                "timezone=Europe/Berlin",
            ],
        ),
        ("ostree-minimal", &[]),
        ("ostree-minimal", &["--nogpg"]),
    ];
    for (i, (template, extra)) in cases.iter().enumerate() {
        let out = d.path().join(format!("{i}-{template}.ks"));
        let mut args = vec![
            "kickstart",
            "--url",
            "http://10.0.2.2:8000/repo",
            "--ref",
            "keelson/12/x86_64/k8s-node",
            "--template",
            template,
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let r = keelson(&args);
        assert!(
            r.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains("ostreesetup --osname=keelson --remote=keelson --url=http://10.0.2.2:8000/repo --ref=keelson/12/x86_64/k8s-node"),
            "{text}"
        );
        let v = Command::new(&validator)
            .args(["-v", "RHEL9"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "ksvalidator rejected {template} {extra:?}:\n{}{}\n{text}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }

    // The validator really checks: a broken ostreesetup line is refused.
    let good = std::fs::read_to_string(d.path().join("0-ostree.ks")).unwrap();
    let bad = d.path().join("bad.ks");
    std::fs::write(
        &bad,
        good.replace("ostreesetup --osname", "ostreesetup --bogus --osname"),
    )
    .unwrap();
    let v = Command::new(&validator)
        .args(["-v", "RHEL9"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !v.status.success(),
        "ksvalidator accepted a bad ostreesetup line"
    );
}

#[test]
fn bad_parameters_fail_without_output() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.ks");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--url", "10.0.2.2/repo", "--ref", "r", "-o", o],
            "--url: \"10.0.2.2/repo\" is not an http(s)://",
        ),
        (
            &[
                "--url",
                "http://x/repo",
                "--ref",
                "r",
                "--template",
                "nope",
                "-o",
                o,
            ],
            "--template \"nope\": no such template",
        ),
        (
            &[
                "--url",
                "http://x/repo",
                "--ref",
                "r",
                "--var",
                "x",
                "-o",
                o,
            ],
            "--var \"x\": expected NAME=VALUE",
        ),
        (
            &[
                "--url",
                "http://x/repo",
                "--ref",
                "r",
                "--definition",
                "images/nope.json",
                "-o",
                o,
            ],
            "images/nope.json",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["kickstart"];
        all.extend_from_slice(args);
        let r = keelson(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote output");
    }
}
