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
//! Needs the browser bundle in the binary (`scripts/build-ui.sh` before `cargo build`),
//! node, chromium and `npm ci` in `tests/ui` (all from `scripts/install-deps.sh`): the test
//! fails with a clear message, never skips, when one is missing.
//!
//!     scripts/build-ui.sh && cargo build -p capstan && cargo test -p capstan-e2e --test ui

use std::process::Command;
use std::time::Duration;

use capstan_e2e::*;

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

    let shots = root.join("target/ui-screenshots");
    let mut node = Command::new("node");
    node.arg(ui.join("ui.test.mjs"))
        .current_dir(&ui)
        .env("CAPSTAN_URL", capstan.url())
        .env("UI_DATA", &data)
        .env("UI_JOB", format!("default/{job}"))
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
    for page in ["01-home", "02-runs", "05-run", "07-compare", "08-registry", "09-job", "11-gpus"] {
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
