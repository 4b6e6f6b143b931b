//! The Open Inference Protocol v2 REST server (axum).
//!
//! `GET /v2/health/live`, `GET /v2/health/ready` (200 only once the model is loaded, 503
//! while loading or draining), `GET /v2` (server metadata), `GET /v2/models/{name}[/versions/{v}]`
//! (model metadata), `GET .../ready`, `POST .../infer`, and `GET /metrics`. Every error is
//! `{"error": "..."}` with a 4xx status naming the field, except a model that fails to run
//! (500) and one still loading (503).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::batch::{BatchConfig, Batcher};
use crate::metrics::{Metrics, Outcome};
use crate::model::OnnxModel;
use crate::tensor::{decode_input, encode_output, validate_inputs, RequestInput};
use crate::ServingError;

/// Largest request body by default (64 MiB); bigger bodies get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An infer request (`POST .../infer`).
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Request id, echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (accepted, not interpreted).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Outputs wanted (default: all).
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One entry of a request's `outputs`.
#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// Per-output parameters (`binary_data: true` is refused).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

struct Loaded {
    model: OnnxModel,
    batcher: Batcher,
}

/// What the handlers share: the model (once loaded), its name and version, metrics.
pub struct ServerState {
    name: String,
    version: String,
    loaded: OnceLock<Loaded>,
    load_error: OnceLock<String>,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

impl ServerState {
    /// State for model `name` at `version`, not loaded yet.
    pub fn new(name: &str, version: &str) -> Arc<ServerState> {
        Arc::new(ServerState {
            name: name.into(),
            version: version.into(),
            loaded: OnceLock::new(),
            load_error: OnceLock::new(),
            draining: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new(name, version)),
            next_id: AtomicU64::new(1),
        })
    }

    /// Installs the loaded model and starts its batching worker: the server turns ready.
    pub fn set_model(&self, model: OnnxModel, batch: BatchConfig) -> crate::Result<()> {
        let batcher = Batcher::start(&model, batch, self.metrics.clone())?;
        let _ = self.loaded.set(Loaded { model, batcher });
        Ok(())
    }

    /// Records why the model could not be loaded (readiness says so).
    pub fn set_load_error(&self, error: String) {
        let _ = self.load_error.set(error);
    }

    /// Stops reporting ready (SIGTERM: drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the model is loaded and the server is not draining.
    pub fn is_ready(&self) -> bool {
        self.loaded.get().is_some() && !self.draining.load(Ordering::SeqCst)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// An error answer `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// Status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> ApiError {
        match e {
            ServingError::BadInput(m) => ApiError::bad(m),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("inference failed: {other}")),
        }
    }
}

/// The routes over `state`, with request bodies limited to `max_body_bytes`.
pub fn router(state: Arc<ServerState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { Json(json!({ "live": true })) }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

async fn server_ready(State(s): State<Arc<ServerState>>) -> Response {
    if s.is_ready() {
        Json(json!({ "ready": true })).into_response()
    } else {
        let why = if s.draining.load(Ordering::SeqCst) {
            "draining: the server is shutting down".to_string()
        } else if let Some(e) = s.load_error.get() {
            format!("model '{}' failed to load: {e}", s.name)
        } else {
            format!("model '{}' is loading", s.name)
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "error": why }))).into_response()
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "capstan", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
}

fn check_model<'a>(s: &'a ServerState, name: &str, version: Option<&str>) -> Result<&'a Loaded, ApiError> {
    if name != s.name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' is not served here (this server serves '{}')", s.name),
        ));
    }
    if let Some(v) = version {
        if v != s.version {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("model '{name}' has no version '{v}' here (this server serves version '{}')", s.version),
            ));
        }
    }
    s.loaded.get().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("model '{name}' is loading")))
}

fn metadata(s: &ServerState, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let loaded = check_model(s, name, version)?;
    Ok(Json(json!({
        "name": s.name,
        "versions": [s.version],
        "platform": "onnx",
        "inputs": loaded.model.inputs().iter().map(|i| i.metadata()).collect::<Vec<_>>(),
        "outputs": loaded.model.outputs().iter().map(|o| o.metadata()).collect::<Vec<_>>(),
    })))
}

async fn model_metadata(State(s): State<Arc<ServerState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    metadata(&s, &name, None)
}

async fn model_metadata_v(
    State(s): State<Arc<ServerState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata(&s, &name, Some(&version))
}

fn ready_answer(s: &ServerState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    match check_model(s, name, version) {
        Ok(_) if s.is_ready() => Ok(Json(json!({ "name": name, "ready": true })).into_response()),
        Ok(_) => Ok((StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "name": name, "ready": false }))).into_response()),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            Ok((StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "name": name, "ready": false }))).into_response())
        }
        Err(e) => Err(e),
    }
}

async fn model_ready(State(s): State<Arc<ServerState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    ready_answer(&s, &name, None)
}

async fn model_ready_v(
    State(s): State<Arc<ServerState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ready_answer(&s, &name, Some(&version))
}

async fn metrics(State(s): State<Arc<ServerState>>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], s.metrics.render()).into_response()
}

async fn infer(
    State(s): State<Arc<ServerState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_common(s, name, None, headers, body).await
}

async fn infer_v(
    State(s): State<Arc<ServerState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_common(s, name, Some(version), headers, body).await
}

async fn infer_common(
    s: Arc<ServerState>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    s.metrics.in_flight(1);
    let answer = run_infer(&s, &name, version.as_deref(), &headers, body).await;
    s.metrics.in_flight(-1);
    let outcome = match &answer {
        Ok(_) => Outcome::success,
        Err(e) if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE => Outcome::server_error,
        Err(_) => Outcome::client_error,
    };
    s.metrics.observe_request(outcome, started.elapsed());
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run_infer(
    s: &ServerState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let loaded = check_model(s, name, version)?;
    let arrival = loaded.batcher.arrival();
    if headers.contains_key("inference-header-content-length") {
        return Err(ApiError::bad(
            "the binary tensor data extension (Inference-Header-Content-Length) is not supported; send JSON data",
        ));
    }
    let body = body.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, format!("request body: larger than the limit; {}", rej.body_text()))
        } else {
            ApiError::new(if status.is_client_error() { status } else { StatusCode::BAD_REQUEST }, rej.body_text())
        }
    })?;
    let request = parse_request(&body)?;
    let tensors =
        request.inputs.iter().enumerate().map(|(i, input)| decode_input(i, input)).collect::<Result<Vec<_>, _>>();
    let tensors = tensors.map_err(ApiError::bad)?;
    if tensors.is_empty() {
        return Err(ApiError::bad("inputs: must not be empty"));
    }
    validate_inputs(loaded.model.inputs(), &tensors).map_err(ApiError::bad)?;
    let wanted = requested_outputs(&request, loaded)?;
    let outputs = loaded.batcher.infer(tensors, arrival).await.map_err(ApiError::from)?;
    let encoded: Vec<Value> = match wanted {
        Some(names) => names.iter().filter_map(|n| outputs.iter().find(|o| &o.name == n)).map(encode_output).collect(),
        None => outputs.iter().map(encode_output).collect(),
    };
    let id = request.id.unwrap_or_else(|| format!("{:016x}", s.next_id.fetch_add(1, Ordering::Relaxed)));
    Ok(json!({
        "model_name": s.name,
        "model_version": s.version,
        "id": id,
        "outputs": encoded,
    }))
}

/// Parses an infer request body; errors name the JSON path (`inputs[0].shape`).
pub fn parse_request(body: &[u8]) -> Result<InferRequest, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad("request body: empty; expected a JSON object with 'inputs'"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            ApiError::bad(format!("request body: {inner}"))
        } else {
            ApiError::bad(format!("{path}: {inner}"))
        }
    })
}

fn requested_outputs(request: &InferRequest, loaded: &Loaded) -> Result<Option<Vec<String>>, ApiError> {
    let Some(outputs) = &request.outputs else { return Ok(None) };
    let mut names = Vec::with_capacity(outputs.len());
    for (i, o) in outputs.iter().enumerate() {
        if o.parameters.as_ref().and_then(|p| p.get("binary_data")).and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::bad(format!(
                "outputs[{i}].parameters.binary_data: the binary tensor data extension is not supported"
            )));
        }
        if !loaded.model.outputs().iter().any(|spec| spec.name == o.name) {
            let known = loaded.model.outputs().iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ");
            return Err(ApiError::bad(format!(
                "outputs[{i}]: the model has no output '{}' (its outputs: {known})",
                o.name
            )));
        }
        names.push(o.name.clone());
    }
    Ok(Some(names))
}

/// Everything `capstan serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Name the model is served under.
    pub name: String,
    /// Where the model comes from.
    pub source: crate::source::ModelSource,
    /// The registry server for `models:/` sources.
    pub registry: Option<crate::source::RegistryClient>,
    /// Version to report (default: the registry version, else `1`).
    pub version: Option<String>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Batching.
    pub batch: BatchConfig,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// Runs the server until `shutdown` resolves, then drains: stops reporting ready, stops
/// accepting, and lets requests in flight finish. The model file is fetched first (its
/// registry version labels the metrics), then the server answers (live) while the model
/// loads (ready once loaded); a model that cannot be fetched or loaded ends the server with
/// that error.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let version = config.version.clone();
    let fetched = crate::source::fetch(&config.source, config.registry.as_ref()).await?;
    let version = version.or(fetched.version.clone()).unwrap_or_else(|| "1".into());
    let state = ServerState::new(&config.name, &version);
    let app = router(state.clone(), config.max_body_bytes);
    let load_state = state.clone();
    let batch = config.batch;
    let location = fetched.location.clone();
    let loader = tokio::task::spawn_blocking(move || {
        match OnnxModel::from_bytes(&fetched.bytes).and_then(|m| load_state.set_model(m, batch)) {
            Ok(()) => {
                tracing::info!(%location, "model loaded");
                Ok(())
            }
            Err(e) => {
                load_state.set_load_error(e.to_string());
                Err(e)
            }
        }
    });
    let drain_state = state.clone();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = failed_rx => {}
        }
        drain_state.start_draining();
        tracing::info!("draining: finishing requests in flight");
    });
    let server = tokio::spawn(async move { server.await });
    let loaded = loader.await.map_err(|e| ServingError::InvalidModel(format!("loading panicked: {e}")))?;
    if let Err(e) = loaded {
        let _ = failed_tx.send(());
        let _ = server.await;
        return Err(e);
    }
    server
        .await
        .map_err(|e| ServingError::Io(format!("server task: {e}")))?
        .map_err(|e| ServingError::Io(format!("serving: {e}")))
}
