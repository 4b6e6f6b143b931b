//! MLflow 3 logged models: `POST logged-models` (create), `POST logged-models/search`,
//! `GET|PATCH|DELETE logged-models/{model_id}` (get, finalize, delete),
//! `PATCH logged-models/{model_id}/tags`, `DELETE logged-models/{model_id}/tags/{key}` and
//! `POST logged-models/{model_id}/params`.
//!
//! A logged model's artifacts live at `<experiment artifact location>/models/<model_id>/
//! artifacts` (`mlflow-artifacts:/<experiment>/models/<model_id>/artifacts`), where the
//! client uploads them through the artifacts proxy.

use axum::{
    extract::{Path, State},
    Json,
};
use capstan_search::{Expr, SearchTarget};
use capstan_store::registry::{LoggedModelQuery, LoggedModelRecord};
use capstan_store::{Store, StoreError};
use serde_json::{json, Value};

use super::common::{filter_error, logged_model_json, with_token, Body, QueryParams};
use super::{
    as_array, as_object, as_string, validate_experiment_id, validate_param, validate_tag, ApiError, ApiResult, Fields,
};

/// Default and largest `max_results` of logged-models/search.
const SEARCH_DEFAULT: usize = 100;
const SEARCH_LIMIT: usize = 50_000;
/// MLflow's LoggedModelStatus values, by their protobuf numbers 1, 2, 3.
const STATUSES: [&str; 3] = ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"];

fn not_found(model_id: &str) -> ApiError {
    ApiError::not_found(format!("Logged model with ID '{model_id}' not found."))
}

fn model_error(model_id: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(what) if what.starts_with("logged model") => not_found(model_id),
        other => other.into(),
    }
}

/// The model, which must exist and not be deleted.
async fn active_model(store: &Store, model_id: &str) -> Result<LoggedModelRecord, ApiError> {
    match store.get_logged_model(model_id).await? {
        Some(m) if m.lifecycle_stage == "active" => Ok(m),
        _ => Err(not_found(model_id)),
    }
}

/// A logged model name: non-empty, without `/ : . % " '` (MLflow's rule).
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.contains(['/', ':', '.', '%', '"', '\'']) {
        return Err(ApiError::invalid(format!(
            "Invalid model name ('{name}') provided. Model name must be a non-empty string and cannot contain the \
             following characters: ('/', ':', '.', '%', '\"', \"'\")"
        )));
    }
    Ok(())
}

fn params(req: &Fields) -> Result<Vec<(String, String)>, ApiError> {
    let params = req.pairs("params")?;
    for (k, v) in &params {
        validate_param(k, v)?;
    }
    Ok(params)
}

fn tags(req: &Fields) -> Result<Vec<(String, String)>, ApiError> {
    let tags = req.pairs("tags")?;
    for (k, v) in &tags {
        validate_tag(k, v)?;
    }
    Ok(tags)
}

pub(super) async fn create(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    validate_experiment_id(&experiment_id)?;
    let name = match req.non_empty("name")? {
        Some(name) => {
            check_name(&name)?;
            name
        }
        None => super::generate_run_name(),
    };
    let model_type = req.non_empty("model_type")?;
    let source_run_id = req.non_empty("source_run_id")?;
    let (params, tags) = (params(&req)?, tags(&req)?);
    match store.get_experiment(&experiment_id).await? {
        None => return Err(ApiError::experiment_not_found(&experiment_id)),
        Some(e) if e.lifecycle_stage != "active" => {
            return Err(ApiError::invalid(format!(
                "The experiment {experiment_id} must be in the 'active' state. Current state is {}.",
                e.lifecycle_stage
            )));
        }
        Some(_) => {}
    }
    let model = store
        .create_logged_model(&experiment_id, &name, model_type.as_deref(), source_run_id.as_deref(), &params, &tags)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::experiment_not_found(&experiment_id),
            other => other.into(),
        })?;
    Ok(Json(json!({ "model": logged_model_json(&model) })))
}

pub(super) async fn get(
    State(store): State<Store>,
    Path(model_id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let allow_deleted = req.opt_bool("allow_deleted")?.unwrap_or(false);
    let model = match store.get_logged_model(&model_id).await? {
        Some(m) if allow_deleted || m.lifecycle_stage == "active" => m,
        _ => return Err(not_found(&model_id)),
    };
    Ok(Json(json!({ "model": logged_model_json(&model) })))
}

pub(super) async fn finalize(
    State(store): State<Store>,
    Path(model_id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let raw = req.raw("status").ok_or_else(|| ApiError::missing("status"))?;
    let status = match raw {
        Value::String(s) => STATUSES.iter().find(|st| **st == s.as_str()).copied(),
        Value::Number(n) => n.as_u64().and_then(|i| i.checked_sub(1)).and_then(|i| STATUSES.get(i as usize).copied()),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid value {raw} for parameter 'status' supplied: expected one of {}.",
            STATUSES.join(", ")
        ))
    })?;
    active_model(&store, &model_id).await?;
    let model = store.finalize_logged_model(&model_id, status).await.map_err(|e| model_error(&model_id, e))?;
    Ok(Json(json!({ "model": logged_model_json(&model) })))
}

pub(super) async fn delete(
    State(store): State<Store>,
    Path(model_id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    Fields::from_request(query, body)?;
    active_model(&store, &model_id).await?;
    store.delete_logged_model(&model_id).await.map_err(|e| model_error(&model_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn set_tags(
    State(store): State<Store>,
    Path(model_id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let tags = tags(&req)?;
    active_model(&store, &model_id).await?;
    let model = store.set_logged_model_tags(&model_id, &tags).await.map_err(|e| model_error(&model_id, e))?;
    Ok(Json(json!({ "model": logged_model_json(&model) })))
}

pub(super) async fn delete_tag(State(store): State<Store>, Path((model_id, key)): Path<(String, String)>) -> ApiResult {
    active_model(&store, &model_id).await?;
    store.delete_logged_model_tag(&model_id, &key).await.map_err(|e| match e {
        StoreError::NotFound(what) if what.starts_with("tag") => {
            ApiError::not_found(format!("No tag with key '{key}' found for model with ID '{model_id}'."))
        }
        other => model_error(&model_id, other),
    })?;
    Ok(Json(json!({})))
}

pub(super) async fn log_params(
    State(store): State<Store>,
    Path(model_id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let params = params(&req)?;
    active_model(&store, &model_id).await?;
    store.log_logged_model_params(&model_id, &params).await.map_err(|e| model_error(&model_id, e))?;
    Ok(Json(json!({})))
}

/// A logged-model filter: attribute `name` and tags parse as a registered-model filter,
/// params, tags and run attributes (`run_id` is the source run, `status`) as a run filter.
fn logged_model_filter(text: &str) -> Result<Option<Expr>, ApiError> {
    capstan_search::parse_filter_for(SearchTarget::RegisteredModels, text)
        .or_else(|_| capstan_search::parse_filter_for(SearchTarget::Runs, text))
        .map_err(|e| filter_error(text, &e))
}

pub(super) async fn search(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_ids = req.str_list("experiment_ids")?;
    for id in &experiment_ids {
        validate_experiment_id(id).map_err(|_| ApiError::invalid(format!("Invalid experiment ID '{id}'.")))?;
    }
    let max_results = req.max_results(SEARCH_DEFAULT, SEARCH_LIMIT)?;
    let filter = logged_model_filter(&req.opt_str("filter")?.unwrap_or_default())?;
    if req.raw("datasets").is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(ApiError::invalid(
            "'datasets' is not supported by this server's logged-model search (logged models carry no metrics here).",
        ));
    }
    let mut order_by = Vec::new();
    if let Some(items) = req.raw("order_by") {
        for (i, item) in as_array(items, "order_by")?.iter().enumerate() {
            let path = format!("order_by[{i}]");
            let obj = as_object(item, &path)?;
            let field = obj
                .get("field_name")
                .map(|v| as_string(v, &format!("{path}.field_name")))
                .transpose()?
                .ok_or_else(|| ApiError::missing(&format!("{path}.field_name")))?;
            let field = field.strip_prefix("attributes.").unwrap_or(&field).to_owned();
            if !matches!(
                field.as_str(),
                "name"
                    | "model_id"
                    | "creation_timestamp"
                    | "last_updated_timestamp"
                    | "status"
                    | "model_type"
                    | "source_run_id"
            ) {
                return Err(ApiError::invalid(format!(
                    "Invalid order_by field '{field}': this server orders logged models by name, model_id, \
                     creation_timestamp, last_updated_timestamp, status, model_type or source_run_id."
                )));
            }
            let ascending = match obj.get("ascending") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(ApiError::invalid(format!("Invalid value {v} for '{path}.ascending'."))),
            };
            order_by.push((field, ascending));
        }
    }
    let offset = req.page_offset()?;
    let page = store
        .search_logged_models(&LoggedModelQuery {
            experiment_ids: &experiment_ids,
            filter: filter.as_ref(),
            order_by: &order_by,
            max_results,
            offset,
        })
        .await?;
    let answer = json!({ "models": page.items.iter().map(logged_model_json).collect::<Vec<_>>() });
    Ok(Json(with_token(answer, page.next_offset)))
}
