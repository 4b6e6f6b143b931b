//! What the agent sends the server (`POST /api/v1/nodes/{node}/samples`, JSON) and what it
//! gets back, plus the bounded [`Outbox`] that holds samples while the server is away.
//!
//! The outbox never grows past its capacity: when full, the oldest record goes and is
//! counted ([`Outbox::dropped_samples`]); the counts travel with every batch so the server
//! (and `/metrics`) show what was lost.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::gpu::{Fault, GpuInfo, GpuReading, SourceKind};
use crate::health::GpuHealth;

/// The job replica a GPU is given to, as the agent placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// Namespace of the job.
    pub namespace: String,
    /// Job name.
    pub name: String,
    /// Job UID.
    pub uid: String,
    /// Replica index.
    pub replica: u32,
    /// Attempt.
    pub attempt: u32,
    /// Tracking run of the job (`MLFLOW_RUN_ID` of the replica), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

fn ser_job<S: Serializer>(job: &Option<Arc<JobRef>>, s: S) -> Result<S::Ok, S::Error> {
    job.as_deref().serialize(s)
}

fn de_job<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<JobRef>>, D::Error> {
    Ok(Option::<JobRef>::deserialize(d)?.map(Arc::new))
}

/// One reading of one GPU, with what ran on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The reading.
    #[serde(flatten)]
    pub reading: GpuReading,
    /// Last XID seen on this GPU since the agent started (0: none), DCGM_FI_DEV_XID_ERRORS.
    pub last_xid: u64,
    /// The replica the GPU was given to.
    #[serde(default, serialize_with = "ser_job", deserialize_with = "de_job")]
    pub job: Option<Arc<JobRef>>,
}

/// One point of a run's system metrics (`system/gpu_0_utilization_percentage`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetric {
    /// Run id.
    pub run_id: String,
    /// MLflow system metric key.
    pub key: String,
    /// Value.
    pub value: f64,
    /// ms since the epoch.
    pub timestamp_ms: i64,
    /// Step (system-metrics windows since the replica started).
    pub step: i64,
}

/// A GPU as the batch describes it: what it is, its health, its last XID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    /// Identity.
    #[serde(flatten)]
    pub info: GpuInfo,
    /// Health.
    pub health: GpuHealth,
    /// Last XID (0: none).
    pub last_xid: u64,
}

/// One push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Node name.
    pub node: String,
    /// Where the GPUs come from: `simulated`, `nvml`, `none`.
    pub source: SourceKind,
    /// NVIDIA driver version ("simulated" for simulated GPUs).
    pub driver_version: String,
    /// Sampling interval, ms.
    pub sample_interval_ms: u64,
    /// Every GPU of the node.
    pub gpus: Vec<GpuStatus>,
    /// Readings, oldest first.
    pub samples: Vec<SampleRecord>,
    /// System metrics for the runs of the jobs on the GPUs.
    pub run_metrics: Vec<RunMetric>,
    /// Samples dropped since the agent started (outbox full).
    pub dropped_samples: u64,
    /// Run metric points dropped since the agent started.
    pub dropped_run_metrics: u64,
}

/// Something the server asks of the agent (returned with a push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// GPU index.
    pub gpu: u32,
    /// Inject this fault (simulated GPUs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Forget the GPU's unhealthy verdict.
    #[serde(default)]
    pub clear_health: bool,
}

/// The server's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PushReply {
    /// Samples stored.
    #[serde(default)]
    pub accepted_samples: u64,
    /// What to do now.
    #[serde(default)]
    pub commands: Vec<Command>,
}

/// A push in flight.
pub type PushFuture<'a> = Pin<Box<dyn Future<Output = Result<PushReply, String>> + Send + 'a>>;

/// Where batches go: the server over HTTP ([`HttpSink`]), or the server in the same process
/// (`capstan up`).
pub trait Sink: Send + Sync {
    /// Deliver one batch; Err says why it did not arrive (it is then sent again).
    fn push<'a>(&'a self, batch: &'a Batch) -> PushFuture<'a>;
}

/// Pushes to `POST {server}/api/v1/nodes/{node}/samples`.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl HttpSink {
    /// A sink for `server` (e.g. `http://127.0.0.1:8080`), with the API token if the server
    /// needs one.
    pub fn new(server: &str, token: Option<String>) -> HttpSink {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpSink { client, base: server.trim_end_matches('/').to_string(), token }
    }
}

/// Percent-encode a path segment (node names are host names, but be safe).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Sink for HttpSink {
    fn push<'a>(&'a self, batch: &'a Batch) -> PushFuture<'a> {
        Box::pin(async move {
            let url = format!("{}/api/v1/nodes/{}/samples", self.base, segment(&batch.node));
            let mut req = self.client.post(&url).json(batch);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes);
                let body: String = body.chars().take(300).collect();
                return Err(format!("POST {url}: HTTP {status}: {body}"));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: unexpected answer: {e}"))
        })
    }
}

/// Samples and run metrics waiting to be pushed, bounded; the oldest go first when full.
#[derive(Debug, Clone)]
pub struct Outbox {
    samples: VecDeque<(u64, SampleRecord)>,
    run_metrics: VecDeque<(u64, RunMetric)>,
    sample_capacity: usize,
    run_capacity: usize,
    next_seq: u64,
    dropped_samples: u64,
    dropped_run_metrics: u64,
}

/// What [`Outbox::take`] handed out, to [`Outbox::commit`] once delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    upto: Option<u64>,
}

impl Outbox {
    /// An outbox of at most `sample_capacity` samples and `run_capacity` run metric points.
    pub fn new(sample_capacity: usize, run_capacity: usize) -> Outbox {
        Outbox {
            samples: VecDeque::new(),
            run_metrics: VecDeque::new(),
            sample_capacity: sample_capacity.max(1),
            run_capacity: run_capacity.max(1),
            next_seq: 0,
            dropped_samples: 0,
            dropped_run_metrics: 0,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Queue a sample (dropping the oldest when full).
    pub fn push_sample(&mut self, r: SampleRecord) {
        if self.samples.len() >= self.sample_capacity {
            self.samples.pop_front();
            self.dropped_samples += 1;
        }
        let s = self.seq();
        self.samples.push_back((s, r));
    }

    /// Queue a run metric point (dropping the oldest when full).
    pub fn push_run_metric(&mut self, m: RunMetric) {
        if self.run_metrics.len() >= self.run_capacity {
            self.run_metrics.pop_front();
            self.dropped_run_metrics += 1;
        }
        let s = self.seq();
        self.run_metrics.push_back((s, m));
    }

    /// Up to `max_samples` samples and `max_run_metrics` points, oldest first, without
    /// removing them.
    pub fn take(&self, max_samples: usize, max_run_metrics: usize) -> (Vec<SampleRecord>, Vec<RunMetric>, Taken) {
        let samples: Vec<&(u64, SampleRecord)> = self.samples.iter().take(max_samples).collect();
        let metrics: Vec<&(u64, RunMetric)> = self.run_metrics.iter().take(max_run_metrics).collect();
        let upto = samples.last().map(|s| s.0).into_iter().chain(metrics.last().map(|m| m.0)).max();
        // Sequence numbers interleave samples and metrics: hand out only what is at or below
        // the smaller of the two last ones when one kind was cut short, so commit is exact.
        let cut_s = samples.len() == max_samples && self.samples.len() > max_samples;
        let cut_m = metrics.len() == max_run_metrics && self.run_metrics.len() > max_run_metrics;
        let limit = match (cut_s, cut_m) {
            (true, true) => samples.last().map(|s| s.0).min(metrics.last().map(|m| m.0)),
            (true, false) => samples.last().map(|s| s.0),
            (false, true) => metrics.last().map(|m| m.0),
            (false, false) => upto,
        };
        let keep = |seq: u64| limit.is_some_and(|l| seq <= l);
        let samples: Vec<SampleRecord> = samples.into_iter().filter(|s| keep(s.0)).map(|s| s.1.clone()).collect();
        let metrics: Vec<RunMetric> = metrics.into_iter().filter(|m| keep(m.0)).map(|m| m.1.clone()).collect();
        (samples, metrics, Taken { upto: limit })
    }

    /// Remove what `taken` handed out (what was dropped meanwhile is already gone).
    pub fn commit(&mut self, taken: Taken) {
        let Some(upto) = taken.upto else { return };
        while self.samples.front().is_some_and(|s| s.0 <= upto) {
            self.samples.pop_front();
        }
        while self.run_metrics.front().is_some_and(|m| m.0 <= upto) {
            self.run_metrics.pop_front();
        }
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.run_metrics.is_empty()
    }

    /// Run metric points waiting.
    pub fn run_metrics_len(&self) -> usize {
        self.run_metrics.len()
    }

    /// Samples dropped so far.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// Run metric points dropped so far.
    pub fn dropped_run_metrics(&self) -> u64 {
        self.dropped_run_metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(i: i64) -> SampleRecord {
        SampleRecord {
            reading: GpuReading { index: 0, timestamp_ms: i, ..GpuReading::default() },
            last_xid: 0,
            job: None,
        }
    }

    fn metric(i: i64) -> RunMetric {
        RunMetric { run_id: "r".into(), key: "k".into(), value: i as f64, timestamp_ms: i, step: i }
    }

    #[test]
    fn bounded_and_counted() {
        let mut o = Outbox::new(3, 2);
        for i in 0..5 {
            o.push_sample(rec(i));
            o.push_run_metric(metric(i));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.run_metrics_len(), 2);
        assert_eq!(o.dropped_samples(), 2);
        assert_eq!(o.dropped_run_metrics(), 3);
        let (s, m, taken) = o.take(10, 10);
        assert_eq!(s.iter().map(|r| r.reading.timestamp_ms).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(m.iter().map(|r| r.step).collect::<Vec<_>>(), vec![3, 4]);
        o.commit(taken);
        assert!(o.is_empty());
    }

    #[test]
    fn failed_push_keeps_everything() {
        let mut o = Outbox::new(10, 10);
        o.push_sample(rec(1));
        let (s, _, _) = o.take(10, 10);
        assert_eq!(s.len(), 1);
        // Not committed (the push failed): still there, and new ones queue behind it.
        o.push_sample(rec(2));
        let (s, _, taken) = o.take(10, 10);
        assert_eq!(s.len(), 2);
        o.commit(taken);
        assert!(o.is_empty());
    }

    #[test]
    fn job_serializes_inline() {
        let r = SampleRecord {
            reading: GpuReading { index: 3, gpu_util: Some(50.0), ..GpuReading::default() },
            last_xid: 13,
            job: Some(Arc::new(JobRef {
                namespace: "default".into(),
                name: "j".into(),
                uid: "u".into(),
                replica: 1,
                attempt: 2,
                run_id: None,
            })),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["index"], 3);
        assert_eq!(v["gpu_util"], 50.0);
        assert_eq!(v["job"]["name"], "j");
        let back: SampleRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let c: Command = serde_json::from_str(r#"{"gpu":0,"fault":{"xid":79}}"#).unwrap();
        assert_eq!(c.fault, Some(Fault::Xid(79)));
        let c: Command = serde_json::from_str(r#"{"gpu":1,"fault":{"overheat":true}}"#).unwrap();
        assert_eq!(c.fault, Some(Fault::Overheat(true)));
        let c: Command = serde_json::from_str(r#"{"gpu":1,"clear_health":true}"#).unwrap();
        assert!(c.clear_health && c.fault.is_none());
    }

    proptest! {
        /// Whatever the interleaving of queuing, partial takes, failures and commits: the
        /// outbox never holds more than its capacity, every record is delivered at most once
        /// and in order, and delivered + dropped + waiting = queued.
        #[test]
        fn outbox_accounting(ops in proptest::collection::vec((0u8..4, 1usize..6), 1..200), cap in 1usize..20) {
            let mut o = Outbox::new(cap, cap);
            let (mut queued, mut delivered, mut last) = (0u64, 0u64, -1i64);
            let (mut queued_m, mut delivered_m) = (0u64, 0u64);
            for (op, n) in ops {
                match op {
                    0 => for _ in 0..n { o.push_sample(rec(queued as i64)); queued += 1; },
                    1 => for _ in 0..n { o.push_run_metric(metric(queued_m as i64)); queued_m += 1; },
                    2 => { let _ = o.take(n, n); } // a push that failed
                    _ => {
                        let (s, m, t) = o.take(n, n);
                        for r in &s {
                            prop_assert!(r.reading.timestamp_ms > last);
                            last = r.reading.timestamp_ms;
                        }
                        delivered += s.len() as u64;
                        delivered_m += m.len() as u64;
                        o.commit(t);
                    }
                }
                prop_assert!(o.len() <= cap && o.run_metrics_len() <= cap);
                prop_assert_eq!(delivered + o.dropped_samples() + o.len() as u64, queued);
                prop_assert_eq!(delivered_m + o.dropped_run_metrics() + o.run_metrics_len() as u64, queued_m);
            }
        }
    }
}
