//! Fleet-safe reboots: before rebooting into a staged update the agent takes
//! a slot from the group's coordinator, cordons and drains the node; after
//! the reboot `keelson health` gives the slot back only once the new
//! deployment is healthy (or, after an automatic rollback, marks the node
//! blocked and gives it back).
//!
//! Backends: [`kube`] (Lease slots, cordon, Eviction API, Node annotations)
//! and [`fleetlock`] (zincati's protocol). The flow here is written against
//! the [`Coordinator`] trait; what happens at each step is decided by pure
//! functions ([`slots::choose`], [`drain::next`], [`after_boot_plan`]).

pub mod drain;
pub mod fleetlock;
pub mod flow;
pub mod kube;
pub mod policy;
pub mod slots;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::Updates;
use super::context::NodeCtx;
use policy::{Backend, OnDrainTimeout};

/// Where a node is in an update, as the fleet sees it (Node annotation
/// `keelson.dev/phase` and label of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Idle,
    /// An update is staged; this round did not reboot (see last error).
    Staged,
    WaitingForSlot,
    Draining,
    /// Slot held and drained by `keelson coordinate lock`: ready for maintenance.
    Drained,
    Rebooting,
    /// Booted the update; the slot goes back once health passes.
    Verifying,
    /// The update failed its trial and was rolled back.
    Blocked,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Staged => "staged",
            Phase::WaitingForSlot => "waiting-for-slot",
            Phase::Draining => "draining",
            Phase::Drained => "drained",
            Phase::Rebooting => "rebooting",
            Phase::Verifying => "verifying",
            Phase::Blocked => "blocked",
        }
    }
}

/// The coordination part of state.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordState {
    pub backend: Option<Backend>,
    pub group: String,
    pub phase: Phase,
    /// This node holds a slot (taken, not yet given back).
    pub holding: bool,
    /// The commit the slot was taken for.
    pub target: Option<String>,
    pub last_error: Option<String>,
    /// Who held the slots at the last look (when the backend says).
    #[serde(default)]
    pub holders: Vec<String>,
    /// When the phase was entered.
    pub since: u64,
}

/// What the node reports to the fleet with each phase change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub phase: Phase,
    pub booted_version: Option<String>,
    pub booted_commit: Option<String>,
    pub staged_version: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// We hold a slot (named).
    Held(String),
    /// Nothing free; these hold them (empty when the backend does not say).
    Wait(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Drained {
    /// Every pod that had to leave has left (`evicted` names them).
    Done { evicted: Vec<String> },
    /// The timeout passed: why, naming the pods that stayed.
    TimedOut(String),
}

/// One backend. Every call is idempotent: the agent is a oneshot that may
/// be killed at any point and runs again.
pub trait Coordinator {
    fn describe(&self) -> String;
    fn acquire(&mut self, now: u64) -> Result<Acquired>;
    /// Give back whatever slot this node holds (nothing held: Ok).
    fn release(&mut self) -> Result<()>;
    /// Who holds slots, where the backend can say.
    fn holders(&mut self, now: u64) -> Result<Option<Vec<String>>>;
    /// Cordon and evict (a no-op for backends without a cluster).
    fn drain(&mut self, timeout_s: u64) -> Result<Drained>;
    /// Undo this node's cordon if keelson set it.
    fn uncordon(&mut self) -> Result<()>;
    fn report(&mut self, r: &Report) -> Result<()>;
}

/// The configured backend, or None for `coordination = "none"`.
pub fn open(ctx: &NodeCtx, u: &Updates) -> Result<Option<Box<dyn Coordinator>>> {
    Ok(match u.coordination {
        Backend::None => None,
        Backend::Kubernetes => Some(Box::new(kube::KubeCoordinator::connect(ctx, u)?)),
        Backend::Fleetlock => Some(Box::new(fleetlock::FleetLock::new(ctx, u)?)),
    })
}

/// Pure: the delay before the next try while waiting for a slot: about
/// `base` seconds plus up to half of it, spread by node and time so a fleet
/// that waits together does not retry together.
pub fn retry_delay(base: u64, node: &str, now: u64) -> u64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{node}/{now}").as_bytes());
    let n = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    base + n % (base / 2).max(1)
}

/// How the reboot round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Go {
    /// Slot held, node drained: reboot now.
    Reboot,
    /// No slot free: holders listed; try again later.
    Wait(Vec<String>),
    /// Drain timed out: uncordoned and released; not rebooting (why).
    GaveUp(String),
}

/// Enter `phase`: the state file first (a kill after this still knows),
/// then the fleet's view.
fn enter(
    c: &mut dyn Coordinator,
    ctx: &NodeCtx,
    cs: &mut CoordState,
    report: &mut Report,
    phase: Phase,
) -> Result<()> {
    cs.phase = phase;
    cs.since = ctx.now();
    cs.last_error = report.last_error.clone();
    let mut st = ctx.load_state()?;
    st.coordination = Some(cs.clone());
    ctx.save_state(&st)?;
    report.phase = phase;
    c.report(report)
}

/// Undo a round that will not reboot: uncordon, release, say why.
fn give_back(
    c: &mut dyn Coordinator,
    ctx: &NodeCtx,
    cs: &mut CoordState,
    report: &mut Report,
    why: &str,
) -> Result<()> {
    c.uncordon()?;
    c.release()?;
    cs.holding = false;
    report.last_error = Some(why.to_string());
    enter(c, ctx, cs, report, Phase::Staged)
}

/// The slot, cordon and drain before a reboot into `target`.
pub fn before_reboot(
    c: &mut dyn Coordinator,
    ctx: &NodeCtx,
    u: &Updates,
    mut report: Report,
    target: &str,
    reboot_phase: Phase,
) -> Result<Go> {
    let mut cs = ctx.load_state()?.coordination.unwrap_or_default();
    cs.backend = Some(u.coordination);
    cs.group = u.group.clone();
    cs.target = Some(target.to_string());
    match c.acquire(ctx.now())? {
        Acquired::Wait(holders) => {
            cs.holders = holders.clone();
            enter(c, ctx, &mut cs, &mut report, Phase::WaitingForSlot)?;
            return Ok(Go::Wait(holders));
        }
        Acquired::Held(slot) => {
            tracing::info!("holding slot {slot} of {}", c.describe());
            cs.holding = true;
            cs.holders.clear();
        }
    }
    enter(c, ctx, &mut cs, &mut report, Phase::Draining)?;
    let drained = match c.drain(u.drain_timeout_seconds) {
        Ok(d) => d,
        Err(e) => {
            // Never keep a slot for a node that is not going to reboot.
            let why = format!("drain failed, not rebooting: {e:#}");
            give_back(c, ctx, &mut cs, &mut report, &why)?;
            return Err(e.context("draining the node"));
        }
    };
    if let Drained::TimedOut(why) = &drained {
        if u.on_drain_timeout == OnDrainTimeout::GiveUp {
            let why = format!("drain gave up, not rebooting: {why}");
            give_back(c, ctx, &mut cs, &mut report, &why)?;
            return Ok(Go::GaveUp(why));
        }
        report.last_error = Some(format!("drain timed out, rebooting anyway: {why}"));
    }
    enter(c, ctx, &mut cs, &mut report, reboot_phase)?;
    Ok(Go::Reboot)
}

/// How the boot after an update went, from `keelson health`'s plan.
#[derive(Debug, Clone, PartialEq)]
pub enum BootOutcome {
    Healthy,
    /// GRUB fell back; this commit is now blocked.
    RolledBack {
        failed: String,
        reason: String,
    },
    /// Unhealthy: the slot stays held (another attempt or an operator).
    Unhealthy(String),
}

/// What to do after a boot.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterBoot {
    pub uncordon_and_release: bool,
    pub phase: Phase,
    pub last_error: Option<String>,
}

/// Pure: what follows `outcome`. The slot goes back only on a healthy boot
/// or after a rollback; an unhealthy boot keeps it, so the rest of the
/// fleet does not follow this node into a bad update.
/// A node `blocked` by an earlier rollback stays blocked through later
/// healthy boots (its update is still the bad one) until a new update moves
/// it on.
pub fn after_boot_plan(outcome: &BootOutcome, before: &CoordState) -> AfterBoot {
    match outcome {
        BootOutcome::Healthy if before.phase == Phase::Blocked && !before.holding => AfterBoot {
            uncordon_and_release: true,
            phase: Phase::Blocked,
            last_error: before.last_error.clone(),
        },
        BootOutcome::Healthy => AfterBoot {
            uncordon_and_release: true,
            phase: Phase::Idle,
            last_error: None,
        },
        BootOutcome::RolledBack { failed, reason } => AfterBoot {
            uncordon_and_release: true,
            phase: Phase::Blocked,
            last_error: Some(format!("rolled back from {failed}: {reason}")),
        },
        BootOutcome::Unhealthy(why) => AfterBoot {
            uncordon_and_release: false,
            phase: Phase::Verifying,
            last_error: Some(format!("health check failed: {why}")),
        },
    }
}

/// After `keelson health`: report, and give the slot back when the plan
/// says. Also the retry path (the agent calls it while the state says
/// `verifying`), so it must be safe to run again.
pub fn after_boot(
    c: &mut dyn Coordinator,
    ctx: &NodeCtx,
    outcome: &BootOutcome,
    mut report: Report,
) -> Result<Phase> {
    let mut st = ctx.load_state()?;
    let mut cs = st.coordination.clone().unwrap_or_default();
    let plan = after_boot_plan(outcome, &cs);
    if cs.holding {
        // Back from an update's reboot: the fleet sees it being verified.
        report.phase = Phase::Verifying;
        c.report(&report)?;
    }
    if plan.uncordon_and_release {
        c.uncordon()?;
        c.release()?;
        cs.holding = false;
    }
    cs.phase = plan.phase;
    cs.last_error = plan.last_error.clone();
    cs.since = ctx.now();
    st.coordination = Some(cs);
    ctx.save_state(&st)?;
    report.phase = plan.phase;
    report.last_error = plan.last_error;
    c.report(&report)?;
    Ok(plan.phase)
}

/// Read a one-line file (host name, machine id) through the context.
pub fn read_line(path: &std::path::Path) -> Result<String> {
    let s =
        fs_err::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let s = s.trim().to_string();
    anyhow::ensure!(!s.is_empty(), "{}: empty", path.display());
    Ok(s)
}

/// This node's name in the cluster: `[updates.kubernetes] node_name`, else
/// the host name (what the kubelet registers by default).
pub fn node_name(ctx: &NodeCtx, u: &Updates) -> Result<String> {
    match &u.kubernetes.node_name {
        Some(n) => Ok(n.clone()),
        None => read_line(&ctx.hostname)
            .map(|h| h.to_lowercase())
            .context("the node name (set updates.kubernetes.node_name)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_boot_table() {
        let t = [
            (BootOutcome::Healthy, (true, Phase::Idle, None)),
            (
                BootOutcome::RolledBack {
                    failed: "abc".into(),
                    reason: "check x failed".into(),
                },
                (
                    true,
                    Phase::Blocked,
                    Some("rolled back from abc: check x failed".to_string()),
                ),
            ),
            (
                BootOutcome::Unhealthy("kubelet: down".into()),
                (
                    false,
                    Phase::Verifying,
                    Some("health check failed: kubelet: down".to_string()),
                ),
            ),
        ];
        let idle = CoordState::default();
        for (o, (release, phase, err)) in t {
            let p = after_boot_plan(&o, &idle);
            assert_eq!(
                (p.uncordon_and_release, p.phase, p.last_error),
                (release, phase, err),
                "{o:?}"
            );
        }
    }

    #[test]
    fn blocked_stays_blocked_until_a_new_update() {
        let blocked = CoordState {
            phase: Phase::Blocked,
            last_error: Some("rolled back from abc: x".into()),
            ..Default::default()
        };
        let p = after_boot_plan(&BootOutcome::Healthy, &blocked);
        assert_eq!(
            (p.phase, p.last_error.as_deref()),
            (Phase::Blocked, Some("rolled back from abc: x"))
        );
        // Holding a slot again means a new update was taken through: it settles.
        let moving = CoordState {
            holding: true,
            ..blocked
        };
        assert_eq!(
            after_boot_plan(&BootOutcome::Healthy, &moving).phase,
            Phase::Idle
        );
    }

    #[test]
    fn retry_delay_spreads_within_bounds() {
        let delays: std::collections::BTreeSet<u64> = (0..20)
            .map(|i| retry_delay(300, &format!("node-{i}"), 1_000))
            .collect();
        assert!(delays.iter().all(|d| (300..450).contains(d)), "{delays:?}");
        assert!(delays.len() > 10, "jitter spreads the fleet: {delays:?}");
        assert_eq!(retry_delay(1, "n", 5), 1);
    }

    #[test]
    fn phase_names_match_serde() {
        for p in [
            Phase::Idle,
            Phase::Staged,
            Phase::WaitingForSlot,
            Phase::Draining,
            Phase::Drained,
            Phase::Rebooting,
            Phase::Verifying,
            Phase::Blocked,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
