//! The `keelson` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "Immutable-OS image builder and node agent for Kubernetes nodes",
    long_about = "keelson composes rpm-ostree-format treefiles into ostree commits on a \
                  Debian base (build side) and runs on the nodes it builds (node side)."
)]
struct Cli {
    /// Log more (repeat for debug output). Also RUST_LOG=keelson=debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compose a treefile into an ostree commit.
    Compose(ComposeArgs),
    /// Build a bootable disk image (raw or qcow2) from a commit.
    Image(ImageArgs),
    /// Compose a treefile and build its images in one step (for CI); writes
    /// the artifacts and meta.json into the output directory.
    Build(BuildArgs),
    /// Boot an image under QEMU (TCG unless --kvm) with the serial console
    /// on this terminal or in a file.
    Vm(VmArgs),
    /// Node: show the booted, staged and rollback deployments.
    Status(StatusArgs),
    /// Node: pull the followed ref and stage a newer commit (boot counting armed).
    Upgrade(UpgradeArgs),
    /// Node: stage a specific commit or version (even one blocked after a failure).
    Deploy(DeployArgs),
    /// Node: make the rollback deployment the default.
    Rollback(RebootArgs),
    /// Node: run the boot health checks and act on them (keelson-health.service).
    Health(SysrootArg),
    /// Node: the update agent (keelson-update.timer): stage updates, reboot per policy.
    Agent(SysrootArg),
    /// Node: render the kubelet configuration drop-in with reserved resources
    /// computed from this machine's capacity (or the one given, to preview).
    KubeletConfig(KubeletConfigArgs),
    /// Install a node onto a disk from an ostree repository URL (what
    /// anaconda's ostreesetup does): partition, pull, deploy, GRUB. Checks
    /// the device, URL, ref and signature before touching the disk.
    Install(InstallArgs),
    /// Network-install artifacts for a commit: kernel, installer initramfs,
    /// PXELINUX/iPXE/GRUB configs, a kickstart and SHA256SUMS.
    Pxe(PxeArgs),
    /// Render a kickstart file (anaconda `ostreesetup`) that installs a ref
    /// from a URL, with the image definition's disk layout.
    Kickstart(KickstartArgs),
    /// Commit an already ostree-shaped directory (the commit step of
    /// compose on its own; what bench/commit.sh times against `ostree commit`).
    Commit(CommitArgs),
}

#[derive(clap::Args)]
struct InstallArgs {
    /// The whole disk to install onto (everything on it is lost).
    #[arg(long, required_unless_present = "from_cmdline")]
    device: Option<PathBuf>,
    /// The ostree repository URL to install from.
    #[arg(long, required_unless_present = "from_cmdline")]
    url: Option<String>,
    /// The ref to install; the node follows it for updates.
    #[arg(long = "ref", required_unless_present = "from_cmdline")]
    ref_: Option<String>,
    /// The stateroot (default: the image definition's).
    #[arg(long)]
    osname: Option<String>,
    /// Image definition for the partition sizes (root takes the rest of the
    /// disk), kernel arguments, firmware and remote name (default: the
    /// built-in images/default.json).
    #[arg(long)]
    definition: Option<PathBuf>,
    /// Extra kernel argument for the installed node (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    kargs: Vec<String>,
    /// Verify the commit (and later updates) against this keyring.
    #[arg(long)]
    gpg_keyring: Option<PathBuf>,
    /// The node's update URL after the install (default: --url).
    #[arg(long)]
    update_url: Option<String>,
    /// Reboot into the installed node when done.
    #[arg(long)]
    reboot: bool,
    /// Erase a disk that already holds a partition table or filesystem
    /// (without it such a disk is refused).
    #[arg(long)]
    wipe: bool,
    /// Take everything from keelson.install.* kernel arguments (the PXE
    /// installer): device, url, ref, osname, karg, update_url, gpg_keyring,
    /// reboot, wipe.
    #[arg(long, conflicts_with_all = ["device", "url", "ref_"])]
    from_cmdline: bool,
}

#[derive(clap::Args)]
struct PxeArgs {
    /// The ostree repo holding the commit (the installer's kernel and
    /// initramfs come from its tree).
    #[arg(long)]
    repo: PathBuf,
    /// The ref to install.
    #[arg(long = "ref")]
    ref_: String,
    /// Output directory (created; must not exist or be empty).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// The repository URL the installer pulls from (default: the image
    /// definition's remote URL).
    #[arg(long)]
    url: Option<String>,
    /// The disk the installer erases and installs onto.
    #[arg(long, default_value = "/dev/vda")]
    device: String,
    /// http(s) URL the artifacts will be served from (absolute paths in the
    /// boot configs); default: paths relative to the TFTP root.
    #[arg(long)]
    pxe_url: Option<String>,
    /// Image definition (default: the built-in images/default.json).
    #[arg(long)]
    definition: Option<PathBuf>,
    /// Kernel argument for the installed node (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    kargs: Vec<String>,
    /// Kernel argument for the installer itself (repeatable; default:
    /// console=tty0 console=ttyS0,115200n8).
    #[arg(long = "installer-karg", value_name = "ARG")]
    installer_kargs: Vec<String>,
    /// Keyring the installer verifies the commit with (and the node keeps).
    #[arg(long)]
    gpg_keyring: Option<PathBuf>,
    /// The node's update URL after the install (default: --url).
    #[arg(long)]
    update_url: Option<String>,
    /// Let the installer erase a disk that already holds data
    /// (keelson.install.wipe); without it such a disk is refused.
    #[arg(long)]
    wipe: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct KickstartArgs {
    /// The ostree repository URL the installer pulls from.
    #[arg(long)]
    url: String,
    /// The ref to install, e.g. keelson/12/x86_64/k8s-node.
    #[arg(long = "ref")]
    ref_: String,
    /// The stateroot (default: the image definition's).
    #[arg(long)]
    osname: Option<String>,
    /// Remote name on the node (default: the image definition's).
    #[arg(long)]
    remote: Option<String>,
    /// Where the node looks for updates after the install (default: --url).
    #[arg(long)]
    update_url: Option<String>,
    /// Install without verifying signatures (ostreesetup --nogpg).
    #[arg(long)]
    nogpg: bool,
    /// A shipped template (ostree, ostree-minimal) or a template file.
    #[arg(long, default_value = "ostree")]
    template: String,
    /// Extra template variable NAME=VALUE (repeatable): ssh_key, hostname,
    /// disk, timezone, lang, keyboard in the shipped templates.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Image definition for partition sizes and kernel arguments.
    #[arg(long, default_value = "images/default.json")]
    definition: PathBuf,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ImageArgs {
    /// The ostree repo holding the commit.
    #[arg(long)]
    repo: PathBuf,
    /// The ref to install (the node follows REMOTE:REF for updates).
    #[arg(long = "ref", value_name = "REF")]
    ref_: String,
    /// Image definition (partitions, kernel arguments, firmware, remote).
    #[arg(long, default_value = "images/default.json")]
    definition: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "qcow2")]
    format: keelson::image::definition::Format,
    /// The image file to write (appears only when complete).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// URL of the node's update remote (default: the definition's).
    #[arg(long)]
    remote_url: Option<String>,
    /// GPG public keyring for the node's remote: the node then refuses
    /// updates not signed by one of its keys.
    #[arg(long, value_name = "FILE")]
    gpg_keyring: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The treefile to compose.
    treefile: PathBuf,
    /// Directory for the repo, images and meta.json.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Image definition.
    #[arg(long, default_value = "images/default.json")]
    definition: PathBuf,
    /// Package cache and work directory (as for compose).
    #[arg(long)]
    cachedir: Option<PathBuf>,
    /// URL of the node's update remote (default: the definition's).
    #[arg(long)]
    remote_url: Option<String>,
    /// Print meta.json on standard output as well.
    #[arg(long)]
    json: bool,
    /// Also write the network-install artifacts (`keelson pxe`) into pxe/.
    #[arg(long)]
    pxe: bool,
    /// With --pxe: the repository URL the installer pulls from (default:
    /// the definition's remote URL).
    #[arg(long, requires = "pxe")]
    pxe_repo_url: Option<String>,
    /// With --pxe: where the artifacts will be served over http(s).
    #[arg(long, requires = "pxe")]
    pxe_url: Option<String>,
    /// With --pxe: the disk the installer erases and installs onto.
    #[arg(long, default_value = "/dev/vda", requires = "pxe")]
    pxe_device: String,
    /// With --pxe: the installer may erase a disk that already holds data.
    #[arg(long, requires = "pxe")]
    pxe_wipe: bool,
    /// With --pxe: the installed node's update URL (default: the URL the
    /// installer pulls from).
    #[arg(long, requires = "pxe")]
    pxe_update_url: Option<String>,
}

#[derive(clap::Args)]
struct VmArgs {
    /// The disk image (raw or qcow2).
    image: PathBuf,
    /// Firmware to boot with.
    #[arg(long, value_enum, default_value = "uefi")]
    firmware: keelson::image::definition::Firmware,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Use KVM instead of TCG emulation (only where /dev/kvm works).
    #[arg(long)]
    kvm: bool,
    /// Discard the guest's writes to the image.
    #[arg(long)]
    snapshot: bool,
    /// Write the serial console to FILE instead of this terminal.
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,
    /// With --serial-log: succeed as soon as TEXT appears on the console.
    #[arg(long, value_name = "TEXT", requires = "serial_log")]
    expect: Option<String>,
    /// With --serial-log: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Boot from the network first, QEMU's TFTP server serving DIR (e.g. the
    /// output of `keelson pxe`).
    #[arg(long, value_name = "DIR")]
    netboot: Option<PathBuf>,
    /// With --netboot: the boot file QEMU's DHCP names.
    #[arg(long, default_value = "boot.ipxe", requires = "netboot")]
    bootfile: String,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// The sysroot to inspect.
    #[arg(long, default_value = "/")]
    sysroot: PathBuf,
}

#[derive(clap::Args)]
struct KubeletConfigArgs {
    /// Reservation profile (default: the configuration's, else gke).
    #[arg(long, value_enum)]
    profile: Option<keelson::reserve::Profile>,
    /// Preview for this many CPUs instead of this machine's.
    #[arg(long, requires_all = ["memory", "storage"])]
    cpus: Option<u32>,
    /// Preview memory, e.g. 16Gi.
    #[arg(long, requires_all = ["cpus", "storage"])]
    memory: Option<String>,
    /// Preview size of the kubelet's filesystem, e.g. 100Gi.
    #[arg(long, requires_all = ["cpus", "memory"])]
    storage: Option<String>,
    /// maxPods to render and compute with (default: the configuration's, else 110).
    #[arg(long)]
    max_pods: Option<u32>,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SysrootArg {
    /// The sysroot (`/` on a node).
    #[arg(long, default_value = "/")]
    sysroot: PathBuf,
}

#[derive(clap::Args)]
struct RebootArgs {
    /// Reboot into the result.
    #[arg(long)]
    reboot: bool,
    #[command(flatten)]
    sysroot: SysrootArg,
}

#[derive(clap::Args)]
struct UpgradeArgs {
    /// Only say whether a newer commit exists (pulls just the commit object).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    common: RebootArgs,
}

#[derive(clap::Args)]
struct DeployArgs {
    /// A commit checksum, or a version on the followed ref.
    target: String,
    #[command(flatten)]
    common: RebootArgs,
}

#[derive(clap::Args)]
struct CommitArgs {
    /// The directory to commit.
    dir: PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// The ref (branch) to point at the new commit.
    #[arg(long, short = 'b')]
    branch: String,
    /// Commit subject line.
    #[arg(long, short = 's', default_value = "keelson commit")]
    subject: String,
    /// Threads hashing and compressing objects (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Commit timestamp in seconds since the epoch (default:
    /// SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<u64>,
    /// Sign the commit with this GPG key id.
    #[arg(long, value_name = "KEYID")]
    gpg_sign: Option<String>,
    /// GnuPG home directory holding the signing key.
    #[arg(long, value_name = "DIR", requires = "gpg_sign")]
    gpg_homedir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ComposeArgs {
    /// The treefile (rpm-ostree JSON format) to compose.
    treefile: PathBuf,
    /// The ostree repo to commit into (an archive repo is created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// Directory for downloaded packages and the work tree; a recompose with
    /// the same cache downloads nothing again.
    #[arg(long)]
    cachedir: Option<PathBuf>,
    /// Print the flattened treefile (includes merged) as JSON and exit.
    #[arg(long)]
    print_only: bool,
    /// Resolve packages and compute the inputhash, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Compose even when the inputhash matches the ref's last commit.
    #[arg(long)]
    force_nocache: bool,
    /// Create or update the mtime of FILE when a new commit is written.
    #[arg(long, value_name = "FILE")]
    touch_if_changed: Option<PathBuf>,
    /// Write the result (ref, commit, version, inputhash, ...) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    write_composejson_to: Option<PathBuf>,
    /// Threads hashing and compressing objects during the commit
    /// (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    commit_threads: Option<usize>,
    /// Sign the commit with this GPG key id.
    #[arg(long, value_name = "KEYID")]
    gpg_sign: Option<String>,
    /// GnuPG home directory holding the signing key.
    #[arg(long, value_name = "DIR", requires = "gpg_sign")]
    gpg_homedir: Option<PathBuf>,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "keelson=info",
        1 => "keelson=debug",
        _ => "keelson=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH: {v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image(a) => {
            let art = keelson::image::build(&keelson::image::Options {
                repo: a.repo,
                ref_: a.ref_,
                definition: a.definition,
                format: a.format,
                output: a.output.clone(),
                remote_url: a.remote_url,
                gpg_keyring: a.gpg_keyring,
            })?;
            println!("Wrote {} ({} bytes)", a.output.display(), art.size);
            Ok(())
        }
        Command::Install(a) => {
            keelson::node::commands::ensure_root()?;
            let opts = if a.from_cmdline {
                let cmdline =
                    std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
                keelson::provision::install::from_cmdline(&cmdline)?
            } else {
                keelson::provision::install::Options {
                    device: a.device.expect("clap: required"),
                    url: a.url.expect("clap: required"),
                    ref_: a.ref_.expect("clap: required"),
                    osname: a.osname,
                    definition: a.definition,
                    kargs: a.kargs,
                    gpg_keyring: a.gpg_keyring,
                    update_url: a.update_url,
                    reboot: a.reboot,
                    wipe: a.wipe,
                }
            };
            let commit = keelson::provision::install::run(&opts)?;
            println!(
                "Installed {} ({commit}) from {} onto {}.",
                opts.ref_,
                opts.url,
                opts.device.display()
            );
            if opts.reboot {
                keelson::provision::install::reboot()?;
            }
            Ok(())
        }
        Command::Pxe(a) => {
            let def = keelson::provision::install::definition(a.definition.as_deref())?;
            let installer_kargs = if a.installer_kargs.is_empty() {
                keelson::provision::pxe::DEFAULT_INSTALLER_KARGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                a.installer_kargs
            };
            let art = keelson::provision::pxe::run(&keelson::provision::pxe::Options {
                repo: a.repo,
                ref_: a.ref_,
                output: a.output,
                url: a.url.unwrap_or(def.remote.url),
                device: a.device,
                pxe_url: a.pxe_url,
                definition: a.definition,
                kargs: a.kargs,
                installer_kargs,
                gpg_keyring: a.gpg_keyring,
                update_url: a.update_url,
                wipe: a.wipe,
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&art)?);
            } else {
                println!(
                    "PXE artifacts in {} (kernel {}):",
                    art.directory, art.kernel_version
                );
                for (f, h) in &art.files {
                    println!("  {f}  {h}");
                }
                println!("installer command line: {}", art.cmdline);
            }
            Ok(())
        }
        Command::Kickstart(a) => {
            let def = keelson::image::definition::Definition::load(&a.definition)?;
            let mut vars = std::collections::BTreeMap::new();
            for v in &a.vars {
                let (k, val) = keelson::provision::kickstart::parse_var(v)?;
                vars.insert(k, val);
            }
            let params = keelson::provision::kickstart::Params {
                url: a.url,
                ref_: a.ref_,
                osname: a.osname.unwrap_or_else(|| def.osname.clone()),
                remote: a.remote.unwrap_or_else(|| def.remote.name.clone()),
                nogpg: a.nogpg,
                update_url: a.update_url,
                vars,
            };
            let (name, text) = keelson::provision::kickstart::template(&a.template)?;
            let ks = keelson::provision::kickstart::render(&name, &text, &def, &params)?;
            match a.output {
                Some(p) => keelson::util::fsutil::write_atomic(&p, ks.as_bytes())
                    .with_context(|| format!("--output {}", p.display()))?,
                None => print!("{ks}"),
            }
            Ok(())
        }
        Command::Build(a) => {
            let meta = keelson::build::run(&keelson::build::Options {
                treefile: a.treefile,
                output: a.output,
                definition: a.definition,
                cachedir: a.cachedir,
                remote_url: a.remote_url,
                threads: threads(None),
                source_date_epoch: source_date_epoch()?,
                pxe: a.pxe.then_some(keelson::build::PxeRequest {
                    url: a.pxe_repo_url,
                    pxe_url: a.pxe_url,
                    device: a.pxe_device,
                    wipe: a.pxe_wipe,
                    update_url: a.pxe_update_url,
                }),
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&meta)?);
            }
            Ok(())
        }
        Command::Vm(a) => {
            let out = keelson::vm::run(&keelson::vm::Options {
                image: a.image,
                firmware: a.firmware,
                memory_mib: a.memory,
                cpus: a.cpus,
                kvm: a.kvm,
                snapshot: a.snapshot,
                serial_log: a.serial_log,
                expect: a.expect.clone(),
                timeout: std::time::Duration::from_secs(a.timeout),
                extra_disks: vec![],
                netboot: a.netboot.map(|d| (d, a.bootfile)),
            })?;
            if let Some(e) = a.expect {
                println!("{e:?} seen after {:.0}s", out.seconds);
            }
            Ok(())
        }
        Command::Upgrade(a) => {
            keelson::node::commands::ensure_root()?;
            keelson::node::commands::upgrade(&a.common.sysroot.sysroot, a.check, a.common.reboot)
        }
        Command::Deploy(a) => {
            keelson::node::commands::ensure_root()?;
            keelson::node::commands::deploy_target(
                &a.common.sysroot.sysroot,
                &a.target,
                a.common.reboot,
            )
        }
        Command::Rollback(a) => {
            keelson::node::commands::ensure_root()?;
            keelson::node::commands::rollback(&a.sysroot.sysroot, a.reboot)
        }
        Command::Health(a) => {
            keelson::node::commands::ensure_root()?;
            if keelson::node::commands::health(&a.sysroot)? {
                Ok(())
            } else {
                anyhow::bail!("health checks failed")
            }
        }
        Command::Agent(a) => {
            keelson::node::commands::ensure_root()?;
            keelson::node::commands::agent(&a.sysroot)
        }
        Command::KubeletConfig(a) => {
            let cfg = keelson::node::config::load()?;
            let mut settings = cfg.kubelet;
            if let Some(p) = a.profile {
                settings.profile = p;
            }
            if let Some(m) = a.max_pods {
                settings.max_pods = m;
            }
            settings.validate()?;
            let cap = match (a.cpus, a.memory, a.storage) {
                (Some(cpus), Some(memory), Some(storage)) => keelson::reserve::Capacity {
                    cpus,
                    memory_kib: keelson::node::quantity::size_kib(&memory).context("--memory")?,
                    storage_kib: keelson::node::quantity::size_kib(&storage)
                        .context("--storage")?,
                    max_pods: settings.max_pods,
                },
                _ => keelson::node::kubelet::machine_capacity(
                    std::path::Path::new(keelson::node::kubelet::KUBELET_DIR),
                    settings.max_pods,
                )?,
            };
            let text = keelson::node::kubelet::render(&settings, &cap)?;
            match a.output {
                Some(p) => keelson::util::fsutil::write_atomic(&p, text.as_bytes())
                    .with_context(|| format!("--output {}", p.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Status(a) => {
            let st = keelson::node::status::read(&a.sysroot)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", keelson::node::status::render(&st));
            }
            Ok(())
        }
        Command::Commit(a) => {
            let ts = match (a.timestamp, source_date_epoch()?) {
                (Some(t), _) => t,
                (None, Some(sde)) => sde.max(0) as u64,
                (None, None) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs(),
            };
            let repo = keelson::commit::open_or_create(&a.repo)?;
            let parent = keelson::commit::previous(&repo, &a.branch)?.map(|p| p.checksum);
            let meta = ostree::glib::VariantDict::new(None).end();
            let checksum = keelson::commit::write(
                &repo,
                &keelson::commit::Request {
                    ref_: &a.branch,
                    parent: parent.as_deref(),
                    rootfs: &a.dir,
                    metadata: &meta,
                    subject: &a.subject,
                    timestamp: ts,
                    threads: threads(a.threads),
                    gpg: a
                        .gpg_sign
                        .as_deref()
                        .map(|key_id| keelson::commit::GpgSign {
                            key_id,
                            homedir: a.gpg_homedir.as_deref(),
                        }),
                },
            )?;
            println!("{checksum}");
            Ok(())
        }
        Command::Compose(a) => {
            let threads = threads(a.commit_threads);
            let print_only = a.print_only;
            let out = keelson::compose::run(&keelson::compose::Options {
                treefile: a.treefile,
                repo: a.repo,
                cachedir: a.cachedir,
                print_only: a.print_only,
                dry_run: a.dry_run,
                force_nocache: a.force_nocache,
                touch_if_changed: a.touch_if_changed,
                write_composejson_to: a.write_composejson_to,
                threads,
                source_date_epoch: source_date_epoch()?,
                gpg_sign: a.gpg_sign,
                gpg_homedir: a.gpg_homedir,
            })?;
            // The result for people; compose.json (--write-composejson-to)
            // is the machine-readable one. --print-only printed the treefile.
            let commit = out.commit.as_deref().unwrap_or("-");
            let version = out
                .version
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default();
            if print_only {
            } else if out.dry_run {
                println!(
                    "Dry run: {} packages resolved, inputhash {} (the log says whether a commit would be written)",
                    out.packages, out.inputhash
                );
            } else if out.changed {
                println!("Committed {commit} to {}{version}", out.ref_);
            } else {
                println!(
                    "No apparent changes since {commit} on {} (inputhash {}); nothing written. --force-nocache composes anyway.",
                    out.ref_, out.inputhash
                );
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // ostree's grub2 backend runs `grub-mkconfig -o …/grub.cfg`; on nodes
    // /usr/sbin/grub-mkconfig is a link to this binary.
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "grub-mkconfig")
    {
        let rest: Vec<String> = args.collect();
        return match keelson::boot::grubcfg::mkconfig(&rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("grub-mkconfig (keelson): {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
