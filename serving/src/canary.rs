//! Metric-gated canaries, as plain functions over values (shared by the standalone router
//! and the Kubernetes controller):
//!
//! - [`traffic_split`]: the weights of the stable and canary versions from `canaryPercent`;
//! - [`WeightedRoundRobin`]: deterministic weighted routing (smooth weighted round robin:
//!   over every `sum(weights)` consecutive picks each target gets exactly its weight, spread
//!   evenly rather than in runs);
//! - [`Window`]: per-version outcomes and latencies over a sliding time window, giving
//!   [`WindowStats`] (requests, errors, p99);
//! - [`verdict`]: [`Verdict::Promote`], [`Verdict::Rollback`] with the reason, or
//!   [`Verdict::Wait`], from the canary's and the stable version's window stats and the
//!   [`CanaryPolicy`];
//! - [`ScrapeHistory`] (Kubernetes): the same [`WindowStats`] from successive scrapes of the
//!   serving pods' cumulative `/metrics` counters ([`parse_pod_counters`]), the p99 from the
//!   latency histogram's bucket differences ([`bucket_quantile_ms`]).
//!
//! An error is any answer that is not a success: a 5xx, a failed connection, and also a 4xx:
//! a canary that refuses requests the stable version answers is broken. So that clients
//! sending bad requests to both versions do not roll a good canary back, the canary's error
//! rate must exceed both `maxErrorRate` and the stable version's rate.

use std::collections::VecDeque;

/// Thresholds of a canary.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryPolicy {
    /// Largest tolerated canary error rate (0..=1).
    pub max_error_rate: f64,
    /// Largest tolerated ratio of the canary's p99 latency to the stable version's.
    pub max_p99_latency_ratio: Option<f64>,
    /// Largest tolerated canary p99 latency in milliseconds.
    pub max_p99_latency_ms: Option<f64>,
    /// Requests the canary must have answered in the window before it can be promoted (or
    /// rolled back).
    pub min_requests: u64,
    /// Length of the observation window in milliseconds.
    pub window_ms: u64,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            max_error_rate: 0.01,
            max_p99_latency_ratio: Some(1.5),
            max_p99_latency_ms: None,
            min_requests: 100,
            window_ms: 60_000,
        }
    }
}

/// What one version did over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// 99th percentile latency in milliseconds (nearest rank), `None` without requests.
    pub p99_ms: Option<f64>,
}

impl WindowStats {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The decision on a canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary met every threshold over a full window with enough requests: make it the
    /// stable version.
    Promote,
    /// The canary failed a threshold: send all traffic back to the stable version.
    Rollback {
        /// Which threshold and by how much.
        reason: String,
    },
    /// Not enough evidence yet.
    Wait {
        /// What is missing.
        reason: String,
    },
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Decides on a canary. `window_elapsed`: the canary has run for a full window. Failures
/// are acted on as soon as the canary has `min_requests` requests; promotion also needs the
/// full window.
pub fn verdict(policy: &CanaryPolicy, stable: &WindowStats, canary: &WindowStats, window_elapsed: bool) -> Verdict {
    if canary.requests >= policy.min_requests && canary.requests > 0 {
        let rate = canary.error_rate();
        if rate > policy.max_error_rate && rate > stable.error_rate() {
            return Verdict::Rollback {
                reason: format!(
                    "canary error rate {} ({} of {} requests) exceeds maxErrorRate {} (stable: {})",
                    pct(rate),
                    canary.errors,
                    canary.requests,
                    pct(policy.max_error_rate),
                    pct(stable.error_rate())
                ),
            };
        }
        if let (Some(limit), Some(p99)) = (policy.max_p99_latency_ms, canary.p99_ms) {
            if p99 > limit {
                return Verdict::Rollback {
                    reason: format!("canary p99 latency {p99:.2} ms exceeds maxP99LatencyMs {limit} ms"),
                };
            }
        }
        if let (Some(ratio), Some(p99), Some(base)) = (policy.max_p99_latency_ratio, canary.p99_ms, stable.p99_ms) {
            if base > 0.0 && p99 / base > ratio {
                return Verdict::Rollback {
                    reason: format!(
                        "canary p99 latency {p99:.2} ms is {:.2}x the stable version's {base:.2} ms (maxP99LatencyRatio {ratio})",
                        p99 / base
                    ),
                };
            }
        }
    }
    if canary.requests < policy.min_requests {
        return Verdict::Wait {
            reason: format!("canary has {} of the {} requests needed", canary.requests, policy.min_requests),
        };
    }
    if !window_elapsed {
        return Verdict::Wait { reason: format!("observing for a full window of {} ms", policy.window_ms) };
    }
    Verdict::Promote
}

/// Weights `(stable, canary)` out of 100 for `canary_percent` (clamped to 0..=100).
pub fn traffic_split(canary_percent: u32) -> (u32, u32) {
    let c = canary_percent.min(100);
    (100 - c, c)
}

/// Smooth weighted round robin over targets with integer weights: deterministic, and over
/// every `sum(weights)` consecutive picks each target is picked exactly its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRoundRobin {
    weights: Vec<u32>,
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// Routing over `weights` (index = target).
    pub fn new(weights: Vec<u32>) -> WeightedRoundRobin {
        let current = vec![0; weights.len()];
        WeightedRoundRobin { weights, current }
    }

    /// The weights.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The next target; `None` when every weight is 0.
    pub fn pick(&mut self) -> Option<usize> {
        let total: i64 = self.weights.iter().map(|&w| w as i64).sum();
        if total == 0 {
            return None;
        }
        let mut best = 0;
        for (i, &w) in self.weights.iter().enumerate() {
            self.current[i] += w as i64;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Some(best)
    }
}

/// Outcomes of one version over time: `(at_ms, latency_ms, ok)`, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Window {
    entries: VecDeque<(u64, f64, bool)>,
}

impl Window {
    /// An empty window.
    pub fn new() -> Window {
        Window::default()
    }

    /// Records one answer at time `at_ms` (monotonic milliseconds).
    pub fn record(&mut self, at_ms: u64, latency_ms: f64, ok: bool) {
        self.entries.push_back((at_ms, latency_ms, ok));
    }

    /// Drops entries older than `window_ms` before `now_ms` and summarizes the rest.
    pub fn stats(&mut self, now_ms: u64, window_ms: u64) -> WindowStats {
        while self.entries.front().is_some_and(|(t, _, _)| now_ms.saturating_sub(*t) > window_ms) {
            self.entries.pop_front();
        }
        let requests = self.entries.len() as u64;
        let errors = self.entries.iter().filter(|(_, _, ok)| !ok).count() as u64;
        let mut lat: Vec<f64> = self.entries.iter().map(|(_, l, _)| *l).collect();
        WindowStats { requests, errors, p99_ms: percentile(&mut lat, 0.99) }
    }

    /// Keeps at most the newest `max` entries.
    pub fn truncate(&mut self, max: usize) {
        while self.entries.len() > max {
            self.entries.pop_front();
        }
    }

    /// Forgets everything (a new canary starts).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The `q` quantile (0..=1) by nearest rank; `None` for no samples.
pub fn percentile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

/// One pod's cumulative counters, as read from its `/metrics` ([`parse_pod_counters`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodCounters {
    /// `capstan_serving_requests_total`, every outcome.
    pub requests: f64,
    /// Of which not `success` (`client_error`, `server_error`).
    pub errors: f64,
    /// `capstan_serving_request_duration_seconds_bucket`: (upper bound in seconds,
    /// cumulative count), by ascending bound, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let labels = &line[line.find('{')? + 1..line.rfind('}')?];
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// The counters of one `capstan serve` `/metrics` text; `None` when the request counter is
/// missing (not a Capstan model server) or a value does not parse.
pub fn parse_pod_counters(text: &str) -> Option<PodCounters> {
    let mut out = PodCounters::default();
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("capstan_serving_requests_total{") {
            let v = value()?;
            seen = true;
            out.requests += v;
            if label(line, "outcome") != Some("success") {
                out.errors += v;
            }
        } else if line.starts_with("capstan_serving_request_duration_seconds_bucket{") {
            let le = label(line, "le")?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().ok()? };
            out.buckets.push((bound, value()?));
        }
    }
    out.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    seen.then_some(out)
}

/// The `q` quantile in milliseconds from cumulative histogram buckets (seconds), by linear
/// interpolation inside the bucket holding the nearest rank (as Prometheus'
/// `histogram_quantile`); a rank in the `+Inf` bucket gives the highest finite bound. `None`
/// without observations.
pub fn bucket_quantile_ms(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = (q * total).ceil().clamp(1.0, total);
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, cum) in buckets {
        if cum >= rank {
            if !bound.is_finite() {
                return Some(lower * 1000.0);
            }
            let inside = cum - below;
            let frac = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
            return Some((lower + (bound - lower) * frac) * 1000.0);
        }
        if bound.is_finite() {
            lower = bound;
        }
        below = cum;
    }
    Some(lower * 1000.0)
}

/// Successive scrapes of one version's pods, turned into [`WindowStats`] over a window
/// (pure): the Kubernetes side of the canary, where the controller sees no request and reads
/// the servers' cumulative counters instead.
///
/// The counts over a window are the sums of each pod's differences between successive
/// scrapes, from the last scrape at or before the window's start (the oldest kept one while
/// the window is not covered yet) to the newest. A pod whose counters went down between two
/// scrapes restarted, and one missing from the earlier scrape started since: its counts in
/// the later scrape are taken whole (a restart whose new counts already exceed the old ones
/// within one scrape interval cannot be told from growth). A pod missing from a later
/// scrape contributes nothing for that step.
#[derive(Debug, Clone, Default)]
pub struct ScrapeHistory {
    samples: VecDeque<(u64, Vec<(String, PodCounters)>)>,
}

impl ScrapeHistory {
    /// An empty history.
    pub fn new() -> ScrapeHistory {
        ScrapeHistory::default()
    }

    /// Adds one scrape at `now_ms` of every Ready pod (name, counters); samples no longer
    /// needed for a window of `window_ms` are dropped.
    pub fn add(&mut self, now_ms: u64, pods: Vec<(String, PodCounters)>, window_ms: u64) {
        self.samples.push_back((now_ms, pods));
        let from = now_ms.saturating_sub(window_ms);
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|s| s.0 <= from) {
            self.samples.pop_front();
        }
    }

    /// Number of scrapes kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no scrape is kept.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Requests, errors and p99 over the last `window_ms` before `now_ms`; `None` with fewer
    /// than two scrapes (no difference to take yet).
    pub fn stats(&self, now_ms: u64, window_ms: u64) -> Option<WindowStats> {
        if self.samples.len() < 2 {
            return None;
        }
        let from = now_ms.saturating_sub(window_ms);
        let base = self.samples.iter().rev().find(|s| s.0 <= from).unwrap_or(&self.samples[0]);
        let last = self.samples.back()?;
        if std::ptr::eq(base, last) {
            return None;
        }
        let (mut requests, mut errors) = (0.0, 0.0);
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let start = self.samples.iter().position(|s| std::ptr::eq(s, base)).unwrap_or(0);
        let steps = self.samples.iter().skip(start).zip(self.samples.iter().skip(start + 1));
        for (earlier, later) in steps {
            for (pod, now) in &later.1 {
                let before = earlier.1.iter().find(|(p, _)| p == pod).map(|(_, c)| c);
                let reset = before.is_some_and(|b| {
                    now.requests < b.requests
                        || now.errors < b.errors
                        || now.buckets.last().map(|x| x.1) < b.buckets.last().map(|x| x.1)
                });
                let before = before.filter(|_| !reset);
                requests += now.requests - before.map_or(0.0, |b| b.requests);
                errors += now.errors - before.map_or(0.0, |b| b.errors);
                for &(bound, cum) in &now.buckets {
                    let prior = before.and_then(|b| b.buckets.iter().find(|x| x.0 == bound)).map_or(0.0, |x| x.1);
                    let d = (cum - prior).max(0.0);
                    match buckets.iter_mut().find(|x| x.0 == bound) {
                        Some(x) => x.1 += d,
                        None => buckets.push((bound, d)),
                    }
                }
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Cumulative buckets stay monotone after summing per-pod differences.
        let mut running: f64 = 0.0;
        for b in buckets.iter_mut() {
            running = running.max(b.1);
            b.1 = running;
        }
        Some(WindowStats {
            requests: requests.max(0.0).round() as u64,
            errors: errors.max(0.0).round() as u64,
            p99_ms: bucket_quantile_ms(&buckets, 0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(requests: u64, errors: u64, p99: f64) -> WindowStats {
        WindowStats { requests, errors, p99_ms: Some(p99) }
    }

    #[test]
    fn rollback_on_errors_names_the_rates() {
        let p = CanaryPolicy { max_error_rate: 0.05, min_requests: 20, ..Default::default() };
        let v = verdict(&p, &stats(100, 0, 1.0), &stats(25, 25, 1.0), false);
        match v {
            Verdict::Rollback { reason } => {
                assert!(reason.contains("100.0%") && reason.contains("25 of 25") && reason.contains("5.0%"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The stable version fails as often: clients' fault, not the canary's.
        let v = verdict(&p, &stats(100, 50, 1.0), &stats(25, 10, 1.0), true);
        assert_eq!(v, Verdict::Promote);
    }

    #[test]
    fn waits_for_requests_and_window() {
        let p = CanaryPolicy { min_requests: 50, ..Default::default() };
        assert!(matches!(verdict(&p, &stats(100, 0, 1.0), &stats(10, 10, 1.0), true), Verdict::Wait { .. }));
        assert!(matches!(verdict(&p, &stats(100, 0, 1.0), &stats(60, 0, 1.0), false), Verdict::Wait { .. }));
        assert_eq!(verdict(&p, &stats(100, 0, 1.0), &stats(60, 0, 1.2), true), Verdict::Promote);
    }

    #[test]
    fn latency_gates() {
        let p = CanaryPolicy { max_p99_latency_ratio: Some(1.5), min_requests: 10, ..Default::default() };
        let v = verdict(&p, &stats(100, 0, 2.0), &stats(20, 0, 4.0), false);
        assert!(matches!(&v, Verdict::Rollback { reason } if reason.contains("2.00x")), "{v:?}");
        let p = CanaryPolicy { max_p99_latency_ratio: None, max_p99_latency_ms: Some(3.0), min_requests: 10, ..p };
        let v = verdict(&p, &stats(100, 0, 2.0), &stats(20, 0, 4.0), false);
        assert!(matches!(&v, Verdict::Rollback { reason } if reason.contains("maxP99LatencyMs")), "{v:?}");
    }

    #[test]
    fn window_forgets_old_entries() {
        let mut w = Window::new();
        w.record(0, 5.0, false);
        w.record(500, 1.0, true);
        w.record(1000, 2.0, true);
        let s = w.stats(1200, 1000);
        assert_eq!((s.requests, s.errors), (2, 0));
        assert_eq!(s.p99_ms, Some(2.0));
        assert_eq!(w.stats(5000, 1000).requests, 0);
    }

    #[test]
    fn split_clamps() {
        assert_eq!(traffic_split(20), (80, 20));
        assert_eq!(traffic_split(150), (0, 100));
        assert_eq!(WeightedRoundRobin::new(vec![0, 0]).pick(), None);
    }

    fn pod(requests: f64, errors: f64, buckets: &[(f64, f64)]) -> PodCounters {
        PodCounters { requests, errors, buckets: buckets.to_vec() }
    }

    #[test]
    fn pod_counters_from_a_real_metrics_text() {
        let m = crate::metrics::Metrics::new("iris", "3");
        for _ in 0..3 {
            m.observe_request(crate::metrics::Outcome::success, std::time::Duration::from_micros(300));
        }
        m.observe_request(crate::metrics::Outcome::client_error, std::time::Duration::from_millis(30));
        m.observe_request(crate::metrics::Outcome::server_error, std::time::Duration::from_secs(20));
        let c = parse_pod_counters(&m.render()).unwrap();
        assert_eq!((c.requests, c.errors), (5.0, 2.0));
        assert_eq!(c.buckets.len(), 17, "{:?}", c.buckets);
        assert_eq!(c.buckets[2], (0.0005, 3.0));
        assert_eq!(c.buckets.last(), Some(&(f64::INFINITY, 5.0)));
        assert_eq!(parse_pod_counters("# EOF\n"), None);
        assert_eq!(parse_pod_counters("capstan_serving_requests_total{outcome=\"success\"} x\n"), None);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 100 observations: 98 under 1 ms, 2 between 10 and 20 ms.
        let b = [(0.001, 98.0), (0.01, 98.0), (0.02, 100.0), (f64::INFINITY, 100.0)];
        let p = bucket_quantile_ms(&b, 0.99).unwrap();
        assert!((p - 15.0).abs() < 1e-9, "{p}");
        assert_eq!(bucket_quantile_ms(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.99), None);
        // In +Inf: the highest finite bound.
        assert_eq!(bucket_quantile_ms(&[(0.001, 0.0), (f64::INFINITY, 3.0)], 0.99), Some(1.0));
    }

    #[test]
    fn history_takes_differences_and_survives_restarts() {
        let mut h = ScrapeHistory::new();
        h.add(0, vec![("a".into(), pod(10.0, 1.0, &[(0.001, 10.0), (f64::INFINITY, 10.0)]))], 10_000);
        assert_eq!(h.stats(0, 10_000), None, "one scrape is no difference");
        h.add(1000, vec![("a".into(), pod(30.0, 6.0, &[(0.001, 20.0), (f64::INFINITY, 30.0)]))], 10_000);
        let s = h.stats(1000, 10_000).unwrap();
        assert_eq!((s.requests, s.errors), (20, 5));
        // Half the new requests above 1 ms: the p99 is the highest finite bound.
        assert_eq!(s.p99_ms, Some(1.0));
        // Pod a restarted (counters down) and pod b appeared: both taken whole.
        h.add(
            2000,
            vec![
                ("a".into(), pod(4.0, 0.0, &[(0.001, 4.0), (f64::INFINITY, 4.0)])),
                ("b".into(), pod(3.0, 3.0, &[(0.001, 3.0), (f64::INFINITY, 3.0)])),
            ],
            10_000,
        );
        let s = h.stats(2000, 10_000).unwrap();
        assert_eq!((s.requests, s.errors), (27, 8));
        // A window that starts at the second scrape leaves out the first step.
        let s = h.stats(2000, 1000).unwrap();
        assert_eq!((s.requests, s.errors), (7, 3));
        // Scrapes older than the window's baseline are dropped.
        h.add(30_000, vec![("b".into(), pod(5.0, 3.0, &[(0.001, 5.0), (f64::INFINITY, 5.0)]))], 10_000);
        assert_eq!(h.len(), 2);
        let s = h.stats(30_000, 10_000).unwrap();
        assert_eq!((s.requests, s.errors, s.p99_ms), (2, 0, Some(1.0)));
    }

    proptest! {
        /// Over each full cycle of sum(weights) picks, every target gets exactly its weight.
        #[test]
        fn round_robin_is_exact_per_cycle(weights in prop::collection::vec(0u32..50, 1..5), cycles in 1usize..4) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            let mut rr = WeightedRoundRobin::new(weights.clone());
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..(total as usize * cycles) {
                counts[rr.pick().unwrap()] += 1;
            }
            let want: Vec<u32> = weights.iter().map(|w| w * cycles as u32).collect();
            prop_assert_eq!(counts, want);
        }

        /// The percentile is one of the samples and at least as large as the q share of them.
        #[test]
        fn percentile_is_a_sample(mut v in prop::collection::vec(0f64..1000.0, 1..200), q in 0.01f64..1.0) {
            let orig = v.clone();
            let p = percentile(&mut v, q).unwrap();
            prop_assert!(orig.contains(&p));
            let below = orig.iter().filter(|&&x| x <= p).count() as f64;
            prop_assert!(below >= q * orig.len() as f64 - 1e-9);
        }

        /// Over a window covering every scrape, the history counts exactly the requests and
        /// errors served after the first scrape, whatever the pods and their (visible)
        /// restarts.
        #[test]
        fn history_counts_every_request_across_restarts(
            steps in prop::collection::vec(prop::collection::vec((0u32..20, 0u32..20, any::<bool>()), 2), 2..12)
        ) {
            let mut counters = [(0.0f64, 0.0f64); 2];
            let mut h = ScrapeHistory::new();
            let mut want = (0u64, 0u64);
            for (i, step) in steps.iter().enumerate() {
                for (p, &(ok, bad, restart)) in step.iter().enumerate() {
                    let (r, e) = (ok as f64 + bad as f64, bad as f64);
                    // Only a restart whose counters come back lower is visible; others are growth.
                    if restart && r < counters[p].0 && e <= counters[p].1 {
                        counters[p] = (r, e);
                    } else {
                        counters[p].0 += r;
                        counters[p].1 += e;
                    }
                    if i > 0 {
                        want.0 += r as u64;
                        want.1 += e as u64;
                    }
                }
                let pods = counters
                    .iter()
                    .enumerate()
                    .map(|(p, &(r, e))| (format!("p{p}"), pod(r, e, &[(0.001, r - e), (f64::INFINITY, r)])))
                    .collect();
                h.add(i as u64 * 1000, pods, 1_000_000);
            }
            let s = h.stats(steps.len() as u64 * 1000, 1_000_000).unwrap();
            prop_assert_eq!((s.requests, s.errors), want);
            if let Some(p99) = s.p99_ms {
                prop_assert!((0.0..=1.0).contains(&p99));
            }
        }

        /// Never promotes a canary whose error rate exceeds both the limit and the stable rate.
        #[test]
        fn never_promotes_a_failing_canary(req in 1u64..500, err_frac in 0f64..1.0, limit in 0f64..0.5) {
            let errors = (req as f64 * err_frac) as u64;
            let p = CanaryPolicy { max_error_rate: limit, min_requests: 1, max_p99_latency_ratio: None, ..Default::default() };
            let c = WindowStats { requests: req, errors, p99_ms: Some(1.0) };
            let v = verdict(&p, &WindowStats::default(), &c, true);
            if c.error_rate() > limit {
                prop_assert!(matches!(v, Verdict::Rollback { .. }), "{:?}", v);
            } else {
                prop_assert_eq!(v, Verdict::Promote);
            }
        }
    }
}
