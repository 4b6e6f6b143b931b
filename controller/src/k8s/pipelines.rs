//! PipelineRuns on Kubernetes: the same pure planner as `capstan up`
//! ([`crate::pipeline_plan::plan`]) drives each run; this adapter observes the step
//! TrainingJobs in the cluster (their tracking runs' metrics through the server's MLflow
//! API), creates and deletes them (owned by the PipelineRun), registers model versions and
//! moves aliases through the server's MLflow API, points ModelDeployments at the new version
//! (the serving reconciler rolls them out), and writes the run's status, the audit chain
//! commit -> runs -> model version -> deployment, by server-side apply.
//!
//! Triggers on a cluster: a PipelineRun applied by hand or by any CI (`kubectl apply`);
//! webhooks and polling reach the Capstan server, which under `capstan up` starts runs in its
//! own store (creating PipelineRun objects in the cluster from the server is not built yet).

use std::collections::{BTreeMap, HashMap};

use capstan_crds::modeldeployment::ModelDeployment;
use capstan_crds::pipeline::{ModelVersionRef, PipelineRun, PipelineRunStatus};
use capstan_crds::trainingjob::{JobPhase, TrainingJob};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointing_a_uri_deployment_at_a_version_removes_the_uri() {
        let v = ModelVersionRef { name: "iris".into(), version: 3, source: "runs:/r/model".into() };
        let p = model_patch(&json!({"uri": "s3://b/m.onnx"}), Some(&v), None);
        assert_eq!(p, json!({"spec": {"model": {"uri": null, "registeredModel": "iris", "version": 3}}}));
        let p = model_patch(&json!({"registeredModel": "iris", "version": 2}), None, Some("champion"));
        assert_eq!(p, json!({"spec": {"model": {"version": null, "registeredModel": "iris", "alias": "champion"}}}));
    }
}
