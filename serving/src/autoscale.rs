//! Autoscaling of a model version's replicas: the decision ([`decide`], [`desired_replicas`]:
//! pure) and the load it follows ([`LoadMeter`], [`LoadTable`], [`ScrapeWindow`]).
//!
//! # The decision, against Kubernetes' HPA and Knative's KPA
//!
//! - **Recommendation** (HPA and KPA alike): `ceil(observed load / target per replica)`, where
//!   the load is the version's total: average requests in flight (`concurrency`) or requests
//!   per second (`rps`) over every replica. Clamped to `[minReplicas, maxReplicas]`.
//! - **Tolerance** (HPA's `--horizontal-pod-autoscaler-tolerance`, 10%): when the load per
//!   current replica is within 10% of the target, nothing changes, so noise around the
//!   target does not flap the count.
//! - **Scale down** (HPA's `behavior.scaleDown.stabilizationWindowSeconds`, default 300 s there;
//!   KPA gets the same effect from averaging over its 60 s stable window): only to the highest
//!   recommendation of the last [`ScalePolicy::scale_down_window_ms`] (CRD
//!   `autoscaling.scaleDownStabilizationSeconds`, default [`DEFAULT_SCALE_DOWN_WINDOW_S`] s,
//!   between the two). A fresh state counts the current count as a recommendation made now,
//!   so a restarted controller waits one window before it scales down.
//! - **Scale up** is immediate (HPA's scale-up stabilization is 0 s; KPA's panic mode reacts
//!   within its 6 s panic window) but at most to `max(2 x current, current + 4)` per decision,
//!   HPA's default scale-up policies (100% or 4 pods).
//! - **Missing load** (no replica reports, a scrape failed): hold the current count (HPA skips
//!   scaling when metrics are missing). Scale to and from zero (KPA's activator) is not built:
//!   the minimum is at least 1.
//!
//! # The load
//!
//! Under `capstan up` the server's `/v2/models/{name}` proxy sees every request: it counts
//! requests in flight per (deployment, version) and their completions in one-second buckets
//! ([`LoadMeter`]: time-weighted, so the average concurrency is exact rather than sampled),
//! and the standalone controller reads the averages over [`LOAD_WINDOW_MS`] from
//! [`LoadTable::global`] (both run in one process). On Kubernetes the controller scrapes each
//! Ready serving pod's `/metrics` (`capstan_serving_in_flight`,
//! `capstan_serving_requests_total`: [`parse_serving_metrics`]) at each pass and averages the
//! samples over the same window ([`ScrapeWindow`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

/// Default scale-down stabilization window, seconds.
pub const DEFAULT_SCALE_DOWN_WINDOW_S: u32 = 60;

/// The window the load is averaged over (HPA's metrics-server resolution is 15 s; KPA's
/// panic window 6 s).
pub const LOAD_WINDOW_MS: u64 = 10_000;

/// Default tolerance: relative distance from the target inside which nothing changes.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// Which load the replica count follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleMetric {
    /// Requests in flight (time-weighted average).
    #[default]
    Concurrency,
    /// Requests answered per second.
    Rps,
}

/// Bounds and target of one version's replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    /// Fewest replicas (at least 1).
    pub min: u32,
    /// Most replicas (at least `min`).
    pub max: u32,
    /// The load followed.
    pub metric: ScaleMetric,
    /// The load one replica should carry (> 0).
    pub target: f64,
    /// Scale down only to the highest recommendation within this many milliseconds.
    pub scale_down_window_ms: u64,
    /// Relative distance from the target inside which the count holds.
    pub tolerance: f64,
}

impl ScalePolicy {
    /// A policy with the defaults; `min` is raised to 1 and `max` to `min`, a target below
    /// a tiny positive value is raised to it.
    pub fn new(min: u32, max: u32, metric: ScaleMetric, target: f64) -> ScalePolicy {
        let min = min.max(1);
        ScalePolicy {
            min,
            max: max.max(min),
            metric,
            target: if target.is_finite() && target > 1e-9 { target } else { 1e-9 },
            scale_down_window_ms: DEFAULT_SCALE_DOWN_WINDOW_S as u64 * 1000,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The metric's name as in the CRD.
    pub fn metric_name(&self) -> &'static str {
        match self.metric {
            ScaleMetric::Concurrency => "concurrency",
            ScaleMetric::Rps => "rps",
        }
    }

    fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min, self.max)
    }
}

/// A version's load: the total over its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Average requests in flight.
    pub concurrency: f64,
    /// Requests answered per second.
    pub rps: f64,
}

impl Load {
    /// The value `metric` follows.
    pub fn value(&self, metric: ScaleMetric) -> f64 {
        match metric {
            ScaleMetric::Concurrency => self.concurrency,
            ScaleMetric::Rps => self.rps,
        }
    }
}

/// The recommendations of the last window (what a scale-down is stabilized over).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleState {
    recommendations: VecDeque<(u64, u32)>,
    started: bool,
}

/// Which way a decision moved the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// No change.
    Hold,
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas to run from now.
    pub replicas: u32,
    /// What the load alone asks for now (within the bounds), before the scale-down window
    /// and the scale-up limit.
    pub desired: u32,
    /// Up, down or hold.
    pub direction: Direction,
    /// Why, in words: the load against the target.
    pub reason: String,
}

/// Decides the replica count of one version (pure: `state` carries the recommendations of
/// the last window between calls). `load`: the version's total load, `None` when it is not
/// known (hold). `current`: replicas running or starting now. `now_ms`: a monotonic clock.
pub fn decide(policy: &ScalePolicy, state: &mut ScaleState, load: Option<f64>, current: u32, now_ms: u64) -> Decision {
    let current_c = policy.clamp(current);
    if !state.started {
        state.started = true;
        state.recommendations.push_back((now_ms, current_c));
    }
    let horizon = now_ms.saturating_sub(policy.scale_down_window_ms);
    while state.recommendations.front().is_some_and(|&(t, _)| t < horizon) {
        state.recommendations.pop_front();
    }
    let name = policy.metric_name();
    let Some(load) = load.filter(|l| l.is_finite()).map(|l| l.max(0.0)) else {
        let direction = if current_c > current {
            Direction::Up
        } else if current_c < current {
            Direction::Down
        } else {
            Direction::Hold
        };
        return Decision {
            replicas: current_c,
            desired: current_c,
            direction,
            reason: if current_c == current {
                format!("no {name} measured: holding {current_c} replicas")
            } else {
                format!("no {name} measured: {current_c} replicas, the nearest within {}..{}", policy.min, policy.max)
            },
        };
    };
    let per_replica = load / current_c as f64;
    let ratio = per_replica / policy.target;
    let raw = if (ratio - 1.0).abs() <= policy.tolerance {
        current_c
    } else {
        let r = (load / policy.target).ceil();
        if r >= u32::MAX as f64 {
            u32::MAX
        } else {
            r as u32
        }
    };
    let desired = policy.clamp(raw);
    state.recommendations.push_back((now_ms, desired));
    let stabilized = state.recommendations.iter().map(|&(_, r)| r).max().unwrap_or(desired);
    let up_limit = current_c.saturating_mul(2).max(current_c.saturating_add(4));
    let replicas = if desired > current_c {
        desired.min(up_limit)
    } else if desired < current_c {
        stabilized.min(current_c)
    } else {
        current_c
    };
    let replicas = policy.clamp(replicas);
    let direction = match replicas.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::Up,
        std::cmp::Ordering::Less => Direction::Down,
        std::cmp::Ordering::Equal => Direction::Hold,
    };
    let mut reason = format!(
        "{name} {load:.2} over {current_c} replicas ({per_replica:.2} per replica, target {}): wants {desired}",
        policy.target
    );
    if replicas < desired {
        reason.push_str(&format!(", at most {up_limit} in one step"));
    } else if replicas > desired && desired < current_c {
        reason.push_str(&format!(
            ", held at {replicas} by the {} s scale-down window",
            policy.scale_down_window_ms / 1000
        ));
    }
    if raw != desired {
        reason.push_str(&format!(" (bounds {}..{})", policy.min, policy.max));
    }
    Decision { replicas, desired, direction, reason }
}

/// The replica count [`decide`] settles on.
pub fn desired_replicas(
    load: Option<f64>,
    policy: &ScalePolicy,
    current: u32,
    now_ms: u64,
    state: &mut ScaleState,
) -> u32 {
    decide(policy, state, load, current, now_ms).replicas
}

/// Seconds of buckets a [`LoadMeter`] keeps.
const KEEP_S: u64 = 120;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    /// Requests-in-flight x milliseconds within this second.
    busy: f64,
    /// Requests that ended within this second.
    done: u64,
}

/// Requests in flight and answered, time-weighted in one-second buckets (pure: the caller
/// gives the time).
#[derive(Debug, Clone, Default)]
pub struct LoadMeter {
    in_flight: u64,
    last_ms: u64,
    created_ms: u64,
    buckets: VecDeque<Bucket>,
}

impl LoadMeter {
    /// An idle meter from `now_ms`.
    pub fn new(now_ms: u64) -> LoadMeter {
        LoadMeter { in_flight: 0, last_ms: now_ms, created_ms: now_ms, buckets: VecDeque::new() }
    }

    fn bucket(&mut self, second: u64) -> &mut Bucket {
        if self.buckets.back().is_none_or(|b| b.second < second) {
            self.buckets.push_back(Bucket { second, ..Default::default() });
        }
        while self.buckets.front().is_some_and(|b| b.second + KEEP_S < second) {
            self.buckets.pop_front();
        }
        self.buckets.back_mut().expect("just pushed")
    }

    /// Accounts the requests in flight up to `now_ms`.
    fn advance(&mut self, now_ms: u64) {
        let mut t = self.last_ms;
        while t < now_ms {
            let second = t / 1000;
            let end = ((second + 1) * 1000).min(now_ms);
            let n = self.in_flight as f64;
            if n > 0.0 {
                self.bucket(second).busy += n * (end - t) as f64;
            }
            t = end;
        }
        self.last_ms = self.last_ms.max(now_ms);
        self.bucket(now_ms / 1000);
    }

    /// A request starts.
    pub fn begin(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.in_flight += 1;
    }

    /// A request ends.
    pub fn end(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.bucket(now_ms / 1000).done += 1;
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Averages over the last `window_ms`, widened to the start of its first second (from
    /// the meter's creation when younger).
    pub fn load(&mut self, now_ms: u64, window_ms: u64) -> Load {
        self.advance(now_ms);
        let first_second = now_ms.saturating_sub(window_ms.max(1)) / 1000;
        let from_ms = (first_second * 1000).max(self.created_ms);
        let span_ms = now_ms.saturating_sub(from_ms).max(1) as f64;
        let (busy, done) = self
            .buckets
            .iter()
            .filter(|b| b.second >= first_second)
            .fold((0.0, 0u64), |(busy, done), b| (busy + b.busy, done + b.done));
        Load { concurrency: busy / span_ms, rps: done as f64 * 1000.0 / span_ms }
    }
}

/// The load of every (deployment, version) the proxy routes to, shared by the proxy and
/// the standalone controller ([`LoadTable::global`]).
#[derive(Debug, Default)]
pub struct LoadTable {
    meters: Mutex<HashMap<(String, String), LoadMeter>>,
}

/// Counts one request in flight until dropped (also when the caller gives up on it).
#[derive(Debug)]
pub struct InFlight {
    table: &'static LoadTable,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = crate::route::now_ms();
        if let Some(m) = self.table.meters.lock().expect("load table lock").get_mut(&self.key) {
            m.end(now);
        }
    }
}

impl LoadTable {
    /// The process-wide table.
    pub fn global() -> &'static LoadTable {
        static TABLE: OnceLock<LoadTable> = OnceLock::new();
        TABLE.get_or_init(LoadTable::default)
    }

    /// A request to `version` of `model` starts; it ends when the guard is dropped.
    pub fn begin(&'static self, model: &str, version: &str) -> InFlight {
        let now = crate::route::now_ms();
        let key = (model.to_string(), version.to_string());
        self.meters
            .lock()
            .expect("load table lock")
            .entry(key.clone())
            .or_insert_with(|| LoadMeter::new(now))
            .begin(now);
        InFlight { table: self, key }
    }

    /// The load of `version` of `model` over the last `window_ms` (zero when it never had a
    /// request).
    pub fn load(&self, model: &str, version: &str, window_ms: u64) -> Load {
        let now = crate::route::now_ms();
        match self.meters.lock().expect("load table lock").get_mut(&(model.to_string(), version.to_string())) {
            Some(m) => m.load(now, window_ms),
            None => Load::default(),
        }
    }

    /// Forgets `model` (its deployment is gone).
    pub fn remove(&self, model: &str) {
        self.meters.lock().expect("load table lock").retain(|(m, _), _| m != model);
    }
}

/// Requests in flight and the requests counter (every outcome) in `capstan serve`'s
/// `/metrics` text; `None` when either is missing.
pub fn parse_serving_metrics(text: &str) -> Option<(f64, f64)> {
    let mut in_flight = None;
    let mut requests: Option<f64> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("capstan_serving_in_flight{") || line.starts_with("capstan_serving_in_flight ") {
            in_flight = Some(in_flight.unwrap_or(0.0) + value()?);
        } else if line.starts_with("capstan_serving_requests_total{") {
            requests = Some(requests.unwrap_or(0.0) + value()?);
        }
    }
    Some((in_flight?, requests?))
}

/// Samples scraped from a version's pods at each pass, averaged over a window (pure).
#[derive(Debug, Clone, Default)]
pub struct ScrapeWindow {
    /// (time, total in flight, total requests per pod).
    samples: VecDeque<(u64, f64, HashMap<String, f64>)>,
}

impl ScrapeWindow {
    /// Adds one scrape of every Ready pod (`pods`: name, in flight, requests counter).
    pub fn add(&mut self, now_ms: u64, pods: &[(String, f64, f64)]) {
        let in_flight = pods.iter().map(|p| p.1).sum();
        let counters = pods.iter().map(|p| (p.0.clone(), p.2)).collect();
        self.samples.push_back((now_ms, in_flight, counters));
        while self.samples.len() > 1 && self.samples.front().is_some_and(|s| s.0 + 6 * LOAD_WINDOW_MS < now_ms) {
            self.samples.pop_front();
        }
    }

    /// The load over the last `window_ms`: the mean of the in-flight samples, and the
    /// requests counted between the oldest sample in the window and the newest (a pod whose
    /// counter went down restarted: its new count is taken whole). `None` without samples.
    pub fn load(&self, now_ms: u64, window_ms: u64) -> Option<Load> {
        let from = now_ms.saturating_sub(window_ms);
        let inside: Vec<_> = self.samples.iter().filter(|s| s.0 >= from).collect();
        let last = inside.last()?;
        let concurrency = inside.iter().map(|s| s.1).sum::<f64>() / inside.len() as f64;
        let first = inside[0];
        let rps = if last.0 > first.0 {
            let mut done = 0.0;
            for (pod, &now) in &last.2 {
                let before = first.2.get(pod).copied().unwrap_or(0.0);
                done += if now >= before { now - before } else { now };
            }
            done * 1000.0 / (last.0 - first.0) as f64
        } else {
            0.0
        };
        Some(Load { concurrency, rps })
    }
}

/// Scale states and scrape windows kept between passes of a controller, by key.
#[derive(Debug, Default)]
pub struct Autoscalers {
    states: Mutex<HashMap<String, (ScaleState, ScrapeWindow)>>,
}

impl Autoscalers {
    /// A fresh set.
    pub fn new() -> Arc<Autoscalers> {
        Arc::new(Autoscalers::default())
    }

    /// Runs `f` on the state kept under `key`.
    pub fn with<T>(&self, key: &str, f: impl FnOnce(&mut ScaleState, &mut ScrapeWindow) -> T) -> T {
        let mut states = self.states.lock().expect("autoscalers lock");
        let (s, w) = states.entry(key.to_string()).or_default();
        f(s, w)
    }

    /// Forgets every key not kept by `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.states.lock().expect("autoscalers lock").retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(min: u32, max: u32, target: f64, window_s: u64) -> ScalePolicy {
        ScalePolicy {
            scale_down_window_ms: window_s * 1000,
            ..ScalePolicy::new(min, max, ScaleMetric::Concurrency, target)
        }
    }

    #[test]
    fn scales_up_at_once_and_down_after_the_window() {
        let p = policy(1, 10, 1.0, 30);
        let mut s = ScaleState::default();
        // 8 in flight on 1 replica: 8 wanted, but at most max(2x1, 1+4) = 5 in one step.
        let d = decide(&p, &mut s, Some(8.0), 1, 0);
        assert_eq!((d.replicas, d.desired, d.direction), (5, 8, Direction::Up));
        assert!(
            d.reason.contains("concurrency 8.00 over 1 replicas") && d.reason.contains("at most 5"),
            "{}",
            d.reason
        );
        assert_eq!(decide(&p, &mut s, Some(8.0), 5, 1000).replicas, 8);
        // The load goes: held for 30 s, then down to the minimum.
        for t in (2..=31).map(|s| s * 1000) {
            let d = decide(&p, &mut s, Some(0.0), 8, t);
            assert_eq!(d.replicas, 8, "at {t} ms: {}", d.reason);
            assert_eq!(d.desired, 1);
        }
        let d = decide(&p, &mut s, Some(0.0), 8, 31_001);
        assert_eq!((d.replicas, d.direction), (1, Direction::Down), "{}", d.reason);
    }

    #[test]
    fn tolerance_bounds_and_missing_load() {
        let p = policy(2, 4, 10.0, 0);
        let mut s = ScaleState::default();
        // 3 replicas at 10.9 each: within 10% of the target.
        assert_eq!(decide(&p, &mut s, Some(32.7), 3, 0).replicas, 3);
        assert_eq!(decide(&p, &mut s, Some(35.0), 3, 1).replicas, 4);
        assert_eq!(decide(&p, &mut s, Some(1000.0), 4, 2).replicas, 4, "never above max");
        assert_eq!(decide(&p, &mut s, Some(0.0), 4, 3).replicas, 2, "window 0: down at once, to min");
        let d = decide(&p, &mut s, None, 3, 4);
        assert_eq!((d.replicas, d.direction), (3, Direction::Hold));
        assert!(d.reason.contains("no concurrency measured"), "{}", d.reason);
        // Outside the bounds (the spec changed): back within them even without a load.
        assert_eq!(decide(&p, &mut s, None, 9, 5).replicas, 4);
        assert_eq!(decide(&p, &mut s, None, 0, 6).replicas, 2);
    }

    #[test]
    fn a_fresh_state_waits_one_window_before_scaling_down() {
        let p = policy(1, 5, 1.0, 10);
        let mut s = ScaleState::default();
        assert_eq!(decide(&p, &mut s, Some(0.0), 4, 100_000).replicas, 4);
        assert_eq!(decide(&p, &mut s, Some(0.0), 4, 110_000).replicas, 4);
        assert_eq!(decide(&p, &mut s, Some(0.0), 4, 110_001).replicas, 1);
    }

    #[test]
    fn meter_averages_concurrency_and_rate() {
        let mut m = LoadMeter::new(0);
        // Two requests in flight for the whole of 0..10 s, one more from 5 s to 10 s.
        m.begin(0);
        m.begin(0);
        m.begin(5_000);
        m.end(10_000);
        let l = m.load(10_000, 10_000);
        assert!((l.concurrency - 2.5).abs() < 1e-9, "{l:?}");
        assert!((l.rps - 0.1).abs() < 1e-9, "{l:?}");
        // Later: still two in flight, nothing ends.
        let l = m.load(30_000, 10_000);
        assert!((l.concurrency - 2.0).abs() < 1e-9, "{l:?}");
        assert_eq!(l.rps, 0.0);
        m.end(30_000);
        m.end(30_000);
        assert_eq!(m.in_flight(), 0);
        let l = m.load(45_000, 10_000);
        assert_eq!((l.concurrency, l.rps), (0.0, 0.0));
        // A young meter averages over its own life.
        let mut m = LoadMeter::new(1_000);
        m.begin(1_000);
        let l = m.load(2_000, 10_000);
        assert!((l.concurrency - 1.0).abs() < 1e-9, "{l:?}");
    }

    #[test]
    fn table_counts_until_the_guard_drops() {
        let t: &'static LoadTable = Box::leak(Box::default());
        let g1 = t.begin("m", "1");
        let g2 = t.begin("m", "1");
        assert_eq!(t.meters.lock().unwrap()[&("m".to_string(), "1".to_string())].in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(t.meters.lock().unwrap()[&("m".to_string(), "1".to_string())].in_flight(), 0);
        assert_eq!(t.load("m", "2", 10_000), Load::default());
        t.remove("m");
        assert!(t.meters.lock().unwrap().is_empty());
    }

    #[test]
    fn parses_the_servers_metrics() {
        let m = crate::metrics::Metrics::new("iris", "3");
        m.in_flight(2);
        m.observe_request(crate::metrics::Outcome::success, std::time::Duration::from_millis(1));
        m.observe_request(crate::metrics::Outcome::client_error, std::time::Duration::from_millis(1));
        assert_eq!(parse_serving_metrics(&m.render()), Some((2.0, 2.0)));
        assert_eq!(parse_serving_metrics("# EOF\n"), None);
        assert_eq!(parse_serving_metrics("capstan_serving_in_flight{a=\"b\"} x\n"), None);
    }

    #[test]
    fn scrape_window_rates_and_restarts() {
        let mut w = ScrapeWindow::default();
        assert_eq!(w.load(0, 10_000), None);
        w.add(0, &[("a".into(), 1.0, 100.0), ("b".into(), 3.0, 50.0)]);
        w.add(5_000, &[("a".into(), 2.0, 150.0), ("b".into(), 2.0, 10.0)]);
        let l = w.load(5_000, 10_000).unwrap();
        assert!((l.concurrency - 4.0).abs() < 1e-9, "{l:?}");
        // a: +50; b restarted: its 10 count whole; over 5 s.
        assert!((l.rps - 12.0).abs() < 1e-9, "{l:?}");
        assert_eq!(w.load(100_000, 10_000), None, "old samples are no load");
    }

    proptest! {
        #[test]
        fn decisions_stay_within_bounds_and_respect_the_window(
            min in 1u32..5,
            extra in 0u32..20,
            target in 0.5f64..20.0,
            window_s in 0u64..30,
            start in 0u32..40,
            steps in prop::collection::vec((0u64..5_000, prop::option::of(0.0f64..500.0)), 1..80),
        ) {
            let p = policy(min, min + extra, target, window_s);
            let mut s = ScaleState::default();
            let mut now = 0u64;
            let mut current = start;
            let mut history: Vec<(u64, u32)> = vec![(0, p.clamp(start))];
            for (dt, load) in steps {
                now += dt;
                let d = decide(&p, &mut s, load, current, now);
                prop_assert!(d.replicas >= p.min && d.replicas <= p.max, "{d:?} outside {}..{}", p.min, p.max);
                prop_assert!(d.desired >= p.min && d.desired <= p.max);
                let before = p.clamp(current);
                prop_assert!(d.replicas <= before.saturating_mul(2).max(before + 4), "{d:?} from {current}");
                if load.is_some() {
                    history.push((now, d.desired));
                }
                if d.replicas < before {
                    // Never below a recommendation of the window.
                    let highest = history
                        .iter()
                        .filter(|(t, _)| *t + p.scale_down_window_ms >= now)
                        .map(|(_, r)| *r)
                        .max()
                        .unwrap_or(0);
                    prop_assert!(d.replicas >= highest.min(before), "{d:?} below {highest} within the window");
                }
                current = d.replicas;
            }
        }

        #[test]
        fn a_constant_load_converges(
            min in 1u32..4,
            extra in 0u32..30,
            target in 0.5f64..10.0,
            load in 0.0f64..200.0,
            start in 1u32..40,
            window_s in 0u64..20,
        ) {
            let p = policy(min, min + extra, target, window_s);
            let mut s = ScaleState::default();
            let mut current = start;
            let mut now = 0;
            for _ in 0..(window_s + 20) {
                current = desired_replicas(Some(load), &p, current, now, &mut s);
                now += 1000;
            }
            let settled = current;
            for _ in 0..(window_s + 5) {
                current = desired_replicas(Some(load), &p, current, now, &mut s);
                now += 1000;
                prop_assert_eq!(current, settled, "a constant load keeps the count");
            }
            let per = load / settled as f64 / target;
            let at_bound = settled == p.min || settled == p.max;
            prop_assert!(at_bound || (per - 1.0).abs() <= p.tolerance || (settled as f64) == (load / target).ceil(),
                "settled on {settled} for load {load} target {target}");
            prop_assert_eq!(settled, settled.clamp(p.min, p.max));
            if !at_bound && (per - 1.0).abs() > p.tolerance {
                prop_assert_eq!(settled as f64, (load / target).ceil());
            }
        }
    }
}
