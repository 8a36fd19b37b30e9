//! Running programs inside the tree with bubblewrap: the tree as `/`, fresh
//! /dev, /proc and tmpfs /tmp, /run and /var/tmp, no network, and a clean
//! environment. Used for postprocess scripts and dracut.

use std::path::Path;

use anyhow::Result;

use crate::util::cmd::Cmd;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The bwrap command running `argv` inside `root`.
pub fn command(root: &Path, argv: &[&str], source_date_epoch: i64) -> Cmd {
    Cmd::new("bwrap")
        .arg("--bind")
        .arg(root)
        .arg("/")
        .args(["--dev", "/dev", "--proc", "/proc"])
        .args(["--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp"])
        .args([
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ])
        .args(["--die-with-parent", "--clearenv", "--chdir", "/"])
        .args(["--setenv", "PATH", PATH])
        .args(["--setenv", "LANG", "C.UTF-8"])
        .args([
            "--setenv",
            "SOURCE_DATE_EPOCH",
            &source_date_epoch.to_string(),
        ])
        .arg("--")
        .args(argv)
}

/// Run `argv` in the tree; returns stdout.
pub fn run(root: &Path, argv: &[&str], source_date_epoch: i64) -> Result<String> {
    command(root, argv, source_date_epoch).run()
}
