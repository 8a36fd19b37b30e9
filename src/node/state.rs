//! What the node remembers across boots, in /var/lib/keelson/state.json:
//! the last health result and the commits that failed their trial (never
//! re-applied automatically). Written atomically.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub commit: String,
    pub version: Option<String>,
    pub ok: bool,
    /// Why it failed (empty when ok).
    pub reasons: Vec<String>,
    /// Seconds since the epoch.
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub commit: String,
    pub version: Option<String>,
    pub reason: String,
    pub time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub last_health: Option<Health>,
    #[serde(default)]
    pub blocked: Vec<Blocked>,
    /// What the last update pull downloaded (bytes, objects, delta parts).
    #[serde(default)]
    pub last_fetch: Option<super::fetch::Fetched>,
    /// Reboot coordination: phase, slot held, last error.
    #[serde(default)]
    pub coordination: Option<super::coord::CoordState>,
}

impl State {
    pub fn is_blocked(&self, commit: &str) -> Option<&Blocked> {
        self.blocked.iter().find(|b| b.commit == commit)
    }

    /// Add `b` unless that commit is already blocked.
    pub fn block(&mut self, b: Blocked) {
        if self.is_blocked(&b.commit).is_none() {
            self.blocked.push(b);
        }
    }
}

pub fn load(p: &Path) -> Result<State> {
    match fs_err::read_to_string(p) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{}: not valid keelson state", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", p.display())),
    }
}

pub fn save(p: &Path, s: &State) -> Result<()> {
    if let Some(dir) = p.parent() {
        fs_err::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(s)? + "\n";
    crate::util::fsutil::write_atomic(p, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_block_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert_eq!(load(&p).unwrap(), State::default());
        let mut s = State::default();
        let b = Blocked {
            commit: "c3".into(),
            version: Some("3".into()),
            reason: "check x failed".into(),
            time: 1,
        };
        s.block(b.clone());
        s.block(b);
        assert_eq!(s.blocked.len(), 1);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        assert!(load(&p).unwrap().is_blocked("c3").is_some());
        fs_err::write(&p, "{").unwrap();
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("not valid keelson state")
        );
    }
}
