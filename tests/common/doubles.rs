//! TEST DOUBLES of the servers keelson's reboot coordination talks to. No
//! kube-apiserver can run on the machines these tests run on (Debian ships
//! only kubectl), so [`KubeDouble`] implements the few endpoints keelson
//! uses with the real semantics: Lease get/create/update with
//! resourceVersion and 409 Conflict / AlreadyExists, Node get and JSON merge
//! patch, pod list by `spec.nodeName`, the Eviction subresource refusing with
//! 429 while a PodDisruptionBudget forbids it, and pods that terminate a
//! moment after their eviction. [`FleetLockDouble`] is a FleetLock server
//! with airlock's semantics (semaphore per group, recursive and idempotent).
//! Both log what they did and track the most slot holders ever seen.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&Request) -> (u16, Value) + Send + Sync>;

/// A query-string component: '+' is a space, then percent-decoding.
fn decode(s: &str) -> String {
    super::percent_decode(&s.replace('+', " "))
}

fn read_request(conn: &std::net::TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

/// A JSON-over-HTTP/1.1 server on 127.0.0.1 (QEMU guests: 10.0.2.2), one
/// request per connection.
pub struct JsonServer {
    pub port: u16,
}

impl JsonServer {
    pub fn start(addr: &str, handler: Handler) -> JsonServer {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let h = handler.clone();
                std::thread::spawn(move || {
                    let Some(req) = read_request(&conn) else {
                        return;
                    };
                    let (status, v) = h(&req);
                    let body = v.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(body.as_bytes());
                    let _ = conn.flush();
                });
            }
        });
        JsonServer { port }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// A PodDisruptionBudget: at least `min_available` pods of `namespace`
/// labelled `label` must stay running.
#[derive(Clone, Debug)]
pub struct Pdb {
    pub namespace: String,
    pub label: (String, String),
    pub min_available: usize,
}

#[derive(Default)]
pub struct KubeState {
    rv: u64,
    pub leases: BTreeMap<(String, String), Value>,
    pub nodes: BTreeMap<String, Value>,
    pub pods: BTreeMap<(String, String), Value>,
    /// When each terminating pod disappears.
    terminating: BTreeMap<(String, String), Instant>,
    pub pdbs: Vec<Pdb>,
    /// What happened, in order: "evict ns/name", "cordon n", "uncordon n",
    /// "refuse ns/name", "lease NAME holder=H", "conflict NAME".
    pub log: Vec<String>,
    pub max_holders: usize,
    pub conflicts: usize,
    /// Another node waiting for a slot: the moment a holder gives one
    /// back, this name takes it (its compare-and-swap arrives first).
    pub handoff_to: Option<String>,
    /// That node gives the slot back this long after a node has reported
    /// `waiting-for-slot` (None: it keeps it).
    pub handoff_for: Option<Duration>,
    handed: Option<(String, String)>,
    handback: Option<((String, String), Instant)>,
}

impl KubeState {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn purge(&mut self) {
        let now = Instant::now();
        if let Some((key, _)) = self.handback.take_if(|(_, at)| *at <= now) {
            let rv = self.next_rv();
            if let Some(l) = self.leases.get_mut(&key) {
                l["spec"]["holderIdentity"] = Value::Null;
                l["spec"]["renewTime"] = Value::Null;
                l["metadata"]["resourceVersion"] = json!(rv);
                self.log.push(format!("lease {} holder=", key.1));
            }
        }
        let gone: Vec<_> = self
            .terminating
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.terminating.remove(&k);
            self.pods.remove(&k);
        }
    }

    fn holders(&self) -> usize {
        self.leases
            .values()
            .filter(|l| {
                l["spec"]["holderIdentity"]
                    .as_str()
                    .is_some_and(|h| !h.is_empty())
            })
            .count()
    }

    pub fn holder_of(&self, lease: &str) -> Option<String> {
        self.leases
            .iter()
            .find(|((_, n), _)| n == lease)
            .and_then(|(_, l)| l["spec"]["holderIdentity"].as_str().map(String::from))
    }

    pub fn add_node(&mut self, name: &str, unschedulable: bool) {
        let rv = self.next_rv();
        self.nodes.insert(
            name.into(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "resourceVersion": rv, "labels": {"kubernetes.io/hostname": name}},
                   "spec": {"unschedulable": unschedulable}}),
        );
    }

    /// A running pod on `node`; `owner` is the controller kind ("" for none).
    pub fn add_pod(
        &mut self,
        ns: &str,
        name: &str,
        node: &str,
        owner: &str,
        labels: Value,
        mirror: bool,
    ) {
        let rv = self.next_rv();
        let mut meta =
            json!({"name": name, "namespace": ns, "resourceVersion": rv, "labels": labels});
        if !owner.is_empty() {
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": owner, "name": format!("{name}-owner"), "uid": "u", "controller": true}]);
        }
        if mirror {
            meta["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        }
        self.pods.insert(
            (ns.into(), name.into()),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Running"}}),
        );
    }

    /// A database pod `prod/db-0` on `node` whose PodDisruptionBudget
    /// (minAvailable 1 of one pod) refuses every eviction.
    pub fn add_guarded_pod(&mut self, node: &str) {
        self.add_pod(
            "prod",
            "db-0",
            node,
            "StatefulSet",
            json!({"app": "db"}),
            false,
        );
        self.pdbs.push(Pdb {
            namespace: "prod".into(),
            label: ("app".into(), "db".into()),
            min_available: 1,
        });
    }

    pub fn node(&self, name: &str) -> Value {
        self.nodes.get(name).cloned().unwrap_or(Value::Null)
    }

    pub fn annotation(&self, node: &str, key: &str) -> Option<String> {
        self.nodes.get(node)?["metadata"]["annotations"][key]
            .as_str()
            .map(String::from)
    }
}

/// The Kubernetes API TEST DOUBLE.
pub struct KubeDouble {
    pub state: Arc<Mutex<KubeState>>,
    pub server: JsonServer,
    pub token: String,
}

impl KubeDouble {
    pub fn start(addr: &str) -> KubeDouble {
        let state = Arc::new(Mutex::new(KubeState::default()));
        let token = "keelson-test-token".to_string();
        let (s, t) = (state.clone(), token.clone());
        let server = JsonServer::start(
            addr,
            Arc::new(move |r: &Request| {
                if r.headers.get("authorization").map(String::as_str)
                    != Some(&format!("Bearer {t}"))
                {
                    return status(401, "Unauthorized", "Unauthorized");
                }
                let mut st = s.lock().unwrap();
                st.purge();
                route(&mut st, r)
            }),
        );
        KubeDouble {
            state,
            server,
            token,
        }
    }

    /// A kubeconfig for the double at `host` (10.0.2.2 from a QEMU guest).
    pub fn kubeconfig(&self, host: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{host}:{}\nusers:\n- name: agent\n  user:\n    token: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: agent\ncurrent-context: double\n",
            self.server.port, self.token
        )
    }
}

fn not_found(what: &str, name: &str) -> (u16, Value) {
    status(404, "NotFound", &format!("{what} \"{name}\" not found"))
}

fn route(st: &mut KubeState, r: &Request) -> (u16, Value) {
    let seg: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let m = r.method.as_str();
    if let [
        "apis",
        "coordination.k8s.io",
        "v1",
        "namespaces",
        ns,
        "leases",
        rest @ ..,
    ] = seg.as_slice()
    {
        return match (m, rest) {
            ("GET", [name]) => match st.leases.get(&(ns.to_string(), name.to_string())) {
                Some(l) => (200, l.clone()),
                None => not_found("leases.coordination.k8s.io", name),
            },
            ("POST", []) => lease_create(st, ns, r),
            ("PUT", [name]) => lease_update(st, ns, name, r),
            _ => not_found("route", &r.path),
        };
    }
    match (m, seg.as_slice()) {
        ("GET", ["api", "v1", "nodes", name]) => match st.nodes.get(*name) {
            Some(n) => (200, n.clone()),
            None => not_found("nodes", name),
        },
        ("PATCH", ["api", "v1", "nodes", name]) => node_patch(st, name, r),
        ("GET", ["api", "v1", "pods"]) => {
            let sel = r.query.get("fieldSelector").cloned().unwrap_or_default();
            let node = sel.strip_prefix("spec.nodeName=").unwrap_or("");
            let items: Vec<Value> = st
                .pods
                .values()
                .filter(|p| sel.is_empty() || p["spec"]["nodeName"] == node)
                .cloned()
                .collect();
            let rv = st.rv.to_string();
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => evict(st, ns, name),
        _ => not_found("route", &r.path),
    }
}

fn lease_create(st: &mut KubeState, ns: &str, r: &Request) -> (u16, Value) {
    let mut l: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let name = l["metadata"]["name"].as_str().unwrap_or("").to_string();
    if st.leases.contains_key(&(ns.into(), name.clone())) {
        st.conflicts += 1;
        st.log.push(format!("conflict {name}"));
        return status(
            409,
            "AlreadyExists",
            &format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    l["metadata"]["resourceVersion"] = json!(st.next_rv());
    l["metadata"]["namespace"] = json!(ns);
    l["apiVersion"] = json!("coordination.k8s.io/v1");
    l["kind"] = json!("Lease");
    st.log.push(format!(
        "lease {name} holder={}",
        l["spec"]["holderIdentity"].as_str().unwrap_or("")
    ));
    st.leases.insert((ns.into(), name), l.clone());
    st.max_holders = st.max_holders.max(st.holders());
    (201, l)
}

fn lease_update(st: &mut KubeState, ns: &str, name: &str, r: &Request) -> (u16, Value) {
    let mut l: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let key = (ns.to_string(), name.to_string());
    let Some(cur) = st.leases.get(&key).cloned() else {
        return not_found("leases.coordination.k8s.io", name);
    };
    let sent = l["metadata"]["resourceVersion"].as_str().map(String::from);
    if sent.is_some() && sent.as_deref() != cur["metadata"]["resourceVersion"].as_str() {
        st.conflicts += 1;
        st.log.push(format!("conflict {name}"));
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    l["metadata"]["resourceVersion"] = json!(st.next_rv());
    let holder = l["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_string();
    st.log.push(format!("lease {name} holder={holder}"));
    st.leases.insert(key.clone(), l.clone());
    st.max_holders = st.max_holders.max(st.holders());
    let released = holder.is_empty()
        && cur["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty());
    if let Some(other) = st.handoff_to.take_if(|_| released) {
        let mut taken = l.clone();
        taken["spec"]["holderIdentity"] = json!(other);
        taken["spec"]["renewTime"] = json!(jiff::Timestamp::now().to_string());
        taken["metadata"]["resourceVersion"] = json!(st.next_rv());
        st.log.push(format!("lease {name} holder={other}"));
        st.leases.insert(key.clone(), taken);
        st.handed = Some(key);
    }
    (200, l)
}

fn node_patch(st: &mut KubeState, name: &str, r: &Request) -> (u16, Value) {
    if r.headers.get("content-type").map(String::as_str) != Some("application/merge-patch+json") {
        return status(
            415,
            "UnsupportedMediaType",
            "the double takes merge patches only",
        );
    }
    let patch: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let rv = st.next_rv();
    let Some(n) = st.nodes.get_mut(name) else {
        return not_found("nodes", name);
    };
    let before = n["spec"]["unschedulable"].as_bool().unwrap_or(false);
    merge_patch(n, &patch);
    n["metadata"]["resourceVersion"] = json!(rv);
    let after = n["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let n = n.clone();
    if before != after {
        st.log.push(format!(
            "{} {name}",
            if after { "cordon" } else { "uncordon" }
        ));
    }
    if let Some(p) = patch["metadata"]["annotations"]["keelson.dev/phase"].as_str() {
        st.log.push(format!("phase {name} {p}"));
        if p == "waiting-for-slot"
            && let (Some(d), Some(key)) = (st.handoff_for, st.handed.take())
        {
            st.handback = Some((key, Instant::now() + d));
        }
    }
    (200, n)
}

fn evict(st: &mut KubeState, ns: &str, name: &str) -> (u16, Value) {
    let key = (ns.to_string(), name.to_string());
    let Some(pod) = st.pods.get(&key).cloned() else {
        return not_found("pods", name);
    };
    if st.terminating.contains_key(&key) {
        return (
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        );
    }
    for pdb in st.pdbs.clone() {
        let (k, v) = &pdb.label;
        let matches = |p: &Value| {
            p["metadata"]["namespace"] == pdb.namespace.as_str()
                && p["metadata"]["labels"][k] == v.as_str()
        };
        if !matches(&pod) {
            continue;
        }
        let healthy = st
            .pods
            .iter()
            .filter(|(k, p)| matches(p) && !st.terminating.contains_key(*k))
            .count();
        if healthy <= pdb.min_available {
            st.log.push(format!("refuse {ns}/{name}"));
            let mut s = status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
            s.1["details"] = json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget needs {} healthy pods and has {healthy} currently", pdb.min_available)}]});
            return s;
        }
    }
    st.log.push(format!("evict {ns}/{name}"));
    st.terminating
        .insert(key.clone(), Instant::now() + Duration::from_millis(300));
    if let Some(p) = st.pods.get_mut(&key) {
        p["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    }
    (
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// The FleetLock TEST DOUBLE: airlock's semantics — `slots` holders per
/// group, pre-reboot recursive for a holder, steady-state idempotent.
#[derive(Default)]
pub struct FleetState {
    pub holders: BTreeMap<String, BTreeSet<String>>,
    pub max_holders: usize,
    pub log: Vec<String>,
}

pub struct FleetLockDouble {
    pub state: Arc<Mutex<FleetState>>,
    pub server: JsonServer,
}

impl FleetLockDouble {
    pub fn start(addr: &str, slots: usize) -> FleetLockDouble {
        let state = Arc::new(Mutex::new(FleetState::default()));
        let s = state.clone();
        let server = JsonServer::start(
            addr,
            Arc::new(move |r: &Request| {
                let err = |code: u16, kind: &str, value: &str| {
                    (code, json!({"kind": kind, "value": value}))
                };
                if r.headers.get("fleet-lock-protocol").map(String::as_str) != Some("true") {
                    return err(400, "missing_header", "fleet-lock-protocol header missing");
                }
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let (Some(id), Some(group)) = (
                    v["client_params"]["id"].as_str(),
                    v["client_params"]["group"].as_str(),
                ) else {
                    return err(400, "bad_body", "client_params.id and group required");
                };
                if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return err(400, "bad_id", "id is not a 128-bit hex id");
                }
                let mut st = s.lock().unwrap();
                let h = st.holders.entry(group.to_string()).or_default();
                let out = match (r.method.as_str(), r.path.as_str()) {
                    ("POST", "/v1/pre-reboot") if h.contains(id) => (200, json!({})),
                    ("POST", "/v1/pre-reboot") if h.len() < slots => {
                        h.insert(id.to_string());
                        (200, json!({}))
                    }
                    ("POST", "/v1/pre-reboot") => {
                        err(409, "failed_lock", "all reboot slots are taken")
                    }
                    ("POST", "/v1/steady-state") => {
                        h.remove(id);
                        (200, json!({}))
                    }
                    _ => err(404, "not_found", "no such endpoint"),
                };
                let n = h.len();
                st.max_holders = st.max_holders.max(n);
                st.log.push(format!("{} {id} -> {}", r.path, out.0));
                out
            }),
        );
        FleetLockDouble { state, server }
    }
}
