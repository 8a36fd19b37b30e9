//! Node configuration from fragments, read in order
//! /usr/lib/keelson/config.d → /etc/keelson/config.d → /run/keelson/config.d
//! (files sorted by name in each; later keys win, tables merge). The merge
//! and the reboot-window logic are pure.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::coord::policy::{self, Backend, Fleetlock, Kubernetes, OnDrainTimeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootPolicy {
    /// Reboot as soon as an update is staged.
    Immediate,
    /// Reboot only inside the maintenance window.
    Window,
    /// Stage only; someone else reboots.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days the window opens, e.g. ["Sat", "Sun"] (all days when empty).
    #[serde(default)]
    pub days: Vec<String>,
    /// Hour (0–23, in `time_zone`) the window opens.
    pub start_hour: u32,
    /// How long it stays open, in hours (1–24); it may run past midnight.
    pub length_hours: u32,
    /// An IANA time zone name such as "Europe/Berlin" (default UTC).
    #[serde(default = "default_tz")]
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Updates {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_policy")]
    pub reboot: RebootPolicy,
    pub window: Option<Window>,
    /// Who decides when to reboot: none | kubernetes | fleetlock.
    #[serde(default)]
    pub coordination: Backend,
    /// The group of nodes sharing the reboot slots.
    #[serde(default = "policy::default_group")]
    pub group: String,
    /// How many nodes of the group may be down for an update at once.
    #[serde(default = "policy::default_max_unavailable")]
    pub max_unavailable: u32,
    /// How long eviction may take before `on_drain_timeout` applies.
    #[serde(default = "policy::default_drain_timeout")]
    pub drain_timeout_seconds: u64,
    #[serde(default)]
    pub on_drain_timeout: OnDrainTimeout,
    /// A slot whose holder has not renewed it for this long may be taken
    /// over (the holder died or never came back from its reboot).
    #[serde(default = "policy::default_slot_expiry")]
    pub slot_expiry_seconds: u64,
    /// While an update waits for a slot, try again after about this long
    /// (with jitter) instead of at the next hourly run.
    #[serde(default = "policy::default_retry")]
    pub retry_seconds: u64,
    #[serde(default)]
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub fleetlock: Fleetlock,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Boots a new deployment gets before GRUB falls back (1–3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_updates")]
    pub updates: Updates,
    #[serde(default = "default_boot")]
    pub boot: Boot,
    /// Reserved resources and kubelet settings (`keelson kubelet-config`).
    #[serde(default)]
    pub kubelet: super::kubelet::KubeletSettings,
}

fn default_true() -> bool {
    true
}
fn default_policy() -> RebootPolicy {
    RebootPolicy::Immediate
}
fn default_attempts() -> u32 {
    super::bootcount::DEFAULT_ATTEMPTS
}
fn default_tz() -> String {
    "UTC".into()
}
fn default_updates() -> Updates {
    // Every field of [updates] has a default: an empty table is valid.
    toml::Value::Table(toml::Table::new())
        .try_into()
        .unwrap_or_else(|e| unreachable!("an empty [updates] table: {e}"))
}
fn default_boot() -> Boot {
    Boot {
        attempts: default_attempts(),
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Deep-merge `over` into `base`: tables merge, anything else is replaced.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Merge fragments (name, text) in order into a validated config.
pub fn from_fragments(fragments: &[(String, String)]) -> Result<Config> {
    let mut table = toml::Table::new();
    for (name, text) in fragments {
        let t: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{name}: {}", e.message()))?;
        merge(&mut table, t);
        // Validate after each fragment so the error names the file that broke it.
        let c = typed(table.clone()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        validate(&c).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    typed(table)
}

/// The merged table as a [`Config`]; errors name the field (`kubelet.profile: …`).
fn typed(table: toml::Table) -> Result<Config> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().to_string();
        if path == "." {
            anyhow::anyhow!("{msg}")
        } else {
            anyhow::anyhow!("{path}: {msg}")
        }
    })
}

fn validate(c: &Config) -> Result<()> {
    c.kubelet.validate()?;
    if !(1..=3).contains(&c.boot.attempts) {
        bail!(
            "boot.attempts: {} is outside 1–3 (what GRUB can count)",
            c.boot.attempts
        );
    }
    if c.updates.reboot == RebootPolicy::Window && c.updates.window.is_none() {
        bail!("updates.window: reboot = \"window\" needs a [updates.window] table");
    }
    policy::validate(&c.updates)?;
    if let Some(w) = &c.updates.window {
        if jiff::tz::TimeZone::get(&w.time_zone).is_err() {
            bail!(
                "updates.window.time_zone: {:?} is not a known time zone (e.g. \"UTC\", \"Europe/Berlin\")",
                w.time_zone
            );
        }
        if w.start_hour > 23 {
            bail!(
                "updates.window.start_hour: {} is not an hour (0–23)",
                w.start_hour
            );
        }
        if !(1..=24).contains(&w.length_hours) {
            bail!(
                "updates.window.length_hours: {} is outside 1–24",
                w.length_hours
            );
        }
        for (i, d) in w.days.iter().enumerate() {
            if !DAYS.contains(&d.as_str()) {
                bail!(
                    "updates.window.days[{i}]: {d:?} is not one of {}",
                    DAYS.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Pure: (weekday with Sunday = 0, hour) of the UTC timestamp `secs` in the
/// time zone `tz` (a name `validate` accepted).
pub fn local_weekday_hour(secs: u64, tz: &str) -> Result<(u32, u32)> {
    let tz = jiff::tz::TimeZone::get(tz).with_context(|| format!("time zone {tz:?}"))?;
    let ts = jiff::Timestamp::from_second(secs as i64).context("timestamp out of range")?;
    let local = ts.to_zoned(tz);
    Ok((
        local.weekday().to_sunday_zero_offset() as u32,
        local.hour() as u32,
    ))
}

/// Is the instant `secs` inside the window, in the window's time zone?
pub fn in_window_at(w: &Window, secs: u64) -> Result<bool> {
    let (day, hour) = local_weekday_hour(secs, &w.time_zone)?;
    Ok(in_window(w, day, hour))
}

/// Is `weekday` (0 = Sunday) at `hour` (local) inside the window? Windows may
/// run past midnight into the next day.
pub fn in_window(w: &Window, weekday: u32, hour: u32) -> bool {
    let opens_on =
        |day: u32| w.days.is_empty() || w.days.iter().any(|d| d == DAYS[(day % 7) as usize]);
    // Hours since the window opened on the same day, or the day before.
    let today = hour >= w.start_hour && hour - w.start_hour < w.length_hours && opens_on(weekday);
    let yesterday = hour + 24 - w.start_hour < w.length_hours && opens_on(weekday + 6);
    today || yesterday
}

/// Read the fragments from `dirs` (each file `*.toml`, sorted by name).
pub fn load_from(dirs: &[PathBuf]) -> Result<Config> {
    let mut fragments = Vec::new();
    for dir in dirs {
        let Ok(rd) = fs_err::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = fs_err::read_to_string(&f)
                .with_context(|| format!("{}: cannot read", f.display()))?;
            fragments.push((f.display().to_string(), text));
        }
    }
    from_fragments(&fragments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frags(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn merge_order_table() {
        let c = from_fragments(&frags(&[])).unwrap();
        assert_eq!(
            (c.updates.reboot, c.boot.attempts),
            (RebootPolicy::Immediate, 3)
        );
        let c = from_fragments(&frags(&[
            ("usr/10.toml", "[updates]\nreboot = \"off\"\n[boot]\nattempts = 2\n"),
            ("etc/20.toml", "[updates]\nreboot = \"window\"\n[updates.window]\nstart_hour = 2\nlength_hours = 3\ndays = [\"Sat\"]\n"),
            ("run/30.toml", "[updates.window]\nstart_hour = 4\n"),
        ]))
        .unwrap();
        assert_eq!(c.updates.reboot, RebootPolicy::Window);
        assert_eq!(c.boot.attempts, 2, "untouched keys keep earlier values");
        let w = c.updates.window.unwrap();
        assert_eq!(
            (w.start_hour, w.length_hours, w.days),
            (4, 3, vec!["Sat".to_string()])
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let t = [
            (
                ("etc/a.toml", "[updates]\nreboot = \"sometimes\"\n"),
                "etc/a.toml: updates.reboot: unknown variant `sometimes`",
            ),
            (
                ("etc/a.toml", "[boot]\nattempts = 7\n"),
                "etc/a.toml: boot.attempts: 7 is outside 1–3",
            ),
            (
                ("etc/a.toml", "[updates]\nreboot = \"window\"\n"),
                "etc/a.toml: updates.window: reboot = \"window\" needs",
            ),
            (
                (
                    "etc/a.toml",
                    "[updates.window]\nstart_hour = 2\nlength_hours = 1\ndays = [\"Funday\"]\n",
                ),
                "etc/a.toml: updates.window.days[0]: \"Funday\"",
            ),
            (
                ("etc/a.toml", "[boot]\nattempt = 2\n"),
                "etc/a.toml: boot.attempt: unknown field `attempt`",
            ),
            (("etc/a.toml", "[boot\n"), "etc/a.toml: "),
            (
                (
                    "etc/a.toml",
                    "[updates.window]\nstart_hour = 2\nlength_hours = 1\ntime_zone = \"Mars/Olympus\"\n",
                ),
                "etc/a.toml: updates.window.time_zone: \"Mars/Olympus\" is not a known time zone",
            ),
            (
                ("etc/a.toml", "[updates]\ncoordination = \"etcd\"\n"),
                "etc/a.toml: updates.coordination: unknown variant `etcd`",
            ),
            (
                ("etc/a.toml", "[updates]\ncoordination = \"fleetlock\"\n"),
                "etc/a.toml: updates.fleetlock.url: coordination = \"fleetlock\" needs",
            ),
            (
                ("etc/a.toml", "[updates.fleetlock]\nurl = \"ftp://x\"\n"),
                "etc/a.toml: updates.fleetlock.url: \"ftp://x\" is not an http",
            ),
            (
                ("etc/a.toml", "[updates]\nmax_unavailable = 0\n"),
                "etc/a.toml: updates.max_unavailable: 0 is outside",
            ),
            (
                ("etc/a.toml", "[updates]\ngroup = \"Workers\"\n"),
                "etc/a.toml: updates.group: \"Workers\" is not a DNS label",
            ),
            (
                ("etc/a.toml", "[updates]\non_drain_timeout = \"wait\"\n"),
                "etc/a.toml: updates.on_drain_timeout: unknown variant `wait`",
            ),
            (
                ("etc/a.toml", "[updates]\nslot_expiry_seconds = 5\n"),
                "etc/a.toml: updates.slot_expiry_seconds: 5 is shorter",
            ),
            (
                ("etc/a.toml", "[updates.kubernetes]\nkubeconfig = \"kc\"\n"),
                "etc/a.toml: updates.kubernetes.kubeconfig: kc is not an absolute path",
            ),
            (
                ("etc/a.toml", "[updates.kubernetes]\nnamspace = \"x\"\n"),
                "etc/a.toml: updates.kubernetes.namspace: unknown field",
            ),
            (
                ("etc/a.toml", "[kubelet]\nprofile = \"gcp\"\n"),
                "etc/a.toml: kubelet.profile: unknown variant `gcp`",
            ),
            (
                (
                    "etc/a.toml",
                    "[kubelet]\ncontainer_log_max_size = \"-1Mi\"\n",
                ),
                "etc/a.toml: kubelet.container_log_max_size",
            ),
        ];
        for ((name, text), want) in t {
            let e = format!("{:#}", from_fragments(&frags(&[(name, text)])).unwrap_err());
            assert!(e.starts_with(want), "\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn window_table() {
        let w = Window {
            days: vec!["Sat".into()],
            start_hour: 22,
            length_hours: 4,
            time_zone: "UTC".into(),
        };
        // (weekday, hour, inside?) — Sat = 6, Sun = 0
        let t = [
            (6, 21, false),
            (6, 22, true),
            (6, 23, true),
            (0, 0, true),
            (0, 1, true),
            (0, 2, false),
            (5, 23, false),
            (0, 23, false),
        ];
        for (d, h, want) in t {
            assert_eq!(in_window(&w, d, h), want, "day {d} hour {h}");
        }
        let every = Window {
            days: vec![],
            start_hour: 3,
            length_hours: 1,
            time_zone: "UTC".into(),
        };
        assert!(in_window(&every, 2, 3) && !in_window(&every, 2, 4));
    }

    #[test]
    fn shipped_defaults_are_the_built_in_defaults() {
        let text = include_str!("../../treefiles/files/keelson-defaults.toml");
        let shipped = from_fragments(&frags(&[("keelson-defaults.toml", text)])).unwrap();
        assert_eq!(shipped, from_fragments(&[]).unwrap());
    }

    #[test]
    fn local_time_table() {
        // 2026-12-01 09:30 UTC is a Tuesday; 2026-07-04 22:30 UTC a Saturday.
        let t = [
            (1_796_117_400, "UTC", (2, 9)),
            (1_796_117_400, "Europe/Berlin", (2, 10)),
            (1_796_117_400, "America/New_York", (2, 4)),
            (1_796_117_400, "Asia/Kolkata", (2, 15)),
            (1_783_204_200, "Europe/Berlin", (0, 0)),
            (1_783_204_200, "America/Los_Angeles", (6, 15)),
        ];
        for (secs, tz, want) in t {
            assert_eq!(local_weekday_hour(secs, tz).unwrap(), want, "{secs} {tz}");
        }
    }

    #[test]
    fn window_across_midnight_in_a_time_zone() {
        // Saturday 23:00 for 3 hours, Berlin time (UTC+1 in winter, +2 in summer).
        let w = Window {
            days: vec!["Sat".into()],
            start_hour: 23,
            length_hours: 3,
            time_zone: "Europe/Berlin".into(),
        };
        let sat = 1_796_428_800; // 2026-12-05 00:00 UTC, a Saturday
        let t = [
            (sat + 21 * 3600, false),            // Sat 22:00 Berlin
            (sat + 22 * 3600, true),             // Sat 23:00 Berlin
            (sat + 24 * 3600, true),             // Sun 01:00 Berlin
            (sat + 25 * 3600, false),            // Sun 02:00 Berlin
            (sat + 22 * 3600 - 7 * 86400, true), // the Saturday before
            (sat + 22 * 3600 - 86400, false),    // Friday 23:00
            // Summer time: Sat 2026-07-04 23:00 Berlin is 21:00 UTC.
            (1_783_198_800, true),
            (1_783_195_200, false),
        ];
        for (secs, want) in t {
            assert_eq!(in_window_at(&w, secs).unwrap(), want, "{secs}");
        }
    }
}
