//! The resource API, shaped like Kubernetes' so its users find their way:
//!
//! - `POST /apis/capstan.dev/v1alpha1/apply`: multi-document YAML or JSON, validated by
//!   `capstan_crds::manifest` (errors name the document, line and field path), then stored.
//! - `GET /apis/capstan.dev/v1alpha1/[namespaces/{ns}/]trainingjobs[/{name}]`, `DELETE` one.
//! - `GET /apis/capstan.dev/v1alpha1/queues[/{name}]`, `DELETE` one.
//! - `GET .../trainingjobs/{name}/events` and `.../trainingjobs/{name}/log?replica=&attempt=&follow=`.
//!
//! On a cluster (`capstan server --kubernetes`, [`on_cluster_resources`]) the reads and the
//! log come from the cluster's objects, events and pods; apply and delete answer 400 naming the
//! kubectl command (the server never writes resources into its store there).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use capstan_crds::manifest::{self, ManifestError, Resource};
use capstan_store::{PutOutcome, StoredResource};
use capstan_ui::cluster::{ClusterResources, ClusterView, ReadError, Resources};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ApiError, AppState};

/// Path prefix of the resource API.
pub const PREFIX: &str = "/apis/capstan.dev/v1alpha1";

/// Routes of the resource API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/apply"), post(apply))
        .route(&format!("{PREFIX}/{{plural}}"), get(list_all))
        .route(&format!("{PREFIX}/{{plural}}/{{name}}"), get(get_cluster).delete(delete_cluster))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}"), get(list_ns))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}"), get(get_ns).delete(delete_ns))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}/events"), get(events))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}/log"), get(log))
}

/// The app with its resources on a cluster: the resource API's reads and logs, and the web
/// UI's jobs, queues, deployments and pipelines, come from `view`; apply and delete are
/// refused with the kubectl command to use.
pub fn on_cluster_resources(app: Router, view: std::sync::Arc<dyn ClusterResources>) -> Router {
    app.layer(Extension(ClusterView(view)))
}

/// The view of the request, if its resources live on a cluster.
type OnCluster = Option<Extension<ClusterView>>;

fn resources<'a>(st: &'a AppState, cluster: &'a OnCluster) -> Resources<'a> {
    Resources::of(&st.store, cluster.as_ref().map(|Extension(v)| v))
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::Store(e) => e.into(),
            ReadError::Cluster(e) => {
                tracing::error!(error = %e, "Kubernetes API call failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

/// The 400 of a write on a cluster.
fn refuse_on_cluster(cluster: &OnCluster, what: &str) -> Result<(), ApiError> {
    match cluster {
        None => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "this server's resources live on Kubernetes (--kubernetes): {what} with kubectl (`kubectl {what} ...`)"
        ))),
    }
}

/// (kind, namespaced) of a plural or short name.
pub fn kind_of(plural: &str) -> Option<(&'static str, bool)> {
    match plural {
        "trainingjobs" | "trainingjob" | "tj" => Some(("TrainingJob", true)),
        "queues" | "queue" | "cq" => Some(("Queue", false)),
        "pipelines" | "pipeline" | "pl" => Some(("Pipeline", true)),
        "pipelineruns" | "pipelinerun" | "plr" => Some(("PipelineRun", true)),
        "modeldeployments" | "modeldeployment" | "mdep" => Some(("ModelDeployment", true)),
        _ => None,
    }
}

fn resolve(plural: &str) -> Result<(&'static str, bool), ApiError> {
    kind_of(plural).ok_or_else(|| {
        ApiError::not_found(format!(
            "the server doesn't have a resource type \"{plural}\" (known: trainingjobs, queues, pipelines, pipelineruns, modeldeployments)"
        ))
    })
}

/// A stored resource as the Kubernetes-shaped object clients see.
pub fn to_object(r: &StoredResource) -> Value {
    let mut meta = json!({
        "name": r.name,
        "uid": r.uid,
        "generation": r.generation,
        "resourceVersion": r.resource_version.to_string(),
        "creationTimestamp": r.creation_timestamp,
    });
    if !r.namespace.is_empty() {
        meta["namespace"] = json!(r.namespace);
    }
    if let Some(d) = &r.deletion_timestamp {
        meta["deletionTimestamp"] = json!(d);
    }
    if r.labels.as_object().is_some_and(|m| !m.is_empty()) {
        meta["labels"] = r.labels.clone();
    }
    if r.annotations.as_object().is_some_and(|m| !m.is_empty()) {
        meta["annotations"] = r.annotations.clone();
    }
    json!({
        "apiVersion": capstan_crds::API_VERSION,
        "kind": r.kind,
        "metadata": meta,
        "spec": r.spec,
        "status": r.status,
    })
}

fn manifest_error(e: ManifestError) -> ApiError {
    match e {
        ManifestError::Invalid(errors) => {
            let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
            let message = if errors.len() > 1 { format!("{first} (and {} more)", errors.len() - 1) } else { first };
            ApiError { status: StatusCode::BAD_REQUEST, body: json!({ "error": message, "errors": errors }) }
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

async fn apply(State(st): State<AppState>, cluster: OnCluster, body: Bytes) -> Result<Json<Value>, ApiError> {
    refuse_on_cluster(&cluster, "apply")?;
    let resources = manifest::load(&body).map_err(manifest_error)?;
    let mut items = Vec::new();
    for r in resources {
        let (kind, ns, name, meta, spec) = match &r {
            Resource::TrainingJob(tj) => (
                "TrainingJob",
                tj.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                tj.metadata.name.clone().unwrap_or_default(),
                &tj.metadata,
                serde_json::to_value(&tj.spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            Resource::Queue(q) => (
                "Queue",
                String::new(),
                q.metadata.name.clone().unwrap_or_default(),
                &q.metadata,
                serde_json::to_value(&q.spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            Resource::Pipeline(p) => (
                "Pipeline",
                p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                p.metadata.name.clone().unwrap_or_default(),
                &p.metadata,
                serde_json::to_value(&p.spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            Resource::PipelineRun(r) => (
                "PipelineRun",
                r.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                r.metadata.name.clone().unwrap_or_default(),
                &r.metadata,
                serde_json::to_value(&r.spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            Resource::ModelDeployment(d) => (
                "ModelDeployment",
                d.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                d.metadata.name.clone().unwrap_or_default(),
                &d.metadata,
                serde_json::to_value(&d.spec).map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
        };
        let labels = serde_json::to_value(meta.labels.clone().unwrap_or_default()).unwrap_or(json!({}));
        let annotations = serde_json::to_value(meta.annotations.clone().unwrap_or_default()).unwrap_or(json!({}));
        let (stored, outcome) = st.store.put_resource(kind, &ns, &name, &labels, &annotations, &spec).await?;
        let outcome = match outcome {
            PutOutcome::Created => "created",
            PutOutcome::Configured => "configured",
            PutOutcome::Unchanged => "unchanged",
        };
        if outcome == "configured" {
            st.store
                .add_event(
                    &stored.uid,
                    "Normal",
                    "Updated",
                    &format!("spec updated to generation {}", stored.generation),
                )
                .await?;
        }
        items.push(json!({"kind": kind, "namespace": ns, "name": name, "uid": stored.uid, "outcome": outcome}));
    }
    st.wake.notify_one();
    Ok(Json(json!({ "items": items })))
}

async fn list(st: &AppState, cluster: &OnCluster, plural: &str, ns: Option<&str>) -> Result<Json<Value>, ApiError> {
    let (kind, _) = resolve(plural)?;
    let items: Vec<Value> = resources(st, cluster).list(kind, ns).await?.iter().map(to_object).collect();
    Ok(Json(json!({"apiVersion": capstan_crds::API_VERSION, "kind": format!("{kind}List"), "items": items})))
}

async fn list_all(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path(plural): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list(&st, &cluster, &plural, None).await
}

async fn list_ns(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((ns, plural)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (_, namespaced) = resolve(&plural)?;
    if !namespaced {
        return Err(ApiError::bad_request(format!("{plural} are cluster-scoped: drop the namespace")));
    }
    list(&st, &cluster, &plural, Some(&ns)).await
}

async fn find(
    st: &AppState,
    cluster: &OnCluster,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<StoredResource, ApiError> {
    let (kind, namespaced) = resolve(plural)?;
    let ns = if namespaced { ns.unwrap_or("default") } else { "" };
    resources(st, cluster).get(kind, ns, name).await?.ok_or_else(|| {
        let scope = if namespaced { format!(" in namespace {ns}") } else { String::new() };
        ApiError::not_found(format!("{kind} \"{name}\" not found{scope}"))
    })
}

async fn get_cluster(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((plural, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(to_object(&find(&st, &cluster, &plural, None, &name).await?)))
}

async fn get_ns(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(to_object(&find(&st, &cluster, &plural, Some(&ns), &name).await?)))
}

async fn delete(st: &AppState, plural: &str, ns: Option<&str>, name: &str) -> Result<Json<Value>, ApiError> {
    let r = find(st, &None, plural, ns, name).await?;
    if r.kind == "Queue" {
        // Nothing runs for a queue: remove it at once.
        st.store.remove_resource(&r.uid).await?;
    } else {
        st.store.mark_deleted(&r.kind, &r.namespace, &r.name).await?;
        st.store.add_event(&r.uid, "Normal", "Deleting", "deletion requested; stopping every replica").await?;
    }
    st.wake.notify_one();
    Ok(Json(json!({"kind": r.kind, "namespace": r.namespace, "name": r.name, "status": "deleted"})))
}

async fn delete_cluster(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((plural, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    refuse_on_cluster(&cluster, "delete")?;
    delete(&st, &plural, None, &name).await
}

async fn delete_ns(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    refuse_on_cluster(&cluster, "delete")?;
    delete(&st, &plural, Some(&ns), &name).await
}

async fn events(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let r = find(&st, &cluster, &plural, Some(&ns), &name).await?;
    let items = resources(&st, &cluster).events(&r).await?;
    Ok(Json(json!({ "items": items })))
}

/// Query of the log endpoint.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Replica index (default 0).
    pub replica: Option<u32>,
    /// Attempt (default: the current one).
    pub attempt: Option<u32>,
    /// Keep streaming until the job finishes.
    pub follow: Option<bool>,
}

fn finished(r: &StoredResource) -> bool {
    matches!(r.status.get("phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

async fn log(
    State(st): State<AppState>,
    cluster: OnCluster,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let r = find(&st, &cluster, &plural, Some(&ns), &name).await?;
    if r.kind != "TrainingJob" {
        return Err(ApiError::bad_request("logs exist for trainingjobs only"));
    }
    let replicas = r.spec.get("replicas").and_then(Value::as_u64).unwrap_or(1) as u32;
    let replica = q.replica.unwrap_or(0);
    if replica >= replicas {
        return Err(ApiError::bad_request(format!(
            "replica {replica} does not exist: the job has replicas 0..{}",
            replicas - 1
        )));
    }
    let current = r.status.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32;
    let attempt = q.attempt.unwrap_or(current.max(1));
    if let Some(Extension(view)) = &cluster {
        // On a cluster a replica's log is its pod's.
        let follow = q.follow.unwrap_or(false);
        let body = view.0.log(&r, attempt, replica, follow).await.map_err(ReadError::Cluster)?;
        return match body {
            Some(body) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()),
            None => Err(ApiError::not_found(format!(
                "{name} has no pod for replica {replica} of attempt {attempt} (phase {})",
                r.status.get("phase").and_then(Value::as_str).unwrap_or("Pending")
            ))),
        };
    }
    let path = st
        .data_dir
        .join("logs")
        .join(&r.namespace)
        .join(&r.name)
        .join(&r.uid)
        .join(format!("attempt-{attempt}"))
        .join(format!("replica-{replica}.log"));
    let follow = q.follow.unwrap_or(false);
    if !follow {
        return match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response()),
            Err(_) if current == 0 => Err(ApiError::not_found(format!(
                "{name} has not started yet (phase {})",
                r.status.get("phase").and_then(Value::as_str).unwrap_or("Pending")
            ))),
            Err(_) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Vec::new()).into_response()),
        };
    }
    // Follow: stream what is there, then what is appended, until the job finishes (or
    // moves to another attempt) and the file stops growing.
    struct Tail {
        st: AppState,
        r: StoredResource,
        path: std::path::PathBuf,
        offset: u64,
        attempt: u32,
        done: bool,
    }
    let tail = Tail { st: st.clone(), r, path, offset: 0, attempt, done: false };
    let stream = futures_util::stream::unfold(tail, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let chunk = read_from(&t.path, t.offset, 1 << 20).await;
            if !chunk.is_empty() {
                t.offset += chunk.len() as u64;
                return Some((Ok::<Bytes, std::io::Error>(Bytes::from(chunk)), t));
            }
            let latest = t.st.store.get_resource(&t.r.kind, &t.r.namespace, &t.r.name).await.ok().flatten();
            let over = match &latest {
                None => true,
                Some(l) => {
                    finished(l)
                        || l.uid != t.r.uid
                        || l.status.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32 > t.attempt
                }
            };
            if over {
                // One last read catches what was written just before the end.
                let rest = read_from(&t.path, t.offset, u64::MAX).await;
                t.done = true;
                if rest.is_empty() {
                    return None;
                }
                t.offset += rest.len() as u64;
                return Some((Ok(Bytes::from(rest)), t));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}

/// Up to `limit` bytes of the file from `offset`; empty when it is missing or shorter.
async fn read_from(path: &std::path::Path, offset: u64, limit: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut out = Vec::new();
    if let Ok(mut f) = tokio::fs::File::open(path).await {
        if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
            let _ = f.take(limit).read_to_end(&mut out).await;
        }
    }
    out
}
