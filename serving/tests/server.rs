//! The model server over real HTTP on loopback, with the ONNX fixtures of `tests/fixtures/`
//! (built by `tests/e2e/python/onnx_models.py`): every datatype through an identity model,
//! a classifier (flat and nested data, named outputs, batching under concurrency), and the
//! bad inputs a client can send.

use std::path::PathBuf;
use std::time::Duration;

use capstan_serving::batch::BatchConfig;
use capstan_serving::server::{serve, ServeConfig, DEFAULT_MAX_BODY_BYTES};
use capstan_serving::source::ModelSource;
use serde_json::{json, Value};

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<capstan_serving::Result<()>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

async fn start(model: &str, name: &str, max_body_bytes: usize) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig {
        name: name.into(),
        source: ModelSource::Local(fixture(model)),
        registry: None,
        version: None,
        listen: listener.local_addr().unwrap(),
        batch: BatchConfig { max_batch: 32, max_delay: Duration::from_millis(2) },
        max_body_bytes,
    };
    let task = tokio::spawn(serve(config, listener, async move {
        let _ = rx.await;
    }));
    let server = Server { url, stop: Some(tx), task };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{}/v2/health/ready", server.url)).send().await {
            if r.status() == 200 {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server for {model} never became ready");
}

impl Server {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new().get(format!("{}{path}", self.url)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    async fn infer(&self, model: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v2/models/{model}/infer"), serde_json::to_vec(&body).unwrap()).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn assert_error(status: u16, body: &Value, want_status: u16, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("no error field: {body}"));
    assert!(msg.contains(needle), "error {msg:?} should mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips_through_an_identity_model() {
    let s = start("identity.onnx", "identity", DEFAULT_MAX_BODY_BYTES).await;
    let cases: Vec<(&str, &str, Value)> = vec![
        ("bool", "BOOL", json!([true, false, false, true])),
        ("uint8", "UINT8", json!([0, 1, 254, 255])),
        ("uint16", "UINT16", json!([0, 1, 65534, 65535])),
        ("uint32", "UINT32", json!([0, 1, 7, 4294967295u64])),
        ("uint64", "UINT64", json!([0, 1, 7, u64::MAX])),
        ("int8", "INT8", json!([-128, -1, 0, 127])),
        ("int16", "INT16", json!([-32768, -1, 0, 32767])),
        ("int32", "INT32", json!([i32::MIN, -1, 0, i32::MAX])),
        ("int64", "INT64", json!([i64::MIN, -1, 0, i64::MAX])),
        ("fp16", "FP16", json!([0.5, -1.0, 2.0, 1024.0])),
        ("fp32", "FP32", json!([0.25, -1.5, 3.0, 1e-3])),
        ("fp64", "FP64", json!([0.1, -1e300, 3.0, 1e-300])),
        ("bytes", "BYTES", json!(["a", "", "héllo", "x y"])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (n, dt, data))| {
            // Alternate flat and nested data.
            let data = if i % 2 == 0 {
                data.clone()
            } else {
                let a = data.as_array().unwrap();
                json!([[a[0], a[1]], [a[2], a[3]]])
            };
            json!({"name": format!("x_{n}"), "datatype": dt, "shape": [2, 2], "data": data})
        })
        .collect();
    let (status, body) = s.infer("identity", json!({"id": "r1", "inputs": inputs})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "r1");
    assert_eq!(body["model_name"], "identity");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), cases.len());
    for (n, dt, data) in &cases {
        let out = outputs.iter().find(|o| o["name"] == format!("y_{n}")).unwrap_or_else(|| panic!("y_{n} in {body}"));
        assert_eq!(out["datatype"], *dt);
        assert_eq!(out["shape"], json!([2, 2]));
        if *dt == "FP32" {
            for (a, b) in out["data"].as_array().unwrap().iter().zip(data.as_array().unwrap()) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-7, "{dt}: {a} vs {b}");
            }
        } else {
            assert_eq!(&out["data"], data, "{dt}");
        }
    }
    // Named outputs: only those, in the requested order.
    let inputs_again: Vec<Value> = cases
        .iter()
        .map(|(n, dt, data)| json!({"name": format!("x_{n}"), "datatype": dt, "shape": [2, 2], "data": data}))
        .collect();
    let (status, body) = s
        .infer(
            "identity",
            json!({"inputs": inputs_again, "outputs": [{"name": "y_int8"}, {"name": "y_bytes", "parameters": {"binary_data": false}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["y_int8", "y_bytes"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_metadata_infer_batching_and_metrics() {
    let s = start("classifier.onnx", "iris", DEFAULT_MAX_BODY_BYTES).await;
    let (st, live) = s.get("/v2/health/live").await;
    assert_eq!((st, &live["live"]), (200, &json!(true)));
    let (st, server) = s.get("/v2").await;
    assert_eq!(st, 200);
    assert_eq!(server["name"], "capstan");
    let (st, meta) = s.get("/v2/models/iris").await;
    assert_eq!(st, 200, "{meta}");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(meta["outputs"][2], json!({"name": "label", "datatype": "INT64", "shape": [-1]}));
    let (st, _) = s.get("/v2/models/iris/versions/1").await;
    assert_eq!(st, 200);
    let (st, ready) = s.get("/v2/models/iris/ready").await;
    assert_eq!((st, &ready["ready"]), (200, &json!(true)));

    let row = |i: usize| -> Vec<f32> { (0..4).map(|j| ((i * 4 + j) % 7) as f32 / 3.0 - 1.0).collect() };
    // One request with 8 rows, nested: the reference for the single-row requests below.
    let rows: Vec<Vec<f32>> = (0..8).map(row).collect();
    let (st, all) = s
        .infer("iris", json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 4], "data": rows}]}))
        .await;
    assert_eq!(st, 200, "{all}");
    let probs = all["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    let p: Vec<f64> = probs["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for r in 0..8 {
        let sum: f64 = p[r * 3..r * 3 + 3].iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "softmax row {r} sums to {sum}");
    }

    // 64 concurrent single-row requests: each answer equals its row of the batched one,
    // whatever batches the server formed.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = format!("{}/v2/models/iris/infer", s.url);
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row(i % 8)}],
                          "outputs": [{"name": "probabilities"}, {"name": "label"}]});
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (st, body) = t.await.unwrap();
        assert_eq!(st, 200, "{body}");
        let got: Vec<f64> =
            body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let r = i % 8;
        for k in 0..3 {
            assert!((got[k] - p[r * 3 + k]).abs() < 1e-6, "request {i}: {got:?} vs row {r} of {p:?}");
        }
        assert_eq!(body["outputs"][0]["shape"], json!([1, 3]));
        assert_eq!(body["outputs"][1]["name"], "label");
        assert_eq!(body["outputs"][1]["shape"], json!([1]));
    }

    let text = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"capstan_serving_requests_total{model="iris",version="1",outcome="success"} 65"#),
        "{text}"
    );
    assert!(text.contains(r#"capstan_serving_request_duration_seconds_count{model="iris",version="1"} 65"#), "{text}");
    let runs: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"capstan_serving_batch_size_count{model="iris",version="1"} "#))
        .unwrap()
        .parse()
        .unwrap();
    let batched: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"capstan_serving_batch_size_sum{model="iris",version="1"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(batched, 65.0, "every request ran exactly once: {text}");
    assert!(runs <= 65.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_an_error_naming_the_field() {
    let s = start("classifier.onnx", "iris", 1024 * 1024).await;
    let input = |shape: Value, dt: &str, data: Value| json!({"inputs": [{"name": "input", "datatype": dt, "shape": shape, "data": data}]});
    let (st, b) = s.infer("iris", input(json!([1, 5]), "FP32", json!([1, 2, 3, 4, 5]))).await;
    assert_error(st, &b, 400, "shape [1, 5]");
    let (st, b) = s.infer("iris", input(json!([1, 4]), "FP64", json!([1, 2, 3, 4]))).await;
    assert_error(st, &b, 400, "datatype FP64");
    let (st, b) = s.infer("iris", input(json!([1, 4]), "FP32", json!([1, 2, 3]))).await;
    assert_error(st, &b, 400, "needs 4");
    let (st, b) = s.infer("iris", input(json!([1, 4]), "FP32", json!([1, 2, "x", 4]))).await;
    assert_error(st, &b, 400, "element 2");
    let (st, b) =
        s.infer("iris", json!({"inputs": [{"name": "other", "datatype": "FP32", "shape": [1], "data": [1]}]})).await;
    assert_error(st, &b, 400, "no input 'other'");
    let (st, b) = s.infer("iris", json!({"inputs": []})).await;
    assert_error(st, &b, 400, "inputs");
    let (st, b) = s.infer("iris", json!({"id": "x"})).await;
    assert_error(st, &b, 400, "inputs");
    let (st, b) =
        s.infer("iris", json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": "x", "data": []}]})).await;
    assert_error(st, &b, 400, "inputs[0].shape");
    let (st, b) = s
        .infer(
            "iris",
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
        )
        .await;
    assert_error(st, &b, 400, "no output 'nope'");
    let (st, b) = s.post("/v2/models/iris/infer", b"{not json".to_vec()).await;
    assert_error(st, &b, 400, "request body");
    let (st, b) = s.infer("nope", input(json!([1, 4]), "FP32", json!([1, 2, 3, 4]))).await;
    assert_error(st, &b, 404, "model 'nope'");
    let (st, b) = s.get("/v2/models/nope").await;
    assert_error(st, &b, 404, "model 'nope'");
    let (st, b) = s.get("/v2/models/iris/versions/9").await;
    assert_error(st, &b, 404, "version '9'");
    let (st, b) = s.get("/v2/nothing").await;
    assert_error(st, &b, 404, "no such endpoint");
    // A body over the limit (here 1 MiB): 413 with an error, and the server still answers.
    let mut big = br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ["#.to_vec();
    big.extend(std::iter::repeat_n(b'1', 2 * 1024 * 1024));
    big.extend(b"]}]}");
    let (st, b) = s.post("/v2/models/iris/infer", big).await;
    assert_error(st, &b, 413, "limit");
    let (st, _) = s.get("/v2/health/ready").await;
    assert_eq!(st, 200);
    let text = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"outcome="client_error"} 12"#), "{text}");
    s.stop().await;
}
