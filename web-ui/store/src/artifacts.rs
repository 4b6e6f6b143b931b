//! Artifact storage: files that runs log (models, plots, replica logs), kept in an object
//! store through the `object_store` crate. The destination is a local folder (`/path`,
//! `file:///path`) or S3 / an S3-compatible server (`s3://bucket/prefix`, credentials from
//! the usual `AWS_*` environment, `AWS_ENDPOINT_URL` for a non-AWS endpoint); `gs://` and
//! `az://` work only in builds with this crate's `gcp` / `azure` features.
//!
//! [`ArtifactStore`] is what the server's `mlflow-artifacts` proxy and the controller (job
//! logs as run artifacts) share. Every path goes through [`ArtifactPath::parse`], which
//! refuses anything that could leave the destination (`..`, absolute paths, backslashes,
//! NUL). Each segment becomes one object-store path part, percent-encoding the characters
//! object stores reserve (`#`, `%`, `*`, ...), so any safe name round-trips unchanged.
//!
//! Uploads stream: a body is held at most one [`UPLOAD_CHUNK`] at a time (plus the parts in
//! flight, at most [`UPLOAD_CONCURRENCY`]); an upload that fails half-way is aborted and
//! leaves nothing behind (local files are written aside and renamed, S3 multipart uploads
//! are aborted).

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::{Result, StoreError};

/// Bytes gathered before a part is sent. A body that ends before this is stored with one
/// PUT; a longer one becomes a multipart upload of parts this size (S3 wants >= 5 MiB).
pub const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;
/// Parts of one upload sent at the same time.
pub const UPLOAD_CONCURRENCY: usize = 2;
/// Longest artifact path in bytes (S3's limit on keys, before the destination's prefix).
pub const MAX_PATH_BYTES: usize = 1024;
/// How long [`ArtifactStore::check`] waits for the destination.
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Read size when uploading a local file.
const FILE_READ_CHUNK: usize = 1024 * 1024;

/// A safe relative artifact path: `/`-separated segments, none empty, `.` or `..`, no
/// backslash or NUL, not absolute. The empty path is the root (only for listing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ArtifactPath {
    segments: Vec<String>,
}

impl ArtifactPath {
    /// The root of the destination.
    pub fn root() -> ArtifactPath {
        ArtifactPath::default()
    }

    /// A path naming a file: it must not be empty.
    pub fn parse(path: &str) -> Result<ArtifactPath> {
        let p = Self::parse_dir(path)?;
        if p.is_root() {
            return Err(invalid(path, "is empty"));
        }
        if path.ends_with('/') {
            return Err(invalid(path, "ends with '/' (a file path names a file, not a folder)"));
        }
        Ok(p)
    }

    /// A path naming a folder: empty means the root, and a trailing `/` is allowed.
    pub fn parse_dir(path: &str) -> Result<ArtifactPath> {
        if path.contains('\0') {
            return Err(invalid(path, "contains a NUL character"));
        }
        if path.contains('\\') {
            return Err(invalid(path, "contains a backslash"));
        }
        if path.starts_with('/') {
            return Err(invalid(path, "is absolute; artifact paths are relative"));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid(path, &format!("is longer than {MAX_PATH_BYTES} bytes")));
        }
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return if path.is_empty() { Ok(ArtifactPath::root()) } else { Err(invalid(path, "is absolute")) };
        }
        let mut segments = Vec::new();
        for (i, seg) in trimmed.split('/').enumerate() {
            match seg {
                "" => return Err(invalid(path, "contains an empty segment ('//')")),
                "." => return Err(invalid(path, "contains a '.' segment")),
                ".." => return Err(invalid(path, "contains a '..' segment")),
                _ => {}
            }
            if i == 0 && seg.len() == 2 && seg.as_bytes()[0].is_ascii_alphabetic() && seg.as_bytes()[1] == b':' {
                return Err(invalid(path, "starts with a drive letter; artifact paths are relative"));
            }
            segments.push(seg.to_string());
        }
        Ok(ArtifactPath { segments })
    }

    /// The artifact root of a run or experiment from its URI,
    /// `mlflow-artifacts:/<experiment_id>/<run_id>/artifacts` (an optional `//host` after the
    /// scheme is ignored): `<experiment_id>/<run_id>/artifacts`.
    pub fn from_artifact_uri(uri: &str) -> Result<ArtifactPath> {
        let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| StoreError::InvalidArtifactPath {
            path: uri.to_string(),
            reason: "is not an mlflow-artifacts: URI".into(),
        })?;
        let rest = match rest.strip_prefix("//") {
            Some(host_and_path) => host_and_path.find('/').map(|i| &host_and_path[i..]).unwrap_or(""),
            None => rest,
        };
        ArtifactPath::parse_dir(rest.trim_start_matches('/'))
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// This path with more segments appended (`rel` is parsed like [`ArtifactPath::parse_dir`]).
    pub fn join(&self, rel: &str) -> Result<ArtifactPath> {
        let rel = ArtifactPath::parse_dir(rel)?;
        let mut segments = self.segments.clone();
        segments.extend(rel.segments);
        Ok(ArtifactPath { segments })
    }
}

impl fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

fn invalid(path: &str, reason: &str) -> StoreError {
    StoreError::InvalidArtifactPath { path: path.to_string(), reason: reason.to_string() }
}

/// Decodes `%XX` escapes (as object-store path parts carry them); anything else is kept.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    /// Name within the folder (one segment).
    pub name: String,
    /// A folder (has entries below it) rather than a file.
    pub is_dir: bool,
    /// Size in bytes (files only).
    pub size: Option<u64>,
}

/// An artifact being read: its size and its bytes as a stream.
pub struct ArtifactRead {
    /// Size in bytes.
    pub size: u64,
    /// The content.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl fmt::Debug for ArtifactRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactRead").field("size", &self.size).finish_non_exhaustive()
    }
}

/// Where artifacts live: an object store and a prefix inside it.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    url: String,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore").field("url", &self.url).finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// An existing object store, with `prefix` (a `/`-separated path, may be empty) in front
    /// of every artifact path; `url` only describes it.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Result<ArtifactStore> {
        let prefix = ArtifactPath::parse_dir(prefix)?;
        Ok(ArtifactStore { inner, prefix: prefix.segments, url: url.into() })
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> ArtifactStore {
        ArtifactStore { inner: Arc::new(object_store::memory::InMemory::new()), prefix: vec![], url: "memory:".into() }
    }

    /// A local folder (made when missing). Files are fsynced before an upload returns, and
    /// folders left empty by a delete are removed.
    pub fn local(dir: &std::path::Path) -> Result<ArtifactStore> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        let fs =
            object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true).with_fsync(true);
        let url = format!("file://{}", std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()).display());
        Ok(ArtifactStore { inner: Arc::new(fs), prefix: vec![], url })
    }

    /// The store a destination names: a local path, `file:///abs/path`, `s3://bucket[/prefix]`
    /// (and `gs://`, `az://` when compiled in). See the module documentation.
    pub fn from_destination(destination: &str) -> Result<ArtifactStore> {
        let bad =
            |reason: &str| StoreError::ArtifactDestination { url: destination.to_string(), reason: reason.into() };
        let d = destination.trim();
        if d.is_empty() {
            return Err(bad("is empty"));
        }
        let Some((scheme, rest)) = d.split_once("://") else {
            return ArtifactStore::local(std::path::Path::new(d));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                // file:///abs/path (an empty host) or file://localhost/abs/path.
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(bad("a file:// URL needs an absolute path: file:///path/to/folder"));
                }
                ArtifactStore::local(std::path::Path::new(&percent_decode(path)))
            }
            "s3" | "s3a" => {
                let (bucket, prefix) = split_bucket(rest).ok_or_else(|| bad("names no bucket: s3://bucket/prefix"))?;
                let store = s3(bucket).map_err(|e| bad(&e.to_string()))?;
                ArtifactStore::new(store, prefix, d).map_err(|e| bad(&e.to_string()))
            }
            "gs" => {
                let (bucket, prefix) = split_bucket(rest).ok_or_else(|| bad("names no bucket: gs://bucket/prefix"))?;
                let store = gcs(bucket).map_err(|e| bad(&e.to_string()))?;
                ArtifactStore::new(store, prefix, d).map_err(|e| bad(&e.to_string()))
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let (container, prefix) =
                    split_bucket(rest).ok_or_else(|| bad("names no container: az://container/prefix"))?;
                let store = azure(container).map_err(|e| bad(&e.to_string()))?;
                ArtifactStore::new(store, prefix, d).map_err(|e| bad(&e.to_string()))
            }
            other => Err(bad(&format!(
                "unsupported scheme {other}://; use a local path, file://, s3://{}{}",
                if cfg!(feature = "gcp") { ", gs://" } else { "" },
                if cfg!(feature = "azure") { ", az://" } else { "" },
            ))),
        }
    }

    /// The destination, as a URL (for logs).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks the destination answers (lists its root once, waiting at most
    /// [`CHECK_TIMEOUT`]); a clear error at startup is better than one at the first upload.
    pub async fn check(&self) -> Result<()> {
        let prefix = self.key(&ArtifactPath::root());
        let prefix = if prefix.parts_count() == 0 { None } else { Some(&prefix) };
        match tokio::time::timeout(CHECK_TIMEOUT, self.inner.list_with_delimiter(prefix)).await {
            Ok(listed) => listed.map(|_| ()).map_err(|e| StoreError::ArtifactDestination {
                url: self.url.clone(),
                reason: format!("listing it failed: {e}"),
            }),
            Err(_) => Err(StoreError::ArtifactDestination {
                url: self.url.clone(),
                reason: format!("did not answer within {} s", CHECK_TIMEOUT.as_secs()),
            }),
        }
    }

    fn key(&self, path: &ArtifactPath) -> ObjectPath {
        self.prefix.iter().chain(path.segments.iter()).map(|s| PathPart::from(s.as_str())).collect()
    }

    /// Stores `bytes` at `path` (replacing what was there).
    pub async fn put_bytes(&self, path: &ArtifactPath, bytes: Bytes) -> Result<()> {
        self.inner.put(&self.key(path), PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Stores what `body` yields at `path` (replacing what was there), streaming: a body
    /// shorter than [`UPLOAD_CHUNK`] is one PUT, a longer one a multipart upload. More than
    /// `limit` bytes, or a body that fails, aborts the upload and stores nothing. Returns
    /// the size stored.
    pub async fn put_stream<S, E>(&self, path: &ArtifactPath, body: S, limit: u64) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: fmt::Display,
    {
        let key = self.key(path);
        let mut body = std::pin::pin!(body);
        let mut total: u64 = 0;
        let mut first = BytesMut::new();
        let too_large = || StoreError::ArtifactTooLarge { path: path.to_string(), limit };
        let broke = |e: E| StoreError::UploadInterrupted { path: path.to_string(), reason: e.to_string() };

        // The first chunk decides between one PUT and a multipart upload.
        let mut rest = None;
        while let Some(item) = body.next().await {
            let chunk = item.map_err(broke)?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large());
            }
            if first.len() + chunk.len() >= UPLOAD_CHUNK {
                rest = Some(chunk);
                break;
            }
            first.extend_from_slice(&chunk);
        }
        let Some(pending) = rest else {
            self.inner.put(&key, PutPayload::from_bytes(first.freeze())).await?;
            return Ok(total);
        };

        let upload = self.inner.put_multipart(&key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        writer.put(first.freeze());
        writer.put(pending);
        let outcome: Result<()> = async {
            while let Some(item) = body.next().await {
                let chunk = item.map_err(broke)?;
                total += chunk.len() as u64;
                if total > limit {
                    return Err(too_large());
                }
                writer.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok(total)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(artifact = %path, error = %abort, "aborting a failed upload failed");
                }
                Err(e)
            }
        }
    }

    /// Uploads the local file `file` to `path`, streaming. Returns its size.
    pub async fn put_file(&self, path: &ArtifactPath, file: &std::path::Path) -> Result<u64> {
        use tokio::io::AsyncReadExt;
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|source| StoreError::Io { path: file.display().to_string(), source })?;
        let chunks = futures_util::stream::try_unfold(f, |mut f| async move {
            let mut buf = BytesMut::zeroed(FILE_READ_CHUNK);
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((buf.freeze(), f)))
        });
        self.put_stream(path, chunks, u64::MAX).await.map_err(|e| match e {
            StoreError::UploadInterrupted { reason, .. } => {
                StoreError::Io { path: file.display().to_string(), source: std::io::Error::other(reason) }
            }
            other => other,
        })
    }

    /// Reads the artifact at `path`: NotFound when there is no file there.
    pub async fn get(&self, path: &ArtifactPath) -> Result<ArtifactRead> {
        match self.inner.get(&self.key(path)).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok(ArtifactRead { size, stream: r.into_stream().map_err(StoreError::from).boxed() })
            }
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(format!("artifact {path}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the whole artifact at `path` into memory (small files, tests).
    pub async fn get_bytes(&self, path: &ArtifactPath) -> Result<Bytes> {
        let mut read = self.get(path).await?;
        let mut out = BytesMut::with_capacity(read.size as usize);
        while let Some(chunk) = read.stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// The entries directly in the folder `dir`, sorted by name: files with their size,
    /// sub-folders. A missing folder, or a file, lists as empty.
    pub async fn list(&self, dir: &ArtifactPath) -> Result<Vec<ArtifactEntry>> {
        let key = self.key(dir);
        let prefix = if key.parts_count() == 0 { None } else { Some(&key) };
        let listing = self.inner.list_with_delimiter(prefix).await?;
        let mut out: Vec<ArtifactEntry> = Vec::new();
        for p in listing.common_prefixes {
            if let Some(name) = p.filename() {
                out.push(ArtifactEntry { name: percent_decode(name), is_dir: true, size: None });
            }
        }
        for o in listing.objects {
            match o.location.filename() {
                // A zero-length "folder marker" some S3 tools write (`dir/`) has no name.
                Some(name) if !name.is_empty() => {
                    out.push(ArtifactEntry { name: percent_decode(name), is_dir: false, size: Some(o.size) })
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name && a.is_dir == b.is_dir);
        Ok(out)
    }

    /// Every file under `dir` (recursively) as (path relative to `dir`, size), sorted.
    pub async fn list_recursive(&self, dir: &ArtifactPath) -> Result<Vec<(String, u64)>> {
        let key = self.key(dir);
        let skip = key.parts_count();
        let prefix = if skip == 0 { None } else { Some(&key) };
        let metas: Vec<object_store::ObjectMeta> = self.inner.list(prefix).try_collect().await?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .map(|m| {
                let rel: Vec<String> = m.location.parts().skip(skip).map(|p| percent_decode(p.as_ref())).collect();
                (rel.join("/"), m.size)
            })
            .filter(|(rel, _)| !rel.is_empty())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes the file at `path`, or everything under the folder `path`. Deleting what
    /// does not exist succeeds (a retried delete is harmless). Returns how many files went.
    pub async fn delete(&self, path: &ArtifactPath) -> Result<usize> {
        if path.is_root() && self.prefix.is_empty() {
            return Err(invalid("", "deleting the root of the artifact store is not allowed"));
        }
        let key = self.key(path);
        let mut deleted = 0;
        match self.inner.head(&key).await {
            Ok(_) => match self.inner.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let under: Vec<ObjectPath> = self.inner.list(Some(&key)).map_ok(|m| m.location).try_collect().await?;
        if !under.is_empty() {
            let locations = futures_util::stream::iter(under.into_iter().map(Ok)).boxed();
            let gone: Vec<ObjectPath> = self
                .inner
                .delete_stream(locations)
                .or_else(|e| async move {
                    match e {
                        object_store::Error::NotFound { path, .. } => Ok(ObjectPath::from(path)),
                        other => Err(other),
                    }
                })
                .try_collect()
                .await?;
            deleted += gone.len();
        }
        Ok(deleted)
    }
}

#[cfg(feature = "gcp")]
fn gcs(bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).build()?))
}

#[cfg(not(feature = "gcp"))]
fn gcs(_bucket: &str) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    Err("gs:// needs a build with Google Cloud Storage support (cargo feature `gcp` of capstan-store)".into())
}

#[cfg(feature = "azure")]
fn azure(container: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(container).build()?))
}

#[cfg(not(feature = "azure"))]
fn azure(_container: &str) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    Err("az:// needs a build with Azure Blob Storage support (cargo feature `azure` of capstan-store)".into())
}

/// S3 or an S3-compatible server: credentials, region and endpoint from the `AWS_*`
/// environment (`AWS_ENDPOINT_URL` for MinIO, moto, ...; plain http is allowed for an
/// explicit http:// endpoint), path-style requests unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`.
fn s3(bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    if endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    Ok(Arc::new(builder.build()?))
}

/// `bucket/prefix/...` -> (bucket, prefix without surrounding slashes).
fn split_bucket(rest: &str) -> Option<(&str, &str)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket, prefix.trim_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<ArtifactPath>) -> String {
        match r {
            Err(StoreError::InvalidArtifactPath { reason, .. }) => reason,
            other => panic!("expected InvalidArtifactPath, got {other:?}"),
        }
    }

    #[test]
    fn safe_paths_parse_into_segments() {
        let p = ArtifactPath::parse("1/abc/artifacts/model/MLmodel").unwrap();
        assert_eq!(p.segments(), ["1", "abc", "artifacts", "model", "MLmodel"]);
        assert_eq!(p.to_string(), "1/abc/artifacts/model/MLmodel");
        assert_eq!(ArtifactPath::parse("a b/c#1/%41.txt").unwrap().segments(), ["a b", "c#1", "%41.txt"]);
        assert_eq!(ArtifactPath::parse("..a/b..").unwrap().segments(), ["..a", "b.."]);
        assert!(ArtifactPath::parse_dir("").unwrap().is_root());
        assert_eq!(ArtifactPath::parse_dir("a/b/").unwrap().segments(), ["a", "b"]);
    }

    #[test]
    fn unsafe_paths_are_refused_with_the_reason() {
        assert!(reason(ArtifactPath::parse("../etc/passwd")).contains("'..'"));
        assert!(reason(ArtifactPath::parse("a/../../b")).contains("'..'"));
        assert!(reason(ArtifactPath::parse("a/..")).contains("'..'"));
        assert!(reason(ArtifactPath::parse("/etc/passwd")).contains("absolute"));
        assert!(reason(ArtifactPath::parse("a\\..\\b")).contains("backslash"));
        assert!(reason(ArtifactPath::parse("a\0b")).contains("NUL"));
        assert!(reason(ArtifactPath::parse("a//b")).contains("empty segment"));
        assert!(reason(ArtifactPath::parse("./a")).contains("'.'"));
        assert!(reason(ArtifactPath::parse("C:/x")).contains("drive"));
        assert!(reason(ArtifactPath::parse("")).contains("empty"));
        assert!(reason(ArtifactPath::parse("a/")).contains("ends with '/'"));
        assert!(reason(ArtifactPath::parse_dir("/")).contains("absolute"));
        assert!(reason(ArtifactPath::parse(&"x".repeat(MAX_PATH_BYTES + 1))).contains("longer"));
        assert!(reason(ArtifactPath::root().join("../x")).contains("'..'"));
    }

    #[test]
    fn artifact_uris_map_to_their_root() {
        let p = ArtifactPath::from_artifact_uri("mlflow-artifacts:/3/0123abcd/artifacts").unwrap();
        assert_eq!(p.to_string(), "3/0123abcd/artifacts");
        let p = ArtifactPath::from_artifact_uri("mlflow-artifacts://host:5000/3/r/artifacts").unwrap();
        assert_eq!(p.to_string(), "3/r/artifacts");
        assert!(ArtifactPath::from_artifact_uri("s3://b/3/r").is_err());
        assert!(ArtifactPath::from_artifact_uri("mlflow-artifacts:/3/../../x").is_err());
    }

    #[test]
    fn percent_decoding_inverts_path_part_encoding() {
        for name in ["plain.txt", "a b", "x#1", "100%", "%41", "{}[]^`|<>~\"*?", "ü.txt", "%", "%4"] {
            let part = PathPart::from(name);
            assert_eq!(percent_decode(part.as_ref()), name, "encoded as {}", part.as_ref());
        }
    }

    #[test]
    fn destinations_parse_or_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let local = ArtifactStore::from_destination(dir.path().join("a").to_str().unwrap()).unwrap();
        assert!(local.url().starts_with("file:///"));
        let url = format!("file://{}", dir.path().join("b").display());
        ArtifactStore::from_destination(&url).unwrap();
        for (dest, want) in [
            ("", "empty"),
            ("file://relative/path", "absolute path"),
            ("s3://", "no bucket"),
            ("ftp://host/x", "unsupported scheme"),
        ] {
            match ArtifactStore::from_destination(dest) {
                Err(StoreError::ArtifactDestination { reason, .. }) => {
                    assert!(reason.contains(want), "{dest}: {reason}")
                }
                other => panic!("{dest}: expected ArtifactDestination, got {other:?}"),
            }
        }
        #[cfg(not(feature = "gcp"))]
        match ArtifactStore::from_destination("gs://bucket/x") {
            Err(StoreError::ArtifactDestination { reason, .. }) => {
                assert!(reason.contains("feature `gcp`"), "{reason}")
            }
            other => panic!("expected ArtifactDestination, got {other:?}"),
        }
        #[cfg(not(feature = "azure"))]
        match ArtifactStore::from_destination("az://container/x") {
            Err(StoreError::ArtifactDestination { reason, .. }) => {
                assert!(reason.contains("feature `azure`"), "{reason}")
            }
            other => panic!("expected ArtifactDestination, got {other:?}"),
        }
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = std::result::Result<Bytes, String>> + Send + 'static {
        let parts: Vec<std::result::Result<Bytes, String>> =
            data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(parts)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn round_trip(store: &ArtifactStore) {
        let small = ArtifactPath::parse("1/r/artifacts/small.txt").unwrap();
        assert_eq!(store.put_stream(&small, chunks(b"hello", 2), 100).await.unwrap(), 5);
        assert_eq!(store.get_bytes(&small).await.unwrap(), Bytes::from_static(b"hello"));

        // Larger than a chunk: a multipart upload.
        let big = ArtifactPath::parse("1/r/artifacts/dir/big#1.bin").unwrap();
        let body = data(UPLOAD_CHUNK * 2 + 12345);
        let n = store.put_stream(&big, chunks(&body, 64 * 1024 + 3), u64::MAX).await.unwrap();
        assert_eq!(n, body.len() as u64);
        let read = store.get(&big).await.unwrap();
        assert_eq!(read.size, body.len() as u64);
        assert_eq!(store.get_bytes(&big).await.unwrap().as_ref(), &body[..]);

        let root = ArtifactPath::parse_dir("1/r/artifacts").unwrap();
        let listed = store.list(&root).await.unwrap();
        assert_eq!(
            listed,
            vec![
                ArtifactEntry { name: "dir".into(), is_dir: true, size: None },
                ArtifactEntry { name: "small.txt".into(), is_dir: false, size: Some(5) },
            ]
        );
        let sub = store.list(&root.join("dir").unwrap()).await.unwrap();
        assert_eq!(sub, vec![ArtifactEntry { name: "big#1.bin".into(), is_dir: false, size: Some(body.len() as u64) }]);
        assert!(store.list(&small).await.unwrap().is_empty(), "a file lists as empty");
        assert!(store.list(&root.join("nope").unwrap()).await.unwrap().is_empty());
        assert_eq!(
            store.list_recursive(&root).await.unwrap(),
            vec![("dir/big#1.bin".to_string(), body.len() as u64), ("small.txt".to_string(), 5)]
        );

        // Too large, or a body that breaks: nothing is stored, the old content stays.
        let err = store.put_stream(&small, chunks(&data(1000), 100), 999).await.unwrap_err();
        assert!(matches!(err, StoreError::ArtifactTooLarge { limit: 999, .. }), "{err:?}");
        let broken =
            futures_util::stream::iter(vec![Ok(Bytes::from(data(UPLOAD_CHUNK + 1))), Err("reset".to_string())]);
        let err = store.put_stream(&small, broken, u64::MAX).await.unwrap_err();
        assert!(matches!(err, StoreError::UploadInterrupted { .. }), "{err:?}");
        assert_eq!(store.get_bytes(&small).await.unwrap(), Bytes::from_static(b"hello"));

        // Missing files, folders and deletes.
        assert!(matches!(store.get(&root.join("nope").unwrap()).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.get(&root.join("dir").unwrap()).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.delete(&root.join("dir").unwrap()).await.unwrap(), 1);
        assert_eq!(store.delete(&root.join("dir").unwrap()).await.unwrap(), 0, "a repeated delete succeeds");
        assert_eq!(store.delete(&small).await.unwrap(), 1);
        assert!(store.list(&root).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn in_memory_round_trip() {
        round_trip(&ArtifactStore::in_memory()).await;
    }

    #[tokio::test]
    async fn local_round_trip_stays_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("artifacts");
        let store = ArtifactStore::local(&root).unwrap();
        round_trip(&store).await;
        // Nothing was written outside the destination, and no staging file was left.
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["artifacts"]);
        let p = ArtifactPath::parse("x/y.txt").unwrap();
        store.put_bytes(&p, Bytes::from_static(b"y")).await.unwrap();
        assert_eq!(std::fs::read(root.join("x/y.txt")).unwrap(), b"y");
        store.put_file(&ArtifactPath::parse("copy.txt").unwrap(), &root.join("x/y.txt")).await.unwrap();
        assert_eq!(std::fs::read(root.join("copy.txt")).unwrap(), b"y");
        let err = store.put_file(&p, &dir.path().join("missing")).await.unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn prefixes_are_applied_and_stripped() {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = ArtifactStore::new(inner.clone(), "team/a", "memory:/team/a").unwrap();
        store.put_bytes(&ArtifactPath::parse("1/f.txt").unwrap(), Bytes::from_static(b"f")).await.unwrap();
        inner.head(&ObjectPath::from("team/a/1/f.txt")).await.unwrap();
        assert_eq!(store.list_recursive(&ArtifactPath::root()).await.unwrap(), vec![("1/f.txt".into(), 1)]);
        assert_eq!(store.list(&ArtifactPath::root()).await.unwrap()[0].name, "1");
        assert_eq!(store.delete(&ArtifactPath::root()).await.unwrap(), 1, "a prefixed root may be emptied");
        assert!(matches!(
            ArtifactStore::in_memory().delete(&ArtifactPath::root()).await,
            Err(StoreError::InvalidArtifactPath { .. })
        ));
    }
}
