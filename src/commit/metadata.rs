//! Commit metadata (`a{sv}`): what keelson records in every commit.

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib::{self, prelude::ToVariant};
use serde_json::{Map, Value};

use crate::backend::Package;

pub const INPUTHASH: &str = "keelson.inputhash";
pub const PACKAGES: &str = "keelson.packages";
pub const TREEFILE: &str = "keelson.treefile";

pub struct Fields<'a> {
    pub version: Option<&'a str>,
    pub inputhash: &'a str,
    pub packages: &'a [Package],
    pub treefile_json: &'a str,
    pub extra: &'a Map<String, Value>,
}

/// JSON values from `add-commit-metadata` as GVariants.
fn json_to_variant(v: &Value) -> glib::Variant {
    match v {
        Value::String(s) => s.to_variant(),
        Value::Bool(b) => b.to_variant(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_variant(),
            (None, Some(f)) => f.to_variant(),
            _ => n.to_string().to_variant(),
        },
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .to_variant(),
        other => other.to_string().to_variant(),
    }
}

/// Build the metadata; `rootfs` supplies `ostree.bootable`/`ostree.linux`.
pub fn build(f: &Fields<'_>, rootfs: &std::path::Path) -> Result<glib::Variant> {
    let dict = glib::VariantDict::new(None);
    // Treefile extras first so keelson's own keys win on a clash.
    for (k, v) in f.extra {
        dict.insert_value(k, &json_to_variant(v));
    }
    if let Some(v) = f.version {
        dict.insert_value("version", &v.to_variant());
    }
    dict.insert_value(INPUTHASH, &f.inputhash.to_variant());
    let pkgs: Vec<String> = f.packages.iter().map(|p| p.to_string()).collect();
    dict.insert_value(PACKAGES, &pkgs.to_variant());
    dict.insert_value(TREEFILE, &f.treefile_json.to_variant());
    ostree::commit_metadata_for_bootable(
        &gio::File::for_path(rootfs),
        &dict,
        gio::Cancellable::NONE,
    )
    .context("reading the kernel for ostree.bootable/ostree.linux")?;
    Ok(dict.end())
}
