//! VM tier: compose the default treefile plus a test-fixture unit
//! (tests/fixtures/vmtest.json), build a qcow2 image and boot it under QEMU
//! with UEFI and with BIOS. The fixture checks the node from inside (system
//! running with no failed units, /usr and /sysroot read-only, `ostree admin
//! status` and `keelson status` show the booted deployment, /etc and
//! /var/home writable, first-boot identities created) and prints the result
//! on the serial console. The boot fails fast on an emergency shell, a
//! kernel panic or dracut refusing to continue.
//!
//! Needs root, the host's Debian mirror, qemu-system-x86 and ovmf (`.ci/run`
//! installs them). TCG: ~1 min per boot on 2 CPUs.

use std::path::Path;
use std::process::Command;

mod common;
use common::{cache, manifest};

fn keelson(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(args)
        .output()
        .expect("run keelson")
}

fn ok(args: &[&str]) -> String {
    let out = keelson(args);
    assert!(
        out.status.success(),
        "keelson {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn boot(image: &Path, firmware: &str, log: &Path) -> String {
    ok(&[
        "vm",
        image.to_str().unwrap(),
        "--firmware",
        firmware,
        "--snapshot",
        "--serial-log",
        log.to_str().unwrap(),
        "--expect",
        "KEELSON-VMTEST-RESULT:",
        "--timeout",
        "600",
    ]);
    // Let the result line finish.
    std::thread::sleep(std::time::Duration::from_secs(1));
    String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned()
}

#[test]
fn default_image_boots_uefi_and_bios() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let treefile = manifest().join("tests/fixtures/vmtest.json");
    ok(&[
        "compose",
        treefile.to_str().unwrap(),
        "--repo",
        repo.to_str().unwrap(),
        "--cachedir",
        cache().to_str().unwrap(),
    ]);
    let reference = format!("keelson/12/{}/k8s-node-vmtest", std::env::consts::ARCH);
    let image = d.path().join("node.qcow2");
    let definition = manifest().join("images/default.json");
    ok(&[
        "image",
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        &reference,
        "--definition",
        definition.to_str().unwrap(),
        "--output",
        image.to_str().unwrap(),
    ]);

    // A definition whose root partition cannot hold the tree: clear error,
    // no output file.
    let small = d.path().join("small.json");
    let text = std::fs::read_to_string(&definition)
        .unwrap()
        .replace("\"disk-size-mib\": 4096", "\"disk-size-mib\": 1024")
        .replace("\"root-min-mib\": 2048", "\"root-min-mib\": 100");
    std::fs::write(&small, text).unwrap();
    let small_img = d.path().join("small.qcow2");
    let out = keelson(&[
        "image",
        "--repo",
        repo.to_str().unwrap(),
        "--ref",
        &reference,
        "--definition",
        small.to_str().unwrap(),
        "--output",
        small_img.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("partitions: the root partition (510 MiB) is too small for the tree"),
        "{err}"
    );
    assert!(!small_img.exists(), "no half-written image");
    assert_eq!(
        std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".keelson-image"))
            .count(),
        0,
        "no temporary image left behind"
    );

    for firmware in ["uefi", "bios"] {
        let log = d.path().join(format!("serial-{firmware}.log"));
        let text = boot(&image, firmware, &log);
        let checks: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("KEELSON-CHECK"))
            .collect();
        assert!(
            checks.len() >= 10,
            "{firmware}: checks missing:\n{}",
            checks.join("\n")
        );
        assert!(
            text.contains("KEELSON-VMTEST-RESULT: PASS"),
            "{firmware}: in-guest checks failed:\n{}",
            checks.join("\n")
        );
    }
}
