//! `capstan serve` end to end: an ONNX model built in Python (`onnx`), logged and registered
//! with the mlflow client against `capstan up`, served from `models:/NAME@champion`, and
//! called with the real `tritonclient.http` (binary_data=False) and `kserve` clients whose
//! outputs must equal onnxruntime's within 1e-5; then bad input over HTTP (wrong shape,
//! wrong datatype, missing input, a 100 MB body, unknown model) and draining on SIGTERM.
//!
//! Needs python3 with mlflow-skinny, onnx, onnxruntime, tritonclient[http] and kserve
//! (scripts/install-deps.sh); fails with that message when they are missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::python::{python, python_script, require_python_packages};
use capstan_e2e::{capstan_bin, free_port, run_bounded, unique_name, wait_until, Capstan};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// A `capstan serve` process, killed on drop.
struct Served {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Served {
    fn start(capstan: &Capstan, model: &str, name: &str) -> Served {
        let port = free_port();
        let log = capstan.scratch().join(format!("{}.log", unique_name("serve")));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(capstan_bin())
            .args(["--server", capstan.url(), "serve", "--model", model, "--name", name])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("CAPSTAN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawning capstan serve");
        let mut s = Served { child: Some(child), url: format!("http://127.0.0.1:{port}"), log };
        s.wait_ready();
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("capstan serve exited early ({status}); its log:\n{}", self.log());
            }
            if let Ok(r) = http.get(format!("{}/v2/health/ready", self.url)).timeout(Duration::from_secs(2)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "capstan serve never became ready; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}; server log:\n{}", self.log()));
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::blocking::get(format!("{}{path}", self.url)).unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("capstan serve did not stop within 30 s of SIGTERM; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[track_caller]
fn assert_error(status: u16, body: &Value, want: &[u16], needle: &str) {
    assert!(want.contains(&status), "status {status} not in {want:?}: {body}");
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("no 'error' in {body}"));
    assert!(msg.contains(needle), "error {msg:?} should mention {needle:?}");
}

#[test]
fn registered_model_served_to_tritonclient_and_kserve_clients() {
    require_python_packages();
    let capstan = Capstan::start();
    let model = capstan.scratch().join("classifier.onnx");
    let built = Command::new("python3")
        .arg(python_script("onnx_models.py"))
        .arg("classifier")
        .arg(&model)
        .output()
        .expect("python3");
    assert!(built.status.success(), "building the ONNX model: {}", String::from_utf8_lossy(&built.stderr));

    let name = unique_name("iris").replace('-', "_");
    let reg = python(
        &[
            python_script("serving_client.py").to_str().unwrap(),
            "register",
            capstan.url(),
            &name,
            model.to_str().unwrap(),
            "--alias",
            "champion",
        ],
        &[("MLFLOW_TRACKING_URI", capstan.url())],
        "registering the model with mlflow",
    );
    let version = reg["version"].as_str().expect("version").to_string();
    assert_eq!(version, "1", "{reg}");

    let mut served = Served::start(&capstan, &format!("models:/{name}@champion"), &name);
    let summary = python(
        &[
            python_script("serving_client.py").to_str().unwrap(),
            "check",
            &served.url,
            &name,
            model.to_str().unwrap(),
            &version,
        ],
        &[],
        "tritonclient and kserve against capstan serve",
    );
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["triton"]["server"], "capstan", "{summary}");
    assert_eq!(summary["kserve"]["model_name"], json!(name), "{summary}");
    assert!(summary["triton"]["bad_shape_error"].as_str().unwrap().contains("[-1, 4]"), "{summary}");

    // Bad input over HTTP: each a 4xx with an {"error"} naming what is wrong.
    let infer = format!("/v2/models/{name}/infer");
    let body = |v: Value| serde_json::to_vec(&v).unwrap();
    let (st, b) = served.post(
        &infer,
        body(json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]})),
    );
    assert_error(st, &b, &[400], "shape [2, 3]");
    let (st, b) = served.post(
        &infer,
        body(json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]})),
    );
    assert_error(st, &b, &[400], "datatype INT64");
    let (st, b) = served.post(
        &infer,
        body(json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})),
    );
    assert_error(st, &b, &[400], "'features'");
    let (st, b) = served.post(&infer, body(json!({"inputs": []})));
    assert_error(st, &b, &[400], "inputs");
    let (st, b) = served.post(
        "/v2/models/no_such_model/infer",
        body(json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})),
    );
    assert_error(st, &b, &[404], "no_such_model");
    let (st, b) = served.get("/v2/models/no_such_model");
    assert_error(st, &b, &[404], "no_such_model");
    // 100 MB of JSON: refused (413) with an error, and the server carries on.
    let mut big = br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ["#.to_vec();
    while big.len() < 100 * 1000 * 1000 {
        big.extend_from_slice(b"1.0,");
    }
    big.extend_from_slice(b"1.0]}]}");
    let (st, b) = served.post(&infer, big);
    assert_error(st, &b, &[400, 413], "limit");
    let (st, ok) = served.post(
        &infer,
        body(
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [[0.1, 0.2, 0.3, 0.4]]}]}),
        ),
    );
    assert_eq!(st, 200, "{ok}");
    assert_eq!(ok["model_version"], json!(version));

    let (st, metrics) = {
        let r = reqwest::blocking::get(format!("{}/metrics", served.url)).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(st, 200);
    assert!(metrics.contains("capstan_serving_request_duration_seconds_bucket"), "{metrics}");
    // Six refused here plus tritonclient's wrong-shape request.
    assert!(metrics.contains(r#"outcome="client_error"} 7"#), "{metrics}");

    assert_eq!(served.terminate(), Some(0), "capstan serve should exit 0 on SIGTERM; log:\n{}", served.log());
    let log = served.log();
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
}

#[test]
fn serve_refuses_a_missing_model_and_a_bad_source() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let mut cmd = Command::new(capstan_bin());
    cmd.args(["serve", "--name", "m", "--listen", "127.0.0.1:0", "--model", missing.to_str().unwrap()]);
    let out = run_bounded(cmd, Duration::from_secs(30), "capstan serve with a missing file");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("missing.onnx"), "{}", out.stderr);

    let not_onnx = dir.path().join("junk.onnx");
    std::fs::write(&not_onnx, b"this is not a protobuf").unwrap();
    let mut cmd = Command::new(capstan_bin());
    cmd.args(["serve", "--name", "m", "--listen", "127.0.0.1:0", "--model", not_onnx.to_str().unwrap()]);
    let out = run_bounded(cmd, Duration::from_secs(30), "capstan serve with a junk file");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("invalid model"), "{}", out.stderr);

    let mut cmd = Command::new(capstan_bin());
    cmd.args(["serve", "--name", "m", "--model", "models:/m/zero"]);
    let out = run_bounded(cmd, Duration::from_secs(30), "capstan serve with a bad models:/ URI");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--model 'models:/m/zero'"), "{}", out.stderr);
}

fn build_model(capstan: &Capstan, file: &str, extra: &[&str]) -> PathBuf {
    let path = capstan.scratch().join(file);
    let out = Command::new("python3")
        .arg(python_script("onnx_models.py"))
        .arg("classifier")
        .arg(&path)
        .args(extra)
        .output()
        .expect("python3");
    assert!(out.status.success(), "building {file}: {}", String::from_utf8_lossy(&out.stderr));
    path
}

fn deployment(capstan: &Capstan, name: &str) -> Value {
    let (st, d) = capstan.get(&format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{name}"));
    assert_eq!(st, 200, "{d}");
    d
}

fn wait_deployment(capstan: &Capstan, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = deployment(capstan, name);
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "ModelDeployment {name}: timed out waiting for {what}; last status:\n{}\nserver log:\n{}",
            serde_json::to_string_pretty(&d["status"]).unwrap(),
            capstan.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn traffic(d: &Value) -> Vec<(String, u64)> {
    d["status"]["traffic"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|x| (x["version"].as_str().unwrap_or("").to_string(), x["percent"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn manifest(name: &str, model: &str, canary: Option<(&str, &str)>) -> String {
    let mut m = format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    registeredModel: {model}\n    alias: champion\n"
    );
    if let Some((version, thresholds)) = canary {
        m.push_str(&format!(
            "  canary:\n    model:\n      registeredModel: {model}\n      version: {version}\n    canaryPercent: 20\n    windowSeconds: 3600\n{thresholds}"
        ));
    }
    m
}

/// Infers once through the Capstan server; (status, version that answered).
fn infer_via_server(http: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let body =
        json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]});
    let r = http.post(url).json(&body).send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let version = r.headers().get("x-capstan-model-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let v: Value = r.json().unwrap_or(Value::Null);
    if status == 200 {
        assert_eq!(v["model_version"].as_str(), Some(version.as_str()), "{v}");
    } else {
        assert!(v["error"].is_string(), "a failed answer carries an error: {v}");
    }
    (status, version)
}

#[test]
fn model_deployment_with_canary_split_rollback_and_alias_roll_forward() {
    require_python_packages();
    let capstan = Capstan::start();
    let v1 = build_model(&capstan, "v1.onnx", &["--seed", "1"]);
    let v2 = build_model(&capstan, "v2.onnx", &["--seed", "2"]);
    // Version 3 takes 5 features: every request of the others fails on it.
    let v3 = build_model(&capstan, "v3.onnx", &["--features", "5"]);
    let model = unique_name("clf").replace('-', "_");
    let script = python_script("serving_client.py");
    for (i, path) in [&v1, &v2, &v3].iter().enumerate() {
        let mut args = vec![script.to_str().unwrap(), "register", capstan.url(), &model, path.to_str().unwrap()];
        if i == 0 {
            args.extend(["--alias", "champion"]);
        }
        let reg = python(&args, &[("MLFLOW_TRACKING_URI", capstan.url())], "registering a model version");
        assert_eq!(reg["version"], json!((i + 1).to_string()), "{reg}");
    }

    // 1. Deployed with `capstan apply`, following the alias; the real clients talk to the
    // Capstan server, which routes to the replica.
    let name = "classifier";
    capstan.apply(&manifest(name, &model, None));
    let d = wait_deployment(&capstan, name, "Ready on version 1", |d| {
        d["status"]["phase"] == "Ready" && traffic(d) == [("1".to_string(), 100)]
    });
    assert_eq!(d["status"]["url"], json!(format!("{}/v2/models/{name}", capstan.url())));
    let out = capstan.cli(&["get", "mdep", name]).ok();
    assert!(out.stdout.contains(name), "{}", out.stdout);
    let summary = python(
        &[script.to_str().unwrap(), "check", capstan.url(), name, v1.to_str().unwrap(), "1"],
        &[],
        "tritonclient and kserve through the Capstan server",
    );
    assert_eq!(summary["ok"], true, "{summary}");

    // 2. Version 2 as a canary at 20%: its share over 2,000 requests is within 4 sigma of
    // the binomial expectation (400 +- 72).
    let thresholds = "    maxErrorRate: 0.05\n    maxP99LatencyRatio: 1000\n    minRequests: 100000\n";
    capstan.apply(&manifest(name, &model, Some(("2", thresholds))));
    wait_deployment(&capstan, name, "the canary receiving 20%", |d| {
        traffic(d) == [("1".to_string(), 80), ("2".to_string(), 20)]
    });
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/v2/models/{name}/infer", capstan.url());
    let mut to_canary = 0u32;
    for _ in 0..2000 {
        let (status, version) = infer_via_server(&http, &url);
        assert_eq!(status, 200, "version {version} failed");
        match version.as_str() {
            "2" => to_canary += 1,
            "1" => {}
            other => panic!("answered by version {other:?}"),
        }
    }
    let sigma = (2000.0f64 * 0.2 * 0.8).sqrt();
    assert!(
        (to_canary as f64 - 400.0).abs() <= 4.0 * sigma,
        "the canary got {to_canary} of 2000 requests; expected 400 +- {:.0}",
        4.0 * sigma
    );
    let d = wait_deployment(&capstan, name, "the canary's counts", |d| {
        d["status"]["canary"]["requests"].as_u64().unwrap_or(0) >= 300
    });
    assert_eq!(d["status"]["canary"]["verdict"], "Wait", "{}", d["status"]);
    assert_eq!(d["status"]["phase"], "Canary");

    // 3. Version 3 as the canary: it fails every request, and is rolled back automatically.
    let thresholds = "    maxErrorRate: 0.05\n    maxP99LatencyRatio: 1000\n    minRequests: 20\n";
    capstan.apply(&manifest(name, &model, Some(("3", thresholds))));
    wait_deployment(&capstan, name, "version 3 receiving 20%", |d| {
        traffic(d) == [("1".to_string(), 80), ("3".to_string(), 20)]
    });
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let rolled_back = loop {
        for _ in 0..25 {
            let (status, version) = infer_via_server(&http, &url);
            if status != 200 {
                assert_eq!(version, "3", "only the canary fails");
                failures += 1;
            }
        }
        let d = deployment(&capstan, name);
        if d["status"]["canary"]["phase"] == "RolledBack" {
            break d;
        }
        assert!(Instant::now() < deadline, "version 3 was never rolled back: {}", d["status"]);
    };
    assert!(failures >= 20, "the canary failed {failures} requests");
    let canary = &rolled_back["status"]["canary"];
    assert_eq!(canary["version"], "3");
    assert_eq!(canary["verdict"], "Rollback");
    let reason = canary["reason"].as_str().unwrap();
    assert!(reason.contains("error rate") && reason.contains("maxErrorRate 5.0%"), "{reason}");
    assert_eq!(traffic(&rolled_back), [("1".to_string(), 100)]);
    let cond = rolled_back["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "CanaryRolledBack")
        .cloned()
        .unwrap_or_else(|| panic!("no CanaryRolledBack condition: {}", rolled_back["status"]));
    assert_eq!(cond["status"], "True");
    let (_, events) =
        capstan.get(&format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{name}/events"));
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| e["reason"] == "CanaryRolledBack"
            && e["message"].as_str().unwrap_or("").contains("version 3 rolled back")),
        "{events}"
    );
    for _ in 0..50 {
        assert_eq!(infer_via_server(&http, &url), (200, "1".to_string()));
    }

    // 4. Moving the alias rolls the deployment forward to version 2.
    python(
        &[
            "-c",
            "import sys, json; from mlflow import MlflowClient; \
             MlflowClient().set_registered_model_alias(sys.argv[1], 'champion', '2'); print(json.dumps({'ok': True}))",
            &model,
        ],
        &[("MLFLOW_TRACKING_URI", capstan.url())],
        "moving the alias",
    );
    let d = wait_deployment(&capstan, name, "the roll forward to version 2", |d| {
        d["status"]["stableVersion"] == "2" && traffic(d) == [("2".to_string(), 100)]
    });
    assert_eq!(d["status"]["versions"].as_array().unwrap().len(), 1, "{}", d["status"]);
    assert_eq!(infer_via_server(&http, &url), (200, "2".to_string()));
    let (_, events) =
        capstan.get(&format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{name}/events"));
    assert!(events["items"].as_array().unwrap().iter().any(|e| e["reason"] == "RolledForward"), "{events}");

    // 5. Deleted: the replicas go, the route answers 404.
    capstan.cli(&["delete", "mdep", name, "--wait"]).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.post(&url).json(&json!({"inputs": []})).send().unwrap();
        if r.status().as_u16() == 404 {
            let v: Value = r.json().unwrap();
            assert!(v["error"].as_str().unwrap().contains(name), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the route outlived its deployment");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Infers once through the Capstan server: the status, or the transport error.
fn try_infer(http: &reqwest::blocking::Client, url: &str) -> Result<u16, String> {
    let body =
        json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]});
    match http.post(url).json(&body).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().unwrap_or_default();
            if status == 200 {
                Ok(status)
            } else {
                Err(format!("{status}: {text}"))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Closed-loop clients posting infer requests until stopped; (answered, failures).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                    let (mut ok, mut failed) = (0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match try_infer(&http, &url) {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(e),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().expect("a load thread panicked")).fold(
            (0, Vec::new()),
            |(ok, mut failed), (o, f)| {
                failed.extend(f);
                (ok + o, failed)
            },
        )
    }
}

fn events_of(capstan: &Capstan, name: &str) -> Vec<Value> {
    let (st, events) =
        capstan.get(&format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{name}/events"));
    assert_eq!(st, 200, "{events}");
    events["items"].as_array().cloned().unwrap_or_default()
}

/// Successful infer requests a replica has answered, from its own /metrics.
fn replica_successes(endpoint: &str) -> u64 {
    let Ok(r) = reqwest::blocking::get(format!("http://{endpoint}/metrics")) else { return 0 };
    let text = r.text().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("capstan_serving_requests_total{") && l.contains(r#"outcome="success""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn model_deployment_autoscales_on_concurrency_and_back() {
    require_python_packages();
    let capstan = Capstan::start();
    let path = build_model(&capstan, "scaled.onnx", &[]);
    let model = unique_name("scaled").replace('-', "_");
    let script = python_script("serving_client.py");
    let reg = python(
        &[script.to_str().unwrap(), "register", capstan.url(), &model, path.to_str().unwrap(), "--alias", "champion"],
        &[("MLFLOW_TRACKING_URI", capstan.url())],
        "registering the model",
    );
    assert_eq!(reg["version"], "1", "{reg}");

    // 1 to 3 replicas, one request in flight per replica, a 3 s scale-down window.
    let name = "scaled";
    capstan.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    registeredModel: {model}\n    alias: champion\n  minReplicas: 1\n  maxReplicas: 3\n  autoscaling:\n    metric: concurrency\n    target: 1\n    scaleDownStabilizationSeconds: 3\n"
    ));
    let version = |d: &Value, field: &str| d["status"]["versions"][0][field].as_u64().unwrap_or(0);
    let d = wait_deployment(&capstan, name, "one ready replica", |d| {
        d["status"]["phase"] == "Ready" && version(d, "readyReplicas") == 1
    });
    assert_eq!(version(&d, "replicas"), 1, "{}", d["status"]);
    assert_eq!(d["status"]["replicas"], 1, "{}", d["status"]);

    // 8 clients without pause: the proxy sees several requests in flight, the deployment
    // grows past one ready replica, and no request fails on the way.
    let url = format!("{}/v2/models/{name}/infer", capstan.url());
    let load = Load::start(&url, 8);
    let scaled = wait_deployment(&capstan, name, "more than one ready replica under load, all of them ready", |d| {
        version(d, "readyReplicas") >= 2 && version(d, "readyReplicas") == version(d, "replicas")
    });
    assert!(version(&scaled, "replicas") <= 3, "never above maxReplicas: {}", scaled["status"]);
    assert!(version(&scaled, "desiredReplicas") >= 2, "{}", scaled["status"]);
    let cond = scaled["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Scaled")
        .cloned()
        .unwrap_or_else(|| panic!("no Scaled condition: {}", scaled["status"]));
    assert_eq!(cond["reason"], "ScaledUp", "{cond}");
    assert!(cond["message"].as_str().unwrap().contains("concurrency"), "{cond}");
    // Every ready replica gets requests.
    let endpoints: Vec<String> = scaled["status"]["versions"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(endpoints.len() as u64, version(&scaled, "replicas"), "{}", scaled["status"]);
    wait_until(
        Duration::from_secs(60),
        "every ready replica answering requests",
        || endpoints.iter().all(|e| replica_successes(e) > 0),
        || format!("{:?}", endpoints.iter().map(|e| (e, replica_successes(e))).collect::<Vec<_>>()),
    );
    let (answered, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while scaling up: {:?}",
        failed.len(),
        answered,
        &failed[..failed.len().min(5)]
    );
    assert!(answered > 0);
    let ups: Vec<Value> = events_of(&capstan, name).into_iter().filter(|e| e["reason"] == "ScaledUp").collect();
    assert!(!ups.is_empty(), "no ScaledUp event");
    assert!(ups[0]["message"].as_str().unwrap().contains("target 1"), "{}", ups[0]);

    // One sequential client (at most one request in flight): back to one replica after the
    // window, still answering every request while replicas leave.
    let light = Load::start(&url, 1);
    let d = wait_deployment(&capstan, name, "scaling back to one replica", |d| {
        version(d, "replicas") == 1 && version(d, "readyReplicas") == 1
    });
    assert_eq!(d["status"]["readyReplicas"], 1, "{}", d["status"]);
    let (answered, failed) = light.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while scaling down: {:?}",
        failed.len(),
        answered,
        &failed[..failed.len().min(5)]
    );
    let downs: Vec<Value> = events_of(&capstan, name).into_iter().filter(|e| e["reason"] == "ScaledDown").collect();
    assert!(!downs.is_empty(), "no ScaledDown event");
    assert!(downs.iter().any(|e| e["message"].as_str().unwrap().contains("-> 1 replicas")), "{downs:?}");
    let http = reqwest::blocking::Client::new();
    for _ in 0..20 {
        assert_eq!(try_infer(&http, &url), Ok(200));
    }
    for e in events_of(&capstan, name).iter().filter(|e| e["reason"].as_str().unwrap_or("").starts_with("Scaled")) {
        eprintln!("{}: {}", e["reason"], e["message"]);
    }
    capstan.cli(&["delete", "mdep", name, "--wait"]).ok();
}
