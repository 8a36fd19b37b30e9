//! `keelson status`: the node's deployments as libostree sees them.

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DeploymentInfo {
    pub osname: String,
    pub commit: String,
    pub version: Option<String>,
    /// Commit time, seconds since the epoch.
    pub timestamp: u64,
    /// `remote:ref` the deployment follows.
    pub origin: Option<String>,
    pub booted: bool,
    pub staged: bool,
    pub pinned: bool,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub sysroot: String,
    /// `remote:ref` the booted deployment follows, and the remote's URL.
    pub update_ref: Option<String>,
    pub update_url: Option<String>,
    /// Boot counting (grubenv): normal, trial with N boots left, fell back.
    pub boot: super::bootcount::State,
    pub last_health: Option<super::state::Health>,
    /// Commits that failed their trial here; never re-applied automatically.
    pub blocked: Vec<super::state::Blocked>,
    /// What the last update pull downloaded.
    pub last_fetch: Option<super::fetch::Fetched>,
    pub booted: Option<DeploymentInfo>,
    pub staged: Option<DeploymentInfo>,
    pub rollback: Option<DeploymentInfo>,
    /// Every deployment in boot order (index 0 boots by default).
    pub deployments: Vec<DeploymentInfo>,
    /// Capacity, reservations and expected allocatable for the kubelet.
    pub kubelet: Option<super::kubelet::NodeResources>,
    /// Why `kubelet` is missing (a bad configuration fragment, …).
    pub kubelet_error: Option<String>,
    /// The update policy the configuration fragments give.
    pub updates: Option<super::config::Updates>,
    /// Reboot coordination (filled by `keelson status`, which asks the backend).
    pub coordination: Option<super::coord::flow::CoordStatus>,
}

fn info(
    repo: &ostree::Repo,
    d: &ostree::Deployment,
    booted: Option<&ostree::Deployment>,
) -> DeploymentInfo {
    let commit = d.csum().to_string();
    let (version, timestamp) = match repo.load_variant(ostree::ObjectType::Commit, &commit) {
        Ok(v) => {
            let meta = glib::VariantDict::new(Some(&v.child_value(0)));
            let version = meta.lookup::<String>("version").ok().flatten();
            (version, ostree::commit_get_timestamp(&v))
        }
        Err(_) => (None, 0),
    };
    let origin = d
        .origin()
        .and_then(|o| o.string("origin", "refspec").ok())
        .map(|s| s.to_string());
    DeploymentInfo {
        osname: d.osname().to_string(),
        commit,
        version,
        timestamp,
        origin,
        booted: booted.is_some_and(|b| b.equal(d)),
        staged: d.is_staged(),
        pinned: d.is_pinned(),
    }
}

/// Read the status of the sysroot at `path` (`/` on a node).
pub fn read(ctx: &super::context::NodeCtx) -> Result<Status> {
    let path = ctx.sysroot.as_path();
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot.load(gio::Cancellable::NONE).with_context(|| {
        format!(
            "{}: cannot load the ostree sysroot (is this a keelson node?)",
            path.display()
        )
    })?;
    let repo = sysroot.repo();
    let booted = sysroot.booted_deployment();
    let all: Vec<DeploymentInfo> = sysroot
        .deployments()
        .iter()
        .map(|d| info(&repo, d, booted.as_ref()))
        .collect();
    let staged = sysroot
        .staged_deployment()
        .map(|d| info(&repo, &d, booted.as_ref()));
    let booted_info = booted.as_ref().map(|b| info(&repo, b, booted.as_ref()));
    // The rollback is the first non-staged deployment after the default one.
    let rollback = sysroot
        .deployments()
        .iter()
        .filter(|d| !d.is_staged())
        .nth(1)
        .map(|d| info(&repo, d, booted.as_ref()));
    let update_ref = booted_info.as_ref().and_then(|b| b.origin.clone());
    let update_url = update_ref
        .as_deref()
        .and_then(|r| r.split_once(':'))
        .and_then(|(remote, _)| repo.remote_get_url(remote).ok())
        .map(|u| u.to_string());
    let boot = super::grubenv::GrubEnv::for_sysroot(path)
        .read()
        .map(|e| e.state())
        .unwrap_or(super::bootcount::State::Normal);
    let st = ctx.load_state().unwrap_or_default();
    let cfg = ctx.load_config();
    let (kubelet, kubelet_error) = match cfg.as_ref().map(|c| node_resources(ctx, c)) {
        Ok(Ok(n)) => (Some(n), None),
        Ok(Err(e)) => (None, Some(format!("{e:#}"))),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let updates = cfg.ok().map(|c| c.updates);
    Ok(Status {
        updates,
        sysroot: path.display().to_string(),
        update_ref,
        update_url,
        boot,
        last_health: st.last_health,
        blocked: st.blocked,
        last_fetch: st.last_fetch,
        booted: booted_info,
        staged,
        rollback,
        deployments: all,
        kubelet,
        kubelet_error,
        coordination: None,
    })
}

/// This machine's kubelet resources under the node configuration.
fn node_resources(
    ctx: &super::context::NodeCtx,
    cfg: &super::config::Config,
) -> Result<super::kubelet::NodeResources> {
    let cap = super::kubelet::machine_capacity(&ctx.kubelet_dir, cfg.kubelet.max_pods)?;
    super::kubelet::node_resources(&cfg.kubelet, &cap)
}

/// Pure: the update policy in one line.
pub fn describe_updates(u: &super::config::Updates) -> String {
    use super::config::RebootPolicy;
    if !u.enabled {
        return "updates disabled".into();
    }
    match (&u.reboot, &u.window) {
        (RebootPolicy::Immediate, _) => "reboot as soon as an update is staged".into(),
        (RebootPolicy::Off, _) => "stage updates; never reboot for them".into(),
        (RebootPolicy::Window, None) => "reboot in a window (none configured)".into(),
        (RebootPolicy::Window, Some(w)) => format!(
            "reboot in the window {} {:02}:00 {} for {} h",
            if w.days.is_empty() {
                "every day".to_string()
            } else {
                w.days.join(",")
            },
            w.start_hour,
            w.time_zone,
            w.length_hours
        ),
    }
}

/// Human-readable status.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    if s.deployments.is_empty() {
        out += "No deployments.\n";
    }
    for d in &s.deployments {
        let mark = if d.booted { "*" } else { " " };
        let role = if d.staged {
            " (staged)"
        } else if s
            .rollback
            .as_ref()
            .is_some_and(|r| r.commit == d.commit && !d.booted)
        {
            " (rollback)"
        } else {
            ""
        };
        out += &format!(
            "{mark} {} {}{role}\n    Version: {}\n    Origin:  {}\n",
            d.osname,
            d.commit,
            d.version.as_deref().unwrap_or("-"),
            d.origin.as_deref().unwrap_or("-"),
        );
    }
    if s.booted.is_none() {
        out += "(not booted into an ostree deployment)\n";
    }
    out += &format!(
        "Updates: {} from {}\n",
        s.update_ref.as_deref().unwrap_or("-"),
        s.update_url.as_deref().unwrap_or("-")
    );
    if let Some(u) = &s.updates {
        out += &format!("Update policy: {}\n", describe_updates(u));
    }
    out += &match s.boot {
        super::bootcount::State::Normal => "Boot: normal\n".to_string(),
        super::bootcount::State::Trial(n) => {
            format!("Boot: new deployment on trial, {n} attempt(s) left\n")
        }
        super::bootcount::State::FellBack => {
            "Boot: fell back to the rollback deployment\n".to_string()
        }
    };
    if let Some(h) = &s.last_health {
        out += &format!(
            "Last health check: {} on {}{}\n",
            if h.ok { "ok" } else { "FAILED" },
            &h.commit[..h.commit.len().min(12)],
            if h.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", h.reasons.join("; "))
            }
        );
    }
    if let Some(f) = &s.last_fetch {
        out += &format!("Last update download: {}\n", describe_fetch(f));
    }
    if let Some(c) = &s.coordination {
        out += &super::coord::flow::render(c);
    }
    for b in &s.blocked {
        out += &format!(
            "Blocked: {} (version {}): {}\n",
            b.commit,
            b.version.as_deref().unwrap_or("-"),
            b.reason
        );
    }
    match (&s.kubelet, &s.kubelet_error) {
        (Some(n), _) => out += &super::kubelet::render_resources(n),
        (None, Some(e)) => out += &format!("Kubelet resources: unavailable: {e}\n"),
        (None, None) => {}
    }
    out
}

/// Pure: one line on what an update pull downloaded.
pub fn describe_fetch(f: &super::fetch::Fetched) -> String {
    let how = if f.via_delta {
        format!("through a static delta ({} part(s)", f.delta_parts)
    } else {
        "object by object (no static delta".to_string()
    };
    format!(
        "{} {how}, {} object(s)), {} KiB in {:.0} s",
        &f.commit[..f.commit.len().min(12)],
        f.objects,
        f.bytes / 1024,
        f.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::super::config::{RebootPolicy, Window};
    use super::super::fetch::Fetched;
    use super::{describe_fetch, describe_updates};

    #[test]
    fn fetch_lines() {
        let f = |via_delta, delta_parts, objects| Fetched {
            commit: "0123456789abcdef".into(),
            bytes: 20_480,
            objects,
            delta_parts,
            via_delta,
            seconds: 2.4,
        };
        for (got, want) in [
            (
                f(true, 1, 3),
                "0123456789ab through a static delta (1 part(s), 3 object(s)), 20 KiB in 2 s",
            ),
            (
                f(false, 0, 40),
                "0123456789ab object by object (no static delta, 40 object(s)), 20 KiB in 2 s",
            ),
        ] {
            assert_eq!(describe_fetch(&got), want);
        }
    }

    #[test]
    fn update_policy_lines() {
        let w = |days: &[&str]| {
            Some(Window {
                days: days.iter().map(|d| d.to_string()).collect(),
                start_hour: 2,
                length_hours: 3,
                time_zone: "UTC".into(),
            })
        };
        for (enabled, reboot, window, want) in [
            (false, RebootPolicy::Immediate, None, "updates disabled"),
            (
                true,
                RebootPolicy::Immediate,
                None,
                "reboot as soon as an update is staged",
            ),
            (
                true,
                RebootPolicy::Off,
                None,
                "stage updates; never reboot for them",
            ),
            (
                true,
                RebootPolicy::Window,
                None,
                "reboot in a window (none configured)",
            ),
            (
                true,
                RebootPolicy::Window,
                w(&["Sat", "Sun"]),
                "reboot in the window Sat,Sun 02:00 UTC for 3 h",
            ),
            (
                true,
                RebootPolicy::Window,
                w(&[]),
                "reboot in the window every day 02:00 UTC for 3 h",
            ),
        ] {
            let mut u = crate::node::config::from_fragments(&[]).unwrap().updates;
            (u.enabled, u.reboot, u.window) = (enabled, reboot, window);
            assert_eq!(describe_updates(&u), want);
        }
    }
}
