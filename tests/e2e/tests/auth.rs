//! `capstan up` bound beyond loopback requires an API token: generated on first start,
//! printed once, stored only as a hash; calls without it get 401 and change nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::*;

struct Up {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `capstan up --listen 0.0.0.0:PORT` and read its stdout up to the "is up" line.
fn up(data: &std::path::Path, port: u16) -> Up {
    let mut child = Command::new(capstan_bin())
        .args(["up", "--listen", &format!("0.0.0.0:{port}"), "--data-dir"])
        .arg(data)
        .env_remove("CAPSTAN_DOCKER_SOCKET")
        .env_remove("CAPSTAN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn capstan up");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "capstan up exited before it was up: {lines:?}");
        lines.push(line.trim_end().to_string());
        if line.contains("Capstan is up at") {
            break;
        }
        assert!(Instant::now() < deadline, "no 'is up' line: {lines:?}");
    }
    Up { child, lines }
}

fn status(client: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> u16 {
    let mut r = client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().expect("request").status().as_u16()
}

#[test]
fn beyond_loopback_every_call_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let first = up(&data, port);
    let token_line = first
        .lines
        .iter()
        .find(|l| l.contains("CAPSTAN_TOKEN="))
        .unwrap_or_else(|| panic!("no token printed on first start: {:?}", first.lines));
    let token = token_line.split("CAPSTAN_TOKEN=").nth(1).unwrap().trim().to_string();
    assert!(token.len() >= 32, "token too short: {token}");
    // Only the hash is kept on disk.
    let stored = std::fs::read_to_string(data.join("api-token.sha256")).unwrap();
    assert!(!stored.contains(&token), "the token itself must not be stored");

    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let list = format!("{base}/apis/capstan.dev/v1alpha1/namespaces/default/trainingjobs");
    assert_eq!(status(&http, &format!("{base}/healthz"), None), 200, "health stays open");
    assert_eq!(status(&http, &list, None), 401);
    assert_eq!(status(&http, &list, Some("wrong")), 401);
    assert_eq!(status(&http, &list, Some(&token)), 200);
    let runs = format!("{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default");
    assert_eq!(status(&http, &runs, None), 401, "the tracking API is protected too");

    // A write without the token changes nothing.
    let job = process_job("denied", 1, &["true"], "");
    let r = http.post(format!("{base}/apis/capstan.dev/v1alpha1/apply")).body(job.clone()).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    assert!(challenge.is_some_and(|c| c.starts_with("Basic ")), "browsers are asked for the token");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error_code"], "UNAUTHENTICATED", "{body}");
    // A browser sends it as the basic-auth password (any user name); the UI opens.
    let ui = http.get(format!("{base}/")).basic_auth("me", Some(&token)).send().unwrap();
    assert_eq!(ui.status().as_u16(), 200);

    // The CLI sends the token from CAPSTAN_TOKEN.
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, &job).unwrap();
    let run = |token: Option<&str>| {
        let mut c = Command::new(capstan_bin());
        c.args(["--server", &base, "apply", "-f"]).arg(&path).env_remove("CAPSTAN_TOKEN");
        if let Some(t) = token {
            c.env("CAPSTAN_TOKEN", t);
        }
        c.output().unwrap()
    };
    let denied = run(None);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"), "{denied:?}");
    let allowed = run(Some(&token));
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");

    // A restart keeps the token and prints no new one.
    drop(first);
    let second = up(&data, port);
    assert!(!second.lines.iter().any(|l| l.contains("CAPSTAN_TOKEN=")), "{:?}", second.lines);
    assert_eq!(status(&http, &list, Some(&token)), 200);
}
