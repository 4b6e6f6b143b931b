//! Secrets and manual pipeline runs (behind the API token):
//!
//! - `POST /api/v1/namespaces/{ns}/secrets` `{"name", "data": {KEY: VALUE}}`: create a secret
//!   (`capstan secret create NAME --from-literal KEY=VALUE`); 409 when the name is taken.
//! - `GET /api/v1/secrets`, `GET /api/v1/namespaces/{ns}/secrets`: names and keys only.
//! - `DELETE /api/v1/namespaces/{ns}/secrets/{name}`.
//! - `POST /api/v1/namespaces/{ns}/pipelines/{name}/runs` `{"parameters": {..}, "commit"?: {..}}`:
//!   start a run by hand (`capstan pipeline run NAME --param k=v`).
//!
//! No response ever carries a secret's value.
//!
//! On a cluster (`capstan server --kubernetes`, see [`crate::webhooks::on_cluster`]) a manual
//! run is a PipelineRun object made from the cluster's Pipeline, and the secret endpoints
//! answer 400: webhook secrets are Kubernetes Secrets there (`kubectl create secret generic`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use capstan_crds::pipeline::{self, CommitInfo, PipelineRunSpec, PipelineSpec, TriggerInfo};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::webhooks::{Cluster, CreateOutcome};
use crate::{ApiError, AppState};

/// The 400 of the secret endpoints on a cluster.
fn secrets_on_cluster(cluster: &Option<Extension<Cluster>>) -> Result<(), ApiError> {
    match cluster {
        None => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "this server keeps its pipelines on Kubernetes (--kubernetes): webhook secrets are Kubernetes Secrets in \
             the Pipeline's namespace; create one with `kubectl create secret generic NAME -n NAMESPACE \
             --from-literal=secret=VALUE`",
        )),
    }
}

/// Largest total size of a secret's values (as Kubernetes: 1 MiB).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Routes for secrets and manual runs.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/secrets", get(list_all))
        .route("/api/v1/namespaces/{ns}/secrets", get(list_ns).post(create))
        .route("/api/v1/namespaces/{ns}/secrets/{name}", delete(remove))
        .route("/api/v1/namespaces/{ns}/pipelines/{name}/runs", post(run))
}

/// Why `name` is not a valid secret or namespace name (a DNS-1123 subdomain), if it is not.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    (!ok).then(|| {
        format!(
            "{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a \
             letter or digit"
        )
    })
}

/// Why `key` is not a valid secret key (as Kubernetes: letters, digits, `-`, `_`, `.`).
pub fn key_problem(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    (!ok).then(|| format!("key {key:?} is not valid: use letters, digits, '-', '_' and '.'"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    name: String,
    data: BTreeMap<String, String>,
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid body at line {}, column {}: {inner}", inner.line(), inner.column()))
        } else {
            ApiError::bad_request(format!("invalid body: {path}: {inner}"))
        }
    })
}

async fn create(
    State(st): State<AppState>,
    cluster: Option<Extension<Cluster>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    secrets_on_cluster(&cluster)?;
    let s: NewSecret = json_body(&body)?;
    if let Some(p) = name_problem(&ns) {
        return Err(ApiError::bad_request(format!("namespace: {p}")));
    }
    if let Some(p) = name_problem(&s.name) {
        return Err(ApiError::bad_request(format!("name: {p}")));
    }
    if s.data.is_empty() {
        return Err(ApiError::bad_request("data: a secret needs at least one key (--from-literal KEY=VALUE)"));
    }
    for k in s.data.keys() {
        if let Some(p) = key_problem(k) {
            return Err(ApiError::bad_request(format!("data: {p}")));
        }
    }
    let size: usize = s.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err(ApiError::bad_request(format!("data: larger than {MAX_SECRET_BYTES} bytes")));
    }
    let info = st.store.create_secret(&ns, &s.name, &s.data).await?;
    Ok((StatusCode::CREATED, Json(secret_json(&info))))
}

fn secret_json(s: &capstan_store::secrets::SecretInfo) -> Value {
    json!({
        "kind": "Secret",
        "metadata": {"namespace": s.namespace, "name": s.name, "creationTimestamp": s.creation_timestamp},
        "keys": s.keys,
    })
}

async fn list(st: &AppState, ns: Option<&str>) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = st.store.list_secrets(ns).await?.iter().map(secret_json).collect();
    Ok(Json(json!({"kind": "SecretList", "items": items})))
}

async fn list_all(State(st): State<AppState>, cluster: Option<Extension<Cluster>>) -> Result<Json<Value>, ApiError> {
    secrets_on_cluster(&cluster)?;
    list(&st, None).await
}

async fn list_ns(
    State(st): State<AppState>,
    cluster: Option<Extension<Cluster>>,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    secrets_on_cluster(&cluster)?;
    list(&st, Some(&ns)).await
}

async fn remove(
    State(st): State<AppState>,
    cluster: Option<Extension<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    secrets_on_cluster(&cluster)?;
    if st.store.delete_secret(&ns, &name).await? {
        Ok(Json(json!({"deleted": {"namespace": ns, "name": name}})))
    } else {
        Err(ApiError::not_found(format!("secret {ns}/{name} not found")))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ManualRun {
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    commit: Option<CommitInfo>,
}

async fn run(
    State(st): State<AppState>,
    cluster: Option<Extension<Cluster>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: ManualRun =
        if body.iter().all(u8::is_ascii_whitespace) { ManualRun::default() } else { json_body(&body)? };
    let cluster = cluster.map(|Extension(c)| c.0);
    let spec: PipelineSpec = match &cluster {
        Some(c) => match c.get_pipeline(&ns, &name).await? {
            Some(p) => p.spec,
            None => return Err(ApiError::not_found(format!("pipeline {ns}/{name} not found"))),
        },
        None => {
            let Some(p) = st.store.get_resource("Pipeline", &ns, &name).await? else {
                return Err(ApiError::not_found(format!("pipeline {ns}/{name} not found")));
            };
            serde_json::from_value(p.spec.clone())
                .map_err(|e| ApiError::bad_request(format!("pipeline {ns}/{name} has an invalid stored spec: {e}")))?
        }
    };
    let run = PipelineRunSpec {
        pipeline_ref: name.clone(),
        parameters: req.parameters,
        commit: req.commit,
        trigger: Some(TriggerInfo { source: "manual".into(), ..Default::default() }),
    };
    pipeline::effective_parameters(&spec, &run).map_err(|e| ApiError::bad_request(format!("parameters: {e}")))?;
    let run_name = match &cluster {
        Some(c) => match crate::webhooks::create_cluster_run(c.as_ref(), &ns, &name, &run, None).await? {
            (run_name, CreateOutcome::Created) => run_name,
            (run_name, CreateOutcome::AlreadyExists) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("pipelinerun {ns}/{run_name} already exists: try again"),
                ))
            }
        },
        None => crate::webhooks::create_run(&st, &ns, &name, &run).await?,
    };
    st.wake.notify_one();
    Ok((StatusCode::CREATED, Json(json!({"namespace": ns, "pipeline": name, "name": run_name}))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(name_problem("iris-hook").is_none());
        assert!(name_problem("a.b").is_none());
        assert!(name_problem("Iris").is_some());
        assert!(name_problem("-a").is_some());
        assert!(key_problem("secret").is_none());
        assert!(key_problem("tls.crt").is_none());
        assert!(key_problem("a b").is_some());
        assert!(key_problem("").is_some());
    }
}
