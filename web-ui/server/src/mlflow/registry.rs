//! The model registry endpoints: registered-models/{create, get, search, update, rename,
//! delete, set-tag, delete-tag, alias, get-latest-versions} and model-versions/{create, get,
//! search, update, delete, set-tag, delete-tag, get-download-uri, transition-stage}.
//!
//! Capstan extension: `GET registered-models/alias-history?name=` lists every change of the
//! model's aliases (who, when, from which version to which), oldest first:
//! `{"events": [{"alias", "from_version"?, "to_version"?, "user", "timestamp", "reason",
//! "model_name"}]}` (versions as strings, like MLflow's; `reason` is `set`, `deleted`,
//! `version deleted` or `model deleted`).

use axum::{extract::State, http::HeaderMap, Json};
use capstan_search::SearchTarget;
use capstan_store::registry::{ModelVersionRecord, NewModelVersion, RegistryQuery, STAGES};
use capstan_store::{Store, StoreError};
use serde_json::{json, Map, Value};

use super::common::{model_version_json, registered_model_json, request_user, with_token, Body, QueryParams};
use super::{validate_key, ApiError, ApiResult, Fields};

/// Default and largest `max_results` of registered-models/search (MLflow's).
const MODELS_DEFAULT: usize = 100;
const MODELS_LIMIT: usize = 1000;
/// Default and largest `max_results` of model-versions/search (MLflow's).
const VERSIONS_DEFAULT: usize = 10_000;
const VERSIONS_LIMIT: usize = 200_000;
/// Longest registry tag value and alias (MLflow's).
const MAX_REGISTRY_TAG_VALUE: usize = 100_000;
const MAX_ALIAS: usize = 255;

fn model_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Registered Model with name={name} not found"))
}

fn version_not_found(name: &str, version: i64) -> ApiError {
    ApiError::not_found(format!("Model Version (name={name}, version={version}) not found"))
}

/// A store error of an operation on model `name` (version `version`).
fn registry_error(name: &str, version: Option<i64>, err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(what) if what.starts_with("model version") => {
            version_not_found(name, version.unwrap_or_default())
        }
        StoreError::NotFound(what) if what.starts_with("registered model") => model_not_found(name),
        other => other.into(),
    }
}

/// A registered model name: non-blank, without '/' or ':' (MLflow's rule).
fn model_name(req: &Fields, field: &str) -> Result<String, ApiError> {
    let name = req.opt_str(field)?.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::missing(field));
    }
    if name.contains(['/', ':']) {
        return Err(ApiError::invalid(format!("Invalid model name '{name}'. Names cannot contain '/' or ':'.")));
    }
    if name.split('/').any(|p| p == "." || p == "..") {
        return Err(ApiError::invalid(format!("Invalid value '{name}' for parameter '{field}'.")));
    }
    Ok(name)
}

/// A version number: an integer, as a string or a number.
fn version_number(req: &Fields) -> Result<i64, ApiError> {
    let raw = req.raw("version").ok_or_else(|| ApiError::missing("version"))?;
    let parsed = match raw {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    parsed.ok_or_else(|| ApiError::invalid(format!("Parameter 'version' must be an integer, got {raw}.")))
}

fn registry_tag(key: &str, value: &str) -> Result<(), ApiError> {
    validate_key("tag", key)?;
    let len = value.chars().count();
    if len > MAX_REGISTRY_TAG_VALUE {
        return Err(ApiError::invalid(format!(
            "The value of tag '{key}' is {len} characters long, over the limit of {MAX_REGISTRY_TAG_VALUE} characters."
        )));
    }
    Ok(())
}

fn registry_tags(req: &Fields) -> Result<Vec<(String, String)>, ApiError> {
    let tags = req.pairs("tags")?;
    for (k, v) in &tags {
        registry_tag(k, v)?;
    }
    Ok(tags)
}

/// A stage name, case-insensitively, as its canonical spelling.
fn canonical_stage(stage: &str) -> Result<&'static str, ApiError> {
    STAGES.iter().copied().find(|s| s.eq_ignore_ascii_case(stage)).ok_or_else(|| {
        ApiError::invalid(format!("Invalid Model Version stage: {stage}. Value must be one of {}.", STAGES.join(", ")))
    })
}

/// An alias name: letters, digits, '_' and '-', at most 255 characters.
fn alias_name(req: &Fields) -> Result<String, ApiError> {
    let alias = req.opt_str("alias")?.unwrap_or_default();
    if alias.is_empty() {
        return Err(ApiError::invalid("Registered model alias name cannot be empty."));
    }
    if !alias.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
        return Err(ApiError::invalid(format!(
            "Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and dashes (-)."
        )));
    }
    if alias.chars().count() > MAX_ALIAS {
        return Err(ApiError::invalid(format!(
            "Registered model alias name exceeds the maximum length of {MAX_ALIAS} characters"
        )));
    }
    Ok(alias)
}

// ---------------------------------------------------------------------------------------
// Registered models
// ---------------------------------------------------------------------------------------

pub(super) async fn create_registered_model(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let tags = registry_tags(&req)?;
    let description = req.opt_str("description")?;
    let model = store.create_registered_model(&name, description.as_deref(), &tags).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => {
            ApiError::already_exists(format!("Registered Model (name={name}) already exists."))
        }
        other => other.into(),
    })?;
    Ok(Json(json!({ "registered_model": registered_model_json(&model) })))
}

pub(super) async fn get_registered_model(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let model = store.get_registered_model(&name).await?.ok_or_else(|| model_not_found(&name))?;
    Ok(Json(json!({ "registered_model": registered_model_json(&model) })))
}

pub(super) async fn update_registered_model(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let description = req.opt_str("description")?;
    let model = store
        .update_registered_model(&name, description.as_deref())
        .await
        .map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({ "registered_model": registered_model_json(&model) })))
}

pub(super) async fn rename_registered_model(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let new_name = model_name(&req, "new_name")?;
    let model = store.rename_registered_model(&name, &new_name).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => {
            ApiError::already_exists(format!("Registered Model (name={new_name}) already exists."))
        }
        other => registry_error(&name, None, other),
    })?;
    Ok(Json(json!({ "registered_model": registered_model_json(&model) })))
}

pub(super) async fn delete_registered_model(
    State(store): State<Store>,
    headers: HeaderMap,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    store.delete_registered_model(&name, &request_user(&headers)).await.map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn set_registered_model_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let key = req.req_str("key")?;
    let value = req.opt_str("value")?.unwrap_or_default();
    registry_tag(&key, &value)?;
    store.set_registered_model_tag(&name, &key, &value).await.map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_registered_model_tag(
    State(store): State<Store>,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let key = req.req_str("key")?;
    store.delete_registered_model_tag(&name, &key).await.map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn search_registered_models(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let max_results = req.max_results(MODELS_DEFAULT, MODELS_LIMIT)?;
    let filter = req.filter(SearchTarget::RegisteredModels)?;
    let order_by = req.order_by(SearchTarget::RegisteredModels)?;
    let offset = req.page_offset()?;
    let page = store
        .search_registered_models(&RegistryQuery { filter: filter.as_ref(), order_by: &order_by, max_results, offset })
        .await?;
    let answer = json!({ "registered_models": page.items.iter().map(registered_model_json).collect::<Vec<_>>() });
    Ok(Json(with_token(answer, page.next_offset)))
}

pub(super) async fn get_latest_versions(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let stages =
        req.str_list("stages")?.iter().map(|s| canonical_stage(s).map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
    let versions = store.latest_versions(&name, &stages).await.map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({ "model_versions": versions.iter().map(model_version_json).collect::<Vec<_>>() })))
}

// ---------------------------------------------------------------------------------------
// Aliases
// ---------------------------------------------------------------------------------------

pub(super) async fn set_alias(
    State(store): State<Store>,
    headers: HeaderMap,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let alias = alias_name(&req)?;
    if alias.eq_ignore_ascii_case("latest") {
        return Err(ApiError::invalid("'latest' alias name (case insensitive) is reserved."));
    }
    let bytes = alias.as_bytes();
    if bytes.len() > 1 && (bytes[0] == b'v' || bytes[0] == b'V') && bytes[1..].iter().all(u8::is_ascii_digit) {
        return Err(ApiError::invalid(format!("Version alias name '{alias}' is reserved.")));
    }
    let version = version_number(&req)?;
    store
        .set_registered_model_alias(&name, &alias, version, &request_user(&headers))
        .await
        .map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_alias(
    State(store): State<Store>,
    headers: HeaderMap,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let alias = alias_name(&req)?;
    store
        .delete_registered_model_alias(&name, &alias, &request_user(&headers))
        .await
        .map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({})))
}

pub(super) async fn get_by_alias(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let alias = alias_name(&req)?;
    let version = if alias.eq_ignore_ascii_case("latest") {
        // The highest version of any stage.
        let versions = store.latest_versions(&name, &[]).await.map_err(|e| registry_error(&name, None, e))?;
        versions
            .into_iter()
            .max_by_key(|v| v.version)
            .ok_or_else(|| ApiError::not_found(format!("Latest version not found for model {name}.")))?
    } else {
        store
            .get_model_version_by_alias(&name, &alias)
            .await
            .map_err(|e| registry_error(&name, None, e))?
            .ok_or_else(|| ApiError::invalid(format!("Registered model alias {alias} not found.")))?
    };
    Ok(Json(json!({ "model_version": model_version_json(&version) })))
}

/// Capstan extension: the history of a model's aliases.
pub(super) async fn alias_history(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let events = store.alias_history(&name).await?;
    if events.is_empty() && store.get_registered_model(&name).await?.is_none() {
        return Err(model_not_found(&name));
    }
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut obj = Map::new();
            obj.insert("model_name".into(), json!(e.model_name));
            obj.insert("alias".into(), json!(e.alias));
            if let Some(v) = e.from_version {
                obj.insert("from_version".into(), json!(v.to_string()));
            }
            if let Some(v) = e.to_version {
                obj.insert("to_version".into(), json!(v.to_string()));
            }
            obj.insert("user".into(), json!(e.user));
            obj.insert("timestamp".into(), json!(e.timestamp));
            obj.insert("reason".into(), json!(e.reason));
            Value::Object(obj)
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

// ---------------------------------------------------------------------------------------
// Model versions
// ---------------------------------------------------------------------------------------

/// `models:/<model_id>` (an MLflow 3 logged model), as opposed to `models:/<name>/<version>`.
fn logged_model_source(source: &str) -> Option<&str> {
    let rest = source.strip_prefix("models:/")?;
    (rest.starts_with("m-") && !rest.contains('/')).then_some(rest)
}

/// The version a `models:/<name>/<version>`, `models:/<name>/<stage>` or
/// `models:/<name>@<alias>` URI names, if it exists.
async fn referenced_version(store: &Store, source: &str) -> Result<Option<ModelVersionRecord>, ApiError> {
    let rest = source.trim_start_matches("models:").trim_start_matches('/');
    if let Some((name, alias)) = rest.split_once('@') {
        return Ok(store.get_model_version_by_alias(name, alias).await.ok().flatten());
    }
    let Some((name, which)) = rest.split_once('/') else {
        return Ok(None);
    };
    if let Ok(version) = which.parse::<i64>() {
        return Ok(store.get_model_version(name, version).await?);
    }
    let Ok(stage) = canonical_stage(which) else {
        return Ok(None);
    };
    Ok(store.latest_versions(name, &[stage.to_owned()]).await.ok().and_then(|mut v| v.pop()))
}

/// Whether `uri` lies under `root` (same scheme and path prefix, on a '/' boundary).
fn within(uri: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    uri == root || uri.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

pub(super) async fn create_model_version(
    State(store): State<Store>,
    headers: HeaderMap,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let source = req.req_str("source")?;
    let mut run_id = req.non_empty("run_id")?;
    let mut model_id = req.non_empty("model_id")?;
    let tags = registry_tags(&req)?;
    let invalid_source = |why: &str| ApiError::invalid(format!("Invalid model version source: '{source}'. {why}"));
    if source.split(['/', '\\']).any(|part| part == "..") {
        return Err(invalid_source("It must not contain '..' path segments."));
    }
    let scheme = source.split_once(':').map(|(s, _)| s).filter(|s| !s.is_empty() && !s.contains('/'));
    let mut storage_location = None;
    match scheme {
        None | Some("file") => {
            return Err(invalid_source(
                "Local paths cannot be registered with this server: log the model through the artifacts proxy \
                 (mlflow-artifacts:/) and register that URI, or a runs:/ or models:/ URI.",
            ));
        }
        Some("models") if logged_model_source(&source).is_none() => {
            // models:/<name>/<version|stage> or models:/<name>@<alias>: another version.
            let referenced = referenced_version(&store, &source)
                .await?
                .ok_or_else(|| invalid_source("It names no existing model version."))?;
            storage_location = Some(referenced.storage_location.clone().unwrap_or(referenced.source.clone()));
            run_id = run_id.or(referenced.run_id);
            model_id = model_id.or(referenced.model_id);
        }
        Some("models") => {
            if let Some(id) = logged_model_source(&source) {
                if model_id.as_deref().is_some_and(|m| m != id) {
                    return Err(invalid_source("The model_id request parameter must match the model in the source."));
                }
                let model = store
                    .get_logged_model(id)
                    .await?
                    .ok_or_else(|| invalid_source(&format!("No logged model with ID '{id}' exists.")))?;
                storage_location = Some(model.artifact_location);
                run_id = run_id.or(model.source_run_id);
                model_id = Some(id.to_owned());
            }
        }
        Some("runs") => {
            let source_run = source.strip_prefix("runs:/").and_then(|r| r.split('/').next()).unwrap_or_default();
            if run_id.as_deref() != Some(source_run) {
                return Err(invalid_source("The run_id request parameter must be the run of the runs:/ URI."));
            }
        }
        Some("mlflow-artifacts") => {
            let mut ok = false;
            if let Some(r) = &run_id {
                ok |= store.get_run(r).await?.is_some_and(|run| within(&source, &run.artifact_uri));
            }
            if let Some(m) = &model_id {
                ok |= store.get_logged_model(m).await?.is_some_and(|lm| within(&source, &lm.artifact_location));
            }
            if !ok {
                return Err(invalid_source(
                    "An mlflow-artifacts source must lie within the artifacts of the run (run_id) or logged model \
                     (model_id) given with it.",
                ));
            }
        }
        Some(_) => {}
    }
    if let Some(m) = &model_id {
        if run_id.is_none() {
            run_id = store.get_logged_model(m).await?.and_then(|lm| lm.source_run_id);
        }
    }
    let new = NewModelVersion {
        name: name.clone(),
        source,
        storage_location,
        run_id,
        run_link: req.non_empty("run_link")?,
        description: req.opt_str("description")?,
        tags,
        model_id,
        user_id: match request_user(&headers) {
            u if u == "unknown" => String::new(),
            u => u,
        },
    };
    let version = store.create_model_version(&new).await.map_err(|e| registry_error(&name, None, e))?;
    Ok(Json(json!({ "model_version": model_version_json(&version) })))
}

async fn existing_version(store: &Store, name: &str, version: i64) -> Result<ModelVersionRecord, ApiError> {
    store.get_model_version(name, version).await?.ok_or_else(|| version_not_found(name, version))
}

pub(super) async fn get_model_version(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let mv = existing_version(&store, &name, version).await?;
    Ok(Json(json!({ "model_version": model_version_json(&mv) })))
}

pub(super) async fn update_model_version(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let description = req.opt_str("description")?;
    let mv = store
        .update_model_version(&name, version, description.as_deref())
        .await
        .map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({ "model_version": model_version_json(&mv) })))
}

pub(super) async fn transition_stage(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let stage = canonical_stage(&req.req_str("stage")?)?;
    let archive = req.opt_bool("archive_existing_versions")?.unwrap_or(false);
    if archive && !matches!(stage, "Staging" | "Production") {
        return Err(ApiError::invalid(format!(
            "Model version transition cannot archive existing model versions because '{stage}' is not an Active \
             stage. Valid stages are Staging, Production"
        )));
    }
    let mv = store
        .transition_model_version_stage(&name, version, stage, archive)
        .await
        .map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({ "model_version": model_version_json(&mv) })))
}

pub(super) async fn delete_model_version(
    State(store): State<Store>,
    headers: HeaderMap,
    query: QueryParams,
    body: Body,
) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    store
        .delete_model_version(&name, version, &request_user(&headers))
        .await
        .map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({})))
}

pub(super) async fn set_model_version_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let key = req.req_str("key")?;
    let value = req.opt_str("value")?.unwrap_or_default();
    registry_tag(&key, &value)?;
    store
        .set_model_version_tag(&name, version, &key, &value)
        .await
        .map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_model_version_tag(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let key = req.req_str("key")?;
    store.delete_model_version_tag(&name, version, &key).await.map_err(|e| registry_error(&name, Some(version), e))?;
    Ok(Json(json!({})))
}

pub(super) async fn get_download_uri(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let name = model_name(&req, "name")?;
    let version = version_number(&req)?;
    let mv = existing_version(&store, &name, version).await?;
    let uri = mv.storage_location.unwrap_or(mv.source);
    Ok(Json(json!({ "artifact_uri": uri })))
}

pub(super) async fn search_model_versions(State(store): State<Store>, query: QueryParams, body: Body) -> ApiResult {
    let req = Fields::from_request(query, body)?;
    let max_results = req.max_results(VERSIONS_DEFAULT, VERSIONS_LIMIT)?;
    let filter = req.filter(SearchTarget::ModelVersions)?;
    let order_by = req.order_by(SearchTarget::ModelVersions)?;
    let offset = req.page_offset()?;
    let page = store
        .search_model_versions(&RegistryQuery { filter: filter.as_ref(), order_by: &order_by, max_results, offset })
        .await?;
    let answer = json!({ "model_versions": page.items.iter().map(model_version_json).collect::<Vec<_>>() });
    Ok(Json(with_token(answer, page.next_offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_case_insensitive() {
        assert_eq!(canonical_stage("production").unwrap(), "Production");
        assert_eq!(canonical_stage("NONE").unwrap(), "None");
        let e = canonical_stage("prod").unwrap_err();
        assert!(e.message.contains("None, Staging, Production, Archived"), "{}", e.message);
    }

    #[test]
    fn sources() {
        assert_eq!(logged_model_source("models:/m-0123abcd"), Some("m-0123abcd"));
        assert_eq!(logged_model_source("models:/my-model/3"), None);
        assert_eq!(logged_model_source("runs:/abc/model"), None);
        assert!(within("mlflow-artifacts:/1/abc/artifacts/model", "mlflow-artifacts:/1/abc/artifacts"));
        assert!(!within("mlflow-artifacts:/1/abcd/artifacts", "mlflow-artifacts:/1/abc"));
    }
}
