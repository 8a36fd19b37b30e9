//! Ignition configs at keelson's entry points (`keelson vm`, `keelson
//! install`, `keelson pxe`, image definitions): checked before anything is
//! written, fetched once for installs, and the developer's minimal config
//! for `keelson vm --ssh-key`.
//!
//! Checks: Debian's `ignition-validate` (Ignition 2.14's own parser and
//! rules), plus one rule of keelson's: a key Ignition does not know is an
//! error here, not a warning (Ignition 2.14 ignores it at boot, which hides
//! typos such as `passwd.user` until a node boots without its users).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::util::cmd::Cmd;

/// Ignition 2.14's platform ids (`ignition.platform.id=`;
/// internal/platform/platform.go of v2.14.0).
pub const PLATFORMS: &[&str] = &[
    "aliyun",
    "aws",
    "azure",
    "azurestack",
    "brightbox",
    "cloudstack",
    "digitalocean",
    "exoscale",
    "file",
    "gcp",
    "ibmcloud",
    "kubevirt",
    "metal",
    "nutanix",
    "openstack",
    "packet",
    "powervs",
    "qemu",
    "virtualbox",
    "vmware",
    "vultr",
    "zvm",
];

/// Where the installer embeds a config on the node's /boot (read by the
/// initramfs on the first boot, removed after it).
pub const EMBEDDED_CONFIG: &str = "ignition/config.ign";
/// The first-boot flag on /boot (GRUB sources it; see grub.cfg.tera).
pub const FIRSTBOOT_FLAG: &str = "ignition.firstboot";
/// Largest config accepted (Ignition reads it into memory in the initramfs).
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// How long fetching a config may take, all told (the installer must not
/// hang on a server that stopped answering).
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

const SSH_KEY_TEMPLATE: &str = include_str!("templates/ssh-key.ign.tera");
const FIRSTBOOT_TEMPLATE: &str = include_str!("templates/ignition.firstboot.tera");

/// Pure: `platform` is one Ignition 2.14 knows.
pub fn check_platform(platform: &str) -> Result<()> {
    if PLATFORMS.contains(&platform) {
        return Ok(());
    }
    bail!(
        "{platform:?} is not an Ignition 2.14 platform (one of: {})",
        PLATFORMS.join(", ")
    )
}

/// Pure: the problems in `ignition-validate`'s report that keelson refuses:
/// its errors, and its "Unused key" warnings (unknown fields).
pub fn refused(report: &str) -> Vec<String> {
    report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("warning") || l.contains("Unused key"))
        .map(|l| match l.strip_prefix("warning at ") {
            Some(rest) => format!("error at {}", rest.replace("Unused key", "unknown field")),
            None => l.to_string(),
        })
        .collect()
}

/// Validate `bytes` (named `name` in errors) with `ignition-validate`.
pub fn validate(name: &str, bytes: &[u8]) -> Result<()> {
    let mut f = tempfile::NamedTempFile::new().context("a temporary file for ignition-validate")?;
    std::io::Write::write_all(&mut f, bytes)?;
    let out = Cmd::new("ignition-validate")
        .arg(f.path())
        .output_unchecked()
        .context("running ignition-validate (package ignition)")?;
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems = refused(&report);
    if !out.status.success() && problems.is_empty() {
        problems.push(format!("ignition-validate exited with {}", out.status));
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "{name}: not a valid Ignition config:\n  {}",
        problems.join("\n  ")
    )
}

/// Read and validate a config file.
pub fn load_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs_err::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    validate(&path.display().to_string(), &bytes)?;
    Ok(bytes)
}

/// Pure: an http(s) URL a node or installer can fetch a config from.
pub fn check_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => bail!("{url:?}: not an http:// or https:// URL"),
    }
}

/// Fetch a config from `url` (installs: fetched once, embedded on the disk)
/// and validate it.
pub fn fetch(url: &str) -> Result<Vec<u8>> {
    check_url(url)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("fetching the Ignition config from {url}"))?;
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the Ignition config from {url}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        bail!("{url}: the Ignition config is over {MAX_CONFIG_BYTES} bytes");
    }
    validate(url, &bytes)?;
    Ok(bytes)
}

/// A config given as a file or a URL (exactly one, or none).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(std::path::PathBuf),
    Url(String),
}

impl Source {
    pub fn from_args(file: Option<&Path>, url: Option<&str>) -> Result<Option<Source>> {
        match (file, url) {
            (Some(_), Some(_)) => bail!("--ignition-file and --ignition-url: give one of them"),
            (Some(f), None) => Ok(Some(Source::File(f.to_path_buf()))),
            (None, Some(u)) => Ok(Some(Source::Url(u.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// The config's bytes, validated.
    pub fn load(&self) -> Result<Vec<u8>> {
        match self {
            Source::File(f) => load_file(f).with_context(|| "--ignition-file".to_string()),
            Source::Url(u) => fetch(u).with_context(|| "--ignition-url".to_string()),
        }
    }
}

/// Pure: the minimal config `keelson vm --ssh-key` boots with: user `core`
/// with that key, in the `sudo` group, with passwordless sudo.
pub fn ssh_key_config(public_key: &str) -> Result<String> {
    let key = public_key.trim();
    let kind = key.split_whitespace().next().unwrap_or_default();
    if key.lines().count() != 1 || !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-")) {
        bail!("not an OpenSSH public key (one line, \"ssh-ed25519 AAAA… comment\")");
    }
    let mut ctx = tera::Context::new();
    ctx.insert("key", key);
    tera::Tera::one_off(SSH_KEY_TEMPLATE, &ctx, false).context("rendering ssh-key.ign.tera")
}

/// Pure: the first-boot flag's content (a GRUB script grub.cfg sources).
pub fn firstboot_flag(platform: &str, boot_uuid: &str) -> Result<String> {
    check_platform(platform)?;
    let mut ctx = tera::Context::new();
    ctx.insert("platform", platform);
    ctx.insert("boot_uuid", boot_uuid);
    tera::Tera::one_off(FIRSTBOOT_TEMPLATE, &ctx, false)
        .context("rendering ignition.firstboot.tera")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        for (p, ok) in [
            ("qemu", true),
            ("metal", true),
            ("aws", true),
            ("gcp", true),
            ("QEMU", false),
            ("ec2", false),
            ("", false),
        ] {
            assert_eq!(check_platform(p).is_ok(), ok, "{p}");
        }
        let e = check_platform("ec2").unwrap_err().to_string();
        assert!(e.contains("\"ec2\" is not an Ignition 2.14 platform") && e.contains("aws"));
    }

    #[test]
    fn report_lines_refused() {
        for (report, want) in [
            ("", vec![]),
            (
                "warning at $.passwd.userz, line 1 col 43: Unused key userz\n",
                vec!["error at $.passwd.userz, line 1 col 43: unknown field userz"],
            ),
            (
                "warning at $.storage.files.0.mode: permissions unset, defaulting to 0644\n",
                vec![],
            ),
            (
                "error at line 0 col 0: unexpected end of JSON input\n",
                vec!["error at line 0 col 0: unexpected end of JSON input"],
            ),
            (
                "couldn't parse config: unsupported config version",
                vec!["couldn't parse config: unsupported config version"],
            ),
        ] {
            assert_eq!(refused(report), want, "{report}");
        }
    }

    #[test]
    fn urls() {
        for (u, ok) in [
            ("http://10.0.2.2:8000/node.ign", true),
            ("https://config.example/n1.ign", true),
            ("ftp://x/y", false),
            ("http://", false),
            ("http:///x", false),
            ("http://a b", false),
            ("/tmp/x.ign", false),
        ] {
            assert_eq!(check_url(u).is_ok(), ok, "{u}");
        }
    }

    #[test]
    fn sources() {
        let f = Path::new("n.ign");
        assert_eq!(Source::from_args(None, None).unwrap(), None);
        assert_eq!(
            Source::from_args(Some(f), None).unwrap(),
            Some(Source::File(f.into()))
        );
        assert_eq!(
            Source::from_args(None, Some("http://h/n.ign")).unwrap(),
            Some(Source::Url("http://h/n.ign".into()))
        );
        assert!(Source::from_args(Some(f), Some("http://h/n.ign")).is_err());
    }

    #[test]
    fn ssh_key_config_is_json_with_the_key() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelsonTestKeyOnly dev@\"laptop\"";
        let text = ssh_key_config(&format!("{key}\n")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ignition"]["version"], "3.3.0");
        let user = &v["passwd"]["users"][0];
        assert_eq!(user["name"], "core");
        assert_eq!(user["sshAuthorizedKeys"][0], key);
        assert_eq!(user["groups"][0], "sudo");
        assert_eq!(v["storage"]["files"][0]["path"], "/etc/sudoers.d/90-core");
        for bad in ["", "not a key", "ssh-ed25519 AAAA\nssh-rsa BBBB"] {
            assert!(ssh_key_config(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn firstboot_flag_sets_the_platform() {
        let text = firstboot_flag("qemu", "1234-abcd").unwrap();
        assert!(text.contains("set ignition_platform=\"qemu\""), "{text}");
        assert!(text.contains("set keelson_bootfs=\"1234-abcd\""), "{text}");
        assert!(firstboot_flag("ec2", "x").is_err());
    }
}
