//! Request rate and latency of deployed models over time, as the Capstan server's inference
//! proxy (`/v2/models/{name}/...infer`) saw them: one bucket per second per deployment and
//! version, the last [`KEEP_SECONDS`] kept in memory (a restart starts empty). Requests sent
//! straight to a replica's own port bypass the proxy and are not counted here (each
//! `capstan serve` replica exposes its own Prometheus `/metrics` for those).
//!
//! The deployments page draws [`TrafficSeries`] from `/ui/data/traffic`. The bucketing and
//! the percentiles are plain functions ([`Buckets::record`], [`Buckets::series`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// Seconds of history kept per deployment and version.
pub const KEEP_SECONDS: u64 = 900;
/// Latency samples kept per one-second bucket (the percentiles of a busier second are over
/// its first samples).
pub const MAX_SAMPLES_PER_SECOND: usize = 2000;

/// One second of one version's answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Seconds since the epoch.
    pub second: u64,
    /// Answers.
    pub requests: u64,
    /// Of which failed (any status but a success, or no answer).
    pub errors: u64,
    /// Latencies (ms), at most [`MAX_SAMPLES_PER_SECOND`].
    pub latencies: Vec<f32>,
}

/// The buckets of one version, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub VecDeque<Bucket>);

/// Series of one version over the asked window, one value per step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionSeries {
    /// The version.
    pub version: String,
    /// Requests per second, averaged over each step.
    pub rps: Vec<f64>,
    /// Failed requests per second.
    pub errors: Vec<f64>,
    /// Median latency (ms); None for a step without requests.
    pub p50: Vec<Option<f64>>,
    /// 99th percentile latency (ms); None for a step without requests.
    pub p99: Vec<Option<f64>>,
    /// Requests in the whole window.
    pub total: u64,
}

/// What `/ui/data/traffic` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrafficSeries {
    /// The deployment.
    pub deployment: String,
    /// Step (seconds).
    pub step: u64,
    /// Start of each step (seconds since the epoch).
    pub t: Vec<u64>,
    /// One entry per version seen in the window, in version order.
    pub versions: Vec<VersionSeries>,
}

/// The `q` quantile (0..=1) of `samples` (nearest rank); None when empty.
pub fn quantile(samples: &mut [f32], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1] as f64)
}

impl Buckets {
    /// Adds one answer at `second`; drops buckets older than [`KEEP_SECONDS`] before it.
    pub fn record(&mut self, second: u64, latency_ms: f64, ok: bool) {
        match self.0.back_mut() {
            Some(b) if b.second == second => {
                b.requests += 1;
                b.errors += u64::from(!ok);
                if b.latencies.len() < MAX_SAMPLES_PER_SECOND {
                    b.latencies.push(latency_ms as f32);
                }
            }
            // A clock step backwards: count it in the latest bucket rather than reorder.
            Some(b) if b.second > second => {
                b.requests += 1;
                b.errors += u64::from(!ok);
            }
            _ => self.0.push_back(Bucket {
                second,
                requests: 1,
                errors: u64::from(!ok),
                latencies: vec![latency_ms as f32],
            }),
        }
        while self.0.front().is_some_and(|b| b.second + KEEP_SECONDS < second) {
            self.0.pop_front();
        }
    }

    /// The series over `[from, from + n * step)`: requests per second averaged over each
    /// step, p50 and p99 over the step's samples.
    pub fn series(&self, version: &str, from: u64, step: u64, n: usize) -> VersionSeries {
        let step = step.max(1);
        let mut out = VersionSeries { version: version.to_string(), ..Default::default() };
        let mut samples: Vec<Vec<f32>> = vec![Vec::new(); n];
        let mut requests = vec![0u64; n];
        let mut errors = vec![0u64; n];
        for b in &self.0 {
            if b.second < from {
                continue;
            }
            let i = ((b.second - from) / step) as usize;
            if i >= n {
                continue;
            }
            requests[i] += b.requests;
            errors[i] += b.errors;
            samples[i].extend_from_slice(&b.latencies);
        }
        for i in 0..n {
            out.rps.push(requests[i] as f64 / step as f64);
            out.errors.push(errors[i] as f64 / step as f64);
            out.p50.push(quantile(&mut samples[i], 0.5));
            out.p99.push(quantile(&mut samples[i], 0.99));
            out.total += requests[i];
        }
        out
    }
}

/// Every deployment's buckets, per version.
#[derive(Debug, Default)]
pub struct Traffic {
    by: HashMap<String, BTreeMap<String, Buckets>>,
}

impl Traffic {
    /// Records one answer of `version` of `deployment` at `second`.
    pub fn record(&mut self, deployment: &str, version: &str, second: u64, latency_ms: f64, ok: bool) {
        self.by
            .entry(deployment.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default()
            .record(second, latency_ms, ok);
    }

    /// The last `window` seconds before `now` (inclusive) of `deployment` in steps of `step`
    /// seconds; versions without a request in the window are left out.
    pub fn series(&self, deployment: &str, now: u64, window: u64, step: u64) -> TrafficSeries {
        let step = step.max(1);
        let n = window.div_ceil(step).max(1) as usize;
        // Steps aligned to multiples of `step`, the last one holding `now`.
        let last = now - now % step;
        let from = last.saturating_sub((n as u64 - 1) * step);
        let t = (0..n as u64).map(|i| from + i * step).collect();
        let mut versions: Vec<VersionSeries> = self
            .by
            .get(deployment)
            .map(|vs| vs.iter().map(|(v, b)| b.series(v, from, step, n)).filter(|s| s.total > 0).collect())
            .unwrap_or_default();
        versions.sort_by(|a, b| version_order(&a.version, &b.version));
        TrafficSeries { deployment: deployment.to_string(), step, t, versions }
    }
}

/// Numeric versions in number order, others after them by text.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn global() -> &'static Mutex<Traffic> {
    static T: OnceLock<Mutex<Traffic>> = OnceLock::new();
    T.get_or_init(Mutex::default)
}

fn now_second() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Records one inference answer seen by the server's proxy (called by capstan-server).
pub fn record(deployment: &str, version: &str, latency_ms: f64, ok: bool) {
    if let Ok(mut t) = global().lock() {
        t.record(deployment, version, now_second(), latency_ms, ok);
    }
}

/// The series of `deployment` over the last `window` seconds, in steps of `step` seconds.
pub fn series(deployment: &str, window: u64, step: u64) -> TrafficSeries {
    match global().lock() {
        Ok(t) => t.series(deployment, now_second(), window, step),
        Err(_) => TrafficSeries { deployment: deployment.to_string(), step, ..Default::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_per_second_and_steps() {
        let mut t = Traffic::default();
        for i in 0..10 {
            t.record("d", "1", 1000, i as f64, true);
        }
        t.record("d", "1", 1003, 50.0, false);
        t.record("d", "2", 1004, 7.0, true);
        t.record("other", "1", 1004, 7.0, true);
        let s = t.series("d", 1005, 10, 5);
        // The last step holds `now`.
        assert_eq!(s.t, vec![1000, 1005]);
        assert_eq!(s.versions.len(), 2);
        let v1 = &s.versions[0];
        assert_eq!(v1.version, "1");
        assert_eq!(v1.total, 11);
        assert_eq!(v1.rps, vec![11.0 / 5.0, 0.0]);
        assert_eq!(v1.errors, vec![1.0 / 5.0, 0.0]);
        assert_eq!(v1.p50, vec![Some(5.0), None]);
        assert_eq!(v1.p99, vec![Some(50.0), None]);
        assert_eq!(s.versions[1].version, "2");
        // Outside the window: nothing.
        assert!(t.series("d", 5000, 60, 5).versions.is_empty());
        assert!(t.series("nope", 1005, 10, 5).versions.is_empty());
    }

    #[test]
    fn old_buckets_are_dropped() {
        let mut b = Buckets::default();
        b.record(10, 1.0, true);
        b.record(10 + KEEP_SECONDS + 1, 1.0, true);
        assert_eq!(b.0.len(), 1);
        // A second going backwards counts in the latest bucket.
        b.record(5, 1.0, true);
        assert_eq!(b.0.back().map(|x| x.requests), Some(2));
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["10", "2", "b", "1", "a"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, ["1", "2", "10", "a", "b"]);
    }

    proptest! {
        /// Every recorded answer inside the window is counted exactly once, whatever the step.
        #[test]
        fn totals_are_kept(seconds in proptest::collection::vec(0u64..300, 1..200), step in 1u64..30) {
            let mut sorted = seconds.clone();
            sorted.sort();
            let mut t = Traffic::default();
            for s in &sorted {
                t.record("d", "1", 1000 + s, 1.0, true);
            }
            let s = t.series("d", 1299, 300, step);
            let total: u64 = s.versions.iter().map(|v| v.total).sum();
            let in_window = sorted.iter().filter(|x| 1000 + **x >= *s.t.first().unwrap()).count() as u64;
            prop_assert_eq!(total, in_window);
            let rps_sum: f64 = s.versions.iter().flat_map(|v| v.rps.iter()).sum::<f64>() * step as f64;
            prop_assert!((rps_sum - total as f64).abs() < 1e-6);
        }

        #[test]
        fn quantiles_are_samples(mut xs in proptest::collection::vec(0f32..1e4, 1..100), q in 0.0f64..=1.0) {
            let v = quantile(&mut xs, q).unwrap();
            prop_assert!(xs.iter().any(|x| *x as f64 == v));
            let below = xs.iter().filter(|x| (**x as f64) < v).count();
            prop_assert!(below as f64 <= q * xs.len() as f64);
        }
    }
}
