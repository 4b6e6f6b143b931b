//! The routing table of deployed models: which replicas serve each version of a model, the
//! traffic split, and what each version's answers looked like (for the canary verdict).
//!
//! The standalone controller publishes routes after each pass ([`RouteTable::publish`]);
//! the Capstan server's `/v2/models/{name}/...` proxy picks a replica ([`RouteTable::pick`]:
//! smooth weighted round robin over versions, round robin over a version's replicas) and
//! records each answer ([`RouteTable::record`]); the controller reads the window stats back
//! ([`RouteTable::stats`]). In `capstan up` both run in one process and share
//! [`RouteTable::global`]. Routes are keyed by model (deployment) name.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::canary::{WeightedRoundRobin, Window, WindowStats};

/// Most answers kept per version (older ones are dropped first).
pub const MAX_SAMPLES: usize = 200_000;

/// One version's replicas and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Model version.
    pub version: String,
    /// Replica addresses (`host:port`), ready ones only.
    pub endpoints: Vec<String>,
    /// Share of traffic (any scale; percent by convention).
    pub weight: u32,
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Version chosen.
    pub version: String,
    /// Replica address.
    pub endpoint: String,
}

#[derive(Debug)]
struct Route {
    backends: Vec<Backend>,
    rr: WeightedRoundRobin,
    next: Vec<usize>,
}

/// Routes and per-version answer windows.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Mutex<HashMap<String, Route>>,
    windows: Mutex<HashMap<(String, String), Window>>,
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Monotonic milliseconds (since the first call in this process).
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl RouteTable {
    /// The process-wide table.
    pub fn global() -> &'static RouteTable {
        static TABLE: OnceLock<RouteTable> = OnceLock::new();
        TABLE.get_or_init(RouteTable::default)
    }

    /// Sets the backends of `model`; the round-robin position is kept while the weights and
    /// replicas stay the same, so the split stays exact across passes.
    pub fn publish(&self, model: &str, backends: Vec<Backend>) {
        let mut routes = self.routes.lock().expect("route table lock");
        if let Some(r) = routes.get(model) {
            if r.backends == backends {
                return;
            }
        }
        let weights = backends.iter().map(|b| if b.endpoints.is_empty() { 0 } else { b.weight }).collect();
        let next = vec![0; backends.len()];
        routes.insert(model.to_string(), Route { rr: WeightedRoundRobin::new(weights), backends, next });
    }

    /// Forgets `model` (its deployment is gone).
    pub fn remove(&self, model: &str) {
        self.routes.lock().expect("route table lock").remove(model);
        self.windows.lock().expect("route table lock").retain(|(m, _), _| m != model);
    }

    /// Models with a route.
    pub fn models(&self) -> Vec<String> {
        self.routes.lock().expect("route table lock").keys().cloned().collect()
    }

    /// The backends of `model`.
    pub fn backends(&self, model: &str) -> Option<Vec<Backend>> {
        self.routes.lock().expect("route table lock").get(model).map(|r| r.backends.clone())
    }

    /// A replica for the next request to `model` (`version`: only that version, round
    /// robin over its replicas). `None`: no such model, or nothing ready.
    pub fn pick(&self, model: &str, version: Option<&str>) -> Option<Pick> {
        let mut routes = self.routes.lock().expect("route table lock");
        let route = routes.get_mut(model)?;
        let i = match version {
            Some(v) => route.backends.iter().position(|b| b.version == v && !b.endpoints.is_empty())?,
            None => route.rr.pick()?,
        };
        let b = &route.backends[i];
        let endpoint = b.endpoints[route.next[i] % b.endpoints.len()].clone();
        route.next[i] = route.next[i].wrapping_add(1);
        Some(Pick { version: b.version.clone(), endpoint })
    }

    /// Records one answer of `version` of `model`.
    pub fn record(&self, model: &str, version: &str, latency_ms: f64, ok: bool) {
        let mut windows = self.windows.lock().expect("route table lock");
        let w = windows.entry((model.to_string(), version.to_string())).or_default();
        w.record(now_ms(), latency_ms, ok);
        w.truncate(MAX_SAMPLES);
    }

    /// What `version` of `model` answered over the last `window_ms`.
    pub fn stats(&self, model: &str, version: &str, window_ms: u64) -> WindowStats {
        let mut windows = self.windows.lock().expect("route table lock");
        match windows.get_mut(&(model.to_string(), version.to_string())) {
            Some(w) => w.stats(now_ms(), window_ms),
            None => WindowStats::default(),
        }
    }

    /// Forgets the answers of `version` of `model` (a new canary starts).
    pub fn reset(&self, model: &str, version: &str) {
        self.windows.lock().expect("route table lock").remove(&(model.to_string(), version.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(version: &str, endpoints: &[&str], weight: u32) -> Backend {
        Backend { version: version.into(), endpoints: endpoints.iter().map(|e| e.to_string()).collect(), weight }
    }

    #[test]
    fn split_and_round_robin() {
        let t = RouteTable::default();
        t.publish("m", vec![b("1", &["a:1", "a:2"], 80), b("2", &["b:1"], 20)]);
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..100 {
            let p = t.pick("m", None).unwrap();
            *counts.entry(p.endpoint).or_default() += 1;
        }
        assert_eq!(counts["a:1"], 40);
        assert_eq!(counts["a:2"], 40);
        assert_eq!(counts["b:1"], 20);
        assert_eq!(t.pick("m", Some("2")).unwrap().endpoint, "b:1");
        assert_eq!(t.pick("m", Some("3")), None);
        assert_eq!(t.pick("other", None), None);
        // A version without ready replicas gets nothing.
        t.publish("m", vec![b("1", &["a:1"], 80), b("2", &[], 20)]);
        assert!((0..50).all(|_| t.pick("m", None).unwrap().version == "1"));
        t.remove("m");
        assert_eq!(t.pick("m", None), None);
    }

    #[test]
    fn windows_per_version() {
        let t = RouteTable::default();
        t.record("m", "1", 1.0, true);
        t.record("m", "2", 3.0, false);
        t.record("m", "2", 2.0, true);
        let s = t.stats("m", "2", 60_000);
        assert_eq!((s.requests, s.errors, s.p99_ms), (2, 1, Some(3.0)));
        t.reset("m", "2");
        assert_eq!(t.stats("m", "2", 60_000).requests, 0);
        assert_eq!(t.stats("m", "1", 60_000).requests, 1);
    }
}
