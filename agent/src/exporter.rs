//! The Prometheus exposition of the node's GPUs, with dcgm-exporter's metric names and
//! labels so that existing Grafana dashboards (NVIDIA's "DCGM Exporter Dashboard" and its
//! kin) work unchanged.
//!
//! Labels of every GPU series: `gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`,
//! `Hostname`, `DCGM_FI_DRIVER_VERSION` as dcgm-exporter writes them; `container`,
//! `namespace`, `pod` (the replica as `<job>-<replica>` under `capstan up`; on Kubernetes the
//! pod's namespace, name and container from [`crate::attribution`]: the kubelet's
//! pod-resources API, else process cgroups; empty when the GPU is idle); Capstan's own
//! `capstan_job` and `capstan_replica` (not `job`, which Prometheus reserves for the scrape
//! job); `pid` (the compute processes, comma-separated) when no replica is known but
//! processes run; and `simulated="true"` on simulated GPUs.
//!
//! Counters of dcgm-exporter (`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`,
//! `DCGM_FI_DEV_PCIE_REPLAY_COUNTER`, the ECC totals) keep their names and are typed `gauge`
//! here: the OpenMetrics encoder would otherwise append `_total` and break the dashboards'
//! queries (`rate()` works on them either way).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::attribution::PodContainer;
use crate::gpu::{GpuInfo, GpuReading};
use crate::health::GpuHealth;
use crate::push::JobRef;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;

/// One GPU as the exposition sees it.
#[derive(Debug, Clone)]
pub struct GpuView<'a> {
    /// What it is.
    pub info: &'a GpuInfo,
    /// Its latest reading (none yet: only the health series).
    pub reading: Option<&'a GpuReading>,
    /// Its health.
    pub health: GpuHealth,
    /// Last XID (0: none).
    pub last_xid: u64,
    /// The replica it is given to.
    pub job: Option<&'a JobRef>,
    /// The Kubernetes pod container using it (`capstan agent --kubernetes`), which gives the
    /// `namespace`, `pod` and `container` labels.
    pub pod: Option<&'a PodContainer>,
}

/// The agent's own counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentCounters {
    /// Samples dropped because the outbox was full.
    pub dropped_samples: u64,
    /// Run metric points dropped.
    pub dropped_run_metrics: u64,
    /// Pushes that failed.
    pub push_failures: u64,
    /// Samples waiting in the outbox.
    pub buffered_samples: u64,
}

/// Everything [`render`] writes.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Node (host) name.
    pub hostname: &'a str,
    /// Driver version.
    pub driver_version: &'a str,
    /// The GPUs.
    pub gpus: Vec<GpuView<'a>>,
    /// Counters.
    pub counters: AgentCounters,
}

/// A gauge series: name, help, value.
type Field = (&'static str, &'static str, fn(&GpuReading, u64) -> Option<f64>);

/// The series of each GPU, dcgm-exporter's names and help texts.
const FIELDS: &[Field] = &[
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)", |r, _| r.gpu_util),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %)", |r, _| r.mem_copy_util),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)", |r, _| r.fb_used_mib),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)", |r, _| r.fb_free_mib),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)", |r, _| r.gpu_temp_c),
    ("DCGM_FI_DEV_MEMORY_TEMP", "Memory temperature (in C)", |r, _| r.memory_temp_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)", |r, _| r.power_w),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ)", |r, _| r.energy_mj),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)", |r, _| r.sm_clock_mhz),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz)", |r, _| r.mem_clock_mhz),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask)", |r, _| {
        r.throttle_reasons.map(|v| v as f64)
    }),
    ("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "Total number of bytes transmitted through PCIe TX (in KB) via NVML", |r, _| {
        r.pcie_tx_kbps
    }),
    ("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "Total number of bytes received through PCIe RX (in KB) via NVML", |r, _| {
        r.pcie_rx_kbps
    }),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries", |r, _| r.pcie_replay.map(|v| v as f64)),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors", |r, _| {
        r.ecc_sbe_volatile.map(|v| v as f64)
    }),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors", |r, _| {
        r.ecc_dbe_volatile.map(|v| v as f64)
    }),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered", |_, xid| Some(xid as f64)),
];

/// The labels of one GPU's series.
pub fn labels(view: &GpuView, hostname: &str, driver_version: &str) -> Labels {
    let g = view.info;
    let (mut namespace, mut pod, job, replica) = match view.job {
        Some(j) => (j.namespace.clone(), format!("{}-{}", j.name, j.replica), j.name.clone(), j.replica.to_string()),
        None => Default::default(),
    };
    let mut container = String::new();
    if let Some(p) = view.pod {
        (namespace, pod, container) = (p.namespace.clone(), p.pod.clone(), p.container.clone());
    }
    let mut l: Labels = vec![
        ("gpu".into(), g.index.to_string()),
        ("UUID".into(), g.uuid.clone()),
        ("pci_bus_id".into(), g.pci_bus_id.clone()),
        ("device".into(), g.device()),
        ("modelName".into(), g.model_name()),
        ("Hostname".into(), hostname.to_string()),
        ("DCGM_FI_DRIVER_VERSION".into(), driver_version.to_string()),
        ("container".into(), container),
        ("namespace".into(), namespace),
        ("pod".into(), pod),
        ("capstan_job".into(), job),
        ("capstan_replica".into(), replica),
    ];
    if view.job.is_none() && view.pod.is_none() {
        if let Some(r) = view.reading.filter(|r| !r.processes.is_empty()) {
            let pids: Vec<String> = r.processes.iter().map(|p| p.pid.to_string()).collect();
            l.push(("pid".into(), pids.join(",")));
        }
    }
    if g.simulated {
        l.push(("simulated".into(), "true".into()));
    }
    l
}

/// The exposition (OpenMetrics text, which Prometheus reads; see [`CONTENT_TYPE`]).
pub fn render(view: &View) -> String {
    let mut registry = Registry::default();
    let families: Vec<FGauge> = FIELDS.iter().map(|_| FGauge::default()).collect();
    let healthy = FGauge::default();
    for g in &view.gpus {
        let l = labels(g, view.hostname, view.driver_version);
        if let Some(r) = g.reading {
            for (family, (_, _, get)) in families.iter().zip(FIELDS) {
                if let Some(v) = get(r, g.last_xid) {
                    family.get_or_create(&l).set(v);
                }
            }
        }
        let mut hl: Labels = l[..6].to_vec();
        hl.push(("reason".into(), g.health.reason.clone()));
        if g.info.simulated {
            hl.push(("simulated".into(), "true".into()));
        }
        healthy.get_or_create(&hl).set(if g.health.healthy { 1.0 } else { 0.0 });
    }
    for (family, (name, help, _)) in families.into_iter().zip(FIELDS) {
        registry.register(*name, *help, family);
    }
    registry.register(
        "capstan_gpu_healthy",
        "1 while the GPU is healthy, 0 once marked unhealthy (reason label)",
        healthy,
    );
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let gauge = |v: u64| {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(v as f64);
        g
    };
    let c = view.counters;
    registry.register(
        "capstan_agent_samples_dropped",
        "GPU samples dropped because the outbox was full (server away)",
        counter(c.dropped_samples),
    );
    registry.register(
        "capstan_agent_run_metrics_dropped",
        "Run system-metric points dropped because the outbox was full",
        counter(c.dropped_run_metrics),
    );
    registry.register("capstan_agent_push_failures", "Pushes to the server that failed", counter(c.push_failures));
    registry.register("capstan_agent_buffered_samples", "GPU samples waiting to be pushed", gauge(c.buffered_samples));
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{parse_simulate_spec, GpuProcess};

    #[test]
    fn dcgm_names_and_labels() {
        let gpus = parse_simulate_spec("2").unwrap();
        let r0 = GpuReading { index: 0, gpu_util: Some(93.0), fb_used_mib: Some(100.0), ..GpuReading::default() };
        let r1 = GpuReading {
            index: 1,
            gpu_util: Some(0.0),
            processes: vec![GpuProcess { pid: 7, used_mib: None }, GpuProcess { pid: 9, used_mib: None }],
            ..GpuReading::default()
        };
        let job = JobRef {
            namespace: "default".into(),
            name: "train".into(),
            uid: "u".into(),
            replica: 1,
            attempt: 1,
            run_id: None,
        };
        let unhealthy = GpuHealth { healthy: false, reason: "XidError".into(), message: "m".into(), since_ms: 1 };
        let view = View {
            hostname: "host-a",
            driver_version: "simulated",
            gpus: vec![
                GpuView {
                    info: &gpus[0],
                    reading: Some(&r0),
                    health: GpuHealth::default(),
                    last_xid: 0,
                    job: Some(&job),
                    pod: None,
                },
                GpuView { info: &gpus[1], reading: Some(&r1), health: unhealthy, last_xid: 79, job: None, pod: None },
            ],
            counters: AgentCounters { dropped_samples: 3, ..AgentCounters::default() },
        };
        let text = render(&view);
        assert!(text.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge"), "{text}");
        let line = text.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"")).expect(&text);
        for want in [
            "UUID=\"GPU-sim-0\"",
            "device=\"nvidia0\"",
            "modelName=\"NVIDIA H100 80GB HBM3\"",
            "Hostname=\"host-a\"",
            "pci_bus_id=\"00000000:18:00.0\"",
            "namespace=\"default\"",
            "pod=\"train-1\"",
            "capstan_job=\"train\"",
            "capstan_replica=\"1\"",
            "simulated=\"true\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(line.ends_with(" 93.0"), "{line}");
        let line1 = text.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{gpu=\"1\"")).expect(&text);
        assert!(line1.contains("pid=\"7,9\"") && line1.contains("capstan_job=\"\""), "{line1}");
        // Only values the GPU offers: GPU 1 has no FB_USED.
        assert_eq!(text.lines().filter(|l| l.starts_with("DCGM_FI_DEV_FB_USED{")).count(), 1);
        assert!(text.lines().any(|l| l.starts_with("DCGM_FI_DEV_XID_ERRORS{gpu=\"1\"") && l.ends_with(" 79.0")));
        assert!(text.lines().any(|l| l.starts_with("capstan_gpu_healthy{gpu=\"1\"")
            && l.contains("reason=\"XidError\"")
            && l.ends_with(" 0.0")));
        assert!(text.contains("capstan_agent_samples_dropped_total 3"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn kubernetes_pods_give_namespace_pod_and_container() {
        let gpus = parse_simulate_spec("1").unwrap();
        let r0 = GpuReading { index: 0, gpu_util: Some(50.0), ..GpuReading::default() };
        let job = JobRef {
            namespace: "ml".into(),
            name: "llm".into(),
            uid: "u".into(),
            replica: 3,
            attempt: 2,
            run_id: None,
        };
        let pod = PodContainer {
            uid: "p".into(),
            namespace: "ml".into(),
            pod: "llm-2-3".into(),
            container: "trainer".into(),
            job: Some(job.clone()),
        };
        let view = View {
            hostname: "n",
            driver_version: "",
            gpus: vec![GpuView {
                info: &gpus[0],
                reading: Some(&r0),
                health: GpuHealth::default(),
                last_xid: 0,
                job: Some(&job),
                pod: Some(&pod),
            }],
            counters: AgentCounters::default(),
        };
        let text = render(&view);
        let line = text.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{")).expect(&text);
        for want in [
            "namespace=\"ml\"",
            "pod=\"llm-2-3\"",
            "container=\"trainer\"",
            "capstan_job=\"llm\"",
            "capstan_replica=\"3\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
    }
}
