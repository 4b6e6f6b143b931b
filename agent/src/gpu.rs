//! The node's GPUs: what they are ([`GpuInfo`]), what they read now ([`GpuReading`]), what
//! happens to them ([`GpuEvent`]), behind one trait, [`GpuSource`], with two sources:
//!
//! - [`nvml`]: the real GPUs through NVML (nvml-wrapper, which loads `libnvidia-ml.so` at run
//!   time). No library, no driver or no GPU: [`open`] says so in one line and the node has no
//!   GPUs; nothing else changes.
//! - [`sim`]: simulated GPUs (`--simulate-gpus 8` or `8xH100-80GB`) for development and tests:
//!   plausible readings that follow the jobs placed on each GPU, and injectable faults
//!   ([`Fault`]). Everything they produce says `simulated`.

pub mod nvml;
pub mod sim;

use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Product name of the GPUs of a spec that gives only a count.
pub const DEFAULT_PRODUCT: &str = "NVIDIA-H100-80GB-HBM3";
/// Memory of [`DEFAULT_PRODUCT`], in MiB (what nvidia-smi reports for an H100 SXM 80GB).
pub const DEFAULT_MEMORY_MIB: u64 = 81559;
/// Memory of a named product whose name gives none (no `-NNGB` part), in MiB.
pub const FALLBACK_MEMORY_MIB: u64 = 81920;
/// Most GPUs a node may simulate.
pub const MAX_SIMULATED: usize = 64;

/// One GPU of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Index on the node (what CUDA_VISIBLE_DEVICES names).
    pub index: u32,
    /// Stable identifier ("GPU-..." like nvidia-smi).
    pub uuid: String,
    /// Product name, e.g. "NVIDIA-H100-80GB-HBM3".
    pub product: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Whether it is simulated (`--simulate-gpus`) rather than found on the node.
    pub simulated: bool,
    /// PCI bus id as NVML writes it (`00000000:18:00.0`).
    #[serde(default)]
    pub pci_bus_id: String,
    /// Minor number: the device file is `/dev/nvidia<minor>` (dcgm-exporter's `device`).
    #[serde(default)]
    pub minor: u32,
    /// Enforced power limit in watts, when known.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
}

impl GpuInfo {
    /// dcgm-exporter's `device` label: `nvidia<minor>`.
    pub fn device(&self) -> String {
        format!("nvidia{}", self.minor)
    }

    /// dcgm-exporter's `modelName` label: the product with spaces (`NVIDIA H100 80GB HBM3`).
    pub fn model_name(&self) -> String {
        self.product.replace('-', " ")
    }
}

/// Which kind of source the GPUs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// No GPUs (no NVML library, no driver, no device, or none asked for).
    None,
    /// Real GPUs through NVML.
    Nvml,
    /// Simulated GPUs.
    Simulated,
}

/// A process using a GPU (NVML's running compute processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id (as the host sees it).
    pub pid: u32,
    /// GPU memory it uses, MiB, when known.
    pub used_mib: Option<u64>,
}

/// What one GPU reads at one instant. A value the GPU or driver does not offer is `None`
/// and its series is left out rather than written as 0.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuReading {
    /// GPU index on the node.
    pub index: u32,
    /// When it was read, ms since the epoch.
    pub timestamp_ms: i64,
    /// Percent of time a kernel ran (DCGM_FI_DEV_GPU_UTIL).
    pub gpu_util: Option<f64>,
    /// Percent of time device memory was read or written (DCGM_FI_DEV_MEM_COPY_UTIL).
    pub mem_copy_util: Option<f64>,
    /// Framebuffer memory used, MiB (DCGM_FI_DEV_FB_USED).
    pub fb_used_mib: Option<f64>,
    /// Framebuffer memory free, MiB (DCGM_FI_DEV_FB_FREE).
    pub fb_free_mib: Option<f64>,
    /// Framebuffer memory in all, MiB.
    pub fb_total_mib: Option<f64>,
    /// GPU temperature, °C (DCGM_FI_DEV_GPU_TEMP).
    pub gpu_temp_c: Option<f64>,
    /// Memory (HBM) temperature, °C (DCGM_FI_DEV_MEMORY_TEMP).
    pub memory_temp_c: Option<f64>,
    /// Power draw, W (DCGM_FI_DEV_POWER_USAGE).
    pub power_w: Option<f64>,
    /// Energy since the driver loaded, mJ (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION).
    pub energy_mj: Option<f64>,
    /// SM clock, MHz (DCGM_FI_DEV_SM_CLOCK).
    pub sm_clock_mhz: Option<f64>,
    /// Memory clock, MHz (DCGM_FI_DEV_MEM_CLOCK).
    pub mem_clock_mhz: Option<f64>,
    /// NVML clock throttle reasons bitmask (DCGM_FI_DEV_CLOCK_THROTTLE_REASONS).
    pub throttle_reasons: Option<u64>,
    /// PCIe transmit throughput, KB/s (DCGM_FI_DEV_PCIE_TX_THROUGHPUT).
    pub pcie_tx_kbps: Option<f64>,
    /// PCIe receive throughput, KB/s (DCGM_FI_DEV_PCIE_RX_THROUGHPUT).
    pub pcie_rx_kbps: Option<f64>,
    /// PCIe replay counter (DCGM_FI_DEV_PCIE_REPLAY_COUNTER).
    pub pcie_replay: Option<u64>,
    /// Volatile single-bit (corrected) ECC errors (DCGM_FI_DEV_ECC_SBE_VOL_TOTAL).
    pub ecc_sbe_volatile: Option<u64>,
    /// Volatile double-bit (uncorrected) ECC errors (DCGM_FI_DEV_ECC_DBE_VOL_TOTAL).
    pub ecc_dbe_volatile: Option<u64>,
    /// Compute processes on the GPU.
    pub processes: Vec<GpuProcess>,
}

/// Something that happened to a GPU (NVML's event set, or an injected fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuEvent {
    /// An XID error of this number.
    Xid {
        /// GPU index.
        index: u32,
        /// XID number.
        xid: u64,
    },
    /// A double-bit (uncorrectable) ECC error.
    EccDoubleBit {
        /// GPU index.
        index: u32,
    },
    /// A single-bit (corrected) ECC error.
    EccSingleBit {
        /// GPU index.
        index: u32,
    },
}

impl GpuEvent {
    /// The GPU it is about.
    pub fn index(&self) -> u32 {
        match self {
            GpuEvent::Xid { index, .. } | GpuEvent::EccDoubleBit { index } | GpuEvent::EccSingleBit { index } => *index,
        }
    }
}

/// A fault injected into a simulated GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Raise this XID.
    Xid(u64),
    /// Add this many double-bit ECC errors (each raises an event).
    EccDbe(u64),
    /// Overheat (the GPU reaches 97 °C and throttles), or stop overheating.
    Overheat(bool),
}

/// What runs on one GPU, as the simulated source needs it to shape its readings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuLoad {
    /// GPU index.
    pub index: u32,
    /// Replicas placed on it (0 = idle).
    pub replicas: u32,
    /// When the earliest of them was placed, ms since the epoch.
    pub since_ms: i64,
    /// Their process ids (process replicas), reported as the GPU's compute processes.
    pub pids: Vec<u32>,
}

/// A source of GPU readings and events.
pub trait GpuSource: Send {
    /// Which kind it is.
    fn kind(&self) -> SourceKind;
    /// The GPUs, by index.
    fn devices(&self) -> &[GpuInfo];
    /// Driver version (dcgm-exporter's `DCGM_FI_DRIVER_VERSION` label), "" when unknown.
    fn driver_version(&self) -> &str;
    /// Read every GPU now. `loads` says what runs where (only the simulated source uses it).
    fn sample(&mut self, loads: &[GpuLoad], now_ms: i64) -> Vec<GpuReading>;
    /// Events since the last call.
    fn events(&mut self) -> Vec<GpuEvent>;
    /// Inject a fault. Only simulated GPUs take faults: a real one is [`AgentError::Invalid`].
    fn inject(&mut self, index: u32, fault: Fault) -> Result<(), AgentError>;
}

/// A node without GPUs.
#[derive(Debug, Default)]
pub struct NoGpus;

impl GpuSource for NoGpus {
    fn kind(&self) -> SourceKind {
        SourceKind::None
    }
    fn devices(&self) -> &[GpuInfo] {
        &[]
    }
    fn driver_version(&self) -> &str {
        ""
    }
    fn sample(&mut self, _loads: &[GpuLoad], _now_ms: i64) -> Vec<GpuReading> {
        Vec::new()
    }
    fn events(&mut self) -> Vec<GpuEvent> {
        Vec::new()
    }
    fn inject(&mut self, index: u32, _fault: Fault) -> Result<(), AgentError> {
        Err(AgentError::Invalid(format!("this node has no GPU {index}")))
    }
}

/// The GPU source of a node: simulated GPUs when `simulate` is a spec, else NVML. Returns
/// the source and, when NVML is not usable, the one line saying why (the caller logs it;
/// the node then has no GPUs and everything else works). A bad spec is
/// [`AgentError::Invalid`].
pub fn open(simulate: Option<&str>, node: &str) -> Result<(Box<dyn GpuSource>, Option<String>), AgentError> {
    match simulate.map(str::trim) {
        Some(spec) if !spec.is_empty() => Ok((Box::new(sim::SimulatedSource::new(simulated_gpus(spec, node)?)), None)),
        _ => match nvml::NvmlSource::open(None) {
            Ok(source) if source.devices().is_empty() => {
                Ok((Box::new(NoGpus), Some("NVML loaded but reports no GPUs: this node runs with no GPUs".into())))
            }
            Ok(source) => Ok((Box::new(source), None)),
            Err(why) => Ok((Box::new(NoGpus), Some(why))),
        },
    }
}

fn invalid(spec: &str, position: usize, what: &str) -> AgentError {
    AgentError::Invalid(format!(
        "--simulate-gpus {spec:?}: at position {position}: {what} (expected COUNT or COUNTxPRODUCT, e.g. \"8\" or \"4xA100-40GB\", comma-separated groups allowed, 1 to {MAX_SIMULATED} GPUs in all)"
    ))
}

/// Memory in MiB from the last `-NNGB` part of a product name, if any.
fn memory_from_product(product: &str) -> Option<u64> {
    product
        .split('-')
        .filter_map(|part| {
            let digits = part.strip_suffix("GB").or_else(|| part.strip_suffix("gb"))?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u64>().ok().filter(|gb| *gb > 0)
        })
        .next_back()
        .map(|gb| gb * 1024)
}

/// Parse a `--simulate-gpus` spec: `"8"` (8 x NVIDIA-H100-80GB-HBM3 of 81559 MiB),
/// `"4xA100-40GB"` (4 x NVIDIA-A100-40GB of 40960 MiB: memory from the `-NNGB` part of the
/// name, else 81920 MiB), or groups of these separated by commas (`"2xA100-40GB,2xL4-24GB"`),
/// 1 to 64 GPUs in all. Indices count from 0 across groups; UUIDs are `GPU-sim-<index>`
/// ([`Agent::new`](crate::Agent::new) puts the node name in them). An error names the
/// position (character offset) in the spec where it went wrong.
pub fn parse_simulate_spec(spec: &str) -> Result<Vec<GpuInfo>, AgentError> {
    let mut gpus = Vec::new();
    let mut offset = 0usize;
    if spec.trim().is_empty() {
        return Err(invalid(spec, 0, "empty spec"));
    }
    for group in spec.split(',') {
        let lead = group.len() - group.trim_start().len();
        let text = group.trim();
        let start = offset + lead;
        offset += group.len() + 1;
        if text.is_empty() {
            return Err(invalid(spec, start, "empty group"));
        }
        let (count_text, product) = match text.find(['x', 'X']) {
            Some(at) => (&text[..at], Some((&text[at + 1..], start + at + 1))),
            None => (text, None),
        };
        if count_text.is_empty() || !count_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(spec, start, "expected a GPU count"));
        }
        let count: usize = count_text.parse().map_err(|_| invalid(spec, start, "GPU count too large"))?;
        if count == 0 {
            return Err(invalid(spec, start, "GPU count must be at least 1"));
        }
        let (product, memory_mib) = match product {
            None => (DEFAULT_PRODUCT.to_string(), DEFAULT_MEMORY_MIB),
            Some((name, at)) => {
                let name = name.trim();
                if name.is_empty() {
                    return Err(invalid(spec, at, "expected a product name after 'x'"));
                }
                if let Some(bad) =
                    name.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                {
                    return Err(invalid(
                        spec,
                        at + bad.0,
                        &format!("unexpected character {:?} in the product name", bad.1),
                    ));
                }
                let product = if name.to_ascii_uppercase().starts_with("NVIDIA-") {
                    name.to_string()
                } else {
                    format!("NVIDIA-{name}")
                };
                let memory = memory_from_product(name).unwrap_or(FALLBACK_MEMORY_MIB);
                (product, memory)
            }
        };
        if gpus.len() + count > MAX_SIMULATED {
            return Err(invalid(spec, start, &format!("more than {MAX_SIMULATED} GPUs")));
        }
        for _ in 0..count {
            let index = gpus.len() as u32;
            gpus.push(GpuInfo {
                index,
                uuid: format!("GPU-sim-{index}"),
                product: product.clone(),
                memory_mib,
                simulated: true,
                pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + index),
                minor: index,
                power_limit_w: Some(sim::power_limit_w(&product)),
            });
        }
    }
    Ok(gpus)
}

/// Simulated GPUs of node `node`: [`parse_simulate_spec`] with UUIDs
/// `GPU-sim-<node>-<index>`, unique across the nodes of a cluster.
pub fn simulated_gpus(spec: &str, node: &str) -> Result<Vec<GpuInfo>, AgentError> {
    let mut gpus = parse_simulate_spec(spec)?;
    for gpu in &mut gpus {
        gpu.uuid = format!("GPU-sim-{node}-{}", gpu.index);
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_only() {
        let gpus = parse_simulate_spec("8").unwrap();
        assert_eq!(gpus.len(), 8);
        assert!(gpus.iter().all(|g| g.product == DEFAULT_PRODUCT && g.memory_mib == 81559 && g.simulated));
        assert_eq!(gpus[7].index, 7);
        assert_eq!(gpus[3].uuid, "GPU-sim-3");
    }

    #[test]
    fn named_product() {
        let gpus = parse_simulate_spec("4xA100-40GB").unwrap();
        assert_eq!(gpus.len(), 4);
        assert_eq!(gpus[0].product, "NVIDIA-A100-40GB");
        assert_eq!(gpus[0].memory_mib, 40960);
        let gpus = parse_simulate_spec("2xL4").unwrap();
        assert_eq!(gpus[1].product, "NVIDIA-L4");
        assert_eq!(gpus[1].memory_mib, 81920);
        let gpus = parse_simulate_spec("1xNVIDIA-H100-80GB-HBM3").unwrap();
        assert_eq!(gpus[0].product, "NVIDIA-H100-80GB-HBM3");
        assert_eq!(gpus[0].memory_mib, 80 * 1024);
    }

    #[test]
    fn groups() {
        let gpus = parse_simulate_spec("2xA100-40GB, 1xL4-24GB").unwrap();
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[2].index, 2);
        assert_eq!(gpus[2].product, "NVIDIA-L4-24GB");
        assert_eq!(gpus[2].memory_mib, 24 * 1024);
    }

    #[test]
    fn node_uuids() {
        let gpus = simulated_gpus("2", "node-a").unwrap();
        assert_eq!(gpus[1].uuid, "GPU-sim-node-a-1");
    }

    #[test]
    fn bad_specs() {
        for (spec, position) in [
            ("", 0),
            ("0", 0),
            ("65", 0),
            ("abc", 0),
            ("4x", 2),
            ("x4", 0),
            ("2,", 2),
            ("2,y", 2),
            ("4xA1 00", 4),
            ("40xA,30xB", 5),
            ("-1", 0),
        ] {
            match parse_simulate_spec(spec) {
                Err(AgentError::Invalid(message)) => {
                    assert!(message.contains(&format!("at position {position}:")), "{spec:?}: {message}")
                }
                other => panic!("{spec:?}: {other:?}"),
            }
        }
        assert_eq!(parse_simulate_spec("64").unwrap().len(), 64);
    }
}
