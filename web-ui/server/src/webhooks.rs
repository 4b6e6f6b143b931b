//! Git webhooks that start PipelineRuns: `POST /api/v1/webhooks/{github|gitlab|generic}`.
//!
//! Webhooks authenticate by signature, not by the API token (they are mounted outside
//! `auth::require_token`): a delivery is accepted only when it verifies against the secret
//! (`spec.triggers[].git.secretRef`) of a Pipeline with a trigger for that provider.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`, checked in
//!   constant time; `ping` is answered; `push` is deduplicated on `X-GitHub-Delivery`
//!   (persisted, so a replay after a restart starts nothing either); branch and tag deletes
//!   and tag pushes are ignored.
//! - GitLab: `X-Gitlab-Token` compared in constant time; `Push Hook`; deduplicated on
//!   `X-Gitlab-Event-UUID` when sent.
//! - Generic: `X-Capstan-Signature-256: sha256=<hex HMAC>` over a small JSON document
//!   `{"repo", "branch", "sha", "author"?, "message"?, "paths"?}`; deduplicated on
//!   `X-Capstan-Delivery` when sent.
//!
//! A verified push is matched against every Pipeline whose secret verified it (repository URL,
//! branch and path filters), and one PipelineRun is created per matching Pipeline. The parsing,
//! signature and matching logic are plain functions ([`plan_runs`]: verified Pipelines and a
//! push -> the runs to create), tested below.
//!
//! Two homes for Pipelines, secrets and runs, one logic:
//!
//! - the server's store (`capstan up`, `capstan server`): secrets from `capstan secret create`,
//!   runs are rows the standalone controller walks, replays refused through the store's
//!   `webhook_deliveries`;
//! - a Kubernetes cluster (`capstan server --kubernetes`, the Helm chart): a [`ClusterPipelines`]
//!   (the `capstan` binary's kube adapter) lists the Pipeline objects, reads the trigger's key
//!   from a Kubernetes Secret of the Pipeline's namespace, and creates PipelineRun objects that
//!   `capstan controller` reconciles. Replays are refused by the run's name: it is derived from
//!   the delivery id ([`delivery_nonce`]), so a second delivery with that id meets AlreadyExists.
//!   [`on_cluster`] installs it on the app.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use capstan_crds::pipeline::{self, CommitInfo, GitProvider, GitTrigger, PipelineRunSpec, PipelineSpec, TriggerInfo};
use futures_util::future::BoxFuture;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Digest;

use crate::{ApiError, AppState};

/// Largest webhook body accepted: GitHub caps payloads at 25 MB.
pub const MAX_WEBHOOK_BODY: usize = 25 * 1024 * 1024;

type HmacSha256 = hmac::Hmac<sha2_011::Sha256>;

/// Routes of the webhook receiver (mounted without the API token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks/{provider}", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
}

// ---------------------------------------------------------------------------------------
// Pure logic
// ---------------------------------------------------------------------------------------

/// `sha256=` + hex HMAC-SHA256 of `body` under `secret`: what GitHub sends in
/// X-Hub-Signature-256.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// No signature header.
    Missing,
    /// Not `sha256=` followed by 64 hex digits.
    Malformed,
    /// Well-formed but not made with this secret over this body.
    Mismatch,
}

/// Checks `header` (`sha256=<hex>`) against HMAC-SHA256(secret, body) in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureProblem> {
    let header = header.ok_or(SignatureProblem::Missing)?;
    let hex_part = header.trim().strip_prefix("sha256=").ok_or(SignatureProblem::Malformed)?;
    let tag = hex::decode(hex_part).map_err(|_| SignatureProblem::Malformed)?;
    if tag.len() != 32 {
        return Err(SignatureProblem::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| SignatureProblem::Mismatch)
}

/// Constant-time equality of two tokens (GitLab's X-Gitlab-Token): compares HMACs of both
/// under a fixed key, so neither the content nor the length leaks through timing.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let mut mac = HmacSha256::new_from_slice(b"capstan token compare").expect("any key length");
    mac.update(expected.as_bytes());
    let expected_tag = mac.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(b"capstan token compare").expect("any key length");
    mac.update(presented.as_bytes());
    mac.verify_slice(&expected_tag).is_ok()
}

/// A repository URL reduced to what identifies it: `github.com/acme/iris` for
/// `https://github.com/Acme/iris.git`, `git@github.com:acme/iris` and `ssh://git@...`.
pub fn normalize_repo(url: &str) -> String {
    let mut s = url.trim().to_lowercase();
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest.to_string();
            break;
        }
    }
    if let Some(at) = s.find('@') {
        if !s[..at].contains('/') {
            s = s[at + 1..].to_string();
        }
    }
    // scp-like `host:owner/repo`.
    if let Some(colon) = s.find(':') {
        if !s[..colon].contains('/') && !s[colon + 1..].starts_with('/') {
            s = format!("{}/{}", &s[..colon], &s[colon + 1..]);
        }
    }
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(stripped) = s.strip_suffix(".git") {
        s = stripped.to_string();
    }
    s
}

/// What a provider's event is.
#[derive(Debug, Clone, PartialEq)]
pub enum GitEvent {
    /// GitHub's ping when a hook is made.
    Ping {
        /// The hook's zen line.
        zen: String,
    },
    /// Commits pushed to a branch.
    Push(Push),
    /// Something that starts nothing (branch or tag delete, tag push), with why.
    Ignored(String),
}

/// A push to a branch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Push {
    /// Every URL the repository is known by (clone, ssh, web).
    pub repo_urls: Vec<String>,
    /// The branch (without `refs/heads/`).
    pub branch: String,
    /// The new head commit.
    pub commit: CommitInfo,
    /// Files added, modified or removed by the pushed commits; None when unknown.
    pub paths: Option<BTreeSet<String>>,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError(pub String);

fn parse_json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column())))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

fn changed_paths(commits: Option<&Value>) -> Option<BTreeSet<String>> {
    let commits = commits?.as_array()?;
    let mut paths = BTreeSet::new();
    for c in commits {
        for key in ["added", "modified", "removed"] {
            for p in c.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(p) = p.as_str() {
                    paths.insert(p.to_string());
                }
            }
        }
    }
    Some(paths)
}

fn classify_ref(r#ref: &str, after: &str, deleted: bool) -> Result<String, String> {
    if let Some(tag) = r#ref.strip_prefix("refs/tags/") {
        return Err(if deleted || after == ZERO_SHA {
            format!("tag {tag} was deleted: nothing to run")
        } else {
            format!("tag {tag} was pushed: pipelines run on branch pushes")
        });
    }
    let Some(branch) = r#ref.strip_prefix("refs/heads/") else {
        return Err(format!("ref {ref:?} is not a branch"));
    };
    if deleted || after == ZERO_SHA {
        return Err(format!("branch {branch} was deleted: nothing to run"));
    }
    Ok(branch.to_string())
}

/// Parses a GitHub delivery (`X-GitHub-Event` and the raw body).
pub fn parse_github(event: &str, body: &[u8]) -> Result<GitEvent, PayloadError> {
    let v = parse_json(body)?;
    match event {
        "ping" => Ok(GitEvent::Ping { zen: str_at(&v, &["zen"]).to_string() }),
        "push" => {
            let r#ref = str_at(&v, &["ref"]);
            if r#ref.is_empty() {
                return Err(PayloadError("push payload has no \"ref\"".into()));
            }
            let after = str_at(&v, &["after"]);
            let deleted = v.get("deleted").and_then(Value::as_bool).unwrap_or(false);
            let branch = match classify_ref(r#ref, after, deleted) {
                Ok(b) => b,
                Err(why) => return Ok(GitEvent::Ignored(why)),
            };
            let repo = v.get("repository").cloned().unwrap_or(Value::Null);
            let repo_urls: Vec<String> = ["clone_url", "ssh_url", "html_url", "git_url", "url", "svn_url"]
                .iter()
                .map(|k| str_at(&repo, &[k]).to_string())
                .filter(|u| !u.is_empty())
                .collect();
            let head = v.get("head_commit").cloned().unwrap_or(Value::Null);
            let author = match (str_at(&head, &["author", "name"]), str_at(&head, &["author", "email"])) {
                ("", _) => str_at(&v, &["pusher", "name"]).to_string(),
                (n, "") => n.to_string(),
                (n, e) => format!("{n} <{e}>"),
            };
            let sha = if str_at(&head, &["id"]).is_empty() { after } else { str_at(&head, &["id"]) };
            let commit = CommitInfo {
                sha: sha.to_string(),
                branch: branch.clone(),
                author,
                message: str_at(&head, &["message"]).to_string(),
                repo: repo_urls.first().cloned().unwrap_or_default(),
                url: str_at(&head, &["url"]).to_string(),
            };
            Ok(GitEvent::Push(Push { repo_urls, branch, commit, paths: changed_paths(v.get("commits")) }))
        }
        other => Err(PayloadError(format!(
            "unsupported GitHub event {other:?}: this endpoint handles push and ping (send only push events)"
        ))),
    }
}

/// Parses a GitLab delivery (`X-Gitlab-Event` and the raw body).
pub fn parse_gitlab(event: &str, body: &[u8]) -> Result<GitEvent, PayloadError> {
    let v = parse_json(body)?;
    match event {
        "Push Hook" | "Tag Push Hook" => {
            let r#ref = str_at(&v, &["ref"]);
            let after = str_at(&v, &["after"]);
            let branch = match classify_ref(r#ref, after, false) {
                Ok(b) => b,
                Err(why) => return Ok(GitEvent::Ignored(why)),
            };
            let project = v.get("project").cloned().unwrap_or(Value::Null);
            let repo = v.get("repository").cloned().unwrap_or(Value::Null);
            let repo_urls: Vec<String> = [
                str_at(&project, &["git_http_url"]),
                str_at(&project, &["git_ssh_url"]),
                str_at(&project, &["web_url"]),
                str_at(&repo, &["git_http_url"]),
                str_at(&repo, &["url"]),
                str_at(&repo, &["homepage"]),
            ]
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| u.to_string())
            .collect();
            let sha = if str_at(&v, &["checkout_sha"]).is_empty() { after } else { str_at(&v, &["checkout_sha"]) };
            let head = v
                .get("commits")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| str_at(c, &["id"]) == sha))
                .cloned()
                .unwrap_or(Value::Null);
            let author = match (str_at(&head, &["author", "name"]), str_at(&head, &["author", "email"])) {
                ("", _) => str_at(&v, &["user_name"]).to_string(),
                (n, "") => n.to_string(),
                (n, e) => format!("{n} <{e}>"),
            };
            let commit = CommitInfo {
                sha: sha.to_string(),
                branch: branch.clone(),
                author,
                message: str_at(&head, &["message"]).to_string(),
                repo: repo_urls.first().cloned().unwrap_or_default(),
                url: str_at(&head, &["url"]).to_string(),
            };
            Ok(GitEvent::Push(Push { repo_urls, branch, commit, paths: changed_paths(v.get("commits")) }))
        }
        other => Err(PayloadError(format!(
            "unsupported GitLab event {other:?}: this endpoint handles \"Push Hook\" (send only push events)"
        ))),
    }
}

/// Parses a generic delivery: `{"repo", "branch", "sha", "author"?, "message"?, "paths"?}`.
pub fn parse_generic(body: &[u8]) -> Result<GitEvent, PayloadError> {
    let v = parse_json(body)?;
    let field = |k: &str| -> Result<String, PayloadError> {
        match v.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(PayloadError(format!("field {k:?} must be a non-empty string"))),
            None => Err(PayloadError(format!("field {k:?} is required"))),
        }
    };
    if !v.is_object() {
        return Err(PayloadError("the body must be a JSON object with repo, branch and sha".into()));
    }
    let repo = field("repo")?;
    let branch = field("branch")?;
    let sha = field("sha")?;
    let paths = match v.get("paths") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.iter().filter_map(|p| p.as_str().map(String::from)).collect()),
        Some(_) => return Err(PayloadError("field \"paths\" must be a list of strings".into())),
    };
    let commit = CommitInfo {
        sha,
        branch: branch.clone(),
        author: str_at(&v, &["author"]).to_string(),
        message: str_at(&v, &["message"]).to_string(),
        repo: repo.clone(),
        url: String::new(),
    };
    Ok(GitEvent::Push(Push { repo_urls: vec![repo], branch, commit, paths }))
}

/// Whether a push matches a trigger: same repository, a matching branch, and (when the
/// trigger has path filters and the push lists its files) a matching changed path. Err says
/// why not.
pub fn trigger_matches(trigger: &GitTrigger, push: &Push) -> Result<(), String> {
    let want = normalize_repo(&trigger.repo);
    if !push.repo_urls.iter().any(|u| normalize_repo(u) == want) {
        return Err(format!("repository is not {}", trigger.repo));
    }
    if !trigger.branches.is_empty() && !trigger.branches.iter().any(|b| pipeline::glob_match(b, &push.branch)) {
        return Err(format!("branch {} matches none of {:?}", push.branch, trigger.branches));
    }
    if let (false, Some(paths)) = (trigger.paths.is_empty(), &push.paths) {
        if !paths.iter().any(|p| trigger.paths.iter().any(|g| pipeline::glob_match(g, p))) {
            return Err(format!("no changed file matches {:?}", trigger.paths));
        }
    }
    Ok(())
}

/// A Pipeline whose secret verified a delivery, with its triggers for that provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Namespace.
    pub namespace: String,
    /// Pipeline name.
    pub name: String,
    /// Its spec.
    pub spec: PipelineSpec,
    /// Its triggers for the provider whose secret verified the delivery.
    pub triggers: Vec<GitTrigger>,
}

/// One run a push starts.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Namespace (the Pipeline's).
    pub namespace: String,
    /// The Pipeline.
    pub pipeline: String,
    /// The run's spec: the commit, what triggered it.
    pub spec: PipelineRunSpec,
}

/// What a verified push starts: one run per matching Pipeline (each Pipeline once, however
/// many of its triggers match), and for every other Pipeline why not (`{"namespace",
/// "pipeline", "reason"}`: no trigger matches, or its parameters need values a push cannot
/// give). The same decision for the store and for a cluster.
pub fn plan_runs(
    verified: &[Verified],
    push: &Push,
    provider: GitProvider,
    delivery: Option<&str>,
) -> (Vec<PlannedRun>, Vec<Value>) {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    for c in verified {
        if seen.contains(&(c.namespace.as_str(), c.name.as_str())) {
            continue;
        }
        let why_not: Vec<String> = c.triggers.iter().filter_map(|t| trigger_matches(t, push).err()).collect();
        if why_not.len() == c.triggers.len() {
            skipped.push(json!({"namespace": c.namespace, "pipeline": c.name, "reason": why_not.join("; ")}));
            continue;
        }
        seen.insert((c.namespace.as_str(), c.name.as_str()));
        let spec = PipelineRunSpec {
            pipeline_ref: c.name.clone(),
            parameters: Default::default(),
            commit: Some(push.commit.clone()),
            trigger: Some(TriggerInfo {
                source: "webhook".into(),
                provider: provider.as_str().into(),
                delivery_id: delivery.unwrap_or_default().to_string(),
            }),
        };
        if let Err(e) = pipeline::effective_parameters(&c.spec, &spec) {
            skipped.push(json!({"namespace": c.namespace, "pipeline": c.name, "reason": e}));
            continue;
        }
        runs.push(PlannedRun { namespace: c.namespace.clone(), pipeline: c.name.clone(), spec });
    }
    (runs, skipped)
}

/// The name suffix of the run a delivery starts on a cluster: the first 10 hex digits of
/// SHA-256(provider, delivery id). The same delivery always gives the same run name (a replay
/// meets AlreadyExists); different deliveries of one commit give different ones.
pub fn delivery_nonce(provider: GitProvider, delivery: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(provider.as_str().as_bytes());
    h.update([0u8]);
    h.update(delivery.as_bytes());
    hex::encode(h.finalize())[..10].to_string()
}

/// Labels of a run the server creates: its Pipeline and what started it.
pub fn run_labels(pipeline: &str, spec: &PipelineRunSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("capstan.dev/pipeline".to_string(), pipeline.to_string());
    if let Some(t) = &spec.trigger {
        labels.insert("capstan.dev/trigger".to_string(), t.source.clone());
    }
    labels
}

// ---------------------------------------------------------------------------------------
// Pipelines on a Kubernetes cluster
// ---------------------------------------------------------------------------------------

/// A Pipeline object.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineObject {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Spec.
    pub spec: PipelineSpec,
}

/// A PipelineRun object to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Namespace.
    pub namespace: String,
    /// Name (for a webhook with a delivery id: derived from it, see [`delivery_nonce`]).
    pub name: String,
    /// Labels ([`run_labels`]).
    pub labels: BTreeMap<String, String>,
    /// Spec.
    pub spec: PipelineRunSpec,
}

/// What creating a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new PipelineRun.
    Created,
    /// A PipelineRun of that name exists already (a replayed delivery).
    AlreadyExists,
}

/// Why a call to the Kubernetes API failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The API server refused the call: the server's ServiceAccount lacks a permission (the
    /// Helm chart grants get/list on pipelines, create on pipelineruns, get on secrets).
    #[error("the Kubernetes API refused the server's ServiceAccount: {0}")]
    Forbidden(String),
    /// The API server could not be reached or failed the call.
    #[error("the Kubernetes API failed: {0}")]
    Api(String),
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> ApiError {
        tracing::error!(error = %e, "Kubernetes API call failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// Pipelines, their secrets and new runs on a Kubernetes cluster (`capstan server
/// --kubernetes`). The `capstan` binary implements it with kube; what to create is decided
/// here, by the same functions as for the store.
pub trait ClusterPipelines: Send + Sync {
    /// Every Pipeline the server starts runs of (all namespaces, or the configured one),
    /// except those being deleted. Objects whose spec does not parse are left out.
    fn list_pipelines(&self) -> BoxFuture<'_, Result<Vec<PipelineObject>, ClusterError>>;
    /// One Pipeline; None when it does not exist (or is outside the configured namespace).
    fn get_pipeline<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineObject>, ClusterError>>;
    /// The value under `key` of the Secret `name` in `namespace`; None when the Secret or the
    /// key is missing. Never logged, never returned to a client.
    fn secret_value<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>>;
    /// Create a PipelineRun; AlreadyExists when one of that name exists.
    fn create_run<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<CreateOutcome, ClusterError>>;
}

/// The cluster a server's pipeline triggers use, in each request's extensions (see
/// [`on_cluster`]); absent: the store.
#[derive(Clone)]
pub struct Cluster(pub Arc<dyn ClusterPipelines>);

/// The app with its pipeline triggers on a cluster: webhooks and manual runs read Pipelines
/// and Secrets from it and create PipelineRun objects there; `capstan secret` is refused
/// (secrets are Kubernetes Secrets).
pub fn on_cluster(app: Router, cluster: Arc<dyn ClusterPipelines>) -> Router {
    app.layer(Extension(Cluster(cluster)))
}

/// Where Pipelines and secrets are read.
enum Source<'a> {
    Store(&'a capstan_store::Store),
    Cluster(&'a dyn ClusterPipelines),
}

impl Source<'_> {
    async fn pipelines(&self) -> Result<Vec<PipelineObject>, ApiError> {
        match self {
            Source::Cluster(c) => Ok(c.list_pipelines().await?),
            Source::Store(store) => {
                let mut out = Vec::new();
                for p in store.list_resources("Pipeline", None).await? {
                    if p.deletion_timestamp.is_some() {
                        continue;
                    }
                    let Ok(spec) = serde_json::from_value::<PipelineSpec>(p.spec.clone()) else { continue };
                    out.push(PipelineObject { namespace: p.namespace, name: p.name, spec });
                }
                Ok(out)
            }
        }
    }

    async fn secret(&self, namespace: &str, name: &str, key: &str) -> Result<Option<String>, ApiError> {
        match self {
            Source::Cluster(c) => Ok(c.secret_value(namespace, name, key).await?),
            Source::Store(store) => Ok(store.secret_value(namespace, name, key).await?),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// A Pipeline with a trigger for this provider, and its secret.
struct Candidate {
    verified: Verified,
    secret: String,
}

async fn candidates(src: &Source<'_>, provider: GitProvider) -> Result<Vec<Candidate>, ApiError> {
    let mut out = Vec::new();
    for p in src.pipelines().await? {
        // Group this pipeline's triggers by secret: a delivery verifies against one secret.
        let mut by_secret: Vec<(String, Vec<GitTrigger>)> = Vec::new();
        for t in p.spec.triggers.iter().map(|t| &t.git).filter(|g| g.provider == provider) {
            let Some(r) = &t.secret_ref else { continue };
            let Some(secret) = src.secret(&p.namespace, &r.name, r.key()).await? else {
                tracing::warn!(namespace = %p.namespace, pipeline = %p.name, secret = %r.name, key = %r.key(),
                    "webhook secret not found");
                continue;
            };
            match by_secret.iter_mut().find(|(s, _)| *s == secret) {
                Some((_, ts)) => ts.push(t.clone()),
                None => by_secret.push((secret, vec![t.clone()])),
            }
        }
        for (secret, triggers) in by_secret {
            out.push(Candidate {
                verified: Verified {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    spec: p.spec.clone(),
                    triggers,
                },
                secret,
            });
        }
    }
    Ok(out)
}

/// A random lowercase alphanumeric nonce.
fn nonce(n: usize) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u.chars().take(n).collect()
}

/// Creates a PipelineRun for `pipeline` in `namespace` (labels name the pipeline and the
/// commit) and returns its name. Shared by webhooks and manual runs.
pub async fn create_run(
    st: &AppState,
    namespace: &str,
    pipeline: &str,
    spec: &PipelineRunSpec,
) -> Result<String, ApiError> {
    let sha = spec.commit.as_ref().map(|c| c.sha.as_str()).unwrap_or("");
    let name = pipeline::run_name(pipeline, sha, &nonce(5));
    let labels = serde_json::to_value(run_labels(pipeline, spec)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let body = serde_json::to_value(spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (stored, _) = st.store.put_resource("PipelineRun", namespace, &name, &labels, &json!({}), &body).await?;
    let trigger = spec.trigger.as_ref().map(|t| t.source.as_str()).unwrap_or("manual");
    let what = match &spec.commit {
        Some(c) => format!("started by {trigger} for commit {} on {}", c.sha, c.branch),
        None => format!("started by {trigger}"),
    };
    st.store.add_event(&stored.uid, "Normal", "Created", &what).await?;
    Ok(name)
}

/// Creates a PipelineRun object on the cluster: named `<pipeline>-<sha7>-<nonce>` (`nonce`:
/// [`delivery_nonce`] for a delivery, else random). Returns the name and whether it was new.
pub async fn create_cluster_run(
    cluster: &dyn ClusterPipelines,
    namespace: &str,
    pipeline: &str,
    spec: &PipelineRunSpec,
    nonce_part: Option<String>,
) -> Result<(String, CreateOutcome), ApiError> {
    let sha = spec.commit.as_ref().map(|c| c.sha.as_str()).unwrap_or("");
    let name = pipeline::run_name(pipeline, sha, &nonce_part.unwrap_or_else(|| nonce(5)));
    let run = NewRun {
        namespace: namespace.to_string(),
        name: name.clone(),
        labels: run_labels(pipeline, spec),
        spec: spec.clone(),
    };
    let outcome = cluster.create_run(&run).await?;
    Ok((name, outcome))
}

async fn receive(
    State(st): State<AppState>,
    cluster: Option<Extension<Cluster>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, format!("the body is larger than {} MB", MAX_WEBHOOK_BODY / (1024 * 1024)))
        } else {
            ApiError::new(status, e.body_text())
        }
    })?;
    let provider = match provider.as_str() {
        "github" => GitProvider::Github,
        "gitlab" => GitProvider::Gitlab,
        "generic" => GitProvider::Generic,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown webhook provider {other:?}: use github, gitlab or generic"
            )))
        }
    };
    let cluster = cluster.map(|Extension(c)| c.0);
    let src = match &cluster {
        Some(c) => Source::Cluster(c.as_ref()),
        None => Source::Store(&st.store),
    };

    // 1. Authenticate: the delivery must verify against some Pipeline's secret.
    let all = candidates(&src, provider).await?;
    let verified: Vec<Verified> = match provider {
        GitProvider::Github | GitProvider::Generic => {
            let name = if provider == GitProvider::Github { "X-Hub-Signature-256" } else { "X-Capstan-Signature-256" };
            let sig = header(&headers, name);
            if sig.is_none() {
                return Err(unauthorized(format!("missing {name} header: deliveries must be signed")));
            }
            let mut ok = Vec::new();
            for c in all {
                match verify_signature(c.secret.as_bytes(), &body, sig) {
                    Ok(()) => ok.push(c.verified),
                    Err(SignatureProblem::Malformed) => {
                        return Err(unauthorized(format!("{name} must be sha256=<64 hex digits>")))
                    }
                    Err(_) => {}
                }
            }
            ok
        }
        GitProvider::Gitlab => {
            let Some(token) = header(&headers, "X-Gitlab-Token") else {
                return Err(unauthorized("missing X-Gitlab-Token header"));
            };
            all.into_iter().filter(|c| token_matches(&c.secret, token)).map(|c| c.verified).collect()
        }
    };
    if verified.is_empty() {
        return Err(unauthorized(format!(
            "the signature does not match the secret of any Pipeline with a {} trigger",
            provider.as_str()
        )));
    }

    // 2. Parse.
    let (event, delivery) = match provider {
        GitProvider::Github => {
            let Some(event) = header(&headers, "X-GitHub-Event") else {
                return Err(ApiError::bad_request("missing X-GitHub-Event header"));
            };
            (parse_github(event, &body), header(&headers, "X-GitHub-Delivery"))
        }
        GitProvider::Gitlab => {
            let Some(event) = header(&headers, "X-Gitlab-Event") else {
                return Err(ApiError::bad_request("missing X-Gitlab-Event header"));
            };
            (parse_gitlab(event, &body), header(&headers, "X-Gitlab-Event-UUID"))
        }
        GitProvider::Generic => (parse_generic(&body), header(&headers, "X-Capstan-Delivery")),
    };
    let event = event.map_err(|e| ApiError::bad_request(e.0))?;
    let push = match event {
        GitEvent::Ping { zen } => {
            return Ok((StatusCode::OK, Json(json!({"message": "pong", "zen": zen}))));
        }
        GitEvent::Ignored(why) => {
            return Ok((StatusCode::ACCEPTED, Json(json!({"ignored": why, "runs": []}))));
        }
        GitEvent::Push(p) => p,
    };

    // 3. Replay protection: the store remembers deliveries; on a cluster the run's name is
    //    derived from the delivery id (step 4).
    let delivery = match (provider, delivery) {
        (GitProvider::Github, None) => {
            return Err(ApiError::bad_request("missing X-GitHub-Delivery header (needed for replay protection)"))
        }
        (_, d) => d.map(str::to_owned),
    };
    if let Some(id) = &delivery {
        if id.len() > 200 {
            return Err(ApiError::bad_request("the delivery id is longer than 200 characters"));
        }
        if cluster.is_none() && !st.store.claim_delivery(provider.as_str(), id, "{}").await? {
            return Ok(duplicate(id));
        }
    }

    // 4. Match and create runs.
    let (planned, skipped) = plan_runs(&verified, &push, provider, delivery.as_deref());
    let mut runs = Vec::new();
    let mut replayed = Vec::new();
    for r in &planned {
        let created = match &cluster {
            Some(c) => {
                let nonce_part = delivery.as_deref().map(|d| delivery_nonce(provider, d));
                create_cluster_run(c.as_ref(), &r.namespace, &r.pipeline, &r.spec, nonce_part).await.map(
                    |(name, outcome)| match outcome {
                        CreateOutcome::Created => Some(name),
                        CreateOutcome::AlreadyExists => {
                            replayed.push(json!({"namespace": r.namespace, "pipeline": r.pipeline, "name": name}));
                            None
                        }
                    },
                )
            }
            None => create_run(&st, &r.namespace, &r.pipeline, &r.spec).await.map(Some),
        };
        match created {
            Ok(Some(name)) => runs.push(json!({"namespace": r.namespace, "pipeline": r.pipeline, "name": name})),
            Ok(None) => {}
            Err(e) => {
                if let (Some(id), None) = (&delivery, &cluster) {
                    if runs.is_empty() {
                        let _ = st.store.release_delivery(provider.as_str(), id).await;
                    }
                }
                return Err(e);
            }
        }
    }
    if let (Some(id), false) = (&delivery, planned.is_empty()) {
        if runs.is_empty() && !replayed.is_empty() {
            // Every run this delivery starts exists already: a replay.
            return Ok(duplicate(id));
        }
    }
    let outcome = json!({"runs": runs, "skipped": skipped});
    if let (Some(id), None) = (&delivery, &cluster) {
        st.store.set_delivery_outcome(provider.as_str(), id, &outcome.to_string()).await?;
    }
    st.wake.notify_one();
    let status = if runs.is_empty() { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    let mut body = outcome;
    if !replayed.is_empty() {
        body["duplicates"] = json!(replayed);
    }
    body["commit"] = json!(push.commit.sha);
    body["branch"] = json!(push.branch);
    if runs_is_empty(&body) {
        body["message"] = json!("no Pipeline matched this push: no run started");
    }
    Ok((status, Json(body)))
}

fn duplicate(id: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::OK,
        Json(json!({
            "duplicate": true,
            "runs": [],
            "message": format!("delivery {id} was already received: no run started"),
        })),
    )
}

fn runs_is_empty(body: &Value) -> bool {
    body["runs"].as_array().is_none_or(|r| r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector (docs: "Validating webhook deliveries").
    #[test]
    fn github_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), expected);
        assert_eq!(verify_signature(secret, body, Some(expected)), Ok(()));
        assert_eq!(verify_signature(secret, b"Hello, World?", Some(expected)), Err(SignatureProblem::Mismatch));
        assert_eq!(verify_signature(b"other", body, Some(expected)), Err(SignatureProblem::Mismatch));
        assert_eq!(verify_signature(secret, body, None), Err(SignatureProblem::Missing));
        assert_eq!(verify_signature(secret, body, Some("sha1=abc")), Err(SignatureProblem::Malformed));
        assert_eq!(verify_signature(secret, body, Some("sha256=zz")), Err(SignatureProblem::Malformed));
        assert_eq!(verify_signature(secret, body, Some(&expected[..40])), Err(SignatureProblem::Malformed));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret "));
        assert!(!token_matches("", "x"));
    }

    #[test]
    fn repo_urls_normalize() {
        let n = "github.com/acme/iris";
        for u in [
            "https://github.com/Acme/iris.git",
            "https://github.com/acme/iris",
            "https://github.com/acme/iris/",
            "git@github.com:acme/iris.git",
            "ssh://git@github.com/acme/iris.git",
            "git://github.com/acme/iris.git",
        ] {
            assert_eq!(normalize_repo(u), n, "{u}");
        }
        assert_eq!(normalize_repo("/tmp/repos/iris.git"), "/tmp/repos/iris");
        assert_ne!(normalize_repo("https://github.com/acme/iris2"), n);
    }

    fn push_body(r#ref: &str, after: &str, deleted: bool) -> Vec<u8> {
        json!({
            "ref": r#ref, "after": after, "deleted": deleted,
            "repository": {"clone_url": "https://github.com/acme/iris.git", "html_url": "https://github.com/acme/iris"},
            "head_commit": if deleted { Value::Null } else { json!({"id": after, "message": "tune", "url": "u",
                "author": {"name": "Ada", "email": "ada@example.com"}}) },
            "commits": [{"added": ["models/a.py"], "modified": ["README.md"], "removed": []}],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn github_pushes_deletes_and_tags() {
        let sha = "a".repeat(40);
        let GitEvent::Push(p) = parse_github("push", &push_body("refs/heads/main", &sha, false)).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.branch, "main");
        assert_eq!(p.commit.sha, sha);
        assert_eq!(p.commit.author, "Ada <ada@example.com>");
        assert_eq!(p.paths.unwrap().into_iter().collect::<Vec<_>>(), ["README.md", "models/a.py"]);
        let del = parse_github("push", &push_body("refs/heads/main", ZERO_SHA, true)).unwrap();
        assert!(matches!(del, GitEvent::Ignored(ref w) if w.contains("branch main was deleted")), "{del:?}");
        let tag = parse_github("push", &push_body("refs/tags/v1", ZERO_SHA, true)).unwrap();
        assert!(matches!(tag, GitEvent::Ignored(ref w) if w.contains("tag v1 was deleted")), "{tag:?}");
        assert!(matches!(parse_github("ping", b"{\"zen\":\"z\"}").unwrap(), GitEvent::Ping { .. }));
        let e = parse_github("issues", b"{}").unwrap_err();
        assert!(e.0.contains("unsupported GitHub event \"issues\""), "{e:?}");
        let e = parse_github("push", b"{\"ref\": ").unwrap_err();
        assert!(e.0.starts_with("malformed JSON at line 1, column 8"), "{e:?}");
    }

    #[test]
    fn triggers_match_repo_branch_and_paths() {
        let GitEvent::Push(p) = parse_github("push", &push_body("refs/heads/main", &"b".repeat(40), false)).unwrap()
        else {
            panic!()
        };
        let mut t = GitTrigger { repo: "git@github.com:acme/iris.git".into(), ..Default::default() };
        assert_eq!(trigger_matches(&t, &p), Ok(()));
        t.branches = vec!["release/*".into()];
        assert!(trigger_matches(&t, &p).unwrap_err().contains("branch main matches none"));
        t.branches = vec!["main".into()];
        t.paths = vec!["models/**".into()];
        assert_eq!(trigger_matches(&t, &p), Ok(()));
        t.paths = vec!["docs/**".into()];
        assert!(trigger_matches(&t, &p).unwrap_err().contains("no changed file"));
        t.repo = "https://github.com/acme/other".into();
        assert!(trigger_matches(&t, &p).unwrap_err().contains("repository"));
    }

    fn verified(name: &str, triggers: Vec<GitTrigger>) -> Verified {
        Verified { namespace: "ml".into(), name: name.into(), spec: PipelineSpec::default(), triggers }
    }

    #[test]
    fn a_push_plans_one_run_per_matching_pipeline() {
        let sha = "d".repeat(40);
        let GitEvent::Push(p) = parse_github("push", &push_body("refs/heads/main", &sha, false)).unwrap() else {
            panic!()
        };
        let iris = GitTrigger { repo: "https://github.com/acme/iris".into(), ..Default::default() };
        let other = GitTrigger { repo: "https://github.com/acme/other".into(), ..Default::default() };
        let mut needs_param = verified("needs", vec![iris.clone()]);
        needs_param.spec.parameters =
            vec![pipeline::ParameterSpec { name: "lr".into(), default: None, description: None }];
        let all = vec![
            verified("a", vec![other.clone(), iris.clone()]),
            // The same pipeline verified by a second secret: still one run.
            verified("a", vec![iris.clone()]),
            verified("b", vec![other]),
            needs_param,
        ];
        let (runs, skipped) = plan_runs(&all, &p, GitProvider::Github, Some("d-1"));
        assert_eq!(runs.len(), 1, "{runs:?}");
        let r = &runs[0];
        assert_eq!((r.namespace.as_str(), r.pipeline.as_str(), r.spec.pipeline_ref.as_str()), ("ml", "a", "a"));
        assert_eq!(r.spec.commit.as_ref().unwrap().sha, sha);
        let t = r.spec.trigger.as_ref().unwrap();
        assert_eq!((t.source.as_str(), t.provider.as_str(), t.delivery_id.as_str()), ("webhook", "github", "d-1"));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0]["reason"].as_str().unwrap().contains("repository is not"), "{skipped:?}");
        assert!(skipped[1]["reason"].as_str().unwrap().contains("\"lr\" is required"), "{skipped:?}");
        let labels = run_labels("a", &r.spec);
        assert_eq!(labels.get("capstan.dev/pipeline").map(String::as_str), Some("a"));
        assert_eq!(labels.get("capstan.dev/trigger").map(String::as_str), Some("webhook"));
    }

    #[test]
    fn a_delivery_always_names_the_same_run() {
        let a = delivery_nonce(GitProvider::Github, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(a, delivery_nonce(GitProvider::Github, "72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{a}");
        assert_ne!(a, delivery_nonce(GitProvider::Github, "72d3162e-cc78-11e3-81ab-4c9367dc0959"));
        assert_ne!(a, delivery_nonce(GitProvider::Gitlab, "72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        let name = pipeline::run_name(&"p".repeat(70), &"e".repeat(40), &a);
        assert!(name.len() <= 63 && name.ends_with(&a), "{name}");
    }

    #[test]
    fn gitlab_and_generic_payloads() {
        let sha = "c".repeat(40);
        let body = json!({"object_kind": "push", "ref": "refs/heads/dev", "after": sha, "checkout_sha": sha,
            "user_name": "Bo", "project": {"git_http_url": "https://gitlab.com/acme/iris.git"},
            "commits": [{"id": sha, "message": "m", "author": {"name": "Bo", "email": "bo@x"}, "added": [], "modified": ["x.py"], "removed": []}]});
        let GitEvent::Push(p) = parse_gitlab("Push Hook", body.to_string().as_bytes()).unwrap() else { panic!() };
        assert_eq!((p.branch.as_str(), p.commit.author.as_str()), ("dev", "Bo <bo@x>"));
        assert!(parse_gitlab("Issue Hook", b"{}").unwrap_err().0.contains("unsupported GitLab event"));
        let g = parse_generic(br#"{"repo": "/r.git", "branch": "main", "sha": "abc"}"#).unwrap();
        assert!(matches!(g, GitEvent::Push(ref p) if p.commit.sha == "abc" && p.paths.is_none()));
        assert!(parse_generic(br#"{"repo": "/r.git", "branch": "main"}"#)
            .unwrap_err()
            .0
            .contains("\"sha\" is required"));
        assert!(parse_generic(b"[1]").unwrap_err().0.contains("JSON object"));
    }
}
