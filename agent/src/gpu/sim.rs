//! Simulated GPUs: readings that follow the jobs placed on each GPU, and injectable faults.
//!
//! The model, per GPU and per sample (plain arithmetic, no clock of its own: the caller
//! passes the time):
//! - idle (no replica placed): 0 % utilization, 0 MiB used, ~8 % of the power limit, 32 °C;
//! - busy: utilization ramps to ~92 % over the first 5 s after placement (± a few percent of
//!   deterministic noise), memory to ~72 % of the total, power to ~85 % of the limit,
//!   the temperature moves a fifth of the way to its target each sample (~68 °C busy);
//! - the energy counter integrates the power; memory clock is fixed, the SM clock boosts
//!   when busy and drops when throttling;
//! - [`Fault::Overheat`]: 97 °C at once, memory 105 °C, thermal throttle reasons set and the
//!   SM clock down, until `Overheat(false)`; [`Fault::Xid`]: an XID event (and the reading's
//!   XID value); [`Fault::EccDbe`]: the volatile double-bit counter goes up and an event fires.

use super::{Fault, GpuEvent, GpuInfo, GpuLoad, GpuProcess, GpuReading, GpuSource, SourceKind};
use crate::AgentError;

/// NVML's software thermal slowdown throttle reason bit.
pub const THROTTLE_SW_THERMAL: u64 = 0x20;
/// NVML's hardware thermal slowdown throttle reason bit.
pub const THROTTLE_HW_THERMAL: u64 = 0x40;
/// NVML's "GPU idle" throttle reason bit.
pub const THROTTLE_IDLE: u64 = 0x1;

/// Temperature an overheating GPU reads at once, °C.
pub const OVERHEAT_C: f64 = 97.0;
/// Seconds over which utilization ramps up after placement.
const RAMP_MS: f64 = 5000.0;

/// Power limit of a product, W (H100/H200 SXM 700, A100 400, L4 72, L40 300, others 300).
pub fn power_limit_w(product: &str) -> f64 {
    let p = product.to_ascii_uppercase();
    if p.contains("H100") || p.contains("H200") || p.contains("GH200") {
        700.0
    } else if p.contains("B200") {
        1000.0
    } else if p.contains("A100") {
        400.0
    } else if p.contains("L4") && !p.contains("L40") {
        72.0
    } else {
        300.0
    }
}

/// Memory clock of a product, MHz (HBM3 2619, HBM2e 1593, GDDR6 6251).
fn mem_clock_mhz(product: &str) -> f64 {
    let p = product.to_ascii_uppercase();
    if p.contains("H100") || p.contains("H200") || p.contains("B200") {
        2619.0
    } else if p.contains("A100") {
        1593.0
    } else {
        6251.0
    }
}

/// State of one simulated GPU.
#[derive(Debug, Clone)]
struct SimGpu {
    gpu_temp: f64,
    energy_mj: f64,
    last_ms: Option<i64>,
    overheat: bool,
    ecc_dbe: u64,
    ecc_sbe: u64,
    noise: u64,
}

/// Deterministic noise in [-1, 1] (xorshift64*).
fn noise(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    (v as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// The simulated source.
#[derive(Debug)]
pub struct SimulatedSource {
    gpus: Vec<GpuInfo>,
    state: Vec<SimGpu>,
    events: Vec<GpuEvent>,
}

impl SimulatedSource {
    /// Simulate these GPUs (from [`super::simulated_gpus`]).
    pub fn new(gpus: Vec<GpuInfo>) -> SimulatedSource {
        let state = gpus
            .iter()
            .map(|g| SimGpu {
                gpu_temp: 32.0,
                energy_mj: 0.0,
                last_ms: None,
                overheat: false,
                ecc_dbe: 0,
                ecc_sbe: 0,
                noise: 0x9E37_79B9_7F4A_7C15 ^ (u64::from(g.index) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            })
            .collect();
        SimulatedSource { gpus, state, events: Vec::new() }
    }

    fn position(&self, index: u32) -> Option<usize> {
        self.gpus.iter().position(|g| g.index == index)
    }
}

impl GpuSource for SimulatedSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Simulated
    }

    fn devices(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn driver_version(&self) -> &str {
        "simulated"
    }

    fn sample(&mut self, loads: &[GpuLoad], now_ms: i64) -> Vec<GpuReading> {
        let mut out = Vec::with_capacity(self.gpus.len());
        for (info, st) in self.gpus.iter().zip(self.state.iter_mut()) {
            let load = loads.iter().find(|l| l.index == info.index && l.replicas > 0);
            let limit = info.power_limit_w.unwrap_or(300.0);
            let total = info.memory_mib as f64;
            let (util, used) = match load {
                Some(l) => {
                    let ramp = ((now_ms - l.since_ms).max(0) as f64 / RAMP_MS).min(1.0);
                    let util = (92.0 + 4.0 * noise(&mut st.noise)) * ramp;
                    let used = total * (0.05 + 0.67 * ramp) + 64.0 * noise(&mut st.noise);
                    (util.clamp(0.0, 100.0), used.clamp(0.0, total))
                }
                None => (0.0, 0.0),
            };
            let target = if st.overheat { OVERHEAT_C } else { 32.0 + 0.39 * util };
            st.gpu_temp = if st.overheat { OVERHEAT_C } else { st.gpu_temp + (target - st.gpu_temp) * 0.2 };
            let throttling = st.overheat || st.gpu_temp >= 90.0;
            let power = limit * (0.08 + 0.77 * util / 100.0) * if throttling { 0.6 } else { 1.0 };
            if let Some(last) = st.last_ms {
                let dt_s = (now_ms - last).max(0) as f64 / 1000.0;
                st.energy_mj += power * dt_s * 1000.0;
            }
            st.last_ms = Some(now_ms);
            let sm_clock = if throttling {
                1095.0
            } else if util > 0.0 {
                1980.0
            } else {
                345.0
            };
            let mut reasons = 0u64;
            if util == 0.0 {
                reasons |= THROTTLE_IDLE;
            }
            if throttling {
                reasons |= THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL;
            }
            let reserved = (total * 0.006).round();
            out.push(GpuReading {
                index: info.index,
                timestamp_ms: now_ms,
                gpu_util: Some(util.round()),
                mem_copy_util: Some((util * 0.45).round()),
                fb_used_mib: Some(used.round()),
                fb_free_mib: Some((total - used.round() - reserved).max(0.0)),
                fb_total_mib: Some(total),
                gpu_temp_c: Some(st.gpu_temp.round()),
                memory_temp_c: Some(if st.overheat { 105.0 } else { (st.gpu_temp + 6.0).round() }),
                power_w: Some((power * 1000.0).round() / 1000.0),
                energy_mj: Some(st.energy_mj.round()),
                sm_clock_mhz: Some(sm_clock),
                mem_clock_mhz: Some(mem_clock_mhz(&info.product)),
                throttle_reasons: Some(reasons),
                pcie_tx_kbps: Some((util * 2_400.0).round()),
                pcie_rx_kbps: Some((util * 3_100.0).round()),
                pcie_replay: Some(0),
                ecc_sbe_volatile: Some(st.ecc_sbe),
                ecc_dbe_volatile: Some(st.ecc_dbe),
                processes: load
                    .map(|l| {
                        let each = if l.pids.is_empty() { 0.0 } else { used / l.pids.len() as f64 };
                        l.pids.iter().map(|&pid| GpuProcess { pid, used_mib: Some(each.round() as u64) }).collect()
                    })
                    .unwrap_or_default(),
            });
        }
        out
    }

    fn events(&mut self) -> Vec<GpuEvent> {
        std::mem::take(&mut self.events)
    }

    fn inject(&mut self, index: u32, fault: Fault) -> Result<(), AgentError> {
        let at = self.position(index).ok_or_else(|| AgentError::Invalid(format!("this node has no GPU {index}")))?;
        let st = &mut self.state[at];
        match fault {
            Fault::Xid(xid) => self.events.push(GpuEvent::Xid { index, xid }),
            Fault::EccDbe(n) => {
                st.ecc_dbe += n;
                for _ in 0..n.min(16) {
                    self.events.push(GpuEvent::EccDoubleBit { index });
                }
            }
            Fault::Overheat(on) => {
                st.overheat = on;
                if !on {
                    st.gpu_temp = 60.0;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::parse_simulate_spec;

    fn source(n: &str) -> SimulatedSource {
        SimulatedSource::new(parse_simulate_spec(n).unwrap())
    }

    #[test]
    fn idle_gpus_read_idle() {
        let mut s = source("2");
        let r = s.sample(&[], 1_000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gpu_util, Some(0.0));
        assert_eq!(r[0].fb_used_mib, Some(0.0));
        assert!(r[0].fb_free_mib.unwrap() > 80_000.0);
        assert!(r[0].power_w.unwrap() < 100.0);
        assert!(r[0].processes.is_empty());
    }

    #[test]
    fn readings_follow_the_load() {
        let mut s = source("2");
        let load = [GpuLoad { index: 1, replicas: 1, since_ms: 0, pids: vec![42] }];
        let mut last = Vec::new();
        for t in 0..30 {
            last = s.sample(&load, 1_000 * t);
        }
        let (idle, busy) = (&last[0], &last[1]);
        assert_eq!(idle.gpu_util, Some(0.0));
        let util = busy.gpu_util.unwrap();
        assert!((85.0..=97.0).contains(&util), "{util}");
        assert!(busy.fb_used_mib.unwrap() > 50_000.0);
        assert!(busy.power_w.unwrap() > 400.0);
        assert!(busy.gpu_temp_c.unwrap() > idle.gpu_temp_c.unwrap() + 20.0);
        assert!(busy.energy_mj.unwrap() > idle.energy_mj.unwrap());
        assert_eq!(busy.processes, vec![GpuProcess { pid: 42, used_mib: Some(busy.fb_used_mib.unwrap() as u64) }]);
        // Used plus free never exceeds the total.
        for r in &last {
            assert!(r.fb_used_mib.unwrap() + r.fb_free_mib.unwrap() <= r.fb_total_mib.unwrap());
        }
    }

    #[test]
    fn ramp_starts_low() {
        let mut s = source("1");
        let load = [GpuLoad { index: 0, replicas: 1, since_ms: 10_000, pids: vec![] }];
        let r = s.sample(&load, 10_500);
        assert!(r[0].gpu_util.unwrap() < 20.0);
    }

    #[test]
    fn faults() {
        let mut s = source("2");
        s.inject(1, Fault::Xid(79)).unwrap();
        s.inject(0, Fault::EccDbe(2)).unwrap();
        let ev = s.events();
        assert_eq!(
            ev,
            vec![
                GpuEvent::Xid { index: 1, xid: 79 },
                GpuEvent::EccDoubleBit { index: 0 },
                GpuEvent::EccDoubleBit { index: 0 }
            ]
        );
        assert!(s.events().is_empty(), "events are delivered once");
        let r = s.sample(&[], 0);
        assert_eq!(r[0].ecc_dbe_volatile, Some(2));
        s.inject(0, Fault::Overheat(true)).unwrap();
        let r = s.sample(&[], 1000);
        assert_eq!(r[0].gpu_temp_c, Some(OVERHEAT_C));
        assert_ne!(r[0].throttle_reasons.unwrap() & THROTTLE_HW_THERMAL, 0);
        assert_eq!(r[1].throttle_reasons.unwrap() & THROTTLE_HW_THERMAL, 0);
        s.inject(0, Fault::Overheat(false)).unwrap();
        let r = s.sample(&[], 2000);
        assert_eq!(r[0].throttle_reasons.unwrap() & THROTTLE_HW_THERMAL, 0);
        assert!(matches!(s.inject(9, Fault::Xid(79)), Err(AgentError::Invalid(_))));
    }

    #[test]
    fn power_limits() {
        assert_eq!(power_limit_w("NVIDIA-H100-80GB-HBM3"), 700.0);
        assert_eq!(power_limit_w("NVIDIA-A100-40GB"), 400.0);
        assert_eq!(power_limit_w("NVIDIA-L4-24GB"), 72.0);
        assert_eq!(power_limit_w("NVIDIA-L40S"), 300.0);
    }
}
