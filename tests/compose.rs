//! The real compose of the default treefile, end to end: mmdebstrap from
//! the host's apt sources, dracut inside the tree, libostree commit. Then
//! the commit is deployed with `ostree admin` into a scratch sysroot, a
//! recompose with unchanged inputs must write nothing, and a configuration
//! change composed into a fresh repo from the install and initramfs caches
//! the first compose filled must give the commit checksum a cold compose
//! (both caches off) of the same treefile gives. Every compose's log must
//! be clean (no GLib CRITICAL, no warning).
//!
//! Between the first compose and the no-op: kill -9 trials in the package
//! install, dracut and commit phases. After each, no process keelson started
//! is left running, nothing is mounted under the cache directory, the ref is
//! the old commit and `ostree fsck` is clean; the next compose removes the
//! killed runs' work directories.
//!
//! Needs root, mmdebstrap, bubblewrap, ostree and the host's Debian mirror
//! (`.ci/run` installs them). Downloaded packages are cached in
//! `target/keelson-test-cache` (or $KEELSON_TEST_CACHE) across runs.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{cache, manifest, run as sh};

const SDE: &str = "1700000000";

fn compose_cmd(repo: &Path) -> Command {
    compose_cmd_for(repo, &manifest().join("treefiles/k8s-node.json"))
}

fn compose_cmd_for(repo: &Path, treefile: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keelson"));
    c.env("SOURCE_DATE_EPOCH", SDE)
        .env_remove("RUST_LOG")
        .arg("compose")
        .arg(treefile)
        .arg("--repo")
        .arg(repo)
        .arg("--cachedir")
        .arg(cache());
    c
}

/// Compose; the log must be clean: no GLib CRITICAL, no warning.
fn compose(repo: &Path, json: &Path) -> serde_json::Value {
    compose_with_log(repo, json).0
}

fn compose_with_log(repo: &Path, json: &Path) -> (serde_json::Value, String) {
    compose_logged(compose_cmd(repo), json)
}

fn compose_logged(mut cmd: Command, json: &Path) -> (serde_json::Value, String) {
    let out = cmd
        .arg("--write-composejson-to")
        .arg(json)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compose failed:\n{log}");
    assert!(
        !log.contains("CRITICAL") && !log.contains(" WARN ") && !log.contains("WARNING"),
        "a normal compose logs no CRITICAL and no warning:\n{log}"
    );
    (
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap(),
        log.into_owned(),
    )
}

/// Every process below `pid` (children, grandchildren…).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The field after the parenthesised name: state, then ppid.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        parent_of.insert(p, ppid);
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| Path::new(m).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// kill -9 a compose `delay_ms` after the log line `marker`: no child left
/// running, no mount left under the cache, the ref untouched, fsck clean.
fn kill_trial(
    repo: &Path,
    (reference, commit): (&str, &str),
    marker: &str,
    delay_ms: u64,
    children: bool,
) -> String {
    use std::io::BufRead;
    let mut cmd = compose_cmd(repo);
    if marker.contains("mmdebstrap") {
        // kill mmdebstrap itself, not a copy of the install cache's entry
        cmd.arg("--no-install-cache");
    }
    if marker.contains("dracut") {
        // kill dracut itself, not a copy of the initramfs cache's image
        cmd.arg("--no-initramfs-cache");
    }
    let mut child = cmd
        .arg("--force-nocache")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("no {marker:?} in the compose log:\n{log}"));
        log += &line;
        log.push('\n');
        if line.contains(marker) {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let kids = descendants(child.id());
    // The commit is written in-process: no child then.
    assert_eq!(!kids.is_empty(), children, "{marker}: children {kids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while kids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let left: Vec<String> = kids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        })
        .collect();
    assert!(left.is_empty(), "{marker}: children left running: {left:?}");
    let mounts = mounts_under(&cache());
    assert!(mounts.is_empty(), "{marker}: mounts left: {mounts:?}");
    assert_eq!(
        ostree(repo, &["rev-parse", reference]).trim(),
        commit,
        "{marker}"
    );
    let fsck = ostree(repo, &["fsck"]);
    assert!(fsck.contains("no errors found"), "{marker}: {fsck}");
    format!(
        "{marker} +{delay_ms} ms: {} children killed, ref kept, fsck clean",
        kids.len()
    )
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
#[ignore = "root tier: a real compose (mmdebstrap, the Debian mirror); run by .ci/run"]
fn compose_default_treefile_deploy_noop_and_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    // The first compose installs from scratch (and fills the install cache).
    let _ = std::fs::remove_dir_all(cache().join("installs"));
    let _ = std::fs::remove_dir_all(cache().join("initramfs"));
    let (first, log) = compose_with_log(&repo, &d.path().join("c1.json"));
    assert!(log.contains("installing packages (mmdebstrap)"), "{log}");
    assert!(
        log.contains("initramfs: built by dracut and saved to the initramfs cache"),
        "{log}"
    );
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

    // kill -9 in each phase: package install, dracut, commit.
    let mut trials = vec![];
    // The commit hashes every file but writes only new objects: ~1.5 s
    // here when the repo has them all, so its kill comes early.
    for (marker, delay, children) in [
        ("installing packages (mmdebstrap)…", 20_000, true),
        ("postprocess: initramfs (dracut)…", 4_000, true),
        ("committing…", 300, false),
    ] {
        let t = kill_trial(&repo, (&reference, &commit), marker, delay, children);
        eprintln!("kill -9 trial: {t}");
        trials.push(t);
    }
    eprintln!("kill -9 trials:\n  {}", trials.join("\n  "));
    let stale = || -> Vec<String> {
        std::fs::read_dir(cache())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("keelson-compose-"))
            .collect()
    };
    assert!(
        !stale().is_empty(),
        "killed runs leave their work directories"
    );

    // Unchanged inputs: nothing written, and the killed runs' work
    // directories are gone.
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
    assert_eq!(
        stale(),
        Vec::<String>::new(),
        "stale work directories removed"
    );

    // A configuration change (one more file; the package set and what the
    // initramfs holds stay the same) composed into a fresh repo: the
    // packages and the initramfs come from the caches the first compose
    // filled, and the commit is the one a cold compose of the same
    // treefile (both caches off) gives, byte for byte.
    let changed = d.path().join("changed");
    std::fs::create_dir_all(&changed).unwrap();
    std::fs::write(changed.join("motd"), "a configuration change\n").unwrap();
    let tf2 = changed.join("t.json");
    std::fs::write(
        &tf2,
        serde_json::json!({
            "include": manifest().join("treefiles/k8s-node.json"),
            "add-files": [["motd", "/usr/lib/keelson/test-motd"]],
        })
        .to_string(),
    )
    .unwrap();
    let (cached, log) = compose_logged(
        compose_cmd_for(&d.path().join("repo2"), &tf2),
        &d.path().join("c3.json"),
    );
    for used in [
        "installing packages (a copy of the install cache's entry)",
        "initramfs: copied from the initramfs cache",
    ] {
        assert!(log.contains(used), "{used}:\n{log}");
    }
    let mut cold = compose_cmd_for(&d.path().join("repo3"), &tf2);
    cold.args(["--no-install-cache", "--no-initramfs-cache"]);
    let (cold, log) = compose_logged(cold, &d.path().join("c4.json"));
    assert!(log.contains("installing packages (mmdebstrap)"), "{log}");
    assert!(!log.contains("initramfs cache"), "{log}");
    assert_ne!(cold["commit"], commit.as_str());
    assert_eq!(
        cached["commit"], cold["commit"],
        "a compose from the caches gives the commit a cold compose gives"
    );
}
