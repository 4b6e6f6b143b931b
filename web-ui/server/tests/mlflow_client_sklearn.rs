//! scikit-learn through the real `mlflow` client against the whole app (`capstan server`'s
//! router: tracking API, registry and the artifacts proxy over a local artifact directory):
//! runs `mlflow_client_sklearn.py` (log_model, register_model from a run and from a model id,
//! alias, load back and predict), then checks the artifacts landed in the artifact store.
//! Needs `pip install mlflow-skinny==3.17.2 scikit-learn pandas skops` (scripts/install-deps.sh);
//! without them the test fails.

mod mlflow_client_common;

use std::sync::Arc;

use capstan_server::{app, AppState};
use capstan_store::artifacts::{ArtifactPath, ArtifactStore};
use capstan_store::Store;
use mlflow_client_common::{python, require_modules, run_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sklearn_log_model_register_and_load_through_capstan() {
    require_modules(&python(), &["mlflow", "sklearn", "pandas", "skops"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("capstan.db")).await.unwrap();
    let artifact_dir = dir.path().join("artifacts");
    std::fs::create_dir_all(&artifact_dir).unwrap();
    let artifacts = ArtifactStore::local(&artifact_dir).unwrap();
    let state = AppState {
        store: store.clone(),
        data_dir: dir.path().to_path_buf(),
        wake: Arc::new(tokio::sync::Notify::new()),
        token_sha256: None,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        artifacts: artifacts.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });

    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let stdout = run_script("mlflow_client_sklearn.py", &format!("http://{addr}"), &home, &[]).await;
    assert!(stdout.contains("mlflow client sklearn test passed"), "{stdout}");

    // The model's files are in the artifact store, under the logged model's location.
    let version = store.get_model_version("iris-clf", 2).await.unwrap().expect("version 2");
    let model_id = version.model_id.expect("registered from a logged model");
    let location = store.get_logged_model(&model_id).await.unwrap().unwrap().artifact_location;
    let root = ArtifactPath::from_artifact_uri(&location).unwrap();
    let files: Vec<String> = artifacts.list_recursive(&root).await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert!(files.iter().any(|f| f.ends_with("MLmodel")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("model.skops")), "{files:?}");
    let history = store.alias_history("iris-clf").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].to_version, Some(2));
}
