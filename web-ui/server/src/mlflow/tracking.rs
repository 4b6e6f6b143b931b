//! Experiment and run endpoints beyond create/get/log: experiments/{update, delete, restore,
//! set-experiment-tag, delete-experiment-tag, search}, runs/{delete, restore, delete-tag,
//! search, log-inputs, outputs, log-model}, metrics/get-history-bulk-interval, and `GET /version`.

use axum::{extract::State, Json};
use capstan_search::SearchTarget;
use capstan_store::runs_search::{DatasetInputRecord, DatasetRecord, ExperimentQuery, RunQuery};
use capstan_store::{Store, StoreError};
use serde_json::{json, Value};

use super::common::{run_io_json, with_token, Body, QueryParams};
use super::{
    as_array, as_i64, as_object, as_string, experiment_json, key_value, run_json, validate_experiment_id, validate_tag,
    ApiError, ApiResult, Fields,
};

/// The MLflow version this API answers as (`GET /version`): the client release it is tested
/// against.
pub const MLFLOW_VERSION: &str = "3.17.2";

/// Default and largest `max_results` of experiments/search and runs/search (MLflow's).
const SEARCH_DEFAULT: usize = 1000;
const SEARCH_LIMIT: usize = 50_000;
/// Most datasets in one log-inputs request, and MLflow's size limits of their fields.
const MAX_DATASETS: usize = 1000;
const MAX_DATASET_NAME: usize = 500;
const MAX_DATASET_DIGEST: usize = 36;
const MAX_DATASET_SOURCE: usize = 65_535;
const MAX_DATASET_SCHEMA: usize = 1_048_575;
const MAX_DATASET_PROFILE: usize = 16_777_215;
const MAX_EXPERIMENT_NAME: usize = 500;
/// Most runs in one get-history-bulk-interval request, and the most points per run.
const BULK_MAX_RUNS: usize = 100;
const BULK_MAX_RESULTS: i64 = 2500;
const BULK_DEFAULT_RESULTS: i64 = 320;

/// `GET /version`: the MLflow version string, as text.
pub(super) async fn version() -> &'static str {
    MLFLOW_VERSION
}

fn experiment_op_error(experiment_id: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(what) if what.starts_with("experiment") => ApiError::experiment_not_found(experiment_id),
        StoreError::NotFound(what) => ApiError::not_found(format!("No {what} exists")),
        other => other.into(),
    }
}

/// The experiment, which must be in `stage` (MLflow answers RESOURCE_DOES_NOT_EXIST
/// otherwise, as if it were not there).
async fn experiment_in_stage(store: &Store, experiment_id: &str, stage: Option<&str>) -> Result<(), ApiError> {
    validate_experiment_id(experiment_id)?;
    match store.get_experiment(experiment_id).await? {
        Some(e) if stage.is_none_or(|s| e.lifecycle_stage == s) => Ok(()),
        _ => Err(ApiError::experiment_not_found(experiment_id)),
    }
}

pub(super) async fn update_experiment(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    let new_name = req.req_str("new_name")?;
    if new_name.trim().is_empty() || new_name.chars().count() > MAX_EXPERIMENT_NAME {
        return Err(ApiError::invalid(format!(
            "Invalid experiment name: '{new_name}' (it must be non-blank and at most {MAX_EXPERIMENT_NAME} characters)"
        )));
    }
    validate_experiment_id(&experiment_id)?;
    let experiment =
        store.get_experiment(&experiment_id).await?.ok_or_else(|| ApiError::experiment_not_found(&experiment_id))?;
    if experiment.lifecycle_stage != "active" {
        return Err(ApiError::invalid_state("Cannot rename a non-active experiment."));
    }
    store.rename_experiment(&experiment_id, &new_name).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => {
            ApiError::already_exists(format!("Experiment(name={new_name}) already exists."))
        }
        other => experiment_op_error(&experiment_id, other),
    })?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_experiment(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    experiment_in_stage(&store, &experiment_id, Some("active")).await?;
    store
        .set_experiment_lifecycle(&experiment_id, "deleted")
        .await
        .map_err(|e| experiment_op_error(&experiment_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn restore_experiment(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    experiment_in_stage(&store, &experiment_id, Some("deleted")).await?;
    store
        .set_experiment_lifecycle(&experiment_id, "active")
        .await
        .map_err(|e| experiment_op_error(&experiment_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn set_experiment_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    let key = req.req_str("key")?;
    let value = req.opt_str("value")?.unwrap_or_default();
    validate_tag(&key, &value)?;
    experiment_in_stage(&store, &experiment_id, None).await?;
    store.set_experiment_tag(&experiment_id, &key, &value).await.map_err(|e| experiment_op_error(&experiment_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_experiment_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_id = req.req_str("experiment_id")?;
    let key = req.req_str("key")?;
    experiment_in_stage(&store, &experiment_id, None).await?;
    store.delete_experiment_tag(&experiment_id, &key).await.map_err(|e| match e {
        StoreError::NotFound(what) if what.starts_with("tag") => {
            ApiError::not_found(format!("No tag with name: {key} in experiment with id {experiment_id}"))
        }
        other => experiment_op_error(&experiment_id, other),
    })?;
    Ok(Json(json!({})))
}

pub(super) async fn search_experiments(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let max_results = req.max_results(SEARCH_DEFAULT, SEARCH_LIMIT)?;
    let view = req.view_type("view_type")?;
    let filter = req.filter(SearchTarget::Experiments)?;
    let order_by = req.order_by(SearchTarget::Experiments)?;
    let offset = req.page_offset()?;
    let page = store
        .search_experiments(&ExperimentQuery {
            filter: filter.as_ref(),
            order_by: &order_by,
            view,
            max_results,
            offset,
        })
        .await?;
    let answer = json!({ "experiments": page.items.iter().map(experiment_json).collect::<Vec<_>>() });
    Ok(Json(with_token(answer, page.next_offset)))
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

async fn set_run_stage(store: &Store, fields: Fields, stage: &str) -> ApiResult {
    let run_id = fields.run_id()?;
    store.set_run_lifecycle(&run_id, stage).await.map_err(|e| ApiError::from_run_op(&run_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_run(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    set_run_stage(&store, Fields::from_request(query, body)?, "deleted").await
}

pub(super) async fn restore_run(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    set_run_stage(&store, Fields::from_request(query, body)?, "active").await
}

/// The run, which must exist and be active (MLflow refuses changes to deleted runs).
async fn active_run(store: &Store, run_id: &str) -> Result<capstan_store::RunRecord, ApiError> {
    let run = store.get_run(run_id).await?.ok_or_else(|| ApiError::run_not_found(run_id))?;
    if run.lifecycle_stage != "active" {
        return Err(ApiError::invalid(format!(
            "The run {run_id} must be in the 'active' state. Current state is {}.",
            run.lifecycle_stage
        )));
    }
    Ok(run)
}

pub(super) async fn delete_run_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let run_id = req.run_id()?;
    let key = req.req_str("key")?;
    active_run(&store, &run_id).await?;
    store.delete_run_tag(&run_id, &key).await.map_err(|e| match e {
        StoreError::NotFound(what) if what.starts_with("tag") => {
            ApiError::not_found(format!("No tag with name: {key} in run with id {run_id}"))
        }
        other => ApiError::from_run_op(&run_id, other),
    })?;
    Ok(Json(json!({})))
}

pub(super) async fn search_runs(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let experiment_ids = req.str_list("experiment_ids")?;
    for id in &experiment_ids {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid(format!("Invalid experiment ID '{id}': it must be a decimal number.")));
        }
    }
    let max_results = req.max_results(SEARCH_DEFAULT, SEARCH_LIMIT)?;
    let view = req.view_type("run_view_type")?;
    let filter = req.filter(SearchTarget::Runs)?;
    let order_by = req.order_by(SearchTarget::Runs)?;
    let offset = req.page_offset()?;
    let page = store
        .search_runs(&RunQuery {
            experiment_ids: &experiment_ids,
            filter: filter.as_ref(),
            order_by: &order_by,
            view,
            max_results,
            offset,
        })
        .await?;
    let runs: Vec<Value> = page
        .items
        .iter()
        .map(|(run, io)| {
            let mut r = run_json(run);
            let (inputs, outputs) = run_io_json(io);
            r["inputs"] = inputs;
            r["outputs"] = outputs;
            r
        })
        .collect();
    Ok(Json(with_token(json!({ "runs": runs }), page.next_offset)))
}

fn text_field(obj: &serde_json::Map<String, Value>, path: &str, name: &str) -> Result<Option<String>, ApiError> {
    obj.get(name).filter(|v| !v.is_null()).map(|v| as_string(v, &format!("{path}.{name}"))).transpose()
}

fn limited(value: Option<String>, path: &str, limit: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > limit => {
            Err(ApiError::invalid(format!("'{path}' exceeds the maximum length of {limit} characters")))
        }
        other => Ok(other),
    }
}

/// One DatasetInput of a log-inputs request.
fn dataset_input(item: &Value, path: &str) -> Result<DatasetInputRecord, ApiError> {
    let obj = as_object(item, path)?;
    let dataset_path = format!("{path}.dataset");
    let d = obj.get("dataset").filter(|v| !v.is_null()).ok_or_else(|| ApiError::missing(&dataset_path))?;
    let d = as_object(d, &dataset_path)?;
    let required = |name: &str, limit: usize| -> Result<String, ApiError> {
        let field = format!("{dataset_path}.{name}");
        match limited(text_field(d, &dataset_path, name)?, &field, limit)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(&field)),
        }
    };
    let optional = |name: &str, limit: usize| -> Result<Option<String>, ApiError> {
        limited(text_field(d, &dataset_path, name)?, &format!("{dataset_path}.{name}"), limit)
    };
    let dataset = DatasetRecord {
        name: required("name", MAX_DATASET_NAME)?,
        digest: required("digest", MAX_DATASET_DIGEST)?,
        source_type: required("source_type", MAX_DATASET_SOURCE)?,
        source: required("source", MAX_DATASET_SOURCE)?,
        schema: optional("schema", MAX_DATASET_SCHEMA)?,
        profile: optional("profile", MAX_DATASET_PROFILE)?,
    };
    let tags = match obj.get("tags").filter(|v| !v.is_null()) {
        None => Vec::new(),
        Some(v) => as_array(v, &format!("{path}.tags"))?
            .iter()
            .enumerate()
            .map(|(i, t)| key_value(t, &format!("{path}.tags[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (k, v) in &tags {
        validate_tag(k, v)?;
    }
    Ok(DatasetInputRecord { dataset, tags })
}

/// The `model_id` of each `{model_id}` object in `items`.
fn model_ids(items: &[Value], path: &str) -> Result<Vec<String>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = format!("{path}[{i}]");
            let obj = as_object(item, &p)?;
            match text_field(obj, &p, "model_id")? {
                Some(id) if !id.is_empty() => Ok(id),
                _ => Err(ApiError::missing(&format!("{p}.model_id"))),
            }
        })
        .collect()
}

pub(super) async fn log_inputs(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let run_id = req.run_id()?;
    let empty = Vec::new();
    let datasets = req.raw("datasets").map(|v| as_array(v, "datasets")).transpose()?.unwrap_or(&empty);
    if datasets.len() > MAX_DATASETS {
        return Err(ApiError::invalid(format!(
            "A batch logging request can contain at most {MAX_DATASETS} datasets. Got {} datasets.",
            datasets.len()
        )));
    }
    let datasets = datasets
        .iter()
        .enumerate()
        .map(|(i, d)| dataset_input(d, &format!("datasets[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let models = req.raw("models").map(|v| as_array(v, "models")).transpose()?.unwrap_or(&empty);
    let models = model_ids(models, "models")?;
    active_run(&store, &run_id).await?;
    store.log_inputs(&run_id, &datasets, &models).await.map_err(|e| ApiError::from_run_op(&run_id, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn log_outputs(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let run_id = req.run_id()?;
    let models = req.raw("models").ok_or_else(|| ApiError::missing("models"))?;
    let models = as_array(models, "models")?;
    let ids = model_ids(models, "models")?;
    let mut outputs = Vec::with_capacity(ids.len());
    for (i, (id, item)) in ids.into_iter().zip(models).enumerate() {
        let step = item.get("step").filter(|v| !v.is_null()).map(|v| as_i64(v, &format!("models[{i}].step")));
        outputs.push((id, step.transpose()?.unwrap_or(0)));
    }
    active_run(&store, &run_id).await?;
    store.log_outputs(&run_id, &outputs).await.map_err(|e| ApiError::from_run_op(&run_id, e))?;
    Ok(Json(json!({})))
}

/// Tag of a run listing the models logged to it the MLflow 2 way (`runs/log-model`).
const TAG_LOGGED_MODELS: &str = "mlflow.log-model.history";

/// runs/log-model: append a model's metadata to the run's `mlflow.log-model.history` tag.
pub(super) async fn log_model(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let run_id = req.run_id()?;
    let model_json = req.req_str("model_json")?;
    let model: Value = serde_json::from_str(&model_json)
        .map_err(|_| ApiError::invalid(format!("Malformed model info. \n {model_json} \n is not a valid JSON.")))?;
    let Some(model) = model.as_object() else {
        return Err(ApiError::invalid("'model_json' must be a JSON object."));
    };
    let mut missing: Vec<&str> = ["artifact_path", "flavors", "utc_time_created", "run_id"]
        .into_iter()
        .filter(|k| !model.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(ApiError::invalid(format!("Model json is missing mandatory fields: {missing:?}")));
    }
    // What MLflow keeps of it (Model.get_tags_dict).
    let entry: serde_json::Map<String, Value> = model
        .iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "run_id" | "utc_time_created" | "artifact_path" | "model_uuid" | "flavors")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let run = active_run(&store, &run_id).await?;
    let mut history: Vec<Value> = run
        .tags
        .iter()
        .find(|(k, _)| k == TAG_LOGGED_MODELS)
        .and_then(|(_, v)| serde_json::from_str(v).ok())
        .unwrap_or_default();
    history.push(Value::Object(entry));
    let value = serde_json::to_string(&history).map_err(|e| ApiError::internal(e.to_string()))?;
    validate_tag(TAG_LOGGED_MODELS, &value)?;
    store
        .log_batch(&run_id, &[], &[], &[(TAG_LOGGED_MODELS.to_owned(), value)])
        .await
        .map_err(|e| ApiError::from_run_op(&run_id, e))?;
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// The parameters of metrics/get-history-bulk-interval, checked as MLflow checks them.
#[derive(Debug, PartialEq)]
pub(super) struct BulkInterval {
    pub run_ids: Vec<String>,
    pub metric_key: String,
    pub start_step: Option<i64>,
    pub end_step: Option<i64>,
    pub max_results: usize,
}

pub(super) fn bulk_interval_params(req: &Fields) -> Result<BulkInterval, ApiError> {
    let run_ids = req.str_list("run_ids")?;
    if run_ids.is_empty() {
        return Err(ApiError::missing("run_ids"));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(ApiError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let metric_key = req.req_str("metric_key")?;
    let max_results = req.opt_i64("max_results")?.unwrap_or(BULK_DEFAULT_RESULTS);
    if !(1..=BULK_MAX_RESULTS).contains(&max_results) {
        return Err(ApiError::invalid(format!("max_results must be between 1 and {BULK_MAX_RESULTS}.")));
    }
    let start_step = req.opt_i64("start_step")?;
    let end_step = req.opt_i64("end_step")?;
    match (start_step, end_step) {
        (Some(s), Some(e)) if s > e => {
            return Err(ApiError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={s} and end_step={e}."
            )));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ApiError::invalid("If either start step or end step are specified, both must be specified."));
        }
        _ => {}
    }
    Ok(BulkInterval { run_ids, metric_key, start_step, end_step, max_results: max_results as usize })
}
