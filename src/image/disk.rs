//! One disk writer for images and installs: a [`Plan`] (layout, ids,
//! kernel arguments, remote, keyring) written to a [`Target`] that is an
//! image file (filesystems built from directories at partition offsets,
//! rootless) or a block device (partitions formatted, mounted and filled).
//! The sequence is the same for both: GPT, sysroot with the deployment,
//! fstab and grubenv, the update remote, GRUB for UEFI and BIOS.

use fs_err as fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::definition::{Definition, Firmware, Part};
use super::{grub, sysroot};
use crate::util::cmd::Cmd;
use crate::util::progress::step;

/// Identifiers written to the disk. Derived from the commit and the
/// definition for images (same inputs, same bytes), random for installs.
#[derive(Debug, Clone, PartialEq)]
pub struct Ids {
    pub disk_guid: String,
    /// One per partition, in layout order.
    pub part_uuids: Vec<String>,
    pub root_uuid: String,
    pub boot_uuid: String,
    /// ext4 directory hash seeds.
    pub root_hash_seed: String,
    pub boot_hash_seed: String,
    /// FAT volume id, 8 hex digits.
    pub esp_volid: String,
}

fn uuid_from(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

impl Ids {
    /// Pure: ids from a seed (commit + definition), one hash per purpose.
    pub fn derived(seed: &str, partitions: usize) -> Ids {
        let h = |label: &str| Sha256::digest(format!("keelson-image\0{seed}\0{label}"));
        Ids {
            disk_guid: uuid_from(&h("disk")),
            part_uuids: (0..partitions)
                .map(|i| uuid_from(&h(&format!("part{i}"))))
                .collect(),
            root_uuid: uuid_from(&h("root")),
            boot_uuid: uuid_from(&h("boot")),
            root_hash_seed: uuid_from(&h("root-hash")),
            boot_hash_seed: uuid_from(&h("boot-hash")),
            esp_volid: hex::encode(&h("esp")[..4]).to_uppercase(),
        }
    }

    pub fn random(partitions: usize) -> Ids {
        Ids::derived(&uuid::Uuid::new_v4().to_string(), partitions)
    }
}

/// Where the commit comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A local repo (`keelson image`).
    Local(PathBuf),
    /// The remote URL itself (`keelson install`), signatures verified when
    /// the remote has a keyring.
    Remote,
}

/// Everything the writer needs, decided before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    pub def: Definition,
    pub layout: Vec<Part>,
    pub ids: Ids,
    pub source: Source,
    pub ref_: String,
    pub commit: String,
    pub osname: String,
    /// The node's update remote: its name, the URL the commit is pulled
    /// from while writing and the URL the node keeps afterwards.
    pub remote: String,
    pub pull_url: String,
    pub update_url: String,
    pub keyring: Option<PathBuf>,
    /// Kernel arguments beyond `root=UUID=… rw` and the definition's.
    pub extra_kargs: Vec<String>,
    /// SOURCE_DATE_EPOCH for filesystem timestamps (images only).
    pub source_date_epoch: Option<u64>,
    /// The first boot: Ignition's platform, and the config embedded on
    /// /boot (installs; images carry none: nothing secret is baked in).
    pub firstboot: FirstBoot,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FirstBoot {
    pub platform: String,
    pub config: Option<Vec<u8>>,
}

impl Plan {
    /// Pure: the deployment's kernel arguments.
    pub fn kargs(&self) -> Vec<String> {
        let mut k = vec![format!("root=UUID={}", self.ids.root_uuid), "rw".into()];
        k.extend(self.def.kernel_args.iter().cloned());
        k.extend(self.extra_kargs.iter().cloned());
        k
    }

    /// Pure: the sfdisk script with this plan's disk and partition ids.
    pub fn sfdisk_script(&self) -> Result<String> {
        let mut s = self.def.sfdisk_script()?;
        s = s.replacen(
            "label: gpt\n",
            &format!("label: gpt\nlabel-id: {}\n", self.ids.disk_guid),
            1,
        );
        let mut out = String::new();
        let mut i = 0;
        for line in s.lines() {
            out += line;
            if line.starts_with("start=") {
                out += &format!(", uuid={}", self.ids.part_uuids[i]);
                i += 1;
            }
            out += "\n";
        }
        Ok(out)
    }

    fn part(&self, name: &str) -> &Part {
        super::part(&self.layout, name)
    }

    fn index(&self, name: &str) -> usize {
        self.layout
            .iter()
            .position(|p| p.name == name)
            .expect("layout has every partition")
            + 1
    }
}

/// What is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A raw image file of the definition's size (created).
    File(PathBuf),
    /// A whole block device (everything on it is erased).
    Device(PathBuf),
}

/// Write `plan` to `target`, with `work` as scratch space.
pub fn write(plan: &Plan, target: &Target, work: &Path) -> Result<()> {
    let root = work.join("root");
    let staged = match target {
        Target::File(f) => {
            partition(plan, f, false)?;
            fs::create_dir_all(&root)?;
            stage(plan, &root, work)?
        }
        Target::Device(d) => {
            partition(plan, d, true)?;
            format_device(plan, d)?;
            mount(&device_part(d, plan.index("root")), &root)?;
            mount(&device_part(d, plan.index("boot")), &root.join("boot"))?;
            stage(plan, &root, work)?
        }
    };
    let early = work.join("early.cfg");
    fs::write(&early, grub::early_config(&plan.ids.boot_uuid)?)?;
    let efi = if plan.def.firmware.contains(&Firmware::Uefi) {
        let p = work.join("BOOTX64.EFI");
        grub::efi_image(&staged.deployment, &early, &p)?;
        Some(p)
    } else {
        None
    };
    let disk = match target {
        Target::File(f) => {
            // Deployment roots are immutable: clear that before timestamps
            // are clamped and the staging directory is removed.
            sysroot::release(&root);
            filesystems_in_file(plan, f, &root, work, efi.as_deref())?;
            f
        }
        // The caller releases the mounted deployment before unmounting.
        Target::Device(d) => {
            esp_on_device(plan, d, work, efi.as_deref())?;
            d
        }
    };
    if plan.def.firmware.contains(&Firmware::Bios) {
        grub::install_bios(disk, plan.part("bios"), &staged.deployment, &early, work)?;
    }
    Ok(())
}

/// The deployment in `root`, its fstab and grubenv, the update URL.
fn stage(plan: &Plan, root: &Path, work: &Path) -> Result<sysroot::Staged> {
    let mkconfig = sysroot::mkconfig_link(work)?;
    let staged = step("deploying the commit", || {
        sysroot::stage(root, plan, &mkconfig)
    })?;
    sysroot::finish(&staged, &plan.ids.boot_uuid)?;
    sysroot::firstboot(root, &plan.firstboot, &plan.ids.boot_uuid)?;
    if plan.update_url != plan.pull_url {
        // Same signature policy, the production URL.
        sysroot::remote_add(
            &root.join("ostree/repo"),
            &plan.remote,
            &plan.update_url,
            Some(&plan.ref_),
            plan.keyring.as_deref(),
        )
        .context("pointing the node at its update URL")?;
    }
    Ok(staged)
}

/// GPT on a fresh file or a device.
fn partition(plan: &Plan, disk: &Path, device: bool) -> Result<()> {
    step("partitioning", || {
        let mut c = Cmd::new("sfdisk").arg("--quiet");
        if device {
            Cmd::new("wipefs")
                .args(["--all", "--quiet"])
                .arg(disk)
                .run()?;
            c = c.args(["--wipe=always", "--wipe-partitions=always"]);
        } else {
            let f = fs::File::create(disk)
                .with_context(|| format!("{}: cannot create", disk.display()))?;
            f.set_len(plan.def.disk_size_mib * 1024 * 1024)
                .with_context(|| format!("{}: cannot size", disk.display()))?;
            c = c.args(["--no-reread", "--no-tell-kernel"]);
        }
        c.arg(disk)
            .stdin(plan.sfdisk_script()?.into_bytes())
            .run()
            .context("writing the GPT")?;
        if device {
            wait_for_partitions(plan, disk)?;
        }
        Ok(())
    })
}

/// `/dev/vda` + 2 → `/dev/vda2`; `/dev/nvme0n1` + 2 → `/dev/nvme0n1p2`.
pub fn device_part(device: &Path, n: usize) -> PathBuf {
    let d = device.display().to_string();
    if d.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{d}p{n}"))
    } else {
        PathBuf::from(format!("{d}{n}"))
    }
}

fn wait_for_partitions(plan: &Plan, dev: &Path) -> Result<()> {
    // The kernel must see the new partitions before mkfs.
    let _ = Cmd::new("partx").arg("-u").arg(dev).run();
    let _ = Cmd::new("udevadm").arg("settle").run();
    for name in ["esp", "boot", "root"] {
        let p = device_part(dev, plan.index(name));
        for _ in 0..50 {
            if p.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !p.exists() {
            bail!("{}: partition did not appear after sfdisk", p.display());
        }
    }
    Ok(())
}

/// `mkfs.ext4` with the plan's uuid and hash seed; `extra` places it.
fn mkfs_ext4(plan: &Plan, label: &str, extended: &str) -> Cmd {
    let (uuid, seed) = match label {
        "root" => (&plan.ids.root_uuid, &plan.ids.root_hash_seed),
        _ => (&plan.ids.boot_uuid, &plan.ids.boot_hash_seed),
    };
    let mut c = Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
        .arg("-E")
        .arg(format!("hash_seed={seed}{extended}"));
    if let Some(t) = plan.source_date_epoch {
        c = c.env("E2FSPROGS_FAKE_TIME", t.to_string());
    }
    c
}

fn format_device(plan: &Plan, dev: &Path) -> Result<()> {
    step("making filesystems", || {
        for name in ["root", "boot"] {
            mkfs_ext4(plan, name, "")
                .arg(device_part(dev, plan.index(name)))
                .run()
                .with_context(|| format!("building the {name} filesystem"))?;
        }
        Ok(())
    })
}

/// The installer has no mtools: format the ESP, mount it, copy GRUB.
fn esp_on_device(plan: &Plan, dev: &Path, work: &Path, efi: Option<&Path>) -> Result<()> {
    let esp = device_part(dev, plan.index("esp"));
    super::mkfs_esp_cmd(&plan.ids.esp_volid)
        .arg(&esp)
        .run()
        .context("building the ESP")?;
    if let Some(efi) = efi {
        let mnt = work.join("esp");
        mount(&esp, &mnt)?;
        let copied = fs::create_dir_all(mnt.join("EFI/BOOT"))
            .and_then(|_| fs::copy(efi, mnt.join("EFI/BOOT/BOOTX64.EFI")).map(|_| ()))
            .context("copying GRUB onto the ESP");
        Cmd::new("umount").arg(&mnt).run()?;
        copied?;
    }
    Ok(())
}

/// Image file: /boot and / built from the staged directories straight into
/// the file at the partitions' offsets, the ESP with mtools.
fn filesystems_in_file(
    plan: &Plan,
    disk: &Path,
    root: &Path,
    work: &Path,
    efi: Option<&Path>,
) -> Result<()> {
    // /boot is its own filesystem: take it out of the root's directory.
    let bootdir = work.join("bootfs");
    fs::rename(root.join("boot"), &bootdir)?;
    fs::create_dir(root.join("boot"))?;
    if let Some(t) = plan.source_date_epoch {
        super::reproducible::clamp_times(root, t)?;
        super::reproducible::clamp_times(&bootdir, t)?;
    }
    let rootp = plan.part("root");
    let need = super::du_mib(root)?;
    // ext4 metadata, the journal and reserved blocks need headroom.
    if need + need / 5 + 64 > rootp.size / (1024 * 1024) {
        bail!(
            "{}: partitions: the root partition ({} MiB) is too small for the tree ({need} MiB); raise disk-size-mib",
            plan.def.name,
            rootp.size / (1024 * 1024)
        );
    }
    step("building filesystems", || {
        // Each writes its own partition of the file: /boot and the ESP are
        // built while / is.
        std::thread::scope(|s| {
            let others = s.spawn(|| {
                ext4_in_file(plan, disk, "boot", &bootdir)?;
                super::mkfs_esp(
                    disk,
                    plan.part("esp"),
                    &plan.ids.esp_volid,
                    efi,
                    plan.source_date_epoch,
                )
            });
            let root = ext4_in_file(plan, disk, "root", root);
            let others = others.join().expect("filesystem thread panicked");
            root.and(others)
        })
    })
}

/// The ext4 filesystem `label` from `dir`, in place in the image file.
fn ext4_in_file(plan: &Plan, disk: &Path, label: &str, dir: &Path) -> Result<()> {
    let p = plan.part(label);
    // The disk file is fresh and sparse: nothing to discard.
    mkfs_ext4(plan, label, &format!(",offset={},nodiscard", p.start))
        .arg("-d")
        .arg(dir)
        .arg(disk)
        .arg(format!("{}k", p.size / 1024))
        .run()
        .with_context(|| format!("building the {label} filesystem"))?;
    if let Some(t) = plan.source_date_epoch {
        super::reproducible::fix_ctimes(disk, p.start, t)
            .with_context(|| format!("fixing the {label} filesystem's timestamps"))?;
    }
    Ok(())
}

fn mount(what: &Path, at: &Path) -> Result<()> {
    fs::create_dir_all(at)?;
    Cmd::new("mount").arg(what).arg(at).run()?;
    Ok(())
}

/// Unmount what [`write`] mounted under `work` (innermost first).
pub fn unmount_all(work: &Path) {
    for m in ["root/boot", "root", "esp"] {
        let p = work.join(m);
        if crate::util::fsutil::is_mountpoint(&p) {
            let _ = Cmd::new("umount").arg(&p).run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = Ids::derived("c1", 4);
        assert_eq!(a, Ids::derived("c1", 4));
        assert_ne!(a.root_uuid, Ids::derived("c2", 4).root_uuid);
        let mut all = vec![&a.disk_guid, &a.root_uuid, &a.boot_uuid, &a.root_hash_seed];
        all.extend(&a.part_uuids);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "every id differs");
        assert_eq!(a.esp_volid.len(), 8);
        assert!(uuid::Uuid::parse_str(&a.root_uuid).is_ok());
    }

    #[test]
    fn device_partition_names() {
        let t = [
            ("/dev/vda", 2, "/dev/vda2"),
            ("/dev/nvme0n1", 4, "/dev/nvme0n1p4"),
            ("/dev/loop7", 1, "/dev/loop7p1"),
        ];
        for (d, n, want) in t {
            assert_eq!(device_part(Path::new(d), n), PathBuf::from(want));
        }
    }

    #[test]
    fn sfdisk_script_carries_the_ids() {
        let def = Definition::load_or_builtin(None).unwrap();
        let layout = def.layout().unwrap();
        let plan = Plan {
            ids: Ids::derived("x", layout.len()),
            layout,
            def,
            source: Source::Remote,
            ref_: "r".into(),
            commit: "c".into(),
            osname: "keelson".into(),
            remote: "keelson".into(),
            pull_url: "http://a/".into(),
            update_url: "http://a/".into(),
            keyring: None,
            extra_kargs: vec!["quiet".into()],
            source_date_epoch: None,
            firstboot: FirstBoot {
                platform: "qemu".into(),
                config: None,
            },
        };
        let s = plan.sfdisk_script().unwrap();
        assert!(
            s.contains(&format!("label-id: {}\n", plan.ids.disk_guid)),
            "{s}"
        );
        for u in &plan.ids.part_uuids {
            assert_eq!(s.matches(u.as_str()).count(), 1, "{s}");
        }
        let k = plan.kargs();
        assert_eq!(k[0], format!("root=UUID={}", plan.ids.root_uuid));
        assert_eq!(k.last().unwrap(), "quiet");
    }
}
