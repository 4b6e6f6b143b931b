//! Capstan's HTTP server: the resource API the CLI speaks (Kubernetes-shaped paths under
//! `/apis/capstan.dev/v1alpha1/`), the MLflow-compatible tracking API ([`mlflow`]), nodes and
//! their GPUs as agents report them ([`nodes`]), health, and bearer-token auth when it listens
//! beyond loopback.
//!
//! Handlers are thin: parsing and validation live in `capstan_crds::manifest`, state in
//! `capstan_store`; the controller is woken through [`AppState::wake`] after a change.

pub mod artifacts;
pub mod auth;
pub mod inference;
pub mod mlflow;
pub mod nodes;
pub mod pipelines;
pub mod resources;
pub mod webhooks;

/// Where the web UI and the resource API read resources (the store, or a cluster through
/// [`resources::on_cluster_resources`]).
pub use capstan_ui::cluster;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_store::Store;
use serde_json::json;
use tokio::sync::Notify;

/// Largest request body accepted (bytes). Manifests and log batches are far smaller; this
/// only bounds memory.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Durable state.
    pub store: Store,
    /// Root of replica logs (see `capstan_controller::standalone::log_path`).
    pub data_dir: PathBuf,
    /// Wakes the controller after a change.
    pub wake: Arc<Notify>,
    /// SHA-256 (hex) of the API token; None: no auth (loopback only).
    pub token_sha256: Option<String>,
    /// True once the controller and agent run (`/readyz`); `/healthz` only says the server lives.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Where run artifacts live (the `mlflow-artifacts` proxy, [`artifacts`]).
    pub artifacts: capstan_store::artifacts::ArtifactStore,
}

/// An API error: a status code and a JSON body `{"error": message, ...details}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: serde_json::Value,
}

impl ApiError {
    /// An error with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, body: json!({ "error": message.into() }) }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<capstan_store::StoreError> for ApiError {
    fn from(e: capstan_store::StoreError) -> ApiError {
        use capstan_store::StoreError as E;
        match e {
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            E::AlreadyExists(what) => ApiError::new(StatusCode::CONFLICT, format!("{what} already exists")),
            E::ParamChanged { .. } => ApiError::bad_request(e.to_string()),
            E::BeingDeleted(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {other}"))
            }
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(axum::extract::State(st): axum::extract::State<AppState>) -> (StatusCode, &'static str) {
    if st.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting: the controller and agent are not running yet")
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let api = resources::router()
        .merge(nodes::router())
        .merge(pipelines::router())
        .merge(inference::router())
        .merge(mlflow::router(state.store.clone()).with_state(()))
        .merge(artifacts::router(state.artifacts.clone()).with_state(()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    let probes = Router::new().route("/readyz", get(readyz)).with_state(state.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .merge(probes)
        // Webhooks authenticate by signature, not by the API token.
        .merge(webhooks::router().with_state(state.clone()))
        .merge(api.with_state(state.clone()))
        // The web UI (capstan-ui): pages, their server functions and the browser bundle.
        .merge(
            capstan_ui::server::router(capstan_ui::server::UiState {
                store: state.store.clone(),
                artifacts: state.artifacts.clone(),
                data_dir: state.data_dir.clone(),
            })
            .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token)),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}
