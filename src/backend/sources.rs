//! apt sources for the deb backend: either the treefile's mirror, or the
//! build host's own apt sources for the suite (so a CI builder's mirror or
//! proxy just works and no mirror host is written into the project).
//!
//! Parsing and filtering are pure; only [`host_sources`] reads files.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One `deb` line: `deb [signed-by=K] URI SUITE COMPONENT...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
    /// `[trusted=yes]`: an unsigned local repository.
    pub trusted: bool,
}

impl SourceLine {
    pub fn render(&self) -> String {
        let mut opts = Vec::new();
        if let Some(k) = &self.signed_by {
            opts.push(format!("signed-by={k}"));
        }
        if self.trusted {
            opts.push("trusted=yes".to_string());
        }
        let opts = if opts.is_empty() {
            String::new()
        } else {
            format!("[{}] ", opts.join(" "))
        };
        let line = format!("deb {opts}{} {}", self.uri, self.suite);
        if self.components.is_empty() {
            line
        } else {
            format!("{line} {}", self.components.join(" "))
        }
    }
}

/// Parse one-line `sources.list` text. `deb-src` and comments are skipped.
pub fn parse_one_line(text: &str) -> Vec<SourceLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some(end) = opts.find(']') else { continue };
            for opt in opts[..end].split_whitespace() {
                if let Some(k) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(k.to_string());
                }
            }
            rest = opts[end + 1..].trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(SourceLine {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
            signed_by,
            trusted: false,
        });
    }
    out
}

/// Parse deb822 `.sources` text (stanzas separated by blank lines).
pub fn parse_deb822(text: &str) -> Vec<SourceLine> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Option<String> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
        };
        let types = field("Types").unwrap_or_default();
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let uris = field("URIs").unwrap_or_default();
        let suites = field("Suites").unwrap_or_default();
        let comps: Vec<String> = field("Components")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let signed_by = field("Signed-By");
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                out.push(SourceLine {
                    uri: uri.to_string(),
                    suite: suite.to_string(),
                    components: comps.clone(),
                    signed_by: signed_by.clone(),
                    trusted: false,
                });
            }
        }
    }
    out
}

/// Keep the entries that belong to `suite` (the suite itself and its
/// `-updates`/`-security` companions), optionally overriding components.
pub fn for_suite(
    all: &[SourceLine],
    suite: &str,
    components: Option<&[String]>,
) -> Vec<SourceLine> {
    all.iter()
        .filter(|s| {
            s.suite == suite
                || s.suite
                    .strip_prefix(suite)
                    .is_some_and(|r| r.starts_with('-') || r.starts_with('/'))
        })
        .map(|s| {
            let mut s = s.clone();
            if let Some(c) = components {
                s.components = c.to_vec();
            }
            s
        })
        .collect()
}

/// The sources text for mmdebstrap's standard input.
pub fn render(lines: &[SourceLine]) -> String {
    lines.iter().map(|l| l.render() + "\n").collect()
}

/// Read the host's apt sources under `etc_apt` (normally `/etc/apt`).
pub fn host_sources(etc_apt: &Path) -> Result<Vec<SourceLine>> {
    let mut out = Vec::new();
    let main = etc_apt.join("sources.list");
    if main.exists() {
        let text = fs_err::read_to_string(&main)
            .with_context(|| format!("{}: cannot read", main.display()))?;
        out.extend(parse_one_line(&text));
    }
    let dir = etc_apt.join("sources.list.d");
    if dir.is_dir() {
        let mut entries: Vec<_> = fs_err::read_dir(&dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let parse: fn(&str) -> Vec<SourceLine> = if name.ends_with(".list") {
                parse_one_line
            } else if name.ends_with(".sources") {
                parse_deb822
            } else {
                continue;
            };
            let text = fs_err::read_to_string(&p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            out.extend(parse(&text));
        }
    }
    Ok(out)
}

/// The sources a compose uses: the treefile's mirror, else the host's.
pub fn resolve(
    suite: &str,
    mirror: Option<&str>,
    components: Option<&[String]>,
    etc_apt: &Path,
) -> Result<Vec<SourceLine>> {
    if let Some(m) = mirror {
        return Ok(vec![SourceLine {
            uri: m.to_string(),
            suite: suite.to_string(),
            components: components
                .map(<[String]>::to_vec)
                .unwrap_or_else(|| vec!["main".into()]),
            signed_by: None,
            trusted: false,
        }]);
    }
    let host = host_sources(etc_apt)?;
    let lines = for_suite(&host, suite, components);
    if lines.is_empty() {
        bail!(
            "deb.suite: the build host has no apt source for {suite:?} in {}; add one there or set deb.mirror in the treefile",
            etc_apt.display()
        );
    }
    Ok(lines)
}

/// The treefile's `deb.extra-sources`, key paths made absolute against the
/// treefile's directory (apt reads them on the build host).
pub fn extra(
    sources: &[crate::treefile::fragment::ExtraSource],
    basedir: &Path,
) -> Vec<SourceLine> {
    sources
        .iter()
        .map(|s| SourceLine {
            uri: s.uri.clone(),
            suite: s.suite.clone(),
            components: s.components.clone(),
            signed_by: s
                .signed_by
                .as_ref()
                .map(|k| basedir.join(k).display().to_string()),
            trusted: s.trusted,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main contrib\n\nTypes: deb-src\nURIs: http://x\nSuites: bookworm\nComponents: main\n\nTypes: deb\nURIs: https://other.example/apt\nSuites: nodistro\nComponents: main\n";

    #[test]
    fn deb822_and_suite_filter() {
        let all = parse_deb822(DEB822);
        assert_eq!(all.len(), 4);
        let mine = for_suite(&all, "bookworm", None);
        let rendered = render(&mine);
        assert_eq!(
            rendered,
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-updates main\n\
             deb http://mirror.example/debian-security bookworm-security main contrib\n"
        );
        let comps = vec!["main".to_string(), "non-free-firmware".to_string()];
        let over = for_suite(&all, "bookworm", Some(&comps));
        assert!(over.iter().all(|s| s.components == comps));
        assert!(for_suite(&all, "trixie", None).is_empty());
        let k8s = crate::treefile::fragment::ExtraSource {
            uri: "https://pkgs.k8s.io/core:/stable:/v1.31/deb/".into(),
            suite: "/".into(),
            signed_by: Some("keys/k8s.gpg".into()),
            ..Default::default()
        };
        let local = crate::treefile::fragment::ExtraSource {
            uri: "copy:/srv/apt".into(),
            suite: "local".into(),
            components: vec!["main".into()],
            trusted: true,
            ..Default::default()
        };
        assert_eq!(
            render(&extra(&[k8s, local], Path::new("/tf"))),
            "deb [signed-by=/tf/keys/k8s.gpg] https://pkgs.k8s.io/core:/stable:/v1.31/deb/ /\n\
             deb [trusted=yes] copy:/srv/apt local main\n"
        );
    }

    #[test]
    fn one_line_table() {
        let t = "# c\ndeb http://a/debian bookworm main contrib # trailing\n\
                 deb-src http://a/debian bookworm main\n\
                 deb [arch=amd64 signed-by=/k.gpg] http://b/debian bookworm-security main\n\
                 deb http://c/debian bookworm/updates main\n\
                 deb broken\n";
        let all = parse_one_line(t);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].components, ["main", "contrib"]);
        assert_eq!(all[1].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(for_suite(&all, "bookworm", None).len(), 3);
        assert_eq!(for_suite(&all, "bookwor", None).len(), 0);
    }

    #[test]
    fn no_host_source_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        fs_err::write(
            d.path().join("sources.list"),
            "deb http://a/debian bookworm main\n",
        )
        .unwrap();
        let e = resolve("trixie", None, None, d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("deb.suite: the build host has no apt source for \"trixie\""),
            "{e}"
        );
        assert_eq!(resolve("bookworm", None, None, d.path()).unwrap().len(), 1);
        let m = resolve("trixie", Some("http://m/debian"), None, d.path()).unwrap();
        assert_eq!(m[0].render(), "deb http://m/debian trixie main");
    }
}
