//! `keelson image`: an ostree commit → a bootable GPT disk (raw or qcow2),
//! built rootless from directories (DESIGN §5): staging sysroot, filesystems
//! by `mkfs.ext4 -d` and mtools, GPT by sfdisk, GRUB for UEFI and BIOS.

pub mod definition;
pub mod grub;
pub mod sysroot;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::util::cmd::Cmd;
use crate::util::progress::step;
use definition::{Definition, Firmware, Format, Part};

const FSTAB_TEMPLATE: &str = include_str!("templates/fstab.tera");

pub struct Options {
    pub repo: PathBuf,
    pub ref_: String,
    pub definition: PathBuf,
    pub format: Format,
    pub output: PathBuf,
    pub remote_url: Option<String>,
    /// GPG keyring for the node's remote: updates must be signed by it.
    pub gpg_keyring: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
pub struct Artifact {
    pub name: String,
    pub format: Format,
    pub size: u64,
    /// Filled in by `keelson build` (hashing a large image takes seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The commit `ref_` points at, or a clear error (before any work starts).
pub(crate) fn resolve(repo: &Path, ref_: &str) -> Result<String> {
    let Some(r) = crate::commit::open_existing(repo)? else {
        bail!(
            "--repo {}: not an ostree repo (no config file)",
            repo.display()
        );
    };
    r.resolve_rev(ref_, true)
        .with_context(|| format!("--ref {ref_}: cannot resolve"))?
        .map(|c| c.to_string())
        .with_context(|| format!("--ref {ref_}: no such ref in {}", repo.display()))
}

fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

/// Disk usage of `dir` in MiB (hardlinks counted once).
fn du_mib(dir: &Path) -> Result<u64> {
    let out = Cmd::new("du")
        .args(["-s", "--block-size=1M"])
        .arg(dir)
        .run()?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du {}: unexpected output {out:?}", dir.display()))
}

/// Build an ext4 filesystem from `dir` straight into the disk at the
/// partition's offset: no separate image to copy.
fn mkfs_ext4(disk: &Path, p: &Part, label: &str, uuid: &str, dir: &Path) -> Result<()> {
    let size = p.size;
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
        // The disk file is fresh and sparse: nothing to discard.
        .arg("-E")
        .arg(format!("offset={},nodiscard", p.start))
        .arg("-d")
        .arg(dir)
        .arg(disk)
        .arg(format!("{}k", size / 1024))
        .run()
        .with_context(|| format!("building the {label} filesystem"))?;
    Ok(())
}

/// `mkfs.fat` for an ESP: FAT32 (what UEFI expects on disks) with 512-byte
/// clusters, so a 127 MiB ESP has enough clusters to be valid FAT32. The
/// caller adds the target.
pub(crate) fn mkfs_esp_cmd(volid: &str) -> Cmd {
    Cmd::new("mkfs.fat").args(["-F", "32", "-s", "1", "-n", "ESP", "-i", volid])
}

/// The FAT ESP, also written in place (mtools address it as `disk@@offset`).
fn mkfs_esp(disk: &Path, p: &Part, volid: &str, efi: Option<&Path>) -> Result<()> {
    mkfs_esp_cmd(volid)
        .arg(format!("--offset={}", p.start / 512))
        .arg(disk)
        .arg((p.size / 1024).to_string())
        .run()
        .context("building the ESP")?;
    if let Some(efi) = efi {
        let i = format!("{}@@{}", disk.display(), p.start);
        Cmd::new("mmd")
            .args(["-i", &i, "::/EFI", "::/EFI/BOOT"])
            .run()?;
        Cmd::new("mcopy")
            .args(["-i", &i])
            .arg(efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI")
            .run()
            .context("copying GRUB onto the ESP")?;
    }
    Ok(())
}

pub(crate) fn write_at(disk: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)?;
    Ok(())
}

pub(crate) fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub(crate) fn part<'a>(layout: &'a [Part], name: &str) -> &'a Part {
    layout
        .iter()
        .find(|p| p.name == name)
        .expect("layout has every partition")
}

/// Build the image; the output file appears only when complete.
pub fn build(opts: &Options) -> Result<Artifact> {
    let def = Definition::load(&opts.definition)?;
    let layout = def.layout()?;
    if let Some(k) = &opts.gpg_keyring
        && !k.is_file()
    {
        bail!("--gpg-keyring {}: no such file", k.display());
    }
    let commit = resolve(&opts.repo, &opts.ref_)?;
    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        bail!(
            "--output {}: directory {} does not exist",
            opts.output.display(),
            out_dir.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("keelson-image-")
        .tempdir()?;
    let w = work.path();
    let result = build_in(opts, &def, &layout, &commit, w, &out_dir);
    sysroot::release(&w.join("sysroot"));
    result
}

fn build_in(
    opts: &Options,
    def: &Definition,
    layout: &[Part],
    commit: &str,
    w: &Path,
    out_dir: &Path,
) -> Result<Artifact> {
    let mkconfig = sysroot::mkconfig_link(w)?;

    let (boot_uuid, root_uuid) = (random_uuid(), random_uuid());
    let esp_volid = format!("{:08X}", rand_u32());
    let mut kargs = vec![format!("root=UUID={root_uuid}"), "rw".to_string()];
    kargs.extend(def.kernel_args.iter().cloned());
    let url = opts
        .remote_url
        .clone()
        .unwrap_or_else(|| def.remote.url.clone());

    let root = w.join("sysroot");
    fs::create_dir_all(&root)?;
    let staged = step("deploying into a staging sysroot", || {
        sysroot::stage(
            &root,
            sysroot::Source::Local(&opts.repo),
            &opts.ref_,
            commit,
            &def.osname,
            &def.remote.name,
            &url,
            &kargs,
            &mkconfig,
            opts.gpg_keyring.as_deref(),
        )
    })?;
    sysroot::finish(&staged, &boot_uuid)?;

    let early = w.join("early.cfg");
    fs::write(&early, grub::early_config(&boot_uuid)?)?;
    let efi = if def.firmware.contains(&Firmware::Uefi) {
        let p = w.join("BOOTX64.EFI");
        grub::efi_image(&staged.deployment, &early, &p)?;
        Some(p)
    } else {
        None
    };

    // /boot is its own filesystem: take it out of the root's directory.
    let bootdir = w.join("bootfs");
    fs::rename(root.join("boot"), &bootdir)?;
    fs::create_dir(root.join("boot"))?;
    let (rootp, bootp, espp) = (
        part(layout, "root"),
        part(layout, "boot"),
        part(layout, "esp"),
    );
    let need = du_mib(&root)?;
    // ext4 metadata, the journal and reserved blocks need headroom.
    if need + need / 5 + 64 > mib(rootp.size) {
        bail!(
            "{}: partitions: the root partition ({} MiB) is too small for the tree ({need} MiB); raise disk-size-mib",
            opts.definition.display(),
            mib(rootp.size)
        );
    }
    let raw = w.join("disk.raw");
    step("partitioning", || {
        let f = fs::File::create(&raw)?;
        f.set_len(def.disk_size_mib * 1024 * 1024)?;
        drop(f);
        Cmd::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&raw)
            .stdin(def.sfdisk_script()?.into_bytes())
            .run()
            .context("writing the GPT")?;
        Ok(())
    })?;
    step("building filesystems", || {
        mkfs_ext4(&raw, rootp, "root", &root_uuid, &root)?;
        mkfs_ext4(&raw, bootp, "boot", &boot_uuid, &bootdir)?;
        mkfs_esp(&raw, espp, &esp_volid, efi.as_deref())
    })?;
    if def.firmware.contains(&Firmware::Bios) {
        grub::install_bios(&raw, part(layout, "bios"), &staged.deployment, &early, w)?;
    }

    let tmp = tempfile::Builder::new()
        .prefix(".keelson-image-")
        .tempfile_in(out_dir)
        .with_context(|| format!("{}: cannot create a temporary file", out_dir.display()))?;
    match opts.format {
        Format::Raw => {
            Cmd::new("cp")
                .args(["--sparse=always"])
                .arg(&raw)
                .arg(tmp.path())
                .run()?;
        }
        Format::Qcow2 => {
            step("converting to qcow2", || {
                Cmd::new("qemu-img")
                    // -W: out-of-order writes, the host file is not a disk.
                    .args(["convert", "-W", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(tmp.path())
                    .run()
            })?;
        }
    }
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let size = fs::metadata(tmp.path())?.len();
    tmp.persist(&opts.output).with_context(|| {
        format!(
            "{}: cannot move the image into place",
            opts.output.display()
        )
    })?;
    let name = opts
        .output
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    Ok(Artifact {
        name,
        format: opts.format,
        size,
        sha256: None,
    })
}

pub(crate) fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}
