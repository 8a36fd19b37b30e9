//! The coordination policy from the configuration fragments
//! (`updates.coordination`, `[updates.kubernetes]`, `[updates.fleetlock]`)
//! and its validation. Pure.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::node::config::Updates;

/// Who decides when this node may reboot for an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Nobody: reboot as the reboot policy says.
    #[default]
    None,
    /// A slot on Lease objects, cordon and drain through the Kubernetes API.
    Kubernetes,
    /// A FleetLock server (airlock, poseidon/fleetlock), as zincati speaks it.
    Fleetlock,
}

impl Backend {
    /// The name in the configuration (`coordination = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Kubernetes => "kubernetes",
            Backend::Fleetlock => "fleetlock",
        }
    }
}

/// What to do when the drain did not finish within its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDrainTimeout {
    /// Uncordon, release the slot, do not reboot; try again next round.
    #[default]
    GiveUp,
    /// Reboot anyway (the pods that would not leave are killed).
    Reboot,
}

pub const DEFAULT_KUBECONFIG: &str = "/etc/keelson/kubeconfig";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Credentials of the agent's ServiceAccount (dropped by Ignition or
    /// an operator).
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Where the slot Leases live.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// This node's Node object (default: the host name).
    pub node_name: Option<String>,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            kubeconfig: default_kubeconfig(),
            namespace: default_namespace(),
            node_name: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleetlock {
    /// The server's base URL, e.g. `http://fleetlock.example:8080`.
    pub url: Option<String>,
    /// The FleetLock group (default: `updates.group`).
    pub group: Option<String>,
}

fn default_kubeconfig() -> PathBuf {
    PathBuf::from(DEFAULT_KUBECONFIG)
}
fn default_namespace() -> String {
    "keelson-system".into()
}
pub fn default_group() -> String {
    "default".into()
}
pub fn default_max_unavailable() -> u32 {
    1
}
pub fn default_drain_timeout() -> u64 {
    600
}
pub fn default_slot_expiry() -> u64 {
    3600
}
pub fn default_retry() -> u64 {
    300
}

/// The FleetLock group: `[updates.fleetlock] group`, else `updates.group`.
pub fn fleetlock_group(u: &Updates) -> &str {
    u.fleetlock.group.as_deref().unwrap_or(&u.group)
}

/// Is `name` usable as (part of) a Kubernetes object name: a DNS label?
pub fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Errors name the key (`updates.max_unavailable: …`).
pub fn validate(p: &Updates) -> Result<()> {
    if !dns_label(&p.group) {
        bail!(
            "updates.group: {:?} is not a DNS label (lower-case letters, digits, '-'; at most 63)",
            p.group
        );
    }
    if !(1..=1000).contains(&p.max_unavailable) {
        bail!(
            "updates.max_unavailable: {} is outside 1–1000",
            p.max_unavailable
        );
    }
    if p.drain_timeout_seconds == 0 {
        bail!("updates.drain_timeout_seconds: must be at least 1");
    }
    if p.retry_seconds == 0 {
        bail!("updates.retry_seconds: must be at least 1");
    }
    if p.slot_expiry_seconds < 60 {
        bail!(
            "updates.slot_expiry_seconds: {} is shorter than a reboot can take (at least 60)",
            p.slot_expiry_seconds
        );
    }
    if !p.kubernetes.kubeconfig.is_absolute() {
        bail!(
            "updates.kubernetes.kubeconfig: {} is not an absolute path",
            p.kubernetes.kubeconfig.display()
        );
    }
    if !dns_label(&p.kubernetes.namespace) {
        bail!(
            "updates.kubernetes.namespace: {:?} is not a namespace name",
            p.kubernetes.namespace
        );
    }
    if let Some(n) = &p.kubernetes.node_name
        && (n.is_empty() || n.len() > 253)
    {
        bail!("updates.kubernetes.node_name: {n:?} is not a node name");
    }
    match (&p.fleetlock.url, p.coordination) {
        (None, Backend::Fleetlock) => {
            bail!("updates.fleetlock.url: coordination = \"fleetlock\" needs the server's URL")
        }
        (Some(u), _) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            bail!("updates.fleetlock.url: {u:?} is not an http:// or https:// URL")
        }
        _ => {}
    }
    if let Some(g) = &p.fleetlock.group
        && g.is_empty()
    {
        bail!("updates.fleetlock.group: must not be empty");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_the_config_names() {
        for b in [Backend::None, Backend::Kubernetes, Backend::Fleetlock] {
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
    }
}
