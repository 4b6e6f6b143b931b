//! The Pipeline and PipelineRun resources: git-triggered DAGs of steps (train, evaluate,
//! register, deploy, any container), and one record per run that links the commit to the
//! runs, model versions and deployments it produced.
//!
//! [`check_spec`] holds the checks a schema cannot express (unknown or cyclic `dependsOn`,
//! `when` expressions that do not parse or name steps the step does not depend on); the
//! manifest validator calls it, so `capstan apply` and the server reject such a Pipeline with
//! the step's field path. [`when`] parses and evaluates `when` expressions (CEL).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::Condition;
use crate::trainingjob::TrainingJobSpec;

/// A pipeline: triggers, parameters and a DAG of steps. Each push that matches a trigger (or
/// a manual `capstan pipeline run`) makes a PipelineRun that walks the DAG.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    plural = "pipelines",
    namespaced,
    shortname = "pl",
    category = "capstan",
    category = "all",
    status = "PipelineStatus",
    printcolumn(name = "Repo", type_ = "string", json_path = ".spec.triggers[0].git.repo"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineSpec {
    /// What starts a run: git pushes (webhook or polling). Manual runs need no trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub triggers: Vec<Trigger>,

    /// Parameters a run may set (`params.<name>` in `when`, CAPSTAN_PARAM_<NAME> in steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub parameters: Vec<ParameterSpec>,

    /// The steps, a DAG through `dependsOn`. A step starts once every step it depends on has
    /// succeeded or was skipped.
    #[schemars(length(min = 1, max = 64))]
    pub steps: Vec<Step>,
}

/// Observed state of a Pipeline: what its poll triggers last saw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// One entry per trigger that polls, in the order of `spec.triggers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polls: Vec<PollStatus>,
}

/// What one poll trigger last saw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PollStatus {
    /// Index of the trigger in `spec.triggers`.
    pub trigger: u32,
    /// Repository polled.
    pub repo: String,
    /// Branch -> commit SHA at the last successful poll.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub heads: BTreeMap<String, String>,
    /// When the repository was last polled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_time: Option<String>,
    /// The last poll's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that starts a run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// Start a run on a push to a git repository.
    pub git: GitTrigger,
}

/// A git push trigger: by webhook (`POST /api/v1/webhooks/{provider}`) or by polling the
/// repository with `git ls-remote`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitTrigger {
    /// Repository URL (https, ssh or a local path). A webhook matches when its repository's
    /// clone, ssh or web URL is this one (case and a trailing `.git` or `/` ignored).
    #[schemars(length(min = 1, max = 2048))]
    pub repo: String,

    /// Branches that start a run, as glob patterns (`main`, `release/*`). Empty: any branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub branches: Vec<String>,

    /// Only pushes that change a file matching one of these globs (`models/**`, `*.py`) start
    /// a run. Empty: any change. Polling cannot see paths and ignores this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub paths: Vec<String>,

    /// Who sends the webhook: github (default), gitlab or generic.
    #[serde(default)]
    pub provider: GitProvider,

    /// Secret holding the webhook's shared secret (GitHub HMAC key, GitLab token, generic HMAC
    /// key). Required for webhooks: unsigned deliveries are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// Poll the repository with `git ls-remote` every this many seconds; a new commit on a
    /// matching branch starts a run. Unset: no polling (webhooks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_interval_seconds: Option<u32>,
}

/// Who sends a git webhook.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum GitProvider {
    /// GitHub: X-Hub-Signature-256 HMAC-SHA256, X-GitHub-Event, X-GitHub-Delivery.
    #[default]
    Github,
    /// GitLab: X-Gitlab-Token, X-Gitlab-Event.
    Gitlab,
    /// Any sender: X-Capstan-Signature-256 HMAC-SHA256 of a small JSON push document.
    Generic,
}

impl GitProvider {
    /// `github`, `gitlab` or `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            GitProvider::Github => "github",
            GitProvider::Gitlab => "gitlab",
            GitProvider::Generic => "generic",
        }
    }
}

/// A key of a secret (`capstan secret create`, or a Kubernetes Secret in the same namespace).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the secret. Default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, `secret` when unset.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("secret")
    }
}

/// A parameter a run may set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParameterSpec {
    /// Name: letters, digits and `_`, not starting with a digit (`params.<name>` in `when`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Value when a run does not set it. Unset: the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step of the DAG. Exactly one of train, evaluate, register, deploy and container is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.train) ? 1 : 0) + (has(self.evaluate) ? 1 : 0) + (has(self.register) ? 1 : 0) + (has(self.deploy) ? 1 : 0) + (has(self.container) ? 1 : 0) == 1").message("a step sets exactly one of train, evaluate, register, deploy and container"))]
pub struct Step {
    /// Step name, unique in the pipeline (`steps.<name>` in `when`): lowercase letters,
    /// digits and `-`, at most 40 characters.
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Steps that must finish (succeed or be skipped) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub depends_on: Vec<String>,

    /// A CEL expression over earlier steps and parameters that must be true for the step to
    /// run, e.g. `steps.evaluate.metrics.accuracy > 0.9 && params.branch == 'main'`.
    /// Variables: `steps.<name>.metrics.<key>` (numbers), `steps.<name>.outputs.<key>`
    /// (strings: runId, modelVersion, ...), `steps.<name>.phase`, `params.<name>` (strings).
    /// A step whose `when` is false is Skipped with the expression's values as the reason,
    /// and so are the steps that depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub when: Option<String>,

    /// Retries of a failed step, with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,

    /// Seconds one attempt may run before it is stopped and counted as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,

    /// Train a model: a TrainingJob made from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<JobStep>,

    /// Evaluate: a TrainingJob made from this template whose metrics go to its own tracking
    /// run (read by later steps as `steps.<name>.metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<JobStep>,

    /// Register a model version from an earlier step's run artifact, optionally moving an
    /// alias to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<RegisterStep>,

    /// Point a ModelDeployment at a model version or alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployStep>,

    /// Run any container (or process): a TrainingJob made from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<JobStep>,
}

/// The kind of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepKind {
    /// `train`.
    Train,
    /// `evaluate`.
    Evaluate,
    /// `register`.
    Register,
    /// `deploy`.
    Deploy,
    /// `container`.
    Container,
}

impl Step {
    /// The step's kind; None when not exactly one kind is set (the schema rejects that).
    pub fn kind(&self) -> Option<StepKind> {
        let set = [
            (self.train.is_some(), StepKind::Train),
            (self.evaluate.is_some(), StepKind::Evaluate),
            (self.register.is_some(), StepKind::Register),
            (self.deploy.is_some(), StepKind::Deploy),
            (self.container.is_some(), StepKind::Container),
        ];
        let mut kinds = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        match (kinds.next(), kinds.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }

    /// The TrainingJob template of a train, evaluate or container step.
    pub fn job(&self) -> Option<&JobStep> {
        self.train.as_ref().or(self.evaluate.as_ref()).or(self.container.as_ref())
    }
}

/// A step that runs as a TrainingJob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStep {
    /// The TrainingJob's spec. Each replica also gets CAPSTAN_PIPELINE_RUN, CAPSTAN_COMMIT_SHA,
    /// CAPSTAN_BRANCH, CAPSTAN_PARAM_<NAME> and, per earlier step, CAPSTAN_STEP_<NAME>_RUN_ID.
    pub template: TrainingJobSpec,
}

/// Register a model version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterStep {
    /// Registered model name (created when missing).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// The earlier train, evaluate or container step whose run holds the model.
    #[schemars(length(min = 1, max = 40))]
    pub from_step: String,
    /// Artifact path of the model inside that run (the `name` given to `log_model`).
    /// Default `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub artifact_path: Option<String>,
    /// Alias moved to the new version (e.g. `champion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub alias: Option<String>,
}

impl RegisterStep {
    /// The artifact path, `model` when unset.
    pub fn artifact_path(&self) -> &str {
        self.artifact_path.as_deref().unwrap_or("model")
    }
}

/// Update a ModelDeployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployStep {
    /// Name of the ModelDeployment, in the run's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
    /// The earlier register step whose version to serve. Unset: serve `alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub from_step: Option<String>,
    /// Serve the version this alias points to (followed as it moves) instead of a fixed
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub alias: Option<String>,
}

/// Retries of a failed step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    #[schemars(range(max = 100))]
    pub limit: u32,
    /// Seconds before the first retry; doubled for each further one. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub backoff_seconds: Option<u64>,
    /// Longest wait between retries. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_backoff_seconds: Option<u64>,
}

impl RetryPolicy {
    /// Seconds to wait before retry number `retry` (1-based): backoff * 2^(retry-1), capped.
    pub fn delay_seconds(&self, retry: u32) -> u64 {
        let base = self.backoff_seconds.unwrap_or(10);
        let cap = self.max_backoff_seconds.unwrap_or(600);
        let factor = 1u64.checked_shl(retry.saturating_sub(1)).unwrap_or(u64::MAX);
        base.saturating_mul(factor).min(cap)
    }
}

// ---------------------------------------------------------------------------------------
// PipelineRun
// ---------------------------------------------------------------------------------------

/// One run of a Pipeline: the commit that started it, and every step's state, runs, model
/// versions and deployments, so the chain commit -> run -> model version -> deployment can be
/// followed from one object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "PipelineRun",
    plural = "pipelineruns",
    namespaced,
    shortname = "plr",
    category = "capstan",
    category = "all",
    status = "PipelineRunStatus",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipelineRef"),
    printcolumn(name = "Commit", type_ = "string", json_path = ".spec.commit.sha"),
    printcolumn(name = "Branch", type_ = "string", json_path = ".spec.commit.branch"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineRunSpec {
    /// Name of the Pipeline (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub pipeline_ref: String,
    /// Parameter values; unset ones take the Pipeline's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// The commit that started the run (absent for a manual run without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
    /// What started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerInfo>,
}

/// A commit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitInfo {
    /// Full commit SHA.
    #[schemars(length(max = 64))]
    pub sha: String,
    /// Branch pushed to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// Author (name <email>).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// Commit message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Repository URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// Web URL of the commit, when the provider sent one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// What started a run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerInfo {
    /// `webhook`, `poll` or `manual`.
    pub source: String,
    /// github, gitlab or generic, for a webhook.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// The webhook delivery id (X-GitHub-Delivery), for replay protection and audit.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub delivery_id: String,
}

/// Where a run is.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunPhase {
    /// Not started.
    #[default]
    Pending,
    /// Steps are running.
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed for good (or the pipeline is missing or invalid).
    Failed,
}

impl RunPhase {
    /// True once the run can do nothing more.
    pub fn is_finished(self) -> bool {
        matches!(self, RunPhase::Succeeded | RunPhase::Failed)
    }
}

/// Where a step is.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepPhase {
    /// Waiting for the steps it depends on.
    #[default]
    Pending,
    /// An attempt is running.
    Running,
    /// The last attempt failed; the next starts at `nextAttemptTime`.
    Retrying,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Not run: its `when` was false, or a step it depends on was skipped or failed.
    Skipped,
}

impl StepPhase {
    /// True once the step can do nothing more.
    pub fn is_finished(self) -> bool {
        matches!(self, StepPhase::Succeeded | StepPhase::Failed | StepPhase::Skipped)
    }
}

/// Observed state of a PipelineRun.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    /// Where the run is.
    #[serde(default)]
    pub phase: RunPhase,
    /// One entry per step, in the pipeline's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// Succeeded or Failed, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The parameters the run used (defaults filled in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Generation of the Pipeline when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_generation: Option<i64>,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Why the run is in its phase, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A registered model version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionRef {
    /// Registered model name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// Where the model came from (`runs:/<run id>/<path>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// Observed state of one step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Step name.
    pub name: String,
    /// Where the step is.
    #[serde(default)]
    pub phase: StepPhase,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// The TrainingJob of the current or last attempt (job steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Tracking run of that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Latest value of each metric of that run, once the step finished.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Values later steps may read as `steps.<name>.outputs.<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// The model version a register step made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<ModelVersionRef>,
    /// The alias a register step moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The ModelDeployment a deploy step updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// CamelCase reason for the phase (WhenFalse, DependencySkipped, JobFailed, Timeout, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why, for a person (a skipped step shows its `when` and the values it saw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the step finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// When the next attempt starts, while Retrying (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<String>,
}

/// Parameters every run has without declaring them: the pushed branch, the commit SHA and the
/// repository URL (empty for a manual run without a commit).
pub const BUILTIN_PARAMS: &[&str] = &["branch", "commit", "repo"];

/// The parameters a run uses: the run's values over the Pipeline's defaults, plus the
/// built-ins from its commit. Errors name a required parameter without a value or a value for
/// a parameter the Pipeline does not declare.
pub fn effective_parameters(
    pipeline: &PipelineSpec,
    run: &PipelineRunSpec,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let commit = run.commit.clone().unwrap_or_default();
    out.insert("branch".to_string(), commit.branch);
    out.insert("commit".to_string(), commit.sha);
    out.insert("repo".to_string(), commit.repo);
    for (k, v) in &run.parameters {
        if !pipeline.parameters.iter().any(|p| &p.name == k) {
            let known: Vec<&str> = pipeline.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(format!("parameter {k:?} is not declared by the pipeline (declared: {})", known.join(", ")));
        }
        out.insert(k.clone(), v.clone());
    }
    for p in &pipeline.parameters {
        if !run.parameters.contains_key(&p.name) {
            match &p.default {
                Some(d) => {
                    out.insert(p.name.clone(), d.clone());
                }
                None => return Err(format!("parameter {:?} is required (it has no default)", p.name)),
            }
        }
    }
    Ok(out)
}

/// A name for a new run of `pipeline`: `<pipeline>-<first 7 of sha>-<nonce>`, cut to a valid
/// 63-character name (`nonce`: a few random lowercase letters or digits).
pub fn run_name(pipeline: &str, sha: &str, nonce: &str) -> String {
    let short: String = sha.chars().filter(|c| c.is_ascii_alphanumeric()).take(7).collect::<String>().to_lowercase();
    let tail = if short.is_empty() { nonce.to_string() } else { format!("{short}-{nonce}") };
    let room = 63usize.saturating_sub(tail.len() + 1);
    let head: String = pipeline.chars().take(room).collect();
    format!("{}-{tail}", head.trim_end_matches('-'))
}

// ---------------------------------------------------------------------------------------
// Checks the schema cannot express
// ---------------------------------------------------------------------------------------

/// One problem [`check_spec`] found: the field path (relative to the document, like
/// `spec.steps[2].dependsOn[0]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Field path.
    pub path: String,
    /// What is wrong, naming the step.
    pub message: String,
}

fn problem(path: String, message: String) -> SpecProblem {
    SpecProblem { path, message }
}

/// Every step's transitive dependencies, by step index. Unknown names are ignored (reported
/// elsewhere); a cycle makes members ancestors of themselves.
pub fn ancestors(steps: &[Step]) -> Vec<BTreeSet<usize>> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    steps
        .iter()
        .map(|s| {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<usize> = s.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect();
            while let Some(i) = stack.pop() {
                if seen.insert(i) {
                    stack.extend(steps[i].depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()));
                }
            }
            seen
        })
        .collect()
}

/// A dependency cycle, as step indices with the first repeated at the end, if there is one.
pub fn find_cycle(steps: &[Step]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the current path, 2 = done. Iterative DFS.
    let mut color = vec![0u8; steps.len()];
    for start in 0..steps.len() {
        if color[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = 1;
        while let Some(top) = path.last_mut() {
            let node = top.0;
            let deps = &steps[node].depends_on;
            if top.1 < deps.len() {
                let dep = &deps[top.1];
                top.1 += 1;
                let Some(&d) = index.get(dep.as_str()) else { continue };
                match color[d] {
                    0 => {
                        color[d] = 1;
                        path.push((d, 0));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(d);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                path.pop();
            }
        }
    }
    None
}

/// Steps in an order where each comes after everything it depends on (stable: pipeline
/// order among ready steps). None when there is a cycle.
pub fn topo_order(steps: &[Step]) -> Option<Vec<usize>> {
    let anc = ancestors(steps);
    if anc.iter().enumerate().any(|(i, a)| a.contains(&i)) {
        return None;
    }
    let mut order: Vec<usize> = (0..steps.len()).collect();
    // Ancestor counts strictly increase along edges, so sorting by them is a valid order.
    order.sort_by_key(|&i| anc[i].len());
    Some(order)
}

/// Checks a Pipeline's spec beyond its schema: unique step and parameter names, known
/// `dependsOn` names, no cycle, `when` expressions that parse and only read steps the step
/// depends on and declared parameters, register and deploy `fromStep`s that are earlier steps
/// of the right kind, and trigger patterns. `prefix` is the spec's path (`spec`).
pub fn check_spec(spec: &PipelineSpec, prefix: &str) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let steps = &spec.steps;
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        if let Some(j) = first.get(s.name.as_str()) {
            out.push(problem(
                format!("{prefix}.steps[{i}].name"),
                format!("step name {:?} is used twice (also by steps[{j}])", s.name),
            ));
        } else {
            first.insert(&s.name, i);
        }
    }
    let mut params: BTreeSet<&str> = BUILTIN_PARAMS.iter().copied().collect();
    for (i, p) in spec.parameters.iter().enumerate() {
        if !params.insert(p.name.as_str()) {
            let why = if BUILTIN_PARAMS.contains(&p.name.as_str()) { "is built in" } else { "is used twice" };
            out.push(problem(format!("{prefix}.parameters[{i}].name"), format!("parameter name {:?} {why}", p.name)));
        }
    }
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in steps.iter().enumerate() {
        for (j, d) in s.depends_on.iter().enumerate() {
            if d == &s.name {
                out.push(problem(
                    format!("{prefix}.steps[{i}].dependsOn[{j}]"),
                    format!("step {:?} depends on itself", s.name),
                ));
            } else if !first.contains_key(d.as_str()) {
                out.push(problem(
                    format!("{prefix}.steps[{i}].dependsOn[{j}]"),
                    format!("step {:?} depends on unknown step {d:?} (steps: {})", s.name, names.join(", ")),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(steps) {
        if cycle.len() > 2 {
            let chain: Vec<&str> = cycle.iter().map(|&i| steps[i].name.as_str()).collect();
            let at = cycle[0];
            out.push(problem(
                format!("{prefix}.steps[{at}].dependsOn"),
                format!("step {:?} is in a dependency cycle: {}", steps[at].name, chain.join(" -> ")),
            ));
        }
    }
    let anc = ancestors(steps);
    let is_ancestor = |i: usize, name: &str| first.get(name).is_some_and(|j| anc[i].contains(j));
    for (i, s) in steps.iter().enumerate() {
        if let Some(expr) = &s.when {
            let path = format!("{prefix}.steps[{i}].when");
            match when::check(expr) {
                Err(e) => out.push(problem(path, format!("step {:?}: invalid when expression: {e}", s.name))),
                Ok(refs) => {
                    for r in refs {
                        match r {
                            when::Reference::Step { name, position } if !is_ancestor(i, &name) => {
                                let why = if first.contains_key(name.as_str()) {
                                    "a step it does not depend on (add it to dependsOn)"
                                } else {
                                    "no such step"
                                };
                                out.push(problem(
                                    path.clone(),
                                    format!("step {:?}: when: {position}: steps.{name} is {why}", s.name),
                                ));
                            }
                            when::Reference::Param { name, position } if !params.contains(name.as_str()) => {
                                out.push(problem(
                                    path.clone(),
                                    format!("step {:?}: when: {position}: params.{name} is not a declared parameter", s.name),
                                ));
                            }
                            when::Reference::Unknown { name, position } => out.push(problem(
                                path.clone(),
                                format!(
                                    "step {:?}: when: {position}: unknown variable {name:?} (use steps.<name>... or params.<name>)",
                                    s.name
                                ),
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        let mut from = |field: &str, target: &str, allowed: &[StepKind], what: &str| {
            let path = format!("{prefix}.steps[{i}].{field}");
            match first.get(target) {
                None => out.push(problem(path, format!("step {:?}: fromStep {target:?} is no such step", s.name))),
                Some(&j) if !anc[i].contains(&j) => out.push(problem(
                    path,
                    format!(
                        "step {:?}: fromStep {target:?} must be in dependsOn (directly or through another step)",
                        s.name
                    ),
                )),
                Some(&j) if !steps[j].kind().is_some_and(|k| allowed.contains(&k)) => {
                    out.push(problem(path, format!("step {:?}: fromStep {target:?} must be {what}", s.name)))
                }
                _ => {}
            }
        };
        if let Some(r) = &s.register {
            from(
                "register.fromStep",
                &r.from_step,
                &[StepKind::Train, StepKind::Evaluate, StepKind::Container],
                "a train, evaluate or container step",
            );
        }
        if let Some(d) = &s.deploy {
            if let Some(target) = &d.from_step {
                from("deploy.fromStep", target, &[StepKind::Register], "a register step");
            } else if d.alias.is_none() {
                out.push(problem(
                    format!("{prefix}.steps[{i}].deploy"),
                    format!("step {:?}: set fromStep (a register step) or alias", s.name),
                ));
            }
        }
    }
    for (t, trig) in spec.triggers.iter().enumerate() {
        for (field, list) in [("branches", &trig.git.branches), ("paths", &trig.git.paths)] {
            for (k, pat) in list.iter().enumerate() {
                if pat.is_empty() {
                    out.push(problem(format!("{prefix}.triggers[{t}].git.{field}[{k}]"), "must not be empty".into()));
                }
            }
        }
    }
    out
}

/// Shell-style glob match for branch and path filters: `*` matches within one `/`-separated
/// segment, `**` across segments, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(text))
}

/// `when` expressions: CEL (the `cel` crate kube already uses), parsed when a Pipeline is
/// applied and evaluated by the executor over `steps` and `params`.
pub mod when {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde_json::Value;

    /// Why an expression does not parse or cannot be evaluated.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct WhenError {
        /// 1-based line and column, when known.
        pub position: Option<Position>,
        /// What is wrong.
        pub message: String,
    }

    impl fmt::Display for WhenError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.position {
                Some(p) => write!(f, "{p}: {}", self.message),
                None => f.write_str(&self.message),
            }
        }
    }

    impl std::error::Error for WhenError {}

    /// A 1-based position in an expression.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Position {
        /// Line.
        pub line: usize,
        /// Column (in characters).
        pub column: usize,
    }

    impl fmt::Display for Position {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "line {}, column {}", self.line, self.column)
        }
    }

    /// A variable an expression reads.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Reference {
        /// `steps.<name>...`.
        Step {
            /// Step name.
            name: String,
            /// Where.
            position: Position,
        },
        /// `params.<name>`.
        Param {
            /// Parameter name.
            name: String,
            /// Where.
            position: Position,
        },
        /// Any other top-level identifier.
        Unknown {
            /// The identifier.
            name: String,
            /// Where.
            position: Position,
        },
    }

    const MAX_LEN: usize = 4096;

    fn parse(expr: &str) -> Result<cel::Program, WhenError> {
        if expr.len() > MAX_LEN {
            return Err(WhenError { position: None, message: format!("longer than {MAX_LEN} bytes") });
        }
        if expr.trim().is_empty() {
            return Err(WhenError {
                position: Some(Position { line: 1, column: 1 }),
                message: "the expression is empty".into(),
            });
        }
        // The parser is recursive; keep hostile nesting from reaching it.
        let mut depth = 0usize;
        for (i, c) in expr.chars().enumerate() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > 32 {
                return Err(WhenError {
                    position: Some(position_of(expr, i)),
                    message: "nested deeper than 32 levels".into(),
                });
            }
        }
        let parsed = std::panic::catch_unwind(|| cel::Program::compile(expr));
        match parsed {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(errors)) => {
                let e = errors.errors.into_iter().next();
                Err(match e {
                    Some(e) => WhenError {
                        position: Some(Position {
                            line: e.pos.0.max(1) as usize,
                            column: (e.pos.1.max(0) as usize) + 1,
                        }),
                        message: e.msg,
                    },
                    None => WhenError { position: None, message: "syntax error".into() },
                })
            }
            Err(_) => Err(WhenError { position: None, message: "the expression cannot be parsed".into() }),
        }
    }

    fn position_of(expr: &str, char_index: usize) -> Position {
        let mut line = 1;
        let mut column = 1;
        for c in expr.chars().take(char_index) {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Position { line, column }
    }

    /// Parses `expr` and lists the variables it reads (`steps.<name>`, `params.<name>`, and any
    /// other identifier as [`Reference::Unknown`]), each with its position.
    pub fn check(expr: &str) -> Result<Vec<Reference>, WhenError> {
        let program = parse(expr)?;
        let vars: Vec<String> = program.references().variables().into_iter().map(str::to_owned).collect();
        let mut refs = Vec::new();
        // Positions come from a scan of the text: identifiers outside string literals.
        let chars: Vec<char> = expr.chars().collect();
        let mut i = 0;
        let mut prev_dot = false;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' || c == '"' {
                // Skip a string literal (with escapes).
                let q = c;
                i += 1;
                while i < chars.len() && chars[i] != q {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                prev_dot = false;
                continue;
            }
            if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                if !prev_dot && vars.contains(&ident) {
                    let position = position_of(expr, start);
                    // `.name` right after it (spaces allowed).
                    let mut k = i;
                    while k < chars.len() && chars[k].is_whitespace() {
                        k += 1;
                    }
                    let mut member = None;
                    if k < chars.len() && chars[k] == '.' {
                        k += 1;
                        while k < chars.len() && chars[k].is_whitespace() {
                            k += 1;
                        }
                        let s = k;
                        while k < chars.len()
                            && (chars[k].is_ascii_alphanumeric() || chars[k] == '_' || chars[k] == '-')
                        {
                            k += 1;
                        }
                        if k > s {
                            member = Some(chars[s..k].iter().collect::<String>());
                        }
                    }
                    match (ident.as_str(), member) {
                        ("steps", Some(name)) => refs.push(Reference::Step { name, position }),
                        ("params", Some(name)) => refs.push(Reference::Param { name, position }),
                        ("steps" | "params", None) => {}
                        _ => refs.push(Reference::Unknown { name: ident.clone(), position }),
                    }
                }
                prev_dot = false;
                continue;
            }
            if c.is_ascii_digit() {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                prev_dot = false;
                continue;
            }
            if !c.is_whitespace() {
                prev_dot = c == '.';
            }
            i += 1;
        }
        Ok(refs)
    }

    /// What one step exposes to later `when` expressions.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct StepValues {
        /// `steps.<name>.phase`.
        pub phase: String,
        /// `steps.<name>.metrics.<key>`.
        pub metrics: BTreeMap<String, f64>,
        /// `steps.<name>.outputs.<key>`.
        pub outputs: BTreeMap<String, String>,
    }

    /// Evaluates `expr` to a boolean over `steps` and `params`. A missing metric or a value of
    /// the wrong type is an error (the step then fails with it), never a silent false.
    pub fn evaluate(
        expr: &str,
        steps: &BTreeMap<String, StepValues>,
        params: &BTreeMap<String, String>,
    ) -> Result<bool, WhenError> {
        let program = parse(expr)?;
        let steps_value: serde_json::Map<String, Value> = steps
            .iter()
            .map(|(name, v)| {
                let metrics: serde_json::Map<String, Value> = v
                    .metrics
                    .iter()
                    .filter_map(|(k, x)| serde_json::Number::from_f64(*x).map(|n| (k.clone(), Value::Number(n))))
                    .collect();
                (name.clone(), serde_json::json!({"phase": v.phase, "metrics": metrics, "outputs": v.outputs}))
            })
            .collect();
        let mut ctx = cel::Context::default();
        let err = |m: String| WhenError { position: None, message: m };
        ctx.add_variable("steps", Value::Object(steps_value)).map_err(|e| err(e.to_string()))?;
        ctx.add_variable("params", params).map_err(|e| err(e.to_string()))?;
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(err(format!("the expression gave {other:?}, not a boolean"))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(name: &str, deps: &[&str]) -> Step {
        Step {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            container: Some(JobStep::default()),
            ..Step::default()
        }
    }

    fn spec(steps: Vec<Step>) -> PipelineSpec {
        PipelineSpec { steps, ..PipelineSpec::default() }
    }

    #[test]
    fn a_cycle_names_its_steps() {
        let s = spec(vec![step("a", &["c"]), step("b", &["a"]), step("c", &["b"])]);
        let p = check_spec(&s, "spec");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "spec.steps[0].dependsOn");
        assert!(p[0].message.contains("a -> c -> b -> a"), "{}", p[0].message);
        assert!(topo_order(&s.steps).is_none());
    }

    #[test]
    fn unknown_and_self_dependencies_name_the_step() {
        let s = spec(vec![step("a", &["a"]), step("b", &["nope"])]);
        let p = check_spec(&s, "spec");
        assert_eq!(p[0].path, "spec.steps[0].dependsOn[0]");
        assert!(p[0].message.contains("\"a\" depends on itself"));
        assert_eq!(p[1].path, "spec.steps[1].dependsOn[0]");
        assert!(p[1].message.contains("\"b\" depends on unknown step \"nope\""), "{}", p[1].message);
    }

    #[test]
    fn when_syntax_errors_give_step_and_position() {
        let mut s = spec(vec![step("train", &[]), step("gate", &["train"])]);
        s.steps[1].when = Some("steps.train.metrics.acc > ".into());
        let p = check_spec(&s, "spec");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "spec.steps[1].when");
        assert!(p[0].message.contains("step \"gate\""), "{}", p[0].message);
        assert!(p[0].message.contains("line 1, column"), "{}", p[0].message);
    }

    #[test]
    fn when_may_only_read_ancestors_and_declared_params() {
        let mut s = spec(vec![step("train", &[]), step("eval", &["train"]), step("reg", &["eval"])]);
        s.parameters.push(ParameterSpec { name: "threshold".into(), ..Default::default() });
        s.steps[2].when = Some("steps.train.metrics.acc > double(params.threshold) && params.branch == 'main'".into());
        assert!(check_spec(&s, "spec").is_empty());
        s.steps[1].when = Some("steps.reg.outputs.x == 'y' || params.nope == 'a' || foo".into());
        let p = check_spec(&s, "spec");
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(p.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("line 1, column 1: steps.reg is a step it does not depend on"), "{msgs:?}");
        assert!(msgs[1].contains("column 31: params.nope is not a declared parameter"), "{msgs:?}");
        assert!(msgs[2].contains("unknown variable \"foo\""), "{msgs:?}");
    }

    #[test]
    fn register_and_deploy_need_earlier_steps_of_the_right_kind() {
        let mut s = spec(vec![step("train", &[])]);
        s.steps.push(Step {
            name: "reg".into(),
            register: Some(RegisterStep { model: "m".into(), from_step: "train".into(), ..Default::default() }),
            ..Default::default()
        });
        let p = check_spec(&s, "spec");
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("must be in dependsOn"), "{}", p[0].message);
        s.steps[1].depends_on = vec!["train".into()];
        s.steps.push(Step {
            name: "dep".into(),
            depends_on: vec!["reg".into()],
            deploy: Some(DeployStep { deployment: "d".into(), from_step: Some("train".into()), alias: None }),
            ..Default::default()
        });
        let p = check_spec(&s, "spec");
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("must be a register step"), "{}", p[0].message);
    }

    #[test]
    fn when_evaluates_metrics_outputs_and_params() {
        let mut steps = BTreeMap::new();
        steps.insert(
            "evaluate".to_string(),
            when::StepValues {
                phase: "Succeeded".into(),
                metrics: [("accuracy".to_string(), 0.95)].into(),
                outputs: [("runId".to_string(), "r1".to_string())].into(),
            },
        );
        let params: BTreeMap<String, String> = [("branch".to_string(), "main".to_string())].into();
        let yes = "steps.evaluate.metrics.accuracy > 0.9 && params.branch == 'main'";
        assert_eq!(when::evaluate(yes, &steps, &params), Ok(true));
        assert_eq!(when::evaluate("steps.evaluate.metrics.accuracy > 0.99", &steps, &params), Ok(false));
        assert_eq!(when::evaluate("steps.evaluate.outputs.runId == 'r1'", &steps, &params), Ok(true));
        let missing = when::evaluate("steps.evaluate.metrics.loss < 1.0", &steps, &params);
        assert!(missing.is_err(), "{missing:?}");
        assert!(when::evaluate("1 + 1", &steps, &params).unwrap_err().message.contains("not a boolean"));
    }

    #[test]
    fn parameters_fill_defaults_and_builtins() {
        let mut s = spec(vec![step("a", &[])]);
        s.parameters.push(ParameterSpec { name: "t".into(), default: Some("0.9".into()), ..Default::default() });
        s.parameters.push(ParameterSpec { name: "req".into(), ..Default::default() });
        let mut run = PipelineRunSpec { pipeline_ref: "p".into(), ..Default::default() };
        assert!(effective_parameters(&s, &run).unwrap_err().contains("\"req\" is required"));
        run.parameters.insert("req".into(), "x".into());
        run.commit = Some(CommitInfo { sha: "abc".into(), branch: "main".into(), ..Default::default() });
        let p = effective_parameters(&s, &run).unwrap();
        assert_eq!(
            (p["t"].as_str(), p["req"].as_str(), p["branch"].as_str(), p["commit"].as_str()),
            ("0.9", "x", "main", "abc")
        );
        run.parameters.insert("zzz".into(), "x".into());
        assert!(effective_parameters(&s, &run).unwrap_err().contains("\"zzz\" is not declared"));
        s.parameters.push(ParameterSpec { name: "branch".into(), ..Default::default() });
        assert!(check_spec(&s, "spec")[0].message.contains("is built in"));
    }

    #[test]
    fn run_names_are_valid_and_bounded() {
        assert_eq!(run_name("iris", "0123456789abcdef", "x1y2z"), "iris-0123456-x1y2z");
        assert_eq!(run_name("iris", "", "x1y2z"), "iris-x1y2z");
        let long = run_name(&"p".repeat(80), "ABCDEF0123", "abcde");
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-abcdef0-abcde"));
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let r = RetryPolicy { limit: 5, backoff_seconds: Some(10), max_backoff_seconds: Some(60) };
        assert_eq!((1..=5).map(|n| r.delay_seconds(n)).collect::<Vec<_>>(), [10, 20, 40, 60, 60]);
        assert_eq!(r.delay_seconds(200), 60);
    }

    #[test]
    fn globs() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "maint"));
        assert!(glob_match("release/*", "release/1.0"));
        assert!(!glob_match("release/*", "release/1.0/x"));
        assert!(glob_match("models/**", "models/a/b.py"));
        assert!(glob_match("**/*.py", "train.py"));
        assert!(glob_match("**/*.py", "src/a/train.py"));
        assert!(!glob_match("*.py", "src/train.py"));
        assert!(glob_match("feat-?", "feat-1"));
    }

    proptest! {
        /// Acyclic graphs (edges only to earlier steps) never report a cycle and their
        /// topological order respects every edge; adding a back edge closing a path reports one.
        #[test]
        fn topo_order_respects_edges(edges in proptest::collection::vec((0usize..8, 0usize..8), 0..20)) {
            let n = 8;
            let mut steps: Vec<Step> = (0..n).map(|i| step(&format!("s{i}"), &[])).collect();
            for (a, b) in &edges {
                let (hi, lo) = if a > b { (*a, *b) } else if a < b { (*b, *a) } else { continue };
                let dep = format!("s{lo}");
                if !steps[hi].depends_on.contains(&dep) {
                    steps[hi].depends_on.push(dep);
                }
            }
            prop_assert!(find_cycle(&steps).is_none());
            let order = topo_order(&steps).expect("acyclic");
            let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, i)| (*i, p)).collect();
            for (i, s) in steps.iter().enumerate() {
                for d in &s.depends_on {
                    let j: usize = d[1..].parse().unwrap();
                    prop_assert!(pos[&j] < pos[&i]);
                }
            }
            if let Some((hi, lo)) = edges.iter().find(|(a, b)| a > b).copied() {
                // lo -> hi exists, so hi -> lo closes a cycle.
                let back = format!("s{hi}");
                steps[lo].depends_on.push(back);
                prop_assert!(find_cycle(&steps).is_some());
                prop_assert!(check_spec(&spec(steps), "spec").iter().any(|p| p.message.contains("cycle")));
            }
        }

        /// The `when` checker never panics on arbitrary text.
        #[test]
        fn when_check_never_panics(s in "\\PC{0,200}") {
            let _ = when::check(&s);
        }
    }
}
