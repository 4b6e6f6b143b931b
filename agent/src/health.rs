//! GPU health: what makes a GPU unhealthy, decided from its events and readings. Pure logic
//! ([`HealthTracker`]); the agent feeds it and keeps its verdicts on disk
//! ([`load`] / [`save`]) so that they survive an agent restart.
//!
//! A GPU becomes unhealthy, with a reason, on:
//! - a critical XID: every XID except the application ones ([`APPLICATION_XIDS`]: 13, 31,
//!   43, 45, 68, 109, which a faulty program causes and which leave the GPU fine);
//! - a double-bit (uncorrectable) ECC error, from an event or from the volatile counter
//!   going up between two readings;
//! - repeated thermal throttling: thermal slowdown in at least
//!   [`HealthPolicy::thermal_limit`] of the last [`HealthPolicy::thermal_window`] readings.
//!
//! It stays unhealthy until someone clears it (after a reset or a repair): a GPU that
//! threw XID 79 once is not trusted again on its own.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::gpu::{GpuEvent, GpuReading};
use crate::AgentError;

/// XIDs caused by the application (illegal address, MMU fault from user code, reset channel
/// by the program, preemptive cleanup, video processor exception, ...): the GPU is fine.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// NVML throttle reason bits that mean "too hot": software and hardware thermal slowdown.
pub const THERMAL_THROTTLE_MASK: u64 = 0x20 | 0x40;

/// Whether an XID is one a program causes (see [`APPLICATION_XIDS`]).
pub fn is_application_xid(xid: u64) -> bool {
    APPLICATION_XIDS.contains(&xid)
}

/// What an XID means, in a few words (NVIDIA's XID catalogue), for the common ones.
pub fn xid_description(xid: u64) -> &'static str {
    match xid {
        13 => "graphics engine exception (application)",
        31 => "GPU memory page fault (application)",
        43 => "GPU stopped processing (application)",
        45 => "preemptive cleanup (application)",
        48 => "double-bit ECC error",
        61 | 62 => "internal micro-controller error",
        63 => "ECC page retirement or row remapping recorded",
        64 => "ECC page retirement or row remapping failure",
        68 => "video processor exception (application)",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error",
        95 => "uncontained ECC error",
        109 => "context switch timeout (application)",
        119 | 120 => "GSP error",
        0 => "unknown XID",
        _ => "critical XID",
    }
}

/// When readings make a GPU unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Readings looked back at for thermal throttling.
    pub thermal_window: usize,
    /// Throttled readings within the window that make the GPU unhealthy.
    pub thermal_limit: usize,
}

impl Default for HealthPolicy {
    /// 10 throttled readings out of the last 60 (at 1 s: 10 s of throttling within a minute).
    fn default() -> Self {
        HealthPolicy { thermal_window: 60, thermal_limit: 10 }
    }
}

/// The health of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealth {
    /// False: the scheduler must not use it, and what runs on it is moved.
    pub healthy: bool,
    /// CamelCase: `XidError`, `DoubleBitEccError`, `ThermalThrottling` ("" when healthy).
    pub reason: String,
    /// For a person.
    pub message: String,
    /// When it turned unhealthy, ms since the epoch (0 when healthy).
    pub since_ms: i64,
}

impl Default for GpuHealth {
    fn default() -> Self {
        GpuHealth { healthy: true, reason: String::new(), message: String::new(), since_ms: 0 }
    }
}

/// A GPU turned unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// GPU index.
    pub index: u32,
    /// Its new health.
    pub health: GpuHealth,
}

/// Health of every GPU of a node, by index, and what it needs to remember between readings.
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {
    policy: HealthPolicy,
    health: BTreeMap<u32, GpuHealth>,
    thermal: BTreeMap<u32, VecDeque<bool>>,
    last_dbe: BTreeMap<u32, u64>,
}

impl HealthTracker {
    /// A tracker with this policy; every GPU healthy.
    pub fn new(policy: HealthPolicy) -> HealthTracker {
        HealthTracker { policy, ..HealthTracker::default() }
    }

    /// Start from known verdicts (loaded from disk).
    pub fn restore(&mut self, known: BTreeMap<u32, GpuHealth>) {
        for (index, h) in known {
            if !h.healthy {
                self.health.insert(index, h);
            }
        }
    }

    /// Health of a GPU (healthy unless told otherwise).
    pub fn health(&self, index: u32) -> GpuHealth {
        self.health.get(&index).cloned().unwrap_or_default()
    }

    /// Every unhealthy GPU.
    pub fn unhealthy(&self) -> &BTreeMap<u32, GpuHealth> {
        &self.health
    }

    fn mark(&mut self, index: u32, reason: &str, message: String, now_ms: i64) -> Option<Transition> {
        if self.health.contains_key(&index) {
            return None; // already unhealthy: the first reason stays
        }
        let health = GpuHealth { healthy: false, reason: reason.to_string(), message, since_ms: now_ms };
        self.health.insert(index, health.clone());
        Some(Transition { index, health })
    }

    /// Fold in an event. Returns the transition when it made the GPU unhealthy.
    pub fn observe_event(&mut self, event: &GpuEvent, now_ms: i64) -> Option<Transition> {
        match *event {
            GpuEvent::Xid { index, xid } if !is_application_xid(xid) => {
                let message = format!("XID {xid} ({}) on GPU {index}", xid_description(xid));
                self.mark(index, "XidError", message, now_ms)
            }
            GpuEvent::Xid { .. } | GpuEvent::EccSingleBit { .. } => None,
            GpuEvent::EccDoubleBit { index } => {
                self.mark(index, "DoubleBitEccError", format!("double-bit ECC error on GPU {index}"), now_ms)
            }
        }
    }

    /// Fold in a reading (double-bit counter, thermal throttling).
    pub fn observe_reading(&mut self, r: &GpuReading) -> Option<Transition> {
        let mut out = None;
        if let Some(dbe) = r.ecc_dbe_volatile {
            let before = self.last_dbe.insert(r.index, dbe);
            if let Some(before) = before {
                if dbe > before {
                    let message =
                        format!("volatile double-bit ECC errors on GPU {} went from {before} to {dbe}", r.index);
                    out = self.mark(r.index, "DoubleBitEccError", message, r.timestamp_ms);
                }
            }
        }
        if let Some(reasons) = r.throttle_reasons {
            let window = self.thermal.entry(r.index).or_default();
            window.push_back(reasons & THERMAL_THROTTLE_MASK != 0);
            while window.len() > self.policy.thermal_window.max(1) {
                window.pop_front();
            }
            let throttled = window.iter().filter(|t| **t).count();
            if throttled >= self.policy.thermal_limit.max(1) && out.is_none() {
                let message = format!(
                    "GPU {} throttled for heat in {throttled} of its last {} readings (temperature {})",
                    r.index,
                    window.len(),
                    r.gpu_temp_c.map(|t| format!("{t} °C")).unwrap_or_else(|| "unknown".into())
                );
                out = self.mark(r.index, "ThermalThrottling", message, r.timestamp_ms);
            }
        }
        out
    }

    /// Clear a GPU's verdict (after a reset or a repair). Returns whether it was unhealthy.
    pub fn clear(&mut self, index: u32) -> bool {
        self.thermal.remove(&index);
        self.health.remove(&index).is_some()
    }
}

/// The verdicts on disk: GPU UUID -> health (unhealthy ones only).
pub type Stored = BTreeMap<String, GpuHealth>;

/// Read the verdicts kept in `path` (none when the file does not exist).
pub fn load(path: &Path) -> Result<Stored, AgentError> {
    load_json(path)
}

/// Write the verdicts to `path` atomically (temporary file, fsync, rename).
pub fn save(path: &Path, stored: &Stored) -> Result<(), AgentError> {
    save_json(path, stored)
}

/// A JSON state file of the agent: the default value when it does not exist, an error naming
/// the file when it cannot be read or parsed.
pub(crate) fn load_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| AgentError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(AgentError::Io { path: path.display().to_string(), source }),
    }
}

/// Write a JSON state file atomically (temporary file, fsync, rename), creating its directory.
pub(crate) fn save_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    use std::io::Write;
    let io = |source| AgentError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let text = serde_json::to_string_pretty(value).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(index: u32, throttle: u64, dbe: u64, t: i64) -> GpuReading {
        GpuReading {
            index,
            timestamp_ms: t,
            throttle_reasons: Some(throttle),
            ecc_dbe_volatile: Some(dbe),
            gpu_temp_c: Some(95.0),
            ..GpuReading::default()
        }
    }

    #[test]
    fn critical_xid_marks_unhealthy_application_xid_does_not() {
        let mut t = HealthTracker::new(HealthPolicy::default());
        for xid in APPLICATION_XIDS {
            assert_eq!(t.observe_event(&GpuEvent::Xid { index: 0, xid }, 1), None, "XID {xid}");
        }
        assert!(t.health(0).healthy);
        let tr = t.observe_event(&GpuEvent::Xid { index: 0, xid: 79 }, 5).expect("XID 79 is critical");
        assert_eq!(tr.index, 0);
        assert_eq!(tr.health.reason, "XidError");
        assert!(tr.health.message.contains("XID 79") && tr.health.message.contains("fallen off the bus"));
        assert_eq!(tr.health.since_ms, 5);
        // Once unhealthy, more faults change nothing (the first reason stays).
        assert_eq!(t.observe_event(&GpuEvent::EccDoubleBit { index: 0 }, 6), None);
        assert_eq!(t.health(0).reason, "XidError");
        assert!(t.health(1).healthy);
    }

    #[test]
    fn every_non_application_xid_is_critical() {
        for xid in [0u64, 8, 48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 154] {
            let mut t = HealthTracker::new(HealthPolicy::default());
            assert!(t.observe_event(&GpuEvent::Xid { index: 3, xid }, 0).is_some(), "XID {xid}");
        }
    }

    #[test]
    fn double_bit_ecc_from_event_or_counter() {
        let mut t = HealthTracker::new(HealthPolicy::default());
        assert!(t.observe_event(&GpuEvent::EccSingleBit { index: 1 }, 0).is_none());
        assert!(t.observe_event(&GpuEvent::EccDoubleBit { index: 1 }, 0).is_some());
        // Counter: the first reading is the baseline (errors from before the agent started
        // are not news); a rise after it is.
        let mut t = HealthTracker::new(HealthPolicy::default());
        assert!(t.observe_reading(&reading(2, 0, 4, 0)).is_none());
        assert!(t.observe_reading(&reading(2, 0, 4, 1)).is_none());
        let tr = t.observe_reading(&reading(2, 0, 5, 2)).expect("counter went up");
        assert_eq!(tr.health.reason, "DoubleBitEccError");
    }

    #[test]
    fn repeated_thermal_throttling() {
        let policy = HealthPolicy { thermal_window: 10, thermal_limit: 3 };
        let mut t = HealthTracker::new(policy);
        // Two throttled readings, far apart: fine.
        assert!(t.observe_reading(&reading(0, 0x40, 0, 0)).is_none());
        for i in 1..12 {
            assert!(t.observe_reading(&reading(0, 0x1, 0, i)).is_none());
        }
        assert!(t.observe_reading(&reading(0, 0x20, 0, 12)).is_none());
        assert!(t.observe_reading(&reading(0, 0x20, 0, 13)).is_none());
        // Power capping is not heat.
        assert!(t.observe_reading(&reading(0, 0x4, 0, 14)).is_none());
        let tr = t.observe_reading(&reading(0, 0x60, 0, 15)).expect("3 of the last 10");
        assert_eq!(tr.health.reason, "ThermalThrottling");
        assert!(tr.health.message.contains("95 °C"), "{}", tr.health.message);
    }

    #[test]
    fn clear_and_restore() {
        let mut t = HealthTracker::new(HealthPolicy::default());
        t.observe_event(&GpuEvent::Xid { index: 4, xid: 48 }, 0);
        let kept = t.unhealthy().clone();
        let mut again = HealthTracker::new(HealthPolicy::default());
        again.restore(kept);
        assert!(!again.health(4).healthy);
        assert!(again.clear(4));
        assert!(!again.clear(4));
        assert!(again.health(4).healthy);
    }

    #[test]
    fn stored_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("gpu-health.json");
        assert!(load(&path).unwrap().is_empty());
        let mut s = Stored::new();
        s.insert(
            "GPU-1".into(),
            GpuHealth { healthy: false, reason: "XidError".into(), message: "XID 79".into(), since_ms: 9 },
        );
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
    }
}
