//! HTTP client of the resource API.

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use serde_json::Value;
use std::io::Write;

const PREFIX: &str = "/apis/capstan.dev/v1alpha1";

/// A client of one server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client { base: base.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the Capstan server at {} (is `capstan up` running?)", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        if !status.is_success() {
            let msg = v.get("error").and_then(Value::as_str).map(String::from).unwrap_or_else(|| v.to_string());
            if let Some(errors) = v.get("errors").and_then(Value::as_array) {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        format!(
                            "  document {}, line {}: {}: {}",
                            e["document"].as_u64().unwrap_or(0) + 1,
                            e["line"].as_u64().map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                            e["path"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                bail!("server refused ({status}):\n{}", lines.join("\n"));
            }
            bail!("{msg} ({status})");
        }
        Ok(v)
    }

    fn path(plural: &str, ns: Option<&str>, name: Option<&str>) -> String {
        let mut p = match ns {
            Some(ns) => format!("{PREFIX}/namespaces/{ns}/{plural}"),
            None => format!("{PREFIX}/{plural}"),
        };
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
        }
        p
    }

    pub async fn apply(&self, body: Vec<u8>) -> Result<Value> {
        self.send(
            self.req(reqwest::Method::POST, &format!("{PREFIX}/apply"))
                .header("content-type", "application/yaml")
                .body(body),
        )
        .await
    }

    /// POST a JSON body to `path` (from the server root, e.g. `/api/v1/...`).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.req(reqwest::Method::POST, path).json(body)).await
    }

    /// DELETE `path` (from the server root).
    pub async fn delete_path(&self, path: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }

    /// GET `path` (from the server root).
    pub async fn get_path(&self, path: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn list(&self, plural: &str, ns: Option<&str>) -> Result<Value> {
        self.send(self.req(reqwest::Method::GET, &Self::path(plural, ns, None))).await
    }

    pub async fn get_one(&self, plural: &str, ns: Option<&str>, name: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::GET, &Self::path(plural, ns, Some(name)))).await
    }

    pub async fn delete(&self, plural: &str, ns: Option<&str>, name: &str) -> Result<Value> {
        self.send(self.req(reqwest::Method::DELETE, &Self::path(plural, ns, Some(name)))).await
    }

    pub async fn events(&self, ns: &str, name: &str) -> Result<Value> {
        self.send(
            self.req(reqwest::Method::GET, &format!("{}/events", Self::path("trainingjobs", Some(ns), Some(name)))),
        )
        .await
    }

    /// Print a replica's log to stdout, streaming when following.
    pub async fn logs(&self, ns: &str, name: &str, replica: u32, attempt: Option<u32>, follow: bool) -> Result<()> {
        let mut path =
            format!("{}/log?replica={replica}&follow={follow}", Self::path("trainingjobs", Some(ns), Some(name)));
        if let Some(a) = attempt {
            path.push_str(&format!("&attempt={a}"));
        }
        let resp = self
            .req(reqwest::Method::GET, &path)
            .send()
            .await
            .with_context(|| format!("cannot reach the Capstan server at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            bail!("{} ({status})", body.get("error").and_then(Value::as_str).unwrap_or("request failed"));
        }
        let mut stream = resp.bytes_stream();
        let mut out = std::io::stdout();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
            out.flush()?;
        }
        Ok(())
    }
}
