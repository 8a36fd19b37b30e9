//! `keelson kickstart`: kickstart files for RHEL-family installers (anaconda's
//! `ostreesetup`), rendered from the Tera templates in `kickstart/`. Checking
//! the parameters and rendering are pure.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::image::definition::{Definition, Firmware};

/// Templates shipped in the binary (from `kickstart/`), by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("ostree", include_str!("../../kickstart/ostree.ks.tera")),
    (
        "ostree-minimal",
        include_str!("../../kickstart/ostree-minimal.ks.tera"),
    ),
];

/// What the installer needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The ostree repository the installer pulls from.
    pub url: String,
    pub ref_: String,
    pub osname: String,
    /// Remote name on the node (the image definition's by default).
    pub remote: String,
    /// Install without signature verification (`--nogpg`).
    pub nogpg: bool,
    /// Where the node looks for updates afterwards (default: `url`).
    pub update_url: Option<String>,
    /// `--var k=v`: extra template variables.
    pub vars: BTreeMap<String, String>,
}

/// `keelson kickstart`: the command line's request.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// The ostree repository URL the installer pulls from.
    #[arg(long)]
    pub url: String,
    /// The ref to install, e.g. keelson/12/x86_64/k8s-node.
    #[arg(long = "ref")]
    pub ref_: String,
    /// The stateroot (default: the image definition's).
    #[arg(long)]
    pub osname: Option<String>,
    /// Remote name on the node (default: the image definition's).
    #[arg(long)]
    pub remote: Option<String>,
    /// Where the node looks for updates after the install (default: --url).
    #[arg(long)]
    pub update_url: Option<String>,
    /// Install without verifying signatures (ostreesetup --nogpg).
    #[arg(long)]
    pub nogpg: bool,
    /// A shipped template (ostree, ostree-minimal) or a template file.
    #[arg(long, default_value = "ostree")]
    pub template: String,
    /// Extra template variable NAME=VALUE (repeatable): ssh_key, hostname,
    /// disk, timezone, lang, keyboard in the shipped templates.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Image definition for partition sizes and kernel arguments (default:
    /// the built-in images/default.json).
    #[arg(long)]
    pub definition: Option<std::path::PathBuf>,
}

/// The kickstart for a request: the definition's defaults filled in.
pub fn render_request(r: &Request) -> Result<String> {
    let def = Definition::load_or_builtin(r.definition.as_deref())?;
    let mut vars = BTreeMap::new();
    for v in &r.vars {
        let (k, val) = parse_var(v)?;
        vars.insert(k, val);
    }
    let params = Params {
        url: r.url.clone(),
        ref_: r.ref_.clone(),
        osname: r.osname.clone().unwrap_or_else(|| def.osname.clone()),
        remote: r.remote.clone().unwrap_or_else(|| def.remote.name.clone()),
        nogpg: r.nogpg,
        update_url: r.update_url.clone(),
        vars,
    };
    let (name, text) = template(&r.template)?;
    render(&name, &text, &def, &params)
}

#[derive(Serialize)]
struct Parts {
    bios_boot_mib: u64,
    esp_mib: u64,
    boot_mib: u64,
    root_min_mib: u64,
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "file:///"]
        .iter()
        .any(|p| s.starts_with(p) && s.len() > p.len())
        && !s.contains(|c: char| c.is_whitespace() || c == '"')
}

/// Check the parameters; errors name the command-line flag.
pub fn validate(p: &Params) -> Result<()> {
    if !is_url(&p.url) {
        bail!("--url: {:?} is not an http(s):// or file:/// URL", p.url);
    }
    if let Some(u) = &p.update_url
        && !is_url(u)
    {
        bail!("--update-url: {u:?} is not an http(s):// or file:/// URL");
    }
    if p.ref_.is_empty()
        || p.ref_.starts_with('/')
        || p.ref_.contains(|c: char| c.is_whitespace() || c == ':')
    {
        bail!("--ref: {:?} is not an ostree ref", p.ref_);
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name_ok(&p.osname) {
        bail!("--osname: {:?}: letters, digits, - and _ only", p.osname);
    }
    if !name_ok(&p.remote) {
        bail!("--remote: {:?}: letters, digits, - and _ only", p.remote);
    }
    for (k, v) in &p.vars {
        let key_ok = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !key_ok {
            bail!("--var {k}=…: names are lower-case letters, digits and _");
        }
        if v.contains(['\n', '\r', '"']) {
            bail!("--var {k}: the value must not contain newlines or double quotes");
        }
    }
    Ok(())
}

/// `--var k=v` → (k, v).
pub fn parse_var(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("--var {s:?}: expected NAME=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// The template text for `name`: a shipped template, or a file path.
pub fn template(name: &str) -> Result<(String, String)> {
    if let Some((n, t)) = TEMPLATES.iter().find(|(n, _)| *n == name) {
        return Ok((n.to_string(), t.to_string()));
    }
    let p = Path::new(name);
    if name.contains('/') || p.exists() {
        let text =
            fs_err::read_to_string(p).with_context(|| format!("--template {name}: cannot read"))?;
        return Ok((name.to_string(), text));
    }
    let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
    bail!(
        "--template {name:?}: no such template (shipped: {}; or give a file path)",
        known.join(", ")
    )
}

/// Render a kickstart (pure).
pub fn render(name: &str, text: &str, def: &Definition, p: &Params) -> Result<String> {
    validate(p)?;
    let mut ctx = tera::Context::new();
    ctx.insert("template", name);
    ctx.insert("url", &p.url);
    ctx.insert("ref", &p.ref_);
    ctx.insert("osname", &p.osname);
    ctx.insert("remote", &p.remote);
    ctx.insert("nogpg", &p.nogpg);
    ctx.insert("update_url", p.update_url.as_deref().unwrap_or(&p.url));
    ctx.insert("kargs", &def.kernel_args.join(" "));
    ctx.insert("bios", &def.firmware.contains(&Firmware::Bios));
    ctx.insert("uefi", &def.firmware.contains(&Firmware::Uefi));
    ctx.insert("definition_name", &def.name);
    ctx.insert(
        "parts",
        &Parts {
            bios_boot_mib: def.partitions.bios_boot_mib,
            esp_mib: def.partitions.esp_mib,
            boot_mib: def.partitions.boot_mib,
            root_min_mib: def.partitions.root_min_mib,
        },
    );
    ctx.insert("vars", &p.vars);
    tera::Tera::one_off(text, &ctx, false).map_err(|e| {
        // Tera's error chain holds the useful part (which variable, where).
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg += &format!(": {s}");
            src = s.source();
        }
        anyhow::anyhow!("kickstart template {name}: {msg}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Definition {
        Definition::parse("default.json", include_str!("../../images/default.json")).unwrap()
    }

    fn params() -> Params {
        Params {
            url: "http://10.0.2.2:8000/repo".into(),
            ref_: "keelson/12/x86_64/k8s-node".into(),
            osname: "keelson".into(),
            remote: "keelson".into(),
            nogpg: true,
            update_url: Some("https://updates.example.com/repo".into()),
            vars: BTreeMap::new(),
        }
    }

    #[test]
    fn default_template_follows_the_definition() {
        let (n, t) = template("ostree").unwrap();
        let ks = render(&n, &t, &def(), &params()).unwrap();
        for want in [
            "part biosboot --fstype=biosboot --size=1\n",
            "part /boot/efi --fstype=efi --size=127\n",
            "part /boot --fstype=ext4 --size=384 --label=boot\n",
            "part / --fstype=ext4 --size=2048 --grow --label=root\n",
            "bootloader --location=mbr --timeout=1 --append=\"console=tty0 console=ttyS0,115200n8\"\n",
            "ostreesetup --osname=keelson --remote=keelson --url=http://10.0.2.2:8000/repo --ref=keelson/12/x86_64/k8s-node --nogpg\n",
            "ostree remote add --set=gpg-verify=false keelson https://updates.example.com/repo keelson/12/x86_64/k8s-node\n",
        ] {
            assert!(ks.contains(want), "missing {want:?} in:\n{ks}");
        }
        assert!(!ks.contains("sshkey"), "no key given");
    }

    #[test]
    fn vars_reach_the_template() {
        let mut p = params();
        p.nogpg = false;
        p.vars
            .insert("ssh_key".into(), "ssh-ed25519 AAAA test".into());
        p.vars.insert("hostname".into(), "node-1".into());
        let (n, t) = template("ostree").unwrap();
        let ks = render(&n, &t, &def(), &p).unwrap();
        assert!(
            ks.contains("sshkey --username=root \"ssh-ed25519 AAAA test\"\n"),
            "{ks}"
        );
        assert!(ks.contains("--hostname=node-1"), "{ks}");
        assert!(
            !ks.contains("--nogpg") && ks.contains("--set=gpg-verify=true"),
            "{ks}"
        );
    }

    #[test]
    fn bad_parameters_name_the_flag() {
        type Change = fn(&mut Params);
        let t: &[(Change, &str)] = &[
            (
                |p| p.url = "10.0.2.2/repo".into(),
                "--url: \"10.0.2.2/repo\"",
            ),
            (|p| p.ref_ = "a ref".into(), "--ref: \"a ref\""),
            (|p| p.ref_ = "remote:ref".into(), "--ref: \"remote:ref\""),
            (|p| p.osname = "os/name".into(), "--osname: \"os/name\""),
            (
                |p| {
                    p.vars.insert("Bad".into(), "x".into());
                },
                "--var Bad=…",
            ),
            (
                |p| {
                    p.vars.insert("k".into(), "a\"b".into());
                },
                "--var k: the value",
            ),
            (|p| p.update_url = Some("ftp://x".into()), "--update-url"),
        ];
        for (change, want) in t {
            let mut p = params();
            change(&mut p);
            let e = format!("{:#}", validate(&p).unwrap_err());
            assert!(e.contains(want), "got {e}, want {want}");
        }
        assert!(
            format!("{:#}", template("nope").unwrap_err())
                .contains("shipped: ostree, ostree-minimal")
        );
        assert!(parse_var("novalue").is_err());
        assert_eq!(parse_var("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}
