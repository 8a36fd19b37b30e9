//! Boot counting without GRUB's `increment` module (bookworm has none).
//!
//! The grubenv on /boot holds `boot_counter` and `boot_success`. The header
//! of keelson's grub.cfg (src/boot/templates/grub.cfg.tera) runs
//! [`grub_boot`]'s logic with plain string comparisons; the node arms the
//! counter after an upgrade and clears it once the health check passes.
//! Everything here is pure: the state type, its transitions, and the
//! interpretation the node reports.

use std::collections::BTreeMap;

/// Boot attempts a new deployment gets before GRUB falls back.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The most attempts the GRUB header can count down from.
pub const MAX_ATTEMPTS: u32 = 3;

/// The two grubenv variables keelson uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub boot_counter: Option<i32>,
    pub boot_success: Option<bool>,
}

/// What the node makes of the env.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "remaining")]
pub enum State {
    /// No trial in progress: the default deployment is known good.
    Normal,
    /// A new deployment is on trial with this many boots left.
    Trial(u32),
    /// GRUB ran out of attempts and booted the rollback entry.
    FellBack,
}

impl Env {
    /// Parse `grub-editenv list` output (`name=value` lines).
    pub fn parse(text: &str) -> Env {
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        Env {
            boot_counter: vars.get("boot_counter").and_then(|v| v.parse().ok()),
            boot_success: vars.get("boot_success").map(|v| *v == "1"),
        }
    }

    /// `grub-editenv … set` arguments for this env; `None` values are unset.
    pub fn assignments(&self) -> (Vec<String>, Vec<&'static str>) {
        let mut set = Vec::new();
        let mut unset = Vec::new();
        match self.boot_counter {
            Some(c) => set.push(format!("boot_counter={c}")),
            None => unset.push("boot_counter"),
        }
        match self.boot_success {
            Some(s) => set.push(format!("boot_success={}", if s { 1 } else { 0 })),
            None => unset.push("boot_success"),
        }
        (set, unset)
    }

    pub fn state(&self) -> State {
        match self.boot_counter {
            Some(-1) => State::FellBack,
            Some(n) if n >= 0 && self.boot_success != Some(true) => State::Trial(n as u32),
            _ => State::Normal,
        }
    }
}

/// After staging a deployment: give it `attempts` boots to prove itself.
pub fn arm(attempts: u32) -> Env {
    Env {
        boot_counter: Some(attempts.clamp(1, MAX_ATTEMPTS) as i32),
        boot_success: Some(false),
    }
}

/// The health check passed: the boot is good, no trial any more.
pub fn mark_good() -> Env {
    Env {
        boot_counter: None,
        boot_success: Some(true),
    }
}

/// What the GRUB header does on every boot: returns the env it saves and
/// the menu entry it boots (0 = default deployment, 1 = rollback).
pub fn grub_boot(env: &Env) -> (Env, u32) {
    let mut next = env.clone();
    let mut entry = 0;
    if env.boot_success != Some(true) {
        match env.boot_counter {
            Some(3) => next.boot_counter = Some(2),
            Some(2) => next.boot_counter = Some(1),
            Some(1) => next.boot_counter = Some(0),
            Some(0) => {
                next.boot_counter = Some(-1);
                entry = 1;
            }
            // -1 stays -1 (the node acknowledges the fallback) and keeps
            // booting the rollback entry until it does.
            Some(-1) => entry = 1,
            _ => {}
        }
    }
    // A boot is unproven until the health check says otherwise.
    if next.boot_counter.is_some() {
        next.boot_success = Some(false);
    }
    (next, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(c: Option<i32>, s: Option<bool>) -> Env {
        Env {
            boot_counter: c,
            boot_success: s,
        }
    }

    #[test]
    fn grub_transitions() {
        // (before, after, entry booted)
        let table = [
            (env(None, None), env(None, None), 0),
            (env(None, Some(true)), env(None, Some(true)), 0),
            (env(Some(3), Some(false)), env(Some(2), Some(false)), 0),
            (env(Some(2), Some(false)), env(Some(1), Some(false)), 0),
            (env(Some(1), Some(false)), env(Some(0), Some(false)), 0),
            (env(Some(0), Some(false)), env(Some(-1), Some(false)), 1),
            (env(Some(-1), Some(false)), env(Some(-1), Some(false)), 1),
            // a good boot was recorded: the counter is not touched
            (env(Some(2), Some(true)), env(Some(2), Some(false)), 0),
        ];
        for (before, after, entry) in table {
            assert_eq!(grub_boot(&before), (after.clone(), entry), "{before:?}");
        }
    }

    #[test]
    fn three_failed_boots_then_fallback() {
        let mut e = arm(DEFAULT_ATTEMPTS);
        let mut booted = Vec::new();
        for _ in 0..5 {
            let (next, entry) = grub_boot(&e);
            booted.push(entry);
            e = next; // the health check fails: nothing marks the boot good
        }
        assert_eq!(booted, [0, 0, 0, 1, 1]);
        assert_eq!(e.state(), State::FellBack);
    }

    #[test]
    fn good_boot_ends_the_trial() {
        let (e, entry) = grub_boot(&arm(3));
        assert_eq!((e.state(), entry), (State::Trial(2), 0));
        let e = mark_good();
        assert_eq!(e.state(), State::Normal);
        assert_eq!(grub_boot(&e), (e.clone(), 0));
    }

    #[test]
    fn parse_and_assign() {
        let e = Env::parse("# GRUB Environment Block\nboot_counter=2\nboot_success=0\n");
        assert_eq!(e, env(Some(2), Some(false)));
        assert_eq!(e.state(), State::Trial(2));
        assert_eq!(Env::parse("").state(), State::Normal);
        assert_eq!(Env::parse("boot_counter=-1\n").state(), State::FellBack);
        let (set, unset) = mark_good().assignments();
        assert_eq!(
            (set, unset),
            (vec!["boot_success=1".to_string()], vec!["boot_counter"])
        );
        assert_eq!(
            arm(9).boot_counter,
            Some(3),
            "clamped to what GRUB can count"
        );
    }
}
