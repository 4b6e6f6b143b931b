//! The real `mlflow` Python client against the artifact proxy (`mlflow-artifacts`), with a
//! local destination and with S3 (moto, started by `scripts/s3-setup.sh`): runs
//! `artifacts_client.py` (log_artifact, log_artifacts with a nested folder, log_text,
//! log_dict, a 20 MB file, nested listings, downloads compared byte for byte, overwrite,
//! delete), then checks the destination itself holds exactly what the client reported.
//! Needs `pip install mlflow-skinny==3.17.2`; the S3 test needs AWS_ENDPOINT_URL and
//! CAPSTAN_TEST_S3_BUCKET (`eval "$(scripts/s3-setup.sh /tmp/capstan-s3)"`). Without them the
//! tests fail, they never skip.

mod artifacts_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use artifacts_common::{now_ms, python, s3_destination, serve, Server};
use capstan_store::artifacts::{ArtifactPath, ArtifactStore};
use sha2::{Digest, Sha256};

const INSTALL_HINT: &str = "pip install mlflow-skinny==3.17.2 (or run scripts/install-deps.sh)";

/// Runs the client script against `server`; returns the run's artifact root and the
/// sha256 of every artifact the client downloaded at the end.
async fn run_client_suite(server: &Server) -> (ArtifactPath, BTreeMap<String, String>) {
    let experiment_id = server.store.get_or_create_experiment("artifacts").await.unwrap();
    let run = server
        .store
        .create_run(&experiment_id, "artifacts-run", now_ms(), &[("mlflow.runName".into(), "artifacts-run".into())])
        .await
        .unwrap();
    assert_eq!(run.artifact_uri, format!("mlflow-artifacts:/{experiment_id}/{}/artifacts", run.run_id));

    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "artifacts_client.py"].iter().collect();
    let home = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(python())
        .arg(&script)
        .env("MLFLOW_TRACKING_URI", server.url())
        .env("MLFLOW_RUN_ID", &run.run_id)
        .env_remove("MLFLOW_EXPERIMENT_ID")
        .env_remove("MLFLOW_EXPERIMENT_NAME")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        // Have the client try a multipart upload for files over 1 MB: the server declines
        // with MLflow's "not supported" answer and the client falls back to one streamed PUT.
        .env("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
        .env("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1048576")
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("HOME", home.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .expect("the artifacts script ran over 300 s")
        .expect("run the artifacts script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(2), "the artifacts script cannot import mlflow: {INSTALL_HINT}\n{stderr}");
    assert!(
        out.status.success(),
        "mlflow artifacts script failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from the script:\n{stdout}\n{stderr}"));
    let sums: BTreeMap<String, String> = serde_json::from_value(report["sha256"].clone()).unwrap();

    // The client tried a multipart upload of the big file (to its folder; the file name
    // goes in the body), was declined, and PUT it.
    let mpu = server.seen_starting("POST /api/2.0/mlflow-artifacts/mpu/create/");
    assert!(mpu.iter().any(|r| r.ends_with("/artifacts/blobs")), "no multipart attempt: {mpu:?}");
    let puts = server.seen_starting("PUT /api/2.0/mlflow-artifacts/artifacts/");
    assert!(puts.iter().any(|r| r.ends_with("/artifacts/blobs/big.bin")), "no PUT of big.bin: {puts:?}");

    let root = ArtifactPath::from_artifact_uri(&run.artifact_uri).unwrap();
    (root, sums)
}

/// The destination holds exactly the files the client downloaded, with the same bytes.
async fn assert_destination_matches(artifacts: &ArtifactStore, root: &ArtifactPath, sums: &BTreeMap<String, String>) {
    let stored = artifacts.list_recursive(root).await.unwrap();
    let names: Vec<&str> = stored.iter().map(|(p, _)| p.as_str()).collect();
    let want: Vec<&str> = sums.keys().map(String::as_str).collect();
    assert_eq!(names, want, "the destination holds other files than the client downloaded");
    assert!(names.contains(&"blobs/big.bin") && names.contains(&"tree/sub/deeper/c.bin"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("nested/")), "the deleted folder is still there: {names:?}");
    for (rel, size) in &stored {
        let bytes = artifacts.get_bytes(&root.join(rel).unwrap()).await.unwrap();
        assert_eq!(bytes.len() as u64, *size, "{rel}: listed size");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sums[rel], "{rel}: stored bytes differ from the download");
    }
    let big = stored.iter().find(|(p, _)| p == "blobs/big.bin").unwrap().1;
    assert_eq!(big, 20 * 1024 * 1024 + 12345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_client_logs_lists_and_downloads_artifacts_on_a_local_destination() {
    let dest = tempfile::tempdir().unwrap();
    let artifacts = ArtifactStore::local(&dest.path().join("artifacts")).unwrap();
    let server = serve(artifacts.clone(), None).await;
    let (root, sums) = run_client_suite(&server).await;
    assert_destination_matches(&artifacts, &root, &sums).await;
    // Plain files at <destination>/<experiment>/<run>/artifacts/..., nothing beside them.
    let on_disk = dest.path().join("artifacts").join(root.to_string()).join("blobs/big.bin");
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), 20 * 1024 * 1024 + 12345);
    let top: Vec<String> =
        std::fs::read_dir(dest.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(top, ["artifacts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_client_logs_lists_and_downloads_artifacts_on_s3() {
    let artifacts = s3_destination("client-suite").await;
    let server = serve(artifacts.clone(), None).await;
    let (root, sums) = run_client_suite(&server).await;
    assert_destination_matches(&artifacts, &root, &sums).await;
}
