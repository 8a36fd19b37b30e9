//! The node's commands: upgrade, deploy, rollback, health, agent. Thin I/O
//! around the pure parts (bootcount, health::decide, config).

use anyhow::{Context, Result, bail};

use super::config::{self, RebootPolicy};
use super::context::NodeCtx;
use super::deploy::{self, Node};
use crate::util::cmd::Cmd;

pub fn reboot() -> Result<()> {
    println!("Rebooting.");
    Cmd::new("systemctl").arg("reboot").run().map(|_| ())
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

pub fn upgrade(ctx: &NodeCtx, check_only: bool, want_reboot: bool) -> Result<()> {
    let cfg = ctx.load_config()?;
    let node = deploy::open_writable(&ctx.sysroot)?;
    let a = deploy::check(ctx, &node, check_only)?;
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
pub fn deploy_target(ctx: &NodeCtx, target: &str, want_reboot: bool) -> Result<()> {
    let cfg = ctx.load_config()?;
    let node = deploy::open_writable(&ctx.sysroot)?;
    let commit = deploy::resolve_target(&node, target)?;
    deploy::stage(&node, &commit, cfg.boot.attempts)?;
    let mut st = ctx.load_state()?;
    if st.blocked.iter().any(|b| b.commit == commit) {
        st.blocked.retain(|b| b.commit != commit);
        ctx.save_state(&st)?;
        println!("Unblocked {} (deployed explicitly).", short(&commit));
    }
    println!("Staged {commit}; it boots next.");
    if want_reboot { reboot() } else { Ok(()) }
}

pub fn rollback(ctx: &NodeCtx, want_reboot: bool) -> Result<()> {
    let node = deploy::open_writable(&ctx.sysroot)?;
    let target = deploy::rollback(&node)?;
    println!(
        "The rollback deployment {} is now the default.",
        short(&target)
    );
    if want_reboot { reboot() } else { Ok(()) }
}

/// The update agent (keelson-update.timer): stage a newer commit, reboot
/// as the policy says. Never re-applies a blocked commit.
pub fn agent(ctx: &NodeCtx) -> Result<()> {
    let cfg = ctx.load_config()?;
    if !cfg.updates.enabled {
        println!("Updates disabled (updates.enabled = false).");
        return Ok(());
    }
    let node: Node = deploy::open_writable(&ctx.sysroot)?;
    if let Err(e) = super::coord::flow::settle(ctx, &cfg) {
        eprintln!("warning: settling the reboot coordination: {e:#}");
    }
    if let Some(staged) = node.sysroot.staged_deployment() {
        println!("An update is already staged.");
        return maybe_reboot(ctx, &cfg, staged.csum().as_str());
    }
    let a = deploy::check(ctx, &node, false)?;
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
    maybe_reboot(ctx, &cfg, &a.commit)
}

/// Reboot into `target` (staged) when the policy, and then the fleet's
/// coordinator, allow it now.
fn maybe_reboot(ctx: &NodeCtx, cfg: &config::Config, target: &str) -> Result<()> {
    let coordinated_reboot = || {
        if super::coord::flow::gate_reboot(ctx, cfg, target)? {
            reboot()
        } else {
            Ok(())
        }
    };
    match cfg.updates.reboot {
        RebootPolicy::Immediate => coordinated_reboot(),
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
            if config::in_window_at(w, ctx.now())? {
                coordinated_reboot()
            } else {
                println!("Outside the maintenance window: rebooting later.");
                Ok(())
            }
        }
    }
}

pub fn ensure_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this command changes the system: run it as root");
    }
    Ok(())
}
