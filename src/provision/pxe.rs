//! `keelson pxe`: network-install artifacts for a commit: the tree's kernel,
//! an installer initramfs (dracut inside a checkout of the commit, with
//! keelson's `90keelson-installer` module: systemd-networkd + `keelson
//! install --from-cmdline`), PXELINUX, iPXE and GRUB netboot configs, a
//! kickstart for RHEL-family installers, and SHA256SUMS. The output
//! directory appears only when complete.

use fs_err as fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::image::definition::Definition;
use crate::postprocess::sandbox;
use crate::util::cmd::Cmd;
use crate::util::progress::step;

const PXELINUX: &str = include_str!("templates/pxelinux.cfg.tera");
const IPXE: &str = include_str!("templates/boot.ipxe.tera");
const GRUB: &str = include_str!("templates/grub-netboot.cfg.tera");

/// The installer's dracut module (repo `dracut/90keelson-installer/`), as
/// written into the tree.
const MODULE: &[(&str, &str, u32)] = &[
    (
        "usr/lib/dracut/modules.d/90keelson-installer/module-setup.sh",
        include_str!("../../dracut/90keelson-installer/module-setup.sh"),
        0o755,
    ),
    (
        "usr/lib/dracut/modules.d/90keelson-installer/keelson-installer.service",
        include_str!("../../dracut/90keelson-installer/keelson-installer.service"),
        0o644,
    ),
    (
        "usr/lib/dracut/modules.d/90keelson-installer/keelson-installer.target",
        include_str!("../../dracut/90keelson-installer/keelson-installer.target"),
        0o644,
    ),
];

/// The installer's own kernel arguments when none are given: console on
/// the screen and the first serial port.
pub const DEFAULT_INSTALLER_KARGS: &[&str] = &["console=tty0", "console=ttyS0,115200n8"];

/// Where the keyring goes inside the installer initramfs.
const KEYRING_IN_INITRD: &str = "/etc/keelson/install-keyring.gpg";

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The ostree repo holding the commit (the installer's kernel and
    /// initramfs come from its tree).
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to install.
    #[arg(long = "ref")]
    pub ref_: String,
    /// Output directory (created; must not exist or be empty).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// The repository URL the installer pulls from (default: the image
    /// definition's remote URL).
    #[arg(long)]
    pub url: Option<String>,
    /// The disk the installer erases and installs onto.
    #[arg(long, default_value = "/dev/vda")]
    pub device: String,
    /// http(s) URL the artifacts will be served from (absolute paths in the
    /// boot configs); default: paths relative to the TFTP root.
    #[arg(long)]
    pub pxe_url: Option<String>,
    /// Image definition (default: the built-in images/default.json).
    #[arg(long)]
    pub definition: Option<PathBuf>,
    /// Kernel argument for the installed node (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Kernel argument for the installer itself (repeatable; default:
    /// console=tty0 console=ttyS0,115200n8).
    #[arg(long = "installer-karg", value_name = "ARG")]
    pub installer_kargs: Vec<String>,
    /// Keyring the installer verifies the commit with (and the node keeps).
    #[arg(long)]
    pub gpg_keyring: Option<PathBuf>,
    /// The node's update URL after the install (default: --url).
    #[arg(long)]
    pub update_url: Option<String>,
    /// Let the installer erase a disk that already holds data
    /// (keelson.install.wipe); without it such a disk is refused.
    #[arg(long)]
    pub wipe: bool,
    /// The node's Ignition config, fetched by the installer from URL
    /// (keelson.install.ignition_url), validated before it touches the disk
    /// and embedded for the installed node's first boot.
    #[arg(long, value_name = "URL")]
    pub ignition_url: Option<String>,
}

impl Options {
    /// The defaults filled in: the definition's URL, the installer's
    /// console arguments.
    pub fn resolved(&self, def: &Definition) -> Options {
        let mut o = self.clone();
        o.url.get_or_insert_with(|| def.remote.url.clone());
        if o.installer_kargs.is_empty() {
            o.installer_kargs = DEFAULT_INSTALLER_KARGS
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        o
    }

    fn url(&self) -> &str {
        self.url.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Serialize)]
pub struct Artifacts {
    pub directory: String,
    pub kernel_version: String,
    /// The installer's kernel command line.
    pub cmdline: String,
    /// Relative path → SHA-256.
    pub files: Vec<(String, String)>,
}

/// The installer's kernel command line (pure).
pub fn cmdline(o: &Options, keyring_in_initrd: bool) -> String {
    let mut args: Vec<String> = o.installer_kargs.clone();
    args.extend([
        "rd.systemd.unit=keelson-installer.target".to_string(),
        format!("keelson.install.device={}", o.device),
        format!("keelson.install.url={}", o.url()),
        format!("keelson.install.ref={}", o.ref_),
    ]);
    if let Some(u) = &o.update_url {
        args.push(format!("keelson.install.update_url={u}"));
    }
    for k in &o.kargs {
        args.push(format!("keelson.install.karg={k}"));
    }
    if o.wipe {
        args.push("keelson.install.wipe".to_string());
    }
    if let Some(u) = &o.ignition_url {
        args.push(format!("keelson.install.ignition_url={u}"));
    }
    if keyring_in_initrd {
        args.push(format!("keelson.install.gpg_keyring={KEYRING_IN_INITRD}"));
    }
    // keelson-installer.service reboots after reporting the result.
    args.join(" ")
}

/// `http://host:port/path` → GRUB's `(http,host:port)/path/` (pure).
pub fn grub_base(pxe_url: Option<&str>) -> Result<String> {
    let Some(u) = pxe_url else {
        return Ok("/".to_string());
    };
    let Some(rest) = u.strip_prefix("http://") else {
        bail!("--pxe-url {u}: GRUB netboots over plain http:// only");
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    Ok(if path.is_empty() {
        format!("(http,{host})/")
    } else {
        format!("(http,{host})/{path}/")
    })
}

/// The three boot configs (pure): pxelinux.cfg/default, boot.ipxe, grub.cfg.
pub fn boot_configs(o: &Options, cmdline: &str) -> Result<Vec<(&'static str, String)>> {
    let base = match &o.pxe_url {
        Some(u) => format!("{}/", u.trim_end_matches('/')),
        None => String::new(),
    };
    let mut ctx = tera::Context::new();
    ctx.insert("ref", &o.ref_);
    ctx.insert("url", o.url());
    ctx.insert("device", &o.device);
    ctx.insert("cmdline", cmdline);
    ctx.insert("base", &base);
    ctx.insert("grub_base", &grub_base(o.pxe_url.as_deref())?);
    let r = |t: &str| tera::Tera::one_off(t, &ctx, false).context("rendering a boot config");
    Ok(vec![
        ("pxelinux.cfg/default", r(PXELINUX)?),
        ("boot.ipxe", r(IPXE)?),
        ("grub.cfg", r(GRUB)?),
    ])
}

fn validate(o: &Options) -> Result<()> {
    // The installer fetches all of them over the network.
    for (flag, u) in [
        ("--url", o.url.as_ref()),
        ("--pxe-url", o.pxe_url.as_ref()),
        ("--ignition-url", o.ignition_url.as_ref()),
    ] {
        if let Some(u) = u {
            super::ignition::check_url(u).map_err(|e| {
                anyhow::anyhow!("{flag} {e} (the installer fetches over the network)")
            })?;
        }
    }
    if !o.device.starts_with("/dev/") || o.device.contains(char::is_whitespace) {
        bail!("--device {:?}: a /dev path", o.device);
    }
    if let Some(k) = &o.gpg_keyring
        && !k.is_file()
    {
        bail!("--gpg-keyring {}: no such file", k.display());
    }
    Ok(())
}

pub fn run(o: &Options) -> Result<Artifacts> {
    let def = Definition::load_or_builtin(o.definition.as_deref())?;
    let o = &o.resolved(&def);
    validate(o)?;
    let commit = crate::image::resolve(&o.repo, &o.ref_)?;
    if o.output.exists()
        && fs::read_dir(&o.output)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("--output {}: exists and is not empty", o.output.display());
    }
    let parent = match o.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".keelson-pxe-")
        .tempdir_in(&parent)
        .with_context(|| format!("{}: cannot create a directory", parent.display()))?;
    let work = tempfile::Builder::new().prefix("keelson-pxe-").tempdir()?;
    let result = build_in(o, &def, &commit, work.path(), staging.path());
    let mut art = result?;
    if o.output.exists() {
        fs::remove_dir(&o.output)?;
    }
    let staging = staging.keep();
    fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    fs::rename(&staging, &o.output)
        .with_context(|| format!("{}: cannot move into place", o.output.display()))?;
    art.directory = o.output.display().to_string();
    Ok(art)
}

fn build_in(
    o: &Options,
    def: &Definition,
    commit: &str,
    w: &Path,
    out: &Path,
) -> Result<Artifacts> {
    let (tree, kver, initrd_in_tree) = installer_initramfs(o, commit, w)?;
    fs::copy(
        tree.join(format!("usr/lib/modules/{kver}/vmlinuz")),
        out.join("vmlinuz"),
    )
    .context("copying the kernel")?;
    fs::copy(
        tree.join(initrd_in_tree.trim_start_matches('/')),
        out.join("initramfs-installer.img"),
    )?;
    write_configs(o, def, out, kver)
}

/// A checkout of the commit with keelson's installer dracut module, and
/// the installer initramfs built inside it: (tree, kernel version, the
/// initramfs path inside the tree).
fn installer_initramfs(
    o: &Options,
    commit: &str,
    w: &Path,
) -> Result<(PathBuf, String, &'static str)> {
    let tree = w.join("tree");
    step("checking out the tree", || {
        Cmd::new("ostree")
            .arg(format!("--repo={}", o.repo.display()))
            .args(["checkout", commit])
            .arg(&tree)
            .run()
            .map(|_| ())
    })?;
    // dracut reads the tree's /etc (configs, passwd): ostree keeps it in /usr/etc.
    let etc = tree.join("etc");
    if etc.exists() {
        fs::remove_dir_all(&etc)?;
    }
    fs::rename(tree.join("usr/etc"), &etc).context("the tree has no /usr/etc")?;
    let confined = crate::util::tree::Tree::open(&tree)?;
    crate::postprocess::initramfs::write_embedded(&confined, MODULE)?;
    // The network it needs (commits composed before this module existed
    // do not carry it).
    crate::postprocess::initramfs::write_embedded(
        &confined,
        crate::postprocess::initramfs::NETWORKD_MODULE,
    )?;
    if let Some(k) = &o.gpg_keyring {
        let dst = tree.join(KEYRING_IN_INITRD.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("has parent"))?;
        fs::copy(k, &dst).with_context(|| format!("--gpg-keyring {}", k.display()))?;
    }
    let kver = crate::postprocess::kernel_version(&confined)?;
    let initrd_in_tree = "/keelson-installer.img";
    step("building the installer initramfs (dracut)", || {
        let mut argv = vec![
            "dracut",
            "--force",
            "--no-hostonly",
            "--omit",
            "keelson ostree",
            "--add",
            "keelson-installer",
        ];
        if o.gpg_keyring.is_some() {
            argv.extend(["--include", KEYRING_IN_INITRD, KEYRING_IN_INITRD]);
        }
        argv.extend([initrd_in_tree, kver.as_str()]);
        sandbox::run(&tree, &argv, 0)
            .context("dracut failed building the installer initramfs")
            .map(|_| ())
    })?;
    Ok((tree, kver, initrd_in_tree))
}

/// Boot configs, kickstart and SHA256SUMS beside the kernel and initramfs.
fn write_configs(o: &Options, def: &Definition, out: &Path, kver: String) -> Result<Artifacts> {
    let line = cmdline(o, o.gpg_keyring.is_some());
    for (name, text) in boot_configs(o, &line)? {
        let p = out.join(name);
        fs::create_dir_all(p.parent().expect("has parent"))?;
        fs::write(&p, text)?;
    }
    let params = super::kickstart::Params {
        url: o.url().to_string(),
        ref_: o.ref_.clone(),
        osname: def.osname.clone(),
        remote: def.remote.name.clone(),
        nogpg: o.gpg_keyring.is_none(),
        update_url: o.update_url.clone(),
        vars: Default::default(),
    };
    let (name, text) = super::kickstart::template("ostree")?;
    fs::write(
        out.join("keelson.ks"),
        super::kickstart::render(&name, &text, def, &params)?,
    )?;
    let mut files = Vec::new();
    for rel in [
        "vmlinuz",
        "initramfs-installer.img",
        "pxelinux.cfg/default",
        "boot.ipxe",
        "grub.cfg",
        "keelson.ks",
    ] {
        let p = out.join(rel);
        fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        files.push((rel.to_string(), crate::image::sha256_file(&p)?));
    }
    let sums: String = files.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    fs::write(out.join("SHA256SUMS"), sums)?;
    Ok(Artifacts {
        directory: String::new(),
        kernel_version: kver,
        cmdline: line,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            repo: "repo".into(),
            ref_: "keelson/12/x86_64/k8s-node".into(),
            output: "pxe".into(),
            url: Some("http://10.0.2.2:8000/repo".into()),
            device: "/dev/vda".into(),
            pxe_url: Some("http://10.0.2.2:8000/pxe/".into()),
            definition: None,
            kargs: vec!["quiet".into()],
            installer_kargs: vec!["console=ttyS0,115200n8".into()],
            gpg_keyring: None,
            update_url: None,
            wipe: false,
            ignition_url: None,
        }
    }

    #[test]
    fn installer_cmdline() {
        assert_eq!(
            cmdline(&opts(), true),
            "console=ttyS0,115200n8 rd.systemd.unit=keelson-installer.target keelson.install.device=/dev/vda \
             keelson.install.url=http://10.0.2.2:8000/repo keelson.install.ref=keelson/12/x86_64/k8s-node \
             keelson.install.karg=quiet keelson.install.gpg_keyring=/etc/keelson/install-keyring.gpg"
        );
        // What the installer reads back is what was meant.
        let back = super::super::install::from_cmdline(&cmdline(&opts(), true)).unwrap();
        assert_eq!(back.device, PathBuf::from("/dev/vda"));
        assert_eq!(back.kargs, vec!["quiet"]);
        assert!(
            !back.reboot,
            "the installer's unit reboots, after reporting"
        );
    }

    #[test]
    fn configs_point_at_the_artifacts() {
        let o = opts();
        let c = boot_configs(&o, "ARGS").unwrap();
        let get = |n: &str| &c.iter().find(|(k, _)| *k == n).unwrap().1;
        assert!(get("boot.ipxe").starts_with("#!ipxe\n"));
        assert!(get("boot.ipxe").contains(
            "kernel http://10.0.2.2:8000/pxe/vmlinuz initrd=initramfs-installer.img ARGS\n"
        ));
        assert!(get("pxelinux.cfg/default").contains("  APPEND ARGS\n"));
        assert!(get("grub.cfg").contains("linux (http,10.0.2.2:8000)/pxe/vmlinuz ARGS\n"));
        let mut rel = o.clone();
        rel.pxe_url = None;
        let c = boot_configs(&rel, "ARGS").unwrap();
        assert!(c[0].1.contains("  KERNEL vmlinuz\n"), "{}", c[0].1);
        assert!(c[2].1.contains("linux /vmlinuz ARGS"), "{}", c[2].1);
    }

    #[test]
    fn bad_options_name_the_flag() {
        let mut o = opts();
        o.url = Some("10.0.2.2/repo".into());
        assert!(
            validate(&o)
                .unwrap_err()
                .to_string()
                .starts_with("--url \"10.0.2.2/repo\"")
        );
        let mut o = opts();
        o.device = "vda".into();
        assert!(
            validate(&o)
                .unwrap_err()
                .to_string()
                .starts_with("--device \"vda\"")
        );
        assert!(grub_base(Some("https://x/")).is_err());
    }
}
