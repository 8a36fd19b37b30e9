//! Reboot coordination against the TEST DOUBLES of tests/common/doubles.rs
//! (no kube-apiserver can run here): real `keelson coordinate` processes,
//! racing for slots over HTTP, draining through the Eviction API.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::doubles::{FleetLockDouble, KubeDouble};
use serde_json::json;

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

/// A node simulated in `dir`: its config fragment, state file, identity.
struct SimNode {
    name: String,
    dir: PathBuf,
}

impl SimNode {
    fn new(root: &Path, name: &str, fragment: &str) -> SimNode {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("config.d")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("config.d/50-coordination.toml"), fragment).unwrap();
        std::fs::write(dir.join("etc/hostname"), format!("{name}\n")).unwrap();
        let mid = format!(
            "{:032x}",
            u128::from_str_radix(&hex_of(name), 16).unwrap_or(7) ^ 0x5a5a
        );
        std::fs::write(dir.join("etc/machine-id"), format!("{mid}\n")).unwrap();
        SimNode {
            name: name.into(),
            dir,
        }
    }

    fn cmd(&self, verb: &[&str]) -> Command {
        let mut c = keelson();
        c.arg("coordinate").args(verb);
        c.arg("--config-dir").arg(self.dir.join("config.d"));
        c.arg("--state").arg(self.dir.join("state.json"));
        c.arg("--identity-root").arg(&self.dir);
        c
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state.json")).unwrap())
            .unwrap()
    }
}

fn hex_of(s: &str) -> String {
    s.bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(30)
        .collect()
}

/// Run `script` (with {lock} and {unlock} standing for the node's
/// `keelson coordinate` command lines) for every node at once; each must
/// succeed. Returns their outputs.
fn run_cycles(nodes: &[SimNode], script: &str) -> Vec<String> {
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| {
            let script = script
                .replace("{lock}", &format!("{:?}", n.cmd(&["lock", "--wait"])))
                .replace("{unlock}", &format!("{:?}", n.cmd(&["unlock"])));
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    handles
        .into_iter()
        .zip(nodes)
        .map(|(h, n)| {
            let o = h.wait_with_output().unwrap();
            assert!(o.status.success(), "{}: {}", n.name, text(&o));
            text(&o)
        })
        .collect()
}

/// The Kubernetes API double and a kubeconfig for it in `dir`.
fn kube_double(dir: &Path) -> (KubeDouble, PathBuf) {
    let api = KubeDouble::start("127.0.0.1:0");
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, api.kubeconfig("127.0.0.1")).unwrap();
    (api, kc)
}

fn kube_fragment(kubeconfig: &Path, name: &str, max: u32, extra: &str) -> String {
    format!(
        "[updates]\ncoordination = \"kubernetes\"\ngroup = \"workers\"\nmax_unavailable = {max}\nretry_seconds = 1\n{extra}\n[updates.kubernetes]\nkubeconfig = \"{}\"\nnamespace = \"keelson-system\"\nnode_name = \"{name}\"\n",
        kubeconfig.display()
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// 20 nodes, 3 slots: every node takes a slot, is cordoned and drained,
/// "reboots" (a pause), gives the slot back; never more than 3 at once.
#[test]
fn twenty_nodes_three_slots_kubernetes() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    let mut nodes = Vec::new();
    {
        let mut st = api.state.lock().unwrap();
        for i in 0..20 {
            let n = format!("node-{i:02}");
            st.add_node(&n, false);
            st.add_pod(
                "default",
                &format!("web-{i}"),
                &n,
                "ReplicaSet",
                json!({"app": "web"}),
                false,
            );
            st.add_pod(
                "kube-system",
                &format!("proxy-{i}"),
                &n,
                "DaemonSet",
                json!({}),
                false,
            );
            if i == 0 {
                st.add_pod("kube-system", "etcd-node-00", &n, "", json!({}), true);
            }
            nodes.push(SimNode::new(d.path(), &n, &kube_fragment(&kc, &n, 3, "")));
        }
    }
    // The simulated reboot: 0.5 s with the slot held and the node drained.
    let outs = run_cycles(&nodes, "{lock} && echo REBOOTED && sleep 0.5 && {unlock}");
    for (out, n) in outs.iter().zip(&nodes) {
        assert!(out.contains("REBOOTED"), "{}: {out}", n.name);
    }
    let st = api.state.lock().unwrap();
    eprintln!(
        "most holders at once: {}; CAS conflicts: {}",
        st.max_holders, st.conflicts
    );
    assert!(
        st.max_holders <= 3,
        "more than 3 slots held at once: {}",
        st.max_holders
    );
    assert!(
        st.max_holders >= 2,
        "the slots were not used in parallel: {}",
        st.max_holders
    );
    for i in 0..3 {
        let lease = format!("keelson-workers-{i}");
        assert_eq!(st.holder_of(&lease), None, "{lease} still held");
    }
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            st.log.contains(&format!("cordon {}", n.name)),
            "{} never cordoned",
            n.name
        );
        assert!(
            st.log.contains(&format!("uncordon {}", n.name)),
            "{} left cordoned",
            n.name
        );
        assert!(
            st.log.contains(&format!("evict default/web-{i}")),
            "web-{i} not evicted"
        );
        assert!(
            !st.log
                .iter()
                .any(|l| l == &format!("evict kube-system/proxy-{i}")),
            "DaemonSet pod evicted"
        );
        assert_eq!(st.node(&n.name)["spec"]["unschedulable"], false);
        assert_eq!(
            st.annotation(&n.name, "keelson.dev/phase").as_deref(),
            Some("idle")
        );
        assert_eq!(n.state()["coordination"]["holding"], false);
    }
    assert!(
        !st.log.iter().any(|l| l.contains("etcd-node-00")),
        "mirror pod evicted"
    );
}

/// Two nodes race for the only slot: exactly one wins, the loser names it.
#[test]
fn race_for_the_last_slot() {
    for round in 0..5 {
        let d = tempfile::tempdir().unwrap();
        let (api, kc) = kube_double(d.path());
        let nodes: Vec<SimNode> = ["a", "b"]
            .iter()
            .map(|n| {
                api.state.lock().unwrap().add_node(n, false);
                SimNode::new(d.path(), n, &kube_fragment(&kc, n, 1, ""))
            })
            .collect();
        let hs: Vec<_> = nodes
            .iter()
            .map(|n| {
                n.cmd(&["lock"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = hs
            .into_iter()
            .map(|h| h.wait_with_output().unwrap())
            .collect();
        let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?} {}",
            outs.iter().map(text).collect::<String>()
        );
        let winner = if won[0] { "a" } else { "b" };
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        assert!(
            text(loser).contains(&format!("held by {winner}")),
            "{}",
            text(loser)
        );
        assert_eq!(
            api.state
                .lock()
                .unwrap()
                .holder_of("keelson-workers-0")
                .as_deref(),
            Some(winner)
        );
    }
}

/// A slot whose holder stopped renewing past the expiry is taken over; a
/// live one is not. An operator's cordon survives keelson's lock/unlock.
#[test]
fn takeover_of_a_dead_holder_and_operator_cordon() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    let lease = |holder: &str, renewed: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "keelson-workers-0", "namespace": "keelson-system", "resourceVersion": "1"},
               "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 3600}})
    };
    let n = SimNode::new(
        d.path(),
        "c",
        &kube_fragment(&kc, "c", 1, "slot_expiry_seconds = 3600"),
    );
    {
        let mut st = api.state.lock().unwrap();
        st.add_node("c", true);
        let now = jiff::Timestamp::now();
        st.leases.insert(
            ("keelson-system".into(), "keelson-workers-0".into()),
            lease("alive", &now.to_string()),
        );
    }
    let o = n.cmd(&["lock"]).output().unwrap();
    assert!(
        !o.status.success() && text(&o).contains("held by alive"),
        "{}",
        text(&o)
    );
    {
        let mut st = api.state.lock().unwrap();
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
        st.leases.insert(
            ("keelson-system".into(), "keelson-workers-0".into()),
            lease("dead", &old.to_string()),
        );
    }
    let o = n.cmd(&["lock"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = n.cmd(&["unlock"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let st = api.state.lock().unwrap();
    assert!(
        st.log
            .contains(&"lease keelson-workers-0 holder=c".to_string()),
        "{:?}",
        st.log
    );
    assert_eq!(st.holder_of("keelson-workers-0"), None);
    assert_eq!(
        st.node("c")["spec"]["unschedulable"],
        true,
        "the operator's cordon was undone"
    );
    assert!(!st.log.iter().any(|l| l.starts_with("uncordon")));
}

/// A PodDisruptionBudget blocks the drain past its timeout: the node is
/// uncordoned, the slot released, no reboot, and the Node says which pod.
#[test]
fn drain_blocked_by_a_pdb_gives_up() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    {
        let mut st = api.state.lock().unwrap();
        st.add_node("db-node", false);
        st.add_guarded_pod("db-node");
        st.add_pod(
            "prod",
            "web-0",
            "db-node",
            "ReplicaSet",
            json!({"app": "web"}),
            false,
        );
    }
    let n = SimNode::new(
        d.path(),
        "db-node",
        &kube_fragment(&kc, "db-node", 1, "drain_timeout_seconds = 3"),
    );
    let t = std::time::Instant::now();
    let o = n.cmd(&["lock"]).output().unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("drain gave up, not rebooting") && out.contains("prod/db-0: eviction refused"),
        "{out}"
    );
    assert!(out.contains("disruption budget"), "{out}");
    assert!(t.elapsed().as_secs() >= 3, "gave up before the timeout");
    let st = api.state.lock().unwrap();
    assert!(
        st.log.contains(&"evict prod/web-0".to_string()),
        "{:?}",
        st.log
    );
    assert!(
        st.log.iter().filter(|l| *l == "refuse prod/db-0").count() >= 2,
        "429 not retried: {:?}",
        st.log
    );
    assert!(
        st.log.contains(&"uncordon db-node".to_string()),
        "{:?}",
        st.log
    );
    assert_eq!(st.holder_of("keelson-workers-0"), None, "slot not released");
    assert_eq!(
        st.annotation("db-node", "keelson.dev/phase").as_deref(),
        Some("staged")
    );
    let err = st.annotation("db-node", "keelson.dev/last-error").unwrap();
    assert!(err.contains("prod/db-0"), "{err}");
    assert_eq!(n.state()["coordination"]["phase"], "staged");
}

/// FleetLock: 20 nodes, 3 slots on a server with airlock's semantics.
#[test]
fn twenty_nodes_three_slots_fleetlock() {
    let d = tempfile::tempdir().unwrap();
    let fl = FleetLockDouble::start("127.0.0.1:0", 3);
    let frag = format!(
        "[updates]\ncoordination = \"fleetlock\"\nretry_seconds = 1\n[updates.fleetlock]\nurl = \"http://127.0.0.1:{}\"\ngroup = \"workers\"\n",
        fl.server.port
    );
    let nodes: Vec<SimNode> = (0..20)
        .map(|i| SimNode::new(d.path(), &format!("f{i:02}"), &frag))
        .collect();
    // Twice each: pre-reboot is recursive, steady-state idempotent.
    run_cycles(
        &nodes,
        "{lock} && {lock} && sleep 0.5 && {unlock} && {unlock}",
    );
    let st = fl.state.lock().unwrap();
    eprintln!("FleetLock: most holders at once {}", st.max_holders);
    assert!(
        st.max_holders <= 3 && st.max_holders >= 2,
        "{}",
        st.max_holders
    );
    assert!(
        st.holders.values().all(|h| h.is_empty()),
        "{:?}",
        st.holders
    );
    let ids: std::collections::BTreeSet<&str> = st
        .log
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ids.len(), 20, "one id per node");
}

/// The shipped RBAC manifests are valid k8s-openapi objects and grant the
/// agent exactly the calls the Kubernetes backend makes.
#[test]
fn rbac_manifests_grant_what_the_agent_calls() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/keelson-agent-rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let rules =
        |rules: &Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>| -> Vec<(String, String)> {
            let mut out = Vec::new();
            for r in rules.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        out.push((res.clone(), v.clone()));
                    }
                }
            }
            out.sort();
            out
        };
    let cr: ClusterRole = serde_json::from_value(docs[2].clone()).unwrap();
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules(&cr.rules),
        pairs(&[
            ("nodes", "get"),
            ("nodes", "patch"),
            ("pods", "list"),
            ("pods/eviction", "create")
        ])
    );
    let role: Role = serde_json::from_value(docs[4].clone()).unwrap();
    assert_eq!(
        rules(&role.rules),
        pairs(&[
            ("leases", "create"),
            ("leases", "get"),
            ("leases", "update")
        ])
    );
    let crb: ClusterRoleBinding = serde_json::from_value(docs[3].clone()).unwrap();
    let rb: RoleBinding = serde_json::from_value(docs[5].clone()).unwrap();
    for (role_ref, subjects) in [(&crb.role_ref, &crb.subjects), (&rb.role_ref, &rb.subjects)] {
        let s = &subjects.as_ref().unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "keelson-agent", Some("keelson-system"))
        );
        assert!(role_ref.name.starts_with("keelson-agent"));
    }
    // The Role's namespace is the backend's default namespace.
    let defaults = keelson::node::coord::policy::Kubernetes::default();
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(defaults.namespace.as_str())
    );
}

/// The agent is a oneshot that may be killed at any point: SIGKILL in the
/// middle of a drain leaves the slot held and the node cordoned, as the
/// state file says; the next run holds the same slot (recursive) and
/// finishes; unlock then leaves nothing behind.
#[test]
fn killed_mid_drain_then_resumed() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    {
        let mut st = api.state.lock().unwrap();
        st.add_node("k", false);
        st.add_guarded_pod("k");
    }
    let n = SimNode::new(
        d.path(),
        "k",
        &kube_fragment(&kc, "k", 2, "drain_timeout_seconds = 120"),
    );
    let mut child = n
        .cmd(&["lock"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !api
        .state
        .lock()
        .unwrap()
        .log
        .iter()
        .any(|l| l == "refuse prod/db-0")
    {
        assert!(
            start.elapsed().as_secs() < 30,
            "the drain never reached the PDB"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    {
        let st = api.state.lock().unwrap();
        assert_eq!(st.holder_of("keelson-workers-0").as_deref(), Some("k"));
        assert_eq!(st.node("k")["spec"]["unschedulable"], true);
        assert_eq!(
            st.annotation("k", "keelson.dev/phase").as_deref(),
            Some("draining")
        );
    }
    assert_eq!(n.state()["coordination"]["holding"], true);
    // The budget allows it now; the resumed run keeps slot 0, takes no other.
    api.state.lock().unwrap().pdbs.clear();
    let o = n.cmd(&["lock"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = n.cmd(&["unlock"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let st = api.state.lock().unwrap();
    assert_eq!(st.holder_of("keelson-workers-0"), None);
    assert!(
        !st.leases
            .keys()
            .any(|(_, name)| name == "keelson-workers-1"),
        "a second slot was taken: {:?}",
        st.log
    );
    assert_eq!(
        st.log.iter().filter(|l| *l == "cordon k").count(),
        1,
        "{:?}",
        st.log
    );
    assert!(st.log.contains(&"evict prod/db-0".to_string()));
    assert_eq!(st.node("k")["spec"]["unschedulable"], false);
    assert_eq!(n.state()["coordination"]["holding"], false);
}

/// A node name the cluster does not know: a clear error, and the slot it
/// took is given back at once (it must not block the group).
#[test]
fn unknown_node_gives_the_slot_back() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    let n = SimNode::new(d.path(), "ghost", &kube_fragment(&kc, "ghost", 1, ""));
    let o = n.cmd(&["lock"]).output().unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("draining the node") && out.contains("Node ghost does not exist"),
        "{out}"
    );
    let st = api.state.lock().unwrap();
    assert!(
        st.log
            .contains(&"lease keelson-workers-0 holder=ghost".to_string()),
        "{:?}",
        st.log
    );
    assert_eq!(st.holder_of("keelson-workers-0"), None, "{:?}", st.log);
    assert_eq!(n.state()["coordination"]["phase"], "staged");
    assert!(
        n.state()["coordination"]["last_error"]
            .as_str()
            .unwrap()
            .contains("drain failed")
    );
}

/// The double's hand-off (another node waiting for the slot takes it the
/// moment it is given back), as the VM tier uses it: the next lock waits.
#[test]
fn released_slot_taken_by_a_waiting_node() {
    let d = tempfile::tempdir().unwrap();
    let (api, kc) = kube_double(d.path());
    api.state.lock().unwrap().add_node("h", false);
    api.state.lock().unwrap().handoff_to = Some("other-node".into());
    let n = SimNode::new(d.path(), "h", &kube_fragment(&kc, "h", 1, ""));
    for verb in ["lock", "unlock"] {
        let o = n.cmd(&[verb]).output().unwrap();
        assert!(o.status.success(), "{verb}: {}", text(&o));
    }
    let o = n.cmd(&["lock"]).output().unwrap();
    assert!(
        !o.status.success() && text(&o).contains("held by other-node"),
        "{}",
        text(&o)
    );
    assert_eq!(n.state()["coordination"]["phase"], "waiting-for-slot");
    let st = api.state.lock().unwrap();
    assert_eq!(
        st.holder_of("keelson-workers-0").as_deref(),
        Some("other-node")
    );
    assert_eq!(
        st.annotation("h", "keelson.dev/phase").as_deref(),
        Some("waiting-for-slot")
    );
    drop(st);
    // Handed back after a while: the waiting node gets it.
    api.state.lock().unwrap().handoff_to = Some("brief-node".into());
    api.state.lock().unwrap().handoff_for = Some(std::time::Duration::from_secs(1));
    api.state.lock().unwrap().leases.clear();
    for verb in ["lock", "unlock"] {
        let o = n.cmd(&[verb]).output().unwrap();
        assert!(o.status.success(), "{verb}: {}", text(&o));
    }
    // Not on a timer: only after a node has been seen waiting.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = n.cmd(&["lock"]).output().unwrap();
    assert!(
        !o.status.success() && text(&o).contains("held by brief-node"),
        "{}",
        text(&o)
    );
    let o = n.cmd(&["lock", "--wait"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        api.state
            .lock()
            .unwrap()
            .holder_of("keelson-workers-0")
            .as_deref(),
        Some("h")
    );
}
