//! The MLflow-compatible tracking API over real HTTP, against a real store: every endpoint,
//! its wire shapes, and MLflow's error codes.
//!
//! The suite runs twice: as this test target on SQLite, and as `mlflow_api_postgres` (which
//! includes this file) on PostgreSQL (`capstan_store::test_db`; it fails, never skips,
//! without `CAPSTAN_TEST_POSTGRES_URL`).

use capstan_store::test_db::{Backend, TestDb};
use capstan_store::Store;
use serde_json::{json, Value};

struct Server {
    base: String,
    store: Store,
    http: reqwest::Client,
    _db: TestDb,
}

/// The router over a fresh database of the backend this target stands for.
async fn start() -> Server {
    let db = TestDb::new(Backend::of_name(module_path!())).await;
    let store = db.store.clone();
    let app = capstan_server::mlflow::router(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum_serve(listener, app).await });
    Server { base: format!("http://{addr}"), store, http: reqwest::Client::new(), _db: db }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app).await.unwrap();
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.base)
    }

    async fn answer(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::answer(self.http.post(self.url(path)).json(&body).send().await.unwrap()).await
    }

    async fn post_raw(&self, path: &str, body: &str, content_type: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        Self::answer(self.http.get(self.url(path_and_query)).send().await.unwrap()).await
    }

    /// POST that must succeed.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// GET that must succeed.
    async fn get_ok(&self, path_and_query: &str) -> Value {
        let (status, answer) = self.get(path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {answer}");
        answer
    }

    async fn new_run(&self) -> String {
        let exp = self.store.get_or_create_experiment("tests").await.unwrap();
        let run = self.ok("runs/create", json!({"experiment_id": exp, "start_time": 1000})).await;
        run["run"]["info"]["run_id"].as_str().unwrap().to_owned()
    }

    async fn run(&self, run_id: &str) -> Value {
        self.get_ok(&format!("runs/get?run_id={run_id}")).await["run"].clone()
    }
}

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error_code"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.1);
}

fn message(answer: &(u16, Value)) -> String {
    answer.1["message"].as_str().unwrap_or_default().to_owned()
}

fn kv(list: &Value, key: &str) -> Option<String> {
    list.as_array()?.iter().find(|item| item["key"] == key).map(|item| item["value"].as_str().unwrap().to_owned())
}

fn metric<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("no metric {key} in {run}"))
}

#[tokio::test]
async fn experiments_create_get_and_get_by_name() {
    let s = start().await;
    let created = s.ok("experiments/create", json!({"name": "exp-a", "tags": [{"key": "team", "value": "ml"}]})).await;
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "{created}");

    let got = s.get_ok(&format!("experiments/get?experiment_id={id}")).await;
    let e = &got["experiment"];
    assert_eq!(e["experiment_id"], id.as_str());
    assert_eq!(e["name"], "exp-a");
    assert_eq!(e["lifecycle_stage"], "active");
    assert!(e["artifact_location"].as_str().unwrap().contains(&id), "{e}");
    assert!(e["creation_time"].as_i64().unwrap() > 0);
    assert!(e["last_update_time"].as_i64().unwrap() > 0);
    assert_eq!(kv(&e["tags"], "team").as_deref(), Some("ml"));

    let by_name = s.get_ok("experiments/get-by-name?experiment_name=exp-a").await;
    assert_eq!(by_name["experiment"], *e);
    // Names with spaces and odd characters travel in the query string.
    let odd = s.ok("experiments/create", json!({"name": "my exp/v1 & more"})).await;
    let by_name = s.get_ok("experiments/get-by-name?experiment_name=my%20exp%2Fv1%20%26%20more").await;
    assert_eq!(by_name["experiment"]["experiment_id"], odd["experiment_id"]);

    assert_error(&s.post("experiments/create", json!({"name": "exp-a"})).await, 400, "RESOURCE_ALREADY_EXISTS");
    assert_error(&s.post("experiments/create", json!({})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&s.post("experiments/create", json!({"name": ""})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&s.post("experiments/create", json!({"name": 7})).await, 400, "INVALID_PARAMETER_VALUE");
    let bad_tags = s.post("experiments/create", json!({"name": "x", "tags": {"team": "ml"}})).await;
    assert_error(&bad_tags, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad_tags).contains("tags"), "{}", bad_tags.1);

    assert_error(&s.get("experiments/get?experiment_id=987654").await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(&s.get("experiments/get?experiment_id=abc").await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(&s.get("experiments/get").await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&s.get("experiments/get-by-name?experiment_name=nope").await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(&s.get("experiments/get-by-name").await, 400, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn runs_create_returns_mlflow_s_run_shape() {
    let s = start().await;
    let exp = s.ok("experiments/create", json!({"name": "e"})).await["experiment_id"].clone();
    let answer = s
        .ok(
            "runs/create",
            json!({
                "experiment_id": exp,
                "user_id": "alice",
                "start_time": "1700000000000",
                "run_name": "first",
                "tags": [{"key": "mlflow.source.name", "value": "train.py"}],
                "some_future_field": true,
            }),
        )
        .await;
    let run = &answer["run"];
    let info = &run["info"];
    let run_id = info["run_id"].as_str().unwrap();
    assert_eq!(run_id.len(), 32);
    assert!(run_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(info["run_uuid"], run_id);
    assert_eq!(info["run_name"], "first");
    assert_eq!(info["experiment_id"], exp);
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["status"], "RUNNING");
    assert_eq!(info["start_time"], 1_700_000_000_000_i64);
    assert!(info.get("end_time").is_none(), "{info}");
    assert_eq!(info["lifecycle_stage"], "active");
    assert!(info["artifact_uri"].as_str().unwrap().contains(run_id), "{info}");
    assert_eq!(run["data"]["metrics"], json!([]));
    assert_eq!(run["data"]["params"], json!([]));
    assert_eq!(kv(&run["data"]["tags"], "mlflow.runName").as_deref(), Some("first"));
    assert_eq!(kv(&run["data"]["tags"], "mlflow.source.name").as_deref(), Some("train.py"));
    assert_eq!(kv(&run["data"]["tags"], "mlflow.user").as_deref(), Some("alice"));
    assert_eq!(run["inputs"], json!({}));

    // runs/get returns the same run.
    let got = s.run(run_id).await;
    assert_eq!(got["info"], *info);
    assert_eq!(got["data"]["tags"].as_array().unwrap().len(), 3);

    // No name: an MLflow-style generated one, also as the mlflow.runName tag.
    let before = chrono_now_ms();
    let run = s.ok("runs/create", json!({"experiment_id": exp})).await["run"].clone();
    let name = run["info"]["run_name"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = name.split('-').collect();
    assert_eq!(parts.len(), 3, "{name}");
    assert!(parts[2].parse::<u16>().unwrap() < 1000, "{name}");
    assert_eq!(kv(&run["data"]["tags"], "mlflow.runName"), Some(name));
    assert!(run["info"]["start_time"].as_i64().unwrap() >= before, "start_time defaults to now");
    assert_eq!(run["info"]["user_id"], "");

    // The name may come as the tag alone.
    let run = s
        .ok("runs/create", json!({"experiment_id": exp, "tags": [{"key": "mlflow.runName", "value": "tagged"}]}))
        .await;
    assert_eq!(run["run"]["info"]["run_name"], "tagged");
    // ... but not as two different names.
    let both = s
        .post(
            "runs/create",
            json!({"experiment_id": exp, "run_name": "a", "tags": [{"key": "mlflow.runName", "value": "b"}]}),
        )
        .await;
    assert_error(&both, 400, "INVALID_PARAMETER_VALUE");

    assert_error(&s.post("runs/create", json!({"experiment_id": "424242"})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(
        &s.post("runs/create", json!({"experiment_id": exp, "start_time": "soon"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.post("runs/create", json!({"experiment_id": exp, "tags": [{"value": "v"}]})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn runs_create_without_experiment_goes_to_default() {
    let s = start().await;
    let a = s.ok("runs/create", json!({})).await;
    // "0" is the mlflow client's default experiment id; MLflow servers pre-create it.
    let b = s.ok("runs/create", json!({"experiment_id": "0"})).await;
    let default = s.store.get_experiment_by_name("Default").await.unwrap().expect("Default experiment");
    assert_eq!(a["run"]["info"]["experiment_id"], default.experiment_id.as_str());
    assert_eq!(b["run"]["info"]["experiment_id"], default.experiment_id.as_str());
}

#[tokio::test]
async fn runs_get_accepts_run_uuid_and_reports_missing_runs() {
    let s = start().await;
    let run_id = s.new_run().await;
    let by_uuid = s.get_ok(&format!("runs/get?run_uuid={run_id}")).await;
    assert_eq!(by_uuid["run"]["info"]["run_id"], run_id.as_str());
    let unknown = s.get("runs/get?run_id=0123456789abcdef0123456789abcdef").await;
    assert_error(&unknown, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(message(&unknown).contains("0123456789abcdef0123456789abcdef"));
    assert_error(&s.get("runs/get").await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&s.get("runs/get?run_id=").await, 400, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn runs_update_sets_status_end_time_and_name() {
    let s = start().await;
    let run_id = s.new_run().await;
    let answer = s.ok("runs/update", json!({"run_id": run_id, "status": "FINISHED", "end_time": "5000"})).await;
    let info = &answer["run_info"];
    assert_eq!(info["run_id"], run_id.as_str());
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["end_time"], 5000);
    assert_eq!(info["start_time"], 1000);

    // run_uuid works too; a rename also moves the mlflow.runName tag.
    let answer = s.ok("runs/update", json!({"run_uuid": run_id, "run_name": "renamed"})).await;
    assert_eq!(answer["run_info"]["run_name"], "renamed");
    assert_eq!(answer["run_info"]["status"], "FINISHED", "status unchanged");
    let run = s.run(&run_id).await;
    assert_eq!(run["info"]["run_name"], "renamed");
    assert_eq!(kv(&run["data"]["tags"], "mlflow.runName").as_deref(), Some("renamed"));
    assert_eq!(run["info"]["end_time"], 5000);

    // The enum's number is protobuf JSON too (KILLED = 5).
    let answer = s.ok("runs/update", json!({"run_id": run_id, "status": 5})).await;
    assert_eq!(answer["run_info"]["status"], "KILLED");

    let bad = s.post("runs/update", json!({"run_id": run_id, "status": "DONE"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("FINISHED"), "the message lists the valid statuses: {}", bad.1);
    assert_error(
        &s.post("runs/update", json!({"run_id": run_id, "end_time": 1.5})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(&s.post("runs/update", json!({"status": "FINISHED"})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &s.post("runs/update", json!({"run_id": "0123456789abcdef0123456789abcdef", "status": "FINISHED"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
}

#[tokio::test]
async fn log_metric_param_and_tag() {
    let s = start().await;
    let run_id = s.new_run().await;
    s.ok("runs/log-metric", json!({"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 10, "step": 1})).await;
    // int64 as strings, run_uuid, step defaulting to 0.
    s.ok("runs/log-metric", json!({"run_uuid": run_id, "key": "acc", "value": 0.75, "timestamp": "20"})).await;
    s.ok("runs/log-metric", json!({"run_id": run_id, "key": "loss", "value": "0.25", "timestamp": "30", "step": "2"}))
        .await;
    s.ok("runs/log-parameter", json!({"run_id": run_id, "key": "lr", "value": "0.1"})).await;
    s.ok("runs/log-parameter", json!({"run_id": run_id, "key": "lr", "value": "0.1"})).await; // same value: fine
    s.ok("runs/set-tag", json!({"run_id": run_id, "key": "t", "value": "v"})).await;
    s.ok("runs/set-tag", json!({"run_uuid": run_id, "key": "t", "value": "w"})).await; // tags change

    let run = s.run(&run_id).await;
    assert_eq!(metric(&run, "loss"), &json!({"key": "loss", "value": 0.25, "timestamp": 30, "step": 2}));
    assert_eq!(metric(&run, "acc"), &json!({"key": "acc", "value": 0.75, "timestamp": 20, "step": 0}));
    assert_eq!(run["data"]["params"], json!([{"key": "lr", "value": "0.1"}]));
    assert_eq!(kv(&run["data"]["tags"], "t").as_deref(), Some("w"));

    // Params are immutable: the message names the key and both values.
    let changed = s.post("runs/log-parameter", json!({"run_id": run_id, "key": "lr", "value": "0.2"})).await;
    assert_error(&changed, 400, "INVALID_PARAMETER_VALUE");
    let m = message(&changed);
    assert!(m.contains("lr") && m.contains("0.1") && m.contains("0.2"), "{m}");

    // Setting the mlflow.runName tag renames the run (as MLflow does).
    s.ok("runs/set-tag", json!({"run_id": run_id, "key": "mlflow.runName", "value": "via-tag"})).await;
    assert_eq!(s.run(&run_id).await["info"]["run_name"], "via-tag");

    let metric_errors = [
        json!({"run_id": run_id, "key": "loss", "value": 1.0}), // no timestamp
        json!({"run_id": run_id, "key": "loss", "timestamp": 1}), // no value
        json!({"run_id": run_id, "value": 1.0, "timestamp": 1}), // no key
        json!({"key": "loss", "value": 1.0, "timestamp": 1}),   // no run
        json!({"run_id": run_id, "key": "loss", "value": "fast", "timestamp": 1}), // not a number
        json!({"run_id": run_id, "key": "loss", "value": true, "timestamp": 1}), // not a number
        json!({"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": "noon"}), // not an int64
        json!({"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": 1, "step": 0.5}),
        json!({"run_id": run_id, "key": "k".repeat(251), "value": 1.0, "timestamp": 1}), // key too long
    ];
    for body in metric_errors {
        let answer = s.post("runs/log-metric", body.clone()).await;
        assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
    }
    s.ok("runs/log-metric", json!({"run_id": run_id, "key": "k".repeat(250), "value": 1.0, "timestamp": 1})).await;

    let long_value =
        s.post("runs/log-parameter", json!({"run_id": run_id, "key": "big", "value": "x".repeat(6001)})).await;
    assert_error(&long_value, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&long_value).contains("6000"), "{}", long_value.1);
    s.ok("runs/log-parameter", json!({"run_id": run_id, "key": "big", "value": "x".repeat(6000)})).await;
    assert_error(
        &s.post("runs/log-parameter", json!({"run_id": run_id, "value": "1"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.post("runs/log-parameter", json!({"run_id": run_id, "key": "p", "value": 1})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.post("runs/set-tag", json!({"run_id": run_id, "key": "t".repeat(251), "value": "v"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(&s.post("runs/set-tag", json!({"run_id": run_id})).await, 400, "INVALID_PARAMETER_VALUE");

    let ghost = "0123456789abcdef0123456789abcdef";
    for (path, body) in [
        ("runs/log-metric", json!({"run_id": ghost, "key": "loss", "value": 1.0, "timestamp": 1})),
        ("runs/log-parameter", json!({"run_id": ghost, "key": "p", "value": "1"})),
        ("runs/set-tag", json!({"run_id": ghost, "key": "t", "value": "v"})),
        ("runs/log-batch", json!({"run_id": ghost, "tags": [{"key": "t", "value": "v"}]})),
    ] {
        let answer = s.post(path, body).await;
        assert_error(&answer, 404, "RESOURCE_DOES_NOT_EXIST");
        assert!(message(&answer).contains(ghost), "{path}: {}", answer.1);
    }
}

#[tokio::test]
async fn nan_and_infinities_round_trip_as_protobuf_strings() {
    let s = start().await;
    let run_id = s.new_run().await;
    for (step, value) in [(0, json!("NaN")), (1, json!("Infinity")), (2, json!("-Infinity")), (3, json!(1.5))] {
        s.ok("runs/log-metric", json!({"run_id": run_id, "key": "odd", "value": value, "timestamp": 7, "step": step}))
            .await;
    }
    s.ok(
        "runs/log-batch",
        json!({"run_id": run_id, "metrics": [{"key": "nan", "value": "NaN", "timestamp": 1, "step": 0}]}),
    )
    .await;
    let history = s.get_ok(&format!("metrics/get-history?run_id={run_id}&metric_key=odd")).await;
    let values: Vec<&Value> = history["metrics"].as_array().unwrap().iter().map(|m| &m["value"]).collect();
    assert_eq!(values, [&json!("NaN"), &json!("Infinity"), &json!("-Infinity"), &json!(1.5)]);
    let run = s.run(&run_id).await;
    assert_eq!(metric(&run, "odd")["value"], 1.5);
    assert_eq!(metric(&run, "nan")["value"], "NaN");
}

#[tokio::test]
async fn log_batch_writes_everything_and_enforces_limits() {
    let s = start().await;
    let run_id = s.new_run().await;
    let metrics: Vec<Value> = (0..5)
        .map(|i| json!({"key": "loss", "value": 1.0 / (i as f64 + 1.0), "timestamp": 100 + i, "step": i}))
        .collect();
    let answer = s
        .ok(
            "runs/log-batch",
            json!({
                "run_id": run_id,
                "metrics": metrics,
                "params": [{"key": "lr", "value": "0.1"}, {"key": "bs", "value": "32"}, {"key": "lr", "value": "0.1"}],
                "tags": [{"key": "t", "value": "1"}, {"key": "t", "value": "2"}],
            }),
        )
        .await;
    assert_eq!(answer, json!({}));
    // A client retry of the same batch neither fails nor doubles points.
    s.ok("runs/log-batch", json!({"run_id": run_id, "metrics": metrics, "params": [{"key": "lr", "value": "0.1"}]}))
        .await;
    let run = s.run(&run_id).await;
    assert_eq!(metric(&run, "loss"), &json!({"key": "loss", "value": 0.2, "timestamp": 104, "step": 4}));
    assert_eq!(kv(&run["data"]["params"], "lr").as_deref(), Some("0.1"));
    assert_eq!(kv(&run["data"]["params"], "bs").as_deref(), Some("32"));
    assert_eq!(kv(&run["data"]["tags"], "t").as_deref(), Some("2"), "the last value of a tag wins");
    let history = s.get_ok(&format!("metrics/get-history?run_id={run_id}&metric_key=loss")).await;
    assert_eq!(history["metrics"].as_array().unwrap().len(), 5);

    // A changed param fails the whole batch: the metric in it is not written.
    let changed = s
        .post(
            "runs/log-batch",
            json!({"run_id": run_id, "params": [{"key": "lr", "value": "0.3"}],
                   "metrics": [{"key": "other", "value": 1, "timestamp": 1}]}),
        )
        .await;
    assert_error(&changed, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&changed).contains("0.3"));
    let run = s.run(&run_id).await;
    assert!(run["data"]["metrics"].as_array().unwrap().iter().all(|m| m["key"] != "other"));
    // Two values for one param in one batch.
    let dup = s
        .post(
            "runs/log-batch",
            json!({"run_id": run_id, "params": [{"key": "x", "value": "1"}, {"key": "x", "value": "2"}]}),
        )
        .await;
    assert_error(&dup, 400, "INVALID_PARAMETER_VALUE");

    let point = |i: usize| json!({"key": "m", "value": 1.0, "timestamp": i, "step": i});
    let kvs = |n: usize| (0..n).map(|i| json!({"key": format!("k{i}"), "value": "v"})).collect::<Vec<_>>();
    let cases = [
        (json!({"run_id": run_id, "metrics": (0..1001).map(point).collect::<Vec<_>>()}), "1000"),
        (json!({"run_id": run_id, "params": kvs(101)}), "100"),
        (json!({"run_id": run_id, "tags": kvs(101)}), "100"),
        (
            json!({"run_id": run_id, "metrics": (0..1000).map(point).collect::<Vec<_>>(), "params": kvs(1)}),
            "1000 total",
        ),
    ];
    for (body, limit) in cases {
        let answer = s.post("runs/log-batch", body).await;
        assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
        assert!(message(&answer).contains(limit), "message names the limit {limit}: {}", answer.1);
    }
    // Exactly at the limits is fine.
    s.ok("runs/log-batch", json!({"run_id": run_id, "metrics": (0..1000).map(point).collect::<Vec<_>>()})).await;
    s.ok("runs/log-batch", json!({"run_id": run_id, "params": kvs(100), "tags": kvs(100)})).await;

    let item_errors = [
        json!({"metrics": []}),                                                             // no run
        json!({"run_id": run_id, "metrics": {"key": "m"}}),                                 // not a list
        json!({"run_id": run_id, "metrics": [{"key": "m", "value": 1}]}),                   // no timestamp
        json!({"run_id": run_id, "metrics": [{"value": 1, "timestamp": 1}]}),               // no key
        json!({"run_id": run_id, "metrics": [{"key": "m", "value": "x", "timestamp": 1}]}), // bad value
        json!({"run_id": run_id, "metrics": [5]}),                                          // not an object
        json!({"run_id": run_id, "params": [{"key": "p", "value": "x".repeat(6001)}]}),     // long value
        json!({"run_id": run_id, "params": [{"key": "p".repeat(251), "value": "1"}]}),      // long key
        json!({"run_id": run_id, "tags": [{"key": "t", "value": 3}]}),                      // bad value
    ];
    for body in item_errors {
        let answer = s.post("runs/log-batch", body.clone()).await;
        assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
    }
    let named = s.post("runs/log-batch", json!({"run_id": run_id, "metrics": [{"key": "m", "value": 1}]})).await;
    assert!(message(&named).contains("metrics[0].timestamp"), "{}", named.1);
}

#[tokio::test]
async fn metric_history_pages() {
    let s = start().await;
    let run_id = s.new_run().await;
    let metrics: Vec<Value> =
        (0..5).map(|i| json!({"key": "loss", "value": i, "timestamp": 1000 + i, "step": i})).collect();
    s.ok("runs/log-batch", json!({"run_id": run_id, "metrics": metrics})).await;

    let all = s.get_ok(&format!("metrics/get-history?run_id={run_id}&metric_key=loss")).await;
    assert_eq!(all["metrics"].as_array().unwrap().len(), 5);
    assert!(all.get("next_page_token").is_none(), "{all}");
    assert_eq!(all["metrics"][0], json!({"key": "loss", "value": 0.0, "timestamp": 1000, "step": 0}));

    let mut token: Option<String> = None;
    let mut steps = Vec::new();
    let mut pages = 0;
    loop {
        let mut q = format!("metrics/get-history?run_uuid={run_id}&metric_key=loss&max_results=2");
        if let Some(t) = &token {
            q.push_str(&format!("&page_token={t}"));
        }
        let page = s.get_ok(&q).await;
        pages += 1;
        steps.extend(page["metrics"].as_array().unwrap().iter().map(|m| m["step"].as_i64().unwrap()));
        match page.get("next_page_token").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(steps, [0, 1, 2, 3, 4]);
    assert_eq!(pages, 3);

    let none = s.get_ok(&format!("metrics/get-history?run_id={run_id}&metric_key=never")).await;
    assert_eq!(none["metrics"], json!([]));
    assert_error(&s.get(&format!("metrics/get-history?run_id={run_id}")).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&s.get("metrics/get-history?metric_key=loss").await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &s.get(&format!("metrics/get-history?run_id={run_id}&metric_key=loss&max_results=0")).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.get(&format!("metrics/get-history?run_id={run_id}&metric_key=loss&max_results=lots")).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.get(&format!("metrics/get-history?run_id={run_id}&metric_key=loss&page_token=garbage")).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &s.get("metrics/get-history?run_id=0123456789abcdef0123456789abcdef&metric_key=loss").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
}

#[tokio::test]
async fn bodies_are_json_whatever_the_content_type() {
    let s = start().await;
    let run_id = s.new_run().await;
    let body = format!(r#"{{"run_id":"{run_id}","key":"p1","value":"1"}}"#);
    for ct in
        [None, Some("text/plain"), Some("application/json; charset=utf-8"), Some("application/x-www-form-urlencoded")]
    {
        let key = format!("p-{}", ct.unwrap_or("none").len());
        let body = body.replace("p1", &key);
        let answer = s.post_raw("runs/log-parameter", &body, ct).await;
        assert_eq!(answer.0, 200, "content type {ct:?}: {}", answer.1);
    }
    // lowerCamelCase names (protobuf JSON) work too.
    s.ok("runs/log-metric", json!({"runId": run_id, "key": "m", "value": 1, "timestamp": 1})).await;

    for bad in ["{", "not json", "[1,2]", "\"run\"", r#"{"run_id": }"#] {
        let answer = s.post_raw("runs/log-parameter", bad, Some("application/json")).await;
        assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
    }
    // An empty body is an empty request: the missing field is named.
    let empty = s.post_raw("runs/set-tag", "", None).await;
    assert_error(&empty, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&empty).contains("run_id"), "{}", empty.1);
}

#[tokio::test]
async fn unknown_endpoints_answer_endpoint_not_found() {
    let s = start().await;
    for path in [
        "/api/2.0/mlflow/runs/no-such-verb",
        "/api/2.0/mlflow/traces/search",
        "/api/2.0/mlflow/",
        "/api/2.0/mlflow",
        "/ajax-api/2.0/mlflow/does/not/exist",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let resp =
                s.http.request(method.clone(), format!("{}{path}", s.base)).json(&json!({})).send().await.unwrap();
            let answer = Server::answer(resp).await;
            assert_error(&answer, 404, "ENDPOINT_NOT_FOUND");
            let _ = method;
        }
    }
    // A known path with the wrong method: 405, still MLflow's JSON shape.
    let answer = Server::answer(s.http.get(s.url("runs/create")).send().await.unwrap()).await;
    assert_eq!(answer.0, 405, "{}", answer.1);
    assert!(answer.1["error_code"].is_string());
    let answer = Server::answer(s.http.post(s.url("runs/get")).send().await.unwrap()).await;
    assert_eq!(answer.0, 405, "{}", answer.1);
}

#[tokio::test]
async fn ajax_api_prefix_serves_the_same_api() {
    let s = start().await;
    let url = |p: &str| format!("{}/ajax-api/2.0/mlflow/{p}", s.base);
    let created =
        Server::answer(s.http.post(url("experiments/create")).json(&json!({"name": "ui"})).send().await.unwrap()).await;
    assert_eq!(created.0, 200, "{}", created.1);
    let id = created.1["experiment_id"].as_str().unwrap();
    let run =
        Server::answer(s.http.post(url("runs/create")).json(&json!({"experiment_id": id})).send().await.unwrap()).await;
    assert_eq!(run.0, 200, "{}", run.1);
    let run_id = run.1["run"]["info"]["run_id"].as_str().unwrap();
    let got = s.run(run_id).await;
    assert_eq!(got["info"]["experiment_id"], id);
    let missing = Server::answer(s.http.get(url("runs/get?run_id=nope")).send().await.unwrap()).await;
    assert_error(&missing, 404, "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn merges_into_a_router_with_its_own_fallback() {
    // lib.rs merges the MLflow router into the app, which has a fallback of its own.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("db")).await.unwrap();
    let app = axum::Router::new()
        .merge(capstan_server::mlflow::router(store))
        .fallback(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "other") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum_serve(listener, app));
    let http = reqwest::Client::new();
    let mlflow = Server::answer(http.get(format!("{base}/api/2.0/mlflow/nope")).send().await.unwrap()).await;
    assert_error(&mlflow, 404, "ENDPOINT_NOT_FOUND");
    let other = http.get(format!("{base}/elsewhere")).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 418);
}
