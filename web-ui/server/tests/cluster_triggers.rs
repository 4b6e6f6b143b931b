//! The webhook and manual-run handlers with their pipelines on a cluster
//! (`webhooks::on_cluster`), over an in-memory [`ClusterPipelines`]: which objects they read and
//! create, replays (whole and partial), failures of the API server, bad input. The kube adapter
//! itself runs against a real kube-apiserver in tests/e2e/tests/kube_pipelines.rs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use capstan_crds::pipeline::{GitTrigger, ParameterSpec, PipelineSpec, SecretKeyRef, Trigger};
use capstan_server::webhooks::{self, ClusterError, ClusterPipelines, CreateOutcome, NewRun, PipelineObject};
use capstan_server::{app, AppState};
use capstan_store::Store;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

const SECRET: &str = "hook secret";

#[derive(Default)]
struct Fake {
    pipelines: Vec<PipelineObject>,
    secrets: HashMap<(String, String, String), String>,
    runs: BTreeMap<(String, String), NewRun>,
    fail_create: bool,
}

#[derive(Clone, Default)]
struct FakeCluster(Arc<Mutex<Fake>>);

impl ClusterPipelines for FakeCluster {
    fn list_pipelines(&self) -> BoxFuture<'_, Result<Vec<PipelineObject>, ClusterError>> {
        let out = self.0.lock().unwrap().pipelines.clone();
        Box::pin(async move { Ok(out) })
    }

    fn get_pipeline<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineObject>, ClusterError>> {
        let p = self.0.lock().unwrap().pipelines.iter().find(|p| p.namespace == namespace && p.name == name).cloned();
        Box::pin(async move { Ok(p) })
    }

    fn secret_value<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        let v = self.0.lock().unwrap().secrets.get(&(namespace.into(), name.into(), key.into())).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn create_run<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<CreateOutcome, ClusterError>> {
        let mut f = self.0.lock().unwrap();
        let out = if f.fail_create {
            Err(ClusterError::Api("connection refused".into()))
        } else {
            match f.runs.entry((run.namespace.clone(), run.name.clone())) {
                std::collections::btree_map::Entry::Occupied(_) => Ok(CreateOutcome::AlreadyExists),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(run.clone());
                    Ok(CreateOutcome::Created)
                }
            }
        };
        Box::pin(async move { out })
    }
}

fn pipeline(ns: &str, name: &str, secret: &str) -> PipelineObject {
    PipelineObject {
        namespace: ns.into(),
        name: name.into(),
        spec: PipelineSpec {
            triggers: vec![Trigger {
                git: GitTrigger {
                    repo: "https://github.com/acme/iris".into(),
                    secret_ref: Some(SecretKeyRef { name: secret.into(), key: None }),
                    ..Default::default()
                },
            }],
            ..Default::default()
        },
    }
}

struct Server {
    url: String,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn serve(cluster: FakeCluster) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("capstan.db")).await.unwrap();
    let state = AppState {
        store: store.clone(),
        data_dir: dir.path().to_path_buf(),
        wake: Arc::new(tokio::sync::Notify::new()),
        token_sha256: None,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        artifacts: capstan_store::artifacts::ArtifactStore::local(&dir.path().join("artifacts")).unwrap(),
    };
    let router = webhooks::on_cluster(app(state), Arc::new(cluster));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { url, store, _dir: dir }
}

fn push_body(sha: &str) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main", "after": sha, "deleted": false,
        "repository": {"clone_url": "https://github.com/acme/iris.git"},
        "head_commit": {"id": sha, "message": "tune", "author": {"name": "Ada", "email": "ada@example.com"}},
    })
    .to_string()
    .into_bytes()
}

async fn hook(s: &Server, delivery: &str, secret: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/github", s.url))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", webhooks::sign(secret.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", s.url)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn cluster_with(pipelines: Vec<PipelineObject>) -> FakeCluster {
    let c = FakeCluster::default();
    {
        let mut f = c.0.lock().unwrap();
        for p in &pipelines {
            f.secrets.insert((p.namespace.clone(), "hook".into(), "secret".into()), SECRET.into());
        }
        f.pipelines = pipelines;
    }
    c
}

#[tokio::test]
async fn a_delivery_creates_one_object_per_matching_pipeline_and_a_replay_none() {
    let cluster = cluster_with(vec![pipeline("a", "iris", "hook"), pipeline("b", "iris", "hook")]);
    let s = serve(cluster.clone()).await;
    let sha = "a".repeat(40);
    let (code, body) = hook(&s, "d-1", SECRET, push_body(&sha)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["runs"].as_array().unwrap().len(), 2, "{body}");
    let runs: Vec<NewRun> = cluster.0.lock().unwrap().runs.values().cloned().collect();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.spec.commit.as_ref().unwrap().sha, sha);
        assert_eq!(r.spec.trigger.as_ref().unwrap().delivery_id, "d-1");
        assert_eq!(r.labels["capstan.dev/pipeline"], "iris");
        assert!(r.name.starts_with("iris-aaaaaaa-"), "{}", r.name);
    }
    assert_eq!(runs[0].name, runs[1].name, "the same delivery names the run the same in every namespace");
    // Nothing went to the server's own store.
    assert!(s.store.list_resources("PipelineRun", None).await.unwrap().is_empty());

    // A replay: every run exists already.
    let (code, body) = hook(&s, "d-1", SECRET, push_body(&sha)).await;
    assert_eq!((code, &body["duplicate"]), (200, &json!(true)), "{body}");
    assert_eq!(cluster.0.lock().unwrap().runs.len(), 2);

    // A replay after one run was lost half-way: the missing one is made, the other reported.
    let first = cluster.0.lock().unwrap().runs.keys().next().cloned().unwrap();
    cluster.0.lock().unwrap().runs.remove(&first);
    let (code, body) = hook(&s, "d-1", SECRET, push_body(&sha)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["runs"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["duplicates"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(cluster.0.lock().unwrap().runs.len(), 2);

    // Another delivery of the same commit is another run.
    let (code, _) = hook(&s, "d-2", SECRET, push_body(&sha)).await;
    assert_eq!(code, 201);
    assert_eq!(cluster.0.lock().unwrap().runs.len(), 4);
}

#[tokio::test]
async fn bad_signatures_missing_secrets_and_api_failures_create_nothing() {
    let cluster = cluster_with(vec![pipeline("a", "iris", "hook"), pipeline("b", "nosecret", "missing")]);
    let s = serve(cluster.clone()).await;
    let body = push_body(&"b".repeat(40));
    let (code, resp) = hook(&s, "d-1", "wrong", body.clone()).await;
    assert_eq!(code, 401, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("does not match"), "{resp}");
    assert!(cluster.0.lock().unwrap().runs.is_empty());

    // The Pipeline whose Secret is missing never verifies anything; the other one still works.
    let (code, resp) = hook(&s, "d-2", SECRET, body.clone()).await;
    assert_eq!(code, 201, "{resp}");
    let runs = cluster.0.lock().unwrap().runs.clone();
    assert_eq!(runs.len(), 1);
    assert!(runs.keys().all(|(ns, _)| ns == "a"), "{runs:?}");

    // The API server failing: 503 naming it, so the sender may redeliver.
    cluster.0.lock().unwrap().fail_create = true;
    let (code, resp) = hook(&s, "d-3", SECRET, body).await;
    assert_eq!(code, 503, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("Kubernetes API"), "{resp}");
    assert!(!resp.to_string().contains(SECRET));
}

#[tokio::test]
async fn manual_runs_are_objects_and_secrets_are_kubernetes_secrets() {
    let mut p = pipeline("a", "iris", "hook");
    p.spec.parameters = vec![ParameterSpec { name: "lr".into(), default: Some("0.1".into()), description: None }];
    let cluster = cluster_with(vec![p]);
    let s = serve(cluster.clone()).await;
    let (code, body) = post(&s, "/api/v1/namespaces/a/pipelines/iris/runs", json!({"parameters": {"lr": "0.3"}})).await;
    assert_eq!(code, 201, "{body}");
    let runs = cluster.0.lock().unwrap().runs.clone();
    let run = runs.values().next().unwrap();
    assert_eq!(run.name, body["name"].as_str().unwrap());
    assert_eq!(run.spec.parameters["lr"], "0.3");
    assert_eq!(run.spec.trigger.as_ref().unwrap().source, "manual");
    assert_eq!(run.labels["capstan.dev/trigger"], "manual");

    let (code, body) = post(&s, "/api/v1/namespaces/a/pipelines/nope/runs", json!({})).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = post(&s, "/api/v1/namespaces/a/pipelines/iris/runs", json!({"parameters": {"x": "1"}})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"x\" is not declared"), "{body}");
    let (code, body) = post(&s, "/api/v1/namespaces/a/pipelines/iris/runs", json!({"params": {}})).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(cluster.0.lock().unwrap().runs.len(), 1);

    let (code, body) = post(&s, "/api/v1/namespaces/a/secrets", json!({"name": "x", "data": {"secret": "v"}})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("kubectl create secret generic"), "{body}");
    assert!(s.store.list_secrets(None).await.unwrap().is_empty());
}
