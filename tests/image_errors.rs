//! Bad input to `keelson image`: a clear error naming the thing, and no
//! output file. No root or network needed (errors come before any work).

use std::path::Path;
use std::process::Command;

fn image(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("image")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_image_inputs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let def = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/default.json");
    let def = def.to_str().unwrap();
    let repo = p.join("repo");
    let st = Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["init", "--mode=archive"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = p.join("out.qcow2");
    let o = out.to_str().unwrap();

    let (ok, err) = image(&[
        "--repo",
        p.join("nope").to_str().unwrap(),
        "--ref",
        "r",
        "--definition",
        def,
        "--output",
        o,
    ]);
    assert!(!ok && err.contains("nope: not an ostree repo"), "{err}");

    let (ok, err) = image(&[
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        "no/such/ref",
        "--definition",
        def,
        "--output",
        o,
    ]);
    assert!(
        !ok && err.contains("--ref no/such/ref: no such ref in"),
        "{err}"
    );

    let bad = p.join("bad.json");
    let text = std::fs::read_to_string(def)
        .unwrap()
        .replace("\"disk-size-mib\": 4096", "\"disk-size-mib\": 300");
    std::fs::write(&bad, text).unwrap();
    let (ok, err) = image(&[
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        "r",
        "--definition",
        bad.to_str().unwrap(),
        "--output",
        o,
    ]);
    assert!(
        !ok && err.contains("bad.json: disk-size-mib: 300 MiB does not fit the partitions"),
        "{err}"
    );

    let (ok, err) = image(&[
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        "r",
        "--definition",
        p.join("missing.json").to_str().unwrap(),
        "--output",
        o,
    ]);
    assert!(
        !ok && err.contains("missing.json: cannot read image definition"),
        "{err}"
    );

    assert!(!out.exists(), "no output on failure");
}
