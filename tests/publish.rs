//! `keelson publish` end to end on the loopback: v1…v4 published (signed,
//! with static deltas) into a publish directory served by a real HTTP
//! server that logs every request and its bytes; a client repo (like a
//! node's) pulls v1 from empty through the delta and upgrades through
//! deltas with keelson's node-side pull; signatures checked; a publish
//! killed with SIGKILL at every step leaves the served repo valid; bad
//! input is refused with the publish directory unchanged; retention; the
//! release notes. Needs ostree, gpg (no root, no network).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Hit, LoggingServer, ostree, run};

const REF: &str = "keelson/test/x86_64/node";

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

/// Deterministic pseudo-random bytes (incompressible, like binaries).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A commit of `tree` on REF with a version and a package list.
fn commit(repo: &Path, tree: &Path, version: &str, packages: &[&str]) -> String {
    let pkgs = packages
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    run(ostree(repo)
        .args(["commit", "-b", REF, "--no-bindings"])
        .arg(format!("--tree=dir={}", tree.display()))
        .arg(format!("--add-metadata-string=version={version}"))
        .arg(format!("--add-metadata=keelson.packages=[{pkgs}]")))
    .trim()
    .to_string()
}

struct Setup {
    _d: tempfile::TempDir,
    build: PathBuf,
    tree: PathBuf,
    publish: PathBuf,
    home: PathBuf,
    key: String,
    pubkey: PathBuf,
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let build = d.path().join("build");
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/lib/node")).unwrap();
    std::fs::create_dir_all(tree.join("usr/etc")).unwrap();
    // ~6 MB in 300 files: what a full pull costs, against a delta.
    for i in 0..300 {
        std::fs::write(tree.join(format!("usr/lib/node/f{i}")), noise(i, 20_000)).unwrap();
    }
    std::fs::write(tree.join("usr/etc/node.conf"), "a=1\n").unwrap();
    run(ostree(&build).args(["init", "--mode=archive"]));
    let home = d.path().join("gnupg");
    let (key, pubkey) = common::gpg_key(&home);
    Setup {
        publish: d.path().join("pub"),
        build,
        tree,
        home,
        key,
        pubkey,
        _d: d,
    }
}

/// `keelson publish` of `commit` on REF from the build repo, signed with `key`.
fn publish_cmd(s: &Setup, commit: &str, key: &str) -> Command {
    let mut c = keelson();
    c.arg("publish")
        .arg("--from")
        .arg(&s.build)
        .arg("--to")
        .arg(&s.publish)
        .args([
            "--ref",
            REF,
            "--commit",
            commit,
            "--gpg-sign",
            key,
            "--gpg-homedir",
        ])
        .arg(&s.home);
    c
}

fn publish(s: &Setup, commit: &str, extra: &[&str]) -> std::process::Output {
    publish_cmd(s, commit, &s.key).args(extra).output().unwrap()
}

fn publish_ok(s: &Setup, commit: &str, extra: &[&str]) {
    let out = publish(s, commit, extra);
    assert!(
        out.status.success(),
        "publish {commit} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client repo configured like a node's remote (signatures on commits
/// and on the summary).
fn client(dir: &Path, url: &str, pubkey: &Path) -> ostree::Repo {
    let mode = if rustix::process::geteuid().is_root() {
        "bare"
    } else {
        "bare-user"
    };
    run(ostree(dir).args(["init", &format!("--mode={mode}")]));
    run(ostree(dir)
        .args([
            "remote",
            "add",
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
        ])
        .arg(format!("--gpg-import={}", pubkey.display()))
        .args(["origin", url]));
    let repo = ostree::Repo::new_for_path(dir);
    repo.open(ostree::gio::Cancellable::NONE).unwrap();
    repo
}

fn log_text(h: &[Hit]) -> String {
    h.iter()
        .map(|x| format!("{} {:>8} {}", x.status, x.bytes, x.path))
        .collect::<Vec<_>>()
        .join("\n")
}

fn delta_used(h: &[Hit]) {
    assert!(
        h.iter().any(|x| x.path.contains("/deltas/")
            && x.path.ends_with("/superblock")
            && x.status == 200),
        "no delta superblock fetched:\n{}",
        log_text(h)
    );
    let filez = h.iter().filter(|x| x.path.ends_with(".filez")).count();
    assert_eq!(
        filez,
        0,
        "content objects fetched one by one:\n{}",
        log_text(h)
    );
}

fn bytes(h: &[Hit]) -> u64 {
    h.iter().map(|x| x.bytes).sum()
}

/// Every file under `dir` with its size and content hash (symlinks as targets).
fn snapshot(dir: &Path) -> Vec<String> {
    use sha2::Digest;
    let mut out = Vec::new();
    for e in walk(dir) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let rel = e.strip_prefix(dir).unwrap().display().to_string();
        if m.file_type().is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                std::fs::read_link(&e).unwrap().display()
            ));
        } else if m.is_file() {
            let h = sha2::Sha256::digest(std::fs::read(&e).unwrap());
            out.push(format!("{rel} {} {}", m.len(), hex::encode(h)));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        out.push(p.clone());
        if ft.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn publish_serve_pull_through_deltas() {
    let s = setup();
    let v1 = commit(
        &s.build,
        &s.tree,
        "1",
        &["base:amd64=1.0", "tool:amd64=2.0"],
    );
    publish_ok(&s, &v1, &["--delta-from-empty"]);
    let server = LoggingServer::start(&s.publish);
    let url = format!("http://127.0.0.1:{}/repo", server.port);

    // The delta index keelson writes is byte for byte libostree's own (the
    // store was reindexed by libostree over the same single delta).
    let served = s.publish.join("repo/delta-indexes");
    let idx: Vec<PathBuf> = walk(&served).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(idx.len(), 1, "{idx:?}");
    let rel = idx[0].strip_prefix(s.publish.join("repo")).unwrap();
    assert_eq!(
        std::fs::read(&idx[0]).unwrap(),
        std::fs::read(s.publish.join("store").join(rel)).unwrap()
    );

    // v1 from empty, the way the installer pulls (by checksum, metadata first).
    let cdir = tempfile::tempdir().unwrap();
    let node = client(&cdir.path().join("repo"), &url, &s.pubkey);
    let c = cdir.path().join("repo");
    run(ostree(&c).args(["pull", "--commit-metadata-only", "origin", &v1]));
    run(ostree(&c).args(["pull", "origin", &v1]));
    let install = server.take();
    delta_used(&install);
    let full = bytes(&install);
    eprintln!("v1 from empty: {} requests, {full} bytes", install.len());
    run(ostree(&c).args(["fsck"]));

    // v2: one small file more (a one-package change); v3: a config change.
    std::fs::write(s.tree.join("usr/lib/node/newpkg"), noise(999, 3_000)).unwrap();
    let v2 = commit(
        &s.build,
        &s.tree,
        "2",
        &["base:amd64=1.0", "tool:amd64=2.0", "newpkg:amd64=0.1"],
    );
    publish_ok(&s, &v2, &[]);
    run(ostree(&c).args(["refs", "--create=origin:keelson/test/x86_64/node", &v1]));
    let got = keelson::node::fetch::pull_update(&node, "origin", REF, Some(&v1)).unwrap();
    let up = server.take();
    assert_eq!(got.commit, v2);
    assert!(got.via_delta, "{got:?}");
    delta_used(&up);
    let share = bytes(&up) as f64 / full as f64;
    eprintln!(
        "v1 → v2: {} requests, {} bytes ({:.2}% of the full pull)",
        up.len(),
        bytes(&up),
        share * 100.0
    );
    assert!(
        share < 0.05,
        "upgrade moved {:.1}% of a full pull:\n{}",
        share * 100.0,
        log_text(&up)
    );

    std::fs::write(s.tree.join("usr/etc/node.conf"), "a=2\n").unwrap();
    let v3 = commit(
        &s.build,
        &s.tree,
        "3",
        &["base:amd64=1.1", "tool:amd64=2.0", "newpkg:amd64=0.1"],
    );
    publish_ok(&s, &v3, &[]);
    let got = keelson::node::fetch::pull_update(&node, "origin", REF, Some(&v2)).unwrap();
    assert_eq!(got.commit, v3);
    delta_used(&server.take());
    run(ostree(&c).args(["fsck"]));

    // Release notes, from the history publish wrote and from `keelson diff`.
    let hist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.publish.join("history.json")).unwrap()).unwrap();
    let entries = hist.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1]["packages"]["added"][0], "newpkg 0.1");
    assert_eq!(entries[2]["parent"], v2.as_str());
    let out = run(keelson()
        .args(["diff", "--json", "--repo"])
        .arg(&s.build)
        .args([&v2, &v3]));
    let notes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(notes["packages"]["changed"][0]["name"], "base", "{out}");
    assert_eq!(notes["files"][0], "M /usr/etc/node.conf", "{out}");

    stale_signature_refused(&s, &node, &server);
    kills_leave_a_valid_repo(&s, &node, &server, &v3);
}

/// A summary.sig that does not match the summary is refused by the node.
fn stale_signature_refused(s: &Setup, node: &ostree::Repo, server: &LoggingServer) {
    let live = std::fs::read_link(s.publish.join("repo")).unwrap();
    let live = s.publish.join(live);
    let older = s.publish.join("generations/1/summary.sig");
    let good = std::fs::read(live.join("summary.sig")).unwrap();
    std::fs::write(live.join("summary.sig"), std::fs::read(&older).unwrap()).unwrap();
    let err = keelson::node::fetch::pull_commit(node, "origin", REF).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("signature") || msg.contains("GPG"), "{msg}");
    std::fs::write(live.join("summary.sig"), good).unwrap();
    std::fs::remove_file(live.join("summary.sig")).unwrap();
    let err = keelson::node::fetch::pull_commit(node, "origin", REF).unwrap_err();
    assert!(format!("{err:#}").contains("GPG"), "{err:#}");
    std::fs::write(
        live.join("summary.sig"),
        std::fs::read(s.publish.join("store/summary.sig")).unwrap(),
    )
    .unwrap();
    server.take();
}

fn kills_leave_a_valid_repo(s: &Setup, node: &ostree::Repo, server: &LoggingServer, v3: &str) {
    std::fs::write(s.tree.join("usr/lib/node/f7"), noise(4242, 20_000)).unwrap();
    let v4 = commit(
        &s.build,
        &s.tree,
        "4",
        &["base:amd64=1.1", "tool:amd64=2.1", "newpkg:amd64=0.1"],
    );
    // A kill from outside while the from-empty delta is being generated.
    let mut child = publish_cmd(s, &v4, &s.key)
        .arg("--delta-from-empty")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = false;
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0 {
        if line.contains("generating static delta empty") {
            seen = true;
            break;
        }
        line.clear();
    }
    assert!(
        seen,
        "the publish never started generating the from-empty delta"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        keelson::node::fetch::pull_commit(node, "origin", REF).unwrap(),
        v3
    );

    for step in ["import", "deltas", "summary", "generation"] {
        let out = publish(s, &v4, &["--delta-from-empty", "--kill-self-after", step]);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Still v3, still signed, still pullable.
        let head = keelson::node::fetch::pull_commit(node, "origin", REF).unwrap();
        assert_eq!(head, v3, "after a kill at {step}");
        server.take();
    }
    // Bad input: nothing in the publish directory changes.
    let before = snapshot(&s.publish);
    let v2 = run(ostree(&s.build).args(["rev-parse", &format!("{v3}^")]))
        .trim()
        .to_string();
    let sibling = run(ostree(&s.build)
        .args([
            "commit",
            "-b",
            "keelson/side",
            "--no-bindings",
            "--parent",
            &v2,
        ])
        .arg(format!("--tree=dir={}", s.tree.display())))
    .trim()
    .to_string();
    let side = publish(s, &sibling, &[]);
    assert!(!side.status.success());
    let msg = String::from_utf8_lossy(&side.stderr);
    assert!(
        msg.contains(&format!("its parent is {v2}, not the published head {v3}")),
        "{msg}"
    );
    let bad_key = publish_cmd(s, &v4, "0000000000000000DEADBEEF00000000DEADBEEF")
        .output()
        .unwrap();
    assert!(!bad_key.status.success());
    assert!(
        String::from_utf8_lossy(&bad_key.stderr)
            .contains("--gpg-sign 0000000000000000DEADBEEF00000000DEADBEEF: cannot sign"),
        "{}",
        String::from_utf8_lossy(&bad_key.stderr)
    );
    let unreachable = keelson()
        .args(["publish", "--from", "/nonexistent/repo", "--to"])
        .arg(&s.publish)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&unreachable.stderr)
            .contains("--from /nonexistent/repo: not an ostree repository"),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    assert_eq!(
        snapshot(&s.publish),
        before,
        "bad input changed the publish directory"
    );

    // Finally v4 for real, with retention (only 2 commits kept, no grace)
    // and a mirror copy in upload order.
    let mirror = s.publish.with_file_name("mirror");
    publish_ok(
        s,
        &v4,
        &[
            "--delta-from-empty",
            "--keep",
            "2",
            "--grace",
            "0",
            "--sync-to",
            mirror.to_str().unwrap(),
        ],
    );
    let got = keelson::node::fetch::pull_update(node, "origin", REF, Some(v3)).unwrap();
    assert_eq!(got.commit, v4);
    // The mirror is a plain copy of the live repo (symlinks resolved), and
    // ostree checks it whole.
    for f in ["summary", "summary.sig", "config"] {
        assert_eq!(
            std::fs::read(mirror.join(f)).unwrap(),
            std::fs::read(s.publish.join("repo").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!mirror.join("objects").is_symlink() && mirror.join("objects").is_dir());
    run(ostree(&mirror).args(["fsck"]));
    assert_eq!(run(ostree(&mirror).args(["rev-parse", REF])).trim(), v4);
    delta_used(&server.take());
    let gens: Vec<_> = std::fs::read_dir(s.publish.join("generations"))
        .unwrap()
        .collect();
    assert_eq!(gens.len(), 1, "expired generations deleted");
    let st = s.publish.join("store");
    let has = |c: &str| {
        ostree(&st)
            .args(["show", c])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(has(&v4) && has(v3), "kept commits pruned");
    assert!(
        !has(&v2),
        "v2 is beyond --keep 2 and its grace is over: pruned"
    );
    // The node still verifies and pulls after the prune.
    assert_eq!(
        keelson::node::fetch::pull_commit(node, "origin", REF).unwrap(),
        v4
    );
}
