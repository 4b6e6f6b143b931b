//! End-to-end: the web UI in real headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! playwright-core from `tests/ui/ui.test.mjs`). `capstan up` (with two simulated GPUs) gets
//! its data from the real mlflow client (`tests/ui/make_data.py`) and a running process job
//! that prints a line every 300 ms; the browser then opens the experiment, filters runs with
//! an OR filter (and sees a filter error with its column), opens a run and finds its chart
//! drawn with every point, zooms (the server is asked for the range), previews an artifact,
//! compares two runs with only the differences, sets an alias in the registry and sees it
//! with its history, watches the job's live log grow, and opens jobs and GPUs. Screenshots
//! of each page go to `target/ui-screenshots/`.
//!
//! Deployments, pipelines and lineage: a Pipeline (train an iris classifier with
//! `tests/ui/pipeline_train.py` -> gated register -> deploy, and a step gated on the branch
//! that is skipped) runs twice from manual runs carrying a commit, registering versions 1 and
//! 2 and deploying them; the ModelDeployment is then given version 2 as a 30% canary and
//! requests go through the server's `/v2` proxy. The browser checks the deployments pages
//! (versions, weights, verdict, request charts), the pipeline and run pages (commit SHA, step
//! states, skip reason) and follows the lineage links commit -> run -> model version ->
//! deployment; and the run page's chart with its x axis set to another metric.
//!
//! Needs the browser bundle in the binary (`scripts/build-ui.sh` before `cargo build`),
//! node, chromium and `npm ci` in `tests/ui` (all from `scripts/install-deps.sh`): the test
//! fails with a clear message, never skips, when one is missing.
//!
//!     scripts/build-ui.sh && cargo build -p capstan && cargo test -p capstan-e2e --test ui

use std::process::Command;
use std::time::Duration;

use capstan_e2e::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn the_web_ui_in_headless_chromium() {
    let root = workspace_root();
    let ui = root.join("tests/ui");
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing in tests/ui/node_modules: run scripts/install-deps.sh (npm ci in tests/ui)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: run scripts/install-deps.sh");

    let capstan = Capstan::start_with_gpus("2");
    let bundle = reqwest::blocking::get(format!("{}/pkg/capstan_ui.js", capstan.url())).expect("GET the bundle");
    assert_eq!(
        bundle.status().as_u16(),
        200,
        "the capstan binary carries no browser bundle: run scripts/build-ui.sh before cargo build"
    );

    // Data through the real mlflow client.
    let suffix = unique_name("ui");
    let mut py = Command::new("python3");
    py.arg(ui.join("make_data.py")).arg(capstan.url()).arg(&suffix).arg("500");
    let out = run_bounded(py, Duration::from_secs(120), "make_data.py").ok();
    let data = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("make_data.py printed no JSON:\n{}\n{}", out.stdout, out.stderr))
        .to_string();

    // A job that keeps logging while the browser watches.
    let job = unique_name("ui-log");
    let script = "i=0; while [ $i -lt 3000 ]; do echo tick $i; i=$((i+1)); sleep 0.3; done";
    capstan.apply(&process_job(&job, 1, &["/bin/sh", "-c", script], ""));
    capstan.wait_phase(&job, "Running");

    let ops = deployments_and_pipelines(&capstan, &suffix);

    let shots = root.join("target/ui-screenshots");
    let mut node = Command::new("node");
    node.arg(ui.join("ui.test.mjs"))
        .current_dir(&ui)
        .env("CAPSTAN_URL", capstan.url())
        .env("UI_DATA", &data)
        .env("UI_JOB", format!("default/{job}"))
        .env("UI_OPS", ops.to_string())
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium);
    let out = run_bounded(node, Duration::from_secs(400), "node tests/ui/ui.test.mjs");
    assert_eq!(
        out.code,
        0,
        "browser tests failed (screenshots in {}):\nstdout:\n{}\nstderr:\n{}\ncapstan log tail:\n{}",
        shots.display(),
        out.stdout,
        out.stderr,
        capstan.log_tail(40)
    );
    for page in [
        "01-home",
        "02-runs",
        "05-run",
        "07-compare",
        "08-registry",
        "09-job",
        "11-gpus",
        "14-deployments",
        "15-deployment",
        "16-pipelines",
        "17-pipeline",
        "18-pipelinerun",
        "19-registry-lineage",
        "20-x-by-metric",
    ] {
        let p = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", p.display());
    }
}

/// The UI's routes sit beside the API without shadowing it, and its own endpoints answer
/// bad input with a 4xx that says what is wrong (no browser needed).
#[test]
fn ui_routes_leave_the_api_alone_and_reject_bad_input() {
    let capstan = Capstan::start();
    let (status, body) = capstan.get("/");
    assert_eq!(status, 200, "{body}");
    let html = body.as_str().expect("an HTML page");
    assert!(html.contains("<h1>Experiments</h1>") && html.contains("Default"), "server-rendered home: {html}");

    // The API keeps its paths and its JSON 404 for unknown ones.
    let (status, body) = capstan.get("/api/2.0/mlflow/experiments/search?max_results=5");
    assert_eq!(status, 200, "{body}");
    let (status, body) = capstan.get("/api/2.0/mlflow/no-such-endpoint");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error_code"], "ENDPOINT_NOT_FOUND", "{body}");

    // A filter that does not parse: 400 with its column.
    let (status, body) = capstan.get("/ui/data/runs?experiment=0&filter=metrics.acc%20%3E%20%27high%27");
    assert_eq!(status, 400, "{body}");
    assert!(body["column"].as_u64().is_some_and(|c| c > 1), "the error names a column: {body}");
    let (status, body) = capstan.get("/ui/data/runs?filter=x");
    assert!((400..500).contains(&status), "a missing experiment is a 4xx: {status} {body}");
    let (status, body) = capstan.get("/ui/data/runs?experiment=0&filter=&cols=metrics.m");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"], serde_json::json!(["metrics.m"]), "{body}");

    // The deployments' request series: bad window or step is a 400 naming the field; an
    // unknown deployment has no versions.
    let (status, body) = capstan.get("/ui/data/traffic?deployment=x&window=100000");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("window:")), "{body}");
    let (status, body) = capstan.get("/ui/data/traffic?deployment=x&step=0");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("step:")), "{body}");
    let (status, body) = capstan.get("/ui/data/traffic");
    assert!((400..500).contains(&status), "a missing deployment is a 4xx: {status} {body}");
    let (status, body) = capstan.get("/ui/data/traffic?deployment=nothing-here&window=60&step=5");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["versions"], serde_json::json!([]), "{body}");
    assert_eq!(body["t"].as_array().map(Vec::len), Some(12), "60 s in 5 s steps: {body}");

    // The deployments and pipelines pages, server-rendered, empty and missing.
    for (path, empty) in [("/deployments", "No model deployments."), ("/pipelines", "No pipelines.")] {
        let (status, body) = capstan.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.as_str().is_some_and(|h| h.contains(empty)), "{path}: {body}");
    }
    for path in ["/deployments/default/missing", "/pipelines/default/missing", "/pipelineruns/default/missing"] {
        let (status, body) = capstan.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.as_str().is_some_and(|h| h.contains("does not exist")), "{path}: {body}");
    }
    let (status, body) =
        capstan.post("/ui/fn/deployment", "application/x-www-form-urlencoded", b"namespace=default".to_vec());
    assert!((400..500).contains(&status), "missing argument: {status} {body}");

    // Files outside the bundle are not served.
    let (status, _) = capstan.get("/pkg/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(status, 404);

    // A server function called with arguments missing is refused, not a 500.
    let (status, body) =
        capstan.post("/ui/fn/rename_experiment", "application/x-www-form-urlencoded", b"id=0".to_vec());
    assert!((400..500).contains(&status), "missing argument: {status} {body}");
    // ... and one given a bad value says which.
    let (status, body) =
        capstan.post("/ui/fn/set_experiment_stage", "application/x-www-form-urlencoded", b"id=0&stage=gone".to_vec());
    assert!((400..500).contains(&status), "bad stage: {status} {body}");
    assert!(body.to_string().contains("stage"), "the error names the field: {body}");
}

const DEPLOYMENTS: &str = "/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments";
const PIPELINE_RUNS: &str = "/apis/capstan.dev/v1alpha1/namespaces/default/pipelineruns";

/// A pipeline run twice (versions 1 and 2 registered and deployed), then the deployment given
/// version 1 as stable and version 2 as a 30% canary, and 200 requests through the server.
/// Returns what the browser test checks: names, commits, run ids.
fn deployments_and_pipelines(capstan: &Capstan, suffix: &str) -> Value {
    let root = workspace_root();
    let train = root.join("tests/ui/pipeline_train.py");
    let model = format!("ui-iris-{suffix}");
    capstan.cli(&["secret", "create", "ui-hook", "--from-literal", "secret=ui-test"]).ok();
    capstan.apply(&format!(
        r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata: {{name: ui-pipe}}
spec:
  triggers:
    - git: {{repo: "https://example.com/capstan/ui-models.git", branches: [main], provider: generic, secretRef: {{name: ui-hook}}}}
  parameters:
    - {{name: max_iter, default: "200", description: iterations of the solver}}
  steps:
    - name: train
      train:
        template: {{runtime: process, command: [python3, "{train}"]}}
    - name: register
      dependsOn: [train]
      when: "steps.train.metrics.accuracy > 0.5"
      register: {{model: {model}, fromStep: train, alias: champion}}
    - name: deploy
      dependsOn: [register]
      deploy: {{deployment: ui-serving, fromStep: register}}
    - name: publish
      dependsOn: [register]
      when: "params.branch == 'release'"
      container: {{template: {{runtime: process, command: ["true"]}}}}
---
apiVersion: capstan.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: ui-serving}}
spec:
  model: {{registeredModel: {model}, alias: champion}}
"#,
        train = train.display(),
    ));
    let mut runs = Vec::new();
    for (i, (iters, message)) in
        [("200", "train with 200 iterations"), ("300", "train with 300 iterations")].iter().enumerate()
    {
        let sha =
            ["9fceb02d0ae598e95dc970b74767f19372d61af8", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"][i].to_string();
        let body = json!({
            "parameters": {"max_iter": iters},
            "commit": {
                "sha": sha, "branch": "main", "author": "Ada Lovelace <ada@example.com>", "message": message,
                "repo": "https://example.com/capstan/ui-models.git",
                "url": format!("https://example.com/capstan/ui-models/commit/{sha}"),
            },
        });
        let (code, resp) = capstan.post(
            "/api/v1/namespaces/default/pipelines/ui-pipe/runs",
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(code, 201, "manual pipeline run: {resp}");
        let name = resp["name"].as_str().expect("run name").to_string();
        let path = format!("{PIPELINE_RUNS}/{name}");
        wait_until(
            Duration::from_secs(300),
            &format!("pipeline run {name} to finish"),
            || matches!(capstan.get(&path).1["status"]["phase"].as_str(), Some("Succeeded" | "Failed")),
            || format!("{:#}\n--- capstan log tail\n{}", capstan.get(&path).1, capstan.log_tail(60)),
        );
        let run = capstan.get(&path).1;
        assert_eq!(run["status"]["phase"], "Succeeded", "{run:#}\n{}", capstan.log_tail(60));
        let step = |n: &str| {
            run["status"]["steps"].as_array().and_then(|s| s.iter().find(|s| s["name"] == n)).cloned().unwrap()
        };
        assert_eq!(step("publish")["phase"], "Skipped", "{run:#}");
        assert_eq!(step("register")["modelVersion"]["version"], i as u64 + 1, "{run:#}");
        let train_run = step("train")["runId"].as_str().expect("train run id").to_string();
        runs.push(json!({"name": name, "sha": sha, "train_run": train_run, "version": i + 1}));
    }

    // Version 1 stable, version 2 a canary at 30% that waits for more requests than it gets.
    capstan.apply(&format!(
        r#"apiVersion: capstan.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: ui-serving}}
spec:
  model: {{registeredModel: {model}, version: 1}}
  canary:
    model: {{registeredModel: {model}, version: 2}}
    canaryPercent: 30
    windowSeconds: 3600
    minRequests: 1000000
"#
    ));
    let path = format!("{DEPLOYMENTS}/ui-serving");
    wait_until(
        Duration::from_secs(180),
        "ui-serving to split 70/30 between versions 1 and 2",
        || {
            let d = capstan.get(&path).1;
            let t: Vec<(String, u64)> = d["status"]["traffic"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| (x["version"].as_str().unwrap_or("").into(), x["percent"].as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            t == [("1".to_string(), 70), ("2".to_string(), 30)]
        },
        || format!("{:#}\n{}", capstan.get(&path).1["status"], capstan.log_tail(40)),
    );
    let req = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let mut answered = 0;
    for i in 0..200 {
        // Spread over a few seconds, so the request chart has more than one point.
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(700));
        }
        let (code, body) =
            capstan.post("/v2/models/ui-serving/infer", "application/json", serde_json::to_vec(&req).unwrap());
        assert_eq!(code, 200, "infer through the server: {body}");
        answered += 1;
    }
    wait_until(
        Duration::from_secs(60),
        "the canary's verdict",
        || capstan.get(&path).1["status"]["canary"]["verdict"] == "Wait",
        || format!("{:#}", capstan.get(&path).1["status"]),
    );
    json!({"model": model, "deployment": "ui-serving", "pipeline": "ui-pipe", "runs": runs, "requests": answered})
}
