//! VM tier, A/B: a node built from v1 upgrades to v2 over HTTP, rolls back
//! to v1, upgrades to v2 again, then to a v3 whose vendor health check fails;
//! GRUB's boot counter brings it back to v2 by itself, v3 is blocked and the
//! agent does not stage it again; finally a power cut right after staging an
//! update still boots to multi-user.
//!
//! The scenario runs inside the guest (tests/fixtures/ab/step.sh, fetched
//! from the host's HTTP server on every boot); the host relaunches QEMU on
//! the same disk after every guest reboot (-no-reboot) and publishes v3 at
//! the right moment. v2 and v3 are v1's tree plus a few files, committed
//! with `ostree commit --tree=ref= --tree=dir=`; every version reaches the
//! node through `keelson publish` (signed commit and summary, static
//! deltas), served by the tests' logging HTTP server: the v1 → v2 upgrade
//! must come through the delta, with no content object fetched one by one.
//!
//! The tree carries a kubelet test double (tests/fixtures/kubelet-double.sh,
//! NOT a kubelet: it only serves /healthz), packaged as `kubelet` in a local
//! apt repository added with `deb.extra-sources` (the way
//! treefiles/examples/k8s-node-kubelet.json adds the upstream one), so the
//! shipped kubelet.service replaces the package's unit and runs it, and the
//! health check's kubelet probe is exercised.
//!
//! Every update is GPG-signed and the image's remote verifies signatures
//! (commits and summary); at the end an unsigned commit is published
//! unsigned and the node must refuse it.
//!
//! Needs root, the Debian mirror, QEMU, OVMF, gpg and python3 (HTTP server).

use std::path::Path;
use std::process::Command;

mod common;
use common::{Hit, LoggingServer, cache, free_port, manifest, run};

fn keelson() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keelson"));
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// A commit of `reference`'s tree plus the files in `overlay`, signed with
/// `gpg` (key, home) when given.
fn derive(
    repo: &Path,
    reference: &str,
    overlay: &Path,
    version: &str,
    gpg: Option<(&str, &Path)>,
) -> String {
    let mut cmd = Command::new("ostree");
    cmd.arg(format!("--repo={}", repo.display()));
    cmd.args(["commit", "--no-bindings", "-b", reference]);
    if let Some((key, home)) = gpg {
        cmd.arg(format!("--gpg-sign={key}"))
            .arg(format!("--gpg-homedir={}", home.display()));
    }
    run(cmd
        .arg(format!("--tree=ref={reference}"))
        .arg(format!("--tree=dir={}", overlay.display()))
        .arg(format!("--add-metadata-string=version={version}"))
        .arg(format!("--subject={reference} {version}")))
    .trim()
    .to_string()
}

/// The layer v1.yaml names in `ostree-layers`: a commit already in the
/// repository, as rpm-ostree requires.
fn commit_layer(repo: &Path, tmp: &Path) {
    let tree = tmp.join("layer");
    std::fs::create_dir_all(tree.join("usr/share/keelson-vmtest")).unwrap();
    std::fs::write(
        tree.join("usr/share/keelson-vmtest/layer"),
        "from a layer\n",
    )
    .unwrap();
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["init", "--mode=archive"]));
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["commit", "--no-bindings", "--owner-uid=0", "--owner-gid=0"])
        .args(["-b", "keelson-test/layer"])
        .arg(format!("--tree=dir={}", tree.display())));
}

/// What v1.yaml's rpm-ostree fields must have made of the tree.
fn check_rpm_ostree_fields(repo: &Path, reference: &str) {
    let ostree = |args: &[&str]| {
        run(Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(args))
    };
    let cat = |path: &str| ostree(&["cat", reference, path]);
    // conditional-include: the true condition's file is there, the false one's not
    assert_eq!(
        cat("/usr/share/keelson-vmtest/conditional"),
        cat("/usr/share/keelson-vmtest/release")
    );
    let listing = ostree(&["ls", reference, "/usr/share/keelson-vmtest"]);
    assert!(!listing.contains("never"), "{listing}");
    // ostree-layers: the layer's file
    assert_eq!(cat("/usr/share/keelson-vmtest/layer"), "from a layer\n");
    // check-passwd/check-groups type file: the ids come from the files
    let passwd = cat("/usr/etc/passwd");
    assert!(passwd.contains("\nmessagebus:x:990:990:"), "{passwd}");
    assert!(cat("/usr/etc/group").contains("\nmessagebus:x:990:"));
    // etc-group-members: adm keeps its member in /etc/group, not in sysusers.d
    let group = cat("/usr/etc/group");
    assert!(group.lines().any(|l| l == "adm:x:4:nobody"), "{group}");
    let sysusers = cat("/usr/lib/sysusers.d/keelson-compose.conf");
    assert!(
        sysusers.contains("\ng adm 4\n") && !sysusers.contains(" adm\n"),
        "{sysusers}"
    );
    // install-langs: coreutils' translations only for English
    let locales = ostree(&["ls", "-R", reference, "/usr/share/locale"]);
    let mo: Vec<&str> = locales
        .lines()
        .filter(|l| l.ends_with("coreutils.mo"))
        .collect();
    assert!(
        mo.iter().all(|l| l.contains("/usr/share/locale/en")),
        "translations outside install-langs: {mo:?}"
    );
    assert!(
        !locales.contains("/usr/share/locale/de/LC_MESSAGES/"),
        "{locales}"
    );
}

/// `keelson publish` of `commit` on `reference` into `www`, signed with `gpg`.
fn publish(repo: &Path, reference: &str, commit: &str, www: &Path, gpg: Option<(&str, &Path)>) {
    let mut cmd = keelson();
    cmd.arg("publish")
        .arg("--from")
        .arg(repo)
        .arg("--to")
        .arg(www)
        .args(["--ref", reference, "--commit", commit.trim()]);
    if let Some((key, home)) = gpg {
        cmd.args(["--gpg-sign", key, "--gpg-homedir"]).arg(home);
    }
    run(&mut cmd);
}

/// The JSON printed after `AB-STATUS-JSON` in the boot whose marker is `boot`.
fn status_in<'a>(logs: &'a [String], boot: &str) -> &'a str {
    let log = logs
        .iter()
        .find(|l| l.contains(boot))
        .unwrap_or_else(|| panic!("no boot with {boot:?}"));
    let line = log[log.find(boot).unwrap()..]
        .lines()
        .find(|l| l.contains("AB-STATUS-JSON"))
        .unwrap();
    line.split_once("AB-STATUS-JSON ").unwrap().1.trim()
}

#[test]
#[ignore = "VM tier: compose, images and QEMU boots; run by .ci/run"]
fn upgrade_rollback_failed_upgrade_and_power_cut() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let reference = format!("keelson/12/{}/ab", std::env::consts::ARCH);
    let home = d.path().join("gnupg");
    let (key, pubkey) = common::gpg_key(&home);
    let gpg = Some((key.as_str(), home.as_path()));
    // v1: the A/B fixture plus the kubelet test double from a local apt
    // repository, through deb.extra-sources as the example treefile does.
    // The commit is signed through the treefile's `gpg-key` (rpm-ostree's
    // field); the node below verifies every update against the key.
    let v1_treefile = d.path().join("v1-kubelet.json");
    let mut v1: serde_json::Value = serde_json::from_str(&common::kubelet_double_repo(
        &d.path().join("kubelet-double"),
        &manifest().join("tests/fixtures/ab/v1.yaml"),
    ))
    .unwrap();
    v1["gpg-key"] = key.as_str().into();
    std::fs::write(&v1_treefile, v1.to_string()).unwrap();
    commit_layer(&repo, d.path());
    run(keelson()
        .arg("compose")
        .arg(&v1_treefile)
        .arg("--repo")
        .arg(&repo)
        .arg("--cachedir")
        .arg(cache())
        .arg("--gpg-homedir")
        .arg(&home));
    check_rpm_ostree_fields(&repo, &reference);
    let shown = run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["show", &reference, "--gpg-homedir"])
        .arg(&home));
    assert!(
        shown.contains("Found 1 signature"),
        "gpg-key signs: {shown}"
    );

    // v2 and v3: v1 plus a release file; v3 also a failing health check.
    let o2 = d.path().join("overlay2");
    std::fs::create_dir_all(o2.join("usr/share/keelson-vmtest")).unwrap();
    std::fs::write(o2.join("usr/share/keelson-vmtest/release"), "2\n").unwrap();
    let o3 = d.path().join("overlay3");
    std::fs::create_dir_all(o3.join("usr/share/keelson-vmtest")).unwrap();
    std::fs::create_dir_all(o3.join("usr/lib/keelson/health.d")).unwrap();
    std::fs::write(o3.join("usr/share/keelson-vmtest/release"), "3\n").unwrap();
    std::fs::copy(
        manifest().join("tests/fixtures/ab/50-vmtest-fail"),
        o3.join("usr/lib/keelson/health.d/50-vmtest-fail"),
    )
    .unwrap();

    // The image is built from v1, before v2 exists.
    let port = free_port();
    let image = d.path().join("ab.qcow2");
    run(keelson()
        .args([
            "image",
            "--ref",
            &reference,
            "--remote-url",
            &format!("http://10.0.2.2:{port}/repo"),
        ])
        .arg("--repo")
        .arg(&repo)
        .arg("--gpg-keyring")
        .arg(&pubkey)
        .arg("--output")
        .arg(&image));
    let v1 = run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["rev-parse", &reference]));
    // The update stream: `keelson publish` into the directory the node's
    // remote points at (http://10.0.2.2:PORT/repo is www/repo), signed,
    // with static deltas. v3 is published only after the rollback boot.
    let www = d.path().join("www");
    publish(&repo, &reference, v1.trim(), &www, gpg);
    let v2 = derive(&repo, &reference, &o2, "12.1", gpg);
    publish(&repo, &reference, &v2, &www, gpg);
    let v3 = derive(&repo, &reference, &o3, "12.2", gpg);
    // The Kubernetes API TEST DOUBLE the node's agent coordinates through
    // (no kube-apiserver exists here): the node "ab-node" with a pod of a
    // ReplicaSet, one of a DaemonSet and a mirror pod.
    let api = common::doubles::KubeDouble::start("127.0.0.1:0");
    {
        let mut st = api.state.lock().unwrap();
        st.add_node("ab-node", false);
        st.add_pod(
            "default",
            "web-ab",
            "ab-node",
            "ReplicaSet",
            serde_json::json!({"app": "web"}),
            false,
        );
        st.add_pod(
            "kube-system",
            "proxy-ab",
            "ab-node",
            "DaemonSet",
            serde_json::json!({}),
            false,
        );
        st.add_pod(
            "kube-system",
            "static-ab",
            "ab-node",
            "",
            serde_json::json!({}),
            true,
        );
        st.handoff_to = Some("other-node".into());
        st.handoff_for = Some(std::time::Duration::from_secs(20));
    }
    let step = std::fs::read_to_string(manifest().join("tests/fixtures/ab/step.sh")).unwrap();
    let step = step.replace("@KUBECONFIG@", api.kubeconfig("10.0.2.2").trim_end());
    std::fs::write(www.join("step.sh"), step).unwrap();
    let server = LoggingServer::start_on(&www, &format!("127.0.0.1:{port}"));
    let mut hits: Vec<Vec<Hit>> = Vec::new();
    let mut logs: Vec<String> = Vec::new();
    for boot in 1..=12 {
        let log = d.path().join(format!("boot-{boot}.log"));
        // Each launch runs until the guest reboots or powers off.
        run(keelson()
            .arg("vm")
            .arg(&image)
            .args(["--firmware", "bios", "--timeout", "480", "--serial-log"])
            .arg(&log));
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        let done = text.contains("KEELSON-AB-DONE");
        hits.push(server.take());
        if text.contains("AB-BOOT release=1 phase=rollback") {
            // From now on the update server offers the broken v3.
            publish(&repo, &reference, &v3, &www, gpg);
        }
        if text.contains("AB-STAGED-THEN-POWER-CUT") {
            // Publish an unsigned commit (and summary): the node must refuse it.
            let unsigned = derive(&repo, &reference, &o2, "12.3", None);
            publish(&repo, &reference, &unsigned, &www, None);
        }
        logs.push(text);
        if done {
            break;
        }
    }
    let all = logs.join("\n");
    let summary: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("AB-") || l.contains("vmtest-fail"))
        .collect();
    let ctx = summary.join("\n");
    assert!(
        all.contains("KEELSON-AB-DONE"),
        "scenario did not finish:\n{ctx}"
    );
    assert!(!all.contains("AB-UNEXPECTED"), "{ctx}");
    // Ignition ran on the first boot only: no later boot (the upgrades,
    // the rollback, the fallback from the failed upgrade, the power cut)
    // is a first boot.
    for (i, log) in logs.iter().enumerate() {
        let cmdline = log
            .lines()
            .find(|l| l.contains("Command line:"))
            .unwrap_or_else(|| panic!("boot {}: no kernel command line on the console", i + 1));
        assert_eq!(
            cmdline.contains("ignition.firstboot"),
            i == 0,
            "boot {}: {cmdline}",
            i + 1
        );
    }

    // v1 → upgrade → v2 booted, v1 kept as rollback.
    let s = status_in(&logs, "AB-BOOT release=2 phase=to-v2");
    assert!(
        s.contains(&format!(
            "\"booted\":{{\"osname\":\"keelson\",\"commit\":\"{v2}\""
        )),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "\"rollback\":{{\"osname\":\"keelson\",\"commit\":\"{}\"",
            v1.trim()
        )),
        "{s}"
    );
    // keelson rollback --reboot from v2 boots v1.
    let s = status_in(&logs, "AB-BOOT release=1 phase=rollback");
    assert!(
        s.contains(&format!(
            "\"booted\":{{\"osname\":\"keelson\",\"commit\":\"{}\"",
            v1.trim()
        )),
        "{s}"
    );
    // v3 failed its health check on every counted attempt, then GRUB fell back.
    // Counted by the health check's own FAIL line: later boots repeat the
    // reason in `keelson status`, which must not count.
    let failed_boots = logs
        .iter()
        .filter(|l| l.contains("FAIL script /usr/lib/keelson/health.d/50-vmtest-fail"))
        .count();
    assert_eq!(failed_boots, 3, "three attempts of v3:\n{ctx}");
    let s = status_in(&logs, "AB-BOOT release=2 phase=to-v3");
    assert!(
        s.contains(&format!(
            "\"booted\":{{\"osname\":\"keelson\",\"commit\":\"{v2}\""
        )),
        "back on v2: {s}"
    );
    assert!(
        s.contains(&format!(
            "\"blocked\":[{{\"commit\":\"{v3}\",\"version\":\"12.2\""
        )),
        "v3 blocked: {s}"
    );
    assert!(
        s.contains("vmtest-fail"),
        "the reason names the failing check: {s}"
    );
    assert!(
        all.contains("AB-AGENT") && all.contains("Not re-applying"),
        "{ctx}"
    );
    assert!(all.contains("AB-NOTHING-STAGED"), "{ctx}");
    // Power cut right after staging: the next boot reaches multi-user.
    assert!(all.contains("AB-STAGED-THEN-POWER-CUT"), "{ctx}");
    assert!(all.contains("AB-AFTER-POWER-CUT"), "{ctx}");
    // An unsigned commit on the gpg-verify remote is refused.
    let unsigned = all
        .lines()
        .find(|l| l.contains("AB-UNSIGNED"))
        .unwrap_or_else(|| panic!("{ctx}"));
    assert!(
        unsigned.contains("GPG")
            && (unsigned.contains("signature") || unsigned.contains("summary.sig")),
        "{unsigned}"
    );

    check_coordination(&api, &logs, &v3, &ctx);

    // The upgrade v1 → v2 (first boot) went through the static delta: its
    // superblock and part were served, and the commit's content objects were
    // not fetched one by one again (libostree 2022.7's double download).
    let first: &[Hit] = &hits[0];
    let summary_of = |h: &[Hit]| {
        h.iter()
            .map(|x| format!("{} {} {}", x.status, x.bytes, x.path))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let delta_bytes: u64 = first
        .iter()
        .filter(|h| h.path.starts_with("/repo/deltas/") && h.status == 200)
        .map(|h| h.bytes)
        .sum();
    assert!(
        first
            .iter()
            .any(|h| h.path.ends_with("/superblock") && h.status == 200)
            && delta_bytes > 0,
        "no static delta fetched for v1 → v2:\n{}",
        summary_of(first)
    );
    // The node recorded it too (state.json, shown by `keelson status` in
    // the next boot).
    let to_v2 = logs
        .iter()
        .find(|l| l.contains("AB-BOOT release=2 phase=to-v2"))
        .unwrap();
    let line = to_v2
        .lines()
        .find(|l| l.contains("Last update download:"))
        .unwrap_or_else(|| panic!("no last download in the v2 boot's status:\n{ctx}"));
    assert!(
        line.contains(&v2[..12]) && line.contains("through a static delta"),
        "{line}"
    );
    let filez = first.iter().filter(|h| h.path.ends_with(".filez")).count();
    assert_eq!(
        filez,
        0,
        "content objects fetched besides the delta:\n{}",
        summary_of(first)
    );
    let total: u64 = first.iter().map(|h| h.bytes).sum();
    eprintln!(
        "v1 → v2 upgrade: {} requests, {total} bytes, {delta_bytes} of them the delta",
        first.len()
    );

    // The tree carries the kubelet test double: the shipped kubelet.service
    // and its drop-in run it, systemd-analyze verify accepts them, and the
    // health check reached its /healthz.
    let first = logs[0].replace('\r', "");
    let checks: Vec<&str> = first
        .lines()
        .filter(|l| l.contains("KEELSON-CHECK"))
        .collect();
    let checks_text = checks.join("\n");
    assert!(
        !checks.is_empty() && !checks_text.contains("KEELSON-CHECK FAIL"),
        "first boot's in-guest checks:\n{checks_text}"
    );
    assert!(
        checks_text.contains("ok: kubelet.service (test double) active")
            && checks_text.contains("ok: kubelet.service is keelson's, not the package's"),
        "{checks_text}"
    );
    assert!(
        first
            .lines()
            .any(|l| l.contains("KEELSON-VERIFY-UNITS") && l.contains("kubelet.service")),
        "kubelet.service not among the verified units"
    );
    assert!(
        first.contains("ok   kubelet: ok"),
        "the health check did not reach the kubelet's /healthz:\n{}",
        first
            .lines()
            .filter(|l| l.starts_with("ok  ") || l.starts_with("FAIL"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The fleet reboot of the second v1 → v2: slot, cordon, eviction, reboot,
/// health, uncordon, release — in the double's log and on the Node; then
/// the v3 update waits for the slot another node holds, takes it once that
/// node is done, and after v3's failed trial and GRUB's fallback gives it
/// back with the node marked blocked.
fn check_coordination(api: &common::doubles::KubeDouble, logs: &[String], v3: &str, ctx: &str) {
    let st = api.state.lock().unwrap();
    let log = st.log.join("\n");
    let mut from = 0;
    let mut next = |what: &str| {
        let i = st.log[from..]
            .iter()
            .position(|l| l == what)
            .unwrap_or_else(|| {
                panic!("{what:?} not in the double's log after line {from}:\n{log}\n{ctx}")
            });
        from += i + 1;
    };
    for what in [
        "lease keelson-ab-0 holder=ab-node",
        "phase ab-node draining",
        "cordon ab-node",
        "evict default/web-ab",
        "phase ab-node rebooting",
        "phase ab-node verifying",
        "uncordon ab-node",
        "lease keelson-ab-0 holder=",
        "lease keelson-ab-0 holder=other-node",
        "phase ab-node idle",
        "phase ab-node waiting-for-slot",
        "lease keelson-ab-0 holder=",
        "lease keelson-ab-0 holder=ab-node",
        "phase ab-node draining",
        "cordon ab-node",
        "phase ab-node rebooting",
        "phase ab-node verifying",
        "uncordon ab-node",
        "lease keelson-ab-0 holder=",
        "phase ab-node blocked",
    ] {
        next(what);
    }
    assert!(
        !log.contains("evict kube-system/"),
        "DaemonSet or mirror pod evicted:\n{log}"
    );
    assert_eq!(
        st.node("ab-node")["spec"]["unschedulable"],
        false,
        "left cordoned"
    );
    assert_eq!(
        st.annotation("ab-node", "keelson.dev/booted-version")
            .as_deref(),
        Some("12.1")
    );
    assert_eq!(
        st.node("ab-node")["metadata"]["labels"]["keelson.dev/phase"],
        "blocked"
    );
    let err = st
        .annotation("ab-node", "keelson.dev/last-error")
        .unwrap_or_default();
    assert!(
        err.contains(&format!("rolled back from {v3}")) && err.contains("vmtest-fail"),
        "{err}"
    );
    assert_eq!(st.holder_of("keelson-ab-0"), None, "slot left held");
    let boot = logs
        .iter()
        .find(|l| l.contains("AB-BOOT release=2 phase=again-v2"))
        .unwrap_or_else(|| panic!("no coordinated v2 boot:\n{ctx}"));
    let lines = |tag: &str| {
        boot.lines()
            .filter(|l| l.contains(tag))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let waited = lines("AB-COORD-WAIT ");
    assert!(
        waited.contains("waiting for a reboot slot (held by other-node)"),
        "{waited}"
    );
    let status = lines("AB-COORD-STATUS2 ");
    assert!(
        status.contains("Phase: waiting-for-slot") && status.contains("Slots held by: other-node"),
        "{status}"
    );
    assert!(
        boot.contains("AB-COORD-STAGED"),
        "v3 not staged while waiting"
    );
    assert!(
        lines("AB-COORD-STATUS ").contains("Phase: idle"),
        "{}",
        lines("AB-COORD-STATUS ")
    );
    assert!(
        lines("AB-COORD-AGENT2 ").contains("holding slot keelson-ab-0"),
        "{}",
        lines("AB-COORD-AGENT2 ")
    );
}
