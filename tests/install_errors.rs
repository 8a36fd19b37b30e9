//! `keelson install` refuses bad input before touching the disk: no such
//! device, not a block device, a disk too small for the image definition, an
//! unreachable URL, an unknown ref, an unsigned commit when a keyring is
//! given, an invalid or unreachable Ignition config (also with --wipe on a
//! disk holding a table: the table stays). The disks are real loop devices over sparse files; after every
//! refusal their first MiB is still zeros. A failure after partitioning (a
//! content object missing on the server) is reported as such and leaves no
//! partition table. (The successful install runs in the VM tier:
//! tests/vm.rs network-installs a machine.)
//!
//! Needs root (losetup), ostree and python3 (HTTP server).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::run;

struct Loop(String);

impl Loop {
    fn new(file: &Path, mib: u64) -> Loop {
        let f = std::fs::File::create(file).unwrap();
        f.set_len(mib * 1024 * 1024).unwrap();
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file));
        Loop(dev.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn install(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("install")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn untouched(file: &Path) -> bool {
    use std::io::Read;
    let mut buf = vec![0u8; 1024 * 1024];
    std::fs::File::open(file)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().all(|b| *b == 0)
}

#[test]
#[ignore = "root tier: loop devices; run by .ci/run"]
fn refuses_before_touching_the_disk() {
    let d = tempfile::tempdir().unwrap();
    // A small real repo served over HTTP: one unsigned commit.
    let www = d.path().join("www");
    let repo = www.join("repo");
    let content = d.path().join("content");
    std::fs::create_dir_all(content.join("usr/bin")).unwrap();
    std::fs::write(content.join("usr/bin/hello"), "hello\n").unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    let r = format!("--repo={}", repo.display());
    run(Command::new("ostree").args([&r, "init", "--mode=archive"]));
    run(Command::new("ostree")
        .args([&r, "commit", "-b", "keelson/test"])
        .arg(format!("--tree=dir={}", content.display())));
    let port = common::free_port();
    let _server = common::LoggingServer::start_on(&www, &format!("127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}/repo");
    let (_, pubkey) = common::gpg_key(&d.path().join("gnupg"));

    let small_file = d.path().join("small.img");
    let small = Loop::new(&small_file, 1024);
    let disk_file = d.path().join("disk.img");
    let disk = Loop::new(&disk_file, 3072);
    let plain: PathBuf = d.path().join("plain-file");
    std::fs::write(&plain, "").unwrap();
    let plain = plain.to_str().unwrap().to_string();
    let keyring = pubkey.to_str().unwrap().to_string();
    let unreachable = "http://127.0.0.1:1/repo".to_string();
    // Ignition configs: one with a typo'd field, one the server lacks.
    let bad_ign = d.path().join("bad.ign");
    std::fs::write(
        &bad_ign,
        r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKey":[]}]}}"#,
    )
    .unwrap();
    let bad_ign = bad_ign.to_str().unwrap().to_string();
    let missing_ign = format!("http://127.0.0.1:{port}/missing.ign");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--device",
                "/dev/keelson-nope",
                "--url",
                &url,
                "--ref",
                "keelson/test",
            ],
            "--device /dev/keelson-nope: no such device",
        ),
        (
            vec!["--device", &plain, "--url", &url, "--ref", "keelson/test"],
            "not a block device",
        ),
        (
            vec!["--device", &small.0, "--url", &url, "--ref", "keelson/test"],
            "1024 MiB is too small: the image definition \"default\" needs at least 2562 MiB",
        ),
        (
            vec![
                "--device",
                &disk.0,
                "--url",
                &unreachable,
                "--ref",
                "keelson/test",
            ],
            "--url http://127.0.0.1:1/repo: unreachable",
        ),
        (
            vec!["--device", &disk.0, "--url", &url, "--ref", "keelson/nope"],
            "--ref keelson/nope: not found at",
        ),
        (
            vec![
                "--device",
                &disk.0,
                "--url",
                &url,
                "--ref",
                "keelson/test",
                "--gpg-keyring",
                &keyring,
            ],
            "signature verification failed",
        ),
        (
            vec![
                "--device",
                &disk.0,
                "--url",
                &url,
                "--ref",
                "keelson/test",
                "--ignition-file",
                &bad_ign,
            ],
            "unknown field sshAuthorizedKey",
        ),
        (
            vec![
                "--device",
                &disk.0,
                "--url",
                &url,
                "--ref",
                "keelson/test",
                "--ignition-url",
                &missing_ign,
            ],
            "fetching the Ignition config from http://127.0.0.1:",
        ),
    ];
    for (args, want) in &cases {
        let (ok, err) = install(args);
        assert!(!ok && err.contains(want), "{args:?}:\n{err}\nwant: {want}");
        assert!(
            untouched(&disk_file) && untouched(&small_file),
            "{args:?} wrote to a disk"
        );
    }

    // A disk that already holds a partition table is somebody's data:
    // refused without --wipe, and left exactly as it was.
    sfdisk(&disk.0, "label: gpt\nsize=100MiB, type=linux\n");
    let before = run(Command::new("sfdisk").arg("--dump").arg(&disk.0));
    let (ok, err) = install(&["--device", &disk.0, "--url", &url, "--ref", "keelson/test"]);
    assert!(
        !ok && err.contains(&format!("--device {}: holds gpt", disk.0)) && err.contains("--wipe"),
        "{err}"
    );
    assert_eq!(
        run(Command::new("sfdisk").arg("--dump").arg(&disk.0)),
        before
    );
    // Even with --wipe, an invalid Ignition config stops the install before
    // the disk is touched: the table is still the one it had.
    let (ok, err) = install(&[
        "--device",
        &disk.0,
        "--url",
        &url,
        "--ref",
        "keelson/test",
        "--wipe",
        "--ignition-file",
        &bad_ign,
    ]);
    assert!(
        !ok && err.contains(&format!(
            "--ignition-file: {bad_ign}: not a valid Ignition config"
        )),
        "{err}"
    );
    assert_eq!(
        run(Command::new("sfdisk").arg("--dump").arg(&disk.0)),
        before
    );

    // A failure after the disk was partitioned (a content object missing on
    // the server: the commit check passes, the pull fails): the error says
    // so and the partition table is gone again, nothing looks installed.
    let victim = walk(&repo.join("objects"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "filez"))
        .expect("a content object");
    std::fs::remove_file(&victim).unwrap();
    let (ok, err) = install(&[
        "--device",
        &disk.0,
        "--url",
        &url,
        "--ref",
        "keelson/test",
        "--wipe",
    ]);
    assert!(
        !ok && err.contains(&format!(
            "installing onto {} failed; its partition table was wiped",
            disk.0
        )),
        "{err}"
    );
    assert!(err.contains("pulling"), "expected the pull to fail: {err}");
    let table = Command::new("sfdisk")
        .arg("--dump")
        .arg(&disk.0)
        .output()
        .unwrap();
    assert!(
        !table.status.success(),
        "a partition table is left:\n{}",
        String::from_utf8_lossy(&table.stdout)
    );
}

fn sfdisk(device: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("sfdisk")
        .args(["--quiet", device])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk {device}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
