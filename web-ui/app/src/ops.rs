//! What the deployments and pipelines pages show, and the server functions (under `/ui/fn/`)
//! that read the ModelDeployment, Pipeline and PipelineRun objects for them (from the store,
//! or on a cluster through `crate::cluster`, feature `ssr`).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::api::EventRow;
use crate::lineage::Serving;

/// A ModelDeployment in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRow {
    /// Namespace.
    pub namespace: String,
    /// Name (the `/v2/models/{name}` of its endpoint).
    pub name: String,
    /// The stable model in words (`iris v2`, `iris@champion`, a URI).
    pub model: String,
    /// The registered model, when it is one.
    pub registered_model: Option<String>,
    /// Pending, Ready, Canary, Degraded, Failed.
    pub phase: String,
    /// The stable version now.
    pub stable_version: Option<String>,
    /// The canary: version, share (percent), phase.
    pub canary: Option<(String, u64, String)>,
    /// Ready replicas over every version.
    pub ready_replicas: u64,
    /// `(version, percent)` of the traffic split.
    pub traffic: Vec<(String, u64)>,
    /// Endpoint URL.
    pub url: String,
    /// RFC 3339.
    pub created: String,
    /// Requests through the server's proxy in the last 10 minutes ([`crate::traffic`]).
    pub requests_recent: u64,
}

/// One served version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentVersion {
    /// The version (or a URI).
    pub version: String,
    /// Stable or Canary.
    pub role: String,
    /// Pending, Ready or Failed.
    pub state: String,
    /// Replicas wanted.
    pub replicas: u64,
    /// Replicas ready.
    pub ready_replicas: u64,
    /// Share of requests (percent).
    pub traffic_percent: u64,
    /// Replica addresses.
    pub endpoints: Vec<String>,
    /// Why it is in its state.
    pub message: String,
    /// The pipeline run that registered this version (namespace, name).
    pub pipeline_run: Option<(String, String)>,
}

/// The canary's observation and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryView {
    /// The canary's version.
    pub version: String,
    /// Starting, Progressing, Promoted, RolledBack.
    pub phase: String,
    /// Share it receives now (percent).
    pub traffic_percent: u64,
    /// Wait, Promote or Rollback.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// Canary requests in the window, failed ones, p99 (ms).
    pub canary: (u64, u64, Option<f64>),
    /// Stable requests in the window, failed ones, p99 (ms).
    pub stable: (u64, u64, Option<f64>),
    /// RFC 3339.
    pub started_at: String,
    /// The thresholds from the spec, in words.
    pub policy: String,
}

/// A deployment's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDetail {
    /// The row.
    pub row: DeploymentRow,
    /// Runtime in words.
    pub runtime: String,
    /// Replica bounds and autoscaling in words.
    pub scaling: String,
    /// Versions served.
    pub versions: Vec<DeploymentVersion>,
    /// The canary, if any.
    pub canary: Option<CanaryView>,
    /// (type, status, reason, message).
    pub conditions: Vec<(String, String, String, String)>,
    /// Events.
    pub events: Vec<EventRow>,
}

/// A Pipeline in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Triggers in words.
    pub triggers: Vec<String>,
    /// Steps.
    pub steps: usize,
    /// Runs.
    pub runs: usize,
    /// Latest run: name and phase.
    pub last_run: Option<(String, String)>,
}

/// A step of a pipeline's DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpecRow {
    /// Name.
    pub name: String,
    /// train, evaluate, register, deploy, container.
    pub kind: String,
    /// What it does, in words.
    pub detail: String,
    /// Steps it waits for.
    pub depends_on: Vec<String>,
    /// Its gate.
    pub when: Option<String>,
}

/// A PipelineRun in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRunRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pipeline.
    pub pipeline: String,
    /// Pending, Running, Succeeded, Failed.
    pub phase: String,
    /// Commit SHA (empty for a manual run without one).
    pub sha: String,
    /// Branch.
    pub branch: String,
    /// Author.
    pub author: String,
    /// Commit message.
    pub message: String,
    /// webhook, poll or manual (with the provider).
    pub trigger: String,
    /// RFC 3339.
    pub created: String,
    /// Why it is in its phase.
    pub status_message: String,
}

/// A pipeline's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDetail {
    /// The row.
    pub row: PipelineRow,
    /// (name, default, description).
    pub parameters: Vec<(String, Option<String>, String)>,
    /// The DAG, in the pipeline's order.
    pub steps: Vec<StepSpecRow>,
    /// What poll triggers last saw, in words.
    pub polls: Vec<String>,
    /// Its runs, newest first.
    pub runs: Vec<PipelineRunRow>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRunRow {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Steps it waits for.
    pub depends_on: Vec<String>,
    /// Its gate.
    pub when: Option<String>,
    /// Pending, Running, Retrying, Succeeded, Failed, Skipped.
    pub phase: String,
    /// Attempts.
    pub attempts: u64,
    /// The TrainingJob of a job step.
    pub job_name: Option<String>,
    /// Its tracking run.
    pub run_id: Option<String>,
    /// The model version a register step made.
    pub model_version: Option<(String, i64)>,
    /// The alias it moved.
    pub alias: Option<String>,
    /// The ModelDeployment a deploy step updated.
    pub deployment: Option<String>,
    /// Reason (WhenFalse, DependencySkipped, ...).
    pub reason: String,
    /// Why, in words (a skipped step's `when` and the values it saw).
    pub message: String,
    /// Latest metrics of its run.
    pub metrics: Vec<(String, f64)>,
    /// RFC 3339.
    pub start_time: String,
    /// RFC 3339.
    pub completion_time: String,
}

/// A pipeline run's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRunDetail {
    /// The row.
    pub row: PipelineRunRow,
    /// Repository and commit web URL.
    pub repo: String,
    /// Web URL of the commit.
    pub commit_url: String,
    /// Parameters used.
    pub parameters: Vec<(String, String)>,
    /// Steps, in the pipeline's order.
    pub steps: Vec<StepRunRow>,
    /// (type, status, reason, message).
    pub conditions: Vec<(String, String, String, String)>,
    /// Events.
    pub events: Vec<EventRow>,
    /// RFC 3339.
    pub start_time: String,
    /// RFC 3339.
    pub completion_time: String,
    /// Deployments updated by its deploy steps that still exist: (step, namespace, name).
    pub deployments_found: Vec<String>,
}

/// A registered model version's lineage: the pipeline run that made it and the deployments
/// serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VersionLineage {
    /// The pipeline run (namespace, name).
    pub pipeline_run: Option<(String, String)>,
    /// Deployments whose status lists the version.
    pub deployments: Vec<Serving>,
}

#[cfg(feature = "ssr")]
mod imp {
    use super::*;
    use crate::lineage::{self, describe_model_ref, describe_step, describe_trigger, DeploymentRef, RunRef};
    use capstan_store::StoredResource;
    use serde_json::Value as V;

    pub(super) fn st() -> Result<crate::server::UiState, ServerFnError> {
        use_context::<crate::server::UiState>()
            .ok_or_else(|| ServerFnError::new("the UI state is missing (server misconfigured)"))
    }

    pub(super) fn reject(status: u16, message: impl Into<String>) -> ServerFnError {
        if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
            r.set_status(axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST));
        }
        ServerFnError::new(message.into())
    }

    fn s(v: &V, k: &str) -> String {
        v.get(k).and_then(V::as_str).unwrap_or_default().to_string()
    }
    fn u(v: &V, k: &str) -> u64 {
        v.get(k).and_then(V::as_u64).unwrap_or(0)
    }
    fn strings(v: Option<&V>) -> Vec<String> {
        v.and_then(V::as_array)
            .map(|a| a.iter().filter_map(V::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    }

    pub(super) fn conditions(status: &V) -> Vec<(String, String, String, String)> {
        status
            .get("conditions")
            .and_then(V::as_array)
            .map(|a| a.iter().map(|c| (s(c, "type"), s(c, "status"), s(c, "reason"), s(c, "message"))).collect())
            .unwrap_or_default()
    }

    fn read_err(e: crate::cluster::ReadError) -> ServerFnError {
        reject(e.status(), e.to_string())
    }

    /// Every object of `kind` (in `namespace`, or all), from the cluster of the request or
    /// the store ([`crate::cluster::Resources`]).
    pub(super) async fn list(kind: &str, namespace: Option<&str>) -> Result<Vec<StoredResource>, ServerFnError> {
        let st = st()?;
        let view = crate::cluster::cluster_of_request();
        crate::cluster::Resources::of(&st.store, view.as_ref()).list(kind, namespace).await.map_err(read_err)
    }

    /// One object, from the cluster of the request or the store.
    pub(super) async fn get(kind: &str, namespace: &str, name: &str) -> Result<Option<StoredResource>, ServerFnError> {
        let st = st()?;
        let view = crate::cluster::cluster_of_request();
        crate::cluster::Resources::of(&st.store, view.as_ref()).get(kind, namespace, name).await.map_err(read_err)
    }

    pub(super) async fn events(object: &StoredResource) -> Result<Vec<EventRow>, ServerFnError> {
        let st = st()?;
        let view = crate::cluster::cluster_of_request();
        Ok(crate::cluster::Resources::of(&st.store, view.as_ref())
            .events(object)
            .await
            .map_err(read_err)?
            .into_iter()
            .map(|e| EventRow {
                type_: e.type_,
                reason: e.reason,
                message: e.message,
                count: e.count,
                last: e.last_timestamp,
            })
            .collect())
    }

    pub(super) fn deployment_row(r: &StoredResource) -> DeploymentRow {
        let st = &r.status;
        let canary = st
            .get("canary")
            .filter(|c| c.is_object())
            .map(|c| (s(c, "version"), u(c, "trafficPercent"), s(c, "phase")));
        let traffic = st
            .get("traffic")
            .and_then(V::as_array)
            .map(|a| a.iter().map(|t| (s(t, "version"), u(t, "percent"))).collect())
            .unwrap_or_default();
        DeploymentRow {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            model: r.spec.get("model").map(describe_model_ref).unwrap_or_default(),
            registered_model: lineage::deployment_model(&r.spec),
            phase: st.get("phase").and_then(V::as_str).unwrap_or("Pending").to_string(),
            stable_version: st.get("stableVersion").and_then(V::as_str).map(str::to_string),
            canary,
            ready_replicas: u(st, "readyReplicas"),
            traffic,
            url: s(st, "url"),
            created: r.creation_timestamp.clone(),
            requests_recent: crate::traffic::series(&r.name, 600, 1).versions.iter().map(|v| v.total).sum(),
        }
    }

    pub(super) fn run_row(r: &StoredResource) -> PipelineRunRow {
        let c = r.spec.get("commit").cloned().unwrap_or_default();
        let t = r.spec.get("trigger").cloned().unwrap_or_default();
        let trigger = match (s(&t, "source"), s(&t, "provider")) {
            (src, p) if !p.is_empty() => format!("{src} ({p})"),
            (src, _) if !src.is_empty() => src,
            _ => "manual".into(),
        };
        PipelineRunRow {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            pipeline: s(&r.spec, "pipelineRef"),
            phase: r.status.get("phase").and_then(V::as_str).unwrap_or("Pending").to_string(),
            sha: s(&c, "sha"),
            branch: s(&c, "branch"),
            author: s(&c, "author"),
            message: s(&c, "message"),
            trigger,
            created: r.creation_timestamp.clone(),
            status_message: s(&r.status, "message"),
        }
    }

    pub(super) fn newest_first(runs: &mut [StoredResource]) {
        runs.sort_by(|a, b| b.creation_timestamp.cmp(&a.creation_timestamp).then_with(|| b.name.cmp(&a.name)));
    }

    pub(super) fn pipeline_row(p: &StoredResource, runs: &[StoredResource]) -> PipelineRow {
        let mine: Vec<&StoredResource> =
            runs.iter().filter(|r| r.namespace == p.namespace && s(&r.spec, "pipelineRef") == p.name).collect();
        PipelineRow {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            triggers: p
                .spec
                .get("triggers")
                .and_then(V::as_array)
                .map(|a| a.iter().map(describe_trigger).collect())
                .unwrap_or_default(),
            steps: p.spec.get("steps").and_then(V::as_array).map(Vec::len).unwrap_or(0),
            runs: mine.len(),
            last_run: mine
                .first()
                .map(|r| (r.name.clone(), r.status.get("phase").and_then(V::as_str).unwrap_or("Pending").to_string())),
        }
    }

    pub(super) fn step_specs(spec: &V) -> Vec<StepSpecRow> {
        spec.get("steps")
            .and_then(V::as_array)
            .map(|a| {
                a.iter()
                    .map(|step| {
                        let (kind, detail) = describe_step(step);
                        StepSpecRow {
                            name: s(step, "name"),
                            kind,
                            detail,
                            depends_on: strings(step.get("dependsOn")),
                            when: step.get("when").and_then(V::as_str).map(str::to_string),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn step_runs(status: &V, specs: &[StepSpecRow]) -> Vec<StepRunRow> {
        let mut out: Vec<StepRunRow> = status
            .get("steps")
            .and_then(V::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| {
                        let name = s(x, "name");
                        let spec = specs.iter().find(|p| p.name == name);
                        StepRunRow {
                            kind: spec.map(|p| p.kind.clone()).unwrap_or_default(),
                            depends_on: spec.map(|p| p.depends_on.clone()).unwrap_or_default(),
                            when: spec.and_then(|p| p.when.clone()),
                            phase: x.get("phase").and_then(V::as_str).unwrap_or("Pending").to_string(),
                            attempts: u(x, "attempts"),
                            job_name: x.get("jobName").and_then(V::as_str).map(str::to_string),
                            run_id: x.get("runId").and_then(V::as_str).map(str::to_string),
                            model_version: x.get("modelVersion").and_then(|m| {
                                Some((m.get("name")?.as_str()?.to_string(), m.get("version")?.as_i64()?))
                            }),
                            alias: x.get("alias").and_then(V::as_str).map(str::to_string),
                            deployment: x.get("deployment").and_then(V::as_str).map(str::to_string),
                            reason: s(x, "reason"),
                            message: s(x, "message"),
                            metrics: x
                                .get("metrics")
                                .and_then(V::as_object)
                                .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                                .unwrap_or_default(),
                            start_time: s(x, "startTime"),
                            completion_time: s(x, "completionTime"),
                            name,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Steps the status does not list yet (a run that has not started) still show.
        for p in specs {
            if !out.iter().any(|x| x.name == p.name) {
                out.push(StepRunRow {
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                    depends_on: p.depends_on.clone(),
                    when: p.when.clone(),
                    phase: "Pending".into(),
                    attempts: 0,
                    job_name: None,
                    run_id: None,
                    model_version: None,
                    alias: None,
                    deployment: None,
                    reason: String::new(),
                    message: String::new(),
                    metrics: vec![],
                    start_time: String::new(),
                    completion_time: String::new(),
                });
            }
        }
        out
    }

    pub(super) fn policy(spec: &V) -> String {
        let Some(c) = spec.get("canary") else { return String::new() };
        let f = |k: &str| c.get(k).and_then(V::as_f64);
        format!(
            "{}% for {} s; max error rate {:.1}%, max p99 ratio {}{}, at least {} requests",
            u(c, "canaryPercent"),
            c.get("windowSeconds").and_then(V::as_u64).unwrap_or(60),
            f("maxErrorRate").unwrap_or(0.01) * 100.0,
            f("maxP99LatencyRatio").unwrap_or(1.5),
            f("maxP99LatencyMs").map(|m| format!(", max p99 {m} ms")).unwrap_or_default(),
            c.get("minRequests").and_then(V::as_u64).unwrap_or(100),
        )
    }

    pub(super) fn deployment_refs(all: &[StoredResource]) -> Vec<DeploymentRef<'_>> {
        all.iter()
            .map(|d| DeploymentRef { namespace: &d.namespace, name: &d.name, spec: &d.spec, status: &d.status })
            .collect()
    }

    pub(super) fn run_refs(all: &[StoredResource]) -> Vec<RunRef<'_>> {
        all.iter().map(|r| RunRef { namespace: &r.namespace, name: &r.name, status: &r.status }).collect()
    }

    pub(super) fn strings_of(v: Option<&V>) -> Vec<String> {
        strings(v)
    }
}

/// ModelDeployments, by namespace and name.
#[server(prefix = "/ui/fn", endpoint = "deployments")]
pub async fn list_deployments() -> Result<Vec<DeploymentRow>, ServerFnError> {
    let mut rows: Vec<DeploymentRow> =
        imp::list("ModelDeployment", None).await?.iter().map(imp::deployment_row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

/// One ModelDeployment: versions with role, weight and replicas, the canary's verdict,
/// conditions and events.
#[server(prefix = "/ui/fn", endpoint = "deployment")]
pub async fn load_deployment(namespace: String, name: String) -> Result<DeploymentDetail, ServerFnError> {
    use serde_json::Value as V;
    let r = imp::get("ModelDeployment", &namespace, &name)
        .await?
        .ok_or_else(|| imp::reject(404, format!("ModelDeployment {namespace}/{name} does not exist")))?;
    let row = imp::deployment_row(&r);
    let runs = imp::list("PipelineRun", None).await?;
    let made = crate::lineage::produced_versions(&imp::run_refs(&runs));
    let s = |v: &V, k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_string();
    let u = |v: &V, k: &str| v.get(k).and_then(V::as_u64).unwrap_or(0);
    let versions = r
        .status
        .get("versions")
        .and_then(V::as_array)
        .map(|a| {
            a.iter()
                .map(|v| {
                    let version = s(v, "version");
                    let pipeline_run = match (&row.registered_model, version.parse::<i64>()) {
                        (Some(m), Ok(n)) => made.get(&(m.clone(), n)).cloned(),
                        _ => None,
                    };
                    DeploymentVersion {
                        role: s(v, "role"),
                        state: s(v, "state"),
                        replicas: u(v, "replicas"),
                        ready_replicas: u(v, "readyReplicas"),
                        traffic_percent: u(v, "trafficPercent"),
                        endpoints: imp::strings_of(v.get("endpoints")),
                        message: s(v, "message"),
                        pipeline_run,
                        version,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let canary = r.status.get("canary").filter(|c| c.is_object()).map(|c| CanaryView {
        version: s(c, "version"),
        phase: s(c, "phase"),
        traffic_percent: u(c, "trafficPercent"),
        verdict: s(c, "verdict"),
        reason: s(c, "reason"),
        canary: (u(c, "requests"), u(c, "errors"), c.get("p99Ms").and_then(V::as_f64)),
        stable: (u(c, "stableRequests"), u(c, "stableErrors"), c.get("stableP99Ms").and_then(V::as_f64)),
        started_at: s(c, "startedAt"),
        policy: imp::policy(&r.spec),
    });
    let rt = r.spec.get("runtime").cloned().unwrap_or_default();
    let runtime = match rt.get("type").and_then(V::as_str) {
        Some("image") => format!("image {} on port {}", s(&rt, "image"), u(&rt, "port")),
        _ => "builtin (capstan serve, ONNX)".to_string(),
    };
    let min = r.spec.get("minReplicas").and_then(V::as_u64).unwrap_or(1);
    let max = r.spec.get("maxReplicas").and_then(V::as_u64).unwrap_or(min);
    let scaling = match r.spec.get("autoscaling") {
        Some(a) => {
            format!("{min} to {max} replicas per version, target {} {} per replica", u(a, "target"), s(a, "metric"))
        }
        None => format!("{min} to {max} replicas per version"),
    };
    Ok(DeploymentDetail {
        row,
        runtime,
        scaling,
        versions,
        canary,
        conditions: imp::conditions(&r.status),
        events: imp::events(&r).await?,
    })
}

/// Pipelines with their triggers and latest run.
#[server(prefix = "/ui/fn", endpoint = "pipelines")]
pub async fn list_pipelines() -> Result<Vec<PipelineRow>, ServerFnError> {
    let mut runs = imp::list("PipelineRun", None).await?;
    imp::newest_first(&mut runs);
    let mut rows: Vec<PipelineRow> =
        imp::list("Pipeline", None).await?.iter().map(|p| imp::pipeline_row(p, &runs)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

/// One Pipeline: triggers, parameters, the steps' DAG, and its runs.
#[server(prefix = "/ui/fn", endpoint = "pipeline")]
pub async fn load_pipeline(namespace: String, name: String) -> Result<PipelineDetail, ServerFnError> {
    use serde_json::Value as V;
    let p = imp::get("Pipeline", &namespace, &name)
        .await?
        .ok_or_else(|| imp::reject(404, format!("Pipeline {namespace}/{name} does not exist")))?;
    let mut runs = imp::list("PipelineRun", Some(&namespace)).await?;
    imp::newest_first(&mut runs);
    let s = |v: &V, k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_string();
    let parameters = p
        .spec
        .get("parameters")
        .and_then(V::as_array)
        .map(|a| {
            a.iter()
                .map(|x| (s(x, "name"), x.get("default").and_then(V::as_str).map(str::to_string), s(x, "description")))
                .collect()
        })
        .unwrap_or_default();
    let polls = p
        .status
        .get("polls")
        .and_then(V::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    let heads = x
                        .get("heads")
                        .and_then(V::as_object)
                        .map(|o| {
                            o.iter()
                                .map(|(b, sha)| {
                                    format!("{b}={}", sha.as_str().unwrap_or("").chars().take(7).collect::<String>())
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    let err = s(x, "error");
                    format!(
                        "{}: last polled {}{}{}",
                        s(x, "repo"),
                        s(x, "lastPollTime"),
                        if heads.is_empty() { String::new() } else { format!(", heads {heads}") },
                        if err.is_empty() { String::new() } else { format!(", error: {err}") }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PipelineDetail {
        row: imp::pipeline_row(&p, &runs),
        parameters,
        steps: imp::step_specs(&p.spec),
        polls,
        runs: runs.iter().filter(|r| s(&r.spec, "pipelineRef") == name).map(imp::run_row).collect(),
    })
}

/// One PipelineRun: its commit, each step's state, runs, model versions and deployments, and
/// why a gated step was skipped.
#[server(prefix = "/ui/fn", endpoint = "pipelinerun")]
pub async fn load_pipeline_run(namespace: String, name: String) -> Result<PipelineRunDetail, ServerFnError> {
    use serde_json::Value as V;
    let r = imp::get("PipelineRun", &namespace, &name)
        .await?
        .ok_or_else(|| imp::reject(404, format!("PipelineRun {namespace}/{name} does not exist")))?;
    let row = imp::run_row(&r);
    let pipeline = imp::get("Pipeline", &namespace, &row.pipeline).await?;
    let specs = pipeline.as_ref().map(|p| imp::step_specs(&p.spec)).unwrap_or_default();
    let steps = imp::step_runs(&r.status, &specs);
    let mut deployments_found = Vec::new();
    for step in &steps {
        if let Some(d) = &step.deployment {
            if imp::get("ModelDeployment", &namespace, d).await?.is_some() {
                deployments_found.push(d.clone());
            }
        }
    }
    let s = |v: &V, k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_string();
    let c = r.spec.get("commit").cloned().unwrap_or_default();
    let parameters = r
        .status
        .get("parameters")
        .or_else(|| r.spec.get("parameters"))
        .and_then(V::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    Ok(PipelineRunDetail {
        repo: s(&c, "repo"),
        commit_url: s(&c, "url"),
        parameters,
        steps,
        conditions: imp::conditions(&r.status),
        events: imp::events(&r).await?,
        start_time: s(&r.status, "startTime"),
        completion_time: s(&r.status, "completionTime"),
        deployments_found,
        row,
    })
}

/// The lineage of every version of registered model `name`: the pipeline run that made each
/// and the deployments serving it.
#[cfg(feature = "ssr")]
pub async fn model_lineage(name: &str) -> Result<std::collections::BTreeMap<i64, VersionLineage>, ServerFnError> {
    let runs = imp::list("PipelineRun", None).await?;
    let deployments = imp::list("ModelDeployment", None).await?;
    let made = crate::lineage::produced_versions(&imp::run_refs(&runs));
    let serving = crate::lineage::serving_versions(name, &imp::deployment_refs(&deployments));
    let mut out: std::collections::BTreeMap<i64, VersionLineage> = std::collections::BTreeMap::new();
    for ((m, v), run) in made {
        if m == name {
            out.entry(v).or_default().pipeline_run = Some(run);
        }
    }
    for (v, deps) in serving {
        out.entry(v).or_default().deployments = deps;
    }
    Ok(out)
}
