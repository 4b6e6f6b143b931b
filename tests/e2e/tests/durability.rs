//! Acknowledged metric writes survive `kill -9` of `capstan up`.
//!
//! A client thread streams log-batch requests (each with its own steps, two metrics) at a run
//! and records which ones were acknowledged (HTTP 200). Mid-stream the process is killed
//! with SIGKILL and started again on the same data directory; then the full history must
//! hold every point of every acknowledged request, exactly once, and each unacknowledged
//! request must be there entirely or not at all (one transaction per request). Three rounds,
//! so that kills land at different moments of the write path.
//!
//! Needs `cargo build -p capstan` first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_e2e::*;
use serde_json::{json, Value};

/// Steps per request (each request logs `loss` and `acc` at each of its steps).
const STEPS: i64 = 250;
/// Acknowledged requests to wait for before each kill.
const ACKS_BEFORE_KILL: usize = 25;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// HTTP 200.
    Acknowledged,
    /// An error answer, or no answer (the connection died with the process).
    Unacknowledged,
}

/// The body of request `n`: steps `n * STEPS ..`, values that name the request.
fn batch(run_id: &str, n: i64) -> Value {
    let mut metrics = Vec::new();
    for s in 0..STEPS {
        let step = n * STEPS + s;
        metrics.push(
            json!({"key": "loss", "value": n as f64 + 0.5, "timestamp": 1_700_000_000_000i64 + step, "step": step}),
        );
        metrics
            .push(json!({"key": "acc", "value": -(n as f64), "timestamp": 1_700_000_000_000i64 + step, "step": step}));
    }
    json!({ "run_id": run_id, "metrics": metrics })
}

/// Stream requests `first..` until one is not acknowledged (the server is gone) or `stop`;
/// returns each request's outcome.
fn stream(
    url: String,
    run_id: String,
    first: i64,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<(i64, Outcome)> {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut outcomes = Vec::new();
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        let sent = http.post(format!("{url}/api/2.0/mlflow/runs/log-batch")).json(&batch(&run_id, n)).send();
        let outcome = match sent {
            Ok(resp) if resp.status().as_u16() == 200 => Outcome::Acknowledged,
            _ => Outcome::Unacknowledged,
        };
        outcomes.push((n, outcome));
        n += 1;
        if outcome == Outcome::Unacknowledged {
            break;
        }
        acked.fetch_add(1, Ordering::SeqCst);
    }
    outcomes
}

/// Every point of one metric of the run, through paged get-history.
fn history(capstan: &Capstan, run_id: &str, key: &str) -> Vec<Value> {
    let mut points = Vec::new();
    let mut token = String::new();
    loop {
        let mut path =
            format!("/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}&max_results=25000");
        if !token.is_empty() {
            path.push_str(&format!("&page_token={token}"));
        }
        let (status, body) = capstan.get(&path);
        assert_eq!(status, 200, "get-history: {body}");
        points.extend(body["metrics"].as_array().cloned().unwrap_or_default());
        match body["next_page_token"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => return points,
        }
    }
}

#[test]
fn acknowledged_points_survive_kill_9_once_each() {
    let mut capstan = Capstan::start();
    let (status, created) =
        capstan.post("/api/2.0/mlflow/runs/create", "application/json", br#"{"start_time": 1}"#.to_vec());
    assert_eq!(status, 200, "runs/create: {created}");
    let run_id = created["run"]["info"]["run_id"].as_str().unwrap().to_owned();

    let mut outcomes: BTreeMap<i64, Outcome> = BTreeMap::new();
    for round in 0..3 {
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let first = outcomes.keys().next_back().map_or(0, |n| n + 1);
        let client = {
            let (url, run_id, acked, stop) = (capstan.url().to_owned(), run_id.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || stream(url, run_id, first, acked, stop))
        };
        wait_until(
            Duration::from_secs(60),
            &format!("{ACKS_BEFORE_KILL} acknowledged log-batch requests (round {round})"),
            || acked.load(Ordering::SeqCst) >= ACKS_BEFORE_KILL,
            || capstan.log_tail(30),
        );
        capstan.kill9();
        stop.store(true, Ordering::SeqCst);
        let round_outcomes = client.join().expect("client thread");
        assert!(
            round_outcomes.iter().filter(|(_, o)| *o == Outcome::Acknowledged).count() >= ACKS_BEFORE_KILL,
            "round {round}: {round_outcomes:?}"
        );
        outcomes.extend(round_outcomes);
        capstan.restart();

        // Every acknowledged request is there in full, none twice; the others all or nothing.
        for key in ["loss", "acc"] {
            let points = history(&capstan, &run_id, key);
            let mut per_request: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for p in &points {
                let step = p["step"].as_i64().unwrap();
                let n = step.div_euclid(STEPS);
                let expected = if key == "loss" { n as f64 + 0.5 } else { -(n as f64) };
                assert_eq!(p["value"].as_f64(), Some(expected), "round {round}: point {p} of {key}");
                per_request.entry(n).or_default().push(step);
            }
            for (n, steps) in &per_request {
                let mut distinct = steps.clone();
                distinct.dedup();
                assert_eq!(distinct.len(), steps.len(), "round {round}: request {n} of {key} has doubled points");
                assert!(outcomes.contains_key(n), "round {round}: points of request {n}, which was never sent");
            }
            for (n, outcome) in &outcomes {
                let stored = per_request.get(n).map_or(0, Vec::len) as i64;
                match outcome {
                    Outcome::Acknowledged => assert_eq!(
                        stored, STEPS,
                        "round {round}: acknowledged request {n} has {stored} of its {STEPS} {key} points after kill -9"
                    ),
                    Outcome::Unacknowledged => assert!(
                        stored == 0 || stored == STEPS,
                        "round {round}: request {n} (not acknowledged) is torn: {stored} of {STEPS} {key} points"
                    ),
                }
            }
        }
    }
    // The run still takes writes after the last restart.
    let (status, body) = capstan.post(
        "/api/2.0/mlflow/runs/log-batch",
        "application/json",
        batch(&run_id, 1_000_000).to_string().into_bytes(),
    );
    assert_eq!(status, 200, "{body}");
}
