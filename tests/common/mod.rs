//! Helpers shared by integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod doubles;

/// RFC 3986 percent-decoding (data: URLs, query strings).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The repository root.
pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Package cache shared by the tests that compose (kept across runs).
pub fn cache() -> PathBuf {
    std::env::var_os("KEELSON_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/keelson-test-cache"))
}

/// Run `cmd`, fail the test with its output unless it succeeds; stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `ostree` CLI on the repo at `repo`.
pub fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

/// A throwaway GPG signing key in `home`; returns its fingerprint and the
/// exported public key file.
pub fn gpg_key(home: &Path) -> (String, PathBuf) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let generated = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "keelson test <test@keelson.invalid>",
            "rsa2048",
            "sign",
            "never",
        ])
        .output()
        .expect("gpg");
    assert!(
        generated.status.success(),
        "gpg key generation: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let keys = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--list-keys", "--with-colons"])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout);
    let fpr = keys
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    let exported = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--export", &fpr])
        .output()
        .unwrap();
    let pubkey = home.with_extension("pub.gpg");
    std::fs::write(&pubkey, exported.stdout).unwrap();
    (fpr, pubkey)
}

/// A flat, unsigned apt repository in `dir` holding one package `kubelet`:
/// the kubelet TEST DOUBLE (tests/fixtures/kubelet-double.sh) as
/// /usr/bin/kubelet, plus a kubelet.service of its own as the upstream
/// package ships one (keelson's unit must replace it). Returns the treefile
/// text that adds the repository through `deb.extra-sources` on top of
/// `include`.
pub fn kubelet_double_repo(dir: &Path, include: &Path) -> String {
    let staging = dir.join("staging");
    let bin = staging.join("usr/bin");
    let units = staging.join("usr/lib/systemd/system");
    let control = staging.join("DEBIAN");
    for d in [&bin, &units, &control] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(
        manifest().join("tests/fixtures/kubelet-double.sh"),
        bin.join("kubelet"),
    )
    .unwrap();
    std::fs::write(
        units.join("kubelet.service"),
        "[Unit]\nDescription=upstream package unit (must be replaced by keelson's)\n\n\
         [Service]\nExecStart=/usr/bin/kubelet --from-the-package-unit\n",
    )
    .unwrap();
    let fields = "Package: kubelet\nVersion: 0.0.0~keelson.testdouble\nArchitecture: all\n\
                  Maintainer: keelson tests <test@keelson.invalid>\nDepends: socat\n\
                  Description: TEST DOUBLE of the kubelet for keelson's VM tests\n";
    std::fs::write(control.join("control"), fields).unwrap();
    let repo = dir.join("apt");
    std::fs::create_dir_all(&repo).unwrap();
    let deb = repo.join("kubelet_0.0.0~keelson.testdouble_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&staging)
        .arg(&deb));
    let size = std::fs::metadata(&deb).unwrap().len();
    let sha = keelson::image::sha256_file(&deb).unwrap();
    std::fs::write(
        repo.join("Packages"),
        format!(
            "{fields}Filename: ./{}\nSize: {}\nSHA256: {sha}\n",
            deb.file_name().unwrap().to_string_lossy(),
            size
        ),
    )
    .unwrap();
    serde_json::json!({
        "include": include,
        "deb": {"extra-sources": [{"uri": format!("copy:{}", repo.display()), "suite": "./", "trusted": true}]},
        "packages": ["kubelet"],
    })
    .to_string()
}

/// pykickstart's ksvalidator (scripts/install-deps.sh puts it in a venv;
/// KEELSON_KSVALIDATOR overrides).
pub fn ksvalidator() -> PathBuf {
    let p = std::env::var_os("KEELSON_KSVALIDATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/keelson-pyenv/bin/ksvalidator"));
    assert!(
        p.exists(),
        "{} not found: run scripts/install-deps.sh (pykickstart from PyPI) or set KEELSON_KSVALIDATOR",
        p.display()
    );
    p
}

/// A local TCP port nobody listens on (for the HTTP servers of the tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fallback objects of a static delta (`ostree static-delta show`):
/// content objects too big for the delta's parts, which clients fetch as
/// plain objects by design.
pub fn delta_fallbacks(repo: &Path, delta: &str) -> std::collections::BTreeSet<String> {
    let out = run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["static-delta", "show", delta]));
    out.lines()
        .skip_while(|l| !l.starts_with("Number of fallback entries"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The checksum of an object path (`…/objects/ab/cdef….filez` → `abcdef…`).
pub fn object_checksum(path: &str) -> Option<String> {
    let mut parts = path.rsplit('/');
    let file = parts.next()?;
    let dir = parts.next()?;
    Some(format!("{dir}{}", file.split('.').next()?))
}

/// One request the logging server answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

/// The tests' HTTP server (QEMU guests reach it as 10.0.2.2:PORT): a
/// static-file HTTP/1.1 server on 127.0.0.1 (a real server for libcurl:
/// GET/HEAD, Content-Length, one request per connection) that logs every
/// request with its status and body bytes, so tests can count what a
/// client downloaded. Symlinks are followed, as web servers do.
pub struct LoggingServer {
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<Hit>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LoggingServer {
    pub fn start(dir: &Path) -> LoggingServer {
        Self::start_on(dir, "127.0.0.1:0")
    }

    pub fn start_on(dir: &Path, addr: &str) -> LoggingServer {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, l, s) = (dir.to_path_buf(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, l) = (root.clone(), l.clone());
                std::thread::spawn(move || serve_one(conn, &root, &l));
            }
        });
        LoggingServer { port, log, stop }
    }

    /// The requests so far; `take` empties the log.
    pub fn take(&self) -> Vec<Hit> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_one(mut conn: std::net::TcpStream, root: &Path, log: &std::sync::Mutex<Vec<Hit>>) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Headers until the blank line.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    let file = root.join(path.trim_start_matches('/'));
    let safe = !path.split('/').any(|c| c == "..");
    let body = if safe && file.is_file() {
        std::fs::read(&file).ok()
    } else {
        None
    };
    let (status, body) = match body {
        Some(b) => (200u16, b),
        None => (404, b"not found\n".to_vec()),
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = if method == "HEAD" {
        0
    } else {
        body.len() as u64
    };
    let _ = conn.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = conn.write_all(&body);
    }
    let _ = conn.flush();
    log.lock().unwrap().push(Hit {
        path,
        status,
        bytes: sent,
    });
}
