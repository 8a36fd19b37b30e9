//! `keelson health`: the checks after every boot, and what the node does
//! with the result (the decision is pure and table-tested).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::bootcount::State;
use super::context::NodeCtx;
use crate::util::cmd::Cmd;

/// The kubelet's local health endpoint.
pub const KUBELET_HEALTHZ: &str = "127.0.0.1:10248";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

/// What to do after the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Healthy: clear the boot counter, record success.
    MarkGood,
    /// A deployment on trial is unhealthy: reboot so GRUB counts down.
    Reboot,
    /// The known-good deployment is unhealthy: report, do not loop.
    Report,
    /// GRUB fell back: keep the booted deployment, block the failed one.
    FinishFallback,
}

pub fn decide(state: State, healthy: bool) -> Action {
    match (state, healthy) {
        (State::FellBack, _) => Action::FinishFallback,
        (State::Trial(_), true) | (State::Normal, true) => Action::MarkGood,
        (State::Trial(_), false) => Action::Reboot,
        (State::Normal, false) => Action::Report,
    }
}

fn failed_units() -> Check {
    match Cmd::new("systemctl")
        .args(["list-units", "--state=failed", "--no-legend", "--plain"])
        .run()
    {
        Ok(out) => {
            let units: Vec<&str> = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|u| *u != "keelson-health.service")
                .collect();
            Check::new("failed-units", units.is_empty(), units.join(" "))
        }
        Err(e) => Check::new("failed-units", false, format!("{e:#}")),
    }
}

fn containerd() -> Option<Check> {
    let enabled = Cmd::new("systemctl")
        .args(["is-enabled", "containerd.service"])
        .run()
        .ok()?;
    if enabled.trim() != "enabled" {
        return None;
    }
    let active = Cmd::new("systemctl")
        .args(["is-active", "containerd.service"])
        .run()
        .unwrap_or_default();
    Some(Check::new(
        "containerd",
        active.trim() == "active",
        active.trim(),
    ))
}

/// GET /healthz from the kubelet; "ok" means healthy.
fn kubelet() -> Option<Check> {
    if !Path::new("/usr/bin/kubelet").exists() {
        return None;
    }
    let mut last = String::new();
    for _ in 0..30 {
        match http_get(KUBELET_HEALTHZ, "/healthz") {
            Ok(body) if body.trim() == "ok" => return Some(Check::new("kubelet", true, "ok")),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Some(Check::new(
        "kubelet",
        false,
        format!("/healthz: {}", last.trim()),
    ))
}

pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or("no response"));
    }
    Ok(body.to_string())
}

fn disk(path: &str, min_percent: u64) -> Check {
    let name = format!("disk {path}");
    match crate::util::fsutil::fs_stats(Path::new(path)) {
        Ok(st) => {
            let free = st.avail_bytes * 100 / st.total_bytes.max(1);
            Check::new(
                &name,
                free >= min_percent,
                format!("{free}% free (need {min_percent}%)"),
            )
        }
        Err(e) => Check::new(&name, false, format!("{e:#}")),
    }
}

fn pids() -> Check {
    let max: u64 = fs_err::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let used = fs_err::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
                .count()
        })
        .unwrap_or(0) as u64;
    Check::new("pids", used * 10 < max * 9, format!("{used} of {max}"))
}

/// Executables in the vendor and admin directories; an admin file with the
/// same name replaces the vendor one.
pub fn check_scripts(vendor: &Path, admin: &Path) -> Vec<PathBuf> {
    let mut by_name = std::collections::BTreeMap::new();
    for dir in [vendor, admin] {
        let Ok(rd) = fs_err::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            by_name.insert(e.file_name(), e.path());
        }
    }
    by_name.into_values().filter(|p| is_executable(p)).collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn run_script(p: &Path) -> Check {
    let name = format!("script {}", p.display());
    match Cmd::new("timeout").arg("120").arg(p).run() {
        Ok(_) => Check::new(&name, true, ""),
        Err(e) => Check::new(
            &name,
            false,
            format!("{e:#}")
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// Run every check on this machine.
pub fn run_checks(ctx: &NodeCtx) -> Vec<Check> {
    let mut out = vec![failed_units()];
    out.extend(containerd());
    out.extend(kubelet());
    out.push(disk("/var", 5));
    out.push(disk("/boot", 5));
    out.push(pids());
    for s in check_scripts(&ctx.vendor_checks, &ctx.admin_checks) {
        out.push(run_script(&s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        let t = [
            (State::Normal, true, Action::MarkGood),
            (State::Normal, false, Action::Report),
            (State::Trial(2), true, Action::MarkGood),
            (State::Trial(0), false, Action::Reboot),
            (State::FellBack, true, Action::FinishFallback),
            (State::FellBack, false, Action::FinishFallback),
        ];
        for (s, h, want) in t {
            assert_eq!(decide(s, h), want, "{s:?} healthy={h}");
        }
    }

    #[test]
    fn admin_scripts_override_vendor_by_name() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (v, a) = (d.path().join("v"), d.path().join("a"));
        fs_err::create_dir_all(&v).unwrap();
        fs_err::create_dir_all(&a).unwrap();
        for (dir, name, exec) in [
            (&v, "10-x", true),
            (&v, "20-y", true),
            (&a, "20-y", true),
            (&v, "30-z", false),
        ] {
            let p = dir.join(name);
            fs_err::write(&p, "#!/bin/sh\n").unwrap();
            fs_err::set_permissions(
                &p,
                std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )
            .unwrap();
        }
        let got = check_scripts(&v, &a);
        assert_eq!(got, vec![v.join("10-x"), a.join("20-y")]);
        let failing = v.join("fail");
        fs_err::write(&failing, "#!/bin/sh\necho disk is on fire\nexit 3\n").unwrap();
        fs_err::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = run_script(&failing);
        assert!(!c.ok && c.detail.contains("disk is on fire"), "{c:?}");
    }
}
