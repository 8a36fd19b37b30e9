//! `keelson install`: what anaconda's `ostreesetup` does, for keelson's
//! Debian-based nodes that have no anaconda. Everything that can be checked
//! is checked before the disk is touched (the device, its size, the URL, the
//! ref and its signature); after that, a failure wipes the partition table
//! again so a half-installed disk never boots or passes for installed.
//!
//! Layout, filesystems and GRUB are the image builder's (same definition,
//! same GRUB images), written to the device's partitions instead of a file.

use fs_err as fs;
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::image::definition::{Definition, Firmware};
use crate::image::{disk, sysroot};
use crate::provision::ignition;
use crate::util::cmd::Cmd;
use crate::util::progress::step;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub device: PathBuf,
    pub url: String,
    pub ref_: String,
    /// Default: the image definition's.
    pub osname: Option<String>,
    /// Default: images/default.json, built into the binary.
    pub definition: Option<PathBuf>,
    /// Kernel arguments beyond the definition's.
    pub kargs: Vec<String>,
    /// Verify the commit against this keyring (and keep verifying updates).
    pub gpg_keyring: Option<PathBuf>,
    /// The node's update URL afterwards (default: `url`).
    pub update_url: Option<String>,
    pub reboot: bool,
    /// Overwrite a disk that already has a partition table or filesystem.
    pub wipe: bool,
    /// The node's Ignition config, embedded on /boot for its first boot.
    pub ignition: Option<ignition::Source>,
}

/// The definition laid out on a device of `device_bytes`: the root
/// partition takes the rest. Errors say how much is needed.
pub fn fit(def: &Definition, device: &Path, device_bytes: u64) -> Result<Definition> {
    let mut d = def.clone();
    d.disk_size_mib = device_bytes / (1024 * 1024);
    if d.layout().is_err() {
        let p = &def.partitions;
        let bios = if def.firmware.contains(&Firmware::Bios) {
            p.bios_boot_mib
        } else {
            0
        };
        let need = bios + p.esp_mib + p.boot_mib + p.root_min_mib + 2;
        bail!(
            "--device {}: {} MiB is too small: the image definition {:?} needs at least {need} MiB",
            device.display(),
            d.disk_size_mib,
            def.name
        );
    }
    Ok(d)
}

/// `keelson.install.*` arguments from a kernel command line (the PXE
/// installer): device, url, ref, osname, karg (repeatable, `,`-separated
/// not supported: one per argument), update_url, reboot.
pub fn from_cmdline(cmdline: &str) -> Result<Options> {
    let mut kv: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for word in cmdline.split_whitespace() {
        if let Some(rest) = word.strip_prefix("keelson.install.") {
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            kv.entry(k).or_default().push(v);
        }
    }
    for k in kv.keys() {
        if ![
            "device",
            "url",
            "ref",
            "osname",
            "karg",
            "update_url",
            "reboot",
            "wipe",
            "gpg_keyring",
            "definition",
            "ignition_url",
        ]
        .contains(k)
        {
            bail!("kernel command line: keelson.install.{k}: unknown argument");
        }
    }
    let one =
        |k: &str| -> Option<String> { kv.get(k).and_then(|v| v.last()).map(|s| s.to_string()) };
    let flag = |k: &str| one(k).is_some_and(|v| v.is_empty() || v == "1" || v == "yes");
    let need = |k: &str| -> Result<String> {
        one(k)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("kernel command line: keelson.install.{k}= is missing"))
    };
    Ok(Options {
        device: PathBuf::from(need("device")?),
        url: need("url")?,
        ref_: need("ref")?,
        osname: one("osname"),
        definition: one("definition").map(PathBuf::from),
        kargs: kv
            .get("karg")
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        gpg_keyring: one("gpg_keyring").map(PathBuf::from),
        update_url: one("update_url"),
        reboot: flag("reboot"),
        wipe: flag("wipe"),
        ignition: one("ignition_url").map(ignition::Source::Url),
    })
}

/// A clearer message for the common ways `ostree pull` fails.
pub fn explain_pull_error(url: &str, ref_: &str, stderr: &str) -> String {
    let s = stderr.to_ascii_lowercase();
    if s.contains("gpg") && s.contains("summary") {
        format!(
            "--ref {ref_} at {url}: signature verification failed: the repository's summary is not signed by a key in --gpg-keyring (publish it with `keelson publish --gpg-sign`)"
        )
    } else if s.contains("404") && s.contains("/config") {
        format!("--url {url}: not an ostree repository (no /config)")
    } else if s.contains("404") {
        // ostree says only "HTTP 404": the ref is missing, or the URL is
        // not the repository's.
        format!(
            "--ref {ref_}: not found at {url} (HTTP 404: no such ref, or no ostree repository at that URL)"
        )
    } else if s.contains("couldn't connect")
        || s.contains("could not connect")
        || s.contains("connection refused")
        || s.contains("resolve host")
        || s.contains("timeout")
        || s.contains("timed out")
    {
        format!("--url {url}: unreachable")
    } else if s.contains("gpg") || s.contains("signature") {
        format!("--ref {ref_} at {url}: signature verification failed")
    } else {
        format!("--url {url} --ref {ref_}: cannot fetch the commit")
    }
}

fn device_bytes(device: &Path) -> Result<u64> {
    let out = Cmd::new("blockdev")
        .arg("--getsize64")
        .arg(device)
        .run()
        .with_context(|| format!("--device {}: cannot read its size", device.display()))?;
    out.trim()
        .parse()
        .with_context(|| format!("blockdev --getsize64: unexpected {out:?}"))
}

/// The device and anything on it must not be in use.
fn check_unused(device: &Path) -> Result<()> {
    let dev = device.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(at)) = (f.next(), f.next()) else {
            continue;
        };
        if src == dev
            || (src.starts_with(&dev)
                && src[dev.len()..]
                    .trim_start_matches('p')
                    .parse::<u32>()
                    .is_ok())
        {
            bail!("--device {dev}: {src} is mounted at {at}; refusing to overwrite a disk in use");
        }
    }
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    if let Some(l) = swaps.lines().skip(1).find(|l| l.starts_with(&dev)) {
        bail!(
            "--device {dev}: {} is in use as swap",
            l.split_whitespace().next().unwrap_or("")
        );
    }
    Ok(())
}

/// Without `--wipe`, a disk with a partition table or a filesystem on it is
/// somebody's data: refuse it.
fn check_blank(device: &Path) -> Result<()> {
    let found = Cmd::new("wipefs")
        .args(["--no-act", "--noheadings", "--output", "TYPE"])
        .arg(device)
        .run()
        .with_context(|| format!("--device {}: cannot read its signatures", device.display()))?;
    let kinds: Vec<&str> = found.split_whitespace().collect();
    if !kinds.is_empty() {
        bail!(
            "--device {}: holds {} already; pass --wipe (keelson.install.wipe) to erase it",
            device.display(),
            kinds.join(", ")
        );
    }
    Ok(())
}

/// Fetch only the commit object (and its signature) into a scratch repo:
/// proves the URL, the ref and the signature before the disk is wiped.
fn check_remote(opts: &Options, remote: &str, scratch: &Path) -> Result<String> {
    let repo = format!("--repo={}", scratch.display());
    Cmd::new("ostree")
        .args([&repo, "init", "--mode=archive"])
        .run()?;
    sysroot::remote_add(
        scratch,
        remote,
        &opts.url,
        None,
        opts.gpg_keyring.as_deref(),
    )?;
    let pulled = Cmd::new("ostree")
        .args([&repo, "pull", "--commit-metadata-only", remote, &opts.ref_])
        .run();
    if let Err(e) = pulled {
        // The error carries the command line and ostree's last stderr lines.
        let detail = format!("{e:#}");
        bail!(
            "{}\n  {}",
            explain_pull_error(&opts.url, &opts.ref_, &detail),
            detail.trim()
        );
    }
    let commit = Cmd::new("ostree")
        .args([&repo, "rev-parse", &format!("{remote}:{}", opts.ref_)])
        .run()?;
    Ok(commit.trim().to_string())
}

/// Everything checked, nothing written yet: the writer's plan.
fn preflight(opts: &Options, scratch: &Path) -> Result<disk::Plan> {
    let def = Definition::load_or_builtin(opts.definition.as_deref())?;
    // The config first: a node must never come up without its identity.
    let config = match &opts.ignition {
        Some(src) => Some(step("checking the Ignition config", || src.load())?),
        None => None,
    };
    if let Some(k) = &opts.gpg_keyring
        && !k.is_file()
    {
        bail!("--gpg-keyring {}: no such file", k.display());
    }
    let meta = fs::metadata(&opts.device)
        .with_context(|| format!("--device {}: no such device", opts.device.display()))?;
    if !meta.file_type().is_block_device() {
        bail!("--device {}: not a block device", opts.device.display());
    }
    check_unused(&opts.device)?;
    if !opts.wipe {
        check_blank(&opts.device)?;
    }
    let def = fit(&def, &opts.device, device_bytes(&opts.device)?)?;
    let layout = def.layout()?;
    let remote = def.remote.name.clone();
    let commit = step("checking the URL, ref and signature", || {
        check_remote(opts, &remote, scratch)
    })?;
    Ok(disk::Plan {
        // Every installed node gets its own filesystem ids.
        ids: disk::Ids::random(layout.len()),
        osname: opts.osname.clone().unwrap_or_else(|| def.osname.clone()),
        update_url: opts.update_url.clone().unwrap_or_else(|| opts.url.clone()),
        pull_url: opts.url.clone(),
        source: disk::Source::Remote,
        ref_: opts.ref_.clone(),
        keyring: opts.gpg_keyring.clone(),
        extra_kargs: opts.kargs.clone(),
        source_date_epoch: None,
        // The config, if any, is on the disk: Ignition's platform is bare
        // metal (no provider to ask), whatever the definition says for images.
        firstboot: disk::FirstBoot {
            platform: "metal".into(),
            config,
        },
        remote,
        commit,
        layout,
        def,
    })
}

/// Install; returns the installed commit.
pub fn run(opts: &Options) -> Result<String> {
    let work = tempfile::Builder::new()
        .prefix("keelson-install-")
        .tempdir()?;
    let plan = preflight(opts, &work.path().join("check-repo"))?;
    tracing::info!(
        "installing {} ({}) onto {} ({} MiB): everything on it is erased",
        opts.ref_,
        plan.commit,
        opts.device.display(),
        plan.def.disk_size_mib
    );
    let written = disk::write(
        &plan,
        &disk::Target::Device(opts.device.clone()),
        work.path(),
    );
    // Deployment roots are immutable; clear that, then sync what was written.
    sysroot::release(&work.path().join("root"));
    let result = written.and_then(|()| Cmd::new("sync").run().map(|_| ()));
    disk::unmount_all(work.path());
    if let Err(e) = result {
        // Never leave a disk that looks installed.
        let _ = Cmd::new("wipefs")
            .args(["--all", "--quiet"])
            .arg(&opts.device)
            .run();
        return Err(e.context(format!(
            "installing onto {} failed; its partition table was wiped",
            opts.device.display()
        )));
    }
    Ok(plan.commit)
}

/// Reboot now (the installer has synced the disk).
pub fn reboot() -> Result<()> {
    rustix::fs::sync();
    rustix::system::reboot(rustix::system::RebootCommand::Restart).context("reboot(2)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Definition {
        Definition::load_or_builtin(None).unwrap()
    }

    #[test]
    fn root_takes_the_rest_of_the_device() {
        let d = fit(&def(), Path::new("/dev/vda"), 20 * 1024 * 1024 * 1024).unwrap();
        let root = d
            .layout()
            .unwrap()
            .into_iter()
            .find(|p| p.name == "root")
            .unwrap();
        assert_eq!(root.size / (1024 * 1024), 20 * 1024 - 1 - 1 - 127 - 384 - 1);
        let e = fit(&def(), Path::new("/dev/vda"), 1024 * 1024 * 1024).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--device /dev/vda: 1024 MiB is too small: the image definition \"default\" needs at least 2562 MiB"
        );
    }

    #[test]
    fn cmdline() {
        let o = from_cmdline(
            "BOOT_IMAGE=x ip=dhcp keelson.install.device=/dev/vda keelson.install.url=http://10.0.2.2:8000/repo \
             keelson.install.ref=keelson/12/x86_64/k8s-node keelson.install.karg=quiet keelson.install.karg=a=b keelson.install.reboot",
        )
        .unwrap();
        assert_eq!(o.device, PathBuf::from("/dev/vda"));
        assert_eq!(o.url, "http://10.0.2.2:8000/repo");
        assert_eq!(o.kargs, vec!["quiet", "a=b"]);
        assert!(o.reboot);
        assert_eq!(o.ignition, None);
        let o = from_cmdline(
            "keelson.install.device=/dev/vda keelson.install.url=http://h/repo keelson.install.ref=r \
             keelson.install.ignition_url=http://h/ignition/n1.ign",
        )
        .unwrap();
        assert_eq!(
            o.ignition,
            Some(ignition::Source::Url("http://h/ignition/n1.ign".into()))
        );
        let e = from_cmdline("keelson.install.device=/dev/vda keelson.install.url=http://x")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel command line: keelson.install.ref= is missing"
        );
        let e = from_cmdline("keelson.install.devcie=/dev/vda").unwrap_err();
        assert!(
            e.to_string()
                .contains("keelson.install.devcie: unknown argument")
        );
    }

    #[test]
    fn pull_errors_explained() {
        let url = "http://10.0.2.2:8000/repo";
        let r = "keelson/12/x86_64/nope";
        let t = [
            (
                "error: Server returned HTTP 404",
                "--ref keelson/12/x86_64/nope: not found at http://10.0.2.2:8000/repo",
            ),
            (
                "error: While fetching http://10.0.2.2:1/repo/config: [7] Couldn't connect to server",
                "unreachable",
            ),
            (
                "error: While fetching http://10.0.2.2:8000/repo/config: Server returned HTTP 404",
                "not an ostree repository",
            ),
            (
                "error: GPG verification enabled, but no signatures found",
                "signature verification failed",
            ),
        ];
        for (stderr, want) in t {
            let got = explain_pull_error(url, r, stderr);
            assert!(got.contains(want), "{stderr} → {got}");
        }
    }
}
