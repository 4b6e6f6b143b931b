//! `tracking-load`: the load generator of the tracking benchmark (`bench/tracking/run.sh`).
//! It speaks only the MLflow REST API, so the very same requests go to Capstan and to
//! `mlflow server`. Loopback only, a bounded number of keep-alive connections (one client
//! per connection, one connection per client), bounded in time and count. Every command
//! prints one JSON object on stdout.
//!
//! - `ingest`: log-batch requests of `--points` points (`--keys` metrics x steps, steps
//!   distinct in every request) over `--connections` connections, each to its own run, for
//!   `--seconds`: points acknowledged per second.
//! - `fill`: one metric of `--points` points in one run (1000 per request): its run id.
//! - `history`: the full history of a metric through paged `metrics/get-history`
//!   (`--page-size` per page), `--repeat` times: seconds per full read.
//! - `bulk`: `metrics/get-history-bulk-interval` (`--max-results` points), `--repeat` times:
//!   milliseconds per request.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "MLflow REST load for the tracking benchmark")]
struct Cli {
    /// Tracking server, e.g. http://127.0.0.1:5000 (loopback only).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log-batch ingest throughput.
    Ingest {
        /// Keep-alive connections (one run each).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Points per request.
        #[arg(long, default_value_t = 1000)]
        points: usize,
        /// Metric keys per request (points / keys steps each).
        #[arg(long, default_value_t = 1)]
        keys: usize,
        /// How long to send (after a short warm-up).
        #[arg(long, default_value_t = 15.0)]
        seconds: f64,
        /// Most requests per connection.
        #[arg(long, default_value_t = 100_000)]
        max_requests: usize,
    },
    /// Write one metric of N points into a new run.
    Fill {
        /// Points.
        #[arg(long)]
        points: usize,
        /// Metric key.
        #[arg(long, default_value = "loss")]
        key: String,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Read a metric's full history through paged get-history.
    History {
        /// Run id.
        #[arg(long)]
        run_id: String,
        /// Metric key.
        #[arg(long, default_value = "loss")]
        key: String,
        /// Points per page.
        #[arg(long, default_value_t = 25_000)]
        page_size: usize,
        /// Full reads to time.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Points the history must have.
        #[arg(long)]
        expect: Option<usize>,
    },
    /// Downsampled history through get-history-bulk-interval.
    Bulk {
        /// Run id.
        #[arg(long)]
        run_id: String,
        /// Metric key.
        #[arg(long, default_value = "loss")]
        key: String,
        /// max_results.
        #[arg(long, default_value_t = 320)]
        max_results: usize,
        /// Requests to time (after one warm-up request).
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
}

/// A client holding one keep-alive connection.
fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .build()?)
}

fn api(base: &str, path: &str) -> String {
    format!("{}/api/2.0/mlflow/{path}", base.trim_end_matches('/'))
}

async fn answer(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("{what}: reading the answer"))?;
    ensure!(status.is_success(), "{what}: HTTP {status}: {}", text.chars().take(500).collect::<String>());
    serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: &Value) -> Result<Value> {
    let resp = http.post(api(base, path)).json(body).send().await.with_context(|| format!("POST {path}"))?;
    answer(resp, path).await
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

async fn new_experiment(http: &reqwest::Client, base: &str) -> Result<String> {
    let created = post(http, base, "experiments/create", &json!({ "name": format!("bench-{}", unique()) })).await?;
    created["experiment_id"].as_str().map(str::to_owned).context("experiments/create: no experiment_id")
}

async fn new_run(http: &reqwest::Client, base: &str, experiment_id: &str) -> Result<String> {
    let created =
        post(http, base, "runs/create", &json!({ "experiment_id": experiment_id, "start_time": now_ms() })).await?;
    created["run"]["info"]["run_id"].as_str().map(str::to_owned).context("runs/create: no run id")
}

/// `url?k=v&...`, the values percent-encoded.
fn with_query(url: &str, pairs: &[(&str, String)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("{url}?{}", query.join("&"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A training-like value with an occasional spike.
fn value_at(step: u64) -> f64 {
    if step % 99_991 == 77 {
        return 1e6;
    }
    let x = step as f64;
    1.0 / (1.0 + x / 1000.0) + 0.01 * ((x * 0.37).sin())
}

/// The body of one log-batch request: `points` points over `keys` keys, the steps
/// `first_step..` (points / keys of them).
fn batch_body(run_id: &str, keys: usize, points: usize, first_step: u64, timestamp: i64) -> String {
    use std::fmt::Write as _;
    let steps = points.div_ceil(keys.max(1));
    let mut body = String::with_capacity(points * 80 + 64);
    let _ = write!(body, "{{\"run_id\":\"{run_id}\",\"metrics\":[");
    let mut n = 0;
    'outer: for s in 0..steps as u64 {
        for k in 0..keys.max(1) {
            if n == points {
                break 'outer;
            }
            if n > 0 {
                body.push(',');
            }
            let step = first_step + s;
            let _ = write!(
                body,
                "{{\"key\":\"m{k}\",\"value\":{},\"timestamp\":{timestamp},\"step\":{step}}}",
                value_at(step) + k as f64
            );
            n += 1;
        }
    }
    body.push_str("]}");
    body
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn send_batch(http: &reqwest::Client, url: &str, body: String) -> Result<()> {
    let resp = http.post(url).header("content-type", "application/json").body(body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("log-batch: HTTP {status}: {}", text.chars().take(300).collect::<String>());
    }
    Ok(())
}

async fn ingest(
    base: &str,
    connections: usize,
    points: usize,
    keys: usize,
    seconds: f64,
    max_requests: usize,
) -> Result<Value> {
    ensure!(connections >= 1 && points >= 1 && keys >= 1, "connections, points and keys must be at least 1");
    let setup = client()?;
    let experiment = new_experiment(&setup, base).await?;
    let steps_per_request = points.div_ceil(keys) as u64;
    let mut tasks = Vec::new();
    let start_gate = std::sync::Arc::new(tokio::sync::Barrier::new(connections + 1));
    let url = api(base, "runs/log-batch");
    let warmup = Duration::from_millis(1000);
    let measure = Duration::from_secs_f64(seconds);
    for _ in 0..connections {
        let http = client()?;
        let run_id = new_run(&http, base, &experiment).await?;
        let gate = start_gate.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_ms = Vec::new();
            let mut next_step = 0u64;
            // Warm-up: the connection, the server's caches; not counted.
            let warm_end = Instant::now() + warmup;
            while Instant::now() < warm_end {
                send_batch(&http, &url, batch_body(&run_id, keys, points, next_step, now_ms())).await?;
                next_step += steps_per_request;
            }
            gate.wait().await;
            let begin = Instant::now();
            let mut acknowledged = 0usize;
            while begin.elapsed() < measure && acknowledged < max_requests {
                let body = batch_body(&run_id, keys, points, next_step, now_ms());
                next_step += steps_per_request;
                let t = Instant::now();
                send_batch(&http, &url, body).await?;
                latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                acknowledged += 1;
            }
            anyhow::Ok((acknowledged, begin.elapsed(), latencies_ms))
        }));
    }
    start_gate.wait().await;
    let mut requests = 0usize;
    let mut longest = Duration::ZERO;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, elapsed, lat) = t.await??;
        requests += n;
        longest = longest.max(elapsed);
        latencies.extend(lat);
    }
    latencies.sort_by(f64::total_cmp);
    let total_points = requests * points;
    Ok(json!({
        "connections": connections,
        "points_per_request": points,
        "keys": keys,
        "requests": requests,
        "points": total_points,
        "seconds": longest.as_secs_f64(),
        "points_per_s": total_points as f64 / longest.as_secs_f64(),
        "latency_ms_p50": percentile(&latencies, 0.5),
        "latency_ms_p99": percentile(&latencies, 0.99),
    }))
}

async fn fill(base: &str, points: usize, key: &str, connections: usize) -> Result<Value> {
    let setup = client()?;
    let experiment = new_experiment(&setup, base).await?;
    let run_id = new_run(&setup, base, &experiment).await?;
    let requests = points.div_ceil(1000);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let http = client()?;
        let (next, run_id, key, url) = (next.clone(), run_id.clone(), key.to_owned(), api(base, "runs/log-batch"));
        tasks.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r >= requests {
                    return anyhow::Ok(());
                }
                let first = r * 1000;
                let n = (points - first).min(1000);
                let mut metrics = Vec::with_capacity(n);
                for step in first..first + n {
                    metrics
                        .push(json!({"key": key, "value": value_at(step as u64), "timestamp": now_ms(), "step": step}));
                }
                let body = json!({ "run_id": run_id, "metrics": metrics }).to_string();
                send_batch(&http, &url, body).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(json!({ "run_id": run_id, "points": points, "seconds": began.elapsed().as_secs_f64() }))
}

async fn history(
    base: &str,
    run_id: &str,
    key: &str,
    page_size: usize,
    repeat: usize,
    expect: Option<usize>,
) -> Result<Value> {
    let http = client()?;
    let mut times = Vec::new();
    let mut count = 0;
    let mut pages = 0;
    for _ in 0..repeat.max(1) {
        let began = Instant::now();
        let mut token: Option<String> = None;
        count = 0;
        pages = 0;
        loop {
            let mut query: Vec<(&str, String)> = vec![
                ("run_id", run_id.to_owned()),
                ("metric_key", key.to_owned()),
                ("max_results", page_size.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t.clone()));
            }
            let resp = http.get(with_query(&api(base, "metrics/get-history"), &query)).send().await?;
            let page = answer(resp, "metrics/get-history").await?;
            count += page["metrics"].as_array().map_or(0, Vec::len);
            pages += 1;
            match page["next_page_token"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        times.push(began.elapsed().as_secs_f64());
        if let Some(n) = expect {
            ensure!(count == n, "the history has {count} points, expected {n}");
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(json!({ "points": count, "pages": pages, "seconds_median": percentile(&times, 0.5), "seconds_min": times[0] }))
}

async fn bulk(base: &str, run_id: &str, key: &str, max_results: usize, repeat: usize) -> Result<Value> {
    let http = client()?;
    let query =
        [("run_ids", run_id.to_owned()), ("metric_key", key.to_owned()), ("max_results", max_results.to_string())];
    let mut times = Vec::new();
    let mut returned = 0;
    for i in 0..=repeat.max(1) {
        let began = Instant::now();
        let resp = http.get(with_query(&api(base, "metrics/get-history-bulk-interval"), &query)).send().await?;
        let body = answer(resp, "metrics/get-history-bulk-interval").await?;
        if i > 0 {
            times.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        returned = body["metrics"].as_array().map_or(0, Vec::len);
    }
    ensure!(returned > 0 && returned <= max_results, "bulk-interval returned {returned} points");
    times.sort_by(f64::total_cmp);
    Ok(json!({
        "points_returned": returned,
        "ms_median": percentile(&times, 0.5),
        "ms_p90": percentile(&times, 0.9),
        "ms_min": times[0],
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let host = reqwest::Url::parse(&cli.url).context("--url")?;
    ensure!(
        matches!(host.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1")),
        "--url must be a loopback address, not {}",
        cli.url
    );
    let out = match cli.command {
        Command::Ingest { connections, points, keys, seconds, max_requests } => {
            ingest(&cli.url, connections, points, keys, seconds, max_requests).await?
        }
        Command::Fill { points, key, connections } => fill(&cli.url, points, &key, connections).await?,
        Command::History { run_id, key, page_size, repeat, expect } => {
            history(&cli.url, &run_id, &key, page_size, repeat, expect).await?
        }
        Command::Bulk { run_id, key, max_results, repeat } => {
            bulk(&cli.url, &run_id, &key, max_results, repeat).await?
        }
    };
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_have_distinct_steps_and_the_asked_size() {
        let body: Value = serde_json::from_str(&batch_body("r", 10, 1000, 500, 7)).unwrap();
        let metrics = body["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 1000);
        let mut seen = std::collections::HashSet::new();
        for m in metrics {
            assert!(seen.insert((m["key"].as_str().unwrap().to_owned(), m["step"].as_u64().unwrap())));
            assert!((500..600).contains(&m["step"].as_u64().unwrap()));
        }
        let one_key: Value = serde_json::from_str(&batch_body("r", 1, 3, 0, 7)).unwrap();
        assert_eq!(one_key["metrics"].as_array().unwrap().len(), 3);
    }
}
