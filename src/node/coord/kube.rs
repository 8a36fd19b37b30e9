//! The Kubernetes backend, on kube-rs: reboot slots are Lease objects
//! (`coordination.k8s.io/v1`) named `keelson-<group>-<i>` in one namespace,
//! taken and given back by resourceVersion compare-and-swap; drain is a
//! cordon (`spec.unschedulable`) and evictions through the Eviction API
//! (policy/v1), so PodDisruptionBudgets hold; the node's update state is
//! published as `keelson.dev/*` annotations and a `keelson.dev/phase` label.
//!
//! kube is async; each call runs on a current-thread runtime owned here.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::drain::{self, Evicted, Next};
use super::slots::{self, Choice, Slot};
use super::{Acquired, Coordinator, Drained, Report};
use crate::node::config::Updates;
use crate::node::context::NodeCtx;

pub const PREFIX: &str = "keelson.dev/";
const CORDONED: &str = "keelson.dev/cordoned";
const GROUP_LABEL: &str = "keelson.dev/group";

pub struct KubeCoordinator {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    server: String,
    namespace: String,
    group: String,
    node: String,
    slots: usize,
    expiry: u64,
}

/// 409 Conflict / AlreadyExists: someone else wrote first.
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{} {}: {}", s.code, s.reason, s.message),
        e => anyhow::Error::new(e),
    }
}

/// Pure: a Lease as a slot.
pub fn slot_of(name: &str, l: Option<&Lease>) -> Slot {
    let spec = l.and_then(|l| l.spec.as_ref());
    Slot {
        name: name.to_string(),
        resource_version: l.and_then(|l| l.metadata.resource_version.clone()),
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        renewed: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_second().max(0) as u64),
    }
}

/// Pure: the merge patch that publishes `r` on the Node.
pub fn report_patch(r: &Report) -> serde_json::Value {
    let phase = r.phase.as_str();
    json!({"metadata": {
        "labels": {"keelson.dev/phase": phase},
        "annotations": {
            "keelson.dev/phase": phase,
            "keelson.dev/booted-version": r.booted_version,
            "keelson.dev/booted-commit": r.booted_commit,
            "keelson.dev/staged-version": r.staged_version,
            "keelson.dev/last-error": r.last_error,
        }
    }})
}

/// Pure: a pod as the drain decisions see it.
pub fn pod_of(p: &Pod) -> drain::Pod {
    let m = &p.metadata;
    drain::Pod {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        owner_kinds: m
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.kind.clone())
            .collect(),
        mirror: m
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
    }
}

impl KubeCoordinator {
    pub fn connect(ctx: &NodeCtx, u: &Updates) -> Result<Self> {
        let path = &u.kubernetes.kubeconfig;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Kubernetes client's runtime")?;
        let kc = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("{}: cannot read the kubeconfig", path.display()))?;
        let mut config = rt
            .block_on(kube::Config::from_custom_kubeconfig(
                kc,
                &Default::default(),
            ))
            .with_context(|| format!("{}: not a usable kubeconfig", path.display()))?;
        // kube retries 429s itself, with its own backoff: an eviction refused
        // by a PodDisruptionBudget must come back to the drain loop, which
        // retries against the drain timeout.
        config.default_retry = false;
        // An API server that accepts and never answers must not hang the
        // agent (which holds the sysroot lock meanwhile).
        config.read_timeout = Some(std::time::Duration::from_secs(60));
        config.reset_reader_on_write = true;
        let server = config.cluster_url.to_string();
        // The client spawns its request buffer's task onto this runtime.
        let _guard = rt.enter();
        let client = kube::Client::try_from(config)
            .with_context(|| format!("{}: cannot build a client", path.display()))?;
        drop(_guard);
        Ok(KubeCoordinator {
            rt,
            client,
            server,
            namespace: u.kubernetes.namespace.clone(),
            group: u.group.clone(),
            node: super::node_name(ctx, u)?,
            slots: u.max_unavailable as usize,
            expiry: u.slot_expiry_seconds,
        })
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn read_slots(&self) -> Result<(Vec<Slot>, Vec<Option<Lease>>)> {
        let api = self.leases();
        let mut slots = Vec::new();
        let mut leases = Vec::new();
        for i in 0..self.slots {
            let name = slots::lease_name(&self.group, i);
            let l = self
                .rt
                .block_on(api.get_opt(&name))
                .map_err(api_error)
                .with_context(|| {
                    format!(
                        "reading Lease {}/{name} from {}",
                        self.namespace, self.server
                    )
                })?;
            slots.push(slot_of(&name, l.as_ref()));
            leases.push(l);
        }
        Ok((slots, leases))
    }

    fn spec(&self, now: u64, acquired: bool, old: Option<&LeaseSpec>) -> Result<LeaseSpec> {
        let t = MicroTime(jiff::Timestamp::from_second(now as i64)?);
        Ok(LeaseSpec {
            holder_identity: Some(self.node.clone()),
            lease_duration_seconds: Some(self.expiry.min(i32::MAX as u64) as i32),
            acquire_time: if acquired {
                Some(t.clone())
            } else {
                old.and_then(|s| s.acquire_time.clone())
            },
            renew_time: Some(t),
            lease_transitions: old
                .and_then(|s| s.lease_transitions)
                .map(|n| n + i32::from(acquired))
                .or(Some(0)),
            ..Default::default()
        })
    }

    /// One compare-and-swap attempt; Ok(false) when another writer won.
    fn write(&self, choice: &Choice, leases: &[Option<Lease>], now: u64) -> Result<bool> {
        let api = self.leases();
        let pp = PostParams::default();
        let (i, create) = match choice {
            Choice::Renew(i) => (*i, false),
            Choice::Take { index, .. } => (*index, false),
            Choice::Create(i) => (*i, true),
            Choice::Wait { .. } => bail!("nothing to write"),
        };
        let name = slots::lease_name(&self.group, i);
        let acquired = !matches!(choice, Choice::Renew(_));
        let res = if create {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some([(GROUP_LABEL.to_string(), self.group.clone())].into()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, true, None)?),
            };
            self.rt.block_on(api.create(&pp, &l))
        } else {
            let mut l = leases[i].clone().context("lease vanished")?;
            l.spec = Some(self.spec(now, acquired, l.spec.as_ref())?);
            self.rt.block_on(api.replace(&name, &pp, &l))
        };
        match res {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(api_error(e)).with_context(|| {
                format!("writing Lease {}/{name} on {}", self.namespace, self.server)
            }),
        }
    }

    /// Merge-patch the Node; Ok(false) when it does not exist (yet).
    fn patch_node(&self, patch: serde_json::Value) -> Result<bool> {
        let pp = PatchParams::default();
        match self
            .rt
            .block_on(self.nodes().patch(&self.node, &pp, &Patch::Merge(&patch)))
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(api_error(e))
                .with_context(|| format!("patching Node {} on {}", self.node, self.server)),
        }
    }

    fn get_node(&self) -> Result<Option<Node>> {
        self.rt
            .block_on(self.nodes().get_opt(&self.node))
            .map_err(api_error)
            .with_context(|| format!("reading Node {} from {}", self.node, self.server))
    }

    fn cordon(&self) -> Result<()> {
        let n = self.get_node()?.with_context(|| {
            format!(
                "Node {} does not exist on {} (is updates.kubernetes.node_name right?)",
                self.node, self.server
            )
        })?;
        let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        if !unschedulable {
            // Marked as ours, so the uncordon never undoes an operator's cordon.
            self.patch_node(json!({"spec": {"unschedulable": true},
                "metadata": {"annotations": {CORDONED: "true"}}}))?;
        }
        Ok(())
    }

    fn pods_on_node(&self) -> Result<Vec<drain::Pod>> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let pods = self
            .rt
            .block_on(Api::<Pod>::all(self.client.clone()).list(&lp))
            .map_err(api_error)
            .with_context(|| {
                format!("listing the pods of node {} on {}", self.node, self.server)
            })?;
        Ok(pods.items.iter().map(pod_of).collect())
    }

    fn evict(&self, p: &drain::Pod) -> Result<Evicted> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
        match self
            .rt
            .block_on(api.evict(&p.name, &EvictParams::default()))
        {
            Ok(_) => Ok(Evicted::Accepted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Evicted::Gone),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Evicted::Refused(s.message.clone())),
            Err(e) => Err(api_error(e)).with_context(|| format!("evicting pod {}", p.key())),
        }
    }
}

impl Coordinator for KubeCoordinator {
    fn describe(&self) -> String {
        format!(
            "kubernetes: {} slot(s) keelson-{}-* in namespace {} on {}",
            self.slots, self.group, self.namespace, self.server
        )
    }

    fn acquire(&mut self, now: u64) -> Result<Acquired> {
        // Each lost race re-reads; more rounds than slots plus writers is a bug.
        for _ in 0..(self.slots + 50) {
            let (slots, leases) = self.read_slots()?;
            let choice = slots::choose(&slots, &self.node, now, self.expiry);
            if let Choice::Wait { holders } = choice {
                return Ok(Acquired::Wait(holders));
            }
            if let Choice::Take {
                from: Some(dead),
                index,
            } = &choice
            {
                tracing::warn!(
                    "taking over slot {index} from {dead}: not renewed for {} s",
                    self.expiry
                );
            }
            if self.write(&choice, &leases, now)? {
                let i = match choice {
                    Choice::Renew(i) | Choice::Create(i) | Choice::Take { index: i, .. } => i,
                    Choice::Wait { .. } => unreachable!(),
                };
                return Ok(Acquired::Held(slots[i].name.clone()));
            }
        }
        bail!("lost the race for a slot too many times on {}", self.server)
    }

    fn release(&mut self) -> Result<()> {
        for _ in 0..50 {
            let (slots, leases) = self.read_slots()?;
            let mine: Vec<usize> = (0..slots.len())
                .filter(|i| slots[*i].holder.as_deref() == Some(self.node.as_str()))
                .collect();
            let Some(&i) = mine.first() else {
                return Ok(());
            };
            let mut l = leases[i].clone().context("lease vanished")?;
            if let Some(s) = l.spec.as_mut() {
                s.holder_identity = None;
                s.renew_time = None;
                s.acquire_time = None;
            }
            let name = &slots[i].name;
            match self
                .rt
                .block_on(self.leases().replace(name, &PostParams::default(), &l))
            {
                Ok(_) => tracing::info!("released slot {name}"),
                Err(e) if conflict(&e) => continue,
                Err(e) => {
                    return Err(api_error(e))
                        .with_context(|| format!("releasing Lease {}/{name}", self.namespace));
                }
            }
        }
        bail!("could not release the slot: too many conflicting writes")
    }

    fn holders(&mut self, _now: u64) -> Result<Option<Vec<String>>> {
        Ok(Some(slots::holders(&self.read_slots()?.0)))
    }

    fn drain(&mut self, timeout_s: u64) -> Result<Drained> {
        self.cordon()?;
        let start = std::time::Instant::now();
        let mut refused = BTreeMap::new();
        let mut evicted = BTreeSet::new();
        for round in 0.. {
            let pods = self.pods_on_node()?;
            for p in drain::classify(&pods).0 {
                if evicted.contains(&p.key()) {
                    continue;
                }
                match self.evict(p)? {
                    Evicted::Accepted | Evicted::Gone => {
                        refused.remove(&p.key());
                        evicted.insert(p.key());
                    }
                    Evicted::Refused(why) => {
                        refused.insert(p.key(), why);
                    }
                }
            }
            let pods = self.pods_on_node()?;
            let remaining = drain::classify(&pods).0;
            let elapsed = start.elapsed().as_millis() as u64;
            match drain::next(&remaining, &refused, elapsed, timeout_s * 1000, round) {
                Next::Done => {
                    return Ok(Drained::Done {
                        evicted: evicted.into_iter().collect(),
                    });
                }
                Next::Again { retry_ms } => {
                    std::thread::sleep(std::time::Duration::from_millis(retry_ms))
                }
                Next::GiveUp { blocking } => {
                    return Ok(Drained::TimedOut(format!(
                        "after {timeout_s} s: {}",
                        blocking.join("; ")
                    )));
                }
            }
        }
        unreachable!()
    }

    fn uncordon(&mut self) -> Result<()> {
        let Some(n) = self.get_node()? else {
            return Ok(());
        };
        let ours = n
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get(CORDONED).is_some_and(|v| v == "true"));
        if ours {
            self.patch_node(json!({"spec": {"unschedulable": false},
                "metadata": {"annotations": {CORDONED: null}}}))?;
        }
        Ok(())
    }

    fn report(&mut self, r: &Report) -> Result<()> {
        if !self.patch_node(report_patch(r))? {
            // Before the kubelet registers the node there is nothing to annotate.
            tracing::warn!(
                "Node {} not found on {}: state not published",
                self.node,
                self.server
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_patch_sets_and_clears() {
        let r = Report {
            phase: super::super::Phase::WaitingForSlot,
            booted_version: Some("1".into()),
            booted_commit: Some("abc".into()),
            staged_version: Some("2".into()),
            last_error: None,
        };
        let p = report_patch(&r);
        assert_eq!(
            p["metadata"]["labels"]["keelson.dev/phase"],
            "waiting-for-slot"
        );
        let a = &p["metadata"]["annotations"];
        assert_eq!(a["keelson.dev/staged-version"], "2");
        // null removes the annotation in a merge patch.
        assert!(a["keelson.dev/last-error"].is_null() && a.get("keelson.dev/last-error").is_some());
    }

    #[test]
    fn lease_and_pod_conversion() {
        let l: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "keelson-default-0", "resourceVersion": "7"},
            "spec": {"holderIdentity": "n1", "renewTime": "2026-12-01T10:00:00.000000Z"}
        }))
        .unwrap();
        let s = slot_of("keelson-default-0", Some(&l));
        assert_eq!(
            (
                s.resource_version.as_deref(),
                s.holder.as_deref(),
                s.renewed
            ),
            (Some("7"), Some("n1"), Some(1_796_119_200))
        );
        assert!(!slot_of("x", None).exists());
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "fluent", "namespace": "logging",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "f", "uid": "u"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let d = pod_of(&p);
        assert_eq!(
            (d.key(), d.owner_kinds, d.mirror),
            (
                "logging/fluent".to_string(),
                vec!["DaemonSet".to_string()],
                false
            )
        );
    }
}
