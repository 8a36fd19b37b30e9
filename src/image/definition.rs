//! Image definitions (`images/*.json`): partition sizes, kernel arguments,
//! firmware, output formats, the node's update remote. Parsing, validation
//! and the partition layout are pure.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
/// Partitions start 1 MiB aligned; the backup GPT needs the last 33 sectors,
/// so 1 MiB is kept free at the end too.
const ALIGN_MIB: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Uefi,
    Bios,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Partitions {
    /// BIOS boot partition for GRUB's core.img (only with `bios` firmware).
    pub bios_boot_mib: u64,
    pub esp_mib: u64,
    pub boot_mib: u64,
    /// The root filesystem takes the rest of the disk.
    pub root_min_mib: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Remote {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Definition {
    pub name: String,
    /// The stateroot (`ostree admin os-init`).
    pub osname: String,
    pub disk_size_mib: u64,
    pub partitions: Partitions,
    /// Extra kernel arguments; `root=` and `rw` are added by keelson.
    pub kernel_args: Vec<String>,
    pub firmware: Vec<Firmware>,
    pub formats: Vec<Format>,
    pub remote: Remote,
    /// Ignition's platform id for the first boot (`ignition.platform.id`):
    /// where the node fetches its config. Default: `qemu` when the formats
    /// include qcow2, else `metal`. `keelson install` always uses `metal`
    /// (the config is embedded on the disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition_platform: Option<String>,
}

/// One partition as placed on the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: &'static str,
    pub type_guid: &'static str,
    pub start: u64,
    pub size: u64,
}

pub const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";
pub const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const ROOT_X86_64_GUID: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

impl Definition {
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path)
            .with_context(|| format!("{}: cannot read image definition", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The given definition file, or the built-in images/default.json.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => Self::load(p),
            None => Self::parse(
                "images/default.json (built in)",
                include_str!("../../images/default.json"),
            ),
        }
    }

    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let d: Definition = serde_path_to_error::deserialize(de).map_err(|e| {
            let msg = e.inner().to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            anyhow::anyhow!("{name}: {}: {msg}", e.path())
        })?;
        d.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok(d)
    }

    /// Pure: the Ignition platform images of this definition boot with.
    pub fn ignition_platform(&self) -> &str {
        match &self.ignition_platform {
            Some(p) => p,
            None if self.formats.contains(&Format::Qcow2) => "qemu",
            None => "metal",
        }
    }

    fn validate(&self) -> Result<()> {
        if self.firmware.is_empty() {
            bail!("firmware: at least one of \"uefi\", \"bios\"");
        }
        if self.formats.is_empty() {
            bail!("formats: at least one of \"raw\", \"qcow2\"");
        }
        if self.firmware.contains(&Firmware::Bios) && self.partitions.bios_boot_mib == 0 {
            bail!("partitions.bios-boot-mib: BIOS firmware needs a BIOS boot partition");
        }
        if self.partitions.esp_mib < 32 {
            bail!(
                "partitions.esp-mib: {} MiB is too small for a FAT ESP (min 32)",
                self.partitions.esp_mib
            );
        }
        if self.partitions.boot_mib < 128 {
            bail!(
                "partitions.boot-mib: {} MiB cannot hold two kernels and initramfs (min 128)",
                self.partitions.boot_mib
            );
        }
        if let Some(p) = &self.ignition_platform {
            crate::provision::ignition::check_platform(p)
                .map_err(|e| anyhow::anyhow!("ignition-platform: {e}"))?;
        }
        for (i, k) in self.kernel_args.iter().enumerate() {
            if k.starts_with("root=") || k.starts_with("ostree=") {
                bail!("kernel-args[{i}]: {k:?} is set by keelson");
            }
        }
        self.layout()?;
        Ok(())
    }

    /// Partitions in disk order, in bytes. Errors when they do not fit.
    pub fn layout(&self) -> Result<Vec<Part>> {
        let p = &self.partitions;
        let mut parts = Vec::new();
        let mut at = ALIGN_MIB;
        let bios = self.firmware.contains(&Firmware::Bios);
        let mut push = |name, guid, mib: u64, at: &mut u64| {
            parts.push(Part {
                name,
                type_guid: guid,
                start: *at * MIB,
                size: mib * MIB,
            });
            *at += mib;
        };
        if bios {
            push("bios", BIOS_BOOT_GUID, p.bios_boot_mib, &mut at);
        }
        push("esp", ESP_GUID, p.esp_mib, &mut at);
        push("boot", LINUX_GUID, p.boot_mib, &mut at);
        let end = self.disk_size_mib.saturating_sub(ALIGN_MIB);
        let root = end.saturating_sub(at);
        if root < p.root_min_mib || end <= at {
            bail!(
                "disk-size-mib: {} MiB does not fit the partitions: {} MiB before root, root needs at least {} MiB (+{} MiB for the GPT)",
                self.disk_size_mib,
                at,
                p.root_min_mib,
                2 * ALIGN_MIB
            );
        }
        push("root", ROOT_X86_64_GUID, root, &mut at);
        Ok(parts)
    }

    /// The sfdisk script for [`Definition::layout`].
    pub fn sfdisk_script(&self) -> Result<String> {
        let mut s = String::from("label: gpt\nunit: sectors\nfirst-lba: 2048\n");
        for p in self.layout()? {
            s += &format!(
                "start={}, size={}, type={}, name=\"{}\"\n",
                p.start / 512,
                p.size / 512,
                p.type_guid,
                p.name
            );
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(extra: &str) -> String {
        format!(
            r#"{{"name":"t","osname":"keelson","disk-size-mib":4096,
            "partitions":{{"bios-boot-mib":1,"esp-mib":127,"boot-mib":384,"root-min-mib":1536}},
            "kernel-args":["console=ttyS0,115200n8"],"firmware":["uefi","bios"],
            "formats":["qcow2"],"remote":{{"name":"keelson","url":"http://updates.invalid/repo"}}{extra}}}"#
        )
    }

    #[test]
    fn layout_table() {
        let d = Definition::parse("t.json", &def("")).unwrap();
        let parts = d.layout().unwrap();
        let got: Vec<(&str, u64, u64)> = parts
            .iter()
            .map(|p| (p.name, p.start / MIB, p.size / MIB))
            .collect();
        assert_eq!(
            got,
            [
                ("bios", 1, 1),
                ("esp", 2, 127),
                ("boot", 129, 384),
                ("root", 513, 3582)
            ]
        );
        let script = d.sfdisk_script().unwrap();
        assert!(
            script.contains(
                "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=\"bios\""
            ),
            "{script}"
        );
        // UEFI only: no BIOS boot partition.
        let u = Definition::parse(
            "t.json",
            &def("").replace(r#"["uefi","bios"]"#, r#"["uefi"]"#),
        )
        .unwrap();
        assert_eq!(u.layout().unwrap()[0].name, "esp");
    }

    #[test]
    fn ignition_platform_defaults_by_format() {
        for (extra, formats, want) in [
            ("", r#"["qcow2"]"#, "qemu"),
            ("", r#"["raw"]"#, "metal"),
            ("", r#"["raw","qcow2"]"#, "qemu"),
            (r#","ignition-platform":"aws""#, r#"["raw"]"#, "aws"),
            (r#","ignition-platform":"metal""#, r#"["qcow2"]"#, "metal"),
        ] {
            let text = def(extra).replace(r#"["qcow2"]"#, formats);
            let d = Definition::parse("t.json", &text).unwrap();
            assert_eq!(d.ignition_platform(), want, "{extra} {formats}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let table: &[(String, &str)] = &[
            (
                def("").replace("4096", "1024"),
                "t.json: disk-size-mib: 1024 MiB does not fit the partitions",
            ),
            (
                def("").replace("\"esp-mib\":127", "\"esp-mib\":8"),
                "t.json: partitions.esp-mib: 8 MiB is too small",
            ),
            (
                def("").replace("\"firmware\":[\"uefi\",\"bios\"]", "\"firmware\":[\"efi\"]"),
                "t.json: firmware[0]: unknown variant `efi`",
            ),
            (def(r#","extra":1"#), "t.json: extra: unknown field `extra`"),
            (
                def("").replace("console=ttyS0,115200n8", "root=/dev/sda"),
                "t.json: kernel-args[0]: \"root=/dev/sda\" is set by keelson",
            ),
            (
                def("").replace("\"bios-boot-mib\":1", "\"bios-boot-mib\":0"),
                "t.json: partitions.bios-boot-mib: BIOS firmware needs",
            ),
            (
                def(r#","ignition-platform":"ec2""#),
                "t.json: ignition-platform: \"ec2\" is not an Ignition 2.14 platform",
            ),
        ];
        for (text, want) in table {
            let e = format!("{:#}", Definition::parse("t.json", text).unwrap_err());
            assert!(e.starts_with(want), "\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        let mut n = 0;
        for e in fs_err::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                Definition::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
