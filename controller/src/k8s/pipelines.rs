//! PipelineRuns on Kubernetes: the same pure planner as `capstan up`
//! ([`crate::pipeline_plan::plan`]) drives each run; this adapter observes the step
//! TrainingJobs in the cluster (their tracking runs' metrics through the server's MLflow
//! API), creates and deletes them (owned by the PipelineRun), registers model versions and
//! moves aliases through the server's MLflow API, points ModelDeployments at the new version
//! (the serving reconciler rolls them out), and writes the run's status, the audit chain
//! commit -> runs -> model version -> deployment, by server-side apply.
//!
//! Triggers on a cluster: a PipelineRun applied by hand or by any CI (`kubectl apply`);
//! webhooks and `capstan pipeline run` through `capstan server --kubernetes`, which creates
//! PipelineRun objects (`capstan_server::webhooks`); poll triggers through [`poll`], a task of
//! the leader apart from the passes: `git ls-remote` of each due trigger, a PipelineRun per
//! moved branch (named after the branch and commit, so a poll repeated before its status
//! lands meets AlreadyExists instead of starting a second run), and the heads seen written to
//! the Pipeline's status by server-side apply.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use capstan_crds::modeldeployment::ModelDeployment;
use capstan_crds::pipeline::{
    self as pl, CommitInfo, ModelVersionRef, Pipeline, PipelineRun, PipelineRunSpec, PipelineRunStatus, PipelineSpec,
    PipelineStatus, PollStatus, TriggerInfo,
};
use capstan_crds::trainingjob::{JobPhase, TrainingJob};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::{Context, FIELD_MANAGER};
use crate::pipeline_plan::{self, Action, JobObs, Observations, Outcome};
use crate::Error;

/// Label on a step's TrainingJob: its PipelineRun.
pub const LABEL_RUN: &str = "capstan.dev/pipeline-run";
/// Label on a step's TrainingJob: its step.
pub const LABEL_STEP: &str = "capstan.dev/pipeline-step";

/// Reconcile every unfinished PipelineRun.
pub async fn reconcile_all(ctx: &Context) -> Result<(), Error> {
    for run in ctx.pipeline_runs.state() {
        if run.meta().deletion_timestamp.is_some() {
            continue;
        }
        if run.status.as_ref().is_some_and(|s| s.phase.is_finished()) {
            continue;
        }
        if let Err(e) = reconcile(ctx, &run).await {
            tracing::warn!(run = %run.name_any(), error = %e, "pipeline run pass failed; retrying next pass");
        }
    }
    Ok(())
}

async fn observe(ctx: &Context, job: Option<&TrainingJob>) -> JobObs {
    let Some(job) = job else { return JobObs::Missing };
    let status = job.status.clone().unwrap_or_default();
    match status.phase {
        JobPhase::Succeeded => {
            let mut metrics = BTreeMap::new();
            if let (Some(run), Some(t)) = (&status.tracking_run_id, &ctx.tracking) {
                if let Ok(m) = t.latest_metrics(run).await {
                    metrics = m;
                }
            }
            JobObs::Succeeded { run_id: status.tracking_run_id, metrics }
        }
        JobPhase::Failed => JobObs::Failed {
            run_id: status.tracking_run_id,
            message: status.message.unwrap_or_else(|| "the job failed".into()),
        },
        _ => JobObs::Running,
    }
}

fn owner(run: &PipelineRun) -> OwnerReference {
    OwnerReference {
        api_version: capstan_crds::API_VERSION.into(),
        kind: "PipelineRun".into(),
        name: run.name_any(),
        uid: run.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(ctx: &Context, run: &PipelineRun) -> Result<(), Error> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let status = run.status.clone().unwrap_or_default();
    let pipeline = ctx
        .pipelines
        .state()
        .into_iter()
        .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == run.spec.pipeline_ref);
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pipeline) = pipeline else {
        let mut st = status;
        st.phase = capstan_crds::pipeline::RunPhase::Failed;
        st.message = Some(format!("pipeline {ns}/{} not found", run.spec.pipeline_ref));
        return write_status(&runs, &name, &st).await;
    };
    let jobs: HashMap<String, std::sync::Arc<TrainingJob>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .map(|j| (j.name_any(), j))
        .collect();
    let mut obs = Observations { jobs: HashMap::new(), now: chrono::Utc::now().timestamp() };
    for st in &status.steps {
        if let Some(job) = &st.job_name {
            obs.jobs.insert(job.clone(), observe(ctx, jobs.get(job).map(|j| j.as_ref())).await);
        }
    }
    let mut plan = pipeline_plan::plan(&pipeline.name_any(), &pipeline.spec, &name, &run.spec, &status, &obs);
    if status.pipeline_generation.is_none() {
        plan.status.pipeline_generation = pipeline.meta().generation;
    }
    let tj: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    // A failed create or delete is retried next pass, but what the other actions did (a
    // version registered) is written down first, so it is never done twice.
    let mut failure: Option<kube::Error> = None;
    for action in plan.actions {
        match action {
            Action::CreateJob { step, name: job, spec } => {
                let mut labels = BTreeMap::new();
                labels.insert("capstan.dev/pipeline".to_string(), pipeline.name_any());
                labels.insert(LABEL_RUN.to_string(), name.clone());
                labels.insert(LABEL_STEP.to_string(), step.clone());
                let obj = TrainingJob {
                    metadata: ObjectMeta {
                        name: Some(job.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        annotations: run.metadata.annotations.clone(),
                        owner_references: Some(vec![owner(run)]),
                        ..Default::default()
                    },
                    spec: *spec,
                    status: None,
                };
                if let Err(e) = super::ignore_status(tj.create(&PostParams::default(), &obj).await.map(|_| ()), 409) {
                    failure.get_or_insert(e);
                }
            }
            Action::DeleteJob { name: job, .. } => {
                if let Err(e) =
                    super::ignore_status(tj.delete(&job, &DeleteParams::background()).await.map(|_| ()), 404)
                {
                    failure.get_or_insert(e);
                }
            }
            Action::Register { step, model, run_id, artifact_path, alias } => {
                let outcome = match &ctx.tracking {
                    Some(t) => match t
                        .register(
                            &model,
                            &run_id,
                            &artifact_path,
                            alias.as_deref(),
                            &crate::pipelines::version_tags(&run.spec, &ns, &name),
                        )
                        .await
                    {
                        Ok(version) => Outcome::Registered(ModelVersionRef {
                            name: model.clone(),
                            version,
                            source: format!("runs:/{run_id}/{artifact_path}"),
                        }),
                        Err(e) => Outcome::Failed { reason: "RegisterFailed".into(), message: e.to_string() },
                    },
                    None => Outcome::Failed {
                        reason: "NoTrackingServer".into(),
                        message: "the controller runs without --tracking-server: nowhere to register".into(),
                    },
                };
                pipeline_plan::complete(&pipeline.spec, &mut plan.status, &step, outcome, obs.now);
            }
            Action::Deploy { step, deployment, version, alias } => {
                let outcome = match deploy(ctx, &ns, &deployment, version.as_ref(), alias.as_deref()).await {
                    Ok(()) => Outcome::Deployed { deployment },
                    Err((reason, message)) => Outcome::Failed { reason, message },
                };
                pipeline_plan::complete(&pipeline.spec, &mut plan.status, &step, outcome, obs.now);
            }
        }
    }
    if run.status.as_ref() != Some(&plan.status) {
        write_status(&runs, &name, &plan.status).await?;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The merge patch that points a ModelDeployment's `spec.model` at a version or an alias:
/// keys the new model drops are set to null (a JSON merge patch removes only those).
pub fn model_patch(
    current: &serde_json::Value,
    version: Option<&ModelVersionRef>,
    alias: Option<&str>,
) -> serde_json::Value {
    let mut model = current.as_object().cloned().unwrap_or_default();
    crate::pipelines::point_model(&mut model, version, alias);
    let mut patch = serde_json::Map::new();
    if let Some(old) = current.as_object() {
        for k in old.keys().filter(|k| !model.contains_key(*k)) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    patch.extend(model);
    json!({"spec": {"model": patch}})
}

async fn deploy(
    ctx: &Context,
    ns: &str,
    name: &str,
    version: Option<&ModelVersionRef>,
    alias: Option<&str>,
) -> Result<(), (String, String)> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), ns);
    let md = match api.get_opt(name).await {
        Ok(Some(md)) => md,
        Ok(None) => return Err(("DeploymentNotFound".into(), format!("ModelDeployment {ns}/{name} not found"))),
        Err(e) => return Err(("DeployFailed".into(), e.to_string())),
    };
    let current = serde_json::to_value(&md.spec.model).map_err(|e| ("DeployFailed".to_string(), e.to_string()))?;
    let patch = model_patch(&current, version, alias);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ("DeployFailed".to_string(), e.to_string()))?;
    Ok(())
}

async fn write_status(api: &Api<PipelineRun>, name: &str, status: &PipelineRunStatus) -> Result<(), Error> {
    let patch = json!({"apiVersion": capstan_crds::API_VERSION, "kind": "PipelineRun", "status": status});
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Poll triggers
// ---------------------------------------------------------------------------------------

/// The poll triggers of `spec` due at `now` (seconds): (index in `spec.triggers`, index of
/// its entry in `status.polls` if it has one). Due: never polled, or polled at least
/// `pollIntervalSeconds` ago.
pub fn due_polls(spec: &PipelineSpec, status: &PipelineStatus, now: i64) -> Vec<(usize, Option<usize>)> {
    let mut out = Vec::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        let Some(interval) = t.git.poll_interval_seconds else { continue };
        let idx = status.polls.iter().position(|p| p.trigger == i as u32 && p.repo == t.git.repo);
        let last = idx
            .and_then(|x| status.polls[x].last_poll_time.as_deref())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()));
        if last.is_some_and(|l| now - l < i64::from(interval)) {
            continue;
        }
        out.push((i, idx));
    }
    out
}

/// The name of the run a poll starts for `sha` on `branch`: `<pipeline>-<sha7>-<10 hex of
/// FNV-1a(branch, sha)>`, the same every time, so polling a commit twice starts one run.
pub fn poll_run_name(pipeline: &str, branch: &str, sha: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "poll".bytes().chain([0]).chain(branch.bytes()).chain([0]).chain(sha.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    pl::run_name(pipeline, sha, &format!("{:016x}", h)[..10])
}

/// The spec of the run a poll starts.
pub fn poll_run_spec(
    pipeline: &str,
    repo: &str,
    branch: &str,
    sha: &str,
    author: String,
    message: String,
) -> PipelineRunSpec {
    PipelineRunSpec {
        pipeline_ref: pipeline.to_string(),
        parameters: Default::default(),
        commit: Some(CommitInfo {
            sha: sha.to_string(),
            branch: branch.to_string(),
            author,
            message,
            repo: repo.to_string(),
            url: String::new(),
        }),
        trigger: Some(TriggerInfo { source: "poll".into(), ..Default::default() }),
    }
}

/// Poll the due triggers of every Pipeline, about every second, until `shutdown` turns true.
/// Runs beside the passes (started by [`super::run`], so only on the leader): a slow
/// repository never holds up reconciliation.
pub async fn poll(ctx: Context, mut shutdown: watch::Receiver<bool>) {
    // The status this task last wrote, by uid, with the resourceVersion it produced: the cache
    // may not have caught up yet.
    let mut written: HashMap<String, (u64, PipelineStatus)> = HashMap::new();
    loop {
        let pipelines = ctx.pipelines.state();
        written.retain(|uid, _| pipelines.iter().any(|p| p.uid().as_deref() == Some(uid.as_str())));
        for p in pipelines {
            if p.meta().deletion_timestamp.is_some() {
                continue;
            }
            if let Err(e) = poll_pipeline(&ctx, &p, &mut written).await {
                tracing::warn!(pipeline = %p.name_any(), error = %e, "pipeline poll failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            r = shutdown.changed() => { if r.is_err() || *shutdown.borrow() { return; } }
        }
    }
}

async fn poll_pipeline(
    ctx: &Context,
    p: &Pipeline,
    written: &mut HashMap<String, (u64, PipelineStatus)>,
) -> Result<(), Error> {
    let now = chrono::Utc::now().timestamp();
    let uid = p.uid().unwrap_or_default();
    let status = match written.get(&uid) {
        Some((v, st)) if *v > super::rv(p) => st.clone(),
        _ => p.status.clone().unwrap_or_default(),
    };
    let due = due_polls(&p.spec, &status, now);
    if due.is_empty() {
        return Ok(());
    }
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut next = status.clone();
    for (i, idx) in due {
        let t = &p.spec.triggers[i].git;
        let mut entry = idx.map(|x| status.polls[x].clone()).unwrap_or(PollStatus {
            trigger: i as u32,
            repo: t.repo.clone(),
            ..Default::default()
        });
        entry.last_poll_time = Some(pipeline_plan::rfc3339(now));
        match crate::pipelines::git(&["ls-remote", "--heads", &t.repo]).await {
            Err(e) => entry.error = Some(e),
            Ok(out) => {
                let heads = crate::pipelines::parse_ls_remote(&out);
                let before = idx.map(|_| entry.heads.clone());
                let mut failed = None;
                for (branch, sha) in crate::pipelines::new_heads(t, before.as_ref(), &heads) {
                    let (author, message) =
                        crate::pipelines::local_commit_info(&t.repo, &sha).await.unwrap_or_default();
                    let spec = poll_run_spec(&name, &t.repo, &branch, &sha, author, message);
                    if let Err(e) = pl::effective_parameters(&p.spec, &spec) {
                        tracing::warn!(pipeline = %name, error = %e, "poll trigger cannot start a run");
                        continue;
                    }
                    let run_name = poll_run_name(&name, &branch, &sha);
                    let mut labels = BTreeMap::new();
                    labels.insert("capstan.dev/pipeline".to_string(), name.clone());
                    labels.insert("capstan.dev/trigger".to_string(), "poll".to_string());
                    let obj = PipelineRun {
                        metadata: ObjectMeta {
                            name: Some(run_name.clone()),
                            namespace: Some(ns.clone()),
                            labels: Some(labels),
                            ..Default::default()
                        },
                        spec,
                        status: None,
                    };
                    match super::ignore_status(runs.create(&PostParams::default(), &obj).await.map(|_| ()), 409) {
                        Ok(()) => {
                            tracing::info!(pipeline = %name, %branch, %sha, run = %run_name, "poll trigger started a run")
                        }
                        Err(e) => {
                            failed.get_or_insert(format!("creating PipelineRun {run_name}: {e}"));
                        }
                    }
                }
                // A run that could not be created is tried again next poll: keep the old heads.
                match failed {
                    Some(e) => entry.error = Some(e),
                    None => {
                        entry.heads = heads;
                        entry.error = None;
                    }
                }
            }
        }
        match idx {
            Some(x) => next.polls[x] = entry,
            None => next.polls.push(entry),
        }
    }
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"apiVersion": capstan_crds::API_VERSION, "kind": "Pipeline", "status": next});
    let out = api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    written.insert(uid, (super::rv(&out), next));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_runs_are_named_by_branch_and_commit() {
        let a = "a".repeat(40);
        let n = poll_run_name("iris", "main", &a);
        assert_eq!(n, poll_run_name("iris", "main", &a), "the same commit gives the same name");
        assert!(n.starts_with("iris-aaaaaaa-") && n.len() == "iris-aaaaaaa-".len() + 10, "{n}");
        assert_ne!(n, poll_run_name("iris", "dev", &a));
        assert_ne!(n, poll_run_name("iris", "main", &"b".repeat(40)));
        assert!(poll_run_name(&"p".repeat(80), "main", &a).len() <= 63);
    }

    #[test]
    fn due_polls_follow_the_interval() {
        use capstan_crds::pipeline::{GitTrigger, Trigger};
        let t = |interval: Option<u32>| Trigger {
            git: GitTrigger { repo: "/r.git".into(), poll_interval_seconds: interval, ..Default::default() },
        };
        let spec = PipelineSpec { triggers: vec![t(None), t(Some(60))], ..Default::default() };
        let mut status = PipelineStatus::default();
        assert_eq!(due_polls(&spec, &status, 1_000), [(1, None)], "never polled: due, webhook-only never");
        status.polls.push(PollStatus {
            trigger: 1,
            repo: "/r.git".into(),
            last_poll_time: Some(pipeline_plan::rfc3339(1_000)),
            ..Default::default()
        });
        assert!(due_polls(&spec, &status, 1_059).is_empty());
        assert_eq!(due_polls(&spec, &status, 1_060), [(1, Some(0))]);
    }

    #[test]
    fn pointing_a_uri_deployment_at_a_version_removes_the_uri() {
        let v = ModelVersionRef { name: "iris".into(), version: 3, source: "runs:/r/model".into() };
        let p = model_patch(&json!({"uri": "s3://b/m.onnx"}), Some(&v), None);
        assert_eq!(p, json!({"spec": {"model": {"uri": null, "registeredModel": "iris", "version": 3}}}));
        let p = model_patch(&json!({"registeredModel": "iris", "version": 2}), None, Some("champion"));
        assert_eq!(p, json!({"spec": {"model": {"version": null, "registeredModel": "iris", "alias": "champion"}}}));
    }
}
