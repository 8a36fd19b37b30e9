//! VM tier: `keelson build` the default treefile plus a test-fixture unit
//! (tests/fixtures/vmtest.json) into a repo, a qcow2 image, PXE artifacts
//! and meta.json (checked against the files), and boot the image under QEMU
//! with UEFI and 2 GiB of memory, then with BIOS and 4 GiB. The fixture
//! checks the node from inside (system running with no failed units, /usr
//! and /sysroot read-only, `ostree admin status` and `keelson status` show
//! the booted deployment, /etc and /var/home writable, first-boot identities
//! created; the Kubernetes wiring: kubelet.service skipped without a kubelet,
//! containerd on the systemd cgroup driver, tmpfiles, `logrotate -d` on the
//! node policy, `systemd-analyze verify` on keelson's units, journald's size
//! limit in force, a bad config fragment failing keelson-kubelet-config with
//! the rendered file kept) and prints the result on the serial console. The
//! host then checks the drop-in rendered at boot against the gke profile for
//! the capacity the guest reported. The boot fails fast on an emergency
//! shell, a kernel panic or dracut refusing to continue.
//!
//! Then the network install: the PXE artifacts for the same commit are
//! served over HTTP, an empty disk boots from the network and installs
//! itself, and the installed node boots and passes the same checks.
//!
//! Needs root, the host's Debian mirror, qemu-system-x86 and ovmf (`.ci/run`
//! installs them). TCG: ~1 min per boot on 2 CPUs.

use std::path::Path;
use std::process::Command;

mod common;
mod firstboot;
use common::{Hit, LoggingServer, cache, free_port, manifest, run};

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

fn boot(image: &Path, firmware: &str, memory_mib: u32, log: &Path) -> String {
    ok(&[
        "vm",
        image.to_str().unwrap(),
        "--firmware",
        firmware,
        "--memory",
        &memory_mib.to_string(),
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
#[ignore = "VM tier: compose, images and QEMU boots; run by .ci/run"]
fn default_image_boots_uefi_and_bios() {
    let d = tempfile::tempdir().unwrap();
    let treefile = manifest().join("tests/fixtures/vmtest.json");
    let definition = manifest().join("images/default.json");
    // CI's entry point: compose, the qcow2 image and the network-install
    // artifacts in one `keelson build`, described by meta.json. The PXE
    // configs point at the HTTP server started later on this port.
    let port = free_port();
    let built = d.path().join("out");
    let meta_text = ok(&[
        "build",
        treefile.to_str().unwrap(),
        "--output",
        built.to_str().unwrap(),
        "--definition",
        definition.to_str().unwrap(),
        "--cachedir",
        cache().to_str().unwrap(),
        "--pxe",
        "--pxe-repo-url",
        &format!("http://10.0.2.2:{port}/repo"),
        "--pxe-url",
        &format!("http://10.0.2.2:{port}/pxe"),
        // The installed node follows a different URL than the installer
        // pulled from (same repo behind it here).
        "--pxe-update-url",
        &format!("http://10.0.2.2:{port}/updates"),
        // The installer fetches the node's Ignition config and embeds it.
        "--pxe-ignition-url",
        &format!("http://10.0.2.2:{port}/ignition/netinstall.ign"),
        "--json",
    ]);
    let meta: serde_json::Value = serde_json::from_str(&meta_text).unwrap();
    let reference = format!("keelson/12/{}/k8s-node-vmtest", std::env::consts::ARCH);
    let repo = built.join("repo");
    let image = built.join("default.qcow2");
    assert_eq!(meta["ref"], reference.as_str());
    let commit = run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["rev-parse", &reference]));
    assert_eq!(meta["commit"], commit.trim());
    assert_eq!(meta["artifacts"][0]["name"], "default.qcow2");
    assert_eq!(
        meta["artifacts"][0]["sha256"],
        keelson::image::sha256_file(&image).unwrap().as_str()
    );
    assert_eq!(
        std::fs::read_to_string(built.join("meta.json"))
            .unwrap()
            .trim(),
        meta_text.trim()
    );
    assert_eq!(meta["pxe"]["directory"], "pxe");

    // Reproducible images: two `keelson image` runs of the commit give the
    // same bytes, and the same disk as the one `keelson build` converted.
    let mut sums = vec![];
    for i in 0..2 {
        let raw = d.path().join(format!("again{i}.raw"));
        ok(&[
            "image",
            "--repo",
            repo.to_str().unwrap(),
            "--ref",
            &reference,
            "--format",
            "raw",
            "--output",
            raw.to_str().unwrap(),
        ]);
        sums.push(keelson::image::sha256_file(&raw).unwrap());
    }
    eprintln!("keelson image twice: {} {}", sums[0], sums[1]);
    assert_eq!(sums[0], sums[1], "same commit and definition, same image");
    let raw0 = d.path().join("again0.raw");
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&raw0)
        .arg(&image));
    // Nothing secret or machine-specific is baked in: each node gets its
    // identity at first boot.
    firstboot::assert_commit_has_no_secrets(&repo, &reference);
    firstboot::assert_image_has_no_secrets(&raw0, &d.path().join("mnt"));
    std::fs::remove_file(d.path().join("again1.raw")).unwrap();
    std::fs::remove_file(&raw0).unwrap();

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

    // The build published as an update stream with a from-empty delta
    // (what the network installer pulls).
    let publish = d.path().join("pub");
    ok(&[
        "publish",
        "--from",
        repo.to_str().unwrap(),
        "--to",
        publish.to_str().unwrap(),
        "--delta-from-empty",
    ]);

    // Everything the guests fetch over HTTP: the published repo (also the
    // installed node's update URL), the PXE files, Ignition configs.
    let www = d.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::os::unix::fs::symlink(publish.join("repo"), www.join("repo")).unwrap();
    std::os::unix::fs::symlink(publish.join("repo"), www.join("updates")).unwrap();
    std::os::unix::fs::symlink(built.join("pxe"), www.join("pxe")).unwrap();
    let configs = firstboot::write_configs(d.path(), &www, port);
    let server = LoggingServer::start_on(&www, &format!("127.0.0.1:{port}"));

    // First boot (UEFI, 2 GiB) with a config through fw_cfg, then the
    // reboot (BIOS, 4 GiB) of the same disk: both pass the in-guest checks.
    let disk = d.path().join("provisioned.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&disk));
    let ssh_port = free_port();
    let fw_cfg = configs.fw_cfg.to_str().unwrap().to_string();
    for (i, (firmware, memory_mib)) in [("uefi", 2048), ("bios", 4096)].into_iter().enumerate() {
        let log = d.path().join(format!("serial-{firmware}.log"));
        let extra: &[&str] = if i == 0 {
            &["--ignition", &fw_cfg]
        } else {
            &[]
        };
        let mut guest = firstboot::Guest::boot(&disk, firmware, memory_mib, &log, ssh_port, extra);
        let text = guest.wait_up();
        in_guest_checks_passed(&text, firmware);
        kubelet_config_matches_capacity(&text, firmware, memory_mib);
        if i == 0 {
            provisioned_at_first_boot(&guest, &configs.key);
            guest.shut_down(&configs.key, "sudo -n systemctl reboot");
        } else {
            not_provisioned_again(&guest, &configs.key, &text);
            guest.shut_down(&configs.key, "sudo -n systemctl poweroff");
        }
    }
    broken_config_stops_the_boot(&image, &configs.broken, d.path());

    server.take();
    network_install(&built, &reference, port, d.path());
    installer_pulled_the_delta(&server.take(), &publish.join("store"), commit.trim());
}

/// The `keelson pxe` artifacts `keelson build --pxe` wrote, served over
/// HTTP next to the repo; an empty disk boots from the network (iPXE from QEMU's TFTP
/// server, kernel and installer initramfs over HTTP), `keelson install`
/// writes the disk and reboots; the installed node then boots from its disk,
/// passes the in-guest checks and follows the ref at its update URL.
fn network_install(out: &Path, reference: &str, port: u16, d: &Path) {
    // The caller serves out/repo, out/pxe and the Ignition configs on port.
    let pxe = out.join("pxe");
    let update_url = format!("http://10.0.2.2:{port}/updates");
    run(Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&pxe));
    // The kickstart next to the PXE files is valid for RHEL-family installers.
    run(Command::new(common::ksvalidator())
        .args(["-v", "RHEL9"])
        .arg(pxe.join("keelson.ks")));
    let disk = d.join("netinstalled.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("4G"));

    // The installer reboots when done: QEMU (-no-reboot) exits.
    let log = d.join("serial-netinstall.log");
    ok(&[
        "vm",
        disk.to_str().unwrap(),
        "--firmware",
        "bios",
        "--netboot",
        pxe.to_str().unwrap(),
        "--serial-log",
        log.to_str().unwrap(),
        "--timeout",
        "1200",
    ]);
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).replace('\r', "");
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        text.contains("keelson-installer: DONE")
            && text.contains(&format!("Installed {reference} (")),
        "the network install did not finish:\n{}",
        tail.join("\n")
    );

    // The installed node, from its own disk.
    let log = d.join("serial-installed.log");
    let text = boot(&disk, "bios", 2048, &log).replace('\r', "");
    in_guest_checks_passed(&text, "installed node");
    // The config the installer fetched from --pxe-ignition-url gave the node
    // its user and hostname at its first boot.
    firstboot::assert_identity(
        &text,
        "installed node",
        firstboot::NETINSTALL_HOSTNAME,
        true,
    );
    assert!(
        text.contains(&format!("Updates: keelson:{reference} from {update_url}")),
        "installed node does not follow the ref at its update URL:\n{}",
        text.lines()
            .filter(|l| l.contains("Updates:") || l.contains("Origin:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The installer's pull (by checksum, metadata first, into the new disk's
/// bare repo) went through the from-empty static delta: its superblock and
/// parts were served, and the only content objects fetched one by one are
/// the delta's fallback objects (files too big for its parts), not the
/// objects again (libostree 2022.7's double download).
fn installer_pulled_the_delta(hits: &[Hit], store: &Path, commit: &str) {
    let repo: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.path.starts_with("/repo/"))
        .collect();
    let listing = || {
        repo.iter()
            .take(60)
            .map(|h| format!("{} {} {}", h.status, h.bytes, h.path))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let delta: u64 = repo
        .iter()
        .filter(|h| h.path.starts_with("/repo/deltas/") && h.status == 200)
        .map(|h| h.bytes)
        .sum();
    let total: u64 = repo.iter().map(|h| h.bytes).sum();
    let fallbacks = common::delta_fallbacks(store, commit);
    let loose: Vec<String> = repo
        .iter()
        .filter(|h| h.path.ends_with(".filez"))
        .filter_map(|h| common::object_checksum(&h.path))
        .collect();
    eprintln!(
        "network install of {commit}: {} repo requests, {total} bytes, {delta} of them in delta parts, {} fallback objects fetched (of {} in the delta)",
        repo.len(),
        loose.len(),
        fallbacks.len()
    );
    assert!(
        repo.iter()
            .any(|h| h.path.ends_with("/superblock") && h.status == 200)
            && delta > 0,
        "the installer fetched no static delta:\n{}",
        listing()
    );
    let again: Vec<&String> = loose.iter().filter(|c| !fallbacks.contains(*c)).collect();
    assert!(
        again.is_empty(),
        "{} content objects fetched one by one besides the delta's fallbacks, e.g. {:?}",
        again.len(),
        &again[..again.len().min(5)]
    );
}

fn in_guest_checks_passed(text: &str, firmware: &str) {
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

/// The first boot applied the fw_cfg config (and the part it merges over
/// HTTP): checked over a real ssh connection as the user it created.
fn provisioned_at_first_boot(guest: &firstboot::Guest, key: &Path) {
    let console = guest.console();
    firstboot::assert_identity(&console, "first boot", firstboot::HOSTNAME, true);
    // The config merges a part over HTTP: the initramfs brought DHCP up
    // (and took its DNS server) for Ignition's fetch stage.
    assert!(
        console.contains("keelson-ignition-network: up; DNS servers: 10.0.2.3"),
        "no network for Ignition's fetch stage:\n{}",
        keelson::util::cmd::tail(&console, 40)
    );
    assert_eq!(guest.ssh_ok(key, "hostname").trim(), firstboot::HOSTNAME);
    guest.ssh_ok(key, "sudo -n true");
    let status = guest.ssh_ok(key, "keelson status");
    assert!(
        status.contains("* keelson ") && status.contains(firstboot::POLICY_LINE),
        "keelson status as core:\n{status}"
    );
    let once = guest.ssh_ok(key, "cat /var/lib/keelson-vmtest/once.log");
    assert_eq!(once.lines().count(), 1, "first-boot unit: {once}");
    // Ignition succeeded: the flag is gone, so the next boot is a plain one.
    guest.ssh_ok(
        key,
        "test ! -e /boot/ignition.firstboot && test ! -e /boot/ignition",
    );
}

/// After the reboot: the first-boot unit did not run again and Ignition
/// did not run in this boot (it did in the previous one: journal).
fn not_provisioned_again(guest: &firstboot::Guest, key: &Path, text: &str) {
    firstboot::assert_identity(text, "second boot", firstboot::HOSTNAME, false);
    let once = guest.ssh_ok(key, "cat /var/lib/keelson-vmtest/once.log");
    assert_eq!(
        once.lines().count(),
        1,
        "the first-boot unit ran again: {once}"
    );
    let now = guest.ssh_ok(
        key,
        "sudo -n journalctl -q -b 0 -o cat -u ignition-files.service | wc -l",
    );
    assert_eq!(now.trim(), "0", "Ignition ran on the second boot");
    let before = guest.ssh_ok(
        key,
        "sudo -n journalctl -q -b -1 -o cat -u ignition-files.service | grep -c 'files: op(' || true",
    );
    assert!(
        before.trim().parse::<u32>().unwrap_or(0) > 0,
        "no Ignition files stage in the first boot's journal: {before}"
    );
    assert!(
        guest
            .ssh_ok(key, "keelson status")
            .contains(firstboot::POLICY_LINE)
    );
}

/// A config that does not parse stops the first boot in the initramfs,
/// Ignition's error on the console; the node never reaches multi-user.
fn broken_config_stops_the_boot(image: &Path, broken: &Path, d: &Path) {
    let log = d.join("serial-broken.log");
    let out = keelson(&[
        "vm",
        image.to_str().unwrap(),
        "--snapshot",
        "--ignition",
        broken.to_str().unwrap(),
        "--no-validate",
        "--serial-log",
        log.to_str().unwrap(),
        "--expect",
        "KEELSON-VMTEST-RESULT:",
        "--timeout",
        "600",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).replace('\r', "");
    assert!(!out.status.success(), "a broken config booted:\n{err}");
    assert!(err.contains("emergency mode"), "{err}");
    assert!(
        text.contains("keelson: the first boot stopped in the initramfs; failed: ignition-fetch-offline.service")
            && text.contains("unexpected end of JSON input"),
        "Ignition's error is not on the console:\n{}",
        keelson::util::cmd::tail(&text, 40)
    );
    assert!(
        !text.contains("Reached target multi-user"),
        "reached multi-user"
    );
}

/// The drop-in keelson-kubelet-config.service rendered at boot is what the
/// default (gke) profile gives for the capacity the guest reported with
/// nproc, /proc/meminfo and df; `keelson status --json` shows the same.
fn kubelet_config_matches_capacity(text: &str, firmware: &str, memory_mib: u32) {
    use keelson::node::kubelet::{KubeletSettings, node_resources, render};
    let fields: Vec<u64> = text
        .lines()
        .find_map(|l| l.split_once("KEELSON-CAPACITY ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{firmware}: no KEELSON-CAPACITY line"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let cap = keelson::reserve::Capacity {
        cpus: fields[0] as u32,
        memory_kib: fields[1],
        storage_kib: fields[2],
        max_pods: 110,
    };
    // QEMU's -m is the RAM size; MemTotal is that minus what the kernel keeps.
    assert!(
        cap.memory_kib < memory_mib as u64 * 1024
            && cap.memory_kib > memory_mib as u64 * 1024 * 8 / 10,
        "{firmware}: MemTotal {} KiB for -m {memory_mib}",
        cap.memory_kib
    );
    let begin = text
        .find("KEELSON-KUBELET-CONFIG-BEGIN\n")
        .expect("rendered drop-in")
        + 29;
    let end = text[begin..].find("KEELSON-KUBELET-CONFIG-END").unwrap() + begin;
    let rendered = &text[begin..end];
    let settings = KubeletSettings::default();
    assert_eq!(
        rendered,
        render(&settings, &cap).unwrap(),
        "{firmware}: the drop-in on the node is not the gke profile's for {cap:?}"
    );
    // Under 4 GiB the gke profile keeps 25 % of memory for the kubelet.
    let quarter = cap.memory_kib / 4;
    assert!(
        rendered.contains(&format!("  memory: \"{quarter}Ki\"")),
        "{firmware}: kubeReserved memory is not 25 % of {} KiB:\n{rendered}",
        cap.memory_kib
    );
    let json = text
        .lines()
        .find_map(|l| l.split_once("KEELSON-STATUS-JSON ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{firmware}: no KEELSON-STATUS-JSON line"));
    let status: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{firmware}: status JSON: {e}: {json}"));
    let want = serde_json::to_value(node_resources(&settings, &cap).unwrap()).unwrap();
    assert_eq!(status["kubelet"], want, "{firmware}: keelson status --json");
}
