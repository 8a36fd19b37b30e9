//! `keelson build`: compose + images in one step for CI, with a meta.json
//! describing every artifact.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::image::{self, definition::Definition};
use crate::util::fsutil::write_atomic;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The treefile to compose.
    pub treefile: PathBuf,
    /// Directory for the repo, images and meta.json.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Image definition (default: the built-in images/default.json).
    #[arg(long)]
    pub definition: Option<PathBuf>,
    /// Package cache and work directory (as for compose).
    #[arg(long)]
    pub cachedir: Option<PathBuf>,
    /// Install the packages afresh (as for compose).
    #[arg(long)]
    pub no_install_cache: bool,
    /// Run dracut afresh (as for compose).
    #[arg(long)]
    pub no_initramfs_cache: bool,
    /// URL of the node's update remote (default: the definition's).
    #[arg(long)]
    pub remote_url: Option<String>,
    #[command(flatten)]
    pub pxe: PxeRequest,
}

/// `keelson build --pxe`: where the installer pulls from and installs to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PxeRequest {
    /// Also write the network-install artifacts (`keelson pxe`) into pxe/.
    #[arg(long = "pxe")]
    pub enabled: bool,
    /// With --pxe: the repository URL the installer pulls from (default:
    /// the definition's remote URL).
    #[arg(long = "pxe-repo-url", requires = "enabled")]
    pub url: Option<String>,
    /// With --pxe: where the artifacts will be served over http(s).
    #[arg(long, requires = "enabled")]
    pub pxe_url: Option<String>,
    /// With --pxe: the disk the installer erases and installs onto.
    #[arg(long = "pxe-device", default_value = "/dev/vda", requires = "enabled")]
    pub device: String,
    /// With --pxe: the installer may erase a disk that already holds data.
    #[arg(long = "pxe-wipe", requires = "enabled")]
    pub wipe: bool,
    /// With --pxe: the installed node's update URL (default: the URL the
    /// installer pulls from).
    #[arg(long = "pxe-update-url", requires = "enabled")]
    pub update_url: Option<String>,
    /// With --pxe: the URL the installer fetches the node's Ignition config
    /// from (validated before the disk is touched, embedded on it).
    #[arg(long = "pxe-ignition-url", value_name = "URL", requires = "enabled")]
    pub ignition_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub commit: String,
    pub version: Option<String>,
    pub inputhash: String,
    /// The archive repo (relative to the output directory).
    pub repo: String,
    pub artifacts: Vec<image::Artifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pxe: Option<crate::provision::pxe::Artifacts>,
}

pub fn run(o: &Options) -> Result<Meta> {
    // Fail on a bad definition before the long compose.
    let def = Definition::load_or_builtin(o.definition.as_deref())?;
    fs_err::create_dir_all(&o.output)
        .with_context(|| format!("{}: cannot create output directory", o.output.display()))?;
    let repo = o.output.join("repo");
    let mut compose = crate::compose::Options::new(o.treefile.clone(), repo.clone());
    compose.cachedir = o.cachedir.clone();
    compose.no_install_cache = o.no_install_cache;
    compose.no_initramfs_cache = o.no_initramfs_cache;
    compose.write_composejson_to = Some(o.output.join("compose.json"));
    let composed = crate::compose::run(&compose)?;
    let commit = composed.commit.context("compose produced no commit")?;
    let outputs: Vec<PathBuf> = def
        .formats
        .iter()
        .map(|f| o.output.join(format!("{}.{}", def.name, f.extension())))
        .collect();
    let first = image::Options {
        repo: repo.clone(),
        ref_: composed.ref_.clone(),
        definition: o.definition.clone(),
        format: def.formats[0],
        output: outputs[0].clone(),
        remote_url: o.remote_url.clone(),
        gpg_keyring: None,
    };
    let mut artifacts = image::build_formats(&first, &def.formats, &outputs)?;
    for (art, out) in artifacts.iter_mut().zip(&outputs) {
        art.sha256 = Some(image::sha256_file(out)?);
    }
    let pxe = if o.pxe.enabled {
        Some(pxe(o, &repo, &composed.ref_)?)
    } else {
        None
    };
    let meta = Meta {
        ref_: composed.ref_,
        commit,
        version: composed.version,
        inputhash: composed.inputhash,
        repo: "repo".into(),
        artifacts,
        pxe,
    };
    let text = serde_json::to_string_pretty(&meta)? + "\n";
    write_atomic(&o.output.join("meta.json"), text.as_bytes())?;
    Ok(meta)
}

fn pxe(
    o: &Options,
    repo: &std::path::Path,
    ref_: &str,
) -> Result<crate::provision::pxe::Artifacts> {
    let dir = o.output.join("pxe");
    if dir.exists() {
        fs_err::remove_dir_all(&dir)
            .with_context(|| format!("{}: cannot replace", dir.display()))?;
    }
    let p = &o.pxe;
    let mut art = crate::provision::pxe::run(&crate::provision::pxe::Options {
        repo: repo.to_path_buf(),
        ref_: ref_.to_string(),
        output: dir,
        url: p.url.clone(),
        device: p.device.clone(),
        pxe_url: p.pxe_url.clone(),
        definition: o.definition.clone(),
        kargs: vec![],
        installer_kargs: vec![],
        gpg_keyring: None,
        update_url: p.update_url.clone(),
        wipe: p.wipe,
        ignition_url: p.ignition_url.clone(),
    })?;
    art.directory = "pxe".into();
    Ok(art)
}
