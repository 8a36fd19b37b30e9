//! The node's world in one value: which sysroot, where the state file and
//! the configuration fragments are, where the health checks and the
//! kubelet's directory live, and what time it is. Built once from the
//! command line and passed down; nothing on the node side reads the
//! environment or the wall clock on its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the node's paths live, relative to the root of the running system.
pub const STATE: &str = "var/lib/keelson/state.json";
pub const CONFIG_DIRS: &[&str] = &[
    "usr/lib/keelson/config.d",
    "etc/keelson/config.d",
    "run/keelson/config.d",
];
pub const VENDOR_CHECKS: &str = "usr/lib/keelson/health.d";
pub const ADMIN_CHECKS: &str = "etc/keelson/health.d";
pub const KUBELET_DIR: &str = "var/lib/kubelet";

/// The time source: the system clock, or a fixed instant (tests, previews).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    Fixed(u64),
}

impl Clock {
    /// Seconds since the epoch.
    pub fn now(&self) -> u64 {
        match self {
            Clock::Fixed(t) => *t,
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Pure: (weekday with Sunday = 0, hour) of a UTC timestamp.
pub fn weekday_hour(secs: u64) -> (u32, u32) {
    let days = secs / 86400;
    // 1970-01-01 was a Thursday (4).
    (((days + 4) % 7) as u32, ((secs % 86400) / 3600) as u32)
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCtx {
    /// The ostree sysroot (`/` on a booted node).
    pub sysroot: PathBuf,
    /// keelson's state file (last health result, blocked commits).
    pub state: PathBuf,
    /// Configuration fragment directories, lowest precedence first.
    pub config_dirs: Vec<PathBuf>,
    /// Health check scripts: vendor (image) and admin (override by name).
    pub vendor_checks: PathBuf,
    pub admin_checks: PathBuf,
    /// The kubelet's directory (its filesystem is the node's storage).
    pub kubelet_dir: PathBuf,
    /// The host name (the Kubernetes node name unless configured).
    pub hostname: PathBuf,
    /// /etc/machine-id (the FleetLock id is derived from it).
    pub machine_id: PathBuf,
    pub clock: Clock,
}

impl NodeCtx {
    /// Every path under `root`, the root of the running system (`/` on a
    /// node, the deployment's checkout for another sysroot).
    pub fn under(sysroot: &Path, root: &Path, var: &Path) -> Self {
        NodeCtx {
            sysroot: sysroot.to_path_buf(),
            state: var.join(STATE.trim_start_matches("var/")),
            config_dirs: CONFIG_DIRS.iter().map(|d| root.join(d)).collect(),
            vendor_checks: root.join(VENDOR_CHECKS),
            admin_checks: root.join(ADMIN_CHECKS),
            kubelet_dir: var.join(KUBELET_DIR.trim_start_matches("var/")),
            hostname: if root == Path::new("/") {
                PathBuf::from("/proc/sys/kernel/hostname")
            } else {
                root.join("etc/hostname")
            },
            machine_id: root.join("etc/machine-id"),
            clock: Clock::System,
        }
    }

    /// The context for `sysroot` as given on the command line: on `/` the
    /// running system's paths; for another sysroot (an installed disk, a
    /// staging directory) its default deployment's configuration and its
    /// stateroot's /var.
    pub fn for_sysroot(sysroot: &Path) -> Result<Self> {
        if sysroot == Path::new("/") {
            return Ok(Self::under(sysroot, Path::new("/"), Path::new("/var")));
        }
        let (deployment, var) = default_deployment(sysroot)?;
        Ok(Self::under(sysroot, &deployment, &var))
    }

    /// Take the host name and machine id from under `root` instead (a
    /// node simulated in a directory: tests, fleet dry runs).
    pub fn with_identity_root(mut self, root: &Path) -> Self {
        self.hostname = root.join("etc/hostname");
        self.machine_id = root.join("etc/machine-id");
        self
    }

    /// Replace the state file and configuration directories when the
    /// command line names them.
    pub fn with_overrides(mut self, state: Option<PathBuf>, config_dirs: Vec<PathBuf>) -> Self {
        if let Some(s) = state {
            self.state = s;
        }
        if !config_dirs.is_empty() {
            self.config_dirs = config_dirs;
        }
        self
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    pub fn load_config(&self) -> Result<super::config::Config> {
        super::config::load_from(&self.config_dirs)
    }

    pub fn load_state(&self) -> Result<super::state::State> {
        super::state::load(&self.state)
    }

    pub fn save_state(&self, st: &super::state::State) -> Result<()> {
        super::state::save(&self.state, st)
    }
}

/// The default deployment's directory and its stateroot's /var in a
/// sysroot that is not the running system.
fn default_deployment(sysroot: &Path) -> Result<(PathBuf, PathBuf)> {
    use ostree::gio;
    let s = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    s.load(gio::Cancellable::NONE).with_context(|| {
        format!(
            "--sysroot {}: cannot load the ostree sysroot",
            sysroot.display()
        )
    })?;
    let d = s
        .deployments()
        .into_iter()
        .next()
        .with_context(|| format!("--sysroot {}: no deployments", sysroot.display()))?;
    let dir = sysroot.join(s.deployment_dirpath(&d).as_str());
    let var = sysroot.join(format!("ostree/deploy/{}/var", d.osname()));
    Ok((dir, var))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_hour_table() {
        // 1970-01-01 00:00 Thursday; 2026-12-01 09:30 UTC is a Tuesday.
        let t = [
            (0, (4, 0)),
            (86400 * 3 + 3600 * 23, (0, 23)),
            (1_796_117_400, (2, 9)),
        ];
        for (secs, want) in t {
            assert_eq!(weekday_hour(secs), want, "{secs}");
        }
    }

    #[test]
    fn host_paths_and_overrides() {
        let c = NodeCtx::for_sysroot(Path::new("/")).unwrap();
        assert_eq!(c.state, PathBuf::from("/var/lib/keelson/state.json"));
        assert_eq!(
            c.config_dirs[1],
            PathBuf::from("/etc/keelson/config.d"),
            "{c:?}"
        );
        assert_eq!(c.kubelet_dir, PathBuf::from("/var/lib/kubelet"));
        let c = c.with_overrides(Some("/tmp/s.json".into()), vec!["/tmp/c".into()]);
        assert_eq!(c.state, PathBuf::from("/tmp/s.json"));
        assert_eq!(c.config_dirs, vec![PathBuf::from("/tmp/c")]);
        let c = NodeCtx::under(Path::new("/x"), Path::new("/x/d"), Path::new("/x/v"));
        assert_eq!(c.state, PathBuf::from("/x/v/lib/keelson/state.json"));
        assert_eq!(c.admin_checks, PathBuf::from("/x/d/etc/keelson/health.d"));
        assert!(
            NodeCtx::for_sysroot(Path::new("/nonexistent"))
                .unwrap_err()
                .to_string()
                .contains("--sysroot /nonexistent")
        );
    }
}
