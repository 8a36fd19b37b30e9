//! Kubelet reserved resources: the published default formulas (GKE, EKS,
//! AKS) and a fixed profile, as pure functions of the node's capacity, in
//! integer units (millicores, KiB). Figures and sources:
//! ../shared/reference/reservations.md; every one is a table test below.

use serde::{Deserialize, Serialize};

pub const KIB: u64 = 1;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// What the node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_kib: u64,
    /// Size of the filesystem holding /var/lib/kubelet.
    pub storage_kib: u64,
    pub max_pods: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_kib: u64,
    pub storage_kib: u64,
}

/// Hard eviction thresholds. All four are always rendered: setting one
/// signal in `evictionHard` zeroes the ones left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    pub memory_available_kib: u64,
    pub nodefs_available_percent: u32,
    pub nodefs_inodes_free_percent: u32,
    pub imagefs_available_percent: u32,
}

/// The kubelet's own defaults.
pub const DEFAULT_EVICTION: Eviction = Eviction {
    memory_available_kib: 100 * MIB,
    nodefs_available_percent: 10,
    nodefs_inodes_free_percent: 5,
    imagefs_available_percent: 15,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub kube_reserved: Resources,
    pub system_reserved: Resources,
    pub eviction: Eviction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Capacity-scaled (GKE's published formulas): keelson's default.
    Gke,
    /// EKS: memory from maxPods.
    Eks,
    /// AKS (≥ 1.29): memory from maxPods, capped at 25 % of memory.
    Aks,
    /// Exactly what the configuration says.
    Fixed,
}

/// Ephemeral storage kept for the kubelet by the computed profiles (EKS's
/// published figure; GKE and AKS publish none that fits a generic node).
pub const STORAGE_RESERVED_KIB: u64 = GIB;

/// GKE and EKS CPU: 6 % of the first core, 1 % of the second, 0.5 % of
/// cores 3–4, 0.25 % of every core above 4 — integer millicores per band.
pub fn cpu_gke(cpus: u32) -> u64 {
    let n = cpus as u64;
    let first = n.min(1) * 60;
    let second = n.saturating_sub(1).min(1) * 10;
    let third_fourth = n.saturating_sub(2).min(2) * 5;
    let rest = n.saturating_sub(4) * 25 / 10;
    first + second + third_fourth + rest
}

/// AKS CPU: the published table; between rows, the row at or below.
pub fn cpu_aks(cpus: u32) -> u64 {
    const TABLE: [(u32, u64); 7] = [
        (1, 60),
        (2, 100),
        (4, 140),
        (8, 180),
        (16, 260),
        (32, 420),
        (64, 740),
    ];
    TABLE
        .iter()
        .rev()
        .find(|(c, _)| cpus >= *c)
        .map(|(_, m)| *m)
        .unwrap_or(60)
}

/// GKE memory: 255 MiB under 1 GiB; else 25 % of the first 4 GiB, 20 % of
/// the next 4, 10 % of the next 8, 6 % of the next 112, 2 % above 128 GiB.
/// Computed in bytes, rounded down to KiB once.
pub fn memory_gke(memory_kib: u64) -> u64 {
    if memory_kib < GIB {
        return 255 * MIB;
    }
    let bands: [(u64, u64); 5] = [(4, 25), (4, 20), (8, 10), (112, 6), (u64::MAX / GIB, 2)];
    let mut left = memory_kib as u128 * 1024;
    let mut bytes: u128 = 0;
    for (gib, percent) in bands {
        let band = (gib as u128 * GIB as u128 * 1024).min(left);
        bytes += band * percent as u128;
        left -= band;
        if left == 0 {
            break;
        }
    }
    (bytes / 100 / 1024) as u64
}

/// EKS memory: 11 MiB per pod + 255 MiB.
pub fn memory_eks(max_pods: u32) -> u64 {
    (11 * max_pods as u64 + 255) * MIB
}

/// AKS memory: min(20 MiB per pod + 50 MiB, 25 % of memory). AKS' page
/// mixes MB and MiB; keelson reads MiB.
pub fn memory_aks(max_pods: u32, memory_kib: u64) -> u64 {
    ((20 * max_pods as u64 + 50) * MIB).min(memory_kib / 4)
}

/// The reservation a computed profile gives for `cap`. `Fixed` is not
/// computed: it comes from configuration as a whole [`Reservation`].
pub fn compute(profile: Profile, cap: &Capacity) -> Option<Reservation> {
    let (cpu, memory) = match profile {
        Profile::Gke => (cpu_gke(cap.cpus), memory_gke(cap.memory_kib)),
        Profile::Eks => (cpu_gke(cap.cpus), memory_eks(cap.max_pods)),
        Profile::Aks => (cpu_aks(cap.cpus), memory_aks(cap.max_pods, cap.memory_kib)),
        Profile::Fixed => return None,
    };
    Some(Reservation {
        kube_reserved: Resources {
            cpu_millis: cpu,
            memory_kib: memory,
            storage_kib: STORAGE_RESERVED_KIB,
        },
        system_reserved: Resources::default(),
        eviction: DEFAULT_EVICTION,
    })
}

/// Node Allocatable = Capacity − kubeReserved − systemReserved − hard
/// eviction threshold (soft thresholds are not subtracted). Saturates at 0.
pub fn allocatable(cap: &Capacity, r: &Reservation) -> Resources {
    let evict_storage = cap.storage_kib * r.eviction.nodefs_available_percent as u64 / 100;
    Resources {
        cpu_millis: (cap.cpus as u64 * 1000)
            .saturating_sub(r.kube_reserved.cpu_millis)
            .saturating_sub(r.system_reserved.cpu_millis),
        memory_kib: cap
            .memory_kib
            .saturating_sub(r.kube_reserved.memory_kib)
            .saturating_sub(r.system_reserved.memory_kib)
            .saturating_sub(r.eviction.memory_available_kib),
        storage_kib: cap
            .storage_kib
            .saturating_sub(r.kube_reserved.storage_kib)
            .saturating_sub(r.system_reserved.storage_kib)
            .saturating_sub(evict_storage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_published_figures() {
        for (cpus, gke, aks) in [
            (1, 60, 60),
            (2, 70, 100),
            (4, 80, 140),
            (8, 90, 180),
            (16, 110, 260),
            (32, 150, 420),
            (64, 230, 740),
        ] {
            assert_eq!(cpu_gke(cpus), gke, "GKE/EKS {cpus} CPUs");
            assert_eq!(cpu_aks(cpus), aks, "AKS {cpus} CPUs");
        }
        assert_eq!(cpu_aks(3), 100, "between rows: the row below");
    }

    #[test]
    fn memory_published_figures() {
        // GKE: 16 GiB → 2662.4 MiB (rounded down to KiB).
        assert_eq!(memory_gke(16 * GIB), 2_726_297);
        assert_eq!(memory_gke(16 * GIB) / MIB, 2662);
        assert_eq!(memory_gke(512 * MIB), 255 * MIB, "under 1 GiB");
        assert_eq!(memory_gke(4 * GIB), GIB, "25 % of the first 4 GiB");
        assert_eq!(memory_gke(2 * GIB), 512 * MIB);
        // 128 GiB: 1 + 0.8 + 0.8 + 6.72 GiB; 256 GiB adds 2 % of 128.
        let gib = |kib: u64| kib as f64 / GIB as f64;
        assert!((gib(memory_gke(128 * GIB)) - 9.32).abs() < 1e-6);
        assert_eq!(
            memory_gke(256 * GIB) - memory_gke(128 * GIB),
            128 * GIB * 2 / 100
        );
        // EKS: maxPods 58 → 893 MiB.
        assert_eq!(memory_eks(58), 893 * MIB);
        // AKS: 20 MiB/pod + 50, capped at 25 %.
        assert_eq!(memory_aks(30, 16 * GIB), 650 * MIB);
        assert_eq!(memory_aks(250, 2 * GIB), 512 * MIB);
    }

    #[test]
    fn upstream_example_through_the_fixed_profile() {
        let cap = Capacity {
            cpus: 16,
            memory_kib: 32 * GIB,
            storage_kib: 100 * GIB,
            max_pods: 110,
        };
        let r = Reservation {
            kube_reserved: Resources {
                cpu_millis: 1000,
                memory_kib: 2 * GIB,
                storage_kib: GIB,
            },
            system_reserved: Resources {
                cpu_millis: 500,
                memory_kib: GIB,
                storage_kib: GIB,
            },
            eviction: Eviction {
                memory_available_kib: 500 * MIB,
                nodefs_available_percent: 10,
                ..DEFAULT_EVICTION
            },
        };
        assert_eq!(compute(Profile::Fixed, &cap), None);
        let a = allocatable(&cap, &r);
        assert_eq!(a.cpu_millis, 14_500);
        // Upstream's "28.5Gi" treats 500Mi as 0.5Gi; exactly it is 29196Mi.
        assert_eq!(a.memory_kib, 32 * GIB - 2 * GIB - GIB - 500 * MIB);
        assert_eq!(format!("{:.1}", a.memory_kib as f64 / GIB as f64), "28.5");
        assert_eq!(a.storage_kib, 88 * GIB);
    }

    #[test]
    fn computed_profiles() {
        let cap = Capacity {
            cpus: 2,
            memory_kib: 2 * GIB,
            storage_kib: 20 * GIB,
            max_pods: 110,
        };
        let g = compute(Profile::Gke, &cap).unwrap();
        assert_eq!(
            (g.kube_reserved.cpu_millis, g.kube_reserved.memory_kib),
            (70, 512 * MIB)
        );
        assert_eq!(g.eviction, DEFAULT_EVICTION);
        let e = compute(Profile::Eks, &cap).unwrap();
        assert_eq!(e.kube_reserved.memory_kib, (11 * 110 + 255) * MIB);
        let a = compute(Profile::Aks, &cap).unwrap();
        assert_eq!(
            a.kube_reserved.memory_kib,
            512 * MIB,
            "capped at 25 % of 2 GiB"
        );
        let alloc = allocatable(&cap, &g);
        assert_eq!(alloc.cpu_millis, 1930);
        assert_eq!(alloc.memory_kib, 2 * GIB - 512 * MIB - 100 * MIB);
        // A tiny node cannot go negative.
        let tiny = Capacity {
            cpus: 1,
            memory_kib: 256 * MIB,
            storage_kib: 0,
            max_pods: 110,
        };
        assert_eq!(
            allocatable(&tiny, &compute(Profile::Eks, &tiny).unwrap()).memory_kib,
            0
        );
    }
}
