//! Where a model comes from: a local path, an object-store URI, or the registry.
//!
//! - `/path/model.onnx`, `./dir` or `file:///path`: a file, or a folder holding one `.onnx`
//!   file (an MLflow model folder: `MLmodel` plus `model.onnx`);
//! - `s3://bucket/prefix` (and whatever else capstan-store's `ArtifactStore` reaches): the same, in an
//!   object store, credentials from the usual `AWS_*` environment;
//! - `models:/name@alias`, `models:/name/3`, `models:/name/latest`: a registered model
//!   version, resolved through the Capstan server's MLflow REST API (the alias, then the
//!   version's download URI), its files fetched through the server's `mlflow-artifacts`
//!   proxy (`mlflow-artifacts:/...` and `runs:/<run>/...` download URIs) or straight from the
//!   object store (`s3://...`).
//!
//! [`ModelSource::parse`] is pure; [`fetch`] does the IO.

use std::path::{Path, PathBuf};

#[cfg(feature = "object-store")]
use capstan_store::artifacts::{ArtifactPath, ArtifactStore};
use reqwest::Url;
use serde_json::Value;

use crate::{Result, ServingError};

/// Which version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// A version number.
    Number(u64),
    /// An alias (`@champion`); `latest` is the highest version.
    Alias(String),
}

/// A parsed `--model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file or folder on this machine.
    Local(PathBuf),
    /// An object-store URI (`s3://`, `gs://`, `az://`).
    ObjectStore(String),
    /// A registered model version.
    Registry {
        /// Registered model name.
        name: String,
        /// Version or alias.
        selector: VersionSelector,
    },
}

fn bad_source(source: &str, why: &str) -> ServingError {
    ServingError::Source(format!("--model '{source}': {why}"))
}

impl ModelSource {
    /// Parses `--model`.
    pub fn parse(source: &str) -> Result<ModelSource> {
        let s = source.trim();
        if s.is_empty() {
            return Err(bad_source(source, "is empty"));
        }
        if let Some(rest) = s.strip_prefix("models:/") {
            let rest = rest.trim_start_matches('/');
            if let Some((name, alias)) = rest.split_once('@') {
                if name.is_empty() || alias.is_empty() || alias.contains('/') {
                    return Err(bad_source(source, "expected models:/<name>@<alias>"));
                }
                return Ok(ModelSource::Registry { name: name.into(), selector: VersionSelector::Alias(alias.into()) });
            }
            let (name, version) = rest
                .rsplit_once('/')
                .ok_or_else(|| bad_source(source, "expected models:/<name>/<version> or models:/<name>@<alias>"))?;
            if name.is_empty() {
                return Err(bad_source(source, "the model name is empty"));
            }
            let selector = if version.eq_ignore_ascii_case("latest") {
                VersionSelector::Alias("latest".into())
            } else {
                VersionSelector::Number(version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                    bad_source(source, &format!("version '{version}' is not a positive number, 'latest' or an @alias"))
                })?)
            };
            return Ok(ModelSource::Registry { name: name.into(), selector });
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(ModelSource::Local(PathBuf::from(path)));
        }
        match s.split_once("://") {
            Some(("s3" | "gs" | "az" | "abfs" | "abfss", _)) => Ok(ModelSource::ObjectStore(s.into())),
            Some((scheme, _)) => Err(bad_source(
                source,
                &format!("scheme '{scheme}' is not supported (use a path, file://, s3://, gs://, az:// or models:/)"),
            )),
            None => Ok(ModelSource::Local(PathBuf::from(s))),
        }
    }
}

/// A model's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The `.onnx` file's bytes.
    pub bytes: Vec<u8>,
    /// The registry version, when the model came from the registry.
    pub version: Option<String>,
    /// Where the file was found (for logs).
    pub location: String,
}

/// The Capstan (MLflow-compatible) server used for `models:/` sources.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Result<RegistryClient> {
        let base = Url::parse(base.trim_end_matches('/'))
            .map_err(|e| ServingError::Source(format!("registry server URL '{base}': {e}")))?;
        Ok(RegistryClient { base, token, http: reqwest::Client::new() })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.clone();
        {
            let mut segs =
                url.path_segments_mut().map_err(|_| ServingError::Source(format!("bad server URL {}", self.base)))?;
            segs.pop_if_empty();
            segs.extend(path.split('/').filter(|s| !s.is_empty()));
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn get(&self, url: Url) -> Result<reqwest::Response> {
        let mut req = self.http.get(url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ServingError::Source(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").or_else(|| v.get("error")).and_then(Value::as_str).map(str::to_string))
                .unwrap_or(body);
            return Err(ServingError::Source(format!("GET {url}: {status}: {message}")));
        }
        Ok(resp)
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = self.url(path, query)?;
        self.get(url.clone())
            .await?
            .json()
            .await
            .map_err(|e| ServingError::Source(format!("GET {url}: the answer is not JSON: {e}")))
    }

    /// The version number an alias (or `latest`) points at now.
    pub async fn resolve_alias(&self, name: &str, alias: &str) -> Result<u64> {
        let v = self.get_json("api/2.0/mlflow/registered-models/alias", &[("name", name), ("alias", alias)]).await?;
        v.pointer("/model_version/version")
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()))
            .ok_or_else(|| ServingError::Source(format!("alias '{alias}' of model '{name}': no version in the answer")))
    }

    /// The download URI of a model version.
    pub async fn download_uri(&self, name: &str, version: u64) -> Result<String> {
        let v = self
            .get_json(
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", &version.to_string())],
            )
            .await?;
        v.get("artifact_uri").and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
            ServingError::Source(format!("model '{name}' version {version}: no artifact_uri in the answer"))
        })
    }

    async fn run_artifact_uri(&self, run_id: &str) -> Result<String> {
        let v = self.get_json("api/2.0/mlflow/runs/get", &[("run_id", run_id)]).await?;
        v.pointer("/run/info/artifact_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ServingError::Source(format!("run '{run_id}': no artifact_uri")))
    }

    /// Entries under an artifact folder of the proxy: `(path, is_dir)`.
    async fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let v = self.get_json("api/2.0/mlflow-artifacts/artifacts", &[("path", dir)]).await?;
        Ok(v.get("files")
            .and_then(Value::as_array)
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| {
                        let p = f.get("path")?.as_str()?;
                        let full = if dir.is_empty() { p.to_string() } else { format!("{dir}/{p}") };
                        Some((full, f.get("is_dir").and_then(Value::as_bool).unwrap_or(false)))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn download(&self, path: &str) -> Result<Vec<u8>> {
        let url = self.url(&format!("api/2.0/mlflow-artifacts/artifacts/{path}"), &[])?;
        let bytes =
            self.get(url.clone()).await?.bytes().await.map_err(|e| ServingError::Source(format!("GET {url}: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Fetches the `.onnx` file behind an artifact URI (`mlflow-artifacts:`, `runs:/`, or
    /// an object-store URI).
    pub async fn fetch_uri(&self, uri: &str) -> Result<(Vec<u8>, String)> {
        if let Some(rest) = uri.strip_prefix("runs:/") {
            let (run, rel) = rest.trim_start_matches('/').split_once('/').unwrap_or((rest, ""));
            let root = self.run_artifact_uri(run).await?;
            let joined = if rel.is_empty() { root } else { format!("{}/{rel}", root.trim_end_matches('/')) };
            return Box::pin(self.fetch_uri(&joined)).await;
        }
        if uri.starts_with("mlflow-artifacts:") {
            let dir = artifact_uri_path(uri)?;
            let mut entries = self.list(&dir).await?;
            if entries.is_empty() {
                // Not a folder: the URI names the file itself.
                return Ok((self.download(&dir).await?, uri.to_string()));
            }
            // One level of sub-folders (an MLflow model folder inside the artifact root).
            if !entries.iter().any(|(p, d)| !d && p.ends_with(".onnx")) {
                for (sub, _) in entries.clone().into_iter().filter(|(_, d)| *d) {
                    entries.extend(self.list(&sub).await?);
                }
            }
            let files: Vec<String> = entries.into_iter().filter(|(_, d)| !d).map(|(p, _)| p).collect();
            let chosen = pick_onnx(&files).ok_or_else(|| {
                ServingError::Source(format!("no .onnx file under {uri} (found: {})", files.join(", ")))
            })?;
            return Ok((self.download(&chosen).await?, format!("mlflow-artifacts:/{chosen}")));
        }
        match ModelSource::parse(uri)? {
            ModelSource::Local(p) => read_local(&p).await,
            ModelSource::ObjectStore(u) => read_object_store(&u).await,
            ModelSource::Registry { .. } => {
                Err(ServingError::Source(format!("download URI '{uri}' names another model")))
            }
        }
    }
}

/// The `.onnx` file to load among `files`: `model.onnx` (at any depth) first, else the only
/// `.onnx` file; `None` when there is none or several without a `model.onnx`.
pub fn pick_onnx(files: &[String]) -> Option<String> {
    let onnx: Vec<&String> = files.iter().filter(|f| f.ends_with(".onnx")).collect();
    let mut named: Vec<&&String> = onnx.iter().filter(|f| f.rsplit('/').next() == Some("model.onnx")).collect();
    named.sort_by_key(|f| f.len());
    if let Some(f) = named.first() {
        return Some((**f).clone());
    }
    match onnx.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

async fn read_local(p: &Path) -> Result<(Vec<u8>, String)> {
    let meta = tokio::fs::metadata(p).await.map_err(|e| ServingError::Source(format!("{}: {e}", p.display())))?;
    let file = if meta.is_dir() {
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(p).await.map_err(|e| ServingError::Source(format!("{}: {e}", p.display())))?;
        while let Ok(Some(entry)) = rd.next_entry().await {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        let chosen = pick_onnx(&names)
            .ok_or_else(|| ServingError::Source(format!("no single .onnx file in folder {}", p.display())))?;
        p.join(chosen)
    } else {
        p.to_path_buf()
    };
    let bytes = tokio::fs::read(&file).await.map_err(|e| ServingError::Source(format!("{}: {e}", file.display())))?;
    Ok((bytes, file.display().to_string()))
}

/// The proxy path of an `mlflow-artifacts:` URI (an optional `//host` is ignored): relative,
/// no empty, `.` or `..` segment.
pub fn artifact_uri_path(uri: &str) -> Result<String> {
    let bad = |why: &str| ServingError::Source(format!("artifact URI '{uri}': {why}"));
    let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| bad("not an mlflow-artifacts: URI"))?;
    let rest = match rest.strip_prefix("//") {
        Some(host_and_path) => host_and_path.find('/').map(|i| &host_and_path[i..]).unwrap_or(""),
        None => rest,
    };
    let path = rest.trim_matches('/');
    if path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\')) {
        return Err(bad("it has an empty, '.' or '..' segment"));
    }
    Ok(path.to_string())
}

#[cfg(not(feature = "object-store"))]
async fn read_object_store(uri: &str) -> Result<(Vec<u8>, String)> {
    Err(ServingError::Source(format!("{uri}: this build has no object-store support (feature object-store)")))
}

#[cfg(feature = "object-store")]
async fn read_object_store(uri: &str) -> Result<(Vec<u8>, String)> {
    let err = |e: capstan_store::StoreError| ServingError::Source(format!("{uri}: {e}"));
    let store = ArtifactStore::from_destination(uri).map_err(err)?;
    let files: Vec<String> =
        store.list_recursive(&ArtifactPath::root()).await.map_err(err)?.into_iter().map(|(p, _)| p).collect();
    if let Some(chosen) = pick_onnx(&files) {
        let bytes = store.get_bytes(&ArtifactPath::parse(&chosen).map_err(err)?).await.map_err(err)?;
        return Ok((bytes.to_vec(), format!("{}/{chosen}", uri.trim_end_matches('/'))));
    }
    if !files.is_empty() {
        return Err(ServingError::Source(format!("no single .onnx file under {uri} (found: {})", files.join(", "))));
    }
    // The URI names the file itself.
    let (parent, name) = uri.rsplit_once('/').ok_or_else(|| ServingError::Source(format!("{uri}: nothing there")))?;
    let store = ArtifactStore::from_destination(parent).map_err(err)?;
    let bytes = store.get_bytes(&ArtifactPath::parse(name).map_err(err)?).await.map_err(err)?;
    Ok((bytes.to_vec(), uri.to_string()))
}

/// Fetches the model file of `source`; `registry` is needed for `models:/` sources.
pub async fn fetch(source: &ModelSource, registry: Option<&RegistryClient>) -> Result<Fetched> {
    match source {
        ModelSource::Local(p) => {
            let (bytes, location) = read_local(p).await?;
            Ok(Fetched { bytes, version: None, location })
        }
        ModelSource::ObjectStore(uri) => {
            let (bytes, location) = read_object_store(uri).await?;
            Ok(Fetched { bytes, version: None, location })
        }
        ModelSource::Registry { name, selector } => {
            let registry = registry.ok_or_else(|| {
                ServingError::Source("a models:/ source needs the server (--server or MLFLOW_TRACKING_URI)".into())
            })?;
            let version = match selector {
                VersionSelector::Number(n) => *n,
                VersionSelector::Alias(a) => registry.resolve_alias(name, a).await?,
            };
            let uri = registry.download_uri(name, version).await?;
            let (bytes, location) = registry.fetch_uri(&uri).await?;
            Ok(Fetched { bytes, version: Some(version.to_string()), location })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        use VersionSelector::*;
        let reg = |n: &str, s| ModelSource::Registry { name: n.into(), selector: s };
        assert_eq!(ModelSource::parse("models:/iris@champion").unwrap(), reg("iris", Alias("champion".into())));
        assert_eq!(ModelSource::parse("models:/iris/3").unwrap(), reg("iris", Number(3)));
        assert_eq!(ModelSource::parse("models:/iris/latest").unwrap(), reg("iris", Alias("latest".into())));
        assert_eq!(ModelSource::parse("/tmp/m.onnx").unwrap(), ModelSource::Local("/tmp/m.onnx".into()));
        assert_eq!(ModelSource::parse("file:///tmp/m").unwrap(), ModelSource::Local("/tmp/m".into()));
        assert_eq!(ModelSource::parse("s3://b/p").unwrap(), ModelSource::ObjectStore("s3://b/p".into()));
        for bad in ["", "models:/iris", "models:/iris/0", "models:/iris/x", "models:/@a", "http://x/m.onnx"] {
            let e = ModelSource::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--model"), "{bad}: {e}");
        }
    }

    #[test]
    fn artifact_uris() {
        assert_eq!(artifact_uri_path("mlflow-artifacts:/1/models/m-1/artifacts").unwrap(), "1/models/m-1/artifacts");
        assert_eq!(artifact_uri_path("mlflow-artifacts://host:5000/1/r/artifacts/").unwrap(), "1/r/artifacts");
        assert!(artifact_uri_path("mlflow-artifacts:/1/../etc").is_err());
        assert!(artifact_uri_path("mlflow-artifacts:").is_err());
        assert!(artifact_uri_path("s3://b/x").is_err());
    }

    #[test]
    fn picks_model_onnx_first() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_onnx(&s(&["MLmodel", "model.onnx"])), Some("model.onnx".into()));
        assert_eq!(pick_onnx(&s(&["a/other.onnx", "a/model.onnx"])), Some("a/model.onnx".into()));
        assert_eq!(pick_onnx(&s(&["net.onnx", "x.txt"])), Some("net.onnx".into()));
        assert_eq!(pick_onnx(&s(&["a.onnx", "b.onnx"])), None);
        assert_eq!(pick_onnx(&s(&["MLmodel"])), None);
    }

    #[tokio::test]
    async fn local_folder_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("MLmodel"), "flavors: {}").unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"bytes").unwrap();
        let f = fetch(&ModelSource::Local(dir.path().into()), None).await.unwrap();
        assert_eq!(f.bytes, b"bytes");
        assert!(f.location.ends_with("model.onnx"));
        let e = fetch(&ModelSource::Local(dir.path().join("nope.onnx")), None).await.unwrap_err();
        assert!(e.to_string().contains("nope.onnx"), "{e}");
        let e = fetch(&ModelSource::Registry { name: "m".into(), selector: VersionSelector::Number(1) }, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--server"), "{e}");
    }
}
