//! The MLflow-compatible tracking API: the REST endpoints that the unmodified `mlflow`
//! Python client calls, so a training job can `mlflow.log_metric(...)` against Capstan.
//!
//! Every endpoint is mounted under both [`API_PREFIXES`] (`/api/2.0/mlflow/...` for clients,
//! `/ajax-api/2.0/mlflow/...` for MLflow's web UI). The module is laid out to grow with the
//! rest of the API:
//!
//! * [`endpoints`] is the one table of `(path, method router)`; a new endpoint is one line
//!   there plus one handler function;
//! * each handler reads its request through [`Fields`] (the JSON body of a POST, the query
//!   string of a GET), which applies MLflow's (protobuf JSON) wire rules: unknown fields are
//!   ignored, lowerCamelCase field names are accepted, int64 values may be numbers or strings,
//!   doubles may be numbers or the strings `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! * every failure is an [`ApiError`], rendered as MLflow's `{"error_code", "message"}` with
//!   MLflow's HTTP status; bad input is always a 4xx, never a 500.
//!
//! Any other path under the prefixes answers 404 `ENDPOINT_NOT_FOUND` (the client probes
//! optional endpoints and falls back on that code); a known path with the wrong method
//! answers 405 with the same JSON shape.
//!
//! The handlers of the first run API live here; the rest in submodules: `tracking`
//! (experiment lifecycle and search, run delete/restore/search, inputs and outputs),
//! `registry` (registered models, versions, aliases) and `logged_models` (MLflow 3). Search
//! filters are parsed by `capstan_search` (MLflow's grammar plus `OR` and parentheses) and
//! run as SQL by the store. `GET /version` answers [`MLFLOW_VERSION`].
//!
//! Capstan extension: `GET /api/2.0/mlflow/registered-models/alias-history?name=<model>`
//! lists every change of the model's aliases (set, moved, deleted, removed with a version or
//! the model) with the user (HTTP basic-auth user name, else `unknown`) and time, oldest
//! first; MLflow keeps no such history.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        DefaultBodyLimit, OriginalUri, Query, State,
    },
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, delete, get, patch, post, MethodRouter},
    Json, Router,
};
use capstan_store::{ExperimentRecord, MetricPoint, RunRecord, Store, StoreError};
use serde_json::{json, Map, Value};

mod batch_body;
mod common;
mod logged_models;
mod registry;
mod tracking;

pub use tracking::MLFLOW_VERSION;

/// The path prefixes every endpoint is mounted under.
pub const API_PREFIXES: [&str; 2] = ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"];

/// Tag holding a run's name (MLflow keeps it in sync with `run_name`).
pub const TAG_RUN_NAME: &str = "mlflow.runName";
/// Tag holding the user who created a run (`user_id` of the run info).
pub const TAG_USER: &str = "mlflow.user";

/// Longest metric, param or tag key (MLflow's limit).
pub const MAX_KEY_LENGTH: usize = 250;
/// Longest param value (MLflow's limit).
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// Longest tag value (MLflow's limit).
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
/// Most metrics in one log-batch request.
pub const MAX_BATCH_METRICS: usize = 1000;
/// Most params in one log-batch request.
pub const MAX_BATCH_PARAMS: usize = 100;
/// Most tags in one log-batch request.
pub const MAX_BATCH_TAGS: usize = 100;
/// Most metrics + params + tags in one log-batch request.
pub const MAX_BATCH_TOTAL: usize = 1000;
/// Largest request body accepted (a full log-batch with long values stays well below).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Experiment used by runs/create when no experiment id is given (or the client's default
/// id "0", which MLflow servers pre-create, does not exist here).
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

type ApiResult = Result<Json<Value>, ApiError>;

/// The MLflow tracking API, with its state applied, mounted under both [`API_PREFIXES`].
pub fn router(store: Store) -> Router {
    let mut router: Router<Store> = Router::new();
    for prefix in API_PREFIXES {
        for (path, method_router) in endpoints() {
            router = router.route(&format!("{prefix}/{path}"), method_router.fallback(method_not_allowed));
        }
        router = router
            .route(prefix, any(endpoint_not_found))
            .route(&format!("{prefix}/"), any(endpoint_not_found))
            .route(&format!("{prefix}/{{*rest}}"), any(endpoint_not_found));
    }
    // The client asks the server's MLflow version here (outside the prefixes).
    router = router.route("/version", get(tracking::version));
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(store)
}

/// Every endpoint: its path under the prefixes and its handler.
fn endpoints() -> Vec<(&'static str, MethodRouter<Store>)> {
    vec![
        ("experiments/create", post(create_experiment)),
        ("experiments/get", get(get_experiment)),
        ("experiments/get-by-name", get(get_experiment_by_name)),
        ("runs/create", post(create_run)),
        ("runs/get", get(get_run)),
        ("runs/update", post(update_run)),
        ("runs/log-metric", post(log_metric)),
        ("runs/log-parameter", post(log_param)),
        ("runs/set-tag", post(set_tag)),
        ("runs/log-batch", post(log_batch)),
        ("runs/delete", post(tracking::delete_run)),
        ("runs/restore", post(tracking::restore_run)),
        ("runs/delete-tag", post(tracking::delete_run_tag)),
        ("runs/search", post(tracking::search_runs).get(tracking::search_runs)),
        ("runs/log-inputs", post(tracking::log_inputs)),
        ("runs/outputs", post(tracking::log_outputs)),
        ("runs/log-model", post(tracking::log_model)),
        ("experiments/search", post(tracking::search_experiments).get(tracking::search_experiments)),
        ("experiments/update", post(tracking::update_experiment)),
        ("experiments/delete", post(tracking::delete_experiment)),
        ("experiments/restore", post(tracking::restore_experiment)),
        ("experiments/set-experiment-tag", post(tracking::set_experiment_tag)),
        ("experiments/delete-experiment-tag", post(tracking::delete_experiment_tag)),
        ("metrics/get-history", get(get_metric_history)),
        ("metrics/get-history-bulk-interval", get(get_metric_history_bulk_interval)),
        ("registered-models/create", post(registry::create_registered_model)),
        ("registered-models/get", get(registry::get_registered_model)),
        ("registered-models/search", get(registry::search_registered_models).post(registry::search_registered_models)),
        ("registered-models/update", patch(registry::update_registered_model).post(registry::update_registered_model)),
        ("registered-models/rename", post(registry::rename_registered_model)),
        ("registered-models/delete", delete(registry::delete_registered_model)),
        ("registered-models/set-tag", post(registry::set_registered_model_tag)),
        ("registered-models/delete-tag", delete(registry::delete_registered_model_tag)),
        (
            "registered-models/get-latest-versions",
            post(registry::get_latest_versions).get(registry::get_latest_versions),
        ),
        (
            "registered-models/alias",
            post(registry::set_alias).delete(registry::delete_alias).get(registry::get_by_alias),
        ),
        ("registered-models/alias-history", get(registry::alias_history)),
        ("model-versions/create", post(registry::create_model_version)),
        ("model-versions/get", get(registry::get_model_version)),
        ("model-versions/search", get(registry::search_model_versions).post(registry::search_model_versions)),
        ("model-versions/update", patch(registry::update_model_version).post(registry::update_model_version)),
        ("model-versions/delete", delete(registry::delete_model_version)),
        ("model-versions/set-tag", post(registry::set_model_version_tag)),
        ("model-versions/delete-tag", delete(registry::delete_model_version_tag)),
        ("model-versions/get-download-uri", get(registry::get_download_uri)),
        ("model-versions/transition-stage", post(registry::transition_stage)),
        ("logged-models", post(logged_models::create)),
        ("logged-models/search", post(logged_models::search)),
        (
            "logged-models/{model_id}",
            get(logged_models::get).patch(logged_models::finalize).delete(logged_models::delete),
        ),
        ("logged-models/{model_id}/tags", patch(logged_models::set_tags)),
        ("logged-models/{model_id}/tags/{*tag_key}", delete(logged_models::delete_tag)),
        ("logged-models/{model_id}/params", post(logged_models::log_params)),
    ]
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// An error answer: MLflow's error code, its HTTP status, and a message for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// MLflow error code, e.g. `INVALID_PARAMETER_VALUE`.
    pub error_code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, error_code, message: message.into() }
    }

    /// 400 INVALID_PARAMETER_VALUE.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    /// 404 RESOURCE_DOES_NOT_EXIST.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    /// 400 RESOURCE_ALREADY_EXISTS.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", message)
    }

    /// 400 INVALID_STATE.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_STATE", message)
    }

    /// 500 INTERNAL_ERROR.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }

    fn missing(field: &str) -> Self {
        Self::invalid(format!("Missing value for required parameter '{field}'."))
    }

    fn run_not_found(run_id: &str) -> Self {
        Self::not_found(format!("Run with id={run_id} not found"))
    }

    fn experiment_not_found(experiment_id: &str) -> Self {
        Self::not_found(format!("No Experiment with id={experiment_id} exists"))
    }

    /// A store error from an operation on the run `run_id` (its NotFound is that run's).
    fn from_run_op(run_id: &str, err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => Self::run_not_found(run_id),
            other => other.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::ParamChanged { run_id, key, old, new } => ApiError::invalid(format!(
                "Changing param values is not allowed. Param with key='{key}' was already logged \
                 with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'."
            )),
            StoreError::AlreadyExists(what) => ApiError::already_exists(format!("{what} already exists")),
            other => {
                tracing::error!(error = %other, "tracking store failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error_code": self.error_code, "message": self.message }))).into_response()
    }
}

async fn endpoint_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        format!("No API endpoint {method} {}; this server implements only part of the MLflow REST API", uri.path()),
    )
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "ENDPOINT_NOT_FOUND",
        format!("The endpoint {} does not accept {method}", uri.path()),
    )
}

// ---------------------------------------------------------------------------------------
// Request fields (MLflow's protobuf-JSON wire rules)
// ---------------------------------------------------------------------------------------

/// The fields of a request: the JSON object of a POST body or the query string of a GET.
/// Every value of a repeated query key is kept in `lists` (for repeated fields such as
/// `run_ids` or `order_by`); scalars read the first.
#[derive(Debug, Default)]
pub struct Fields {
    map: Map<String, Value>,
    lists: Map<String, Value>,
}

impl Fields {
    /// Parse a POST body as a JSON object, whatever its Content-Type; an empty body is `{}`.
    fn from_body(body: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        Self::from_bytes(&read_body(body)?)
    }

    /// Parse a body's bytes as a JSON object; an empty body is `{}`.
    fn from_bytes(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields { map, lists: Map::new() }),
            Ok(other) => {
                Err(ApiError::invalid(format!("The request body must be a JSON object, not {}", type_name(&other))))
            }
            Err(e) => Err(ApiError::invalid(format!("Malformed JSON in the request body: {e}"))),
        }
    }

    /// The query string of a GET (every value a string; the first of repeated keys wins).
    fn from_query(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(pairs) =
            query.map_err(|e| ApiError::invalid(format!("Malformed query string: {}", e.body_text())))?;
        let mut map = Map::new();
        let mut lists = Map::new();
        for (k, v) in pairs {
            if let Value::Array(items) = lists.entry(k.clone()).or_insert(Value::Array(Vec::new())) {
                items.push(Value::String(v.clone()));
            }
            map.entry(k).or_insert(Value::String(v));
        }
        Ok(Fields { map, lists })
    }

    /// The value of a field by its proto name or its lowerCamelCase JSON name; null is absent.
    fn raw(&self, name: &str) -> Option<&Value> {
        self.map.get(name).or_else(|| self.map.get(&lower_camel(name))).filter(|v| !v.is_null())
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.raw(name).map(|v| as_string(v, name)).transpose()
    }

    /// A required string: absent or empty is missing (protobuf cannot tell them apart).
    fn req_str(&self, name: &str) -> Result<String, ApiError> {
        match self.opt_str(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::missing(name)),
        }
    }

    fn opt_i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.raw(name).map(|v| as_i64(v, name)).transpose()
    }

    fn req_i64(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_i64(name)?.ok_or_else(|| ApiError::missing(name))
    }

    fn req_f64(&self, name: &str) -> Result<f64, ApiError> {
        self.raw(name).map(|v| as_f64(v, name)).transpose()?.ok_or_else(|| ApiError::missing(name))
    }

    /// A list of `{key, value}` objects (tags); absent is empty.
    fn key_values(&self, name: &str) -> Result<Vec<(String, String)>, ApiError> {
        match self.raw(name) {
            None => Ok(Vec::new()),
            Some(v) => as_array(v, name)?
                .iter()
                .enumerate()
                .map(|(i, item)| key_value(item, &format!("{name}[{i}]")))
                .collect(),
        }
    }

    /// The run id, from `run_id` or its deprecated alias `run_uuid`.
    fn run_id(&self) -> Result<String, ApiError> {
        for name in ["run_id", "run_uuid"] {
            if let Some(id) = self.opt_str(name)?.filter(|s| !s.is_empty()) {
                return Ok(id);
            }
        }
        Err(ApiError::missing("run_id"))
    }
}

/// A request body, or the error for one that could not be read (too large, cut off).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::new(
            e.status(),
            "INVALID_PARAMETER_VALUE",
            format!("Could not read the request body: {}", e.body_text()),
        )
    })
}

/// `snake_case` → `lowerCamelCase` (protobuf's JSON name).
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bad_type(path: &str, v: &Value, expected: &str) -> ApiError {
    let mut shown = v.to_string();
    if shown.chars().count() > 100 {
        shown = shown.chars().take(100).chain("...".chars()).collect();
    }
    ApiError::invalid(format!(
        "Invalid value {shown} for parameter '{path}' supplied: expected {expected}, got {}.",
        type_name(v)
    ))
}

fn as_string(v: &Value, path: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(bad_type(path, other, "a string")),
    }
}

/// An int64: a JSON integer, an integral float, or a string of an integer (protobuf JSON).
fn as_i64(v: &Value, path: &str) -> Result<i64, ApiError> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(int64_of_f64)),
        Value::String(s) => int64_of_str(s),
        _ => None,
    };
    n.ok_or_else(|| bad_type(path, v, "an integer"))
}

/// An int64 from a JSON number that is not an i64: an integral float of a safe size.
fn int64_of_f64(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

/// An int64 from a JSON string (protobuf JSON writes int64 as strings).
fn int64_of_str(s: &str) -> Option<i64> {
    s.trim().parse::<i64>().ok()
}

/// A double from a JSON string: a number, or "NaN", "Infinity", "-Infinity".
fn double_of_str(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        other => other.parse::<f64>().ok(),
    }
}

/// A double: a JSON number, or a string of one, including "NaN", "Infinity", "-Infinity".
fn as_f64(v: &Value, path: &str) -> Result<f64, ApiError> {
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => double_of_str(s),
        _ => None,
    };
    x.ok_or_else(|| bad_type(path, v, "a number"))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ApiError> {
    v.as_array().ok_or_else(|| bad_type(path, v, "an array"))
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| bad_type(path, v, "an object"))
}

/// One `{key, value}` object; key required, value defaults to "".
fn key_value(item: &Value, path: &str) -> Result<(String, String), ApiError> {
    let obj = as_object(item, path)?;
    let field = |name: &str| -> Result<String, ApiError> {
        match obj.get(name).filter(|v| !v.is_null()) {
            None => Ok(String::new()),
            Some(v) => as_string(v, &format!("{path}.{name}")),
        }
    };
    let key = field("key")?;
    if key.is_empty() {
        return Err(ApiError::missing(&format!("{path}.key")));
    }
    Ok((key, field("value")?))
}

/// One metric object of a log-batch request.
fn metric_point(item: &Value, path: &str) -> Result<MetricPoint, ApiError> {
    let obj = as_object(item, path)?;
    let field = |name: &str| obj.get(name).or_else(|| obj.get(&lower_camel(name))).filter(|v| !v.is_null());
    let key = match field("key") {
        Some(v) => as_string(v, &format!("{path}.key"))?,
        None => String::new(),
    };
    if key.is_empty() {
        return Err(ApiError::missing(&format!("{path}.key")));
    }
    let value = field("value")
        .ok_or_else(|| ApiError::missing(&format!("{path}.value")))
        .and_then(|v| as_f64(v, &format!("{path}.value")))?;
    let timestamp = field("timestamp")
        .ok_or_else(|| ApiError::missing(&format!("{path}.timestamp")))
        .and_then(|v| as_i64(v, &format!("{path}.timestamp")))?;
    let step = field("step").map(|v| as_i64(v, &format!("{path}.step"))).transpose()?.unwrap_or(0);
    Ok(MetricPoint { key, value, timestamp, step })
}

// ---------------------------------------------------------------------------------------
// Validation (MLflow's limits)
// ---------------------------------------------------------------------------------------

fn validate_key(kind: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid(format!("A {kind} key must not be empty.")));
    }
    let len = key.chars().count();
    if len > MAX_KEY_LENGTH {
        return Err(ApiError::invalid(format!(
            "{kind} key '{}...' is {len} characters long, over the limit of {MAX_KEY_LENGTH} characters.",
            key.chars().take(50).collect::<String>()
        )));
    }
    Ok(())
}

fn validate_param(key: &str, value: &str) -> Result<(), ApiError> {
    validate_key("param", key)?;
    let len = value.chars().count();
    if len > MAX_PARAM_VALUE_LENGTH {
        return Err(ApiError::invalid(format!(
            "The value of param '{key}' is {len} characters long, over the limit of {MAX_PARAM_VALUE_LENGTH} characters."
        )));
    }
    Ok(())
}

fn validate_tag(key: &str, value: &str) -> Result<(), ApiError> {
    validate_key("tag", key)?;
    let len = value.chars().count();
    if len > MAX_TAG_VALUE_LENGTH {
        return Err(ApiError::invalid(format!(
            "The value of tag '{key}' is {len} characters long, over the limit of {MAX_TAG_VALUE_LENGTH} characters."
        )));
    }
    Ok(())
}

fn validate_tags(tags: &[(String, String)]) -> Result<(), ApiError> {
    tags.iter().try_for_each(|(k, v)| validate_tag(k, v))
}

fn validate_status(v: &Value) -> Result<String, ApiError> {
    let status = match v {
        Value::String(s) => RUN_STATUSES.iter().find(|st| **st == s.as_str()).copied(),
        // protobuf JSON also accepts an enum's number.
        Value::Number(n) => {
            n.as_u64().and_then(|i| i.checked_sub(1)).and_then(|i| RUN_STATUSES.get(i as usize).copied())
        }
        _ => None,
    };
    status.map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid value {v} for parameter 'status' supplied: expected one of {}.",
            RUN_STATUSES.join(", ")
        ))
    })
}

fn validate_experiment_id(experiment_id: &str) -> Result<(), ApiError> {
    // Ids are decimal strings; anything else cannot name an experiment.
    if experiment_id.is_empty() || !experiment_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::experiment_not_found(experiment_id));
    }
    Ok(())
}

/// Keep the last value of each key, in first-seen order.
fn dedup_last(items: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(items.len());
    for (k, v) in items {
        match out.iter_mut().find(|(ok, _)| *ok == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Response shapes
// ---------------------------------------------------------------------------------------

/// A double as protobuf JSON writes it: NaN and infinities as strings.
fn f64_json(x: f64) -> Value {
    if x.is_nan() {
        json!("NaN")
    } else if x == f64::INFINITY {
        json!("Infinity")
    } else if x == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(x)
    }
}

fn key_values_json(items: &[(String, String)]) -> Value {
    items.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect()
}

fn metric_json(m: &MetricPoint) -> Value {
    json!({ "key": m.key, "value": f64_json(m.value), "timestamp": m.timestamp, "step": m.step })
}

fn experiment_json(e: &ExperimentRecord) -> Value {
    json!({
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage,
        "last_update_time": e.last_update_time,
        "creation_time": e.creation_time,
        "tags": key_values_json(&e.tags),
    })
}

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn run_info_json(r: &RunRecord) -> Value {
    let mut info = json!({
        "run_id": r.run_id,
        "run_uuid": r.run_id,
        "run_name": r.run_name,
        "experiment_id": r.experiment_id,
        "user_id": tag(&r.tags, TAG_USER).unwrap_or(""),
        "status": r.status,
        "start_time": r.start_time,
        "artifact_uri": r.artifact_uri,
        "lifecycle_stage": r.lifecycle_stage,
    });
    if let Some(end) = r.end_time {
        info["end_time"] = json!(end);
    }
    info
}

fn run_json(r: &RunRecord) -> Value {
    let mut tags = r.tags.clone();
    if tag(&tags, TAG_RUN_NAME).is_none() && !r.run_name.is_empty() {
        tags.push((TAG_RUN_NAME.to_owned(), r.run_name.clone()));
    }
    json!({
        "info": run_info_json(r),
        "data": {
            "metrics": r.metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "params": key_values_json(&r.params),
            "tags": key_values_json(&tags),
        },
        "inputs": {},
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---------------------------------------------------------------------------------------
// Run names
// ---------------------------------------------------------------------------------------

const NAME_ADJECTIVES: [&str; 32] = [
    "amber", "bold", "brave", "bright", "calm", "clever", "crisp", "daring", "eager", "fancy", "gentle", "glad",
    "golden", "honest", "humble", "jolly", "keen", "lively", "lucky", "merry", "nimble", "noble", "polite", "proud",
    "quick", "quiet", "rare", "silver", "steady", "swift", "tidy", "witty",
];

const NAME_NOUNS: [&str; 32] = [
    "anchor", "badger", "beacon", "bison", "canyon", "capstan", "comet", "condor", "delta", "falcon", "fjord",
    "glacier", "harbor", "heron", "island", "kestrel", "lagoon", "lantern", "marlin", "meadow", "otter", "panda",
    "pelican", "quartz", "raven", "reef", "sail", "sparrow", "summit", "tide", "walrus", "willow",
];

/// An MLflow-style run name: `adjective-noun-NNN`.
pub fn generate_run_name() -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let adjective = NAME_ADJECTIVES[bytes[0] as usize % NAME_ADJECTIVES.len()];
    let noun = NAME_NOUNS[bytes[1] as usize % NAME_NOUNS.len()];
    let number = u16::from_le_bytes([bytes[2], bytes[3]]) % 1000;
    format!("{adjective}-{noun}-{number}")
}

// ---------------------------------------------------------------------------------------
// Handlers: experiments
// ---------------------------------------------------------------------------------------

async fn create_experiment(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let name = req.req_str("name")?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid(format!("Invalid experiment name: '{name}'")));
    }
    // artifact_location is accepted but the store chooses it (mlflow-artifacts:/<id>).
    req.opt_str("artifact_location")?;
    let tags = dedup_last(req.key_values("tags")?);
    validate_tags(&tags)?;
    let experiment_id = store.create_experiment(&name, &tags).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(format!("Experiment(name={name}) already exists.")),
        other => other.into(),
    })?;
    Ok(Json(json!({ "experiment_id": experiment_id })))
}

async fn get_experiment(
    State(store): State<Store>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let req = Fields::from_query(query)?;
    let experiment_id = req.req_str("experiment_id")?;
    validate_experiment_id(&experiment_id)?;
    let experiment =
        store.get_experiment(&experiment_id).await?.ok_or_else(|| ApiError::experiment_not_found(&experiment_id))?;
    Ok(Json(json!({ "experiment": experiment_json(&experiment) })))
}

async fn get_experiment_by_name(
    State(store): State<Store>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let req = Fields::from_query(query)?;
    let name = req.req_str("experiment_name")?;
    let experiment = store
        .get_experiment_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Could not find experiment with name '{name}'")))?;
    Ok(Json(json!({ "experiment": experiment_json(&experiment) })))
}

// ---------------------------------------------------------------------------------------
// Handlers: runs
// ---------------------------------------------------------------------------------------

/// The experiment a new run goes to: the one asked for (it must exist and be active), or
/// the "Default" experiment when none is given or the client's default id "0" is absent.
async fn run_experiment(store: &Store, requested: Option<String>) -> Result<String, ApiError> {
    let requested = requested.filter(|id| !id.is_empty());
    let Some(experiment_id) = requested else {
        return Ok(store.get_or_create_experiment(DEFAULT_EXPERIMENT_NAME).await?);
    };
    validate_experiment_id(&experiment_id)?;
    match store.get_experiment(&experiment_id).await? {
        Some(e) if e.lifecycle_stage != "active" => Err(ApiError::invalid(format!(
            "The experiment {experiment_id} must be in the 'active' state. Current state is {}.",
            e.lifecycle_stage
        ))),
        Some(_) => Ok(experiment_id),
        None if experiment_id == "0" => Ok(store.get_or_create_experiment(DEFAULT_EXPERIMENT_NAME).await?),
        None => Err(ApiError::experiment_not_found(&experiment_id)),
    }
}

async fn create_run(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let requested_experiment = req.opt_str("experiment_id")?;
    let user_id = req.opt_str("user_id")?.filter(|u| !u.is_empty());
    let start_time = req.opt_i64("start_time")?.unwrap_or_else(now_ms);
    let run_name = req.opt_str("run_name")?.filter(|n| !n.is_empty());
    let mut tags = dedup_last(req.key_values("tags")?);
    validate_tags(&tags)?;

    let name_tag = tag(&tags, TAG_RUN_NAME).map(str::to_owned);
    if let (Some(name), Some(tagged)) = (&run_name, &name_tag) {
        if name != tagged {
            return Err(ApiError::invalid(format!(
                "Both 'run_name' argument and '{TAG_RUN_NAME}' tag are specified, but with different \
             values (run_name='{name}', {TAG_RUN_NAME}='{tagged}')."
            )));
        }
    }
    let run_name = run_name.or(name_tag.clone()).unwrap_or_else(generate_run_name);
    validate_tag(TAG_RUN_NAME, &run_name)?;
    if name_tag.is_none() {
        tags.push((TAG_RUN_NAME.to_owned(), run_name.clone()));
    }
    if let Some(user) = user_id {
        if tag(&tags, TAG_USER).is_none() {
            tags.push((TAG_USER.to_owned(), user));
        }
    }

    let experiment_id = run_experiment(&store, requested_experiment).await?;
    let run = store.create_run(&experiment_id, &run_name, start_time, &tags).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::experiment_not_found(&experiment_id),
        other => other.into(),
    })?;
    Ok(Json(json!({ "run": run_json(&run) })))
}

async fn get_run(State(store): State<Store>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> ApiResult {
    let req = Fields::from_query(query)?;
    let run_id = req.run_id()?;
    let run = store.get_run(&run_id).await?.ok_or_else(|| ApiError::run_not_found(&run_id))?;
    let mut answer = run_json(&run);
    let (inputs, outputs) = common::run_io_json(&store.run_io(&run_id).await?);
    answer["inputs"] = inputs;
    answer["outputs"] = outputs;
    Ok(Json(json!({ "run": answer })))
}

async fn update_run(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let run_id = req.run_id()?;
    let status = req.raw("status").map(validate_status).transpose()?;
    let end_time = req.opt_i64("end_time")?;
    let run_name = req.opt_str("run_name")?.filter(|n| !n.is_empty());
    if let Some(name) = &run_name {
        validate_tag(TAG_RUN_NAME, name)?;
    }
    let mut run = store
        .update_run(&run_id, status.as_deref(), end_time, run_name.as_deref())
        .await
        .map_err(|e| ApiError::from_run_op(&run_id, e))?;
    if let Some(name) = &run_name {
        sync_run_name_tag(&store, &mut run, name).await?;
    }
    Ok(Json(json!({ "run_info": run_info_json(&run) })))
}

/// Keep the `mlflow.runName` tag equal to a run's new name (as MLflow does).
async fn sync_run_name_tag(store: &Store, run: &mut RunRecord, name: &str) -> Result<(), ApiError> {
    if tag(&run.tags, TAG_RUN_NAME) != Some(name) {
        let tags = [(TAG_RUN_NAME.to_owned(), name.to_owned())];
        store.log_batch(&run.run_id, &[], &[], &tags).await.map_err(|e| ApiError::from_run_op(&run.run_id, e))?;
        run.tags.retain(|(k, _)| k != TAG_RUN_NAME);
        run.tags.extend(tags);
    }
    Ok(())
}

/// Write metrics, params and tags to a run; a `mlflow.runName` tag also renames the run
/// (as MLflow does).
async fn write_batch(
    store: &Store,
    run_id: &str,
    metrics: &[MetricPoint],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<(), ApiError> {
    store.log_batch(run_id, metrics, params, tags).await.map_err(|e| ApiError::from_run_op(run_id, e))?;
    if let Some(name) = tag(tags, TAG_RUN_NAME).filter(|n| !n.is_empty()) {
        store.update_run(run_id, None, None, Some(name)).await.map_err(|e| ApiError::from_run_op(run_id, e))?;
    }
    Ok(())
}

async fn log_metric(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let run_id = req.run_id()?;
    let key = req.req_str("key")?;
    validate_key("metric", &key)?;
    let value = req.req_f64("value")?;
    let timestamp = req.req_i64("timestamp")?;
    let step = req.opt_i64("step")?.unwrap_or(0);
    let point = MetricPoint { key, value, timestamp, step };
    write_batch(&store, &run_id, &[point], &[], &[]).await?;
    Ok(Json(json!({})))
}

async fn log_param(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let run_id = req.run_id()?;
    let key = req.req_str("key")?;
    let value = req.opt_str("value")?.unwrap_or_default();
    validate_param(&key, &value)?;
    write_batch(&store, &run_id, &[], &[(key, value)], &[]).await?;
    Ok(Json(json!({})))
}

async fn set_tag(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = Fields::from_body(body)?;
    let run_id = req.run_id()?;
    let key = req.req_str("key")?;
    let value = req.opt_str("value")?.unwrap_or_default();
    validate_tag(&key, &value)?;
    write_batch(&store, &run_id, &[], &[], &[(key, value)]).await?;
    Ok(Json(json!({})))
}

async fn log_batch(State(store): State<Store>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let batch = parse_log_batch(&read_body(body)?)?;
    write_batch(&store, &batch.run_id, &batch.metrics, &batch.params, &batch.tags).await?;
    Ok(Json(json!({})))
}

/// A log-batch request, read and checked: what is written.
#[derive(Debug, Clone, PartialEq)]
struct LogBatch {
    run_id: String,
    metrics: Vec<MetricPoint>,
    /// One per key (the same value given twice is kept once).
    params: Vec<(String, String)>,
    /// The last value of each key.
    tags: Vec<(String, String)>,
}

/// Read a log-batch body: the typed fast path ([`batch_body`]) where it applies, else the
/// general parse, which the fast path agrees with and which names the field of an error.
fn parse_log_batch(body: &[u8]) -> Result<LogBatch, ApiError> {
    let Some(fast) = batch_body::parse(body) else {
        return parse_log_batch_general(Fields::from_bytes(body)?);
    };
    check_batch_limits(fast.metrics.len(), fast.params.len(), fast.tags.len())?;
    let mut metrics = Vec::with_capacity(fast.metrics.len());
    for m in &fast.metrics {
        validate_key("metric", m.key)?;
        metrics.push(MetricPoint { key: m.key.to_owned(), value: m.value, timestamp: m.timestamp, step: m.step });
    }
    let mut params = Vec::with_capacity(fast.params.len());
    for &(key, value) in &fast.params {
        validate_param(key, value)?;
        add_param(&mut params, key.to_owned(), value.to_owned())?;
    }
    let mut tags = Vec::with_capacity(fast.tags.len());
    for &(key, value) in &fast.tags {
        validate_tag(key, value)?;
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(LogBatch { run_id: fast.run_id.to_owned(), metrics, params, tags: dedup_last(tags) })
}

/// Read a log-batch request from its fields (any body; errors name the field).
fn parse_log_batch_general(req: Fields) -> Result<LogBatch, ApiError> {
    let run_id = req.run_id()?;
    let empty = Vec::new();
    let list = |name: &str| -> Result<&Vec<Value>, ApiError> {
        req.raw(name).map(|v| as_array(v, name)).transpose().map(|l| l.unwrap_or(&empty))
    };
    let (metrics, params, tags) = (list("metrics")?, list("params")?, list("tags")?);

    // Limits first, before looking at any item (as MLflow does).
    check_batch_limits(metrics.len(), params.len(), tags.len())?;

    let mut points: Vec<MetricPoint> = Vec::with_capacity(metrics.len());
    for (i, item) in metrics.iter().enumerate() {
        let point = metric_point(item, &format!("metrics[{i}]"))?;
        validate_key("metric", &point.key)?;
        // An identical point twice in one request is stored once: the store skips a point it
        // already has (a linear scan here cost more than the whole database write).
        points.push(point);
    }

    let mut param_list: Vec<(String, String)> = Vec::with_capacity(params.len());
    for (i, item) in params.iter().enumerate() {
        let (key, value) = key_value(item, &format!("params[{i}]"))?;
        validate_param(&key, &value)?;
        add_param(&mut param_list, key, value)?;
    }

    let mut tag_list = Vec::with_capacity(tags.len());
    for (i, item) in tags.iter().enumerate() {
        let (key, value) = key_value(item, &format!("tags[{i}]"))?;
        validate_tag(&key, &value)?;
        tag_list.push((key, value));
    }
    Ok(LogBatch { run_id, metrics: points, params: param_list, tags: dedup_last(tag_list) })
}

/// MLflow's log-batch limits on the item counts.
fn check_batch_limits(metrics: usize, params: usize, tags: usize) -> Result<(), ApiError> {
    for (kind, got, limit) in
        [("metrics", metrics, MAX_BATCH_METRICS), ("params", params, MAX_BATCH_PARAMS), ("tags", tags, MAX_BATCH_TAGS)]
    {
        if got > limit {
            return Err(ApiError::invalid(format!(
                "A batch logging request can contain at most {limit} {kind}. Got {got} {kind}. \
                 Please split up {kind} across multiple requests and try again."
            )));
        }
    }
    let total = metrics + params + tags;
    if total > MAX_BATCH_TOTAL {
        return Err(ApiError::invalid(format!(
            "A batch logging request can contain at most {MAX_BATCH_TOTAL} total metrics, params, and tags. \
             Got {total} items. Please split up metrics, params, and tags across multiple requests and try again."
        )));
    }
    Ok(())
}

/// Add a param of a request: the same key again with the same value is kept once; with
/// another value it is an error.
fn add_param(params: &mut Vec<(String, String)>, key: String, value: String) -> Result<(), ApiError> {
    match params.iter().find(|(k, _)| *k == key) {
        Some((_, v)) if *v == value => Ok(()),
        Some((_, v)) => Err(ApiError::invalid(format!(
            "Duplicate parameter key '{key}' submitted with different values ('{v}' and '{value}'). \
             Please ensure the request contains only one param value per param key."
        ))),
        None => {
            params.push((key, value));
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handlers: metrics
// ---------------------------------------------------------------------------------------

async fn get_metric_history(
    State(store): State<Store>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let req = Fields::from_query(query)?;
    let run_id = req.run_id()?;
    let key = req.req_str("metric_key")?;
    let max_results = req.opt_i64("max_results")?;
    if let Some(n) = max_results.filter(|n| *n < 1) {
        return Err(ApiError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be at least 1."
        )));
    }
    let offset = match req.opt_str("page_token")?.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => {
            token.parse::<usize>().map_err(|_| ApiError::invalid(format!("Invalid page token '{token}'.")))?
        }
    };
    // One page read from the store (an index range), however long the history.
    let limit = max_results.map_or(i64::MAX as u64, |n| n as u64);
    let (page, more) = store
        .metric_history_page(&run_id, &key, offset as u64, limit)
        .await
        .map_err(|e| ApiError::from_run_op(&run_id, e))?;
    // Written straight from the points: a map per point would cost more than the read.
    let next_page_token = more.then(|| (offset + page.len()).to_string());
    Ok(Json(HistoryPage { metrics: page.iter().map(MetricOut).collect(), next_page_token }).into_response())
}

/// A page of metrics/get-history, serialized without building a JSON value per point.
#[derive(serde::Serialize)]
struct HistoryPage<'a> {
    metrics: Vec<MetricOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// A metric as [`metric_json`] writes it (NaN and infinities as strings).
struct MetricOut<'a>(&'a MetricPoint);

impl serde::Serialize for MetricOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let m = self.0;
        let mut out = serializer.serialize_struct("Metric", 4)?;
        out.serialize_field("key", &m.key)?;
        match m.value {
            v if v.is_nan() => out.serialize_field("value", "NaN")?,
            f64::INFINITY => out.serialize_field("value", "Infinity")?,
            f64::NEG_INFINITY => out.serialize_field("value", "-Infinity")?,
            v => out.serialize_field("value", &v)?,
        }
        out.serialize_field("timestamp", &m.timestamp)?;
        out.serialize_field("step", &m.step)?;
        out.end()
    }
}

/// Downsampled histories of one metric of several runs, for charts (at most `max_results`
/// points per run, 320 by default).
async fn get_metric_history_bulk_interval(
    State(store): State<Store>,
    query: common::QueryParams,
    body: common::Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let p = tracking::bulk_interval_params(&req)?;
    let points = store
        .metric_history_bulk_interval(&p.run_ids, &p.metric_key, p.start_step, p.end_step, p.max_results)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            other => other.into(),
        })?;
    let metrics: Vec<Value> = points
        .iter()
        .map(|(run_id, m)| {
            let mut v = metric_json(m);
            v["run_id"] = json!(run_id);
            v
        })
        .collect();
    Ok(Json(json!({ "metrics": metrics })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_names() {
        assert_eq!(lower_camel("run_id"), "runId");
        assert_eq!(lower_camel("max_results"), "maxResults");
        assert_eq!(lower_camel("key"), "key");
    }

    #[test]
    fn int64_accepts_numbers_and_strings() {
        assert_eq!(as_i64(&json!(5), "x").unwrap(), 5);
        assert_eq!(as_i64(&json!("-7"), "x").unwrap(), -7);
        assert_eq!(as_i64(&json!(3.0), "x").unwrap(), 3);
        assert_eq!(as_i64(&json!("1700000000000"), "x").unwrap(), 1_700_000_000_000);
        for bad in [json!(1.5), json!("abc"), json!(true), json!([1]), json!(1e20)] {
            let e = as_i64(&bad, "timestamp").unwrap_err();
            assert_eq!(e.error_code, "INVALID_PARAMETER_VALUE");
            assert!(e.message.contains("'timestamp'"), "{}", e.message);
        }
    }

    #[test]
    fn doubles_accept_protobuf_special_strings() {
        assert!(as_f64(&json!("NaN"), "v").unwrap().is_nan());
        assert_eq!(as_f64(&json!("Infinity"), "v").unwrap(), f64::INFINITY);
        assert_eq!(as_f64(&json!("-Infinity"), "v").unwrap(), f64::NEG_INFINITY);
        assert_eq!(as_f64(&json!(0.25), "v").unwrap(), 0.25);
        assert_eq!(as_f64(&json!("1.5"), "v").unwrap(), 1.5);
        assert!(as_f64(&json!("fast"), "v").is_err());
        assert!(as_f64(&json!(null), "v").is_err());
        assert_eq!(f64_json(f64::NAN), json!("NaN"));
        assert_eq!(f64_json(f64::INFINITY), json!("Infinity"));
        assert_eq!(f64_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(f64_json(2.5), json!(2.5));
    }

    #[test]
    fn statuses() {
        assert_eq!(validate_status(&json!("FINISHED")).unwrap(), "FINISHED");
        assert_eq!(validate_status(&json!(5)).unwrap(), "KILLED");
        assert!(validate_status(&json!("DONE")).is_err());
        assert!(validate_status(&json!("finished")).is_err());
        assert!(validate_status(&json!(0)).is_err());
    }

    #[test]
    fn run_names_look_like_mlflow_s() {
        for _ in 0..50 {
            let name = generate_run_name();
            let parts: Vec<&str> = name.split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(NAME_ADJECTIVES.contains(&parts[0]));
            assert!(NAME_NOUNS.contains(&parts[1]));
            assert!(parts[2].parse::<u16>().unwrap() < 1000);
        }
    }

    #[test]
    fn store_errors_map_to_mlflow_codes() {
        let e: ApiError =
            StoreError::ParamChanged { run_id: "r".into(), key: "lr".into(), old: "0.1".into(), new: "0.2".into() }
                .into();
        assert_eq!((e.status, e.error_code), (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"));
        assert!(e.message.contains("lr") && e.message.contains("0.1") && e.message.contains("0.2"));
        let e: ApiError = StoreError::NotFound("run x".into()).into();
        assert_eq!((e.status, e.error_code), (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"));
        let e: ApiError = StoreError::AlreadyExists("experiment x".into()).into();
        assert_eq!((e.status, e.error_code), (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"));
        let json_err = serde_json::from_str::<Value>("{").unwrap_err();
        let e: ApiError = StoreError::Json(json_err).into();
        assert_eq!((e.status, e.error_code), (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"));
    }
}
