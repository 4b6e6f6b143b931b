//! What the agent writes on its Kubernetes Node, as plain values (the kube adapter in the
//! `capstan agent` binary applies them): GPU Feature Discovery's labels, the indices of
//! unhealthy GPUs (read by the controller's scheduler, which then never places a replica on
//! them), a node condition and a taint while any GPU is unhealthy. Pure: unit-tested here.

use std::collections::BTreeMap;

use crate::gpu::GpuInfo;
use crate::health::GpuHealth;

/// Label: GPU product (GFD's name).
pub const LABEL_PRODUCT: &str = "nvidia.com/gpu.product";
/// Label: memory of one GPU in MiB (GFD's name).
pub const LABEL_MEMORY: &str = "nvidia.com/gpu.memory";
/// Label: number of GPUs (GFD's name).
pub const LABEL_COUNT: &str = "nvidia.com/gpu.count";
/// Label: GPUs present (GFD's name; the chart's DaemonSet selects on it).
pub const LABEL_PRESENT: &str = "nvidia.com/gpu.present";
/// Label: the GPUs are simulated (`--simulate-gpus`), never real ones.
pub const LABEL_SIMULATED: &str = "capstan.dev/gpu.simulated";
/// Annotation: unhealthy GPU indices, comma-separated (empty: none).
pub const ANNOTATION_UNHEALTHY: &str = "capstan.dev/unhealthy-gpus";
/// Node condition type.
pub const CONDITION: &str = "CapstanGPUUnhealthy";
/// Taint key while any GPU is unhealthy.
pub const TAINT: &str = "capstan.dev/gpu-unhealthy";

/// The Node's GPU facts the agent owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGpuState {
    /// Labels to set.
    pub labels: BTreeMap<String, String>,
    /// Value of [`ANNOTATION_UNHEALTHY`].
    pub unhealthy: String,
    /// The condition: status ("True" while some GPU is unhealthy), reason, message.
    pub condition: (String, String, String),
    /// The taint `(key, value, effect)` while some GPU is unhealthy. `NoSchedule` once every
    /// GPU is unhealthy (nothing can use the node's GPUs); `PreferNoSchedule` while some are
    /// still healthy (Capstan's pods tolerate it and avoid the bad GPUs one by one; others
    /// steer clear if they can).
    pub taint: Option<(String, String, String)>,
}

/// Sanitise a product name into a label value (GFD replaces spaces with dashes).
pub fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The state for these GPUs and health verdicts.
pub fn node_state(gpus: &[GpuInfo], health: &BTreeMap<u32, GpuHealth>) -> NodeGpuState {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_COUNT.to_string(), gpus.len().to_string());
    labels.insert(LABEL_PRESENT.to_string(), (!gpus.is_empty()).to_string());
    if let Some(g) = gpus.first() {
        labels.insert(LABEL_PRODUCT.to_string(), label_value(&g.product));
        labels.insert(LABEL_MEMORY.to_string(), g.memory_mib.to_string());
        labels.insert(LABEL_SIMULATED.to_string(), g.simulated.to_string());
    }
    let bad: Vec<(&u32, &GpuHealth)> = health.iter().filter(|(_, h)| !h.healthy).collect();
    let unhealthy = bad.iter().map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(",");
    let (condition, taint) = if bad.is_empty() {
        (("False".to_string(), "GPUsHealthy".to_string(), format!("all {} GPUs healthy", gpus.len())), None)
    } else {
        let message =
            bad.iter().map(|(i, h)| format!("GPU {i}: {} ({})", h.reason, h.message)).collect::<Vec<_>>().join("; ");
        let effect = if bad.len() >= gpus.len() { "NoSchedule" } else { "PreferNoSchedule" };
        (
            ("True".to_string(), bad[0].1.reason.clone(), message),
            Some((TAINT.to_string(), bad.len().to_string(), effect.to_string())),
        )
    };
    NodeGpuState { labels, unhealthy, condition, taint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32) -> GpuInfo {
        GpuInfo {
            index: i,
            uuid: format!("GPU-{i}"),
            product: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81559,
            simulated: true,
            pci_bus_id: String::new(),
            minor: i,
            power_limit_w: None,
        }
    }

    fn bad(reason: &str) -> GpuHealth {
        GpuHealth { healthy: false, reason: reason.into(), message: "xid 79".into(), since_ms: 1 }
    }

    #[test]
    fn healthy_gpus_give_gfd_labels_and_no_taint() {
        let gpus: Vec<GpuInfo> = (0..8).map(gpu).collect();
        let s = node_state(&gpus, &BTreeMap::new());
        assert_eq!(s.labels[LABEL_PRODUCT], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(s.labels[LABEL_COUNT], "8");
        assert_eq!(s.labels[LABEL_MEMORY], "81559");
        assert_eq!(s.labels[LABEL_SIMULATED], "true");
        assert_eq!(s.unhealthy, "");
        assert_eq!(s.condition.0, "False");
        assert!(s.taint.is_none());
    }

    #[test]
    fn unhealthy_gpus_are_listed_with_a_condition_and_a_taint_that_hardens_when_all_are_bad() {
        let gpus: Vec<GpuInfo> = (0..2).map(gpu).collect();
        let mut h = BTreeMap::new();
        h.insert(1, bad("XidCritical"));
        h.insert(0, GpuHealth { healthy: true, reason: String::new(), message: String::new(), since_ms: 0 });
        let s = node_state(&gpus, &h);
        assert_eq!(s.unhealthy, "1");
        assert_eq!(s.condition.0, "True");
        assert_eq!(s.condition.1, "XidCritical");
        assert!(s.condition.2.contains("GPU 1"));
        assert_eq!(s.taint.as_ref().unwrap().2, "PreferNoSchedule");
        h.insert(0, bad("DoubleBitEcc"));
        let s = node_state(&gpus, &h);
        assert_eq!(s.unhealthy, "0,1");
        assert_eq!(s.taint.unwrap().2, "NoSchedule");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("NVIDIA A100-SXM4-80GB"), "NVIDIA-A100-SXM4-80GB");
        assert_eq!(label_value(" (x) "), "x");
        assert!(label_value(&"a".repeat(100)).len() <= 63);
    }
}
