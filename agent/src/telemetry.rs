//! GPU telemetry of a node: sample the [`GpuSource`] every interval (1 s by default), tie each
//! GPU to the replica the agent placed on it (or, on Kubernetes, to the pods
//! [`crate::attribution`] found: [`Telemetry::set_pod_attributions`]), judge health ([`crate::health`]), serve the
//! latest readings as Prometheus text ([`Telemetry::render_metrics`]), turn them into the
//! runs' system metrics (MLflow's names: `system/gpu_0_utilization_percentage`, ...) and
//! push everything to the server in batches through a bounded [`Outbox`].
//!
//! What the agent placed is kept in `state_dir/gpu-placements.json` and the health verdicts
//! in `state_dir/gpu-health.json`, so both survive an agent restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::attribution::Attribution;
use crate::exporter::{self, AgentCounters, GpuView};
use crate::gpu::{self, Fault, GpuInfo, GpuLoad, GpuSource, SourceKind};
use crate::health::{self, GpuHealth, HealthPolicy, HealthTracker};
use crate::push::{Batch, Command, GpuStatus, JobRef, Outbox, RunMetric, SampleRecord, Sink};
use crate::{AgentError, ReplicaHandle, ReplicaSpec, Runtime};

/// Timing and sizes of the telemetry loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// How often every GPU is read.
    pub sample_interval: Duration,
    /// How often a batch goes to the server.
    pub push_interval: Duration,
    /// Window of the runs' system metrics: one averaged point per GPU per window (MLflow
    /// samples system metrics every 10 s).
    pub system_metrics_interval: Duration,
    /// Samples the outbox holds at most while the server is away (then the oldest go).
    pub outbox_samples: usize,
    /// Run metric points the outbox holds at most.
    pub outbox_run_metrics: usize,
    /// Samples per batch at most.
    pub max_batch_samples: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            sample_interval: Duration::from_secs(1),
            push_interval: Duration::from_secs(5),
            system_metrics_interval: Duration::from_secs(10),
            outbox_samples: 8192,
            outbox_run_metrics: 4096,
            max_batch_samples: 2000,
        }
    }
}

/// A replica the agent started on GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Its handle.
    pub handle: ReplicaHandle,
    /// The job replica.
    pub job: JobRef,
    /// GPU indices.
    pub gpus: Vec<u32>,
    /// When it was placed, ms since the epoch.
    pub placed_ms: i64,
}

/// Running sums of one run's GPU over a system-metrics window.
#[derive(Debug, Clone, Default)]
struct Window {
    n: u32,
    util: f64,
    used_mib: f64,
    used_pct: f64,
    power_w: f64,
    power_pct: f64,
    n_power_pct: u32,
    last_ms: i64,
    placed_ms: i64,
}

#[derive(Debug)]
struct State {
    tracker: HealthTracker,
    placements: Vec<Placement>,
    latest: Vec<SampleRecord>,
    last_xid: BTreeMap<u32, u64>,
    outbox: Outbox,
    push_failures: u64,
    windows: HashMap<(String, u32), Window>,
    window_start_ms: Option<i64>,
    /// On Kubernetes: the pods using the GPUs ([`crate::attribution`]), set by the kube
    /// adapter.
    pods: Vec<Attribution>,
    /// When each pod (uid) was first attributed, ms since the epoch.
    pod_seen: HashMap<String, i64>,
}

/// The telemetry of one node.
pub struct Telemetry {
    node: String,
    kind: SourceKind,
    gpus: Vec<GpuInfo>,
    driver_version: String,
    config: TelemetryConfig,
    source: Mutex<Box<dyn GpuSource>>,
    state: Mutex<State>,
    health_path: PathBuf,
    placements_path: PathBuf,
    health_changed: Arc<Notify>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("node", &self.node)
            .field("kind", &self.kind)
            .field("gpus", &self.gpus)
            .finish()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether a process replica's leader is still alive (not a zombie).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_some_and(|s| !matches!(s, "Z" | "X" | "x")),
        Err(_) => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The run's system metric keys of GPU `i` (MLflow's `GPUMonitor` names).
pub fn system_metric_keys(i: u32) -> [String; 5] {
    [
        format!("system/gpu_{i}_utilization_percentage"),
        format!("system/gpu_{i}_memory_usage_megabytes"),
        format!("system/gpu_{i}_memory_usage_percentage"),
        format!("system/gpu_{i}_power_usage_watts"),
        format!("system/gpu_{i}_power_usage_percentage"),
    ]
}

impl Telemetry {
    /// Telemetry of node `node` over `source`, keeping its files in `state_dir`.
    pub fn new(
        node: &str,
        source: Box<dyn GpuSource>,
        state_dir: &Path,
        config: TelemetryConfig,
    ) -> Result<Telemetry, AgentError> {
        let gpus = source.devices().to_vec();
        let health_path = state_dir.join("gpu-health.json");
        let placements_path = state_dir.join("gpu-placements.json");
        let mut tracker = HealthTracker::new(HealthPolicy::default());
        let stored = health::load(&health_path)?;
        let known: BTreeMap<u32, GpuHealth> =
            gpus.iter().filter_map(|g| stored.get(&g.uuid).map(|h| (g.index, h.clone()))).collect();
        for (index, h) in &known {
            tracing::warn!(gpu = index, reason = %h.reason, "GPU {index} is still unhealthy from before: {}", h.message);
        }
        tracker.restore(known);
        let placements: Vec<Placement> = match std::fs::read_to_string(&placements_path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %placements_path.display(), error = %e, "unreadable GPU placements; starting without");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Ok(Telemetry {
            node: node.to_string(),
            kind: source.kind(),
            driver_version: source.driver_version().to_string(),
            gpus,
            config,
            source: Mutex::new(source),
            state: Mutex::new(State {
                tracker,
                placements,
                latest: Vec::new(),
                last_xid: BTreeMap::new(),
                outbox: Outbox::new(config.outbox_samples, config.outbox_run_metrics),
                push_failures: 0,
                windows: HashMap::new(),
                window_start_ms: None,
                pods: Vec::new(),
                pod_seen: HashMap::new(),
            }),
            health_path,
            placements_path,
            health_changed: Arc::new(Notify::new()),
        })
    }

    /// Open the node's GPU source (`simulate`: a `--simulate-gpus` spec; else NVML) and build
    /// the telemetry over it. When NVML is not usable, logs one line saying why and goes on
    /// with no GPUs.
    pub fn open(
        node: &str,
        simulate: Option<&str>,
        state_dir: &Path,
        config: TelemetryConfig,
    ) -> Result<Telemetry, AgentError> {
        let (source, why) = gpu::open(simulate, node)?;
        if let Some(why) = why {
            tracing::info!("{why}");
        }
        Telemetry::new(node, source, state_dir, config)
    }

    /// Node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the GPUs come from.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The GPUs.
    pub fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    /// The timing and sizes in use.
    pub fn config(&self) -> TelemetryConfig {
        self.config
    }

    /// Notified whenever a GPU's health changes (to wake the controller).
    pub fn health_changed(&self) -> Arc<Notify> {
        self.health_changed.clone()
    }

    /// Health of every GPU, by index.
    pub fn health(&self) -> BTreeMap<u32, GpuHealth> {
        let st = lock(&self.state);
        self.gpus.iter().map(|g| (g.index, st.tracker.health(g.index))).collect()
    }

    /// Unhealthy GPUs only, by index.
    pub fn unhealthy(&self) -> BTreeMap<u32, GpuHealth> {
        lock(&self.state).tracker.unhealthy().clone()
    }

    /// The latest reading of every GPU (empty before the first sample).
    pub fn latest(&self) -> Vec<SampleRecord> {
        lock(&self.state).latest.clone()
    }

    /// What the agent placed on its GPUs.
    pub fn placements(&self) -> Vec<Placement> {
        lock(&self.state).placements.clone()
    }

    fn save_placements(&self, placements: &[Placement]) {
        let text = serde_json::to_string(placements).unwrap_or_else(|_| "[]".into());
        let tmp = self.placements_path.with_extension("json.tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.placements_path));
        if let Err(e) = result {
            tracing::warn!(path = %self.placements_path.display(), error = %e, "cannot save GPU placements");
        }
    }

    fn save_health(&self, tracker: &HealthTracker) {
        let stored: health::Stored = tracker
            .unhealthy()
            .iter()
            .filter_map(|(i, h)| self.gpus.iter().find(|g| g.index == *i).map(|g| (g.uuid.clone(), h.clone())))
            .collect();
        if let Err(e) = health::save(&self.health_path, &stored) {
            tracing::error!(error = %e, "cannot save GPU health; it will not survive an agent restart");
        }
    }

    /// Record that `spec` was started as `handle` (on its GPUs).
    pub fn placed(&self, spec: &ReplicaSpec, handle: &ReplicaHandle) {
        if spec.gpus.is_empty() {
            return;
        }
        let run_id = spec.env.iter().rev().find(|(k, _)| k == "MLFLOW_RUN_ID").map(|(_, v)| v.clone());
        let p = Placement {
            handle: handle.clone(),
            job: JobRef {
                namespace: spec.namespace.clone(),
                name: spec.job_name.clone(),
                uid: spec.job_uid.clone(),
                replica: spec.index,
                attempt: spec.attempt,
                run_id,
            },
            gpus: spec.gpus.clone(),
            placed_ms: now_ms(),
        };
        let mut st = lock(&self.state);
        if let Some(old) = st.placements.iter_mut().find(|q| q.handle == p.handle) {
            if old.job == p.job && old.gpus == p.gpus {
                return; // the same replica started again: keep its placement time
            }
            *old = p;
        } else {
            st.placements.push(p);
        }
        let all = st.placements.clone();
        drop(st);
        self.save_placements(&all);
    }

    /// On Kubernetes: which pods use which GPUs now (from [`crate::attribution`]). Their GPUs
    /// get the pods' `namespace`, `pod`, `container` labels, a TrainingJob pod's job labels
    /// and run metrics, and (simulated GPUs) the load of a running replica.
    pub fn set_pod_attributions(&self, pods: Vec<Attribution>) {
        let now = now_ms();
        let mut st = lock(&self.state);
        st.pod_seen.retain(|uid, _| pods.iter().any(|a| &a.container.uid == uid));
        for a in &pods {
            st.pod_seen.entry(a.container.uid.clone()).or_insert(now);
        }
        st.pods = pods;
    }

    /// What [`Telemetry::set_pod_attributions`] last set.
    pub fn pod_attributions(&self) -> Vec<Attribution> {
        lock(&self.state).pods.clone()
    }

    /// Forget what `handle` held (stopped or cleaned up).
    pub fn released(&self, handle: &ReplicaHandle) {
        let mut st = lock(&self.state);
        let before = st.placements.len();
        st.placements.retain(|p| &p.handle != handle);
        if st.placements.len() == before {
            return;
        }
        let all = st.placements.clone();
        drop(st);
        self.save_placements(&all);
    }

    /// Which live replica holds each GPU (the latest placed wins).
    fn assignments(placements: &[Placement]) -> BTreeMap<u32, &Placement> {
        let mut out: BTreeMap<u32, &Placement> = BTreeMap::new();
        for p in placements {
            let live = match p.handle.runtime {
                Runtime::Process => p.handle.id.parse::<u32>().map(pid_alive).unwrap_or(false),
                // A container holds its GPUs until the agent stops or removes it.
                Runtime::Container => true,
            };
            if !live {
                continue;
            }
            for &g in &p.gpus {
                match out.get(&g) {
                    Some(q) if q.placed_ms > p.placed_ms => {}
                    _ => {
                        out.insert(g, p);
                    }
                }
            }
        }
        out
    }

    /// Read every GPU once: readings, events, health, attribution, outbox, system metrics.
    /// Blocking (NVML calls): run it off the async workers.
    pub fn tick(&self, now_ms: i64) {
        let (placements, pods, pod_seen) = {
            let st = lock(&self.state);
            (st.placements.clone(), st.pods.clone(), st.pod_seen.clone())
        };
        let assigned = Self::assignments(&placements);
        let mut loads: Vec<GpuLoad> = assigned
            .iter()
            .map(|(&index, p)| GpuLoad {
                index,
                replicas: 1,
                since_ms: p.placed_ms,
                pids: match p.handle.runtime {
                    Runtime::Process => p.handle.id.parse().ok().into_iter().collect(),
                    Runtime::Container => Vec::new(),
                },
            })
            .collect();
        // Kubernetes pods on GPUs the agent did not place anything on, since the agent first
        // saw them there.
        let pod_gpus = crate::attribution::by_gpu(&pods);
        let seen = |a: &Attribution| pod_seen.get(&a.container.uid).copied().unwrap_or(now_ms);
        for (&index, list) in &pod_gpus {
            if !assigned.contains_key(&index) {
                let since_ms = list.iter().map(|a| seen(a)).min().unwrap_or(now_ms);
                loads.push(GpuLoad { index, replicas: list.len() as u32, since_ms, pids: Vec::new() });
            }
        }
        let (readings, events) = {
            let mut source = lock(&self.source);
            let readings = source.sample(&loads, now_ms);
            (readings, source.events())
        };
        let mut jobs: BTreeMap<u32, (Arc<JobRef>, i64)> =
            assigned.iter().map(|(&i, p)| (i, (Arc::new(p.job.clone()), p.placed_ms))).collect();
        for (&i, list) in &pod_gpus {
            if let Some(a) = list.iter().find(|a| a.container.job.is_some()) {
                let job = a.container.job.clone().expect("found with a job");
                jobs.entry(i).or_insert_with(|| (Arc::new(job), seen(a)));
            }
        }

        let mut st = lock(&self.state);
        let mut transitions = Vec::new();
        for ev in &events {
            if let gpu::GpuEvent::Xid { index, xid } = ev {
                st.last_xid.insert(*index, *xid);
                if health::is_application_xid(*xid) {
                    tracing::info!(
                        gpu = index,
                        xid,
                        "application XID {xid} on GPU {index} ({}); the GPU stays healthy",
                        health::xid_description(*xid)
                    );
                }
            }
            transitions.extend(st.tracker.observe_event(ev, now_ms));
        }
        for r in &readings {
            transitions.extend(st.tracker.observe_reading(r));
        }
        let mut latest = Vec::with_capacity(readings.len());
        for r in readings {
            let rec = SampleRecord {
                last_xid: st.last_xid.get(&r.index).copied().unwrap_or(0),
                job: jobs.get(&r.index).map(|j| j.0.clone()),
                reading: r,
            };
            st.outbox.push_sample(rec.clone());
            latest.push(rec);
        }
        self.accumulate(&mut st, &latest, &jobs, now_ms);
        st.latest = latest;
        if !transitions.is_empty() {
            for t in &transitions {
                tracing::warn!(gpu = t.index, reason = %t.health.reason, "GPU {} marked unhealthy: {}", t.index, t.health.message);
            }
            self.save_health(&st.tracker);
            drop(st);
            self.health_changed.notify_one();
        }
    }

    /// Add the readings to the system-metrics windows; at the end of a window, queue one
    /// averaged point per run, GPU and metric.
    fn accumulate(&self, st: &mut State, recs: &[SampleRecord], jobs: &BTreeMap<u32, (Arc<JobRef>, i64)>, now_ms: i64) {
        let start = *st.window_start_ms.get_or_insert(now_ms);
        for rec in recs {
            let Some((job, placed_ms)) = jobs.get(&rec.reading.index) else { continue };
            let Some(run_id) = &job.run_id else { continue };
            let r = &rec.reading;
            let w = st.windows.entry((run_id.clone(), r.index)).or_default();
            w.n += 1;
            w.util += r.gpu_util.unwrap_or(0.0);
            let used = r.fb_used_mib.unwrap_or(0.0);
            w.used_mib += used;
            let total = r.fb_total_mib.or_else(|| r.fb_free_mib.map(|f| f + used)).unwrap_or(0.0);
            w.used_pct += if total > 0.0 { used / total * 100.0 } else { 0.0 };
            w.power_w += r.power_w.unwrap_or(0.0);
            let limit = self.gpus.iter().find(|g| g.index == r.index).and_then(|g| g.power_limit_w);
            if let (Some(p), Some(l)) = (r.power_w, limit.filter(|l| *l > 0.0)) {
                w.power_pct += p / l * 100.0;
                w.n_power_pct += 1;
            }
            w.last_ms = r.timestamp_ms;
            w.placed_ms = *placed_ms;
        }
        let window = self.config.system_metrics_interval.as_millis().max(1) as i64;
        if now_ms - start < window {
            return;
        }
        st.window_start_ms = Some(now_ms);
        let windows = std::mem::take(&mut st.windows);
        for ((run_id, index), w) in windows {
            if w.n == 0 {
                continue;
            }
            let n = f64::from(w.n);
            let step = ((w.last_ms - w.placed_ms).max(0) / window).max(0);
            let keys = system_metric_keys(index);
            let mut values = vec![
                (&keys[0], w.util / n),
                // MLflow writes megabytes (10^6 bytes); readings are MiB.
                (&keys[1], w.used_mib / n * 1.048_576),
                (&keys[2], w.used_pct / n),
                (&keys[3], w.power_w / n),
            ];
            if w.n_power_pct > 0 {
                values.push((&keys[4], w.power_pct / f64::from(w.n_power_pct)));
            }
            for (key, value) in values {
                st.outbox.push_run_metric(RunMetric {
                    run_id: run_id.clone(),
                    key: key.clone(),
                    value: (value * 1000.0).round() / 1000.0,
                    timestamp_ms: w.last_ms,
                    step,
                });
            }
        }
    }

    /// Inject a fault into a simulated GPU.
    pub fn inject(&self, index: u32, fault: Fault) -> Result<(), AgentError> {
        tracing::warn!(gpu = index, ?fault, "injecting a fault into simulated GPU {index}");
        lock(&self.source).inject(index, fault)
    }

    /// Forget a GPU's unhealthy verdict. Returns whether it was unhealthy.
    pub fn clear_health(&self, index: u32) -> bool {
        let mut st = lock(&self.state);
        let was = st.tracker.clear(index);
        if was {
            tracing::info!(gpu = index, "GPU {index}'s unhealthy verdict cleared; the scheduler uses it again");
            self.save_health(&st.tracker);
            drop(st);
            self.health_changed.notify_one();
        }
        was
    }

    /// Carry out what the server asked.
    pub fn apply(&self, cmd: &Command) {
        if let Some(fault) = cmd.fault {
            if let Err(e) = self.inject(cmd.gpu, fault) {
                tracing::warn!(gpu = cmd.gpu, error = %e, "fault not injected");
            }
        }
        if cmd.clear_health {
            self.clear_health(cmd.gpu);
        }
    }

    fn gpu_statuses(&self, st: &State) -> Vec<GpuStatus> {
        self.gpus
            .iter()
            .map(|g| GpuStatus {
                info: g.clone(),
                health: st.tracker.health(g.index),
                last_xid: st.last_xid.get(&g.index).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The next batch (oldest samples first) and what to commit once it arrived.
    pub fn next_batch(&self) -> (Batch, crate::push::Taken) {
        let st = lock(&self.state);
        let (samples, run_metrics, taken) = st.outbox.take(self.config.max_batch_samples, 1000);
        let batch = Batch {
            node: self.node.clone(),
            source: self.kind,
            driver_version: self.driver_version.clone(),
            sample_interval_ms: self.config.sample_interval.as_millis() as u64,
            gpus: self.gpu_statuses(&st),
            samples,
            run_metrics,
            dropped_samples: st.outbox.dropped_samples(),
            dropped_run_metrics: st.outbox.dropped_run_metrics(),
        };
        (batch, taken)
    }

    /// The batch arrived: drop it from the outbox. Returns whether more waits.
    pub fn delivered(&self, taken: crate::push::Taken) -> bool {
        let mut st = lock(&self.state);
        st.outbox.commit(taken);
        st.outbox.len() >= self.config.max_batch_samples
    }

    fn push_failed(&self) -> u64 {
        let mut st = lock(&self.state);
        st.push_failures += 1;
        st.push_failures
    }

    /// Counters for `/metrics`.
    pub fn counters(&self) -> AgentCounters {
        let st = lock(&self.state);
        AgentCounters {
            dropped_samples: st.outbox.dropped_samples(),
            dropped_run_metrics: st.outbox.dropped_run_metrics(),
            push_failures: st.push_failures,
            buffered_samples: st.outbox.len() as u64,
        }
    }

    /// The Prometheus exposition of the latest readings ([`exporter::CONTENT_TYPE`]).
    pub fn render_metrics(&self) -> String {
        let st = lock(&self.state);
        let counters = AgentCounters {
            dropped_samples: st.outbox.dropped_samples(),
            dropped_run_metrics: st.outbox.dropped_run_metrics(),
            push_failures: st.push_failures,
            buffered_samples: st.outbox.len() as u64,
        };
        let pods = crate::attribution::by_gpu(&st.pods);
        let gpus: Vec<GpuView> = self
            .gpus
            .iter()
            .map(|g| {
                let rec = st.latest.iter().find(|r| r.reading.index == g.index);
                let pod = pods.get(&g.index).and_then(|l| l.first()).map(|a| &a.container);
                GpuView {
                    info: g,
                    reading: rec.map(|r| &r.reading),
                    health: st.tracker.health(g.index),
                    last_xid: st.last_xid.get(&g.index).copied().unwrap_or(0),
                    job: rec.and_then(|r| r.job.as_deref()).or(pod.and_then(|p| p.job.as_ref())),
                    pod,
                }
            })
            .collect();
        exporter::render(&exporter::View { hostname: &self.node, driver_version: &self.driver_version, gpus, counters })
    }
}

/// Sample every `sample_interval` until `shutdown` turns true.
pub async fn sample_loop(tel: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(tel.config.sample_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
        let t = tel.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || t.tick(now_ms())).await {
            tracing::error!(error = %e, "GPU sampling failed");
        }
    }
}

/// How often a node with nothing new to say pushes anyway (so the server sees it alive).
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Push a batch every `push_interval` (at once again while a backlog remains) until
/// `shutdown`; a failed push keeps the batch for the next try. The first failure of an
/// outage is logged as a warning, the recovery as info, nothing in between.
pub async fn push_loop(tel: Arc<Telemetry>, sink: Arc<dyn Sink>, mut shutdown: watch::Receiver<bool>) {
    let mut failing_since: Option<u64> = None;
    let mut last_ok: Option<(tokio::time::Instant, Vec<GpuStatus>)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tel.config.push_interval) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
        loop {
            let (batch, taken) = tel.next_batch();
            // Nothing new (a node without GPUs): a heartbeat every HEARTBEAT is enough.
            let idle = batch.samples.is_empty() && batch.run_metrics.is_empty();
            if idle && last_ok.as_ref().is_some_and(|(at, gpus)| at.elapsed() < HEARTBEAT && *gpus == batch.gpus) {
                break;
            }
            match sink.push(&batch).await {
                Ok(reply) => {
                    last_ok = Some((tokio::time::Instant::now(), batch.gpus.clone()));
                    if let Some(from) = failing_since.take() {
                        let failures = tel.counters().push_failures - from;
                        tracing::info!(failures, "pushing GPU samples to the server works again");
                    }
                    let more = tel.delivered(taken);
                    for cmd in &reply.commands {
                        tel.apply(cmd);
                    }
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    let n = tel.push_failed();
                    if failing_since.is_none() {
                        failing_since = Some(n - 1);
                        tracing::warn!(error = %e, "cannot push GPU samples to the server; keeping up to {} samples and retrying", tel.config.outbox_samples);
                    }
                    break;
                }
            }
        }
    }
}

/// Run sampling and pushing until `shutdown` turns true.
pub async fn run(tel: Arc<Telemetry>, sink: Arc<dyn Sink>, shutdown: watch::Receiver<bool>) {
    let sampler = tokio::spawn(sample_loop(tel.clone(), shutdown.clone()));
    let pusher = tokio::spawn(push_loop(tel, sink, shutdown));
    let _ = sampler.await;
    let _ = pusher.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{PushFuture, PushReply};

    fn spec(gpus: Vec<u32>, run: Option<&str>) -> ReplicaSpec {
        ReplicaSpec {
            namespace: "default".into(),
            job_name: "train".into(),
            job_uid: "uid-1".into(),
            index: 0,
            attempt: 1,
            runtime: Runtime::Process,
            image: None,
            argv: vec!["true".into()],
            env: run.map(|r| vec![("MLFLOW_RUN_ID".to_string(), r.to_string())]).unwrap_or_default(),
            working_dir: None,
            gpus,
            cpu: None,
            memory_bytes: None,
            log_path: PathBuf::from("/dev/null"),
            mounts: vec![],
        }
    }

    fn telemetry(dir: &Path, n: &str, config: TelemetryConfig) -> Telemetry {
        Telemetry::open("node-a", Some(n), dir, config).unwrap()
    }

    /// This test process itself is the "replica": its pid is alive.
    fn me() -> ReplicaHandle {
        ReplicaHandle { runtime: Runtime::Process, id: std::process::id().to_string() }
    }

    #[test]
    fn attribution_metrics_and_system_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let config = TelemetryConfig { system_metrics_interval: Duration::from_secs(10), ..TelemetryConfig::default() };
        let tel = telemetry(dir.path(), "8", config);
        tel.placed(&spec(vec![2, 3], Some("run-1")), &me());
        let t0 = now_ms();
        for t in 0..=10 {
            tel.tick(t0 + t * 1000);
        }
        let latest = tel.latest();
        assert_eq!(latest.len(), 8);
        assert_eq!(latest[2].job.as_ref().unwrap().name, "train");
        assert!(latest[1].job.is_none());
        let text = tel.render_metrics();
        let util: Vec<&str> = text.lines().filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{")).collect();
        assert_eq!(util.len(), 8);
        assert_eq!(util.iter().filter(|l| l.contains("capstan_job=\"train\"")).count(), 2);
        // One window passed: 5 system metrics for each of the job's 2 GPUs.
        let (batch, _) = tel.next_batch();
        assert_eq!(batch.samples.len(), 88);
        assert_eq!(batch.run_metrics.len(), 10, "{:?}", batch.run_metrics);
        assert!(batch.run_metrics.iter().all(|m| m.run_id == "run-1"));
        let u = batch.run_metrics.iter().find(|m| m.key == "system/gpu_2_utilization_percentage").unwrap();
        assert!(u.value > 30.0, "{u:?}");
        assert!(batch.run_metrics.iter().any(|m| m.key == "system/gpu_3_power_usage_percentage"));
        // Released: the GPUs are idle again.
        tel.released(&me());
        tel.tick(t0 + 20_000);
        assert!(tel.latest().iter().all(|r| r.job.is_none()));
    }

    #[test]
    fn kubernetes_pods_label_their_gpus_load_them_and_feed_their_runs() {
        use crate::attribution::{Attribution, PodContainer, Source};
        let dir = tempfile::tempdir().unwrap();
        let config = TelemetryConfig { system_metrics_interval: Duration::from_secs(10), ..TelemetryConfig::default() };
        let tel = telemetry(dir.path(), "4", config);
        let job = JobRef {
            namespace: "ml".into(),
            name: "llm".into(),
            uid: "j".into(),
            replica: 0,
            attempt: 1,
            run_id: Some("run-k".into()),
        };
        tel.set_pod_attributions(vec![Attribution {
            container: PodContainer {
                uid: "p".into(),
                namespace: "ml".into(),
                pod: "llm-1-0".into(),
                container: "trainer".into(),
                job: Some(job),
            },
            gpus: vec![1, 2],
            source: Source::Simulated,
        }]);
        let t0 = now_ms();
        for t in 0..=40 {
            tel.tick(t0 + t * 1000);
        }
        let latest = tel.latest();
        assert_eq!(latest[1].job.as_ref().unwrap().name, "llm");
        assert!(latest[0].job.is_none() && latest[3].job.is_none());
        assert!(latest[2].reading.gpu_util.unwrap() > 30.0, "{:?}", latest[2].reading);
        assert_eq!(latest[0].reading.gpu_util, Some(0.0));
        let text = tel.render_metrics();
        let line = text.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{gpu=\"2\"")).unwrap();
        assert!(line.contains("pod=\"llm-1-0\"") && line.contains("container=\"trainer\""), "{line}");
        let (batch, _) = tel.next_batch();
        assert!(batch
            .run_metrics
            .iter()
            .any(|m| m.run_id == "run-k" && m.key == "system/gpu_1_utilization_percentage"));
        // The pod is gone: its GPUs are idle and unlabelled again.
        tel.set_pod_attributions(Vec::new());
        tel.tick(t0 + 41_000);
        assert!(tel.latest().iter().all(|r| r.job.is_none()));
        assert!(!tel.render_metrics().contains("llm-1-0"));
    }

    #[test]
    fn dead_process_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tel = telemetry(dir.path(), "2", TelemetryConfig::default());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        tel.placed(&spec(vec![0], None), &ReplicaHandle { runtime: Runtime::Process, id: pid.to_string() });
        tel.tick(1000);
        assert!(tel.latest()[0].job.is_none());
    }

    #[test]
    fn health_from_faults_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tel = telemetry(dir.path(), "4", TelemetryConfig::default());
        tel.placed(&spec(vec![1], None), &me());
        tel.tick(1000);
        tel.inject(1, Fault::Xid(13)).unwrap();
        tel.tick(2000);
        assert!(tel.unhealthy().is_empty(), "application XID 13 leaves the GPU healthy");
        assert!(tel
            .render_metrics()
            .lines()
            .any(|l| l.starts_with("DCGM_FI_DEV_XID_ERRORS{gpu=\"1\"") && l.ends_with(" 13.0")));
        tel.inject(1, Fault::Xid(79)).unwrap();
        tel.inject(2, Fault::EccDbe(1)).unwrap();
        tel.tick(3000);
        let bad = tel.unhealthy();
        assert_eq!(bad.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(bad[&1].reason, "XidError");
        assert_eq!(bad[&2].reason, "DoubleBitEccError");
        // A new agent on the same state dir still knows, and still knows the placement.
        drop(tel);
        let again = telemetry(dir.path(), "4", TelemetryConfig::default());
        assert_eq!(again.unhealthy().keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(again.placements().len(), 1);
        assert!(again.clear_health(1));
        let third = telemetry(dir.path(), "4", TelemetryConfig::default());
        assert_eq!(third.unhealthy().keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn overheating_marks_unhealthy_after_repeated_throttling() {
        let dir = tempfile::tempdir().unwrap();
        let tel = telemetry(dir.path(), "2", TelemetryConfig::default());
        tel.apply(&Command { gpu: 0, fault: Some(Fault::Overheat(true)), clear_health: false });
        for t in 0..9 {
            tel.tick(t * 1000);
            assert!(tel.unhealthy().is_empty(), "not yet at reading {t}");
        }
        tel.tick(9_000);
        assert_eq!(tel.unhealthy()[&0].reason, "ThermalThrottling");
    }

    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
        got: Mutex<Vec<Batch>>,
    }

    impl Sink for Flaky {
        fn push<'a>(&'a self, batch: &'a Batch) -> PushFuture<'a> {
            Box::pin(async move {
                if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("server away".into());
                }
                lock(&self.got).push(batch.clone());
                Ok(PushReply {
                    accepted_samples: batch.samples.len() as u64,
                    commands: vec![Command { gpu: 0, fault: Some(Fault::Xid(79)), clear_health: false }],
                })
            })
        }
    }

    #[tokio::test]
    async fn bounded_while_the_server_is_away_then_delivered_with_drop_counts() {
        let dir = tempfile::tempdir().unwrap();
        let config = TelemetryConfig {
            push_interval: Duration::from_millis(20),
            outbox_samples: 10,
            max_batch_samples: 4,
            ..TelemetryConfig::default()
        };
        let tel = Arc::new(telemetry(dir.path(), "2", config));
        let sink = Arc::new(Flaky { fail: true.into(), got: Mutex::new(Vec::new()) });
        for t in 0..20 {
            tel.tick(t * 1000); // 40 samples into an outbox of 10
        }
        assert_eq!(tel.counters().buffered_samples, 10);
        assert_eq!(tel.counters().dropped_samples, 30);
        let (tx, rx) = watch::channel(false);
        let pusher = tokio::spawn(push_loop(tel.clone(), sink.clone(), rx));
        // Bounded wait: a failure is counted.
        for _ in 0..500 {
            if tel.counters().push_failures > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(tel.counters().push_failures > 0);
        assert_eq!(tel.counters().buffered_samples, 10, "nothing lost beyond the bound on failure");
        sink.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..500 {
            if tel.counters().buffered_samples == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tx.send(true);
        pusher.await.unwrap();
        let got = lock(&sink.got).clone();
        let delivered: usize = got.iter().map(|b| b.samples.len()).sum();
        assert_eq!(delivered, 10);
        assert!(got.iter().all(|b| b.samples.len() <= 4));
        assert_eq!(got[0].dropped_samples, 30);
        // Samples arrive oldest first, in order.
        let ts: Vec<i64> = got.iter().flat_map(|b| b.samples.iter().map(|s| s.reading.timestamp_ms)).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        // The reply's command was carried out: the next tick sees XID 79.
        tel.tick(100_000);
        assert_eq!(tel.unhealthy()[&0].reason, "XidError");
    }
}
