//! Real GPUs through NVML (nvml-wrapper loads `libnvidia-ml.so.1` at run time, so the agent
//! builds and runs on machines without the NVIDIA driver).
//!
//! Readings: utilization (GPU and memory copy), memory used/free/total, GPU and memory
//! temperature, power and total energy, SM and memory clocks, throttle reasons, PCIe
//! throughput and replay counter, volatile ECC counters, running compute processes. A value
//! the GPU does not support is `None` (its series is left out). Events: critical XIDs and
//! ECC errors through an NVML event set, waited on by a thread of its own (the wait blocks).
//!
//! NVML is initialised once per source and kept for the life of the process (the handle is
//! leaked on purpose so that devices and the event set can borrow it for `'static`).

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_MEMORY_TEMP;
use nvml_wrapper::{Device, Nvml};

use super::{Fault, GpuEvent, GpuInfo, GpuLoad, GpuProcess, GpuReading, GpuSource, SourceKind};
use crate::AgentError;

/// Events buffered between the event thread and the sampler; more are dropped (counted in
/// the log) rather than held without bound.
const EVENT_QUEUE: usize = 1024;
/// How long one wait on the event set lasts, ms.
const EVENT_WAIT_MS: u32 = 1000;

const MIB: u64 = 1024 * 1024;

/// One line saying why NVML is not usable.
pub fn describe_init_error(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => format!(
            "no NVIDIA GPUs: libnvidia-ml.so.1 could not be loaded ({inner}); is the NVIDIA driver installed? This node runs with no GPUs"
        ),
        NvmlError::DriverNotLoaded => {
            "no NVIDIA GPUs: libnvidia-ml is present but the NVIDIA driver is not loaded; this node runs with no GPUs"
                .to_string()
        }
        NvmlError::NoPermission => {
            "no NVIDIA GPUs: no permission to talk to the NVIDIA driver (NVML); this node runs with no GPUs".to_string()
        }
        other => format!("no NVIDIA GPUs: NVML failed to initialise ({other}); this node runs with no GPUs"),
    }
}

/// The NVML source.
pub struct NvmlSource {
    devices: Vec<Device<'static>>,
    info: Vec<GpuInfo>,
    driver: String,
    events: mpsc::Receiver<GpuEvent>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").field("info", &self.info).field("driver", &self.driver).finish()
    }
}

impl Drop for NvmlSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn f(v: Result<u32, NvmlError>) -> Option<f64> {
    v.ok().map(f64::from)
}

fn sample_value(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => f64::from(x),
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

impl NvmlSource {
    /// Load NVML (`lib`: a path to `libnvidia-ml.so.1`; default: the loader's search, or
    /// `$CAPSTAN_NVML_LIB`) and list the GPUs. Err: the one line saying why not.
    pub fn open(lib: Option<&OsStr>) -> Result<NvmlSource, String> {
        let from_env = std::env::var_os("CAPSTAN_NVML_LIB").filter(|p| !p.is_empty());
        let lib = lib.or(from_env.as_deref());
        let nvml = match lib {
            Some(path) => Nvml::builder().lib_path(path).init(),
            None => Nvml::init(),
        }
        .map_err(|e| describe_init_error(&e))?;
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let count = nvml.device_count().map_err(|e| format!("no NVIDIA GPUs: NVML cannot count devices ({e})"))?;
        let mut devices = Vec::new();
        let mut info = Vec::new();
        for i in 0..count {
            let device = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(index = i, error = %e, "NVML: GPU cannot be opened; leaving it out");
                    continue;
                }
            };
            let uuid = device.uuid().unwrap_or_else(|_| format!("GPU-unknown-{i}"));
            let name = device.name().unwrap_or_else(|_| "NVIDIA GPU".to_string());
            let memory_mib = device.memory_info().map(|m| m.total / MIB).unwrap_or(0);
            let pci_bus_id = device.pci_info().map(|p| p.bus_id).unwrap_or_default();
            let minor = device.minor_number().unwrap_or(i);
            let power_limit_w = device.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0);
            info.push(GpuInfo {
                index: device.index().unwrap_or(i),
                uuid,
                // The `nvidia.com/gpu.product` form that GPU feature discovery labels nodes with.
                product: name.trim().replace(' ', "-"),
                memory_mib,
                simulated: false,
                pci_bus_id,
                minor,
                power_limit_w,
            });
            devices.push(device);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let thread_stop = stop.clone();
        let n = devices.len() as u32;
        if n > 0 {
            let spawned = std::thread::Builder::new()
                .name("nvml-events".into())
                .spawn(move || event_loop(nvml, n, tx, thread_stop));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "NVML: cannot start the event thread; XID and ECC events are off");
            }
        }
        Ok(NvmlSource { devices, info, driver, events: rx, stop })
    }
}

/// Register every GPU for critical XIDs and ECC errors and forward what arrives.
fn event_loop(nvml: &'static Nvml, count: u32, tx: mpsc::SyncSender<GpuEvent>, stop: Arc<AtomicBool>) {
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR | EventTypes::SINGLE_BIT_ECC_ERROR;
    let mut set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "NVML: cannot create an event set; XID and ECC events are off");
            return;
        }
    };
    let mut registered = 0;
    for i in 0..count {
        let Ok(device) = nvml.device_by_index(i) else { continue };
        let types = wanted & device.supported_event_types().unwrap_or(EventTypes::empty());
        if types.is_empty() {
            continue;
        }
        match device.register_events(types, set) {
            Ok(s) => {
                set = s;
                registered += 1;
            }
            Err(e) => {
                // The set was released: make a new one and go on with the other GPUs.
                tracing::warn!(index = i, error = %e.error, "NVML: cannot register GPU events");
                set = match nvml.create_event_set() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "NVML: cannot create an event set; XID and ECC events are off");
                        return;
                    }
                };
            }
        }
    }
    if registered == 0 {
        tracing::info!("NVML: no GPU supports XID or ECC events; health comes from readings only");
        return;
    }
    let mut dropped = 0u64;
    while !stop.load(Ordering::Acquire) {
        match set.wait(EVENT_WAIT_MS) {
            Ok(data) => {
                let Ok(index) = data.device.index() else { continue };
                let mut out = Vec::new();
                if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    let xid = match data.event_data {
                        Some(XidError::Value(v)) => v,
                        _ => 0,
                    };
                    out.push(GpuEvent::Xid { index, xid });
                }
                if data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                    out.push(GpuEvent::EccDoubleBit { index });
                }
                if data.event_type.contains(EventTypes::SINGLE_BIT_ECC_ERROR) {
                    out.push(GpuEvent::EccSingleBit { index });
                }
                for ev in out {
                    match tx.try_send(ev) {
                        Ok(()) => {}
                        Err(mpsc::TrySendError::Full(_)) => {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                tracing::warn!(dropped, "NVML: GPU event queue full; events dropped");
                            }
                        }
                        Err(mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                tracing::warn!(error = %e, "NVML: waiting for GPU events failed");
                std::thread::sleep(std::time::Duration::from_millis(u64::from(EVENT_WAIT_MS)));
            }
        }
    }
}

/// Read one GPU.
fn read(device: &Device<'static>, index: u32, now_ms: i64) -> GpuReading {
    let util = device.utilization_rates().ok();
    let mem = device.memory_info().ok();
    let memory_temp = device
        .field_values_for(&[FieldId(NVML_FI_DEV_MEMORY_TEMP)])
        .ok()
        .and_then(|v| v.into_iter().next().and_then(|s| s.ok()).and_then(|s| s.value.ok()).map(|v| sample_value(&v)));
    let processes = device
        .running_compute_processes()
        .map(|ps| {
            ps.into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_mib: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes / MIB),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    GpuReading {
        index,
        timestamp_ms: now_ms,
        gpu_util: util.as_ref().map(|u| f64::from(u.gpu)),
        mem_copy_util: util.as_ref().map(|u| f64::from(u.memory)),
        fb_used_mib: mem.as_ref().map(|m| (m.used / MIB) as f64),
        fb_free_mib: mem.as_ref().map(|m| (m.free / MIB) as f64),
        fb_total_mib: mem.as_ref().map(|m| (m.total / MIB) as f64),
        gpu_temp_c: f(device.temperature(TemperatureSensor::Gpu)),
        // 0 means "not supported" for this field on GPUs without an HBM sensor.
        memory_temp_c: memory_temp.filter(|t| *t > 0.0),
        power_w: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        energy_mj: device.total_energy_consumption().ok().map(|mj| mj as f64),
        sm_clock_mhz: f(device.clock_info(Clock::SM)),
        mem_clock_mhz: f(device.clock_info(Clock::Memory)),
        throttle_reasons: device.current_throttle_reasons().ok().map(|r| r.bits()),
        pcie_tx_kbps: f(device.pcie_throughput(PcieUtilCounter::Send)),
        pcie_rx_kbps: f(device.pcie_throughput(PcieUtilCounter::Receive)),
        pcie_replay: device.pcie_replay_counter().ok().map(u64::from),
        ecc_sbe_volatile: device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok(),
        ecc_dbe_volatile: device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok(),
        processes,
    }
}

impl GpuSource for NvmlSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Nvml
    }

    fn devices(&self) -> &[GpuInfo] {
        &self.info
    }

    fn driver_version(&self) -> &str {
        &self.driver
    }

    fn sample(&mut self, _loads: &[GpuLoad], now_ms: i64) -> Vec<GpuReading> {
        self.devices.iter().zip(&self.info).map(|(d, i)| read(d, i.index, now_ms)).collect()
    }

    fn events(&mut self) -> Vec<GpuEvent> {
        self.events.try_iter().collect()
    }

    fn inject(&mut self, index: u32, _fault: Fault) -> Result<(), AgentError> {
        Err(AgentError::Invalid(format!("GPU {index} is a real GPU: faults can only be injected into simulated GPUs")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without libnvidia-ml (this machine, CI), opening fails with one line that says so,
    /// and `gpu::open` gives a node without GPUs.
    #[test]
    fn no_library_means_no_gpus_and_one_clear_line() {
        let missing = OsStr::new("/nonexistent/libnvidia-ml.so.1");
        let why = NvmlSource::open(Some(missing)).expect_err("no NVML here");
        assert!(why.contains("libnvidia-ml.so.1 could not be loaded"), "{why}");
        assert!(why.contains("runs with no GPUs"), "{why}");
        assert!(!why.contains('\n'), "one line: {why}");
    }

    #[test]
    fn open_without_driver_degrades() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            // A machine with the driver: the real GPUs are listed instead.
            let (source, _) = crate::gpu::open(None, "n").unwrap();
            assert_eq!(source.kind(), SourceKind::Nvml);
            return;
        }
        let (mut source, why) = crate::gpu::open(None, "n").unwrap();
        assert_eq!(source.kind(), SourceKind::None);
        assert!(source.devices().is_empty());
        assert!(source.sample(&[], 0).is_empty());
        let why = why.expect("a reason is given");
        assert!(why.starts_with("no NVIDIA GPUs") || why.starts_with("NVML loaded"), "{why}");
    }
}
