//! keelson's parallel commit writer must give exactly the commit that
//! `ostree commit --tree=dir=` gives for the same directory: regular files,
//! executables, symlinks, hardlinks, empty files and directories, odd
//! modes and extended attributes. Needs the `ostree` CLI.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

mod common;
use common::ostree;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fixture(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/empty")).unwrap();
    fs::create_dir_all(root.join("etc/private")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/private/secret"), b"s").unwrap();
    fs::set_permissions(
        root.join("etc/private/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("etc/private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("usr/share/zero"), b"").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("usr/share/big"), &big).unwrap();
    for i in 0..200 {
        fs::write(
            root.join(format!("usr/share/f{i:03}")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    symlink("tool", root.join("usr/bin/alias")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/dangling/target", root.join("etc/dangling")).unwrap();
    fs::set_permissions(
        root.join("usr/share/f000"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    // An extended attribute, as Debian binaries carry security.capability.
    let xattr_ok = Command::new("setfattr")
        .args(["-n", "user.keelson", "-v", "test"])
        .arg(root.join("usr/share/f001"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        xattr_ok,
        "setfattr (package attr) must work on this filesystem"
    );
}

#[test]
fn same_commit_as_ostree_cli() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fixture(&tree);
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    run(ostree(&a).args(["init", "--mode=archive"]));
    let cli = run(ostree(&a)
        .args([
            "commit",
            "--no-bindings",
            "--timestamp=@1700000000",
            "-s",
            "s",
            "-b",
            "t",
        ])
        .arg(format!("--tree=dir={}", tree.display())));
    for threads in ["1", "2", "7"] {
        let _ = fs::remove_dir_all(&b);
        let ours = run(Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["commit", "--repo"])
            .arg(&b)
            .args([
                "-b",
                "t",
                "-s",
                "s",
                "--timestamp",
                "1700000000",
                "--threads",
                threads,
            ])
            .arg(&tree));
        assert_eq!(ours, cli, "threads={threads}");
        run(ostree(&b).arg("fsck"));
    }
}

#[test]
fn commit_of_unsupported_file_fails_and_leaves_ref_alone() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fixture(&tree);
    let repo = d.path().join("repo");
    let first = run(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["commit", "--repo"])
        .arg(&repo)
        .args(["-b", "t", "--timestamp", "1700000000"])
        .arg(&tree));
    // A fifo cannot be committed: the second commit must fail as a whole.
    run(Command::new("mkfifo").arg(tree.join("usr/share/fifo")));
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["commit", "--repo"])
        .arg(&repo)
        .args(["-b", "t"])
        .arg(&tree)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("usr/share/fifo: device nodes, sockets and fifos cannot be committed"),
        "{err}"
    );
    let now = run(ostree(&repo).args(["rev-parse", "t"]));
    assert_eq!(now, first, "the ref must not move on a failed commit");
}

/// `ostree ls -R -X` of `commit` in `repo`: every path with its mode,
/// owner, size, link target and extended attributes.
fn listing(repo: &Path, commit: &str) -> String {
    run(ostree(repo).args(["ls", "-R", "-X", commit]))
}

fn init(repo: &Path, mode: &str) {
    run(ostree(repo).args(["init", &format!("--mode={mode}")]));
}

/// The fixture committed with the ostree CLI into a new archive repo
/// `DIR/src` (ref `t`, plus `extra` arguments); the repo and the commit.
fn archive_commit(dir: &Path, extra: &[&str]) -> (std::path::PathBuf, String) {
    let tree = dir.join("tree");
    fixture(&tree);
    let src = dir.join("src");
    init(&src, "archive");
    let commit = run(ostree(&src)
        .args(["commit", "--no-bindings", "-b", "t"])
        .args(extra)
        .arg(format!("--tree=dir={}", tree.display())));
    (src, commit)
}

/// keelson image's importer (archive objects inflated on several threads,
/// written through libostree) must give the repo `ostree pull-local` gives:
/// the same objects, each passing `ostree fsck`, the same tree listing,
/// the detached metadata carried over. `bare-user` runs as any user; `bare`
/// (what an image holds) when root.
#[test]
fn image_import_matches_pull_local() {
    let d = tempfile::tempdir().unwrap();
    let (src, commit) = archive_commit(
        d.path(),
        &[
            "--timestamp=@1700000000",
            "--add-detached-metadata-string=keelson.test=detached",
        ],
    );
    let mut modes = vec!["bare-user"];
    if rustix::process::geteuid().is_root() {
        modes.push("bare");
    }
    for mode in modes {
        let pulled = d.path().join(format!("pulled-{mode}"));
        init(&pulled, mode);
        run(ostree(&pulled).arg("pull-local").arg(&src).arg(&commit));
        for threads in [1, 3] {
            let ours = d.path().join(format!("ours-{mode}-{threads}"));
            init(&ours, mode);
            keelson::image::import::import(&src, &ours, &commit, threads).unwrap();
            run(ostree(&ours).arg("fsck"));
            assert_eq!(
                objects(&ours),
                objects(&pulled),
                "{mode}, {threads} threads"
            );
            assert_eq!(listing(&ours, &commit), listing(&pulled, &commit));
            let detached = run(ostree(&ours).args([
                "show",
                "--print-detached-metadata-key=keelson.test",
                &commit,
            ]));
            assert_eq!(detached, "'detached'");
        }
    }
    assert_eq!(
        keelson::image::import::content_size(&src, &commit).unwrap(),
        loaded_size(&src, &commit)
    );
}

/// The object files of a repo, by name (objects/XX/REST.KIND).
fn objects(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in fs::read_dir(repo.join("objects")).unwrap() {
        let dir = dir.unwrap();
        for f in fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().file_name();
            out.push(format!(
                "{}/{}",
                dir.file_name().to_string_lossy(),
                f.to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

/// The content bytes of a commit as libostree reports them (each object
/// once).
fn loaded_size(repo: &Path, commit: &str) -> u64 {
    use ostree::gio;
    let r = ostree::Repo::new_for_path(repo);
    r.open(gio::Cancellable::NONE).unwrap();
    let objects = r
        .traverse_commit(commit, 0, gio::Cancellable::NONE)
        .unwrap();
    objects
        .iter()
        .filter(|o| o.object_type() == ostree::ObjectType::File)
        .map(|o| {
            r.load_file(o.checksum(), gio::Cancellable::NONE)
                .unwrap()
                .1
                .size() as u64
        })
        .sum()
}

/// A damaged archive object stops the import with an error naming it, and
/// the commit is not in the destination repo.
#[test]
fn image_import_of_a_damaged_object_fails() {
    let d = tempfile::tempdir().unwrap();
    let (src, commit) = archive_commit(d.path(), &[]);
    // The largest object: usr/share/big.
    let big = objects(&src)
        .into_iter()
        .map(|o| src.join("objects").join(o))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = fs::read(&big).unwrap();
    fs::write(&big, &bytes[..bytes.len() / 2]).unwrap();
    let dest = d.path().join("dest");
    init(&dest, "bare-user");
    let err = format!(
        "{:#}",
        keelson::image::import::import(&src, &dest, &commit, 2).unwrap_err()
    );
    assert!(err.contains(&big.display().to_string()), "{err}");
    assert!(err.contains("inflating"), "{err}");
    let show = ostree(&dest).args(["show", &commit]).output().unwrap();
    assert!(!show.status.success(), "the commit must not be imported");
}

/// The importer reads an archive repo's own objects; any other repo (bare,
/// or an archive whose objects may be in a parent) goes through
/// `ostree pull-local`.
#[test]
fn image_import_only_for_self_contained_archive_repos() {
    let d = tempfile::tempdir().unwrap();
    let (archive, bare, child) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    init(&archive, "archive");
    init(&bare, "bare-user");
    init(&child, "archive");
    run(ostree(&child)
        .args(["config", "set", "core.parent"])
        .arg(&archive));
    let can = |r: &Path| keelson::image::import::can_import(r).unwrap();
    assert!(can(&archive));
    assert!(!can(&bare));
    assert!(!can(&child));
}
