//! Where coordination meets the node's commands: the gate before the
//! agent's reboot, the report after `keelson health`, the settling of a
//! release that failed earlier, the retry timer, and what `keelson status`
//! shows. Thin: the decisions are in the parent module and its backends.

use anyhow::{Context, Result};
use serde::Serialize;

use super::policy::Backend;
use super::{BootOutcome, CoordState, Go, Phase, Report};
use crate::node::config::Config;
use crate::node::context::NodeCtx;
use crate::node::health::Action;
use crate::node::health_flow::Plan;

/// The node's versions for the fleet report, from libostree.
pub fn report_for(ctx: &NodeCtx) -> Report {
    let st = crate::node::status::read(ctx).ok();
    let booted = st.as_ref().and_then(|s| s.booted.as_ref());
    Report {
        booted_version: booted.and_then(|b| b.version.clone()),
        booted_commit: booted.map(|b| b.commit.clone()),
        staged_version: st
            .as_ref()
            .and_then(|s| s.staged.as_ref())
            .and_then(|d| d.version.clone()),
        ..Default::default()
    }
}

/// Before the agent reboots into `target`: true when it may reboot now.
pub fn gate_reboot(ctx: &NodeCtx, cfg: &Config, target: &str) -> Result<bool> {
    let u = &cfg.updates;
    let Some(mut c) = super::open(ctx, u)? else {
        return Ok(true);
    };
    println!("Reboot coordination: {}", c.describe());
    match super::before_reboot(
        c.as_mut(),
        ctx,
        u,
        report_for(ctx),
        target,
        Phase::Rebooting,
    )? {
        Go::Reboot => Ok(true),
        Go::Wait(holders) => {
            let who = if holders.is_empty() {
                "the server does not say who holds it".to_string()
            } else {
                format!("held by {}", holders.join(", "))
            };
            let node = super::node_name(ctx, u).unwrap_or_default();
            let delay = super::retry_delay(u.retry_seconds, &node, ctx.now());
            println!(
                "Update staged; waiting for a reboot slot ({who}); trying again in {delay} s."
            );
            schedule_retry(ctx, delay);
            Ok(false)
        }
        Go::GaveUp(why) => {
            println!("Update staged, not rebooting this round: {why}");
            Ok(false)
        }
    }
}

/// A transient timer that runs the agent again after `delay` seconds.
fn schedule_retry(ctx: &NodeCtx, delay: u64) {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/usr/bin/keelson".into());
    let unit = format!("keelson-update-retry-{}", ctx.now());
    let r = crate::util::cmd::Cmd::new("systemd-run")
        .arg(format!("--on-active={delay}s"))
        .arg(format!("--unit={unit}"))
        .arg("--description=keelson update agent: retry for a reboot slot")
        .arg(exe.display().to_string())
        .arg("agent")
        .run();
    if let Err(e) = r {
        eprintln!("warning: cannot schedule the retry ({e:#}); the hourly timer tries again");
    }
}

/// Pure: the boot outcome `keelson health` decided, if it settles the slot.
pub fn outcome_of(p: &Plan, booted_commit: &str) -> Option<BootOutcome> {
    match p.action {
        // Still on trial: GRUB counts another attempt; nothing settles yet.
        Action::Reboot => None,
        Action::FinishFallback => {
            let failed = p.state.blocked.last()?;
            Some(BootOutcome::RolledBack {
                failed: failed.commit.clone(),
                reason: failed.reason.clone(),
            })
        }
        _ if p.ok => Some(BootOutcome::Healthy),
        _ => Some(BootOutcome::Unhealthy(
            p.state
                .last_health
                .as_ref()
                .filter(|h| h.commit == booted_commit)
                .map(|h| h.reasons.join("; "))
                .unwrap_or_default(),
        )),
    }
}

/// After `keelson health` applied its plan. A coordination failure never
/// fails the health check: it is printed, and the agent settles it later.
pub fn after_health(ctx: &NodeCtx, p: &Plan) {
    let Ok(cfg) = ctx.load_config() else { return };
    if cfg.updates.coordination == Backend::None {
        return;
    }
    let report = report_for(ctx);
    let Some(outcome) = outcome_of(p, report.booted_commit.as_deref().unwrap_or("")) else {
        return;
    };
    // Right after boot the network may not be up yet: a few tries, then
    // leave it to the agent's next run (`settle`).
    let mut last = None;
    for attempt in 0..6 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        let r = super::open(ctx, &cfg.updates).and_then(|c| {
            let mut c = c.context("no coordinator")?;
            super::after_boot(c.as_mut(), ctx, &outcome, report.clone())
        });
        match r {
            Ok(phase) => {
                println!("Reboot coordination: {}", phase.as_str());
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        eprintln!("warning: reboot coordination after boot: {e:#}; the agent tries again");
    }
}

/// At agent start: a slot still held for a boot that `keelson health`
/// already judged (its release failed then) is settled now.
pub fn settle(ctx: &NodeCtx, cfg: &Config) -> Result<()> {
    let st = ctx.load_state()?;
    let Some(cs) = st.coordination.as_ref().filter(|c| c.holding) else {
        return Ok(());
    };
    if !matches!(cs.phase, Phase::Rebooting | Phase::Verifying) {
        return Ok(());
    }
    let report = report_for(ctx);
    let booted = report.booted_commit.clone().unwrap_or_default();
    let target = cs.target.clone().unwrap_or_default();
    let outcome = match (&st.last_health, st.is_blocked(&target)) {
        (_, Some(b)) => BootOutcome::RolledBack {
            failed: b.commit.clone(),
            reason: b.reason.clone(),
        },
        (Some(h), None) if h.ok && h.commit == booted && booted == target => BootOutcome::Healthy,
        _ => return Ok(()),
    };
    let Some(mut c) = super::open(ctx, &cfg.updates)? else {
        return Ok(());
    };
    super::after_boot(c.as_mut(), ctx, &outcome, report)?;
    println!("Reboot coordination settled after the last boot.");
    Ok(())
}

/// What `keelson status` shows about coordination.
#[derive(Debug, Clone, Serialize)]
pub struct CoordStatus {
    pub backend: Backend,
    pub group: String,
    pub max_unavailable: u32,
    pub describe: Option<String>,
    pub state: Option<CoordState>,
    /// Who holds slots now (None: the backend does not say, or it failed).
    pub holders: Option<Vec<String>>,
    pub error: Option<String>,
}

/// Ask the backend (errors are reported, not fatal: status must work offline).
pub fn status(ctx: &NodeCtx, cfg: &Config) -> Option<CoordStatus> {
    let u = &cfg.updates;
    if u.coordination == Backend::None {
        return None;
    }
    let mut s = CoordStatus {
        backend: u.coordination,
        group: u.group.clone(),
        max_unavailable: u.max_unavailable,
        describe: None,
        state: ctx.load_state().ok().and_then(|s| s.coordination),
        holders: None,
        error: None,
    };
    match super::open(ctx, u) {
        Ok(Some(mut c)) => {
            s.describe = Some(c.describe());
            match c.holders(ctx.now()) {
                Ok(h) => s.holders = h,
                Err(e) => s.error = Some(format!("{e:#}")),
            }
        }
        Ok(None) => {}
        Err(e) => s.error = Some(format!("{e:#}")),
    }
    Some(s)
}

/// Pure: the status lines.
pub fn render(s: &CoordStatus) -> String {
    let mut out = format!(
        "Reboot coordination: {} group {} ({} at a time){}\n",
        s.backend.as_str(),
        s.group,
        s.max_unavailable,
        s.describe
            .as_ref()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default()
    );
    if let Some(cs) = &s.state {
        out += &format!(
            "  Phase: {}{}\n",
            cs.phase.as_str(),
            if cs.holding { ", holding a slot" } else { "" }
        );
        if cs.phase == Phase::WaitingForSlot {
            out += "  Waiting for a slot: the update is staged and reboots when one frees up.\n";
        }
        if let Some(e) = &cs.last_error {
            out += &format!("  Last error: {e}\n");
        }
    }
    match (&s.holders, &s.error) {
        (Some(h), _) if h.is_empty() => out += "  Slots: all free\n",
        (Some(h), _) => out += &format!("  Slots held by: {}\n", h.join(", ")),
        (None, Some(e)) => out += &format!("  Slots: unknown ({e})\n"),
        (None, None) => out += "  Slots: the backend does not say who holds them\n",
    }
    out
}

/// `keelson coordinate lock`: take a slot and drain, for maintenance by
/// hand (the agent's steps without the reboot). With `wait`, retry until a
/// slot frees up.
pub fn lock(ctx: &NodeCtx, wait: bool) -> Result<()> {
    let cfg = ctx.load_config()?;
    let u = &cfg.updates;
    let mut c = super::open(ctx, u)?
        .context("updates.coordination is \"none\": there is no coordinator to take a slot from")?;
    let node = super::node_name(ctx, u).unwrap_or_default();
    loop {
        match super::before_reboot(
            c.as_mut(),
            ctx,
            u,
            report_for(ctx),
            "maintenance",
            Phase::Drained,
        )? {
            Go::Reboot => {
                println!("Holding a slot of {}; the node is drained.", c.describe());
                return Ok(());
            }
            Go::GaveUp(why) => anyhow::bail!("{why}"),
            Go::Wait(holders) if !wait => anyhow::bail!(
                "no free slot in group {} (held by {})",
                u.group,
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join(", ")
                }
            ),
            Go::Wait(_) => {
                let delay = super::retry_delay(u.retry_seconds, &node, ctx.now());
                std::thread::sleep(std::time::Duration::from_secs(delay));
            }
        }
    }
}

/// `keelson coordinate unlock`: uncordon (if keelson cordoned) and give the
/// slot back.
pub fn unlock(ctx: &NodeCtx) -> Result<()> {
    let cfg = ctx.load_config()?;
    let mut c = super::open(ctx, &cfg.updates)?
        .context("updates.coordination is \"none\": there is no coordinator to release")?;
    super::after_boot(c.as_mut(), ctx, &BootOutcome::Healthy, report_for(ctx))?;
    println!("Released: the node is schedulable and holds no slot.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::state::{Blocked, Health, State};

    fn plan(action: Action, ok: bool, blocked: Option<&str>, health_ok: bool) -> Plan {
        let mut state = State {
            last_health: Some(Health {
                commit: "b".into(),
                version: None,
                ok: health_ok,
                reasons: if health_ok {
                    vec![]
                } else {
                    vec!["kubelet: down".into()]
                },
                time: 1,
            }),
            ..Default::default()
        };
        if let Some(c) = blocked {
            state.block(Blocked {
                commit: c.into(),
                version: None,
                reason: "health check failed: x".into(),
                time: 1,
            });
        }
        Plan {
            action,
            state,
            mark_good: false,
            finish_fallback: false,
            messages: vec![],
            ok,
        }
    }

    #[test]
    fn outcome_table() {
        let t = [
            (
                plan(Action::MarkGood, true, None, true),
                Some(BootOutcome::Healthy),
            ),
            (
                plan(Action::Report, true, None, true),
                Some(BootOutcome::Healthy),
            ),
            // On trial and unhealthy: GRUB gets another attempt; the slot stays.
            (plan(Action::Reboot, false, None, false), None),
            (
                plan(Action::Report, false, None, false),
                Some(BootOutcome::Unhealthy("kubelet: down".into())),
            ),
            (
                plan(Action::FinishFallback, true, Some("bad"), true),
                Some(BootOutcome::RolledBack {
                    failed: "bad".into(),
                    reason: "health check failed: x".into(),
                }),
            ),
        ];
        for (p, want) in t {
            assert_eq!(outcome_of(&p, "b"), want, "{:?}", p.action);
        }
    }

    #[test]
    fn status_lines() {
        let mut s = CoordStatus {
            backend: Backend::Kubernetes,
            group: "workers".into(),
            max_unavailable: 2,
            describe: None,
            state: Some(CoordState {
                phase: Phase::WaitingForSlot,
                ..Default::default()
            }),
            holders: Some(vec!["n1".into(), "n2".into()]),
            error: None,
        };
        let out = render(&s);
        assert!(
            out.starts_with("Reboot coordination: kubernetes group workers (2 at a time)\n"),
            "{out}"
        );
        assert!(
            out.contains("  Phase: waiting-for-slot\n  Waiting for a slot"),
            "{out}"
        );
        assert!(out.contains("  Slots held by: n1, n2\n"), "{out}");
        s.holders = None;
        s.error = Some("connection refused".into());
        assert!(render(&s).contains("  Slots: unknown (connection refused)\n"));
        s.backend = Backend::Fleetlock;
        s.error = None;
        assert!(render(&s).contains("the backend does not say who holds them"));
    }
}
