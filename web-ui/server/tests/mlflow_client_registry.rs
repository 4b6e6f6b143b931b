//! The real `mlflow` Python client against experiments, run search and the model registry:
//! serves the MLflow router over a real SQLite store and runs `mlflow_client_registry.py`
//! (see its docstring for what it drives), then checks from the store side what the client
//! left behind, including the alias history MLflow itself does not keep. Needs
//! `pip install mlflow-skinny==3.17.2` (scripts/install-deps.sh); without it the test fails.

mod mlflow_client_common;

use capstan_search::parse_filter;
use capstan_store::registry::RegistryQuery;
use capstan_store::runs_search::{RunQuery, ViewType};
use capstan_store::Store;
use mlflow_client_common::{python, require_modules, run_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_client_searches_and_registers_models() {
    require_modules(&python(), &["mlflow"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("capstan.db")).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = capstan_server::mlflow::router(store.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stdout = run_script("mlflow_client_registry.py", &format!("http://{addr}"), dir.path(), &[]).await;
    assert!(stdout.contains("mlflow client registry test passed"), "{stdout}");

    // What the client wrote is in the store.
    let exp = store.get_experiment_by_name("exp-alpha").await.unwrap().expect("exp-alpha");
    let filter = parse_filter("tags.kind = 'trial'").unwrap();
    let page = store
        .search_runs(&RunQuery {
            experiment_ids: std::slice::from_ref(&exp.experiment_id),
            filter: filter.as_ref(),
            order_by: &[],
            view: ViewType::ActiveOnly,
            max_results: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.items.iter().all(|(r, _)| r.tags.iter().any(|(k, _)| k == "mlflow.parentRunId")));
    let models = store
        .search_registered_models(&RegistryQuery { filter: None, order_by: &[], max_results: 10, offset: 0 })
        .await
        .unwrap();
    let names: Vec<&str> = models.items.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["churn", "from-logged"]);
    // Every alias change the client made, in order, with no user (no basic auth).
    let history = store.alias_history("churn").await.unwrap();
    let moves: Vec<(Option<i64>, Option<i64>, &str)> =
        history.iter().map(|e| (e.from_version, e.to_version, e.reason.as_str())).collect();
    assert_eq!(moves, [(None, Some(1), "set"), (Some(1), Some(2), "set"), (Some(2), None, "deleted")]);
    assert!(history.iter().all(|e| e.alias == "champion" && e.user == "unknown"));
}
