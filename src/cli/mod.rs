//! The `keelson` command line: clap structures and one small function per
//! verb. Policy lives in the module that owns it; the option types of the
//! build side are the library's own (clap derives on them).

mod build_side;
mod node_side;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "Immutable-OS image builder and node agent for Kubernetes nodes",
    long_about = "keelson composes rpm-ostree-format treefiles into ostree commits on a \
                  Debian base (build side) and runs on the nodes it builds (node side)."
)]
pub struct Cli {
    /// Log more (repeat for debug output). Also RUST_LOG=keelson=debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Compose a treefile into an ostree commit.
    Compose(crate::compose::Options),
    /// Build a bootable disk image (raw or qcow2) from a commit.
    Image(crate::image::Options),
    /// Compose a treefile and build its images in one step (for CI); writes
    /// the artifacts and meta.json into the output directory.
    Build(build_side::BuildArgs),
    /// Boot an image under QEMU (TCG unless --kvm) with the serial console
    /// on this terminal or in a file.
    Vm(crate::vm::Options),
    /// Node: show the booted, staged and rollback deployments.
    Status(node_side::StatusArgs),
    /// Node: pull the followed ref and stage a newer commit (boot counting armed).
    Upgrade(node_side::UpgradeArgs),
    /// Node: stage a specific commit or version (even one blocked after a failure).
    Deploy(node_side::DeployArgs),
    /// Node: make the rollback deployment the default.
    Rollback(node_side::RebootArgs),
    /// Node: run the boot health checks and act on them (keelson-health.service).
    Health(node_side::NodeArgs),
    /// Node: the update agent (keelson-update.timer): stage updates, reboot per policy.
    Agent(node_side::NodeArgs),
    /// Node: take or give back a reboot slot by hand (lock also cordons and drains).
    Coordinate(node_side::CoordinateArgs),
    /// Node: render the kubelet configuration drop-in with reserved resources
    /// computed from this machine's capacity (or the one given, to preview).
    KubeletConfig(node_side::KubeletConfigArgs),
    /// Install a node onto a disk from an ostree repository URL (what
    /// anaconda's ostreesetup does): partition, pull, deploy, GRUB. Checks
    /// the device, URL, ref and signature before touching the disk.
    Install(build_side::InstallArgs),
    /// Network-install artifacts for a commit: kernel, installer initramfs,
    /// PXELINUX/iPXE/GRUB configs, a kickstart and SHA256SUMS.
    Pxe(build_side::PxeArgs),
    /// Render a kickstart file (anaconda `ostreesetup`) that installs a ref
    /// from a URL, with the image definition's disk layout.
    Kickstart(build_side::KickstartArgs),
    /// Publish a commit as an update stream served over plain HTTP/CDN:
    /// signed commit, static deltas, signed summary, one atomic switch,
    /// retention.
    Publish(build_side::PublishArgs),
    /// Release notes between two commits: packages and files under
    /// /usr/etc and /usr/lib/systemd.
    Diff(crate::diff::Options),
    /// Commit an already ostree-shaped directory (the commit step of
    /// compose on its own; what bench/commit.sh times against `ostree commit`).
    Commit(crate::commit::DirOptions),
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    use build_side as b;
    use node_side as n;
    match cli.command {
        Command::Compose(a) => b::compose(&a),
        Command::Image(a) => b::image(&a),
        Command::Build(a) => b::build(&a),
        Command::Vm(a) => b::vm(&a),
        Command::Install(a) => b::install(a),
        Command::Pxe(a) => b::pxe(&a),
        Command::Kickstart(a) => b::kickstart(&a),
        Command::Commit(a) => b::commit(&a),
        Command::Publish(a) => b::publish(&a),
        Command::Diff(a) => b::diff(&a),
        Command::Status(a) => n::status(&a),
        Command::Upgrade(a) => n::upgrade(&a),
        Command::Deploy(a) => n::deploy(&a),
        Command::Rollback(a) => n::rollback(&a),
        Command::Health(a) => n::health(&a),
        Command::Agent(a) => n::agent(&a),
        Command::Coordinate(a) => n::coordinate(&a),
        Command::KubeletConfig(a) => n::kubelet_config(&a),
    }
}

/// Logs on stderr: info by default, `-v` debug, `-vv` trace; RUST_LOG wins.
pub fn init_logging(verbose: u8) {
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

/// Write `text` atomically to `output`, or print it.
fn emit(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    match output {
        Some(p) => crate::util::fsutil::write_atomic(p, text.as_bytes())
            .with_context(|| format!("--output {}", p.display())),
        None => crate::util::print_stdout(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_keep_their_names() {
        let t: &[&[&str]] = &[
            &[
                "keelson",
                "compose",
                "t.json",
                "--repo",
                "r",
                "--commit-threads",
                "2",
            ],
            &[
                "keelson",
                "vm",
                "x.qcow2",
                "--memory",
                "4096",
                "--timeout",
                "5",
            ],
            &[
                "keelson",
                "build",
                "t.json",
                "-o",
                "out",
                "--pxe",
                "--pxe-wipe",
            ],
            &[
                "keelson",
                "status",
                "--json",
                "--sysroot",
                "/x",
                "--state",
                "/s",
            ],
            &["keelson", "install", "--from-cmdline"],
        ];
        for argv in t {
            assert!(Cli::try_parse_from(*argv).is_ok(), "{argv:?}");
        }
        assert!(Cli::try_parse_from(["keelson", "build", "t", "-o", "o", "--pxe-wipe"]).is_err());
    }
}
