//! `keelson kubelet-config`: a KubeletConfiguration drop-in with reserved
//! resources computed from the node's real capacity (or a given one, to
//! preview), rendered from a Tera template. Rendering is pure; reading the
//! machine's capacity is a thin I/O layer.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::quantity;
use crate::reserve::{self, Capacity, DEFAULT_EVICTION, Profile, Reservation, Resources};

const TEMPLATE: &str = include_str!("templates/kubelet-config.yaml.tera");

/// `[kubelet]` in the node configuration fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletSettings {
    #[serde(default = "default_profile")]
    pub profile: Profile,
    #[serde(default = "default_max_pods")]
    pub max_pods: u32,
    #[serde(default = "default_log_size")]
    pub container_log_max_size: String,
    #[serde(default = "default_log_files")]
    pub container_log_max_files: u32,
    /// With profile = "fixed".
    pub fixed: Option<Fixed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixed {
    pub kube_reserved: Amounts,
    pub system_reserved: Amounts,
    #[serde(default = "default_eviction_memory")]
    pub eviction_memory_available: String,
    #[serde(default = "default_nodefs")]
    pub eviction_nodefs_available_percent: u32,
}

fn default_profile() -> Profile {
    Profile::Gke
}
fn default_max_pods() -> u32 {
    110
}
fn default_log_size() -> String {
    "50Mi".into()
}
fn default_log_files() -> u32 {
    5
}
fn default_eviction_memory() -> String {
    "100Mi".into()
}
fn default_nodefs() -> u32 {
    10
}

impl Default for KubeletSettings {
    fn default() -> Self {
        KubeletSettings {
            profile: default_profile(),
            max_pods: default_max_pods(),
            container_log_max_size: default_log_size(),
            container_log_max_files: default_log_files(),
            fixed: None,
        }
    }
}

fn amounts(field: &str, a: &Amounts) -> Result<Resources> {
    Ok(Resources {
        cpu_millis: quantity::cpu_millis(&a.cpu).with_context(|| format!("{field}.cpu"))?,
        memory_kib: quantity::size_kib(&a.memory).with_context(|| format!("{field}.memory"))?,
        storage_kib: quantity::size_kib(&a.ephemeral_storage)
            .with_context(|| format!("{field}.ephemeral_storage"))?,
    })
}

impl KubeletSettings {
    /// Check everything that `toml` types cannot: quantities, ranges, the
    /// fixed profile's table. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1000).contains(&self.max_pods) {
            anyhow::bail!("kubelet.max_pods: {} is outside 1–1000", self.max_pods);
        }
        quantity::size_kib(&self.container_log_max_size)
            .context("kubelet.container_log_max_size")?;
        if self.container_log_max_files < 2 {
            anyhow::bail!("kubelet.container_log_max_files: the kubelet needs at least 2");
        }
        match (self.profile, &self.fixed) {
            (Profile::Fixed, None) => {
                anyhow::bail!("kubelet.fixed: profile = \"fixed\" needs a [kubelet.fixed] table")
            }
            (_, Some(_)) => {
                self.fixed_reservation()?;
            }
            _ => {}
        }
        Ok(())
    }

    fn fixed_reservation(&self) -> Result<Option<Reservation>> {
        let Some(f) = &self.fixed else {
            return Ok(None);
        };
        if f.eviction_nodefs_available_percent > 50 {
            anyhow::bail!(
                "kubelet.fixed.eviction_nodefs_available_percent: {}% is more than 50%",
                f.eviction_nodefs_available_percent
            );
        }
        Ok(Some(Reservation {
            kube_reserved: amounts("kubelet.fixed.kube_reserved", &f.kube_reserved)?,
            system_reserved: amounts("kubelet.fixed.system_reserved", &f.system_reserved)?,
            eviction: reserve::Eviction {
                memory_available_kib: quantity::size_kib(&f.eviction_memory_available)
                    .context("kubelet.fixed.eviction_memory_available")?,
                nodefs_available_percent: f.eviction_nodefs_available_percent,
                ..DEFAULT_EVICTION
            },
        }))
    }

    /// The reservation for `cap` under these settings.
    pub fn reservation(&self, cap: &Capacity) -> Result<Reservation> {
        match reserve::compute(self.profile, cap) {
            Some(r) => Ok(r),
            None => self
                .fixed_reservation()?
                .context("kubelet.fixed: missing for profile \"fixed\""),
        }
    }
}

/// Render the drop-in (pure).
pub fn render(s: &KubeletSettings, cap: &Capacity) -> Result<String> {
    // The same figures `keelson status` shows.
    let n = node_resources(s, cap)?;
    let mut ctx = tera::Context::new();
    ctx.insert("profile", &n.profile);
    ctx.insert("cap", &n.capacity);
    ctx.insert("r", &n);
    ctx.insert("alloc", &n.allocatable);
    ctx.insert("max_pods", &s.max_pods);
    ctx.insert("log_max_size", &s.container_log_max_size);
    ctx.insert("log_max_files", &s.container_log_max_files);
    tera::Tera::one_off(TEMPLATE, &ctx, false).context("rendering the kubelet configuration")
}

/// What `keelson status` shows: the node's capacity, what the profile
/// reserves, and the allocatable the kubelet should then report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeResources {
    pub profile: Profile,
    pub capacity: Capacity,
    pub kube_reserved: Resources,
    pub system_reserved: Resources,
    pub eviction: reserve::Eviction,
    pub allocatable: Resources,
}

/// The resources view for `cap` under `s` (pure).
pub fn node_resources(s: &KubeletSettings, cap: &Capacity) -> Result<NodeResources> {
    let r = s.reservation(cap)?;
    Ok(NodeResources {
        profile: s.profile,
        capacity: *cap,
        kube_reserved: r.kube_reserved,
        system_reserved: r.system_reserved,
        eviction: r.eviction,
        allocatable: reserve::allocatable(cap, &r),
    })
}

fn human_kib(kib: u64) -> String {
    if kib >= reserve::GIB {
        format!("{:.1} GiB", kib as f64 / reserve::GIB as f64)
    } else {
        format!("{:.0} MiB", kib as f64 / reserve::MIB as f64)
    }
}

fn human(r: &Resources) -> String {
    format!(
        "cpu {}m, memory {} ({}Ki), ephemeral-storage {}",
        r.cpu_millis,
        human_kib(r.memory_kib),
        r.memory_kib,
        human_kib(r.storage_kib)
    )
}

/// The resources section of `keelson status` (pure).
pub fn render_resources(n: &NodeResources) -> String {
    let c = &n.capacity;
    let mut out = format!(
        "Kubelet resources ({} profile):
  Capacity:    {} CPUs, memory {} ({}Ki), storage {}, {} pods
  KubeReserved: {}
",
        serde_json::to_value(n.profile)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        c.cpus,
        human_kib(c.memory_kib),
        c.memory_kib,
        human_kib(c.storage_kib),
        c.max_pods,
        human(&n.kube_reserved)
    );
    if n.system_reserved != Resources::default() {
        out += &format!(
            "  SystemReserved: {}
",
            human(&n.system_reserved)
        );
    }
    out += &format!(
        "  Eviction:    memory.available {}Ki, nodefs.available {}%
  Allocatable: {}
",
        n.eviction.memory_available_kib,
        n.eviction.nodefs_available_percent,
        human(&n.allocatable)
    );
    out
}

/// MemTotal from /proc/meminfo text, in KiB.
pub fn parse_memtotal(meminfo: &str) -> Option<u64> {
    crate::util::sys::meminfo_kib(meminfo, "MemTotal")
}

/// Pure: the number of CPUs in a kernel CPU list such as
/// `/sys/devices/system/cpu/online` ("0-3,6,8-9").
pub fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// The running machine's capacity: online CPUs, MemTotal, and the size of
/// the filesystem holding `kubelet_dir` (or its nearest existing parent).
pub fn machine_capacity(kubelet_dir: &Path, max_pods: u32) -> Result<Capacity> {
    const ONLINE: &str = "/sys/devices/system/cpu/online";
    let online =
        fs_err::read_to_string(ONLINE).with_context(|| format!("{ONLINE}: cannot read"))?;
    let cpus =
        count_cpu_list(&online).with_context(|| format!("{ONLINE}: cannot parse {online:?}"))?;
    let meminfo = fs_err::read_to_string("/proc/meminfo").context("/proc/meminfo")?;
    let memory_kib = parse_memtotal(&meminfo).context("/proc/meminfo: no MemTotal")?;
    let mut dir = kubelet_dir;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    let storage_kib = crate::util::fsutil::fs_stats(dir)?.total_bytes / 1024;
    Ok(Capacity {
        cpus,
        memory_kib,
        storage_kib,
        max_pods,
    })
}

/// A capacity given on the command line instead of this machine's.
#[derive(Debug, Clone)]
pub struct Preview {
    pub cpus: u32,
    pub memory: String,
    pub storage: String,
}

/// What `keelson kubelet-config` asks for: the node configuration's
/// settings with the given overrides, for the previewed capacity or the
/// machine's own.
pub struct Request {
    pub profile: Option<Profile>,
    pub max_pods: Option<u32>,
    pub preview: Option<Preview>,
}

/// The drop-in for `req` on the node `ctx` describes.
pub fn render_request(ctx: &super::context::NodeCtx, req: &Request) -> Result<String> {
    let mut settings = ctx.load_config()?.kubelet;
    if let Some(p) = req.profile {
        settings.profile = p;
    }
    if let Some(m) = req.max_pods {
        settings.max_pods = m;
    }
    settings.validate()?;
    let cap = match &req.preview {
        Some(p) => Capacity {
            cpus: p.cpus,
            memory_kib: quantity::size_kib(&p.memory).context("--memory")?,
            storage_kib: quantity::size_kib(&p.storage).context("--storage")?,
            max_pods: settings.max_pods,
        },
        None => machine_capacity(&ctx.kubelet_dir, settings.max_pods)?,
    };
    render(&settings, &cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reserve::{GIB, MIB};

    #[test]
    fn cpu_lists() {
        let t = [
            ("0", Some(1)),
            ("0-1\n", Some(2)),
            ("0-3,6,8-9", Some(7)),
            ("", None),
            ("3-1", None),
            ("x", None),
        ];
        for (list, want) in t {
            assert_eq!(count_cpu_list(list), want, "{list:?}");
        }
    }

    #[test]
    fn golden_gke_2gib() {
        let cap = Capacity {
            cpus: 2,
            memory_kib: 2 * GIB,
            storage_kib: 20 * GIB,
            max_pods: 110,
        };
        let got = render(&KubeletSettings::default(), &cap).unwrap();
        let golden = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/node/testdata/kubelet-gke-2cpu-2gib.yaml"
        );
        if std::env::var_os("KEELSON_UPDATE_GOLDEN").is_some() {
            fs_err::write(golden, &got).unwrap();
        }
        assert_eq!(got, fs_err::read_to_string(golden).unwrap());
        assert!(
            got.contains("memory: \"524288Ki\"") && got.contains("cpu: \"70m\""),
            "{got}"
        );
        assert!(
            !got.contains("systemReserved"),
            "no zero systemReserved block"
        );
    }

    #[test]
    fn fixed_profile_renders_system_reserved() {
        let s: KubeletSettings = toml::from_str(
            "profile = \"fixed\"\n[fixed]\nkube_reserved = { cpu = \"1\", memory = \"2Gi\", ephemeral_storage = \"1Gi\" }\n\
             system_reserved = { cpu = \"500m\", memory = \"1Gi\", ephemeral_storage = \"1Gi\" }\neviction_memory_available = \"500Mi\"\n",
        )
        .unwrap();
        s.validate().unwrap();
        let cap = Capacity {
            cpus: 16,
            memory_kib: 32 * GIB,
            storage_kib: 100 * GIB,
            max_pods: 110,
        };
        let got = render(&s, &cap).unwrap();
        assert!(got.contains("systemReserved:\n  cpu: \"500m\""), "{got}");
        assert!(
            got.contains(&format!("memory.available: \"{}Ki\"", 500 * MIB)),
            "{got}"
        );
        assert!(
            got.contains("cpu 14500m"),
            "expected allocatable in the header: {got}"
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        let t = [
            ("profile = \"gcp\"", "unknown variant `gcp`"),
            (
                "container_log_max_size = \"-5Mi\"",
                "kubelet.container_log_max_size",
            ),
            ("max_pods = 0", "kubelet.max_pods: 0"),
            (
                "profile = \"fixed\"",
                "kubelet.fixed: profile = \"fixed\" needs",
            ),
            (
                "profile = \"fixed\"\n[fixed]\nkube_reserved = { cpu = \"lots\", memory = \"1Gi\", ephemeral_storage = \"1Gi\" }\nsystem_reserved = { cpu = \"1\", memory = \"1Gi\", ephemeral_storage = \"1Gi\" }\n",
                "kubelet.fixed.kube_reserved.cpu",
            ),
        ];
        for (text, want) in t {
            let e = match toml::from_str::<KubeletSettings>(text) {
                Err(e) => e.to_string(),
                Ok(s) => format!("{:#}", s.validate().unwrap_err()),
            };
            assert!(e.contains(want), "{text}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn status_view_2cpu_2gib() {
        let cap = Capacity {
            cpus: 2,
            memory_kib: 2 * GIB,
            storage_kib: 20 * GIB,
            max_pods: 110,
        };
        let n = node_resources(&KubeletSettings::default(), &cap).unwrap();
        assert_eq!(
            n.allocatable,
            Resources {
                cpu_millis: 1930,
                memory_kib: 2 * GIB - 512 * MIB - 100 * MIB,
                storage_kib: 20 * GIB - GIB - 2 * GIB,
            }
        );
        assert_eq!(
            render_resources(&n),
            "Kubelet resources (gke profile):\n  Capacity:    2 CPUs, memory 2.0 GiB (2097152Ki), storage 20.0 GiB, 110 pods\n  \
             KubeReserved: cpu 70m, memory 512 MiB (524288Ki), ephemeral-storage 1.0 GiB\n  \
             Eviction:    memory.available 102400Ki, nodefs.available 10%\n  \
             Allocatable: cpu 1930m, memory 1.4 GiB (1470464Ki), ephemeral-storage 17.0 GiB\n"
        );
    }

    #[test]
    fn memtotal() {
        assert_eq!(
            parse_memtotal("MemTotal:        2030712 kB\nMemFree: 1 kB\n"),
            Some(2030712)
        );
        assert_eq!(parse_memtotal("MemFree: 1 kB\n"), None);
    }
}
