//! GPU telemetry and health end to end, with simulated GPUs (`capstan up --simulate-gpus 8`):
//!
//! - `/metrics` is Prometheus text with dcgm-exporter's series and labels, plus the running
//!   job's labels, and a real Prometheus server (Debian's `prometheus`) scrapes it and
//!   answers queries for those series;
//! - an injected XID 79 marks the GPU unhealthy with the reason and moves the running job
//!   to other GPUs from its checkpoint without counting a restart; an application XID 13
//!   changes nothing; the verdict survives a restart;
//! - a TrainingJob's run shows `system/gpu_*` metrics through the real `mlflow` client;
//! - `capstan agent` on its own: pushes to a server, serves `/metrics`, and without
//!   libnvidia-ml says so in one line and keeps running with no GPUs;
//! - the nodes API answers bad input with a 400 naming the field, 404 for unknown nodes,
//!   409 for faults aimed at a real GPU; `/metrics` needs the token when the server has one.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::*;
use serde_json::{json, Value};

/// How long GPU-related state may take to show (pushes every second, system metrics every 10 s).
const GPU_TIMEOUT: Duration = Duration::from_secs(60);

/// One sample line of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// A strict parser of the Prometheus / OpenMetrics text exposition: every line must be a
/// `# HELP`, `# TYPE`, `# UNIT` or `# EOF` line, or `name{labels} value [timestamp]`;
/// a sample's family must have been typed before it; `# EOF` (when present) comes last.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line"));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("EOF"), None, None) => {
                    if n + 1 != lines.len() {
                        return Err(at("# EOF before the end"));
                    }
                }
                (Some("TYPE"), Some(name), Some(t)) => {
                    if !valid_name(name, true) {
                        return Err(at("bad metric name"));
                    }
                    if !["gauge", "counter", "histogram", "summary", "unknown", "info", "stateset", "gaugehistogram"]
                        .contains(&t)
                    {
                        return Err(at("bad type"));
                    }
                    typed.insert(name.to_string(), t.to_string());
                }
                (Some("HELP" | "UNIT"), Some(name), _) if valid_name(name, true) => {}
                _ => return Err(at("bad comment")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(at("bad metric name"));
        }
        let family = typed.keys().find(|f| {
            name == f.as_str()
                || name
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| ["_total", "_created", "_bucket", "_sum", "_count"].contains(&s))
        });
        if family.is_none() {
            return Err(at("sample before its # TYPE"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = Some(chars.next().unwrap().0);
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(at("unterminated labels")),
                };
                let eq = body[start..].find('=').ok_or_else(|| at("label without ="))? + start;
                let lname = &body[start..eq];
                if !valid_name(lname, false) {
                    return Err(at("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|c| c.1) != Some('"') {
                    return Err(at("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => return Err(at("bad escape")),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(at("unterminated label value")),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(at("label repeated"));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = Some(i);
                        break;
                    }
                    _ => return Err(at("expected , or }")),
                }
            }
            rest = &body[end.unwrap() + 1..];
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("bad value"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>().map_err(|_| at("bad timestamp"))?;
        }
        if fields.next().is_some() || !rest.starts_with(' ') {
            return Err(at("trailing text"));
        }
        out.push(Sample { name: name.to_string(), labels, value });
    }
    Ok(out)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

fn get_text(url: &str) -> (u16, String) {
    match http().get(url).send() {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let r = http().post(url).json(body).send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// The node name `capstan up` uses: the host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap()
}

fn gpu_job(name: &str, replicas: u32, gpus: u32, extra: &str) -> String {
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  replicas: {replicas}\n  gpusPerReplica: {gpus}\n  command: [\"sleep\", \"600\"]\n{extra}"
    )
}

/// The GPUs of the node, from the API.
fn gpus_of(c: &Capstan, node: &str) -> Vec<Value> {
    let (s, body) = c.get(&format!("/api/v1/nodes/{node}/gpus"));
    if s != 200 {
        return Vec::new();
    }
    body["gpus"].as_array().cloned().unwrap_or_default()
}

fn job_gpus(job: &Value) -> Vec<u64> {
    job["status"]["replicaStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["gpus"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g.as_u64())
        .collect()
}

/// A Prometheus server scraping `target` (host:port) every second, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or_else(|| {
                panic!("prometheus is not installed: run scripts/install-deps.sh (Debian package `prometheus`)")
            });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: capstan\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The result vector of an instant query (empty when not ready or on error).
    fn query(&self, q: &str) -> Vec<Value> {
        let encoded: String = q
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (status, text) = get_text(&format!("{}/api/v1/query?query={encoded}", self.url));
        if status != 200 {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

#[test]
fn metrics_carry_dcgm_series_with_job_labels_and_prometheus_scrapes_them() {
    let c = Capstan::start_with_gpus("8");
    let name = unique_name("dcgm");
    c.apply(&gpu_job(&name, 2, 4, ""));
    c.wait_phase(&name, "Running");
    let metrics_url = format!("{}/metrics", c.url());

    // Every GPU carries the job's labels once the agent sampled after the start.
    let deadline = Instant::now() + GPU_TIMEOUT;
    let samples = loop {
        let (status, text) = get_text(&metrics_url);
        assert_eq!(status, 200, "{text}");
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
        let labelled = |metric: &str| {
            samples.iter().filter(|s| s.name == metric && s.labels.get("capstan_job") == Some(&name)).count()
        };
        if labelled("DCGM_FI_DEV_GPU_UTIL") == 8 && labelled("DCGM_FI_DEV_FB_USED") == 8 {
            break samples;
        }
        assert!(Instant::now() < deadline, "8 GPUs with the job's labels never showed:\n{text}\n{}", c.log_tail(40));
        std::thread::sleep(POLL);
    };
    for metric in ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"] {
        let series: Vec<&Sample> = samples.iter().filter(|s| s.name == metric).collect();
        let gpus: std::collections::BTreeSet<&str> = series.iter().map(|s| s.labels["gpu"].as_str()).collect();
        assert_eq!(gpus.len(), 8, "{metric}: {series:?}");
        for s in &series {
            for label in
                ["gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id", "pod", "namespace", "container"]
            {
                assert!(s.labels.contains_key(label), "{metric} lacks {label}: {s:?}");
            }
            assert_eq!(s.labels["Hostname"], host_name());
            assert_eq!(s.labels["namespace"], "default");
            assert!(s.labels["pod"].starts_with(&format!("{name}-")), "{s:?}");
            assert!(["0", "1"].contains(&s.labels["capstan_replica"].as_str()), "{s:?}");
            assert_eq!(s.labels["simulated"], "true", "simulated GPUs say so: {s:?}");
            assert_eq!(s.labels["device"], format!("nvidia{}", s.labels["gpu"]));
        }
    }
    let used: f64 = samples.iter().filter(|s| s.name == "DCGM_FI_DEV_FB_USED").map(|s| s.value).sum();
    assert!(used > 0.0, "a running job uses GPU memory");
    for metric in ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_XID_ERRORS"]
    {
        assert_eq!(samples.iter().filter(|s| s.name == metric).count(), 8, "{metric}");
    }

    // A real Prometheus scrapes it; its query API returns the series with the job's labels.
    let target = c.url().trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target);
    for metric in ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"] {
        let q = format!("{metric}{{capstan_job=\"{name}\"}}");
        let deadline = Instant::now() + GPU_TIMEOUT;
        let result = loop {
            let r = prom.query(&q);
            if r.len() == 8 {
                break r;
            }
            assert!(Instant::now() < deadline, "Prometheus never returned 8 series for {q}: {r:?}\n{}", prom.log());
            std::thread::sleep(POLL);
        };
        let gpus: std::collections::BTreeSet<String> =
            result.iter().map(|s| s["metric"]["gpu"].as_str().unwrap().to_string()).collect();
        assert_eq!(gpus.len(), 8);
        for s in &result {
            assert_eq!(s["metric"]["job"], "capstan", "the scrape job label is Prometheus' own");
            assert_eq!(s["metric"]["namespace"], "default");
            assert!(s["metric"]["UUID"].as_str().unwrap().starts_with("GPU-sim-"));
        }
    }
}

#[test]
fn xid_79_moves_the_job_and_marks_the_gpu_unhealthy_but_xid_13_does_not() {
    let mut c = Capstan::start_with_gpus("8");
    let node = host_name();
    let name = unique_name("xid");
    let ckpt = c.scratch().join("ckpt");
    let extra = format!("  checkpoint:\n    uri: file://{}\n    resume: latest\n", ckpt.display());
    c.apply(&gpu_job(&name, 1, 2, &extra));
    let job = c.wait_phase(&name, "Running");
    let first = job_gpus(&job);
    assert_eq!(first.len(), 2, "{job}");
    let bad = first[0];
    let faults = format!("{}/api/v1/nodes/{node}/gpus/{bad}/faults", c.url());

    // Application XID 13: seen (the GPU's last XID says 13), nothing else changes.
    let (s, body) = post_json(&faults, &json!({"xid": 13}));
    assert_eq!(s, 202, "{body}");
    wait_until(
        GPU_TIMEOUT,
        "XID 13 to be recorded on the GPU",
        || gpus_of(&c, &node).iter().any(|g| g["index"] == bad && g["last_xid"] == 13),
        || format!("{:?}\n{}", gpus_of(&c, &node), c.log_tail(30)),
    );
    let g = gpus_of(&c, &node).into_iter().find(|g| g["index"] == bad).unwrap();
    assert_eq!(g["health"]["healthy"], true, "XID 13 is the application's: {g}");
    // A controller pass after the XID sees the job unchanged.
    std::thread::sleep(Duration::from_millis(1500));
    let job = c.job(&name).unwrap();
    assert_eq!(phase(&job), "Running");
    assert_eq!(job["status"]["attempt"], 1, "{job}");
    assert_eq!(job_gpus(&job), first);

    // Critical XID 79: the GPU turns unhealthy with the reason; the job restarts elsewhere.
    let (s, body) = post_json(&faults, &json!({"xid": 79}));
    assert_eq!(s, 202, "{body}");
    let job = c.wait_job(&name, GPU_TIMEOUT, "running again on other GPUs", |j| {
        phase(j) == "Running" && j["status"]["attempt"] == 2 && !job_gpus(j).is_empty()
    });
    let second = job_gpus(&job);
    assert!(!second.contains(&bad), "restarted on the unhealthy GPU {bad}: {second:?}");
    assert_eq!(job["status"]["restarts"], 0, "an eviction does not count against backoffLimit: {job}");
    assert_eq!(job["status"]["uncountedRestarts"], 1, "{job}");
    let (_, events) = c.get(&format!("{}/events", Capstan::job_path(&name)));
    let events = events.to_string();
    assert!(events.contains("GpuUnhealthy") && events.contains("XID 79"), "{events}");
    let g = gpus_of(&c, &node).into_iter().find(|g| g["index"] == bad).unwrap();
    assert_eq!(g["health"]["healthy"], false, "{g}");
    assert_eq!(g["health"]["reason"], "XidError");
    assert!(g["health"]["message"].as_str().unwrap().contains("XID 79"), "{g}");
    assert_eq!(g["simulated"], true);
    // The new attempt resumes from the checkpoint.
    wait_until(
        JOB_TIMEOUT,
        "the new replica with CAPSTAN_RESUME_FROM",
        || {
            !procs_with_env(&[
                ("CAPSTAN_JOB_NAME", &name),
                ("CAPSTAN_RESUME_FROM", &format!("file://{}", ckpt.display())),
            ])
            .is_empty()
        },
        || describe_procs(&job_procs(&name)),
    );
    // /metrics says so too.
    let (_, text) = get_text(&format!("{}/metrics", c.url()));
    let samples = parse_exposition(&text).unwrap();
    let health = samples
        .iter()
        .find(|s| s.name == "capstan_gpu_healthy" && s.labels["gpu"] == bad.to_string())
        .unwrap_or_else(|| panic!("no capstan_gpu_healthy for GPU {bad}:\n{text}"));
    assert_eq!(health.value, 0.0);
    assert_eq!(health.labels["reason"], "XidError");
    let nodes = c.get("/api/v1/nodes").1;
    assert_eq!(nodes["nodes"][0]["unhealthy_gpus"], 1, "{nodes}");

    // The verdict survives a restart of `capstan up` (agent included); the job stays off it.
    c.stop();
    let restarted_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    c.restart();
    wait_until(
        GPU_TIMEOUT,
        "the restarted agent to report",
        || c.get("/api/v1/nodes").1["nodes"][0]["last_seen_ms"].as_i64().is_some_and(|t| t > restarted_ms),
        || c.log_tail(30),
    );
    let g = gpus_of(&c, &node).into_iter().find(|g| g["index"] == bad).unwrap();
    assert_eq!(g["health"]["reason"], "XidError", "forgotten after a restart: {g}");
    let job = c.wait_phase(&name, "Running");
    assert!(!job_gpus(&job).contains(&bad));

    // Clearing the verdict (after a repair) makes the GPU healthy again.
    let r = http().delete(format!("{}/api/v1/nodes/{node}/gpus/{bad}/health", c.url())).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
    wait_until(
        GPU_TIMEOUT,
        "the GPU to be healthy again",
        || gpus_of(&c, &node).iter().any(|g| g["index"] == bad && g["health"]["healthy"] == true),
        || format!("{:?}", gpus_of(&c, &node)),
    );
}

#[test]
fn a_training_job_run_shows_gpu_system_metrics_through_the_mlflow_client() {
    let c = Capstan::start_with_gpus("4xA100-40GB");
    let name = unique_name("sysm");
    c.apply(&gpu_job(&name, 1, 2, ""));
    let job = c.wait_phase(&name, "Running");
    let run_id = job["status"]["trackingRunId"].as_str().expect("tracking run").to_string();
    let gpus = job_gpus(&job);
    let script = r#"
import json, sys
from mlflow.tracking import MlflowClient
c = MlflowClient(sys.argv[1])
run = c.get_run(sys.argv[2])
keys = sorted(k for k in run.data.metrics if k.startswith("system/"))
hist = c.get_metric_history(sys.argv[2], keys[0]) if keys else []
print(json.dumps({"keys": keys, "metrics": run.data.metrics, "history": len(hist), "tags": run.data.tags}))
"#;
    let deadline = Instant::now() + GPU_TIMEOUT;
    let found: Value = loop {
        let out = Command::new("python3").arg("-c").arg(script).arg(c.url()).arg(&run_id).output().expect("python3");
        assert!(out.status.success(), "mlflow client failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = gpus.iter().all(|g| {
            ["utilization_percentage", "memory_usage_megabytes", "memory_usage_percentage", "power_usage_watts"]
                .iter()
                .all(|m| v["metrics"][format!("system/gpu_{g}_{m}")].is_number())
        });
        if want {
            break v;
        }
        assert!(Instant::now() < deadline, "no system/gpu_* metrics on run {run_id}: {v}\n{}", c.log_tail(30));
        std::thread::sleep(Duration::from_millis(1000));
    };
    assert_eq!(found["tags"]["capstan.dev/simulated-gpus"], "true", "simulated GPUs say so on the run: {found}");
    let util = found["metrics"][format!("system/gpu_{}_utilization_percentage", gpus[0])].as_f64().unwrap();
    assert!(util > 0.0 && util <= 100.0, "{found}");
    let mem = found["metrics"][format!("system/gpu_{}_memory_usage_megabytes", gpus[0])].as_f64().unwrap();
    assert!(mem > 0.0 && mem <= 40.0 * 1024.0 * 1.05, "A100-40GB memory in MB: {found}");
    // GPUs the job does not hold are not in its run.
    let others: Vec<u64> = (0..4).filter(|g| !gpus.contains(g)).collect();
    for g in others {
        assert!(found["metrics"][format!("system/gpu_{g}_utilization_percentage")].is_null(), "{found}");
    }
}

/// `capstan agent --server URL ...` on its own, as on a second node.
struct AgentProc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProc {
    fn start(server: &str, dir: &std::path::Path, args: &[&str]) -> AgentProc {
        let log = dir.join(format!("agent-{}.log", unique_name("a")));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(capstan_bin())
            .arg("--server")
            .arg(server)
            .arg("agent")
            .arg("--data-dir")
            .arg(dir.join("agent-state"))
            .args(args)
            .env_remove("CAPSTAN_TOKEN")
            .env_remove("CAPSTAN_SIMULATE_GPUS")
            .env_remove("CAPSTAN_NVML_LIB")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawning capstan agent");
        AgentProc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

#[test]
fn capstan_agent_pushes_to_the_server_and_serves_metrics() {
    let c = Capstan::start();
    let node = unique_name("node");
    let port = free_port();
    let mut agent = AgentProc::start(
        c.url(),
        c.scratch(),
        &[
            "--simulate-gpus",
            "2xA100-40GB",
            "--node-name",
            &node,
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--push-interval",
            "1s",
        ],
    );
    // Its own /metrics: 2 simulated GPUs.
    wait_until(
        GPU_TIMEOUT,
        "the agent's /metrics to carry 2 GPUs",
        || {
            let (s, text) = get_text(&format!("http://127.0.0.1:{port}/metrics"));
            s == 200
                && parse_exposition(&text).is_ok_and(|v| {
                    v.iter().filter(|s| s.name == "DCGM_FI_DEV_GPU_UTIL" && s.labels["Hostname"] == node).count() == 2
                })
        },
        || agent.log(),
    );
    // The server knows the node and its GPUs, simulated.
    wait_until(GPU_TIMEOUT, "the node's GPUs in the API", || gpus_of(&c, &node).len() == 2, || agent.log());
    let gpus = gpus_of(&c, &node);
    assert!(gpus.iter().all(|g| g["simulated"] == true && g["product"] == "NVIDIA-A100-40GB"), "{gpus:?}");
    let n = c.get(&format!("/api/v1/nodes/{node}")).1;
    assert_eq!(
        (n["source"].as_str(), n["simulated"].as_bool(), n["gpus"].as_u64()),
        (Some("simulated"), Some(true), Some(2))
    );
    let hist = c.get(&format!("/api/v1/nodes/{node}/gpus/1/samples")).1;
    assert!(!hist["samples"].as_array().unwrap().is_empty(), "{hist}");

    // Overheating, through the API: repeated thermal throttling marks the GPU unhealthy.
    let (s, body) = post_json(&format!("{}/api/v1/nodes/{node}/gpus/1/faults", c.url()), &json!({"overheat": true}));
    assert_eq!(s, 202, "{body}");
    wait_until(
        GPU_TIMEOUT,
        "GPU 1 to turn unhealthy from heat",
        || gpus_of(&c, &node).iter().any(|g| g["index"] == 1 && g["health"]["reason"] == "ThermalThrottling"),
        || format!("{:?}\n{}", gpus_of(&c, &node), agent.log()),
    );
    let g0 = gpus_of(&c, &node).into_iter().find(|g| g["index"] == 0).unwrap();
    assert_eq!(g0["health"]["healthy"], true);
    assert!(agent.running());
}

#[test]
fn without_libnvidia_ml_the_agent_says_so_once_and_runs_with_no_gpus() {
    let c = Capstan::start();
    let node = unique_name("nogpu");
    let port = free_port();
    let mut agent = AgentProc::start(
        c.url(),
        c.scratch(),
        &["--node-name", &node, "--metrics-listen", &format!("127.0.0.1:{port}"), "--push-interval", "1s"],
    );
    wait_until(
        GPU_TIMEOUT,
        "the GPU-less node to report",
        || c.get(&format!("/api/v1/nodes/{node}")).0 == 200,
        || agent.log(),
    );
    let n = c.get(&format!("/api/v1/nodes/{node}")).1;
    assert_eq!(n["source"], "none", "{n}");
    assert_eq!(n["gpus"], 0);
    let (s, text) = get_text(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(s, 200);
    let samples = parse_exposition(&text).unwrap();
    assert!(!samples.iter().any(|s| s.name.starts_with("DCGM_")), "{text}");
    assert!(agent.running(), "the agent keeps running: {}", agent.log());
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("no NVIDIA GPUs")).collect();
    assert_eq!(lines.len(), 1, "one clear line: {log}");
    assert!(
        lines[0].contains("libnvidia-ml.so.1 could not be loaded") && lines[0].contains("runs with no GPUs"),
        "{log}"
    );
}

#[test]
fn nodes_api_answers_bad_input_with_the_field() {
    let c = Capstan::start_with_gpus("2");
    let node = host_name();
    wait_until(GPU_TIMEOUT, "the embedded agent to report", || gpus_of(&c, &node).len() == 2, || c.log_tail(20));
    let base = format!("{}/api/v1/nodes", c.url());

    // Faults: 400 naming the field, 404 for what does not exist.
    for (body, field) in [
        (json!({"xid": "79"}), "xid"),
        (json!({"xid": 0}), "xid"),
        (json!({"ecc_dbe": -1}), "ecc_dbe"),
        (json!({"overheat": "yes"}), "overheat"),
        (json!({"melt": true}), "melt"),
        (json!({}), "body"),
    ] {
        let (s, b) = post_json(&format!("{base}/{node}/gpus/0/faults"), &body);
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{body} -> {b}");
    }
    let r = http().post(format!("{base}/{node}/gpus/0/faults")).body("{not json").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(post_json(&format!("{base}/{node}/gpus/9/faults"), &json!({"xid": 79})).0, 404);
    assert_eq!(post_json(&format!("{base}/{node}/gpus/x/faults"), &json!({"xid": 79})).0, 400);
    assert_eq!(post_json(&format!("{base}/no-such-node/gpus/0/faults"), &json!({"xid": 79})).0, 404);
    assert_eq!(c.get("/api/v1/nodes/no-such-node/gpus").0, 404);
    let (s, b) = c.get(&format!("/api/v1/nodes/{node}/gpus/0/samples?limit=0"));
    assert_eq!((s, b["field"].as_str()), (400, Some("limit")), "{b}");

    // A push from a node with a real (NVML) GPU: faults are refused with 409.
    let real = unique_name("real");
    let push = json!({
        "node": real, "source": "nvml", "driver_version": "550.54.15", "sample_interval_ms": 1000,
        "gpus": [{"index": 0, "uuid": "GPU-1f2e3d4c", "product": "NVIDIA-H100-80GB-HBM3", "memory_mib": 81559,
                  "simulated": false, "health": {"healthy": true}}],
        "samples": [], "run_metrics": [], "dropped_samples": 0, "dropped_run_metrics": 0
    });
    let (s, b) = post_json(&format!("{base}/{real}/samples"), &push);
    assert_eq!(s, 200, "{b}");
    let (s, b) = post_json(&format!("{base}/{real}/gpus/0/faults"), &json!({"xid": 79}));
    assert_eq!(s, 409, "{b}");
    assert!(b["error"].as_str().unwrap().contains("real GPU"), "{b}");

    // Bad pushes name the field and store nothing.
    let mut wrong = push.clone();
    wrong["samples"] = json!([{"index": 3, "timestamp_ms": 1}]);
    let (s, b) = post_json(&format!("{base}/{real}/samples"), &wrong);
    assert_eq!((s, b["field"].as_str()), (400, Some("samples[0].index")), "{b}");
    let mut wrong = push.clone();
    wrong["gpus"][0]["memory_mib"] = json!("80GB");
    let (s, b) = post_json(&format!("{base}/{real}/samples"), &wrong);
    assert_eq!((s, b["field"].as_str()), (400, Some("gpus[0].memory_mib")), "{b}");
    let (s, b) = post_json(&format!("{base}/other/samples"), &push);
    assert_eq!((s, b["field"].as_str()), (400, Some("node")), "{b}");
    assert_eq!(gpus_of(&c, &real).len(), 1);
}

#[test]
fn metrics_need_the_token_when_the_server_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(capstan_bin())
        .args(["up", "--listen", &format!("0.0.0.0:{port}"), "--simulate-gpus", "1", "--data-dir"])
        .arg(dir.path())
        .env_remove("CAPSTAN_DOCKER_SOCKET")
        .env_remove("CAPSTAN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn capstan up");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let mut token = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        if let Some(t) = line.trim().strip_prefix("export CAPSTAN_TOKEN=") {
            token = Some(t.to_string());
        }
        if line.contains("Capstan is up at") {
            break;
        }
    }
    let token = token.expect("a token is printed on first start");
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(http().get(&url).send().unwrap().status().as_u16(), 401);
    wait_until(
        GPU_TIMEOUT,
        "/metrics with the token to carry the GPU",
        || {
            let r = http().get(&url).bearer_auth(&token).send().unwrap();
            r.status().as_u16() == 200 && r.text().unwrap().contains("DCGM_FI_DEV_GPU_UTIL{")
        },
        String::new,
    );
    drop(child);
}

#[test]
fn the_exposition_parser_rejects_what_prometheus_would() {
    assert!(parse_exposition("# TYPE a gauge\na{x=\"1\"} 2\n# EOF\n").is_ok());
    for bad in [
        "a 1\n",                                  // no TYPE
        "# TYPE a gauge\na{x=1} 2\n",             // unquoted
        "# TYPE a gauge\na{x=\"1\" 2\n",          // unterminated
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 2\n", // repeated label
        "# TYPE a gauge\na 2 3 4\n",              // trailing text
        "# TYPE a gauge\na two\n",                // bad value
        "# TYPE a gauge\n# EOF\na 1\n",           // EOF not last
        "# TYPE 1a gauge\n",                      // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
}
