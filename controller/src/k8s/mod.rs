//! The Kubernetes controller (`capstan controller`): TrainingJobs and Queues reconciled into
//! pods and headless Services on a real cluster, with the very decisions `capstan up` makes.
//!
//! Shape: kube-rs reflectors keep caches of TrainingJobs, Queues, Pods, Nodes and
//! PriorityClasses; any change wakes a pass. Gang admission needs the whole cluster at once,
//! so a pass is global, like Kueue's scheduling cycle: build one snapshot
//! ([`objects::sched_node`], [`crate::scheduling::snapshot_of`]), let `capstan_scheduler`
//! decide, then [`reconcile`] each job (concurrently) with `capstan_core`'s lifecycle plan and
//! carry out its actions: create the gang's pods bound to the chosen nodes (`spec.nodeName`:
//! nothing is created before the whole gang is placed), delete pods on stop, publish events,
//! write the status once per pass with server-side apply (field manager
//! [`FIELD_MANAGER`]). [`error_policy`] logs a failed job pass; the next pass retries.
//! A finalizer makes deletion stop every pod before the job goes. Only the holder of the
//! [`leader`] Lease runs passes. A gang with a pod the node agent marked as using an
//! unhealthy GPU is evicted ([`gpu_health`]: `GpuUnhealthy`, not counted against
//! backoffLimit) and placed again on healthy GPUs.

pub mod gpu_health;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod pipelines;
pub mod serving;
pub mod tracking;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_core::lifecycle::{self, Action, EventType, Observed, PassInput, Phase};
use capstan_crds::modeldeployment::ModelDeployment;
use capstan_crds::pipeline::{Pipeline, PipelineRun};
use capstan_crds::queue::Queue;
use capstan_crds::trainingjob::{Rendezvous, ResumePolicy, Runtime, TrainingJob, TrainingJobStatus};
use capstan_store::StoredResource;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KEvent, EventType as KEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::mapping;
use crate::scheduling::{self, JobDecision, JobView};
use crate::Error;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "capstan-controller";
/// How often a waiting job's changing wait reason and queue position are rewritten.
pub const WAITING_REFRESH: Duration = Duration::from_secs(10);

/// Whether two statuses differ only in what a waiting job's wait reason carries (the message,
/// the queue position, the Admitted condition's message): the phase and everything else equal.
pub fn only_wait_details_differ(a: &TrainingJobStatus, b: &TrainingJobStatus) -> bool {
    let strip = |s: &TrainingJobStatus| {
        let mut s = s.clone();
        s.message = None;
        s.queue_position = None;
        for c in &mut s.conditions {
            c.message.clear();
            c.last_transition_time.clear();
        }
        s
    };
    a.phase == b.phase && strip(a) == strip(b)
}

/// Finalizer that makes deletion stop the pods first.
pub const FINALIZER: &str = "capstan.dev/cleanup";

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only this namespace's TrainingJobs (None: every namespace).
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (pod name).
    pub identity: String,
    /// Capstan server for tracking runs (MLflow REST API); None: no runs.
    pub server: Option<String>,
    /// MLFLOW_TRACKING_URI the replicas get (defaults to `server`).
    pub tracking_uri: Option<String>,
    /// API token for the server.
    pub server_token: Option<String>,
    /// Jobs reconciled at once within a pass.
    pub concurrency: usize,
    /// Image holding the `capstan` binary, for ModelDeployments' builtin runtime.
    pub serving_image: String,
}

/// Everything a pass needs.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Cached TrainingJobs.
    pub jobs: Store<TrainingJob>,
    /// Cached Queues.
    pub queues: Store<Queue>,
    /// Cached pods (all namespaces: foreign pods take GPUs too).
    pub pods: Store<Pod>,
    /// Cached Nodes.
    pub nodes: Store<Node>,
    /// Cached PriorityClasses (priorityClassName -> value).
    pub priority_classes: Store<PriorityClass>,
    /// Cached ModelDeployments.
    pub model_deployments: Store<ModelDeployment>,
    /// Cached apps/v1 Deployments of ModelDeployments.
    pub kube_deployments: Store<Deployment>,
    /// How serving pods run.
    pub serving: serving::ServingSettings,
    /// Cached Pipelines.
    pub pipelines: Store<Pipeline>,
    /// Cached PipelineRuns.
    pub pipeline_runs: Store<PipelineRun>,
    /// Publishes events.
    pub recorder: Recorder,
    /// Creates tracking runs.
    pub tracking: Option<tracking::Tracking>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Status this controller last wrote, by uid, with the resourceVersion it produced: the
    /// cache may lag behind our own writes, and a pass must not act on an older status.
    pub written: Arc<Mutex<HashMap<String, (u64, TrainingJobStatus)>>>,
    /// When each waiting job's status was last written: a wait reason that only changes its
    /// numbers ("5 free" → "3 free", the queue position) is rewritten at most every
    /// [`WAITING_REFRESH`], so a thousand waiting jobs do not cost a thousand writes a pass.
    pub waiting_written: Arc<Mutex<HashMap<String, Instant>>>,
    /// Pokes a pass.
    pub wake: Arc<Notify>,
}

fn rv(obj: &impl Resource) -> u64 {
    obj.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An API over one namespace, or every namespace.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Start the reflectors; returns the context once every cache has synced.
pub async fn start(client: Client, settings: Settings, metrics: Arc<metrics::Metrics>) -> Result<Context, Error> {
    let wake = Arc::new(Notify::new());
    macro_rules! reflect {
        ($api:expr, $cfg:expr) => {{
            let (reader, writer) = reflector::store();
            let w = wake.clone();
            let stream = reflector::reflector(
                writer,
                watcher($api, $cfg).default_backoff().modify(|o| {
                    o.managed_fields_mut().clear();
                }),
            )
            .touched_objects();
            tokio::spawn(async move {
                let mut s = std::pin::pin!(stream);
                while let Some(r) = s.next().await {
                    match r {
                        Ok(_) => w.notify_one(),
                        Err(e) => tracing::warn!(error = %e, "watch error; retrying"),
                    }
                }
            });
            reader
        }};
    }
    let jobs = reflect!(scoped::<TrainingJob>(&client, &settings.namespace), watcher::Config::default().any_semantic());
    let queues = reflect!(Api::<Queue>::all(client.clone()), watcher::Config::default().any_semantic());
    let pods = reflect!(Api::<Pod>::all(client.clone()), watcher::Config::default().any_semantic());
    let nodes = reflect!(Api::<Node>::all(client.clone()), watcher::Config::default().any_semantic());
    let priority_classes =
        reflect!(Api::<PriorityClass>::all(client.clone()), watcher::Config::default().any_semantic());
    let model_deployments =
        reflect!(scoped::<ModelDeployment>(&client, &settings.namespace), watcher::Config::default().any_semantic());
    let pipelines =
        reflect!(scoped::<Pipeline>(&client, &settings.namespace), watcher::Config::default().any_semantic());
    let pipeline_runs =
        reflect!(scoped::<PipelineRun>(&client, &settings.namespace), watcher::Config::default().any_semantic());
    let kube_deployments = reflect!(
        scoped::<Deployment>(&client, &settings.namespace),
        watcher::Config::default().labels(serving::LABEL_DEPLOYMENT).any_semantic()
    );
    for (what, ready) in [
        ("trainingjobs", jobs.wait_until_ready().await.is_ok()),
        ("queues", queues.wait_until_ready().await.is_ok()),
        ("pods", pods.wait_until_ready().await.is_ok()),
        ("nodes", nodes.wait_until_ready().await.is_ok()),
        ("priorityclasses", priority_classes.wait_until_ready().await.is_ok()),
        ("modeldeployments", model_deployments.wait_until_ready().await.is_ok()),
        ("deployments", kube_deployments.wait_until_ready().await.is_ok()),
        ("pipelines", pipelines.wait_until_ready().await.is_ok()),
        ("pipelineruns", pipeline_runs.wait_until_ready().await.is_ok()),
    ] {
        if !ready {
            return Err(Error::Cache(what.into()));
        }
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: FIELD_MANAGER.into(), instance: Some(settings.identity.clone()) },
    );
    let tracking = settings.server.as_ref().map(|s| tracking::Tracking::new(s, settings.server_token.clone()));
    let serving = serving::ServingSettings { image: settings.serving_image.clone(), server: settings.server.clone() };
    Ok(Context {
        client,
        settings,
        jobs,
        queues,
        pods,
        nodes,
        priority_classes,
        model_deployments,
        kube_deployments,
        serving,
        pipelines,
        pipeline_runs,
        recorder,
        tracking,
        metrics,
        written: Arc::default(),
        waiting_written: Arc::default(),
        wake,
    })
}

/// Run passes until `shutdown` turns true: whenever a watched object changes (coalesced), and
/// at least every 5 seconds (deadlines, TTLs).
pub async fn run(ctx: Context, mut shutdown: watch::Receiver<bool>) {
    // Poll triggers in their own task: a slow `git ls-remote` never holds up a pass.
    tokio::spawn(pipelines::poll(ctx.clone(), shutdown.clone()));
    loop {
        let t = Instant::now();
        match reconcile_all(&ctx).await {
            Ok(()) => ctx.metrics.pass(t.elapsed(), true),
            Err(e) => {
                ctx.metrics.pass(t.elapsed(), false);
                tracing::warn!(error = %e, "pass failed; retrying");
            }
        }
        tokio::select! {
            _ = ctx.wake.notified() => {
                // Coalesce a burst of watch events into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
    }
}

/// What a failed job pass does: log it and record an event; the next pass retries (passes
/// are idempotent: creates tolerate AlreadyExists, deletes NotFound).
pub async fn error_policy(ctx: &Context, job: &TrainingJob, e: &Error) {
    tracing::warn!(job = %job.name_any(), error = %e, "reconcile failed");
    publish(ctx, job, EventType::Warning, "ReconcileError", &e.to_string()).await;
}

/// The status to act on: ours if the cache has not caught up with our last write.
fn effective_status(ctx: &Context, job: &TrainingJob) -> TrainingJobStatus {
    let uid = job.uid().unwrap_or_default();
    let written = ctx.written.lock().expect("written lock");
    match written.get(&uid) {
        Some((v, st)) if *v > rv(job) => st.clone(),
        _ => job.status.clone().unwrap_or_default(),
    }
}

fn stored_view(job: &TrainingJob, status: &TrainingJobStatus) -> StoredResource {
    StoredResource {
        kind: "TrainingJob".into(),
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        uid: job.uid().unwrap_or_default(),
        generation: job.meta().generation.unwrap_or(0),
        resource_version: rv(job) as i64,
        creation_timestamp: job.meta().creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        deletion_timestamp: job.meta().deletion_timestamp.as_ref().map(|t| t.0.to_string()),
        labels: json!({}),
        annotations: json!({}),
        spec: json!({}),
        status: serde_json::to_value(status).unwrap_or_default(),
    }
}

/// A job's priority: `spec.priority`, else its PriorityClass's value, else the global
/// default class's, else 0.
fn priority_of(classes: &[Arc<PriorityClass>], spec: &capstan_crds::TrainingJobSpec) -> i32 {
    if let Some(p) = spec.priority {
        return p;
    }
    if let Some(name) = &spec.priority_class_name {
        if let Some(c) = classes.iter().find(|c| c.metadata.name.as_deref() == Some(name)) {
            return c.value;
        }
    }
    classes.iter().find(|c| c.global_default == Some(true)).map(|c| c.value).unwrap_or(0)
}

/// One pass over every job.
pub async fn reconcile_all(ctx: &Context) -> Result<(), Error> {
    let now = now();
    let jobs = ctx.jobs.state();
    let statuses: Vec<TrainingJobStatus> = jobs.iter().map(|j| effective_status(ctx, j)).collect();
    let stored: Vec<StoredResource> = jobs.iter().zip(&statuses).map(|(j, s)| stored_view(j, s)).collect();
    let managed: HashSet<String> = stored.iter().map(|s| s.uid.clone()).collect();
    let all_pods = ctx.pods.state();
    let mut pods_by_job: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in &all_pods {
        if let Some(uid) = p.labels().get(objects::LABEL_JOB_UID) {
            if managed.contains(uid) {
                pods_by_job.entry(uid.clone()).or_default().push(p.clone());
            }
        }
    }

    // The snapshot: nodes less what others use, queues, gangs.
    let views: Vec<JobView> = jobs
        .iter()
        .zip(&stored)
        .zip(&statuses)
        .map(|((j, s), st)| JobView { job: s, spec: &j.spec, status: st })
        .collect();
    let mut used: HashMap<String, HashSet<u32>> = HashMap::new();
    for v in views.iter().filter(|v| scheduling::holds(v.status)) {
        for r in &v.status.replica_statuses {
            used.entry(r.node.clone().unwrap_or_default()).or_default().extend(r.gpus.iter().copied());
        }
    }
    let foreign = objects::foreign_use(all_pods.iter().map(|p| p.as_ref()), &managed);
    let nodes: Vec<capstan_scheduler::Node> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            let name = n.name_any();
            objects::sched_node(
                n,
                foreign.get(&name).copied().unwrap_or_default(),
                used.get(&name).unwrap_or(&HashSet::new()),
            )
        })
        .collect();
    let products: HashMap<String, String> = nodes.iter().map(|n| (n.name.clone(), n.product.clone())).collect();
    let queue_objs = ctx.queues.state();
    let queues: Vec<(String, capstan_crds::QueueSpec)> =
        queue_objs.iter().map(|q| (q.name_any(), q.spec.clone())).collect();
    let classes = ctx.priority_classes.state();
    let prio = |s: &capstan_crds::TrainingJobSpec| priority_of(&classes, s);
    let snapshot = scheduling::snapshot_of(nodes, &queues, &views, &prio, now);
    let mut decisions = scheduling::decide(&snapshot);
    // Gangs with a pod the agent marked as using an unhealthy GPU: evicted (GpuUnhealthy).
    let no_pods: Vec<Arc<Pod>> = Vec::new();
    let uids: Vec<String> = jobs.iter().map(|j| j.uid().unwrap_or_default()).collect();
    gpu_health::evict_marked(
        &mut decisions,
        uids.iter()
            .zip(&statuses)
            .map(|(uid, st)| (uid.as_str(), st, pods_by_job.get(uid).map(Vec::as_slice).unwrap_or(no_pods.as_slice()))),
    );
    ctx.metrics.observe_jobs(&statuses);

    // Each job's pass, several at once.
    let work: Vec<_> = jobs
        .iter()
        .zip(statuses)
        .map(|(job, status)| {
            let uid = job.uid().unwrap_or_default();
            let pods = pods_by_job.remove(&uid).unwrap_or_default();
            let decision = decisions.get(&uid).cloned();
            (job.clone(), status, pods, decision)
        })
        .collect();
    futures_util::stream::iter(work)
        .for_each_concurrent(ctx.settings.concurrency.max(1), |(job, status, pods, decision)| async move {
            if let Err(e) = reconcile(ctx, &job, status, &pods, decision, now).await {
                error_policy(ctx, &job, &e).await;
            }
        })
        .await;

    // Queue statuses.
    let product_of = |node: &str| products.get(node).cloned().unwrap_or_default();
    let jobs = ctx.jobs.state();
    let statuses: Vec<TrainingJobStatus> = jobs.iter().map(|j| effective_status(ctx, j)).collect();
    let stored: Vec<StoredResource> = jobs.iter().zip(&statuses).map(|(j, s)| stored_view(j, s)).collect();
    let views: Vec<JobView> = jobs
        .iter()
        .zip(&stored)
        .zip(&statuses)
        .map(|((j, s), st)| JobView { job: s, spec: &j.spec, status: st })
        .collect();
    for q in queue_objs.iter() {
        let previous = q.status.clone().unwrap_or_default();
        let status = scheduling::queue_status_of(&q.name_any(), &product_of, &views, &previous);
        if q.status.as_ref() != Some(&status) {
            let api: Api<Queue> = Api::all(ctx.client.clone());
            let patch = json!({"apiVersion": capstan_crds::API_VERSION, "kind": "Queue", "status": status});
            api.patch_status(&q.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        }
    }
    pipelines::reconcile_all(ctx).await?;
    serving::reconcile_all(ctx).await
}

async fn publish(ctx: &Context, job: &TrainingJob, type_: EventType, reason: &str, message: &str) {
    let ev = KEvent {
        type_: match type_ {
            EventType::Normal => KEventType::Normal,
            EventType::Warning => KEventType::Warning,
        },
        reason: reason.chars().take(128).collect(),
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

pub(crate) fn ignore_status(r: Result<(), kube::Error>, code: u16) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == code => Ok(()),
        other => other,
    }
}

/// One pass for one job.
pub async fn reconcile(
    ctx: &Context,
    job: &TrainingJob,
    mut status: TrainingJobStatus,
    pods: &[Arc<Pod>],
    decision: Option<JobDecision>,
    now: i64,
) -> Result<(), Error> {
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let spec = &job.spec;
    let deleting = job.meta().deletion_timestamp.is_some();
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    // Finalizer first, so deletion always finds the pods.
    let has_finalizer = job.finalizers().iter().any(|f| f == FINALIZER);
    if !deleting && !has_finalizer {
        let mut fins = job.finalizers().to_vec();
        fins.push(FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": fins, "resourceVersion": job.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if deleting && !has_finalizer {
        return Ok(());
    }

    let gspec = mapping::gang_spec(spec);
    let prev = mapping::gang_state(&status);
    let seen: Vec<(Observed, &Arc<Pod>)> = pods.iter().filter_map(|p| objects::observe(p).map(|o| (o, p))).collect();
    let by_key: HashMap<(u32, u32), &Arc<Pod>> = seen.iter().map(|(o, p)| ((o.attempt, o.index), *p)).collect();
    let observed: Vec<Observed> = seen.into_iter().map(|(o, _)| o).collect();
    let (admission, pending_reason, evict) = match decision {
        Some(JobDecision::Admit(slots)) => (Some(slots), None, None),
        Some(JobDecision::Pending { reason, position }) => {
            status.queue_position = Some(position);
            (None, Some(reason), None)
        }
        Some(JobDecision::Evict(e)) => (None, None, Some(e)),
        None => (None, None, None),
    };
    let input =
        PassInput { observed: observed.clone(), admission, pending_reason, evict, deleting, authoritative: false, now };
    let mut plan = lifecycle::plan(&gspec, &prev, &input);

    let starts = plan.actions.iter().any(|a| matches!(a, Action::Start { .. }));
    if starts {
        if spec.runtime == Some(Runtime::Process) || spec.image.is_none() {
            let msg =
                "runtime: process runs only under `capstan up`; on Kubernetes a replica needs an image".to_string();
            plan = lifecycle::fail(&gspec, &plan.state, &observed, "Unsupported", msg.clone(), now);
            publish(ctx, job, EventType::Warning, "Unsupported", &msg).await;
        } else {
            if status.tracking_run_id.is_none() {
                if let Some(t) = &ctx.tracking {
                    match t.create_run(&ns, &name, &uid, spec.experiment.as_deref()).await {
                        Ok(run) => {
                            publish(ctx, job, EventType::Normal, "TrackingRun", &format!("run {run}")).await;
                            status.tracking_run_id = Some(run);
                        }
                        Err(e) => {
                            publish(ctx, job, EventType::Warning, "TrackingRunFailed", &e.to_string()).await;
                        }
                    }
                }
            }
            let port = spec.master_port.unwrap_or(objects::DEFAULT_MASTER_PORT);
            if status.rendezvous.is_none() {
                status.rendezvous =
                    Some(Rendezvous { master_addr: objects::master_addr(&name, &ns), master_port: port });
            }
            let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            let svc = objects::headless_service(&name, &ns, &uid, port);
            ignore_status(svc_api.create(&PostParams::default(), &svc).await.map(|_| ()), 409)?;
        }
    }

    let resume = spec.checkpoint.as_ref().is_some_and(|c| c.resume.unwrap_or_default() == ResumePolicy::Latest);
    let empty = BTreeMap::new();
    let annotations = job.meta().annotations.as_ref().unwrap_or(&empty);
    let mut finished = false;
    for action in plan.actions.clone() {
        match action {
            Action::Start { attempt, indices } => {
                let pods: Vec<Pod> = indices
                    .iter()
                    .map(|&i| {
                        let slot = plan
                            .state
                            .placement
                            .get(i as usize)
                            .cloned()
                            .unwrap_or(capstan_core::Slot { node: String::new(), gpus: vec![] });
                        objects::replica_pod(&objects::PodInput {
                            name: &name,
                            namespace: &ns,
                            uid: &uid,
                            annotations,
                            spec,
                            status: &status,
                            attempt,
                            index: i,
                            slot: &slot,
                            tracking_uri: ctx.settings.tracking_uri.as_deref(),
                            resume: resume && attempt > 1,
                        })
                    })
                    .collect();
                let results: Vec<Result<(), kube::Error>> = futures_util::stream::iter(pods)
                    .map(|p| {
                        let pod_api = pod_api.clone();
                        async move { ignore_status(pod_api.create(&PostParams::default(), &p).await.map(|_| ()), 409) }
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
                let created = results.iter().filter(|r| r.is_ok()).count();
                ctx.metrics.pods_created(created as u64);
                if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                    let msg = format!("creating pods: {e}");
                    plan = lifecycle::fail(&gspec, &plan.state, &observed, "StartFailed", msg.clone(), now);
                    publish(ctx, job, EventType::Warning, "StartFailed", &msg).await;
                    delete_pods(&pod_api, &name, attempt, &indices, 0).await?;
                    break;
                }
            }
            Action::Stop { attempt, indices, grace_seconds } => {
                let present: Vec<u32> = indices.into_iter().filter(|i| by_key.contains_key(&(attempt, *i))).collect();
                delete_pods(&pod_api, &name, attempt, &present, grace_seconds).await?;
            }
            Action::Cleanup { attempt, indices } => {
                let present: Vec<u32> = indices.into_iter().filter(|i| by_key.contains_key(&(attempt, *i))).collect();
                delete_pods(&pod_api, &name, attempt, &present, 0).await?;
            }
            Action::Delete => {
                finished = true;
                if let (Some(run), Some(t)) = (&status.tracking_run_id, &ctx.tracking) {
                    if !prev.phase.is_finished() {
                        let _ = t.finish_run(run, "KILLED").await;
                    }
                }
                if deleting {
                    // Every pod is stopped: let the job go.
                    let fins: Vec<String> = job.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
                    let patch = json!({"metadata": {"finalizers": fins, "resourceVersion": job.resource_version()}});
                    ignore_status(
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()),
                        404,
                    )?;
                } else {
                    // ttlSecondsAfterFinished: delete; the next pass sees the deletion.
                    ignore_status(api.delete(&name, &DeleteParams::background()).await.map(|_| ()), 404)?;
                }
            }
            Action::Event { type_, reason, message } => publish(ctx, job, type_, &reason, &message).await,
        }
    }
    if finished {
        ctx.written.lock().expect("written lock").remove(&uid);
        ctx.waiting_written.lock().expect("waiting lock").remove(&uid);
        return Ok(());
    }

    if plan.state.phase != prev.phase {
        if let (Some(run), Some(t)) = (&status.tracking_run_id, &ctx.tracking) {
            let st = match plan.state.phase {
                Phase::Running => Some("RUNNING"),
                Phase::Succeeded => Some("FINISHED"),
                Phase::Failed => Some("FAILED"),
                _ => None,
            };
            if let Some(st) = st {
                if let Err(e) = t.set_status(run, st, now).await {
                    tracing::warn!(error = %e, "updating the tracking run failed");
                }
            }
        }
    }

    // The status, once.
    let new_status = mapping::next_status(&status, spec, &plan.state, &observed, now);
    let current = effective_status(ctx, job);
    let throttled = new_status != current
        && new_status.phase == capstan_crds::trainingjob::JobPhase::Pending
        && only_wait_details_differ(&new_status, &current)
        && ctx.waiting_written.lock().expect("waiting lock").get(&uid).is_some_and(|t| t.elapsed() < WAITING_REFRESH);
    if new_status != current && !throttled {
        if new_status.phase == capstan_crds::trainingjob::JobPhase::Pending {
            ctx.waiting_written.lock().expect("waiting lock").insert(uid.clone(), Instant::now());
        }
        let patch = json!({"apiVersion": capstan_crds::API_VERSION, "kind": "TrainingJob", "status": new_status});
        match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
            Ok(updated) => {
                ctx.written.lock().expect("written lock").insert(uid, (rv(&updated), new_status));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn delete_pods(api: &Api<Pod>, job: &str, attempt: u32, indices: &[u32], grace: u64) -> Result<(), Error> {
    let results: Vec<Result<(), kube::Error>> = futures_util::stream::iter(indices.iter().copied())
        .map(|i| {
            let api = api.clone();
            let dp = DeleteParams { grace_period_seconds: Some(grace as u32), ..DeleteParams::background() };
            async move { ignore_status(api.delete(&objects::pod_name(job, attempt, i), &dp).await.map(|_| ()), 404) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r)?;
    Ok(())
}

/// Wait until the CRDs are served (a controller started with the chart may come up first).
pub async fn wait_for_crds(client: &Client) -> Result<(), Error> {
    let api: Api<TrainingJob> = Api::all(client.clone());
    let mut last = None;
    for _ in 0..60 {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.map(Error::from).unwrap_or_else(|| Error::Cache("trainingjobs".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_crds::trainingjob::JobPhase;

    #[test]
    fn wait_details_are_told_apart_from_real_changes() {
        let mut a = TrainingJobStatus { phase: JobPhase::Pending, ..Default::default() };
        mapping::set_condition(&mut a.conditions, "Admitted", false, "Waiting", "needs 8 GPUs: 5 free", 1);
        a.message = Some("needs 8 GPUs: 5 free".into());
        a.queue_position = Some(7);
        let mut b = a.clone();
        b.message = Some("needs 8 GPUs: 3 free".into());
        b.queue_position = Some(4);
        b.conditions[0].message = "needs 8 GPUs: 3 free".into();
        assert!(only_wait_details_differ(&a, &b));
        b.phase = JobPhase::Starting;
        assert!(!only_wait_details_differ(&a, &b));
        let mut c = a.clone();
        c.conditions[0].reason = "Preempted".into();
        assert!(!only_wait_details_differ(&a, &c), "a new reason is written at once");
    }
}
