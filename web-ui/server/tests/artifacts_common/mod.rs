//! Shared by the artifact proxy tests: a real server (the whole app, as `capstan server`
//! runs it) on a loopback port over a real store and artifact destination, a recorder of
//! the requests it saw, raw HTTP for requests a well-behaved client library will not send,
//! and the S3 destination of `scripts/s3-setup.sh` (moto), which fails loudly when missing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use capstan_server::{app, AppState};
use capstan_store::artifacts::ArtifactStore;
use capstan_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub store: Store,
    /// Its artifact destination.
    pub artifacts: ArtifactStore,
    /// "METHOD /path" of every request it answered, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
}

impl Server {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far that start with `prefix` ("PUT /api/...").
    pub fn seen_starting(&self, prefix: &str) -> Vec<String> {
        self.seen.lock().unwrap().iter().filter(|s| s.starts_with(prefix)).cloned().collect()
    }
}

/// Serves the whole app over a fresh SQLite store and `artifacts`; `token_sha256` turns auth on.
pub async fn serve(artifacts: ArtifactStore, token_sha256: Option<String>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("capstan.db")).await.unwrap();
    let state = AppState {
        store: store.clone(),
        data_dir: dir.path().to_path_buf(),
        wake: Arc::new(tokio::sync::Notify::new()),
        token_sha256,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        artifacts: artifacts.clone(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let router = app(state).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let recorder = recorder.clone();
        async move {
            recorder.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
            next.run(req).await
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { addr, store, artifacts, seen, dir }
}

/// The S3 destination `eval "$(scripts/s3-setup.sh DIR)"` sets up (moto), under a prefix
/// no other test uses. Panics, never skips, without it.
pub async fn s3_destination(prefix: &str) -> ArtifactStore {
    let hint = "the S3 artifact tests need an S3-compatible server: run\n  \
                eval \"$(scripts/s3-setup.sh /tmp/capstan-s3)\"\nin this shell (scripts/test.sh does it), then the tests again";
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(!endpoint.trim().is_empty(), "AWS_ENDPOINT_URL is not set: {hint}");
    let bucket = std::env::var("CAPSTAN_TEST_S3_BUCKET").unwrap_or_default();
    assert!(!bucket.trim().is_empty(), "CAPSTAN_TEST_S3_BUCKET is not set: {hint}");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let url = format!("s3://{bucket}/{prefix}-{}-{nanos:x}", std::process::id());
    let store = ArtifactStore::from_destination(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    store.check().await.unwrap_or_else(|e| panic!("{url} does not answer at {endpoint}: {e}\n{hint}"));
    store
}

/// A raw HTTP/1.1 exchange (no client library normalising the path): status and body.
pub async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_length = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The interpreter with the mlflow client (`CAPSTAN_TEST_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("CAPSTAN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
