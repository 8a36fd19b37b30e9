//! First-boot provisioning in the VM tier (tests/vm.rs): the Ignition
//! configs the test boots with, a guest that stays up for `ssh`, and the
//! checks that nothing secret or machine-specific is baked into a commit
//! or an image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::run;
use keelson::util::cmd::tail;

/// The hostname the fw_cfg config gives the node.
pub const HOSTNAME: &str = "keelson-ign-test";
/// The hostname the network install's config (fetched by the installer).
pub const NETINSTALL_HOSTNAME: &str = "keelson-netinstalled";
/// What `keelson status` shows for the fragment the config drops in.
pub const POLICY_LINE: &str = "Update policy: reboot in the window Sat,Sun 02:00 UTC for 3 h";

/// A data: URL (RFC 2397, percent-encoded) holding `text`.
fn data_url(text: &str) -> String {
    let mut s = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s += &format!("%{b:02X}");
        }
    }
    s
}

fn file(path: &str, mode: u32, text: &str) -> serde_json::Value {
    serde_json::json!({"path": path, "mode": mode, "overwrite": true,
                       "contents": {"source": data_url(text)}})
}

/// The configs and the key, in `dir` and under `www/ignition/`.
#[derive(Debug)]
pub struct Configs {
    /// Private key of user `core` (a fresh one per run).
    pub key: PathBuf,
    /// Passed through fw_cfg: user `core` with the key and sudo, the
    /// hostname, a first-boot unit that records each boot it runs in, the
    /// marker that keeps the test fixture from powering off (/etc/keelson-vmtest-stay-up), and a merge of
    /// `extra.ign` over HTTP (the initramfs brings the network up for it).
    pub fw_cfg: PathBuf,
    /// Bad JSON: the boot must stop in the initramfs.
    pub broken: PathBuf,
}

pub fn write_configs(dir: &Path, www: &Path, port: u16) -> Configs {
    let key = dir.join("id_core");
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "keelson-vmtest",
            "-f",
        ])
        .arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let user = serde_json::json!({"name": "core", "groups": ["sudo"],
                                  "sshAuthorizedKeys": [public.trim()]});
    let sudoers = file(
        "/etc/sudoers.d/90-core",
        0o440,
        "core ALL=(ALL) NOPASSWD: ALL\n",
    );
    // keelson's first-boot condition: the boot Ignition runs in. (systemd's
    // ConditionFirstBoot= does not hold: images ship an empty machine-id.)
    let once = "[Unit]\nDescription=keelson VM test: records each boot it runs in (first boot only)\n\
                ConditionKernelCommandLine=ignition.firstboot\n\n[Service]\nType=oneshot\n\
                ExecStart=/bin/sh -c 'mkdir -p /var/lib/keelson-vmtest && cat /proc/sys/kernel/random/boot_id >> /var/lib/keelson-vmtest/once.log'\n\n\
                [Install]\nWantedBy=multi-user.target\n";
    let ign = www.join("ignition");
    std::fs::create_dir_all(&ign).unwrap();
    let extra = serde_json::json!({
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [file(
            "/etc/keelson/config.d/50-vmtest-window.toml", 0o644,
            "[updates]\nreboot = \"window\"\n\n[updates.window]\ndays = [\"Sat\", \"Sun\"]\nstart_hour = 2\nlength_hours = 3\n",
        )]},
    });
    std::fs::write(ign.join("extra.ign"), extra.to_string()).unwrap();
    let main = serde_json::json!({
        "ignition": {"version": "3.3.0", "config": {"merge": [
            {"source": format!("http://10.0.2.2:{port}/ignition/extra.ign")}]}},
        "passwd": {"users": [user]},
        "storage": {"files": [
            file("/etc/hostname", 0o644, &format!("{HOSTNAME}\n")),
            sudoers,
            file("/etc/keelson-vmtest-stay-up", 0o644, ""),
        ]},
        "systemd": {"units": [{"name": "keelson-vmtest-once.service", "enabled": true, "contents": once}]},
    });
    let fw_cfg = dir.join("node.ign");
    std::fs::write(&fw_cfg, serde_json::to_string_pretty(&main).unwrap()).unwrap();
    // The network install's node: its user and hostname (fetched and
    // embedded by the installer).
    let netinstall = serde_json::json!({
        "ignition": {"version": "3.3.0"},
        "passwd": {"users": [user]},
        "storage": {"files": [file("/etc/hostname", 0o644, &format!("{NETINSTALL_HOSTNAME}\n"))]},
    });
    std::fs::write(ign.join("netinstall.ign"), netinstall.to_string()).unwrap();
    let broken = dir.join("broken.ign");
    std::fs::write(&broken, r#"{"ignition": {"version": "3.3.0"}, "passwd": "#).unwrap();
    Configs {
        key,
        fw_cfg,
        broken,
    }
}

/// A booted guest `keelson vm` runs in the background.
pub struct Guest {
    child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Guest {
    /// Boot `disk` (written to: first boot, then the reboot) with the
    /// extra `keelson vm` arguments, SSH forwarded to `port`.
    pub fn boot(
        disk: &Path,
        firmware: &str,
        memory_mib: u32,
        log: &Path,
        port: u16,
        extra: &[&str],
    ) -> Guest {
        let child = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("vm")
            .arg(disk)
            .args(["--firmware", firmware, "--memory", &memory_mib.to_string()])
            .args([
                "--ssh-port",
                &port.to_string(),
                "--timeout",
                "900",
                "--serial-log",
            ])
            .arg(log)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("keelson vm");
        Guest {
            child,
            log: log.to_path_buf(),
            port,
        }
    }

    pub fn console(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    /// Wait until the test fixture reported and stays up.
    pub fn wait_up(&mut self) -> String {
        let start = Instant::now();
        loop {
            let text = self.console();
            if text.contains("KEELSON-VMTEST-STAYING-UP") {
                // For docs/performance.md: first boot (Ignition) vs reboot.
                eprintln!(
                    "{}: node up (test fixture done) after {:.0} s",
                    self.log.display(),
                    start.elapsed().as_secs_f64()
                );
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "keelson vm exited ({status}) before the node was up:\n{}",
                    tail(&text, 60)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(900),
                "the node did not come up in 900 s:\n{}",
                tail(&text, 60)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Run `cmd` on the node as `core` over a real ssh connection.
    pub fn ssh(&self, key: &Path, cmd: &str) -> (bool, String) {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
            ])
            .args(["core@127.0.0.1", cmd])
            .output()
            .expect("ssh (package openssh-client)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn ssh_ok(&self, key: &Path, cmd: &str) -> String {
        let (ok, text) = self.ssh(key, cmd);
        assert!(ok, "ssh core@node {cmd:?} failed:\n{text}");
        text
    }

    /// `cmd` (a reboot or a power-off) ends the QEMU process (-no-reboot).
    pub fn shut_down(mut self, key: &Path, cmd: &str) {
        let _ = self.ssh(key, cmd);
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the node did not go down after {cmd:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture's identity line: `hostname` and user `core` from the
/// config; `firstboot` whether this boot ran Ignition.
pub fn assert_identity(console: &str, what: &str, hostname: &str, firstboot: bool) {
    let want = format!(
        "KEELSON-IDENTITY hostname={hostname} core=core:/home/core firstboot={}",
        u8::from(firstboot)
    );
    assert!(
        console.contains(&want),
        "{what}: want {want:?}, got:\n{}",
        console
            .lines()
            .filter(|l| l.contains("KEELSON-IDENTITY"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The shadow file's password fields are all locked or disabled.
fn assert_no_password_hashes(what: &str, shadow: &str) {
    for l in shadow.lines().filter(|l| !l.trim().is_empty()) {
        let field = l.split(':').nth(1).unwrap_or_default();
        assert!(
            field.starts_with('*') || field.starts_with('!'),
            "{what}: a password is set for {:?}",
            l.split(':').next()
        );
    }
}

/// Nothing secret or machine-specific in the commit: no SSH host keys or
/// authorized keys, no Ignition config, locked passwords, no machine-id.
pub fn assert_commit_has_no_secrets(repo: &Path, reference: &str) {
    let r = format!("--repo={}", repo.display());
    let listing = run(Command::new("ostree").args([&r, "ls", "-R", reference]));
    for bad in [
        "ssh_host_",
        "authorized_keys",
        "/ignition/config.ign",
        "user.ign",
    ] {
        let hits: Vec<&str> = listing.lines().filter(|l| l.contains(bad)).collect();
        assert!(
            hits.is_empty(),
            "commit {reference} holds {bad}:\n{}",
            hits.join("\n")
        );
    }
    let shadow = run(Command::new("ostree").args([&r, "cat", reference, "/usr/etc/shadow"]));
    assert_no_password_hashes("the commit's /usr/etc/shadow", &shadow);
    let mid = run(Command::new("ostree").args([&r, "cat", reference, "/usr/etc/machine-id"]));
    assert!(
        mid.trim().is_empty(),
        "the commit carries a machine-id: {mid}"
    );
}

/// Partitions of a raw image mounted read-only (through offset loop
/// mounts: no partition devices to wait for); unmounted on drop.
struct Mounted(Vec<PathBuf>);

impl Drop for Mounted {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

/// The same checks on an image's root and /boot filesystems (partitions 4
/// and 3 of the default layout), and /boot holds the first-boot flag for
/// the qemu platform but no config.
pub fn assert_image_has_no_secrets(raw: &Path, mnt: &Path) {
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(raw))).unwrap();
    let parts = &table["partitiontable"]["partitions"];
    let mut m = Mounted(vec![]);
    let (root, boot) = (mnt.join("root"), mnt.join("boot"));
    for (i, at) in [(3, &root), (2, &boot)] {
        let (start, size) = (
            parts[i]["start"].as_u64().unwrap(),
            parts[i]["size"].as_u64().unwrap(),
        );
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args([
                "-o",
                &format!(
                    "ro,noload,loop,offset={},sizelimit={}",
                    start * 512,
                    size * 512
                ),
            ])
            .arg(raw)
            .arg(at));
        m.0.push(at.clone());
    }
    let found = run(Command::new("find").arg(&root).arg(&boot).args([
        "(",
        "-name",
        "ssh_host_*",
        "-o",
        "-name",
        "authorized_keys*",
        "-o",
        "-name",
        "*.ign",
        ")",
        "-print",
    ]));
    assert!(
        found.trim().is_empty(),
        "the image holds keys or configs:\n{found}"
    );
    let deploy = run(Command::new("sh").arg("-c").arg(format!(
        "ls -d {}/ostree/deploy/*/deploy/*.0",
        root.display()
    )));
    let deploy = Path::new(deploy.trim());
    let shadow = std::fs::read_to_string(deploy.join("etc/shadow")).unwrap();
    assert_no_password_hashes("the image's /etc/shadow", &shadow);
    let mid = std::fs::read_to_string(deploy.join("etc/machine-id")).unwrap_or_default();
    assert!(
        mid.trim().is_empty(),
        "the image carries a machine-id: {mid}"
    );
    let flag =
        std::fs::read_to_string(boot.join("ignition.firstboot")).expect("first-boot flag on /boot");
    assert!(flag.contains("set ignition_platform=\"qemu\""), "{flag}");
    assert!(
        !boot.join("ignition").exists(),
        "an image must not embed a config"
    );
    drop(m);
}
