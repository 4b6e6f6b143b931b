//! The standalone controller of `capstan up`: reconciles TrainingJobs in the store into
//! replicas run by the local agent.
//!
//! Shape of kube-rs' controller-rs: [`reconcile`] does one pass for one job and returns an
//! error or a requeue hint, [`error_policy`] decides what a failed pass does; [`run`] drives
//! them on a timer and whenever the server pokes [`Context::wake`]. Decisions come from
//! `capstan_core` (lifecycle and FIFO admission); this module only reads the store and the
//! agent, and carries out the actions. Status is written once per pass.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capstan_agent::{Agent, FoundReplica, Observation, ReplicaHandle, ReplicaSpec};
use capstan_core::env::{self, ReplicaEnvInput};
use capstan_core::lifecycle::{self, Action, EventType, Observed, PassInput, Phase, ReplicaObs};
use capstan_crds::queue::{QueueSpec, QueueStatus};
use capstan_crds::trainingjob::{Launcher, Rendezvous, ResumePolicy, Runtime, TrainingJobSpec, TrainingJobStatus};
use capstan_store::{Store, StoredResource};
use tokio::sync::{watch, Notify};

use crate::mapping;
use crate::scheduling::{self, JobDecision, JobView, LocalNode};
use crate::Error;

/// Kind name of TrainingJobs in the store.
pub const KIND: &str = "TrainingJob";

/// Everything a reconcile pass needs.
#[derive(Clone)]
pub struct Context {
    /// Durable state: jobs, events, tracking runs.
    pub store: Store,
    /// The local agent that runs replicas.
    pub agent: Arc<Agent>,
    /// Root of logs (`logs/<ns>/<job>/<uid>/attempt-<n>/replica-<i>.log`) and job files.
    pub data_dir: PathBuf,
    /// Tracking URI given to replicas (MLFLOW_TRACKING_URI).
    pub tracking_uri: String,
    /// Poke to run a pass now instead of at the next tick.
    pub wake: Arc<Notify>,
    /// Where run artifacts go (replica logs of finished jobs, [`crate::artifacts`]); None: nowhere.
    pub artifacts: Option<capstan_store::artifacts::ArtifactStore>,
}

/// Where a replica's log lives.
pub fn log_path(data_dir: &std::path::Path, ns: &str, name: &str, uid: &str, attempt: u32, index: u32) -> PathBuf {
    data_dir
        .join("logs")
        .join(ns)
        .join(name)
        .join(uid)
        .join(format!("attempt-{attempt}"))
        .join(format!("replica-{index}.log"))
}

/// Run until `shutdown` turns true: a pass every second, or at once when woken.
pub async fn run(ctx: Context, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reconcile_all(&ctx).await {
            error_policy(&e);
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
    }
}

/// What a failed pass does: log it; the next tick retries (passes are idempotent).
pub fn error_policy(e: &Error) {
    tracing::warn!(error = %e, "reconcile pass failed; retrying on the next tick");
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One pass over every job.
pub async fn reconcile_all(ctx: &Context) -> Result<(), Error> {
    // Pipeline runs (their steps' TrainingJobs are made here, so this pass starts them) and
    // poll triggers; a failure there never blocks the jobs.
    if let Err(e) = crate::pipelines::reconcile_all(&ctx.store).await {
        tracing::warn!(error = %e, "pipeline pass failed; retrying on the next tick");
    }
    let jobs = ctx.store.list_resources(KIND, None).await?;
    let found = ctx.agent.list().await?;
    // ModelDeployments run their own replicas (`deployments`); the job pass leaves them be.
    if let Err(e) = crate::deployments::reconcile_all(ctx, &found).await {
        tracing::warn!(error = %e, "model deployment pass failed; retrying on the next tick");
    }
    let found: Vec<FoundReplica> = found.into_iter().filter(|f| !crate::deployments::owns(&f.job_uid)).collect();
    let mut by_job: HashMap<String, Vec<(FoundReplica, ReplicaObs)>> = HashMap::new();
    for f in found {
        let obs = match ctx.agent.observe(&f.handle).await {
            Observation::Running => ReplicaObs::Running,
            Observation::Exited { code, reason } => ReplicaObs::Exited { code, reason },
            Observation::Missing => ReplicaObs::Missing,
        };
        by_job.entry(f.job_uid.clone()).or_default().push((f, obs));
    }

    // Replicas of jobs that no longer exist: stop and remove.
    let known: std::collections::HashSet<&str> = jobs.iter().map(|j| j.uid.as_str()).collect();
    for (uid, reps) in &by_job {
        if !known.contains(uid.as_str()) {
            for (f, _) in reps {
                tracing::info!(job_uid = %uid, index = f.index, "stopping a replica of a job that no longer exists");
                ctx.agent.stop(&f.handle, Duration::from_secs(mapping::DEFAULT_GRACE_SECONDS)).await?;
                ctx.agent.cleanup(&f.handle).await?;
            }
        }
    }

    // Admission, preemption and queue positions: one scheduler pass over the snapshot.
    let mut parsed: Vec<(StoredResource, Option<TrainingJobSpec>, TrainingJobStatus)> = Vec::new();
    for j in jobs {
        let spec = serde_json::from_value::<TrainingJobSpec>(j.spec.clone()).ok();
        let status = serde_json::from_value::<TrainingJobStatus>(j.status.clone()).unwrap_or_default();
        parsed.push((j, spec, status));
    }
    let queues: Vec<(String, QueueSpec)> = ctx
        .store
        .list_resources("Queue", None)
        .await?
        .into_iter()
        .filter_map(|q| serde_json::from_value::<QueueSpec>(q.spec.clone()).ok().map(|s| (q.name, s)))
        .collect();
    let node = local_node(ctx);
    let unhealthy = ctx.agent.unhealthy_gpus();
    // GPUs serving ModelDeployment replicas are not the scheduler's to give (no double booking).
    let serving = crate::deployments::held_gpus(ctx).await?;
    let job_node = LocalNode {
        name: node.name.clone(),
        gpus: node.gpus.iter().filter(|g| !serving.contains(&g.0)).cloned().collect(),
        cpu_millis: node.cpu_millis,
        memory_bytes: node.memory_bytes,
    };
    let decisions = {
        let views: Vec<JobView> = parsed
            .iter()
            .filter_map(|(job, spec, status)| spec.as_ref().map(|spec| JobView { job, spec, status }))
            .collect();
        let mut snapshot = scheduling::snapshot(&job_node, &queues, &views, now());
        crate::health::mark_unhealthy(&mut snapshot, &node.name, &unhealthy);
        let mut decisions = scheduling::decide(&snapshot);
        crate::health::evict_on_unhealthy(&mut decisions, &views, &node.name, &unhealthy);
        decisions
    };

    for (job, spec, status) in parsed {
        let Some(spec) = spec else {
            tracing::error!(job = %job.name, "stored spec does not parse; skipping");
            continue;
        };
        let reps = by_job.remove(&job.uid).unwrap_or_default();
        let decision = decisions.get(&job.uid).cloned();
        if let Err(e) = reconcile(ctx, &job, &spec, status, reps, decision).await {
            tracing::warn!(job = %job.name, error = %e, "reconcile failed");
            let _ = ctx.store.add_event(&job.uid, "Warning", "ReconcileError", &e.to_string()).await;
        }
    }
    write_queue_statuses(ctx, &node).await
}

fn local_node(ctx: &Context) -> LocalNode {
    let gpus = ctx.agent.gpus().iter().map(|g| (g.index, g.product.clone(), g.memory_mib)).collect();
    LocalNode::probe(ctx.agent.node_name().to_string(), gpus)
}

/// Write each Queue's usage, pending and admitted counts (only when they changed).
async fn write_queue_statuses(ctx: &Context, node: &LocalNode) -> Result<(), Error> {
    let jobs = ctx.store.list_resources(KIND, None).await?;
    let parsed: Vec<(StoredResource, TrainingJobSpec, TrainingJobStatus)> = jobs
        .into_iter()
        .filter_map(|j| {
            let spec = serde_json::from_value::<TrainingJobSpec>(j.spec.clone()).ok()?;
            let status = serde_json::from_value::<TrainingJobStatus>(j.status.clone()).unwrap_or_default();
            Some((j, spec, status))
        })
        .collect();
    let views: Vec<JobView> = parsed.iter().map(|(job, spec, status)| JobView { job, spec, status }).collect();
    for q in ctx.store.list_resources("Queue", None).await? {
        let previous = serde_json::from_value::<QueueStatus>(q.status.clone()).unwrap_or_default();
        let status = scheduling::queue_status(&q.name, node, &views, &previous);
        let value = serde_json::to_value(&status)?;
        if value != q.status {
            ctx.store.set_status(&q.uid, &value).await?;
        }
    }
    Ok(())
}

/// One pass for one job.
pub async fn reconcile(
    ctx: &Context,
    job: &StoredResource,
    spec: &TrainingJobSpec,
    mut status: TrainingJobStatus,
    found: Vec<(FoundReplica, ReplicaObs)>,
    decision: Option<JobDecision>,
) -> Result<(), Error> {
    let now = now();
    let gspec = mapping::gang_spec(spec);
    let prev = mapping::gang_state(&status);
    let observed: Vec<Observed> =
        found.iter().map(|(f, o)| Observed { index: f.index, attempt: f.attempt, state: o.clone() }).collect();
    let handles: HashMap<(u32, u32), ReplicaHandle> =
        found.iter().map(|(f, _)| ((f.attempt, f.index), f.handle.clone())).collect();
    let (admission, pending_reason, evict) = match decision {
        Some(JobDecision::Admit(slots)) => (Some(slots), None, None),
        Some(JobDecision::Pending { reason, position }) => {
            status.queue_position = Some(position);
            (None, Some(reason), None)
        }
        Some(JobDecision::Evict(e)) => (None, None, Some(e)),
        None => (None, None, None),
    };
    let input = PassInput {
        observed: observed.clone(),
        admission,
        pending_reason,
        evict,
        deleting: job.deletion_timestamp.is_some(),
        authoritative: true,
        now,
    };
    let mut plan = lifecycle::plan(&gspec, &prev, &input);

    // Side effects of starting: tracking run and rendezvous endpoint, once per job.
    let starts = plan.actions.iter().any(|a| matches!(a, Action::Start { .. }));
    if starts {
        if status.tracking_run_id.is_none() {
            status.tracking_run_id = Some(create_run(ctx, job, spec).await?);
        }
        if status.rendezvous.is_none() {
            let port = match spec.master_port {
                Some(p) => p,
                None => free_port()?,
            };
            status.rendezvous = Some(Rendezvous { master_addr: "127.0.0.1".into(), master_port: port });
        }
    }

    let mut deleted = false;
    for action in plan.actions.clone() {
        match action {
            Action::Start { attempt, indices } => {
                if let Err(e) = start_replicas(ctx, job, spec, &status, &plan.state, attempt, &indices).await {
                    let msg = e.to_string();
                    plan = lifecycle::fail(&gspec, &plan.state, &observed, "StartFailed", msg.clone(), now);
                    ctx.store.add_event(&job.uid, "Warning", "StartFailed", &msg).await?;
                    // Stop what this attempt already started.
                    for (key, h) in &handles {
                        if key.0 == attempt {
                            ctx.agent.stop(h, Duration::from_secs(gspec.grace_seconds)).await?;
                        }
                    }
                    break;
                }
            }
            Action::Stop { attempt, indices, grace_seconds } => {
                for i in indices {
                    if let Some(h) = handles.get(&(attempt, i)) {
                        ctx.agent.stop(h, Duration::from_secs(grace_seconds)).await?;
                    }
                }
            }
            Action::Cleanup { attempt, indices } => {
                for i in indices {
                    if let Some(h) = handles.get(&(attempt, i)) {
                        ctx.agent.cleanup(h).await?;
                    }
                }
            }
            Action::Delete => {
                if let Some(run) = &status.tracking_run_id {
                    if !prev.phase.is_finished() {
                        let _ = ctx.store.update_run(run, Some("KILLED"), Some(now * 1000), None).await;
                    }
                }
                ctx.store.remove_resource(&job.uid).await?;
                deleted = true;
            }
            Action::Event { type_, reason, message } => {
                let t = match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                };
                ctx.store.add_event(&job.uid, t, &reason, &message).await?;
            }
        }
    }
    if deleted {
        return Ok(());
    }

    // Mirror the phase on the tracking run.
    if plan.state.phase != prev.phase {
        if let Some(run) = &status.tracking_run_id {
            let (st, end) = match plan.state.phase {
                Phase::Running => (Some("RUNNING"), None),
                Phase::Succeeded => (Some("FINISHED"), Some(now * 1000)),
                Phase::Failed => (Some("FAILED"), Some(now * 1000)),
                _ => (None, None),
            };
            if st.is_some() {
                ctx.store.update_run(run, st, end, None).await?;
            }
            crate::artifacts::on_phase_change(ctx, job, run, plan.state.phase);
        }
    }

    // Write the status once.
    let new_status = mapping::next_status(&status, spec, &plan.state, &observed, now);
    let new_value = serde_json::to_value(&new_status)?;
    if new_value != job.status {
        ctx.store.set_status(&job.uid, &new_value).await?;
    }
    Ok(())
}

async fn create_run(ctx: &Context, job: &StoredResource, spec: &TrainingJobSpec) -> Result<String, Error> {
    let experiment = spec.experiment.clone().unwrap_or_else(|| job.name.clone());
    let exp_id = ctx.store.get_or_create_experiment(&experiment).await?;
    let tags = vec![
        ("capstan.dev/job-name".to_string(), job.name.clone()),
        ("capstan.dev/namespace".to_string(), job.namespace.clone()),
        ("capstan.dev/job-uid".to_string(), job.uid.clone()),
        ("mlflow.source.name".to_string(), format!("TrainingJob/{}/{}", job.namespace, job.name)),
    ];
    let run = ctx.store.create_run(&exp_id, &job.name, now() * 1000, &tags).await?;
    ctx.store
        .add_event(&job.uid, "Normal", "TrackingRun", &format!("run {} in experiment {experiment}", run.run_id))
        .await?;
    Ok(run.run_id)
}

fn free_port() -> Result<u32, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Io("binding a rendezvous port".into(), e))?;
    Ok(l.local_addr().map_err(|e| Error::Io("reading the rendezvous port".into(), e))?.port() as u32)
}

#[allow(clippy::too_many_arguments)]
async fn start_replicas(
    ctx: &Context,
    job: &StoredResource,
    spec: &TrainingJobSpec,
    status: &TrainingJobStatus,
    state: &lifecycle::GangState,
    attempt: u32,
    indices: &[u32],
) -> Result<(), Error> {
    let rdzv = status.rendezvous.clone().unwrap_or_default();
    let runtime = spec.runtime.unwrap_or(Runtime::Container);
    let gpus_per = spec.gpus_per_replica.unwrap_or(0);
    let nproc = env::nproc(spec.nproc_per_replica, gpus_per);
    let job_dir = ctx.data_dir.join("jobs").join(&job.uid);

    // DeepSpeed and MPI read a hostfile of every replica.
    let hostfile = if matches!(spec.launcher, Launcher::Deepspeed | Launcher::Mpi) {
        let hosts: Vec<String> = state.placement.iter().map(|_| rdzv.master_addr.clone()).collect();
        let path = job_dir.join("hostfile");
        tokio::fs::create_dir_all(&job_dir).await.map_err(|e| Error::Io(job_dir.display().to_string(), e))?;
        tokio::fs::write(&path, env::hostfile(&hosts, nproc))
            .await
            .map_err(|e| Error::Io(path.display().to_string(), e))?;
        Some(path)
    } else {
        None
    };
    let (hostfile_seen, mut mounts) = match (&hostfile, runtime) {
        (Some(p), Runtime::Container) => (
            Some("/etc/capstan/hostfile".to_string()),
            vec![(p.display().to_string(), "/etc/capstan/hostfile".to_string())],
        ),
        (Some(p), Runtime::Process) => (Some(p.display().to_string()), vec![]),
        (None, _) => (None, vec![]),
    };

    let resume = attempt > 1
        && spec.checkpoint.as_ref().map(|c| c.resume.unwrap_or_default() == ResumePolicy::Latest).unwrap_or(false);
    let mut argv = spec.command.clone();
    argv.extend(spec.args.iter().cloned());
    for &i in indices {
        let slot = state
            .placement
            .get(i as usize)
            .cloned()
            .unwrap_or(capstan_core::Slot { node: String::new(), gpus: vec![] });
        let mut envs: Vec<(String, String)> = spec.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        envs.extend(env::replica_env(&ReplicaEnvInput {
            job_name: job.name.clone(),
            replicas: spec.replicas,
            index: i,
            nproc_per_replica: nproc,
            launcher: mapping::launcher_kind(spec.launcher),
            master_addr: rdzv.master_addr.clone(),
            master_port: rdzv.master_port,
            gpus: slot.gpus.clone(),
            tracking_uri: Some(ctx.tracking_uri.clone()),
            run_id: status.tracking_run_id.clone(),
            hostfile: hostfile_seen.clone(),
            checkpoint_uri: spec.checkpoint.as_ref().map(|c| c.uri.clone()),
            resume,
        }));
        if let Some(scratch) = &spec.scratch {
            let dir = job_dir.join("scratch").join(i.to_string());
            tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::Io(dir.display().to_string(), e))?;
            let _ = &scratch.size;
            match runtime {
                Runtime::Container => {
                    mounts.push((dir.display().to_string(), "/scratch".to_string()));
                    envs.push(("CAPSTAN_SCRATCH_DIR".into(), "/scratch".into()));
                }
                Runtime::Process => envs.push(("CAPSTAN_SCRATCH_DIR".into(), dir.display().to_string())),
            }
        }
        let rs = ReplicaSpec {
            namespace: job.namespace.clone(),
            job_name: job.name.clone(),
            job_uid: job.uid.clone(),
            index: i,
            attempt,
            runtime,
            image: spec.image.clone(),
            argv: argv.clone(),
            env: envs,
            working_dir: spec.working_dir.clone(),
            gpus: slot.gpus.clone(),
            cpu: spec.resources.as_ref().and_then(|r| r.cpu.as_deref()).and_then(mapping::parse_cpu),
            memory_bytes: spec.resources.as_ref().and_then(|r| r.memory.as_deref()).and_then(mapping::parse_memory),
            log_path: log_path(&ctx.data_dir, &job.namespace, &job.name, &job.uid, attempt, i),
            mounts: mounts.clone(),
        };
        ctx.agent.start(&rs).await?;
    }
    Ok(())
}
