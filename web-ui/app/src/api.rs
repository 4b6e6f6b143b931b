//! What the pages show, as plain serializable values, and the server functions that read
//! them from the server's own store (under `/ui/fn/`). In server-side rendering they run in
//! process; after hydration the browser calls them over HTTP.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use crate::server::UiState;

/// An experiment row of the home page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRow {
    /// Decimal id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// ms since the epoch.
    pub creation_time: i64,
    /// ms since the epoch.
    pub last_update_time: i64,
}

/// A run's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub id: String,
    /// Run name.
    pub name: String,
    /// RUNNING, FINISHED, ...
    pub status: String,
    /// ms.
    pub start_time: i64,
    /// ms.
    pub end_time: Option<i64>,
    /// Experiment id.
    pub experiment_id: String,
    /// `mlflow-artifacts:/...`.
    pub artifact_uri: String,
}

/// The runs page's server-rendered part: the experiment, how many runs match, the first of
/// them (the browser loads all of them into the virtualised table), and a filter error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunsPreview {
    /// The experiment.
    pub experiment: ExperimentRow,
    /// Runs in `rows` (at most [`PREVIEW_RUNS`]).
    pub total: usize,
    /// More runs match than `rows` holds.
    pub more: bool,
    /// Columns of `rows` after name, status and start time.
    pub columns: Vec<String>,
    /// The first runs: info and the column values as text.
    pub rows: Vec<(RunInfo, Vec<String>)>,
    /// The filter's parse error: message and byte position.
    pub filter_error: Option<(String, usize)>,
}

/// Everything the run page shows but charts and artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// Attributes.
    pub info: RunInfo,
    /// Experiment name.
    pub experiment_name: String,
    /// Params.
    pub params: Vec<(String, String)>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Latest value and step of each metric.
    pub metrics: Vec<(String, f64, i64)>,
    /// The TrainingJob it records: namespace, name.
    pub job: Option<(String, String)>,
    /// Model versions registered from this run: (model, version).
    pub versions: Vec<(String, i64)>,
}

/// An entry of an artifact folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactItem {
    /// Path relative to the run's artifact root.
    pub path: String,
    /// Last segment.
    pub name: String,
    /// A folder.
    pub is_dir: bool,
    /// Size of a file.
    pub size: Option<u64>,
}

/// An artifact preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactPreview {
    /// Path relative to the run's artifact root.
    pub path: String,
    /// `text`, `json`, `image` or `none`.
    pub kind: String,
    /// The text (pretty-printed for JSON), at most [`PREVIEW_BYTES`].
    pub text: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// Runs the runs page renders on the server (the browser's table loads all of them).
pub const PREVIEW_RUNS: usize = 100;

/// Largest artifact preview, bytes.
pub const PREVIEW_BYTES: usize = 256 * 1024;

/// The compare page: runs, their params and latest metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareData {
    /// The runs, in the order asked.
    pub runs: Vec<RunInfo>,
    /// Params per run.
    pub params: Vec<BTreeMap<String, String>>,
    /// Latest metric values per run.
    pub metrics: Vec<BTreeMap<String, f64>>,
}

/// A registered model in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    /// Name.
    pub name: String,
    /// Latest version number.
    pub latest_version: Option<i64>,
    /// (alias, version).
    pub aliases: Vec<(String, i64)>,
    /// ms.
    pub last_updated: i64,
}

/// A model version row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// Version number.
    pub version: i64,
    /// ms.
    pub created: i64,
    /// Source run.
    pub run_id: Option<String>,
    /// Stage.
    pub stage: String,
    /// Aliases on it.
    pub aliases: Vec<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Source URI.
    pub source: String,
    /// The pipeline run that made it and the deployments serving it.
    pub lineage: crate::ops::VersionLineage,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    /// Alias.
    pub alias: String,
    /// Before.
    pub from_version: Option<i64>,
    /// After.
    pub to_version: Option<i64>,
    /// Who.
    pub user: String,
    /// ms.
    pub timestamp: i64,
    /// Why.
    pub reason: String,
}

/// A registered model's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDetail {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// (alias, version).
    pub aliases: Vec<(String, i64)>,
    /// Versions, newest first.
    pub versions: Vec<VersionRow>,
    /// Alias history, newest first.
    pub history: Vec<AliasMove>,
}

/// A TrainingJob in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Queue.
    pub queue: String,
    /// Phase.
    pub phase: String,
    /// Replicas asked.
    pub replicas: u64,
    /// GPUs per replica.
    pub gpus_per_replica: u64,
    /// Why it is in its phase.
    pub message: String,
    /// Position in its queue while pending.
    pub queue_position: Option<u64>,
    /// Restarts (counted).
    pub restarts: u64,
    /// Tracking run.
    pub run_id: Option<String>,
    /// RFC 3339.
    pub created: String,
}

/// A replica of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRow {
    /// Index.
    pub index: u64,
    /// State.
    pub state: String,
    /// Node.
    pub node: String,
    /// GPU indices.
    pub gpus: Vec<u64>,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Message.
    pub message: String,
}

/// An event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// Normal or Warning.
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Count.
    pub count: i64,
    /// RFC 3339.
    pub last: String,
}

/// A job's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The row.
    pub job: JobRow,
    /// Replicas.
    pub replicas: Vec<ReplicaRow>,
    /// (type, status, reason, message).
    pub conditions: Vec<(String, String, String, String)>,
    /// Events.
    pub events: Vec<EventRow>,
    /// Attempt now running.
    pub attempt: u64,
}

/// A queue: usage against quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRow {
    /// Name.
    pub name: String,
    /// GPUs in use per product.
    pub usage: Vec<(String, u64)>,
    /// Nominal quota per product (from the spec).
    pub quota: Vec<(String, u64)>,
    /// Pending jobs.
    pub pending: u64,
    /// Admitted jobs.
    pub admitted: u64,
}

/// Jobs and queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsData {
    /// Jobs, newest first.
    pub jobs: Vec<JobRow>,
    /// Queues.
    pub queues: Vec<QueueRow>,
}

/// One GPU of the heat map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuCell {
    /// Index on the node.
    pub index: u32,
    /// Product.
    pub product: String,
    /// Utilization, %.
    pub util: Option<f64>,
    /// Memory used, MiB.
    pub mem_used_mib: Option<f64>,
    /// Memory, MiB.
    pub mem_total_mib: i64,
    /// Temperature, C.
    pub temp_c: Option<f64>,
    /// Healthy.
    pub healthy: bool,
    /// Why not.
    pub health_reason: String,
    /// The job on it: namespace, name, replica.
    pub job: Option<(String, String, u64)>,
}

/// A node of the heat map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuNode {
    /// Node name.
    pub node: String,
    /// nvml, simulated or none.
    pub source: String,
    /// Last push, ms.
    pub last_seen_ms: i64,
    /// GPUs.
    pub gpus: Vec<GpuCell>,
}

#[cfg(feature = "ssr")]
fn state() -> Result<UiState, ServerFnError> {
    use_context::<UiState>().ok_or_else(|| ServerFnError::new("the UI state is missing (server misconfigured)"))
}

/// An error for the caller: sets the response's status (a page or a server function call)
/// and carries the message.
#[cfg(feature = "ssr")]
fn reject(status: u16, message: impl Into<String>) -> ServerFnError {
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.set_status(axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST));
    }
    ServerFnError::new(message.into())
}

/// A store error as a response: 404 for what does not exist, 409 for conflicts, 400 for bad
/// paths, 500 otherwise.
#[cfg(feature = "ssr")]
fn err(e: capstan_store::StoreError) -> ServerFnError {
    use capstan_store::StoreError as E;
    let status = match &e {
        E::NotFound(_) => 404,
        E::AlreadyExists(_) | E::BeingDeleted(_) => 409,
        E::InvalidArtifactPath { .. } | E::ParamChanged { .. } => 400,
        _ => 500,
    };
    reject(status, e.to_string())
}

/// A failed read of resources (store or cluster) as a response.
#[cfg(feature = "ssr")]
fn read_err(e: crate::cluster::ReadError) -> ServerFnError {
    reject(e.status(), e.to_string())
}

#[cfg(feature = "ssr")]
fn exp_row(e: capstan_store::ExperimentRecord) -> ExperimentRow {
    ExperimentRow {
        id: e.experiment_id,
        name: e.name,
        lifecycle_stage: e.lifecycle_stage,
        creation_time: e.creation_time,
        last_update_time: e.last_update_time,
    }
}

#[cfg(feature = "ssr")]
fn run_info(r: &capstan_store::RunRecord) -> RunInfo {
    RunInfo {
        id: r.run_id.clone(),
        name: r.run_name.clone(),
        status: r.status.clone(),
        start_time: r.start_time,
        end_time: r.end_time,
        experiment_id: r.experiment_id.clone(),
        artifact_uri: r.artifact_uri.clone(),
    }
}

/// Experiments, most recent first; `search` keeps those whose name contains it
/// (case-insensitive); `deleted` lists the deleted ones instead.
#[server(prefix = "/ui/fn", endpoint = "experiments")]
pub async fn list_experiments(search: String, deleted: bool) -> Result<Vec<ExperimentRow>, ServerFnError> {
    use capstan_store::runs_search::{ExperimentQuery, ViewType};
    let st = state()?;
    let view = if deleted { ViewType::DeletedOnly } else { ViewType::ActiveOnly };
    let q = ExperimentQuery { filter: None, order_by: &[], view, max_results: 50_000, offset: 0 };
    let page = st.store.search_experiments(&q).await.map_err(err)?;
    let needle = search.trim().to_lowercase();
    let mut rows: Vec<ExperimentRow> = page
        .items
        .into_iter()
        .filter(|e| needle.is_empty() || e.name.to_lowercase().contains(&needle))
        .map(exp_row)
        .collect();
    rows.sort_by_key(|e| std::cmp::Reverse(e.last_update_time.max(e.creation_time)));
    Ok(rows)
}

/// Create an experiment.
#[server(prefix = "/ui/fn", endpoint = "create_experiment")]
pub async fn create_experiment(name: String) -> Result<String, ServerFnError> {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(reject(400, "name: must not be empty"));
    }
    state()?.store.create_experiment(&name, &[]).await.map_err(err)
}

/// Rename an experiment.
#[server(prefix = "/ui/fn", endpoint = "rename_experiment")]
pub async fn rename_experiment(id: String, name: String) -> Result<(), ServerFnError> {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(reject(400, "name: must not be empty"));
    }
    state()?.store.rename_experiment(&id, &name).await.map_err(err)
}

/// Delete (`deleted`) or restore (`active`) an experiment.
#[server(prefix = "/ui/fn", endpoint = "set_experiment_stage")]
pub async fn set_experiment_stage(id: String, stage: String) -> Result<(), ServerFnError> {
    if stage != "deleted" && stage != "active" {
        return Err(reject(400, "stage: must be deleted or active"));
    }
    state()?.store.set_experiment_lifecycle(&id, &stage).await.map_err(err)
}

/// The runs page's server-rendered part (first 100 runs matching `filter`).
#[server(prefix = "/ui/fn", endpoint = "runs_preview")]
pub async fn load_runs_preview(experiment_id: String, filter: String) -> Result<RunsPreview, ServerFnError> {
    use capstan_store::runs_search::{RunQuery, ViewType};
    use std::collections::BTreeSet;
    let st = state()?;
    let exp = st
        .store
        .get_experiment(&experiment_id)
        .await
        .map_err(err)?
        .ok_or_else(|| reject(404, format!("experiment {experiment_id} does not exist")))?;
    let experiment = exp_row(exp);
    let parsed = match capstan_search::parse_filter(&filter) {
        Ok(f) => f,
        Err(e) => {
            return Ok(RunsPreview {
                experiment,
                total: 0,
                more: false,
                columns: vec![],
                rows: vec![],
                filter_error: Some((e.message, e.position)),
            })
        }
    };
    // The first page only: the browser loads every run into the virtualised table.
    let ids = [experiment_id];
    let q = RunQuery {
        experiment_ids: &ids,
        filter: parsed.as_ref(),
        order_by: &[],
        view: ViewType::ActiveOnly,
        max_results: PREVIEW_RUNS,
        offset: 0,
    };
    let page = st.store.search_runs(&q).await.map_err(err)?;
    let more = page.next_offset.is_some();
    let runs: Vec<capstan_store::RunRecord> = page.items.into_iter().map(|(r, _)| r).collect();
    let metric_keys: BTreeSet<&str> = runs.iter().flat_map(|r| r.metrics.iter().map(|m| m.key.as_str())).collect();
    let param_keys: BTreeSet<&str> = runs.iter().flat_map(|r| r.params.iter().map(|(k, _)| k.as_str())).collect();
    let columns = crate::logic::default_columns(&metric_keys, &param_keys);
    let rows = runs
        .iter()
        .map(|r| {
            let values = columns
                .iter()
                .map(|c| {
                    let (kind, key) = c.split_once('.').unwrap_or(("", c));
                    match kind {
                        "metrics" => r
                            .metrics
                            .iter()
                            .find(|m| m.key == key)
                            .map(|m| crate::logic::fmt_value(m.value))
                            .unwrap_or_default(),
                        _ => r.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default(),
                    }
                })
                .collect();
            (run_info(r), values)
        })
        .collect();
    Ok(RunsPreview { experiment, total: runs.len(), more, columns, rows, filter_error: None })
}

/// A run's page.
#[server(prefix = "/ui/fn", endpoint = "run_detail")]
pub async fn load_run(run_id: String) -> Result<RunDetail, ServerFnError> {
    let st = state()?;
    let r = st
        .store
        .get_run(&run_id)
        .await
        .map_err(err)?
        .ok_or_else(|| reject(404, format!("run {run_id} does not exist")))?;
    let experiment_name =
        st.store.get_experiment(&r.experiment_id).await.map_err(err)?.map(|e| e.name).unwrap_or_default();
    let tag = |k: &str| r.tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.clone());
    let job = match (tag("capstan.dev/namespace"), tag("capstan.dev/job-name")) {
        (Some(ns), Some(name)) => Some((ns, name)),
        _ => None,
    };
    let mut metrics: Vec<(String, f64, i64)> = r.metrics.iter().map(|m| (m.key.clone(), m.value, m.step)).collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    // Lineage forward: the model versions made from this run.
    let filter = capstan_search::Expr::Cmp(capstan_search::Comparison {
        entity: capstan_search::Entity::Attribute,
        key: "run_id".into(),
        op: capstan_search::Op::Eq,
        value: capstan_search::Value::String(run_id.clone()),
    });
    let q =
        capstan_store::registry::RegistryQuery { filter: Some(&filter), order_by: &[], max_results: 1000, offset: 0 };
    let mut versions: Vec<(String, i64)> =
        st.store.search_model_versions(&q).await.map_err(err)?.items.into_iter().map(|v| (v.name, v.version)).collect();
    versions.sort();
    Ok(RunDetail {
        info: run_info(&r),
        experiment_name,
        params: r.params.clone(),
        tags: r.tags.clone(),
        metrics,
        job,
        versions,
    })
}

#[cfg(feature = "ssr")]
async fn run_root(st: &UiState, run_id: &str) -> Result<capstan_store::artifacts::ArtifactPath, ServerFnError> {
    let r = st
        .store
        .get_run(run_id)
        .await
        .map_err(err)?
        .ok_or_else(|| reject(404, format!("run {run_id} does not exist")))?;
    capstan_store::artifacts::ArtifactPath::from_artifact_uri(&r.artifact_uri).map_err(err)
}

/// The entries of a folder of a run's artifacts (`path` relative to the run's root).
#[server(prefix = "/ui/fn", endpoint = "list_artifacts")]
pub async fn list_artifacts(run_id: String, path: String) -> Result<Vec<ArtifactItem>, ServerFnError> {
    let st = state()?;
    let root = run_root(&st, &run_id).await?;
    let dir = if path.is_empty() { root } else { root.join(&path).map_err(err)? };
    let mut items: Vec<ArtifactItem> = st
        .artifacts
        .list(&dir)
        .await
        .map_err(err)?
        .into_iter()
        .map(|e| ArtifactItem {
            path: if path.is_empty() { e.name.clone() } else { format!("{}/{}", path.trim_end_matches('/'), e.name) },
            name: e.name,
            is_dir: e.is_dir,
            size: e.size,
        })
        .collect();
    items.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then(a.name.cmp(&b.name)));
    Ok(items)
}

/// A preview of one artifact: text and JSON (pretty) up to [`PREVIEW_BYTES`]; images are
/// shown from the download URL.
#[server(prefix = "/ui/fn", endpoint = "preview_artifact")]
pub async fn preview_artifact(run_id: String, path: String) -> Result<ArtifactPreview, ServerFnError> {
    let st = state()?;
    let root = run_root(&st, &run_id).await?;
    let file = root.join(&path).map_err(err)?;
    let name = path.rsplit('/').next().unwrap_or(&path).to_string();
    let kind = crate::logic::preview_kind(&name).unwrap_or("none");
    let bytes = st.artifacts.get_bytes(&file).await.map_err(err)?;
    let size = bytes.len() as u64;
    let text = match kind {
        "text" | "json" => {
            let cut = &bytes[..bytes.len().min(PREVIEW_BYTES)];
            let s = String::from_utf8_lossy(cut).into_owned();
            if kind == "json" {
                Some(
                    serde_json::from_str::<serde_json::Value>(&s)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or(s),
                )
            } else {
                Some(s)
            }
        }
        _ => None,
    };
    Ok(ArtifactPreview { path, kind: kind.to_string(), text, size })
}

/// Runs side by side (`run_ids` comma-separated).
#[server(prefix = "/ui/fn", endpoint = "compare")]
pub async fn compare_runs(run_ids: String) -> Result<CompareData, ServerFnError> {
    let st = state()?;
    let mut data = CompareData { runs: vec![], params: vec![], metrics: vec![] };
    for id in run_ids.split(',').map(str::trim).filter(|s| !s.is_empty()).take(50) {
        let r =
            st.store.get_run(id).await.map_err(err)?.ok_or_else(|| reject(404, format!("run {id} does not exist")))?;
        data.runs.push(run_info(&r));
        data.params.push(r.params.iter().cloned().collect());
        data.metrics.push(r.metrics.iter().map(|m| (m.key.clone(), m.value)).collect());
    }
    Ok(data)
}

/// Registered models.
#[server(prefix = "/ui/fn", endpoint = "models")]
pub async fn list_models(search: String) -> Result<Vec<ModelRow>, ServerFnError> {
    use capstan_store::registry::RegistryQuery;
    let st = state()?;
    let q = RegistryQuery { filter: None, order_by: &[], max_results: 10_000, offset: 0 };
    let page = st.store.search_registered_models(&q).await.map_err(err)?;
    let needle = search.trim().to_lowercase();
    Ok(page
        .items
        .into_iter()
        .filter(|m| needle.is_empty() || m.name.to_lowercase().contains(&needle))
        .map(|m| ModelRow {
            latest_version: m.latest_versions.iter().map(|v| v.version).max(),
            name: m.name,
            aliases: m.aliases,
            last_updated: m.last_updated_timestamp,
        })
        .collect())
}

/// A registered model: versions, aliases and their history.
#[server(prefix = "/ui/fn", endpoint = "model")]
pub async fn load_model(name: String) -> Result<ModelDetail, ServerFnError> {
    use capstan_search::{Comparison, Entity, Expr, Op, Value};
    use capstan_store::registry::RegistryQuery;
    let st = state()?;
    let m = st
        .store
        .get_registered_model(&name)
        .await
        .map_err(err)?
        .ok_or_else(|| reject(404, format!("registered model {name} does not exist")))?;
    let filter = Expr::Cmp(Comparison {
        entity: Entity::Attribute,
        key: "name".into(),
        op: Op::Eq,
        value: Value::String(name.clone()),
    });
    let q = RegistryQuery { filter: Some(&filter), order_by: &[], max_results: 10_000, offset: 0 };
    let mut versions: Vec<VersionRow> = st
        .store
        .search_model_versions(&q)
        .await
        .map_err(err)?
        .items
        .into_iter()
        .map(|v| VersionRow {
            version: v.version,
            created: v.creation_timestamp,
            run_id: v.run_id,
            stage: v.current_stage,
            aliases: v.aliases,
            tags: v.tags,
            source: v.source,
            lineage: Default::default(),
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let mut lineage = crate::ops::model_lineage(&name).await?;
    for v in versions.iter_mut() {
        v.lineage = lineage.remove(&v.version).unwrap_or_default();
    }
    let mut history: Vec<AliasMove> = st
        .store
        .alias_history(&name)
        .await
        .map_err(err)?
        .into_iter()
        .map(|e| AliasMove {
            alias: e.alias,
            from_version: e.from_version,
            to_version: e.to_version,
            user: e.user,
            timestamp: e.timestamp,
            reason: e.reason,
        })
        .collect();
    history.reverse();
    Ok(ModelDetail { name: m.name, description: m.description, tags: m.tags, aliases: m.aliases, versions, history })
}

/// Set (or move) an alias of a registered model to a version.
#[server(prefix = "/ui/fn", endpoint = "set_alias")]
pub async fn set_alias(name: String, alias: String, version: String) -> Result<(), ServerFnError> {
    let alias = alias.trim().to_string();
    if alias.is_empty() {
        return Err(reject(400, "alias: must not be empty"));
    }
    let version: i64 =
        version.trim().parse().map_err(|_| reject(400, format!("version: {version:?} is not a version number")))?;
    state()?.store.set_registered_model_alias(&name, &alias, version, "ui").await.map_err(err)
}

/// Remove an alias.
#[server(prefix = "/ui/fn", endpoint = "delete_alias")]
pub async fn delete_alias(name: String, alias: String) -> Result<(), ServerFnError> {
    state()?.store.delete_registered_model_alias(&name, &alias, "ui").await.map_err(err)
}

/// Set a registered model's tag.
#[server(prefix = "/ui/fn", endpoint = "set_model_tag")]
pub async fn set_model_tag(name: String, key: String, value: String) -> Result<(), ServerFnError> {
    if key.trim().is_empty() {
        return Err(reject(400, "key: must not be empty"));
    }
    state()?.store.set_registered_model_tag(&name, key.trim(), &value).await.map_err(err)
}

#[cfg(feature = "ssr")]
fn job_row(r: &capstan_store::StoredResource) -> JobRow {
    use serde_json::Value as V;
    let s = |v: &V, k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_string();
    let replicas = r.spec.get("replicas").and_then(V::as_u64).unwrap_or(1);
    let gpus = r
        .spec
        .get("resources")
        .and_then(|x| x.get("gpus"))
        .or_else(|| r.spec.get("gpus"))
        .or_else(|| r.spec.get("gpusPerReplica"))
        .and_then(V::as_u64)
        .unwrap_or(0);
    JobRow {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        queue: r.spec.get("queue").and_then(V::as_str).unwrap_or("default").to_string(),
        phase: r.status.get("phase").and_then(V::as_str).unwrap_or("Pending").to_string(),
        replicas,
        gpus_per_replica: gpus,
        message: s(&r.status, "message"),
        queue_position: r.status.get("queuePosition").and_then(V::as_u64),
        restarts: r.status.get("restarts").and_then(V::as_u64).unwrap_or(0),
        run_id: r.status.get("trackingRunId").and_then(V::as_str).map(str::to_string),
        created: r.creation_timestamp.clone(),
    }
}

/// TrainingJobs and Queues.
#[server(prefix = "/ui/fn", endpoint = "jobs")]
pub async fn list_jobs() -> Result<JobsData, ServerFnError> {
    use serde_json::Value as V;
    let st = state()?;
    let view = crate::cluster::cluster_of_request();
    let res = crate::cluster::Resources::of(&st.store, view.as_ref());
    let mut jobs: Vec<JobRow> = res.list("TrainingJob", None).await.map_err(read_err)?.iter().map(job_row).collect();
    jobs.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    let counts = |v: Option<&V>| -> Vec<(String, u64)> {
        v.and_then(V::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default()
    };
    let queues = res
        .list("Queue", None)
        .await
        .map_err(read_err)?
        .iter()
        .map(|q| {
            let mut quota = Vec::new();
            if let Some(flavors) = q.spec.get("resourceGroups").or_else(|| q.spec.get("quotas")).and_then(V::as_array) {
                for f in flavors {
                    let product = f
                        .get("product")
                        .or_else(|| f.get("flavor"))
                        .or_else(|| f.get("name"))
                        .and_then(V::as_str)
                        .unwrap_or("gpu");
                    let n = f.get("nominal").or_else(|| f.get("nominalQuota")).and_then(V::as_u64).unwrap_or(0);
                    quota.push((product.to_string(), n));
                }
            }
            QueueRow {
                name: q.name.clone(),
                usage: counts(q.status.get("usage")),
                quota,
                pending: q.status.get("pending").and_then(V::as_u64).unwrap_or(0),
                admitted: q.status.get("admitted").and_then(V::as_u64).unwrap_or(0),
            }
        })
        .collect();
    Ok(JobsData { jobs, queues })
}

/// One TrainingJob with its replicas, conditions and events.
#[server(prefix = "/ui/fn", endpoint = "job")]
pub async fn load_job(namespace: String, name: String) -> Result<JobDetail, ServerFnError> {
    use serde_json::Value as V;
    let st = state()?;
    let view = crate::cluster::cluster_of_request();
    let res = crate::cluster::Resources::of(&st.store, view.as_ref());
    let r = res
        .get("TrainingJob", &namespace, &name)
        .await
        .map_err(read_err)?
        .ok_or_else(|| reject(404, format!("TrainingJob {namespace}/{name} does not exist")))?;
    let s = |v: &V, k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_string();
    let replicas = r
        .status
        .get("replicaStatuses")
        .and_then(V::as_array)
        .map(|a| {
            a.iter()
                .map(|x| ReplicaRow {
                    index: x.get("index").and_then(V::as_u64).unwrap_or(0),
                    state: s(x, "state"),
                    node: s(x, "node"),
                    gpus: x
                        .get("gpus")
                        .and_then(V::as_array)
                        .map(|g| g.iter().filter_map(V::as_u64).collect())
                        .unwrap_or_default(),
                    exit_code: x.get("exitCode").and_then(V::as_i64),
                    message: s(x, "message"),
                })
                .collect()
        })
        .unwrap_or_default();
    let conditions = r
        .status
        .get("conditions")
        .and_then(V::as_array)
        .map(|a| a.iter().map(|c| (s(c, "type"), s(c, "status"), s(c, "reason"), s(c, "message"))).collect())
        .unwrap_or_default();
    let events = res
        .events(&r)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|e| EventRow {
            type_: e.type_,
            reason: e.reason,
            message: e.message,
            count: e.count,
            last: e.last_timestamp,
        })
        .collect();
    Ok(JobDetail {
        job: job_row(&r),
        replicas,
        conditions,
        events,
        attempt: r.status.get("attempt").and_then(V::as_u64).unwrap_or(0),
    })
}

/// Every node and GPU with its latest reading, health and job.
#[server(prefix = "/ui/fn", endpoint = "gpus")]
pub async fn list_gpus() -> Result<Vec<GpuNode>, ServerFnError> {
    use serde_json::Value as V;
    let st = state()?;
    let mut out = Vec::new();
    for n in st.store.gpu_nodes().await.map_err(err)? {
        let devices = st.store.gpu_devices(&n.node).await.map_err(err)?.unwrap_or_default();
        let gpus = devices
            .into_iter()
            .map(|d| GpuCell {
                index: d.index,
                product: d.product,
                util: d.latest.get("gpu_util").copied(),
                mem_used_mib: d.latest.get("fb_used_mib").copied(),
                mem_total_mib: d.memory_mib,
                temp_c: d.latest.get("gpu_temp_c").copied(),
                healthy: d.healthy,
                health_reason: d.health_reason,
                job: d.job.as_ref().and_then(|j| {
                    Some((
                        j.get("namespace")?.as_str()?.to_string(),
                        j.get("name")?.as_str()?.to_string(),
                        j.get("replica").and_then(V::as_u64).unwrap_or(0),
                    ))
                }),
            })
            .collect();
        out.push(GpuNode { node: n.node, source: n.source, last_seen_ms: n.last_seen_ms, gpus });
    }
    Ok(out)
}
