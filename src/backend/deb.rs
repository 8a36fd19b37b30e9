//! The deb backend: mmdebstrap resolves and installs the package set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Package, sources};
use crate::treefile::Treefile;
use crate::util::cmd::Cmd;

/// Debian 12 unless the treefile names a suite.
pub const DEFAULT_SUITE: &str = "bookworm";

/// mmdebstrap mounts /proc, /sys, /dev/pts and /dev/shm inside the tree:
/// in a mount namespace of its own they die with it, even when keelson is
/// killed (the PID namespace takes every apt and dpkg with mmdebstrap,
/// and --kill-child takes mmdebstrap with unshare).
const PRIVATE_NAMESPACES: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
    "--",
];

/// Everything mmdebstrap needs, derived from the treefile.
pub struct DebBackend {
    suite: String,
    variant: String,
    sources_text: String,
    include: Vec<String>,
    apt_opts: Vec<String>,
    dpkg_opts: Vec<String>,
}

impl DebBackend {
    pub fn new(tf: &Treefile) -> Result<Self> {
        Self::with_host_apt(tf, Path::new("/etc/apt"))
    }

    pub fn with_host_apt(tf: &Treefile, etc_apt: &Path) -> Result<Self> {
        let suite = tf
            .deb
            .suite
            .clone()
            .unwrap_or_else(|| DEFAULT_SUITE.to_string());
        let mut lines = sources::resolve(
            &suite,
            tf.deb.mirror.as_deref(),
            tf.deb.components.as_deref(),
            etc_apt,
        )?;
        lines.extend(sources::extra(&tf.deb.extra_sources, &tf.basedir));
        Ok(DebBackend {
            variant: tf.deb.variant.clone().unwrap_or_else(|| "minbase".into()),
            sources_text: sources::render(&lines),
            include: include_list(tf),
            apt_opts: apt_opts(tf),
            dpkg_opts: dpkg_opts(tf),
            suite,
        })
    }

    /// Everything besides the package versions that decides what
    /// [`DebBackend::install`] writes (the install cache's key).
    pub fn identity(&self) -> String {
        format!(
            "suite={}\nvariant={}\ninclude={}\naptopt={:?}\ndpkgopt={:?}\nINITRD=No\nsources:\n{}",
            self.suite,
            self.variant,
            self.include.join(","),
            self.apt_opts,
            self.dpkg_opts,
            self.sources_text
        )
    }

    /// The mmdebstrap invocation shared by simulate and install.
    fn base_cmd(&self) -> Cmd {
        let mut c = Cmd::new("mmdebstrap")
            .arg("--mode=root")
            .arg(format!("--variant={}", self.variant))
            .arg(format!("--include={}", self.include.join(",")));
        for o in &self.apt_opts {
            c = c.arg(format!("--aptopt={o}"));
        }
        for o in &self.dpkg_opts {
            c = c.arg(format!("--dpkgopt={o}"));
        }
        c.stdin(self.sources_text.clone().into_bytes())
    }

    /// Resolve the package set without downloading or installing anything
    /// (for the inputhash). Runs apt in simulate mode against the sources.
    pub fn resolve(&self, scratch: &Path) -> Result<Vec<Package>> {
        let target = scratch.join("simulate");
        let out = self
            .base_cmd()
            .args(["--simulate", "--verbose"])
            .arg(&self.suite)
            .arg(&target)
            .arg("-")
            .output()
            .context("packages: cannot resolve the package set (mmdebstrap --simulate)")?;
        let _ = fs_err::remove_dir_all(&target);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let pkgs = parse_simulated(&text);
        if pkgs.is_empty() {
            bail!(
                "mmdebstrap --simulate resolved no packages; its output:\n{}",
                crate::util::cmd::tail(&text, 15)
            );
        }
        Ok(pkgs)
    }

    /// Install into `rootfs` (which must not exist). Downloaded .debs are
    /// synchronised with `debcache` when given, so a recompose downloads
    /// nothing new. `passwd_seed` is a directory holding the previous
    /// commit's `passwd` and `group` (or either, from a check-passwd file): placed in /etc before any package is
    /// unpacked, so existing system users keep their ids and new ones get
    /// free ids (base-passwd keeps an existing /etc/passwd; the passwd
    /// package's pwconv creates the matching shadow entries).
    pub fn install(
        &self,
        rootfs: &Path,
        debcache: Option<&Path>,
        passwd_seed: Option<&Path>,
    ) -> Result<Vec<Package>> {
        let mut c = self.base_cmd();
        if let Some(seed) = passwd_seed {
            let files: Vec<String> = ["passwd", "group"]
                .iter()
                .map(|f| seed.join(f))
                .filter(|p| p.is_file())
                .map(|p| p.display().to_string())
                .collect();
            c = c
                .arg("--setup-hook=mkdir -p \"$1\"/etc")
                .arg(format!("--setup-hook=copy-in {} /etc", files.join(" ")));
        }
        // Debian's kernel postinst would build a host-only initramfs that is
        // both wrong and wasted time (~20 s): dracut's kernel hook skips it
        // when INITRD=No. The real one is built later, inside the tree.
        c = c.env("INITRD", "No");
        if let Some(cache) = debcache {
            fs_err::create_dir_all(cache)
                .with_context(|| format!("{}: cannot create the package cache", cache.display()))?;
            let cache = cache.canonicalize()?;
            c = c
                .arg("--skip=essential/unlink")
                .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
                .arg(format!(
                    "--setup-hook=sync-in {} /var/cache/apt/archives/",
                    cache.display()
                ))
                .arg(format!(
                    "--customize-hook=sync-out /var/cache/apt/archives {}",
                    cache.display()
                ));
        }
        c.arg(&self.suite)
            .arg(rootfs)
            .arg("-")
            .under(PRIVATE_NAMESPACES)
            .run()
            .context("packages: installation failed (mmdebstrap)")?;
        installed_packages(rootfs)
    }
}

/// Pure: the installed packages the resolve step did not predict
/// (`name:arch=version`): the mirror changed between the two, and the
/// inputhash does not describe the tree. The reverse is normal: mmdebstrap
/// simulates the essential set and the rest separately, so apt may pick an
/// alternative (`lsb-base | sysvinit-utils`) that the real install finds
/// already satisfied by an essential package.
pub fn unpredicted(resolved: &[Package], installed: &[Package]) -> Vec<String> {
    use std::collections::BTreeSet;
    let r: BTreeSet<&Package> = resolved.iter().collect();
    installed
        .iter()
        .filter(|p| !r.contains(p))
        .map(|p| p.to_string())
        .collect()
}

/// `--include` entries: requested packages plus `name-` for every excluded
/// one (apt's "do not install" marker, so a hard dependency on it fails
/// loudly instead of silently pulling it in).
fn include_list(tf: &Treefile) -> Vec<String> {
    tf.packages
        .iter()
        .cloned()
        .chain(tf.exclude_packages.iter().map(|p| format!("{p}-")))
        .collect()
}

fn apt_opts(tf: &Treefile) -> Vec<String> {
    vec![format!(
        "Apt::Install-Recommends \"{}\"",
        tf.recommends.get()
    )]
}

/// dpkg filters: `install-langs` first: the documentation excludes come after, so they
/// win for man pages (dpkg applies the last matching filter).
fn dpkg_opts(tf: &Treefile) -> Vec<String> {
    let mut out = crate::treefile::compat::install_langs_dpkg_opts(&tf.install_langs);
    if !tf.documentation.get() {
        out.extend(documentation_excludes());
    }
    out
}

/// Documentation filters as dpkg path-excludes (copyright files stay: they
/// are licences, not docs).
fn documentation_excludes() -> Vec<String> {
    [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// Parse apt's simulate lines: `Inst NAME (VERSION RELEASE [ARCH])`.
/// mmdebstrap simulates essential and the rest separately, so names repeat.
pub fn parse_simulated(text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let mut it = rest.splitn(2, ' ');
        let (Some(name), Some(rest)) = (it.next(), it.next()) else {
            continue;
        };
        // Upgrades look like `Inst x [old] (new ...)`; skip the bracket.
        let rest = match rest.find('(') {
            Some(i) => &rest[i + 1..],
            None => continue,
        };
        let version = rest.split_whitespace().next().unwrap_or("");
        let arch = rest
            .find('[')
            .and_then(|i| rest[i + 1..].split(']').next())
            .unwrap_or("");
        if version.is_empty() || arch.is_empty() {
            continue;
        }
        out.push(Package {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
        });
    }
    out.sort();
    out.dedup();
    out
}

/// The packages dpkg says are installed in `rootfs`.
pub fn installed_packages(rootfs: &Path) -> Result<Vec<Package>> {
    let admindir: PathBuf = rootfs.join("var/lib/dpkg");
    let out = Cmd::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ])
        .run()
        .context("listing installed packages")?;
    let mut pkgs: Vec<Package> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && f[0].starts_with("ii")).then(|| Package {
                name: f[1].into(),
                version: f[2].into(),
                arch: f[3].into(),
            })
        })
        .collect();
    pkgs.sort();
    Ok(pkgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unpredicted_packages_mean_a_mirror_change() {
        let p = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
            arch: "all".into(),
        };
        let resolved = [p("a", "1"), p("lsb-base", "11.6"), p("b", "1")];
        // lsb-base resolved but satisfied otherwise: fine.
        assert!(unpredicted(&resolved, &[p("a", "1"), p("b", "1")]).is_empty());
        assert_eq!(
            unpredicted(&resolved, &[p("a", "2"), p("c", "1")]),
            ["a:all=2", "c:all=1"]
        );
    }

    #[test]
    fn simulated_lines() {
        let text = "I: simulate...\n\
            Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n\
            Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n\
            Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n\
            Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n\
            Inst tzdata [2024a-0] (2025b-0+deb12u1 Debian-Security:12/oldstable-security [all])\n";
        let p = parse_simulated(text);
        let names: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "gcc-12-base:amd64=12.2.0-14+deb12u1",
                "libc6:amd64=2.36-9+deb12u14",
                "tzdata:all=2025b-0+deb12u1"
            ]
        );
    }
}
