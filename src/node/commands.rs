//! The node's commands: upgrade, deploy, rollback, health, agent. Thin I/O
//! around the pure parts (bootcount, health::decide, config).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::bootcount::{self, State};
use super::config::{self, RebootPolicy};
use super::deploy::{self, Node};
use super::grubenv::GrubEnv;
use super::health::{self, Action};
use super::state::{self, Blocked};
use crate::util::cmd::Cmd;

fn reboot() -> Result<()> {
    println!("Rebooting.");
    Cmd::new("systemctl").arg("reboot").run().map(|_| ())
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

pub fn upgrade(sysroot: &Path, check_only: bool, want_reboot: bool) -> Result<()> {
    let cfg = config::load()?;
    let node = deploy::open_writable(sysroot)?;
    let a = deploy::check(&node, check_only)?;
    let version = a.version.as_deref().unwrap_or("-");
    if a.current {
        println!(
            "No update: {} is at the booted commit {} (version {version}).",
            a.refspec,
            short(&a.commit)
        );
        return Ok(());
    }
    if let Some(reason) = &a.blocked {
        println!(
            "Not upgrading: {} (version {version}) failed on this node before: {reason}. Use `keelson deploy {}` to force it.",
            short(&a.commit),
            a.commit
        );
        return Ok(());
    }
    if check_only {
        println!(
            "Update available: {} version {version} ({}).",
            a.refspec, a.commit
        );
        return Ok(());
    }
    deploy::stage(&node, &a.commit, cfg.boot.attempts)?;
    println!(
        "Staged version {version} ({}); it boots next, with {} attempts.",
        a.commit, cfg.boot.attempts
    );
    if want_reboot { reboot() } else { Ok(()) }
}

/// Deploy a specific commit (or version on the booted ref), even one that
/// was blocked: an explicit choice.
pub fn deploy_target(sysroot: &Path, target: &str, want_reboot: bool) -> Result<()> {
    let cfg = config::load()?;
    let node = deploy::open_writable(sysroot)?;
    let commit = deploy::resolve_target(&node, target)?;
    deploy::stage(&node, &commit, cfg.boot.attempts)?;
    let mut st = state::load(&state::path())?;
    if st.blocked.iter().any(|b| b.commit == commit) {
        st.blocked.retain(|b| b.commit != commit);
        state::save(&state::path(), &st)?;
        println!("Unblocked {} (deployed explicitly).", short(&commit));
    }
    println!("Staged {commit}; it boots next.");
    if want_reboot { reboot() } else { Ok(()) }
}

pub fn rollback(sysroot: &Path, want_reboot: bool) -> Result<()> {
    let node = deploy::open_writable(sysroot)?;
    let target = deploy::rollback(&node)?;
    println!(
        "The rollback deployment {} is now the default.",
        short(&target)
    );
    if want_reboot { reboot() } else { Ok(()) }
}

/// After every boot (keelson-health.service).
pub fn health(sysroot: &Path) -> Result<bool> {
    let env_file = GrubEnv::for_sysroot(sysroot);
    let env = env_file.read()?;
    let boot_state = env.state();
    let checks = health::run_checks();
    let healthy = checks.iter().all(|c| c.ok);
    for c in &checks {
        println!(
            "{} {}{}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            if c.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", c.detail)
            }
        );
    }
    let status = super::status::read(sysroot)?;
    let booted = status
        .booted
        .as_ref()
        .context("not booted into an ostree deployment")?;
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let path = state::path();
    let mut st = state::load(&path)?;
    let previous_health = st.last_health.clone();
    st.last_health = Some(state::Health {
        commit: booted.commit.clone(),
        version: booted.version.clone(),
        ok: healthy,
        reasons: reasons.clone(),
        time: state::now(),
    });
    let action = health::decide(boot_state, healthy);
    match action {
        Action::FinishFallback => {
            let node = deploy::open_writable(sysroot)?;
            if let Some(failed) = deploy::make_booted_default(&node)? {
                let version = status
                    .deployments
                    .iter()
                    .find(|d| d.commit == failed)
                    .and_then(|d| d.version.clone());
                let reason = match previous_health {
                    Some(h) if h.commit == failed && !h.ok => {
                        format!("health check failed: {}", h.reasons.join("; "))
                    }
                    _ => "did not reach a healthy boot within the counted attempts".to_string(),
                };
                println!(
                    "GRUB fell back: {} (version {}) is blocked: {reason}",
                    short(&failed),
                    version.as_deref().unwrap_or("-")
                );
                st.block(Blocked {
                    commit: failed,
                    version,
                    reason,
                    time: state::now(),
                });
            }
            env_file.write(&bootcount::mark_good())?;
        }
        Action::MarkGood => {
            if env.state() != State::Normal || env.boot_success != Some(true) {
                env_file.write(&bootcount::mark_good())?;
            }
        }
        Action::Reboot => {
            state::save(&path, &st)?;
            println!(
                "Unhealthy boot of a deployment on trial: rebooting so GRUB counts the attempt."
            );
            reboot()?;
            return Ok(false);
        }
        Action::Report => {}
    }
    state::save(&path, &st)?;
    Ok(healthy || action == Action::FinishFallback)
}

fn now_utc() -> (u32, u32) {
    let secs = state::now();
    let days = secs / 86400;
    // 1970-01-01 was a Thursday (4).
    (((days + 4) % 7) as u32, ((secs % 86400) / 3600) as u32)
}

/// The update agent (keelson-update.timer): stage a newer commit, reboot
/// as the policy says. Never re-applies a blocked commit.
pub fn agent(sysroot: &Path) -> Result<()> {
    let cfg = config::load()?;
    if !cfg.updates.enabled {
        println!("Updates disabled (updates.enabled = false).");
        return Ok(());
    }
    let node: Node = deploy::open_writable(sysroot)?;
    if node.sysroot.staged_deployment().is_some() {
        println!("An update is already staged.");
        return maybe_reboot(&cfg);
    }
    let a = deploy::check(&node, false)?;
    if a.current {
        println!("Up to date ({}).", short(&a.commit));
        return Ok(());
    }
    if let Some(reason) = a.blocked {
        println!(
            "Not re-applying {} (version {}): it failed here before: {reason}",
            short(&a.commit),
            a.version.as_deref().unwrap_or("-")
        );
        return Ok(());
    }
    deploy::stage(&node, &a.commit, cfg.boot.attempts)?;
    println!(
        "Staged version {} ({}).",
        a.version.as_deref().unwrap_or("-"),
        a.commit
    );
    maybe_reboot(&cfg)
}

fn maybe_reboot(cfg: &config::Config) -> Result<()> {
    match cfg.updates.reboot {
        RebootPolicy::Immediate => reboot(),
        RebootPolicy::Off => {
            println!("Reboot policy is off: the update applies at the next reboot.");
            Ok(())
        }
        RebootPolicy::Window => {
            let w = cfg
                .updates
                .window
                .as_ref()
                .context("updates.window missing")?;
            let (day, hour) = now_utc();
            if config::in_window(w, day, hour) {
                reboot()
            } else {
                println!("Outside the maintenance window: rebooting later.");
                Ok(())
            }
        }
    }
}

pub fn ensure_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("this command changes the system: run it as root");
    }
    Ok(())
}
