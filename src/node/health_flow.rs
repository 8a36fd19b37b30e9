//! `keelson health` after every boot, in three parts: **gather** what the
//! checks and the node say (I/O), **plan** what to do about it (pure,
//! table-tested), **apply** the plan (state file, grubenv, deployment order,
//! reboot). The deployment reorder and the reboot go through [`Effects`] so
//! apply can be tested on a scratch sysroot.

use anyhow::{Context, Result};

use super::bootcount::{self, Env, State};
use super::context::NodeCtx;
use super::grubenv::GrubEnv;
use super::health::{self, Action, Check};
use super::state::{self, Blocked, Health};

/// A deployment as the plan needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dep {
    pub commit: String,
    pub version: Option<String>,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub env: Env,
    pub checks: Vec<Check>,
    pub booted: Dep,
    /// The default (first, not staged) deployment when it is not the booted
    /// one: after a fallback, the deployment that failed.
    pub default_other: Option<Dep>,
    pub state: state::State,
}

/// What apply does, decided from [`Observed`] alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub action: Action,
    /// The new state file content.
    pub state: state::State,
    /// Write a "good boot" grubenv.
    pub mark_good: bool,
    /// Make the booted deployment the default and drop the failed one.
    pub finish_fallback: bool,
    /// Lines for the journal, in order.
    pub messages: Vec<String>,
    /// The command's result: healthy, or a fallback was finished.
    pub ok: bool,
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

fn check_line(c: &Check) -> String {
    let detail = if c.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", c.detail)
    };
    format!("{} {}{detail}", if c.ok { "ok  " } else { "FAIL" }, c.name)
}

/// Pure: the plan for what was observed at `now`.
pub fn plan(obs: &Observed, now: u64) -> Plan {
    let healthy = obs.checks.iter().all(|c| c.ok);
    let reasons: Vec<String> = obs
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let mut messages: Vec<String> = obs.checks.iter().map(check_line).collect();
    let mut st = obs.state.clone();
    let previous_health = st.last_health.take();
    st.last_health = Some(Health {
        commit: obs.booted.commit.clone(),
        version: obs.booted.version.clone(),
        ok: healthy,
        reasons,
        time: now,
    });
    let action = health::decide(obs.env.state(), healthy);
    let mut p = Plan {
        action,
        state: st,
        mark_good: false,
        finish_fallback: false,
        messages: vec![],
        ok: healthy,
    };
    match action {
        Action::FinishFallback => {
            p.mark_good = true;
            p.finish_fallback = obs.default_other.is_some();
            p.ok = true;
            if let Some(failed) = &obs.default_other {
                let reason = match previous_health {
                    Some(h) if h.commit == failed.commit && !h.ok => {
                        format!("health check failed: {}", h.reasons.join("; "))
                    }
                    _ => "did not reach a healthy boot within the counted attempts".to_string(),
                };
                messages.push(format!(
                    "GRUB fell back: {} (version {}) is blocked: {reason}",
                    short(&failed.commit),
                    failed.version.as_deref().unwrap_or("-")
                ));
                p.state.block(Blocked {
                    commit: failed.commit.clone(),
                    version: failed.version.clone(),
                    reason,
                    time: now,
                });
            }
        }
        Action::MarkGood => {
            p.mark_good = obs.env.state() != State::Normal || obs.env.boot_success != Some(true);
        }
        Action::Reboot => messages.push(
            "Unhealthy boot of a deployment on trial: rebooting so GRUB counts the attempt.".into(),
        ),
        Action::Report => {}
    }
    p.messages = messages;
    p
}

/// What apply asks of the node beyond files.
pub trait Effects {
    /// Make the booted deployment the default; the failed one is dropped.
    fn make_booted_default(&mut self) -> Result<()>;
    fn reboot(&mut self) -> Result<()>;
}

/// The real node: libostree and systemctl.
pub struct NodeEffects<'a>(pub &'a NodeCtx);

impl Effects for NodeEffects<'_> {
    fn make_booted_default(&mut self) -> Result<()> {
        let node = super::deploy::open_writable(&self.0.sysroot)?;
        super::deploy::make_booted_default(&node).map(|_| ())
    }

    fn reboot(&mut self) -> Result<()> {
        super::commands::reboot()
    }
}

/// Gather: run the checks and read the node's boot state.
pub fn gather(ctx: &NodeCtx) -> Result<Observed> {
    let env = GrubEnv::for_sysroot(&ctx.sysroot).read()?;
    let checks = health::run_checks(ctx);
    let status = super::status::read(ctx)?;
    let booted = status
        .booted
        .as_ref()
        .context("not booted into an ostree deployment")?;
    let default_other = status
        .deployments
        .iter()
        .find(|d| !d.staged)
        .filter(|d| !d.booted)
        .map(|d| Dep {
            commit: d.commit.clone(),
            version: d.version.clone(),
        });
    Ok(Observed {
        env,
        checks,
        booted: Dep {
            commit: booted.commit.clone(),
            version: booted.version.clone(),
        },
        default_other,
        state: ctx.load_state()?,
    })
}

/// Apply: messages, deployment order, grubenv, state file, reboot. The
/// state file is saved before a reboot so the next boot knows why.
pub fn apply(ctx: &NodeCtx, p: &Plan, effects: &mut dyn Effects) -> Result<bool> {
    for m in &p.messages {
        println!("{m}");
    }
    if p.finish_fallback {
        effects.make_booted_default()?;
    }
    if p.mark_good {
        GrubEnv::for_sysroot(&ctx.sysroot).write(&bootcount::mark_good())?;
    }
    ctx.save_state(&p.state)?;
    if p.action == Action::Reboot {
        effects.reboot()?;
    }
    Ok(p.ok)
}

/// gather → plan → apply on the node.
pub fn run(ctx: &NodeCtx) -> Result<bool> {
    let obs = gather(ctx)?;
    let p = plan(&obs, ctx.now());
    if p.action == Action::Reboot {
        // Rebooting for GRUB's count: the slot stays held meanwhile.
        return apply(ctx, &p, &mut NodeEffects(ctx));
    }
    let ok = apply(ctx, &p, &mut NodeEffects(ctx))?;
    super::coord::flow::after_health(ctx, &p);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool) -> Check {
        Check {
            name: "x".into(),
            ok,
            detail: if ok { "".into() } else { "broken".into() },
        }
    }

    fn dep(c: &str) -> Dep {
        Dep {
            commit: c.into(),
            version: Some(format!("v{c}")),
        }
    }

    fn obs(env: Env, ok: bool, default_other: Option<Dep>) -> Observed {
        Observed {
            env,
            checks: vec![check(true), check(ok)],
            booted: dep("b"),
            default_other,
            state: state::State::default(),
        }
    }

    #[test]
    fn plan_table() {
        let trial = bootcount::arm(3);
        let fell = Env {
            boot_counter: Some(-1),
            boot_success: Some(false),
        };
        let good = bootcount::mark_good();
        // (observed, action, mark_good, finish_fallback, ok, blocked commit)
        let t = [
            (
                obs(good.clone(), true, None),
                Action::MarkGood,
                false,
                false,
                true,
                None,
            ),
            (
                obs(Env::default(), true, None),
                Action::MarkGood,
                true,
                false,
                true,
                None,
            ),
            (
                obs(trial.clone(), true, None),
                Action::MarkGood,
                true,
                false,
                true,
                None,
            ),
            (
                obs(trial, false, None),
                Action::Reboot,
                false,
                false,
                false,
                None,
            ),
            (
                obs(good, false, None),
                Action::Report,
                false,
                false,
                false,
                None,
            ),
            (
                obs(fell.clone(), true, Some(dep("f"))),
                Action::FinishFallback,
                true,
                true,
                true,
                Some("f"),
            ),
            (
                obs(fell, false, None),
                Action::FinishFallback,
                true,
                false,
                true,
                None,
            ),
        ];
        for (i, (o, action, mark, finish, ok, blocked)) in t.into_iter().enumerate() {
            let p = plan(&o, 42);
            assert_eq!(
                (p.action, p.mark_good, p.finish_fallback, p.ok),
                (action, mark, finish, ok),
                "row {i}"
            );
            let h = p.state.last_health.as_ref().unwrap();
            assert_eq!((h.commit.as_str(), h.time), ("b", 42), "row {i}");
            assert_eq!(
                p.state.blocked.first().map(|b| b.commit.as_str()),
                blocked,
                "row {i}"
            );
        }
    }

    #[test]
    fn fallback_reason_comes_from_the_failed_commits_last_health() {
        let mut o = obs(
            Env {
                boot_counter: Some(-1),
                boot_success: Some(false),
            },
            true,
            Some(dep("f")),
        );
        o.state.last_health = Some(Health {
            commit: "f".into(),
            version: None,
            ok: false,
            reasons: vec!["script fail-me: boom".into()],
            time: 1,
        });
        let p = plan(&o, 2);
        assert_eq!(
            p.state.blocked[0].reason,
            "health check failed: script fail-me: boom"
        );
        assert!(p.messages.last().unwrap().contains("GRUB fell back: f"));
        o.state.last_health = None;
        assert!(
            plan(&o, 2).state.blocked[0]
                .reason
                .contains("did not reach a healthy boot")
        );
    }

    /// TEST DOUBLE for the libostree reorder and the reboot: records calls.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
    }

    impl Effects for Recorder {
        fn make_booted_default(&mut self) -> Result<()> {
            self.calls.push("make_booted_default");
            Ok(())
        }
        fn reboot(&mut self) -> Result<()> {
            self.calls.push("reboot");
            Ok(())
        }
    }

    /// Apply on a scratch sysroot: real grubenv (grub-editenv) and state file.
    #[test]
    fn apply_on_a_scratch_sysroot() {
        if which("grub-editenv").is_none() {
            panic!("grub-editenv not found: run scripts/install-deps.sh");
        }
        let d = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(d.path().join("boot")).unwrap();
        let ctx = NodeCtx::under(d.path(), d.path(), &d.path().join("var"));
        let env = GrubEnv::for_sysroot(d.path());
        env.write(&bootcount::arm(2)).unwrap();

        // Unhealthy on trial: state saved, grubenv untouched, reboot.
        let p = plan(&obs(env.read().unwrap(), false, None), 7);
        let mut r = Recorder::default();
        assert!(!apply(&ctx, &p, &mut r).unwrap());
        assert_eq!(r.calls, ["reboot"]);
        assert_eq!(env.read().unwrap().state(), State::Trial(2));
        let saved = ctx.load_state().unwrap();
        assert!(!saved.last_health.as_ref().unwrap().ok);

        // GRUB fell back: reorder, good grubenv, the failed commit blocked.
        env.write(&Env {
            boot_counter: Some(-1),
            boot_success: Some(false),
        })
        .unwrap();
        let mut o = obs(env.read().unwrap(), true, Some(dep("f")));
        o.state = saved;
        o.state.last_health.as_mut().unwrap().commit = "f".into();
        let p = plan(&o, 8);
        let mut r = Recorder::default();
        assert!(apply(&ctx, &p, &mut r).unwrap());
        assert_eq!(r.calls, ["make_booted_default"]);
        assert_eq!(env.read().unwrap().state(), State::Normal);
        let st = ctx.load_state().unwrap();
        assert_eq!(st.blocked.len(), 1);
        assert!(
            st.blocked[0]
                .reason
                .starts_with("health check failed: x: broken")
        );
        assert!(st.last_health.unwrap().ok);
    }

    fn which(p: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(p))
                .find(|f| f.is_file())
        })
    }
}
