//! The standalone pipeline executor of `capstan up`: each controller pass walks every
//! unfinished PipelineRun through [`crate::pipeline_plan::plan`] and carries out its actions
//! against the store (TrainingJobs like `capstan apply` makes them, model versions and aliases
//! in the registry, ModelDeployment resources), and polls git repositories of poll triggers.
//!
//! The PipelineRun's status is the audit chain: commit (spec) -> each step's TrainingJob and
//! tracking run -> the model version registered -> the deployment updated.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use capstan_crds::pipeline::{
    self, CommitInfo, GitTrigger, ModelVersionRef, PipelineRunSpec, PipelineRunStatus, PipelineSpec, PipelineStatus,
    PollStatus, TriggerInfo,
};
use capstan_store::registry::{LoggedModelQuery, NewModelVersion};
use capstan_store::{Store, StoreError, StoredResource};
use serde_json::{json, Value};

use crate::pipeline_plan::{self, Action, JobObs, Observations, Outcome};
use crate::Error;

/// Kind of pipeline runs in the store.
pub const RUN_KIND: &str = "PipelineRun";
/// Kind of pipelines in the store.
pub const PIPELINE_KIND: &str = "Pipeline";
/// Kind of model deployments (added by the serving work); deploy steps update it.
pub const DEPLOYMENT_KIND: &str = "ModelDeployment";
/// User recorded on registry changes made by pipelines.
const USER: &str = "capstan-pipeline";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One pass: every unfinished run, then the poll triggers that are due.
pub async fn reconcile_all(store: &Store) -> Result<(), Error> {
    for run in store.list_resources(RUN_KIND, None).await? {
        if run.deletion_timestamp.is_some() {
            // Nothing runs outside its jobs, which stay for inspection: remove at once.
            store.remove_resource(&run.uid).await?;
            continue;
        }
        if let Err(e) = reconcile_run(store, &run).await {
            tracing::warn!(run = %run.name, error = %e, "pipeline run pass failed; retrying next pass");
        }
    }
    if let Err(e) = poll_triggers(store).await {
        tracing::warn!(error = %e, "pipeline poll pass failed; retrying next pass");
    }
    Ok(())
}

async fn observe_job(store: &Store, ns: &str, name: &str) -> Result<JobObs, Error> {
    let Some(job) = store.get_resource("TrainingJob", ns, name).await? else { return Ok(JobObs::Missing) };
    let phase = job.status.get("phase").and_then(Value::as_str).unwrap_or("Pending");
    let run_id = job.status.get("trackingRunId").and_then(Value::as_str).map(String::from);
    Ok(match phase {
        "Succeeded" => {
            let mut metrics = BTreeMap::new();
            if let Some(r) = &run_id {
                if let Some(run) = store.get_run(r).await? {
                    for m in run.metrics {
                        if m.value.is_finite() {
                            metrics.insert(m.key, m.value);
                        }
                    }
                }
            }
            JobObs::Succeeded { run_id, metrics }
        }
        "Failed" => {
            let message = job.status.get("message").and_then(Value::as_str).unwrap_or("the job failed").to_string();
            JobObs::Failed { run_id, message }
        }
        _ => JobObs::Running,
    })
}

async fn reconcile_run(store: &Store, run: &StoredResource) -> Result<(), Error> {
    let status: PipelineRunStatus = serde_json::from_value(run.status.clone()).unwrap_or_default();
    if status.phase.is_finished() {
        return Ok(());
    }
    let spec: PipelineRunSpec = match serde_json::from_value(run.spec.clone()) {
        Ok(s) => s,
        Err(e) => {
            return fail_run(store, run, status, "InvalidSpec", &format!("stored spec does not parse: {e}")).await
        }
    };
    let Some(pl) = store.get_resource(PIPELINE_KIND, &run.namespace, &spec.pipeline_ref).await? else {
        let msg = format!("pipeline {}/{} not found", run.namespace, spec.pipeline_ref);
        return fail_run(store, run, status, "PipelineNotFound", &msg).await;
    };
    let pspec: PipelineSpec = match serde_json::from_value(pl.spec.clone()) {
        Ok(s) => s,
        Err(e) => return fail_run(store, run, status, "InvalidPipeline", &format!("pipeline spec: {e}")).await,
    };
    let mut obs = Observations { jobs: HashMap::new(), now: now() };
    for st in &status.steps {
        if let Some(job) = &st.job_name {
            obs.jobs.insert(job.clone(), observe_job(store, &run.namespace, job).await?);
        }
    }
    let mut plan = pipeline_plan::plan(&pl.name, &pspec, &run.name, &spec, &status, &obs);
    if status.pipeline_generation.is_none() {
        plan.status.pipeline_generation = Some(pl.generation);
    }
    for action in plan.actions {
        match action {
            Action::CreateJob { step, name, spec: job } => {
                let labels = json!({
                    "capstan.dev/pipeline": pl.name,
                    "capstan.dev/pipeline-run": run.name,
                    "capstan.dev/pipeline-step": step,
                });
                let body = serde_json::to_value(&*job)?;
                let (stored, outcome) =
                    store.put_resource("TrainingJob", &run.namespace, &name, &labels, &json!({}), &body).await?;
                if outcome == capstan_store::PutOutcome::Created {
                    let msg = format!("created for step {step} of PipelineRun {}", run.name);
                    store.add_event(&stored.uid, "Normal", "PipelineStep", &msg).await?;
                    store
                        .add_event(&run.uid, "Normal", "StepStarted", &format!("step {step}: TrainingJob {name}"))
                        .await?;
                }
            }
            Action::DeleteJob { step, name } => {
                store.mark_deleted("TrainingJob", &run.namespace, &name).await?;
                store
                    .add_event(&run.uid, "Warning", "StepTimeout", &format!("step {step}: deleted TrainingJob {name}"))
                    .await?;
            }
            Action::Register { step, model, run_id, artifact_path, alias } => {
                let outcome = match register(store, &model, &run_id, &artifact_path, alias.as_deref(), run, &spec).await
                {
                    Ok(mv) => {
                        let msg = format!("step {step}: registered {} version {}", mv.name, mv.version);
                        store.add_event(&run.uid, "Normal", "ModelRegistered", &msg).await?;
                        Outcome::Registered(mv)
                    }
                    Err(e) => Outcome::Failed { reason: "RegisterFailed".into(), message: e.to_string() },
                };
                pipeline_plan::complete(&pspec, &mut plan.status, &step, outcome, obs.now);
            }
            Action::Deploy { step, deployment, version, alias } => {
                let outcome = match deploy(store, &run.namespace, &deployment, version.as_ref(), alias.as_deref()).await
                {
                    Ok(()) => {
                        store
                            .add_event(&run.uid, "Normal", "Deployed", &format!("step {step}: updated {deployment}"))
                            .await?;
                        Outcome::Deployed { deployment }
                    }
                    Err((reason, message)) => Outcome::Failed { reason, message },
                };
                pipeline_plan::complete(&pspec, &mut plan.status, &step, outcome, obs.now);
            }
        }
    }
    if plan.status.phase.is_finished() && !status.phase.is_finished() {
        let (type_, msg) = (format!("{:?}", plan.status.phase), plan.status.message.clone().unwrap_or_default());
        let level = if type_ == "Failed" { "Warning" } else { "Normal" };
        store.add_event(&run.uid, level, &type_, &msg).await?;
    }
    let new = serde_json::to_value(&plan.status)?;
    if new != run.status {
        store.set_status(&run.uid, &new).await?;
    }
    Ok(())
}

async fn fail_run(
    store: &Store,
    run: &StoredResource,
    mut status: PipelineRunStatus,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let now = now();
    status.phase = capstan_crds::pipeline::RunPhase::Failed;
    status.message = Some(message.to_string());
    status.completion_time = Some(pipeline_plan::rfc3339(now));
    status.conditions.push(capstan_crds::Condition {
        type_: "Failed".into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: pipeline_plan::rfc3339(now),
    });
    store.add_event(&run.uid, "Warning", reason, message).await?;
    store.set_status(&run.uid, &serde_json::to_value(&status)?).await?;
    Ok(())
}

/// Registers a version of `model` from `run_id`'s model at `artifact_path` (the run's logged
/// model of that name when there is one, MLflow 3 style; else `runs:/<run>/<path>`), tags it
/// with the pipeline run and commit, and moves `alias` to it.
async fn register(
    store: &Store,
    model: &str,
    run_id: &str,
    artifact_path: &str,
    alias: Option<&str>,
    run: &StoredResource,
    spec: &PipelineRunSpec,
) -> Result<ModelVersionRef, StoreError> {
    let tracking = store.get_run(run_id).await?.ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
    let logged = store
        .search_logged_models(&LoggedModelQuery {
            experiment_ids: std::slice::from_ref(&tracking.experiment_id),
            filter: None,
            order_by: &[("creation_timestamp".to_string(), false)],
            max_results: 1000,
            offset: 0,
        })
        .await?
        .items
        .into_iter()
        .find(|m| m.source_run_id.as_deref() == Some(run_id) && m.name == artifact_path);
    if store.get_registered_model(model).await?.is_none() {
        match store.create_registered_model(model, Some("registered by a Capstan pipeline"), &[]).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let tags = version_tags(spec, &run.namespace, &run.name);
    let (source, storage_location, model_id) = match &logged {
        Some(m) => (format!("models:/{}", m.model_id), Some(m.artifact_location.clone()), Some(m.model_id.clone())),
        None => (
            format!("runs:/{run_id}/{artifact_path}"),
            Some(format!("{}/{artifact_path}", tracking.artifact_uri.trim_end_matches('/'))),
            None,
        ),
    };
    let mv = store
        .create_model_version(&NewModelVersion {
            name: model.to_string(),
            source: source.clone(),
            storage_location,
            run_id: Some(run_id.to_string()),
            run_link: None,
            description: Some(format!("PipelineRun {}/{}", run.namespace, run.name)),
            tags,
            model_id,
            user_id: USER.to_string(),
        })
        .await?;
    if let Some(a) = alias {
        store.set_registered_model_alias(model, a, mv.version, USER).await?;
    }
    Ok(ModelVersionRef { name: model.to_string(), version: mv.version, source })
}

/// Tags a model version registered by a pipeline carries: its run, pipeline, commit and branch
/// (both backends register with these).
pub fn version_tags(spec: &PipelineRunSpec, ns: &str, run: &str) -> Vec<(String, String)> {
    let mut tags = vec![
        ("capstan.dev/pipeline-run".to_string(), format!("{ns}/{run}")),
        ("capstan.dev/pipeline".to_string(), spec.pipeline_ref.clone()),
    ];
    if let Some(c) = &spec.commit {
        tags.push(("capstan.dev/commit".to_string(), c.sha.clone()));
        tags.push(("capstan.dev/branch".to_string(), c.branch.clone()));
    }
    tags
}

/// Points the ModelDeployment `name` at a version or an alias by editing its stored spec
/// (`spec.model.registeredModel` with `version` or `alias`); its own controller rolls it out.
async fn deploy(
    store: &Store,
    ns: &str,
    name: &str,
    version: Option<&ModelVersionRef>,
    alias: Option<&str>,
) -> Result<(), (String, String)> {
    let err = |e: StoreError| ("StoreError".to_string(), e.to_string());
    let Some(d) = store.get_resource(DEPLOYMENT_KIND, ns, name).await.map_err(err)? else {
        return Err((
            "DeploymentNotFound".into(),
            format!("ModelDeployment {ns}/{name} not found (create it first; deploy steps update an existing one)"),
        ));
    };
    let mut spec = d.spec.clone();
    let model = spec.get_mut("model").and_then(Value::as_object_mut).ok_or_else(|| {
        ("UnsupportedDeployment".to_string(), format!("ModelDeployment {ns}/{name} has no spec.model to update"))
    })?;
    point_model(model, version, alias);
    store.put_resource(DEPLOYMENT_KIND, ns, name, &d.labels, &d.annotations, &spec).await.map_err(err)?;
    Ok(())
}

/// Sets a ModelDeployment's `spec.model` to a registered version, or to an alias of its model.
pub fn point_model(model: &mut serde_json::Map<String, Value>, version: Option<&ModelVersionRef>, alias: Option<&str>) {
    if let Some(v) = version {
        model.insert("registeredModel".into(), json!(v.name));
        model.insert("version".into(), json!(v.version));
        model.remove("alias");
        model.remove("uri");
    } else if let Some(a) = alias {
        model.insert("alias".into(), json!(a));
        model.remove("version");
    }
}

// ---------------------------------------------------------------------------------------
// Poll triggers
// ---------------------------------------------------------------------------------------

/// Heads of branches from `git ls-remote --heads` output: `<sha>\trefs/heads/<branch>`.
pub fn parse_ls_remote(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let (sha, r) = l.split_once('\t')?;
            let branch = r.trim().strip_prefix("refs/heads/")?;
            (sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (branch.to_string(), sha.to_string()))
        })
        .collect()
}

/// Branches whose head is new or moved since `before` and that match the trigger's branch
/// filters: (branch, sha). The first poll (`before` None) only records the heads.
pub fn new_heads(
    trigger: &GitTrigger,
    before: Option<&BTreeMap<String, String>>,
    now: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let Some(before) = before else { return Vec::new() };
    now.iter()
        .filter(|(b, sha)| before.get(*b) != Some(*sha))
        .filter(|(b, _)| trigger.branches.is_empty() || trigger.branches.iter().any(|g| pipeline::glob_match(g, b)))
        .map(|(b, s)| (b.clone(), s.clone()))
        .collect()
}

/// Runs git (no prompt, 30 s at most): its stdout, or why it failed.
pub(crate) async fn git(args: &[&str]) -> Result<String, String> {
    let child = tokio::process::Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(30), child).await {
        Err(_) => Err(format!("git {} took longer than 30s", args.first().unwrap_or(&""))),
        Ok(Err(e)) => Err(format!("cannot run git: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(Ok(o)) => Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim())),
    }
}

/// Author and subject of a commit, when the repository is a local path git can read.
pub(crate) async fn local_commit_info(repo: &str, sha: &str) -> Option<(String, String)> {
    if !std::path::Path::new(repo).exists() {
        return None;
    }
    let out = git(&["--git-dir", repo, "log", "-1", "--format=%an <%ae>%x00%s", sha]).await.ok()?;
    let (author, message) = out.trim_end().split_once('\0')?;
    Some((author.to_string(), message.to_string()))
}

async fn poll_triggers(store: &Store) -> Result<(), Error> {
    let now_s = now();
    for pl in store.list_resources(PIPELINE_KIND, None).await? {
        if pl.deletion_timestamp.is_some() {
            continue;
        }
        let Ok(spec) = serde_json::from_value::<PipelineSpec>(pl.spec.clone()) else { continue };
        let mut status: PipelineStatus = serde_json::from_value(pl.status.clone()).unwrap_or_default();
        let mut changed = false;
        for (i, t) in spec.triggers.iter().enumerate() {
            let Some(interval) = t.git.poll_interval_seconds else { continue };
            let idx = status.polls.iter().position(|p| p.trigger == i as u32 && p.repo == t.git.repo);
            let last = idx
                .and_then(|x| status.polls[x].last_poll_time.as_deref())
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()));
            if last.is_some_and(|l| now_s - l < interval as i64) {
                continue;
            }
            let mut entry = idx.map(|x| status.polls[x].clone()).unwrap_or(PollStatus {
                trigger: i as u32,
                repo: t.git.repo.clone(),
                ..Default::default()
            });
            entry.last_poll_time = Some(pipeline_plan::rfc3339(now_s));
            match git(&["ls-remote", "--heads", &t.git.repo]).await {
                Err(e) => entry.error = Some(e),
                Ok(out) => {
                    let heads = parse_ls_remote(&out);
                    let before = idx.map(|_| entry.heads.clone());
                    for (branch, sha) in new_heads(&t.git, before.as_ref(), &heads) {
                        let (author, message) = local_commit_info(&t.git.repo, &sha).await.unwrap_or_default();
                        let run = PipelineRunSpec {
                            pipeline_ref: pl.name.clone(),
                            parameters: Default::default(),
                            commit: Some(CommitInfo {
                                sha: sha.clone(),
                                branch: branch.clone(),
                                author,
                                message,
                                repo: t.git.repo.clone(),
                                url: String::new(),
                            }),
                            trigger: Some(TriggerInfo { source: "poll".into(), ..Default::default() }),
                        };
                        if let Err(e) = pipeline::effective_parameters(&spec, &run) {
                            tracing::warn!(pipeline = %pl.name, error = %e, "poll trigger cannot start a run");
                            continue;
                        }
                        let nonce: String = uuid_like();
                        let name = pipeline::run_name(&pl.name, &sha, &nonce);
                        let labels = json!({"capstan.dev/pipeline": pl.name});
                        let (stored, _) = store
                            .put_resource(
                                RUN_KIND,
                                &pl.namespace,
                                &name,
                                &labels,
                                &json!({}),
                                &serde_json::to_value(&run)?,
                            )
                            .await?;
                        let msg = format!("started by poll for commit {sha} on {branch}");
                        store.add_event(&stored.uid, "Normal", "Created", &msg).await?;
                        tracing::info!(pipeline = %pl.name, %branch, %sha, run = %name, "poll trigger started a run");
                    }
                    entry.heads = heads;
                    entry.error = None;
                }
            }
            match idx {
                Some(x) => status.polls[x] = entry,
                None => status.polls.push(entry),
            }
            changed = true;
        }
        if changed {
            store.set_status(&pl.uid, &serde_json::to_value(&status)?).await?;
        }
    }
    Ok(())
}

/// Five random lowercase hex characters.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    format!("{:05x}", mixed >> 44)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_points_the_model_at_a_version_or_an_alias() {
        let mut m = json!({"registeredModel": "old", "alias": "champion"}).as_object().cloned().unwrap();
        let v = ModelVersionRef { name: "iris".into(), version: 4, source: String::new() };
        point_model(&mut m, Some(&v), Some("ignored"));
        assert_eq!(Value::Object(m.clone()), json!({"registeredModel": "iris", "version": 4}));
        point_model(&mut m, None, Some("champion"));
        assert_eq!(Value::Object(m), json!({"registeredModel": "iris", "alias": "champion"}));
    }

    #[test]
    fn ls_remote_output_parses() {
        let sha = "a".repeat(40);
        let out = format!("{sha}\trefs/heads/main\n{sha}\trefs/heads/feat/x\n{sha}\trefs/tags/v1\nbad line\n");
        let heads = parse_ls_remote(&out);
        assert_eq!(heads.keys().collect::<Vec<_>>(), ["feat/x", "main"]);
    }

    #[test]
    fn only_moved_matching_branches_start_runs_and_the_first_poll_records() {
        let t = GitTrigger { repo: "/r.git".into(), branches: vec!["main".into()], ..Default::default() };
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let before: BTreeMap<String, String> = [("main".to_string(), a.clone()), ("dev".to_string(), a.clone())].into();
        assert!(new_heads(&t, None, &before).is_empty());
        let now: BTreeMap<String, String> = [("main".to_string(), b.clone()), ("dev".to_string(), b.clone())].into();
        assert_eq!(new_heads(&t, Some(&before), &now), [("main".to_string(), b.clone())]);
        assert!(new_heads(&t, Some(&now), &now).is_empty());
        let any = GitTrigger { repo: "/r.git".into(), ..Default::default() };
        assert_eq!(new_heads(&any, Some(&before), &now).len(), 2);
    }
}
