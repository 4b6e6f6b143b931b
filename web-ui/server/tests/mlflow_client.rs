//! The real `mlflow` Python client against the MLflow-compatible API: starts the router on
//! a real store, creates a run through the store, and runs `mlflow_client_smoke.py` (which
//! logs through the fluent API and reads everything back) with MLFLOW_TRACKING_URI and
//! MLFLOW_RUN_ID set. Needs `pip install mlflow-skinny==3.17.2` (scripts/install-deps.sh
//! does it); without it the test fails, it never skips. `CAPSTAN_TEST_PYTHON` picks the
//! interpreter (default `python3`); `SMOKE_TRACE_HTTP=1` logs every request the client makes.

use std::path::PathBuf;
use std::time::Duration;

use capstan_store::test_db::{Backend, TestDb};

const INSTALL_HINT: &str = "pip install mlflow-skinny==3.17.2 (or run scripts/install-deps.sh)";

fn python() -> String {
    std::env::var("CAPSTAN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Fail (not skip) with the fix when the client is missing.
async fn require_mlflow(python: &str) {
    let out = tokio::process::Command::new(python)
        .args(["-c", "import mlflow; print(mlflow.__version__)"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}); the mlflow client test needs Python 3 with {INSTALL_HINT}")
        });
    assert!(
        out.status.success(),
        "{python} cannot import mlflow; install the client: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("mlflow {}", String::from_utf8_lossy(&out.stdout).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_python_client_logs_and_reads_back() {
    let python = python();
    require_mlflow(&python).await;

    let dir = tempfile::tempdir().unwrap();
    // SQLite as this target, PostgreSQL as `mlflow_client_postgres` (which includes this file).
    let db = TestDb::new(Backend::of_name(module_path!())).await;
    let store = db.store.clone();
    let experiment_id = store.get_or_create_experiment("smoke").await.unwrap();
    let run = store
        .create_run(&experiment_id, "smoke-run", chrono_now_ms(), &[("mlflow.runName".into(), "smoke-run".into())])
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = capstan_server::mlflow::router(store.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "mlflow_client_smoke.py"].iter().collect();
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("MLFLOW_TRACKING_URI", format!("http://{addr}"))
        .env("MLFLOW_RUN_ID", &run.run_id)
        .env_remove("MLFLOW_EXPERIMENT_ID")
        .env_remove("MLFLOW_EXPERIMENT_NAME")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        // Fail fast instead of retrying with back-off; no telemetry from a test.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("HOME", dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .expect("the smoke script ran over 300 s")
        .expect("run the smoke script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(2), "the smoke script cannot import mlflow: {INSTALL_HINT}\n{stderr}");
    assert!(
        out.status.success(),
        "mlflow client smoke test failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    eprintln!("{stdout}{stderr}");

    // What the client wrote is in the store.
    let stored = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, "FINISHED");
    assert!(stored.params.contains(&("lr".to_owned(), "0.1".to_owned())));
    let loss = store.metric_history(&run.run_id, "loss").await.unwrap();
    assert_eq!(loss.iter().map(|p| (p.step, p.value)).collect::<Vec<_>>(), [(1, 0.5), (2, 0.25)]);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
