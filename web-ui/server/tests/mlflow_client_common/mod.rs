//! Shared by the real-mlflow-client suites (`mlflow_client_registry`, `mlflow_client_sklearn`):
//! checking that the Python modules a script needs are installed (failing, never skipping,
//! with the fix when they are not) and running a script against a server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

/// How to install what the client tests need.
pub const INSTALL_HINT: &str =
    "pip install mlflow-skinny==3.17.2 scikit-learn pandas skops (or run scripts/install-deps.sh)";

/// The interpreter: `CAPSTAN_TEST_PYTHON`, default `python3`.
pub fn python() -> String {
    std::env::var("CAPSTAN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Panics with the fix unless `python` can import every module.
pub async fn require_modules(python: &str, modules: &[&str]) {
    let code = format!("import {}", modules.join(", "));
    let out = tokio::process::Command::new(python).args(["-c", &code]).output().await.unwrap_or_else(|e| {
        panic!("cannot run {python} ({e}); the mlflow client tests need Python 3 with: {INSTALL_HINT}")
    });
    assert!(
        out.status.success(),
        "{python} cannot `{code}`; install the client: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `tests/<script>` with MLFLOW_TRACKING_URI=`tracking_uri` (and `env`), HOME in
/// `home`, no retries and no telemetry; panics with its output unless it exits 0.
/// Returns its stdout.
pub async fn run_script(script: &str, tracking_uri: &str, home: &std::path::Path, env: &[(&str, &str)]) -> String {
    let python = python();
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", script].iter().collect();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&path)
        .env("MLFLOW_TRACKING_URI", tracking_uri)
        .env_remove("MLFLOW_RUN_ID")
        .env_remove("MLFLOW_EXPERIMENT_ID")
        .env_remove("MLFLOW_EXPERIMENT_NAME")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_REGISTRY_URI")
        // Fail fast instead of retrying with back-off; no telemetry from a test.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("HOME", home)
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} ran over 600 s"))
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(2), "{script} cannot import mlflow: {INSTALL_HINT}\n{stderr}");
    assert!(out.status.success(), "{script} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    eprintln!("{stdout}{stderr}");
    stdout
}
