//! The node's GPU inventory.
//!
//! For now only simulated GPUs (`--simulate-gpus`); the NVML-backed inventory comes later.

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
