//! End-to-end: run artifacts through the real `capstan` binary. A finished TrainingJob's
//! replica logs (every attempt) become artifacts of its tracking run under
//! `logs/attempt-<n>/replica-<i>.log`, in the default destination `<data-dir>/artifacts`;
//! `--artifacts-destination s3://...` stores through S3 (moto from `scripts/s3-setup.sh`: the
//! test fails, never skips, without AWS_ENDPOINT_URL); a destination this build cannot use
//! stops `capstan up` with a clear error.
//!
//!     cargo build -p capstan && cargo test -p capstan-e2e --test artifacts

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::*;
use serde_json::Value;

const A: &str = "/api/2.0/mlflow-artifacts/artifacts";

/// The run's artifact root (`<experiment>/<run>/artifacts`) from runs/get.
fn artifact_root(capstan: &Capstan, job: &Value) -> String {
    let run_id = job["status"]["trackingRunId"].as_str().unwrap_or_else(|| panic!("no trackingRunId: {job}"));
    let (status, body) = capstan.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
    assert_eq!(status, 200, "runs/get: {body}");
    let uri = body["run"]["info"]["artifact_uri"].as_str().unwrap_or_else(|| panic!("no artifact_uri: {body}"));
    uri.strip_prefix("mlflow-artifacts:/").unwrap_or_else(|| panic!("artifact_uri {uri}")).to_string()
}

/// Names in an artifact folder (files and folders).
fn listing(capstan: &Capstan, dir: &str) -> Vec<String> {
    let (status, body) = capstan.get(&format!("{A}?path={dir}"));
    assert_eq!(status, 200, "listing {dir}: {body}");
    body["files"].as_array().cloned().unwrap_or_default().iter().map(|f| f["path"].as_str().unwrap().into()).collect()
}

/// Waits (bounded) until the folder lists exactly `want` (the upload runs after the phase
/// changes, in the background).
fn wait_listing(capstan: &Capstan, dir: &str, want: &[&str]) {
    wait_until(
        JOB_TIMEOUT,
        &format!("artifact folder {dir} to list {want:?}"),
        || listing(capstan, dir) == want,
        || format!("{:?}\n{}", listing(capstan, dir), capstan.log_tail(40)),
    );
}

fn artifact_text(capstan: &Capstan, path: &str) -> String {
    match capstan.get(&format!("{A}/{path}")) {
        (200, Value::String(s)) => s,
        (status, body) => panic!("GET artifact {path}: {status} {body}"),
    }
}

#[test]
fn a_finished_jobs_replica_logs_become_run_artifacts() {
    let capstan = Capstan::start();
    let name = unique_name("logs-ok");
    let script = "echo \"hello from replica $CAPSTAN_REPLICA_INDEX\"; echo second line";
    capstan.apply(&process_job(&name, 2, &["/bin/sh", "-c", script], ""));
    let j = capstan.wait_finished(&name);
    assert_eq!(phase(&j), "Succeeded", "{j}");
    let root = artifact_root(&capstan, &j);

    wait_listing(&capstan, &root, &["logs"]);
    wait_listing(&capstan, &format!("{root}/logs"), &["attempt-1"]);
    wait_listing(&capstan, &format!("{root}/logs/attempt-1"), &["replica-0.log", "replica-1.log"]);
    for i in 0..2u32 {
        let stored = artifact_text(&capstan, &format!("{root}/logs/attempt-1/replica-{i}.log"));
        assert!(stored.contains(&format!("hello from replica {i}\nsecond line")), "replica-{i}.log: {stored:?}");
        assert_eq!(stored, capstan.logs(&name, i, Some(1)), "the artifact differs from `capstan logs`");
    }
    // Default destination: plain files under <data-dir>/artifacts.
    let on_disk = capstan.data_dir().join("artifacts").join(&root).join("logs/attempt-1/replica-0.log");
    assert!(std::fs::read_to_string(&on_disk).unwrap().contains("hello from replica 0"), "{}", on_disk.display());
    let (_, events) = capstan.get(&format!("{}/events", Capstan::job_path(&name)));
    assert!(events.to_string().contains("LogsUploaded"), "no LogsUploaded event: {events}");
}

#[test]
fn every_attempt_of_a_failed_job_is_kept() {
    let capstan = Capstan::start();
    let name = unique_name("logs-fail");
    capstan.apply(&process_job(&name, 1, &["/bin/sh", "-c", "echo attempt; exit 3"], "backoffLimit: 1"));
    let j = capstan.wait_finished(&name);
    assert_eq!(phase(&j), "Failed", "{j}");
    let root = artifact_root(&capstan, &j);
    wait_listing(&capstan, &format!("{root}/logs"), &["attempt-1", "attempt-2"]);
    for a in 1..=2u32 {
        wait_listing(&capstan, &format!("{root}/logs/attempt-{a}"), &["replica-0.log"]);
        let stored = artifact_text(&capstan, &format!("{root}/logs/attempt-{a}/replica-0.log"));
        assert_eq!(stored, capstan.logs(&name, 0, Some(a)), "attempt {a}");
        assert!(stored.contains("attempt"), "attempt {a}: {stored:?}");
    }
}

/// `capstan server` with `args`, killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(capstan_bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(extra)
        .env_remove("CAPSTAN_ARTIFACTS_DESTINATION")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn capstan server");
    let server = Server { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        if http.get(format!("{}/readyz", server.url)).send().map(|r| r.status().is_success()).unwrap_or(false) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "capstan server did not become ready: {}",
            std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(POLL);
    }
}

#[test]
fn artifacts_destination_on_s3() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let bucket = std::env::var("CAPSTAN_TEST_S3_BUCKET").unwrap_or_default();
    assert!(
        !endpoint.is_empty() && !bucket.is_empty(),
        "AWS_ENDPOINT_URL and CAPSTAN_TEST_S3_BUCKET are not set: run\n  eval \"$(scripts/s3-setup.sh /tmp/capstan-s3)\"\nthen the tests again"
    );
    let prefix = unique_name("e2e");
    let server = start_server(&["--artifacts-destination", &format!("s3://{bucket}/{prefix}")]);
    let http = reqwest::blocking::Client::new();
    let body = pseudo_random_bytes(7, 3 * 1024 * 1024 + 17);
    let r = http.put(format!("{}{A}/1/r/artifacts/model/weights.bin", server.url)).body(body.clone()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    let got = http.get(format!("{}{A}/1/r/artifacts/model/weights.bin", server.url)).send().unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert!(got.bytes().unwrap().as_ref() == body.as_slice(), "bytes differ after the round trip");
    // The object is in the bucket, under the prefix (moto answers unsigned listings).
    let listed = http.get(format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}/")).send().unwrap().text().unwrap();
    assert!(listed.contains(&format!("<Key>{prefix}/1/r/artifacts/model/weights.bin</Key>")), "{listed}");
    assert!(!server._dir.path().join("data/artifacts/1").exists(), "it was stored locally instead");
}

#[test]
fn an_unusable_artifacts_destination_stops_capstan_up_with_a_clear_error() {
    for (dest, want) in [
        ("gs://bucket/x", "feature `gcp`"),
        ("az://container/x", "feature `azure`"),
        ("ftp://host/x", "unsupported scheme"),
        ("file://relative", "absolute path"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(capstan_bin());
        cmd.args(["up", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
            .arg(dir.path())
            .args(["--artifacts-destination", dest])
            .env_remove("CAPSTAN_DOCKER_SOCKET");
        let out = run_bounded(cmd, Duration::from_secs(60), &format!("capstan up --artifacts-destination {dest}"));
        assert_ne!(out.code, 0, "capstan up accepted {dest}: {}", out.stdout);
        assert!(
            out.stderr.contains(want) && out.stderr.contains(dest),
            "{dest}: stderr lacks {want:?}:\n{}",
            out.stderr
        );
    }
}
