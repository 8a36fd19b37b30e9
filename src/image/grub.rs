//! GRUB binaries for the image: an EFI executable for the ESP and, for BIOS,
//! core.img in the BIOS boot partition plus boot.img's first 440 bytes in
//! the MBR. Both carry a tiny built-in config that finds /boot by UUID and
//! loads ostree's current `loader/grub.cfg` (GRUB follows the `loader`
//! symlink, which ostree swaps atomically). Modules come from the tree
//! being installed, so they match its GRUB.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::util::cmd::Cmd;

const EARLY_TEMPLATE: &str = include_str!("templates/early-grub.cfg.tera");

/// Built into both images: disks, filesystems, the menu's commands.
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "normal",
    "configfile",
    "linux",
    "search",
    "search_fs_uuid",
    "search_label",
    "echo",
    "test",
    "loadenv",
    "serial",
    "terminal",
    "gzio",
    "reboot",
    "halt",
    "sleep",
    "cat",
    "ls",
];
const EFI_MODULES: &[&str] = &["efi_gop", "efi_uga", "all_video"];
const BIOS_MODULES: &[&str] = &["biosdisk"];

pub fn early_config(boot_uuid: &str) -> Result<String> {
    let mut ctx = tera::Context::new();
    ctx.insert("boot_uuid", boot_uuid);
    tera::Tera::one_off(EARLY_TEMPLATE, &ctx, false).context("rendering GRUB's early config")
}

fn mkimage(format: &str, moddir: &Path, early: &Path, out: &Path, extra: &[&str]) -> Result<()> {
    if !moddir.is_dir() {
        bail!(
            "{}: GRUB modules missing in the tree (is the GRUB package for {format} in `packages`?)",
            moddir.display()
        );
    }
    Cmd::new("grub-mkimage")
        .arg("-O")
        .arg(format)
        .arg("-d")
        .arg(moddir)
        .arg("-c")
        .arg(early)
        .args(["-p", "/grub", "-o"])
        .arg(out)
        .args(COMMON_MODULES.iter().chain(extra))
        .run()
        .with_context(|| format!("building the GRUB {format} image"))?;
    Ok(())
}

/// `BOOTX64.EFI` from the tree's x86_64-efi modules.
pub fn efi_image(tree: &Path, early: &Path, out: &Path) -> Result<()> {
    mkimage(
        "x86_64-efi",
        &tree.join("usr/lib/grub/x86_64-efi"),
        early,
        out,
        EFI_MODULES,
    )
}

/// core.img and boot.img for BIOS, patched for core.img at `core_lba`.
pub fn bios_images(
    tree: &Path,
    early: &Path,
    work: &Path,
    core_lba: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let moddir = tree.join("usr/lib/grub/i386-pc");
    let core = work.join("core.img");
    mkimage("i386-pc", &moddir, early, &core, BIOS_MODULES)?;
    let mut core = fs_err::read(&core)?;
    let mut boot = fs_err::read(moddir.join("boot.img")).context("reading GRUB's boot.img")?;
    patch_bios(&mut boot, &mut core, core_lba)?;
    Ok((boot, core))
}

/// BIOS boot: core.img into the BIOS boot partition `bios` of `disk` (an
/// image file or a block device) and boot.img's code into the MBR.
pub fn install_bios(
    disk: &Path,
    bios: &super::definition::Part,
    tree: &Path,
    early: &Path,
    work: &Path,
) -> Result<()> {
    let (mbr, core) = bios_images(tree, early, work, bios.start / 512)?;
    if core.len() as u64 > bios.size {
        bail!(
            "GRUB core.img ({} bytes) does not fit the BIOS boot partition",
            core.len()
        );
    }
    super::write_at(disk, bios.start, &core)?;
    // Only the boot code: the partition table after byte 440 stays.
    super::write_at(disk, 0, &mbr[..440])
}

// Offsets in GRUB's i386-pc boot.img and diskboot.img (grub/include/grub/
// i386/pc/boot.h): where core.img starts, and the drive-check jump.
const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
/// The blocklist at the end of core.img's first sector (diskboot.img):
/// start sector (u64) and length (u16) of the rest of core.img.
const BLOCKLIST: usize = 512 - 12;

/// What `grub-setup` does for a core.img in a BIOS boot partition: point
/// boot.img at core.img's first sector, point diskboot's blocklist at the
/// rest, and skip the BIOS drive check (buggy BIOSes pass a bad drive).
pub fn patch_bios(boot: &mut [u8], core: &mut [u8], core_lba: u64) -> Result<()> {
    if boot.len() != 512 {
        bail!("boot.img is {} bytes, expected 512", boot.len());
    }
    if core.len() < 1024 {
        bail!("core.img is only {} bytes", core.len());
    }
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    boot[DRIVE_CHECK] = 0x90;
    boot[DRIVE_CHECK + 1] = 0x90;
    let sectors = core.len().div_ceil(512) as u64;
    let len = u16::from_le_bytes([core[BLOCKLIST + 8], core[BLOCKLIST + 9]]) as u64;
    if len != sectors - 1 {
        bail!(
            "core.img blocklist says {len} sectors, the image has {}",
            sectors - 1
        );
    }
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_patch_offsets() {
        let mut boot = vec![0u8; 512];
        boot[DRIVE_CHECK] = 0x75; // jnz
        let mut core = vec![0u8; 512 * 5];
        core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&4u16.to_le_bytes());
        patch_bios(&mut boot, &mut core, 2048).unwrap();
        assert_eq!(
            u64::from_le_bytes(boot[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(&boot[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(u64::from_le_bytes(core[500..508].try_into().unwrap()), 2049);
        // A blocklist that disagrees with the image size is refused.
        let mut bad = vec![0u8; 512 * 5];
        bad[BLOCKLIST + 8] = 9;
        assert!(
            patch_bios(&mut boot, &mut bad, 2048)
                .unwrap_err()
                .to_string()
                .contains("blocklist")
        );
    }

    #[test]
    fn early_config_golden() {
        assert_eq!(
            early_config("1234-abcd").unwrap(),
            "search --no-floppy --fs-uuid --set=root 1234-abcd\nset prefix=($root)/grub\nconfigfile ($root)/loader/grub.cfg\n"
        );
    }
}
