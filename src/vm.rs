//! `keelson vm`: boot an image under QEMU, for developers trying an image
//! and for the VM tests. TCG by default (KVM when asked and working); a
//! fresh copy of the OVMF variables per run; `-no-reboot`, since a reboot
//! inside a TCG guest is very slow: callers relaunch on the same disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::definition::Firmware;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Serial output that means the boot failed; stop at once.
pub const FAILURE_PATTERNS: &[&str] = &[
    "You are in emergency mode",
    "Entering emergency mode",
    "Kernel panic",
    "dracut: Refusing to continue",
];

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The disk image (raw or qcow2).
    pub image: PathBuf,
    /// Firmware to boot with.
    #[arg(long, value_enum, default_value = "uefi")]
    pub firmware: Firmware,
    /// Guest memory in MiB.
    #[arg(long = "memory", default_value_t = 2048)]
    pub memory_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Use KVM instead of TCG emulation (only where /dev/kvm works).
    #[arg(long)]
    pub kvm: bool,
    /// Discard the guest's writes to the image (qemu -snapshot).
    #[arg(long)]
    pub snapshot: bool,
    /// Write the serial console to FILE instead of this terminal.
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,
    /// With --serial-log: succeed as soon as TEXT appears on the console.
    #[arg(long, value_name = "TEXT", requires = "serial_log")]
    pub expect: Option<String>,
    /// With --serial-log: give up after this many seconds.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 600)]
    pub timeout_secs: u64,
    /// Extra disks (virtio), e.g. an update repo image.
    #[arg(long = "disk", value_name = "IMAGE")]
    pub extra_disks: Vec<PathBuf>,
    /// Boot from the network first, QEMU's TFTP server serving DIR (e.g. the
    /// output of `keelson pxe`).
    #[arg(long, value_name = "DIR")]
    pub netboot: Option<PathBuf>,
    /// With --netboot: the boot file QEMU's DHCP names (boot.ipxe for the
    /// iPXE ROM QEMU's NICs carry).
    #[arg(long, default_value = "boot.ipxe", requires = "netboot")]
    pub bootfile: String,
    /// Ignition config for the first boot, passed through QEMU's fw_cfg
    /// (opt/com.coreos/config: Ignition's qemu platform). Validated first.
    #[arg(long, value_name = "FILE", conflicts_with = "ssh_key")]
    pub ignition: Option<PathBuf>,
    /// Boot with a minimal Ignition config: user `core` with this public
    /// key and passwordless sudo; prints the ssh command for the forwarded
    /// port.
    #[arg(long, value_name = "KEY.pub")]
    pub ssh_key: Option<PathBuf>,
    /// Forward this host port on 127.0.0.1 to the guest's SSH port (default
    /// with --ssh-key: a free port).
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// With --ignition: pass the config as it is, unchecked (to see how a
    /// node handles a broken one).
    #[arg(long, requires = "ignition")]
    pub no_validate: bool,
}

#[derive(Debug)]
pub struct Outcome {
    pub seconds: f64,
    /// The serial log's content (when logging to a file).
    pub log: String,
}

/// qcow2 or raw, from the first 4 bytes (only those are read).
fn image_format(p: &Path) -> &'static str {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Ok(()) if &magic == b"QFI\xfb" => "qcow2",
        _ => "raw",
    }
}

/// What the guest gets besides its disks: the Ignition config (fw_cfg) and
/// the forwarded SSH port.
#[derive(Debug, Default)]
struct Extras {
    ignition: Option<PathBuf>,
    ssh_port: Option<u16>,
}

/// The config to pass and the SSH port to forward; the generated config
/// for --ssh-key is written into `work`.
fn extras(o: &Options, work: &Path) -> Result<Extras> {
    let mut x = Extras {
        ssh_port: o.ssh_port,
        ..Default::default()
    };
    if let Some(f) = &o.ignition {
        if !o.no_validate {
            crate::provision::ignition::load_file(f).context("--ignition")?;
        } else if !f.is_file() {
            bail!("--ignition {}: no such file", f.display());
        }
        x.ignition = Some(f.clone());
    }
    if let Some(key) = &o.ssh_key {
        let text = fs_err::read_to_string(key).context("--ssh-key")?;
        let config = crate::provision::ignition::ssh_key_config(&text)
            .with_context(|| format!("--ssh-key {}", key.display()))?;
        crate::provision::ignition::validate("the --ssh-key config", config.as_bytes())?;
        let p = work.join("ssh-key.ign");
        fs_err::write(&p, config)?;
        x.ignition = Some(p);
        if x.ssh_port.is_none() {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            x.ssh_port = Some(l.local_addr()?.port());
        }
        let private = key.with_extension("");
        eprintln!(
            "keelson vm: once the node is up: ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null core@127.0.0.1",
            private.display(),
            x.ssh_port.expect("set above")
        );
    }
    Ok(x)
}

fn command(o: &Options, vars: Option<&Path>, x: &Extras) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-machine",
        "q35",
        "-m",
        &o.memory_mib.to_string(),
        "-smp",
        &o.cpus.to_string(),
    ]);
    if o.kvm {
        c.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        c.args(["-accel", "tcg", "-cpu", "max"]);
    }
    c.args(["-display", "none", "-no-reboot", "-nic"]);
    let mut nic = "user,model=virtio-net-pci".to_string();
    if let Some(port) = x.ssh_port {
        nic += &format!(",hostfwd=tcp:127.0.0.1:{port}-:22");
    }
    match &o.netboot {
        Some(dir) => {
            c.arg(format!(
                "{nic},tftp={},bootfile={}",
                dir.display(),
                o.bootfile
            ));
            c.args(["-boot", "order=n"]);
        }
        None => {
            c.arg(nic);
        }
    }
    if let Some(ign) = &x.ignition {
        c.arg("-fw_cfg")
            .arg(format!("name=opt/com.coreos/config,file={}", ign.display()));
    }
    c.arg("-drive").arg(format!(
        "file={},if=virtio,format={}",
        o.image.display(),
        image_format(&o.image)
    ));
    for d in &o.extra_disks {
        c.arg("-drive").arg(format!(
            "file={},if=virtio,format={}",
            d.display(),
            image_format(d)
        ));
    }
    if o.snapshot {
        c.arg("-snapshot");
    }
    if let Some(vars) = vars {
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ));
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    }
    match &o.serial_log {
        Some(log) => {
            c.args(["-monitor", "none", "-serial"])
                .arg(format!("file:{}", log.display()));
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
        }
        None => {
            c.args(["-serial", "mon:stdio"]);
        }
    }
    c
}

/// Boot the image; with a serial log, watch it for `expect` and the
/// failure patterns, and give up after the timeout.
pub fn run(o: &Options) -> Result<Outcome> {
    if !o.image.is_file() {
        bail!("{}: no such image", o.image.display());
    }
    let work = tempfile::tempdir()?;
    let vars = match o.firmware {
        Firmware::Uefi => {
            let v = work.path().join("OVMF_VARS.fd");
            fs_err::copy(OVMF_VARS, &v)
                .with_context(|| format!("{OVMF_VARS}: OVMF missing (package ovmf)"))?;
            Some(v)
        }
        Firmware::Bios => None,
    };
    if let Some(log) = &o.serial_log {
        // QEMU appends to an existing file: start from an empty log.
        crate::util::fsutil::remove_any(log)?;
    }
    let x = extras(o, work.path())?;
    let mut cmd = command(o, vars.as_deref(), &x);
    tracing::debug!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    let Some(log) = &o.serial_log else {
        let status = child.wait()?;
        if !status.success() {
            bail!("qemu exited with {status}");
        }
        return Ok(Outcome {
            seconds: start.elapsed().as_secs_f64(),
            log: String::new(),
        });
    };
    let result = watch(&mut child, log, o, start);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn watch(child: &mut Child, log: &Path, o: &Options, start: Instant) -> Result<Outcome> {
    loop {
        let text = fs_err::read(log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let seconds = start.elapsed().as_secs_f64();
        if let Some(p) = FAILURE_PATTERNS.iter().find(|p| text.contains(*p)) {
            bail!(
                "boot failed after {seconds:.0}s: serial console shows {p:?}\n{}",
                crate::util::cmd::tail(&text, 30)
            );
        }
        if let Some(e) = &o.expect
            && text.contains(e.as_str())
        {
            return Ok(Outcome { seconds, log: text });
        }
        if let Some(status) = child.try_wait()? {
            if o.expect.is_none() {
                return Ok(Outcome { seconds, log: text });
            }
            let stderr = child
                .stderr
                .take()
                .map(|mut s| {
                    let mut buf = String::new();
                    let _ = std::io::Read::read_to_string(&mut s, &mut buf);
                    buf
                })
                .unwrap_or_default();
            bail!(
                "qemu exited ({status}) after {seconds:.0}s before {:?} appeared{}\n{}",
                o.expect.as_deref().unwrap_or(""),
                if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", stderr.trim())
                },
                crate::util::cmd::tail(&text, 30)
            );
        }
        if start.elapsed().as_secs() > o.timeout_secs {
            bail!(
                "no {:?} on the serial console within {}s\n{}",
                o.expect.as_deref().unwrap_or("power-off"),
                o.timeout_secs,
                crate::util::cmd::tail(&text, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
