//! MLflow's artifact proxy (`mlflow-artifacts`), as the unmodified `mlflow` client's
//! `mlflow-artifacts:` repository calls it. A run's `artifact_uri` is
//! `mlflow-artifacts:/<experiment_id>/<run_id>/artifacts`; the client turns it into
//! `<tracking URI>/api/2.0/mlflow-artifacts/artifacts/<experiment_id>/<run_id>/artifacts/...`
//! and this module maps `<path>` to `<destination>/<path>` in the [`ArtifactStore`].
//!
//! | request | answer |
//! |---|---|
//! | `PUT .../artifacts/<path>` | stores the body, streaming (up to [`MAX_ARTIFACT_BYTES`]); `{}` |
//! | `GET .../artifacts/<path>` | the file, streamed; 404 `RESOURCE_DOES_NOT_EXIST` when absent |
//! | `GET .../artifacts?path=<dir>` | `{"files": [{"path", "is_dir", "file_size"}]}` (names within `dir`) |
//! | `DELETE .../artifacts/<path>` | deletes the file or the folder; `{}` |
//! | `POST .../mpu/{create,complete,abort}/<path>` | 501 with MLflow's "Multipart upload is not supported" message: the client then uploads with one streamed PUT |
//! | `GET .../presigned/<path>` | 501 likewise (the client downloads through the proxy) |
//!
//! Mounted under `/api/2.0/mlflow-artifacts` and `/ajax-api/2.0/mlflow-artifacts`. Every path
//! is checked by [`ArtifactPath`]: `..`, absolute paths, backslashes and NUL answer 400
//! `INVALID_PARAMETER_VALUE` naming the path, so nothing can leave the destination.
//!
//! The app-wide body limit ([`crate::MAX_BODY`]) bounds buffered bodies only; an upload is
//! read as a stream here and bounded by [`MAX_ARTIFACT_BYTES`] (413 beyond it, checked
//! against `Content-Length` up front and counted while streaming).

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use capstan_store::artifacts::{ArtifactPath, ArtifactStore};
use capstan_store::StoreError;
use serde_json::{json, Value};

use crate::mlflow::ApiError;

/// The path prefixes the proxy is mounted under.
pub const PREFIXES: [&str; 2] = ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"];

/// Largest artifact one PUT may store (5 GiB, S3's limit for one PUT).
pub const MAX_ARTIFACT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The message the mlflow client recognises as "no multipart upload here, use a PUT"
/// (`mlflow.exceptions._UnsupportedMultipartUploadException.MESSAGE`).
pub const MULTIPART_UNSUPPORTED: &str = "Multipart upload is not supported for the current artifact repository";

/// The artifact proxy with its state applied, mounted under both [`PREFIXES`].
pub fn router(store: ArtifactStore) -> Router {
    let mut router: Router<ArtifactStore> = Router::new();
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}/artifacts"), get(list).fallback(method_not_allowed))
            .route(
                &format!("{prefix}/artifacts/{{*path}}"),
                get(download).put(upload).delete(delete).fallback(method_not_allowed),
            )
            .route(&format!("{prefix}/mpu/{{*rest}}"), post(multipart_unsupported).fallback(method_not_allowed))
            .route(&format!("{prefix}/presigned/{{*rest}}"), get(presigned_unsupported).fallback(method_not_allowed))
            .route(prefix, any(endpoint_not_found))
            .route(&format!("{prefix}/"), any(endpoint_not_found))
            .route(&format!("{prefix}/{{*rest}}"), any(endpoint_not_found));
    }
    router.with_state(store)
}

/// The answer to a failed artifact operation on `path`.
pub fn store_error(path: &str, err: StoreError) -> ApiError {
    let api = |status: StatusCode, code: &'static str, message: String| ApiError { status, error_code: code, message };
    match err {
        StoreError::InvalidArtifactPath { path, reason } => {
            ApiError::invalid(format!("Invalid artifact path '{path}': it {reason}."))
        }
        StoreError::NotFound(_) => ApiError::not_found(format!("Artifact '{path}' does not exist.")),
        StoreError::ArtifactTooLarge { limit, .. } => api(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_PARAMETER_VALUE",
            format!("Artifact '{path}' is larger than the limit of {limit} bytes for one upload."),
        ),
        StoreError::UploadInterrupted { reason, .. } => {
            ApiError::invalid(format!("The upload of artifact '{path}' broke off: {reason}. Nothing was stored."))
        }
        StoreError::ObjectStore(object_store_err) => {
            tracing::error!(artifact = %path, error = %object_store_err, "artifact storage failed");
            ApiError::internal(format!("Artifact storage failed for '{path}': {object_store_err}"))
        }
        other => {
            tracing::error!(artifact = %path, error = %other, "artifact operation failed");
            ApiError::internal(format!("Artifact operation on '{path}' failed: {other}"))
        }
    }
}

fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| ApiError::invalid(format!("Malformed artifact path in the URL: {}", e.body_text())))
}

fn file_path(raw: &str) -> Result<ArtifactPath, ApiError> {
    ArtifactPath::parse(raw).map_err(|e| store_error(raw, e))
}

/// `PUT .../artifacts/<path>`: store the body, streaming.
async fn upload(
    State(store): State<ArtifactStore>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let raw = path_param(path)?;
    let path = file_path(&raw)?;
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > MAX_ARTIFACT_BYTES {
            return Err(store_error(
                &raw,
                StoreError::ArtifactTooLarge { path: raw.clone(), limit: MAX_ARTIFACT_BYTES },
            ));
        }
    }
    store.put_stream(&path, body.into_data_stream(), MAX_ARTIFACT_BYTES).await.map_err(|e| store_error(&raw, e))?;
    Ok(Json(json!({})))
}

/// `GET .../artifacts/<path>`: the file, streamed.
async fn download(
    State(store): State<ArtifactStore>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let raw = path_param(path)?;
    let path = file_path(&raw)?;
    let read = store.get(&path).await.map_err(|e| store_error(&raw, e))?;
    let name = path.segments().last().map(String::as_str).unwrap_or_default();
    let mut response = Body::from_stream(read.stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(read.size));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// `GET .../artifacts?path=<dir>`: the entries of a folder.
async fn list(
    State(store): State<ArtifactStore>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::invalid(format!("Malformed query string: {}", e.body_text())))?;
    let raw = pairs.into_iter().find(|(k, _)| k == "path").map(|(_, v)| v).unwrap_or_default();
    let dir = ArtifactPath::parse_dir(&raw).map_err(|e| store_error(&raw, e))?;
    let entries = store.list(&dir).await.map_err(|e| store_error(&raw, e))?;
    let files: Vec<Value> = entries
        .into_iter()
        .map(|e| match e.size {
            Some(size) if !e.is_dir => json!({ "path": e.name, "is_dir": false, "file_size": size }),
            _ => json!({ "path": e.name, "is_dir": true }),
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}

/// `DELETE .../artifacts/<path>`: the file or everything under the folder.
async fn delete(
    State(store): State<ArtifactStore>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let raw = path_param(path)?;
    let path = ArtifactPath::parse_dir(&raw).map_err(|e| store_error(&raw, e))?;
    store.delete(&path).await.map_err(|e| store_error(&raw, e))?;
    Ok(Json(json!({})))
}

fn not_implemented(message: String) -> ApiError {
    ApiError { status: StatusCode::NOT_IMPLEMENTED, error_code: "NOT_IMPLEMENTED", message }
}

/// Reads (and drops) the JSON body first: answering before the body is read would make the
/// server close the connection, and the client's next request on it (the PUT) would fail.
async fn multipart_unsupported(_body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>) -> ApiError {
    not_implemented(format!(
        "{MULTIPART_UNSUPPORTED}: this server streams uploads of any size through PUT \
         /api/2.0/mlflow-artifacts/artifacts/<path>"
    ))
}

async fn presigned_unsupported() -> ApiError {
    not_implemented(
        "Presigned downloads are not supported: download through GET /api/2.0/mlflow-artifacts/artifacts/<path>".into(),
    )
}

async fn endpoint_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error_code: "ENDPOINT_NOT_FOUND",
        message: format!("No API endpoint {method} {}", uri.path()),
    }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error_code: "ENDPOINT_NOT_FOUND",
        message: format!("The endpoint {} does not accept {method}", uri.path()),
    }
}

/// Content-Type of a downloaded artifact, from its name. Markup and scripts are served as
/// plain text (with `nosniff`) so an uploaded page cannot run in the API's origin.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" | "log" | "md" | "yaml" | "yml" | "csv" | "tsv" | "py" | "html" | "htm" | "js" | "svg" | "xml"
        | "toml" | "ini" | "cfg" | "sh" => "text/plain; charset=utf-8",
        _ if name == "MLmodel" || name == "requirements.txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_never_let_markup_run() {
        assert_eq!(content_type("metrics.json"), "application/json");
        assert_eq!(content_type("page.HTML"), "text/plain; charset=utf-8");
        assert_eq!(content_type("x.svg"), "text/plain; charset=utf-8");
        assert_eq!(content_type("MLmodel"), "text/plain; charset=utf-8");
        assert_eq!(content_type("model.pkl"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn store_errors_map_to_mlflow_codes() {
        let e = store_error("../x", ArtifactPath::parse("../x").unwrap_err());
        assert_eq!((e.status, e.error_code), (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"));
        assert!(e.message.contains("'../x'") && e.message.contains(".."), "{}", e.message);
        let e = store_error("a", StoreError::NotFound("artifact a".into()));
        assert_eq!((e.status, e.error_code), (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"));
        let e = store_error("a", StoreError::ArtifactTooLarge { path: "a".into(), limit: 5 });
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = store_error("a", StoreError::UploadInterrupted { path: "a".into(), reason: "reset".into() });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
