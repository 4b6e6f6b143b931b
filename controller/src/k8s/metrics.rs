//! The controller's Prometheus metrics and probes: `/metrics`, `/healthz` (the process
//! lives), `/readyz` (caches synced; a standby replica is ready too, it only waits for the
//! Lease).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use capstan_crds::trainingjob::{JobPhase, TrainingJobStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    passes: Family<ResultLabel, Counter>,
    pass_seconds: Histogram,
    pods_created: Counter,
    jobs: Family<PhaseLabel, Gauge>,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// True once the caches synced.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("capstan_controller");
        let passes = Family::<ResultLabel, Counter>::default();
        registry.register("passes", "Reconcile passes over every job, by result", passes.clone());
        let pass_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("pass_duration_seconds", "Duration of a reconcile pass", pass_seconds.clone());
        let pods_created = Counter::default();
        registry.register("pods_created", "Replica pods created", pods_created.clone());
        let jobs = Family::<PhaseLabel, Gauge>::default();
        registry.register("jobs", "TrainingJobs by phase", jobs.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        Metrics { registry, passes, pass_seconds, pods_created, jobs, leader, ready: AtomicBool::new(false) }
    }

    /// Count a pass.
    pub fn pass(&self, took: Duration, ok: bool) {
        self.passes.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" }.into() }).inc();
        self.pass_seconds.observe(took.as_secs_f64());
    }

    /// Count created pods.
    pub fn pods_created(&self, n: u64) {
        self.pods_created.inc_by(n);
    }

    /// Jobs by phase.
    pub fn observe_jobs(&self, statuses: &[TrainingJobStatus]) {
        for phase in [
            JobPhase::Pending,
            JobPhase::Starting,
            JobPhase::Running,
            JobPhase::Restarting,
            JobPhase::Succeeded,
            JobPhase::Failed,
            JobPhase::Suspended,
        ] {
            let n = statuses.iter().filter(|s| s.phase == phase).count();
            self.jobs.get_or_create(&PhaseLabel { phase: format!("{phase:?}") }).set(n as i64);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String");
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// The probe and metrics endpoints.
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_encode_with_the_prefix() {
        let m = super::Metrics::new();
        m.pass(std::time::Duration::from_millis(3), true);
        m.pods_created(4);
        let text = m.encode();
        assert!(text.contains("capstan_controller_passes_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("capstan_controller_pods_created_total 4"), "{text}");
    }
}
