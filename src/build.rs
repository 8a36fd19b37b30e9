//! `keelson build`: compose + images in one step for CI, with a meta.json
//! describing every artifact.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::image::{self, definition::Definition};
use crate::util::fsutil::write_atomic;

pub struct Options {
    pub treefile: PathBuf,
    pub output: PathBuf,
    pub definition: PathBuf,
    pub cachedir: Option<PathBuf>,
    pub remote_url: Option<String>,
    pub threads: usize,
    pub source_date_epoch: Option<i64>,
    /// Also write network-install artifacts into `pxe/` (`keelson pxe`).
    pub pxe: Option<PxeRequest>,
}

/// `keelson build --pxe`: where the installer pulls from and installs to.
pub struct PxeRequest {
    /// The repository URL the installer pulls from (default: the
    /// definition's remote URL).
    pub url: Option<String>,
    pub pxe_url: Option<String>,
    pub device: String,
    /// The installer may erase a disk that already holds data.
    pub wipe: bool,
    /// The installed node's update URL (default: the installer's URL).
    pub update_url: Option<String>,
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
    let def = Definition::load(&o.definition)?;
    std::fs::create_dir_all(&o.output)
        .with_context(|| format!("{}: cannot create output directory", o.output.display()))?;
    let repo = o.output.join("repo");
    let composed = crate::compose::run(&crate::compose::Options {
        treefile: o.treefile.clone(),
        repo: repo.clone(),
        cachedir: o.cachedir.clone(),
        print_only: false,
        dry_run: false,
        force_nocache: false,
        touch_if_changed: None,
        write_composejson_to: Some(o.output.join("compose.json")),
        threads: o.threads,
        source_date_epoch: o.source_date_epoch,
        gpg_sign: None,
        gpg_homedir: None,
    })?;
    let commit = composed.commit.context("compose produced no commit")?;
    let mut artifacts = Vec::new();
    for format in &def.formats {
        let ext = match format {
            image::definition::Format::Raw => "raw",
            image::definition::Format::Qcow2 => "qcow2",
        };
        let output = o.output.join(format!("{}.{ext}", def.name));
        let mut art = image::build(&image::Options {
            repo: repo.clone(),
            ref_: composed.ref_.clone(),
            definition: o.definition.clone(),
            format: *format,
            output: output.clone(),
            remote_url: o.remote_url.clone(),
            gpg_keyring: None,
        })?;
        art.sha256 = Some(image::sha256_file(&output)?);
        artifacts.push(art);
    }
    let pxe = match &o.pxe {
        None => None,
        Some(p) => {
            let dir = o.output.join("pxe");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("{}: cannot replace", dir.display()))?;
            }
            let mut art = crate::provision::pxe::run(&crate::provision::pxe::Options {
                repo: repo.clone(),
                ref_: composed.ref_.clone(),
                output: dir,
                url: p.url.clone().unwrap_or_else(|| def.remote.url.clone()),
                device: p.device.clone(),
                pxe_url: p.pxe_url.clone(),
                definition: Some(o.definition.clone()),
                kargs: vec![],
                installer_kargs: crate::provision::pxe::DEFAULT_INSTALLER_KARGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                gpg_keyring: None,
                update_url: p.update_url.clone(),
                wipe: p.wipe,
            })?;
            art.directory = "pxe".into();
            Some(art)
        }
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
