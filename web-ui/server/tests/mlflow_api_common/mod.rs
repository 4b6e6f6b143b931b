//! Shared by the tracking API suites (`mlflow_api_search`, `mlflow_api_registry`): the
//! MLflow router over a real store, on SQLite or PostgreSQL (`capstan_store::test_db`; the
//! PostgreSQL variants fail, never skip, without `CAPSTAN_TEST_POSTGRES_URL`), spoken to
//! over real HTTP.

#![allow(dead_code)]

use capstan_store::test_db::{Backend, TestDb};
use capstan_store::Store;
use reqwest::Method;
use serde_json::{json, Value};

/// Runs each listed `async fn(Backend)` as two tests, `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(capstan_store::test_db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(capstan_store::test_db::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A running MLflow API over its own database.
pub struct Api {
    pub base: String,
    pub db: TestDb,
    pub http: reqwest::Client,
}

pub async fn start(backend: Backend) -> Api {
    let db = TestDb::new(backend).await;
    let app = capstan_server::mlflow::router(db.store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Api { base: format!("http://{addr}"), db, http: reqwest::Client::new() }
}

impl Api {
    pub fn store(&self) -> &Store {
        &self.db.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.base)
    }

    /// Any request; a GET sends `body`'s fields as a query string (repeating list items).
    pub async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        self.call_as(method, path, body, None).await
    }

    /// A request with HTTP basic auth as `user`.
    pub async fn call_as(&self, method: Method, path: &str, body: Value, user: Option<&str>) -> (u16, Value) {
        let mut req = if method == Method::GET {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for (k, v) in body.as_object().cloned().unwrap_or_default() {
                match v {
                    Value::Array(items) => pairs.extend(items.iter().map(|i| (k.clone(), plain(i)))),
                    other => pairs.push((k.clone(), plain(&other))),
                }
            }
            let url = reqwest::Url::parse_with_params(&self.url(path), &pairs).unwrap();
            self.http.request(method.clone(), url)
        } else {
            self.http.request(method.clone(), self.url(path)).json(&body)
        };
        if let Some(user) = user {
            req = req.basic_auth(user, Some("pw"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text:?}"));
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, body).await
    }

    pub async fn get(&self, path: &str, query: Value) -> (u16, Value) {
        self.call(Method::GET, path, query).await
    }

    /// A request that must answer 200.
    pub async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), path, body.clone()).await;
        assert_eq!(status, 200, "{method} {path} {body}: {answer}");
        answer
    }

    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        self.ok(Method::POST, path, body).await
    }

    pub async fn get_ok(&self, path: &str, query: Value) -> Value {
        self.ok(Method::GET, path, query).await
    }

    pub async fn experiment(&self, name: &str) -> String {
        let answer = self.post_ok("experiments/create", json!({ "name": name })).await;
        answer["experiment_id"].as_str().unwrap().to_owned()
    }

    pub async fn run(&self, experiment_id: &str, name: &str, start_time: i64) -> String {
        let answer = self
            .post_ok(
                "runs/create",
                json!({ "experiment_id": experiment_id, "run_name": name, "start_time": start_time }),
            )
            .await;
        answer["run"]["info"]["run_id"].as_str().unwrap().to_owned()
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Asserts an MLflow error answer.
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error_code"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.1);
}

/// The message of an error answer.
pub fn message(answer: &(u16, Value)) -> String {
    answer.1["message"].as_str().unwrap_or_default().to_owned()
}

/// `value` of the `{key, value}` item with `key`.
pub fn kv(list: &Value, key: &str) -> Option<String> {
    list.as_array()?.iter().find(|t| t["key"] == key).map(|t| t["value"].as_str().unwrap_or_default().to_owned())
}
