//! The FleetLock backend, interoperable with zincati's servers (airlock on
//! etcd, poseidon/fleetlock on Kubernetes): `POST /v1/pre-reboot` before the
//! reboot and `POST /v1/steady-state` after a healthy boot, header
//! `fleet-lock-protocol: true`, body `{"client_params":{"id","group"}}`. The
//! id is zincati's: the machine id's app-specific id for zincati's app id
//! (systemd's `sd_id128_get_machine_app_specific`), so a server sees the
//! same id for a node whichever agent runs on it. The protocol has no
//! cordon or drain and does not name holders.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hmac::{KeyInit, Mac};

use super::{Acquired, Coordinator, Drained, Report};
use crate::node::config::Updates;
use crate::node::context::NodeCtx;

/// zincati's application id.
pub const ZINCATI_APP_ID: [u8; 16] = [
    0xde, 0x35, 0x10, 0x6b, 0x6e, 0xc2, 0x46, 0x88, 0xb6, 0x3a, 0xfd, 0xda, 0xa1, 0x56, 0x67, 0x9b,
];

/// Pure: systemd's app-specific id of `machine_id` (32 hex digits, dashes
/// allowed): HMAC-SHA256 keyed by the machine id over the app id, the first
/// 16 bytes, stamped as a version-4 UUID; 32 lower-case hex digits.
pub fn app_specific_id(machine_id: &str, app: &[u8; 16]) -> Result<String> {
    let hexid = machine_id.trim().replace('-', "");
    let key = hex::decode(&hexid)
        .ok()
        .filter(|k| k.len() == 16)
        .with_context(|| format!("{machine_id:?} is not a machine id (32 hex digits)"))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).context("HMAC key")?;
    mac.update(app);
    let out = mac.finalize().into_bytes();
    let mut id: [u8; 16] = out[..16].try_into().context("HMAC output")?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(hex::encode(id))
}

/// Pure: the request body.
pub fn body(id: &str, group: &str) -> serde_json::Value {
    serde_json::json!({"client_params": {"id": id, "group": group}})
}

pub struct FleetLock {
    url: String,
    id: String,
    group: String,
    agent: ureq::Agent,
}

impl FleetLock {
    pub fn new(ctx: &NodeCtx, u: &Updates) -> Result<Self> {
        let url = u
            .fleetlock
            .url
            .clone()
            .context("updates.fleetlock.url is not set")?;
        let mid = super::read_line(&ctx.machine_id).context("the FleetLock node id")?;
        let id = app_specific_id(&mid, &ZINCATI_APP_ID)
            .with_context(|| format!("{}", ctx.machine_id.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(FleetLock {
            url: url.trim_end_matches('/').to_string(),
            id,
            group: super::policy::fleetlock_group(u).to_string(),
            agent,
        })
    }

    /// POST one protocol call: Ok(None) on 200, Ok(Some(why)) on a refusal.
    fn call(&self, what: &str) -> Result<Option<String>> {
        let url = format!("{}/v1/{what}", self.url);
        let mut resp = self
            .agent
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header("content-type", "application/json")
            .send(body(&self.id, &self.group).to_string())
            .with_context(|| format!("FleetLock {what} at {url}"))?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(None);
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        // A refusal in the protocol's terms: {"kind": "...", "value": "..."}.
        // Anything else (a 404 page, a proxy error) is not a FleetLock answer.
        let v: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let Some((kind, value)) = v
            .as_ref()
            .and_then(|v| Some((v["kind"].as_str()?, v["value"].as_str()?)))
        else {
            let tail: String = text.chars().take(200).collect();
            bail!("FleetLock {what} at {url}: HTTP {status}, not a FleetLock reply: {tail}");
        };
        let why = format!("{kind}: {value}");
        Ok(Some(format!("HTTP {status}: {why}")))
    }
}

impl Coordinator for FleetLock {
    fn describe(&self) -> String {
        format!(
            "fleetlock: group {} at {} as {}",
            self.group, self.url, self.id
        )
    }

    fn acquire(&mut self, _now: u64) -> Result<Acquired> {
        match self.call("pre-reboot")? {
            None => Ok(Acquired::Held(format!("{} lock", self.group))),
            Some(why) => {
                tracing::info!("FleetLock refused the lock: {why}");
                Ok(Acquired::Wait(vec![]))
            }
        }
    }

    fn release(&mut self) -> Result<()> {
        match self.call("steady-state")? {
            None => Ok(()),
            Some(why) => bail!("FleetLock steady-state refused: {why}"),
        }
    }

    fn holders(&mut self, _now: u64) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    fn drain(&mut self, _timeout_s: u64) -> Result<Drained> {
        Ok(Drained::Done { evicted: vec![] })
    }

    fn uncordon(&mut self) -> Result<()> {
        Ok(())
    }

    fn report(&mut self, _r: &Report) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zincati_id_matches_systemd() {
        // `systemd-id128 machine-id --app-specific=de35106b6ec24688b63afddaa156679b`
        // on a host whose /etc/machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4.
        let t = [
            (
                "3d1219c7c4c5404aaa1f6d2a48adfda4",
                "975228d46dc94622b9bbe16671e2b58d",
            ),
            (
                "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4\n",
                "975228d46dc94622b9bbe16671e2b58d",
            ),
        ];
        for (mid, want) in t {
            assert_eq!(app_specific_id(mid, &ZINCATI_APP_ID).unwrap(), want);
        }
        assert!(
            app_specific_id("xyz", &ZINCATI_APP_ID)
                .unwrap_err()
                .to_string()
                .contains("not a machine id")
        );
        assert_eq!(
            body("975228d46dc94622b9bbe16671e2b58d", "workers").to_string(),
            r#"{"client_params":{"id":"975228d46dc94622b9bbe16671e2b58d","group":"workers"}}"#
        );
    }
}
