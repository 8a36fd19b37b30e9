//! Drain decisions, pure: which of the node's pods to evict, and after each
//! round of evictions whether the drain is done, goes on (with backoff), or
//! gives up naming the pods that would not leave. The Kubernetes backend
//! does the API calls in between.

use std::collections::BTreeMap;

/// A pod on the node, as the decisions need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// Kinds of the controllers owning it (DaemonSet, ReplicaSet, …).
    pub owner_kinds: Vec<String>,
    /// A static pod's mirror (annotation kubernetes.io/config.mirror).
    pub mirror: bool,
    /// status.phase (Running, Pending, Succeeded, Failed).
    pub phase: String,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a pod stays where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its DaemonSet would put it straight back (and tolerates cordons).
    DaemonSet,
    /// The kubelet runs it from a file; the API cannot evict it.
    Mirror,
    /// It has finished: nothing runs that a reboot could interrupt.
    Finished,
}

/// Pure: the pods that must be evicted, and the ones skipped with why.
pub fn classify(pods: &[Pod]) -> (Vec<&Pod>, Vec<(&Pod, Skip)>) {
    let mut evict = Vec::new();
    let mut skip = Vec::new();
    for p in pods {
        let why = if p.mirror {
            Some(Skip::Mirror)
        } else if p.owner_kinds.iter().any(|k| k == "DaemonSet") {
            Some(Skip::DaemonSet)
        } else if p.phase == "Succeeded" || p.phase == "Failed" {
            Some(Skip::Finished)
        } else {
            None
        };
        match why {
            Some(w) => skip.push((p, w)),
            None => evict.push(p),
        }
    }
    (evict, skip)
}

/// What one eviction request returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Evicted {
    /// Accepted: the pod is terminating.
    Accepted,
    /// Already gone (404).
    Gone,
    /// 429: a PodDisruptionBudget forbids it now; the API's message.
    Refused(String),
}

/// After a round: what next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Every pod that had to leave is gone.
    Done,
    /// Some are still there (terminating or refused): try again after `retry_ms`.
    Again { retry_ms: u64 },
    /// The timeout passed; these pods (`ns/name: why`) did not leave.
    GiveUp { blocking: Vec<String> },
}

/// Pure: the delay before round `round` (0-based): 0.5 s doubling to 8 s.
pub fn backoff_ms(round: u32) -> u64 {
    500u64.saturating_mul(1 << round.min(4))
}

/// Pure: what to do when `remaining` pods that must leave are still on the
/// node, `refused` holds the last refusal per pod, and `elapsed_ms` of
/// `timeout_ms` have passed after `round` rounds.
pub fn next(
    remaining: &[&Pod],
    refused: &BTreeMap<String, String>,
    elapsed_ms: u64,
    timeout_ms: u64,
    round: u32,
) -> Next {
    if remaining.is_empty() {
        return Next::Done;
    }
    if elapsed_ms >= timeout_ms {
        let blocking = remaining
            .iter()
            .map(|p| {
                let k = p.key();
                match refused.get(&k) {
                    Some(why) => format!("{k}: eviction refused: {why}"),
                    None => format!("{k}: still terminating"),
                }
            })
            .collect();
        return Next::GiveUp { blocking };
    }
    Next::Again {
        retry_ms: backoff_ms(round).min(timeout_ms - elapsed_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: &str, mirror: bool, phase: &str) -> Pod {
        Pod {
            namespace: "default".into(),
            name: name.into(),
            owner_kinds: if owner.is_empty() {
                vec![]
            } else {
                vec![owner.into()]
            },
            mirror,
            phase: phase.into(),
        }
    }

    #[test]
    fn classify_table() {
        let pods = vec![
            pod("web", "ReplicaSet", false, "Running"),
            pod("agent", "DaemonSet", false, "Running"),
            pod("etcd", "", true, "Running"),
            pod("job", "Job", false, "Succeeded"),
            pod("bare", "", false, "Pending"),
            pod("crashed", "", false, "Failed"),
        ];
        let (evict, skip) = classify(&pods);
        let names: Vec<&str> = evict.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web", "bare"]);
        let skipped: Vec<(&str, Skip)> = skip.iter().map(|(p, s)| (p.name.as_str(), *s)).collect();
        assert_eq!(
            skipped,
            [
                ("agent", Skip::DaemonSet),
                ("etcd", Skip::Mirror),
                ("job", Skip::Finished),
                ("crashed", Skip::Finished)
            ]
        );
    }

    #[test]
    fn next_table() {
        let web = pod("web", "ReplicaSet", false, "Running");
        let db = pod("db", "StatefulSet", false, "Running");
        let refused: BTreeMap<String, String> = [(
            "default/db".to_string(),
            "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
        )]
        .into();
        let t = [
            (vec![], 99_999, 0, Next::Done),
            (vec![&web], 0, 0, Next::Again { retry_ms: 500 }),
            (vec![&web], 1000, 3, Next::Again { retry_ms: 4000 }),
            (vec![&web], 1000, 30, Next::Again { retry_ms: 8000 }),
            // Never sleep past the timeout.
            (vec![&web], 9_800, 5, Next::Again { retry_ms: 200 }),
            (
                vec![&web, &db],
                10_000,
                7,
                Next::GiveUp {
                    blocking: vec![
                        "default/web: still terminating".into(),
                        "default/db: eviction refused: Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    ],
                },
            ),
        ];
        for (remaining, elapsed, round, want) in t {
            assert_eq!(next(&remaining, &refused, elapsed, 10_000, round), want);
        }
    }
}
