//! Prometheus metrics of the model server, served on `/metrics` (OpenMetrics text):
//!
//! - `capstan_serving_requests_total{model, version, outcome}`: infer requests by outcome
//!   (`success`, `client_error` for 4xx, `server_error` for failed runs);
//! - `capstan_serving_request_duration_seconds{model, version}`: infer latency, from the
//!   request's arrival to its answer;
//! - `capstan_serving_batch_size{model, version}`: requests per model run;
//! - `capstan_serving_in_flight{model, version}`: infer requests being handled now (what
//!   concurrency-based autoscaling reads).

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How an infer request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Answered with outputs.
    success,
    /// Refused: the request was wrong (4xx).
    client_error,
    /// The model failed to run (5xx).
    server_error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    version: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    version: String,
}

/// The server's metrics for one model.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    batch: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
    model: ModelLabels,
}

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Metrics of model `model` at `version`.
    pub fn new(model: &str, version: &str) -> Metrics {
        let mut registry = Registry::default();
        let labels = ModelLabels { model: model.into(), version: version.into() };
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("capstan_serving_requests", "Infer requests by outcome", requests.clone());
        let latency = Histogram::new(LATENCY_BUCKETS);
        let label_pairs = || {
            vec![
                (std::borrow::Cow::Borrowed("model"), std::borrow::Cow::Owned(model.to_string())),
                (std::borrow::Cow::Borrowed("version"), std::borrow::Cow::Owned(version.to_string())),
            ]
        };
        registry.sub_registry_with_labels(label_pairs().into_iter()).register(
            "capstan_serving_request_duration_seconds",
            "Infer latency from arrival to answer",
            latency.clone(),
        );
        let batch = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        {
            let sub = registry.sub_registry_with_labels(label_pairs().into_iter());
            sub.register("capstan_serving_batch_size", "Requests per model run", batch.clone());
            sub.register("capstan_serving_in_flight", "Infer requests being handled", in_flight.clone());
        }
        // Both outcomes exist from the start, so rates are defined before the first error.
        for outcome in [Outcome::success, Outcome::client_error, Outcome::server_error] {
            let _ = requests.get_or_create(&RequestLabels { model: model.into(), version: version.into(), outcome });
        }
        Metrics { registry, requests, latency, batch, in_flight, model: labels }
    }

    /// Counts one answered infer request.
    pub fn observe_request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model: self.model.model.clone(),
                version: self.model.version.clone(),
                outcome,
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one model run of `requests` requests.
    pub fn observe_batch(&self, requests: usize) {
        self.batch.observe(requests as f64);
    }

    /// One more (or one fewer, with -1) request in flight.
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_latency_and_batches() {
        let m = Metrics::new("iris", "3");
        m.observe_request(Outcome::success, Duration::from_micros(300));
        m.observe_request(Outcome::client_error, Duration::from_micros(100));
        m.observe_batch(4);
        let text = m.render();
        assert!(
            text.contains(r#"capstan_serving_requests_total{model="iris",version="3",outcome="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"outcome="server_error"} 0"#), "{text}");
        assert!(
            text.contains("capstan_serving_request_duration_seconds_count{model=\"iris\",version=\"3\"} 2"),
            "{text}"
        );
        assert!(text.contains("capstan_serving_batch_size_sum{model=\"iris\",version=\"3\"} 4.0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
