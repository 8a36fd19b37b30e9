//! Build-side verbs: compose, image, build, vm, install, pxe, kickstart,
//! commit.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::provision::install;

pub fn compose(a: &crate::compose::Options) -> Result<()> {
    let out = crate::compose::run(a)?;
    if let Some(line) = out.summary(a.print_only) {
        println!("{line}");
    }
    Ok(())
}

pub fn image(a: &crate::image::Options) -> Result<()> {
    let art = crate::image::build(a)?;
    println!("Wrote {} ({} bytes)", a.output.display(), art.size);
    Ok(())
}

#[derive(clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub opts: crate::build::Options,
    /// Print meta.json on standard output as well.
    #[arg(long)]
    pub json: bool,
}

pub fn build(a: &BuildArgs) -> Result<()> {
    let meta = crate::build::run(&a.opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&meta)?);
    }
    Ok(())
}

pub fn vm(a: &crate::vm::Options) -> Result<()> {
    let out = crate::vm::run(a)?;
    if let Some(e) = &a.expect {
        println!("{e:?} seen after {:.0}s", out.seconds);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// The whole disk to install onto (everything on it is lost).
    #[arg(long, required_unless_present = "from_cmdline")]
    pub device: Option<PathBuf>,
    /// The ostree repository URL to install from.
    #[arg(long, required_unless_present = "from_cmdline")]
    pub url: Option<String>,
    /// The ref to install; the node follows it for updates.
    #[arg(long = "ref", required_unless_present = "from_cmdline")]
    pub ref_: Option<String>,
    /// The stateroot (default: the image definition's).
    #[arg(long)]
    pub osname: Option<String>,
    /// Image definition for the partition sizes (root takes the rest of the
    /// disk), kernel arguments, firmware and remote name (default: the
    /// built-in images/default.json).
    #[arg(long)]
    pub definition: Option<PathBuf>,
    /// Extra kernel argument for the installed node (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Verify the commit (and later updates) against this keyring.
    #[arg(long)]
    pub gpg_keyring: Option<PathBuf>,
    /// The node's update URL after the install (default: --url).
    #[arg(long)]
    pub update_url: Option<String>,
    /// Reboot into the installed node when done.
    #[arg(long)]
    pub reboot: bool,
    /// Erase a disk that already holds a partition table or filesystem
    /// (without it such a disk is refused).
    #[arg(long)]
    pub wipe: bool,
    /// The node's Ignition config (users, SSH keys, hostname, units…),
    /// validated before the disk is touched and embedded on /boot for the
    /// first boot only.
    #[arg(long, value_name = "FILE", conflicts_with = "ignition_url")]
    pub ignition_file: Option<PathBuf>,
    /// Fetch the node's Ignition config from URL now (validated, embedded
    /// like --ignition-file).
    #[arg(long, value_name = "URL")]
    pub ignition_url: Option<String>,
    /// Take everything from keelson.install.* kernel arguments (the PXE
    /// installer): device, url, ref, osname, karg, update_url, gpg_keyring,
    /// ignition_url, reboot, wipe.
    #[arg(long, conflicts_with_all = ["device", "url", "ref_"])]
    pub from_cmdline: bool,
}

impl InstallArgs {
    fn options(self) -> Result<install::Options> {
        if self.from_cmdline {
            let cmdline =
                fs_err::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
            return install::from_cmdline(&cmdline);
        }
        Ok(install::Options {
            device: self.device.context("--device is required")?,
            url: self.url.context("--url is required")?,
            ref_: self.ref_.context("--ref is required")?,
            osname: self.osname,
            definition: self.definition,
            kargs: self.kargs,
            gpg_keyring: self.gpg_keyring,
            update_url: self.update_url,
            reboot: self.reboot,
            wipe: self.wipe,
            ignition: crate::provision::ignition::Source::from_args(
                self.ignition_file.as_deref(),
                self.ignition_url.as_deref(),
            )?,
        })
    }
}

pub fn install(a: InstallArgs) -> Result<()> {
    crate::node::commands::ensure_root()?;
    let opts = a.options()?;
    let commit = install::run(&opts)?;
    println!(
        "Installed {} ({commit}) from {} onto {}.",
        opts.ref_,
        opts.url,
        opts.device.display()
    );
    if opts.reboot {
        install::reboot()?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PxeArgs {
    #[command(flatten)]
    pub opts: crate::provision::pxe::Options,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn pxe(a: &PxeArgs) -> Result<()> {
    let art = crate::provision::pxe::run(&a.opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&art)?);
        return Ok(());
    }
    println!(
        "PXE artifacts in {} (kernel {}):",
        art.directory, art.kernel_version
    );
    for (f, h) in &art.files {
        println!("  {f}  {h}");
    }
    println!("installer command line: {}", art.cmdline);
    Ok(())
}

#[derive(clap::Args)]
pub struct KickstartArgs {
    #[command(flatten)]
    pub req: crate::provision::kickstart::Request,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub fn kickstart(a: &KickstartArgs) -> Result<()> {
    let ks = crate::provision::kickstart::render_request(&a.req)?;
    super::emit(a.output.as_deref(), &ks)
}

pub fn commit(a: &crate::commit::DirOptions) -> Result<()> {
    println!("{}", crate::commit::commit_dir(a)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub opts: crate::publish::Options,
    /// Print the outcome as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

pub fn publish(a: &PublishArgs) -> Result<()> {
    let out = crate::publish::run(&a.opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if out.already_published {
        println!(
            "{} {}: already published (generation {})",
            out.ref_, out.commit, out.generation
        );
    } else {
        println!(
            "Published {} {} ({}) as generation {}: {} delta(s), {} commit(s) kept",
            out.ref_,
            out.commit,
            out.version.as_deref().unwrap_or("no version"),
            out.generation,
            out.deltas.len(),
            out.kept.len()
        );
    }
    Ok(())
}

pub fn diff(a: &crate::diff::Options) -> Result<()> {
    let notes = crate::diff::run(a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&notes)?);
    } else {
        print!("{}", crate::diff::render(&notes));
    }
    Ok(())
}
