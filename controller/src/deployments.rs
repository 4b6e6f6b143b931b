//! The standalone reconciler of ModelDeployments (`capstan up`): `capstan serve` replicas as
//! processes through the agent, one set per model version, routed by the Capstan server's
//! `/v2/models/{name}/...` proxy with the traffic split, and a metric-gated canary.
//!
//! Each pass, per deployment:
//! 1. resolve the stable version (a version number, the alias's target in the registry, or
//!    the URI) and the canary's; a canary already promoted becomes the stable version, one
//!    rolled back is not run again (until its version changes);
//! 2. [`plan`] (pure): which versions run, and their weights: the canary gets canaryPercent
//!    once it has a ready replica; a stable version moved by the alias takes over only once
//!    ready, the previous one serving until then;
//! 3. start missing replicas (`capstan serve --model models:/NAME/VERSION --listen
//!    127.0.0.1:PORT`), restart exited ones, stop those of versions no longer planned;
//!    probe `/v2/health/ready`; publish the routes ([`capstan_serving::route::RouteTable`]);
//!    with autoscaling, each version's replica count follows its load as the proxy measured
//!    it ([`capstan_serving::autoscale`]: requests in flight or per second against the
//!    target, up at once, down after the stabilization window), with a `ScaledUp` /
//!    `ScaledDown` event and the `Scaled` condition saying why; replicas beyond the count
//!    leave the routes first, then stop (draining what they still answer);
//! 4. the canary verdict ([`capstan_serving::canary::verdict`]) over the answers the proxy
//!    recorded: Promote or Rollback, with an event and a condition saying why;
//! 5. write the status (only when it changed).
//!
//! Runtimes: `builtin` replicas are `capstan serve` processes; `image` replicas are
//! containers of the runtime's image through the agent's container runtime (host network,
//! never pulled), told their port in `PORT` (and `$(PORT)` in args), with the model's
//! location in CAPSTAN_MODEL_URI and its `.onnx` file mounted read-only at
//! `/mnt/models/model.onnx` (fetched once into `<data dir>/models/`); both are probed,
//! routed, scaled and canaried alike.
//!
//! GPUs (`spec.gpus` per replica) come from the node's healthy GPUs not held by TrainingJobs
//! (their placements in their statuses) nor by other deployments (`versions[].replicaGpus`
//! in their statuses); the TrainingJob pass, which runs after this one, removes the GPUs
//! deployments hold ([`held_gpus`]) from the scheduler's node, so a GPU is never given to
//! both. A replica that finds too few free GPUs waits, with the reason in its version's
//! message, the `Scheduled` condition and, while nothing serves, the `Ready` condition
//! (reason [`INSUFFICIENT_GPUS`]).
//!
//! Replicas carry job uid `mdep-<uid>`, the version key as attempt and the replica index, so
//! the TrainingJob pass leaves them alone ([`owns`]) and a restarted `capstan up` adopts them
//! (their ports are kept in the status).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use capstan_agent::{FoundReplica, Observation, ReplicaSpec};
use capstan_crds::modeldeployment::{
    CanaryPhase, CanaryStatus, DeploymentPhase, ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, ReplicaGpus,
    RuntimeType, TrafficTarget, VersionRole, VersionState, VersionStatus,
};
use capstan_crds::trainingjob::{Runtime, TrainingJobStatus};
use capstan_crds::Condition;
use capstan_serving::autoscale::{self, Autoscalers, Direction, LoadTable, ScaleMetric, ScalePolicy};
use capstan_serving::canary::{self, CanaryPolicy, Verdict};
use capstan_serving::route::{Backend, RouteTable};
use capstan_store::StoredResource;

use crate::standalone::Context;
use crate::Error;

/// Kind name of ModelDeployments in the store.
pub const KIND: &str = "ModelDeployment";

/// Prefix of the job uid of deployment replicas.
pub const UID_PREFIX: &str = "mdep-";

/// Whether a replica's job uid belongs to a ModelDeployment (the TrainingJob pass skips it).
pub fn owns(job_uid: &str) -> bool {
    job_uid.starts_with(UID_PREFIX)
}

/// Reason (conditions, events) of a replica waiting for GPUs.
pub const INSUFFICIENT_GPUS: &str = "InsufficientGpus";

/// Where an image replica finds the model's folder (KServe's storage-initializer path).
pub const MODEL_DIR: &str = "/mnt/models";

/// The GPUs a deployment may take in a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuPool {
    /// Healthy GPUs of the node: (index, product).
    pub gpus: Vec<(u32, String)>,
    /// GPUs held by TrainingJobs.
    pub jobs: BTreeSet<u32>,
    /// GPUs held by other deployments.
    pub deployments: BTreeSet<u32>,
}

/// Whether a GPU's product matches a `gpuProduct` ask (case, spaces and dashes aside).
fn product_matches(product: &str, want: Option<&str>) -> bool {
    let norm = |s: &str| s.trim().to_ascii_lowercase().replace([' ', '_'], "-");
    want.is_none_or(|w| norm(w) == norm(product))
}

/// `n` GPUs (lowest indices first) of `pool` matching `product` and not in `held` (those this
/// deployment already holds or is draining), or why not, for a person (pure).
pub fn pick_gpus(pool: &GpuPool, product: Option<&str>, held: &BTreeSet<u32>, n: u32) -> Result<Vec<u32>, String> {
    let matching: Vec<u32> = pool.gpus.iter().filter(|g| product_matches(&g.1, product)).map(|g| g.0).collect();
    let free: Vec<u32> = matching
        .iter()
        .copied()
        .filter(|g| !pool.jobs.contains(g) && !pool.deployments.contains(g) && !held.contains(g))
        .collect();
    if free.len() >= n as usize {
        return Ok(free[..n as usize].to_vec());
    }
    let of = match product {
        Some(p) => format!("{} {p} GPUs", matching.len()),
        None => format!("{} GPUs", matching.len()),
    };
    let by_jobs = matching.iter().filter(|g| pool.jobs.contains(g)).count();
    let by_others = matching.iter().filter(|g| pool.deployments.contains(g)).count();
    let by_self = matching.iter().filter(|g| held.contains(g)).count();
    Err(format!(
        "waiting for {n} GPU(s) per replica: {} free of {of} ({by_jobs} held by TrainingJobs, {by_others} by other deployments, {by_self} by this one)",
        free.len()
    ))
}

/// `$(VAR)` in `arg` replaced by VAR's value in `env` (unknown names are left as they are),
/// `$$` by `$`: Kubernetes' expansion of container args (pure).
pub fn expand_vars(arg: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The GPUs a stored deployment status lists (every version's replicas).
pub fn status_gpus(status: &serde_json::Value) -> BTreeSet<u32> {
    serde_json::from_value::<ModelDeploymentStatus>(status.clone())
        .map(|s| s.versions.iter().flat_map(|v| v.replica_gpus.iter().flat_map(|r| r.gpus.iter().copied())).collect())
        .unwrap_or_default()
}

/// The GPUs every ModelDeployment holds now (from their statuses): the TrainingJob pass keeps
/// them out of the scheduler's node.
pub async fn held_gpus(ctx: &Context) -> Result<BTreeSet<u32>, Error> {
    Ok(ctx.store.list_resources(KIND, None).await?.iter().flat_map(|d| status_gpus(&d.status)).collect())
}

/// The GPUs TrainingJobs hold (admitted and not finished: their placements).
async fn job_gpus(ctx: &Context) -> Result<BTreeSet<u32>, Error> {
    let node = ctx.agent.node_name();
    let mut out = BTreeSet::new();
    for j in ctx.store.list_resources(crate::standalone::KIND, None).await? {
        let status = serde_json::from_value::<TrainingJobStatus>(j.status.clone()).unwrap_or_default();
        if crate::scheduling::holds(&status) {
            for r in &status.replica_statuses {
                if r.node.as_deref().is_none_or(|n| n.is_empty() || n == node) {
                    out.extend(r.gpus.iter().copied());
                }
            }
        }
    }
    Ok(out)
}

/// Grace period of a stopping replica (it drains in-flight requests).
const GRACE: Duration = Duration::from_secs(10);

/// A version to run, and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVersion {
    /// Version label (registry version, or the URI).
    pub version: String,
    /// The `--model` value of its replicas.
    pub source: String,
    /// Stable or canary.
    pub role: VersionRole,
    /// Replicas to run.
    pub replicas: u32,
    /// Traffic weight (percent).
    pub weight: u32,
}

/// What [`plan`] needs.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The stable version resolved now, with its source.
    pub stable: (String, String),
    /// The stable version the previous pass served (for a roll-forward).
    pub previous_stable: Option<(String, String)>,
    /// The canary resolved now (none: no canary, or it was decided already).
    pub canary: Option<(String, String)>,
    /// canaryPercent.
    pub canary_percent: u32,
    /// Versions with at least one ready replica.
    pub ready: Vec<String>,
    /// Replicas per version.
    pub replicas: u32,
}

/// Which versions run and their weights (pure). The new stable version takes all the
/// non-canary traffic once ready; until then the previous stable version keeps it. The
/// canary gets canaryPercent once ready, out of the stable share.
pub fn plan(input: &PlanInput) -> Vec<PlannedVersion> {
    let is_ready = |v: &str| input.ready.iter().any(|r| r == v);
    let mut out = Vec::new();
    let (stable, stable_source) = &input.stable;
    let previous = input.previous_stable.as_ref().filter(|(v, _)| v != stable);
    let stable_ready = is_ready(stable);
    let canary = input.canary.as_ref().filter(|(v, _)| v != stable);
    let canary_weight = match canary {
        Some((v, _)) if is_ready(v) => canary::traffic_split(input.canary_percent).1,
        _ => 0,
    };
    let stable_weight = 100 - canary_weight;
    out.push(PlannedVersion {
        version: stable.clone(),
        source: stable_source.clone(),
        role: VersionRole::Stable,
        replicas: input.replicas,
        weight: if stable_ready || previous.is_none() { stable_weight } else { 0 },
    });
    if let Some((pv, ps)) = previous {
        if !stable_ready && is_ready(pv) {
            out.push(PlannedVersion {
                version: pv.clone(),
                source: ps.clone(),
                role: VersionRole::Stable,
                replicas: input.replicas,
                weight: stable_weight,
            });
        }
    }
    if let Some((cv, cs)) = canary {
        out.push(PlannedVersion {
            version: cv.clone(),
            source: cs.clone(),
            role: VersionRole::Canary,
            replicas: input.replicas,
            weight: canary_weight,
        });
    }
    out
}

/// The attempt number a version's replicas carry: the version number, or a hash of a URI
/// (high bit set).
pub fn version_key(version: &str) -> u32 {
    match version.parse::<u32>() {
        Ok(n) if n < 0x8000_0000 => n,
        _ => {
            let mut h: u32 = 0x811c_9dc5;
            for b in version.bytes() {
                h = (h ^ b as u32).wrapping_mul(0x0100_0193);
            }
            h | 0x8000_0000
        }
    }
}

/// The canary policy of a spec, with the documented defaults.
pub fn policy(c: &capstan_crds::modeldeployment::Canary) -> CanaryPolicy {
    let d = CanaryPolicy::default();
    CanaryPolicy {
        max_error_rate: c.max_error_rate.unwrap_or(d.max_error_rate),
        max_p99_latency_ratio: c.max_p99_latency_ratio.or(d.max_p99_latency_ratio),
        max_p99_latency_ms: c.max_p99_latency_ms,
        min_requests: c.min_requests.unwrap_or(d.min_requests),
        window_ms: c.window_seconds.map(|s| s as u64 * 1000).unwrap_or(d.window_ms),
    }
}

/// The autoscaling policy of a spec; `None` without `autoscaling` (every version runs
/// minReplicas). Shared with the Kubernetes controller.
pub fn scale_policy(spec: &ModelDeploymentSpec) -> Option<ScalePolicy> {
    let a = spec.autoscaling.as_ref()?;
    let min = spec.min_replicas.unwrap_or(1).max(1);
    let metric = match a.metric {
        capstan_crds::modeldeployment::ScaleMetric::Concurrency => ScaleMetric::Concurrency,
        capstan_crds::modeldeployment::ScaleMetric::Rps => ScaleMetric::Rps,
    };
    let mut p = ScalePolicy::new(min, spec.max_replicas.unwrap_or(min), metric, a.target as f64);
    if let Some(s) = a.scale_down_stabilization_seconds {
        p.scale_down_window_ms = s as u64 * 1000;
    }
    Some(p)
}

/// The event reason of a scale decision that changed the count.
pub fn scale_reason(d: &autoscale::Decision) -> Option<&'static str> {
    match d.direction {
        Direction::Up => Some("ScaledUp"),
        Direction::Down => Some("ScaledDown"),
        Direction::Hold => None,
    }
}

/// Scale states of the standalone controller, by `uid/version`.
fn autoscalers() -> &'static Autoscalers {
    static A: std::sync::OnceLock<Autoscalers> = std::sync::OnceLock::new();
    A.get_or_init(Autoscalers::default)
}

/// The `--model` value serving `version` of a reference's model.
fn source_for(r: &ModelRef, version: &str) -> String {
    match (&r.uri, &r.registered_model) {
        (Some(uri), _) => uri.clone(),
        (None, Some(name)) => format!("models:/{name}/{version}"),
        (None, None) => version.to_string(),
    }
}

/// Resolves a model reference to (version label, `--model` source) through the store.
async fn resolve(ctx: &Context, r: &ModelRef) -> Result<(String, String), String> {
    if let Some(uri) = &r.uri {
        return Ok((uri.clone(), uri.clone()));
    }
    let name = r.registered_model.as_deref().ok_or("model: set registeredModel or uri")?;
    let version = match (&r.version, &r.alias) {
        (Some(v), _) => *v as i64,
        (None, Some(alias)) => {
            ctx.store
                .get_model_version_by_alias(name, alias)
                .await
                .map_err(|e| format!("model '{name}': {e}"))?
                .ok_or_else(|| format!("model '{name}' has no alias '{alias}'"))?
                .version
        }
        (None, None) => return Err(format!("model '{name}': set version or alias")),
    };
    Ok((version.to_string(), format!("models:/{name}/{version}")))
}

fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port())
}

fn http() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(|| reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("HTTP client"))
}

async fn is_ready(endpoint: &str) -> bool {
    matches!(http().get(format!("http://{endpoint}/v2/health/ready")).send().await, Ok(r) if r.status().is_success())
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

fn set_condition(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(old) if old.status == c.status && old.reason == c.reason && old.message == c.message => {}
        Some(old) => *old = c,
        None => conditions.push(c),
    }
}

/// One pass over every ModelDeployment; `found` are all the agent's replicas (those of
/// deployments are picked out here).
pub async fn reconcile_all(ctx: &Context, found: &[FoundReplica]) -> Result<(), Error> {
    let deployments = ctx.store.list_resources(KIND, None).await?;
    let mut by_uid: HashMap<&str, Vec<&FoundReplica>> = HashMap::new();
    for f in found.iter().filter(|f| owns(&f.job_uid)) {
        by_uid.entry(&f.job_uid[UID_PREFIX.len()..]).or_default().push(f);
    }
    let table = RouteTable::global();
    // Replicas of deployments that are gone.
    for (uid, reps) in &by_uid {
        if !deployments.iter().any(|d| d.uid == *uid) {
            for f in reps {
                ctx.agent.stop(&f.handle, GRACE).await?;
                ctx.agent.cleanup(&f.handle).await?;
            }
        }
    }
    let names: Vec<String> = deployments.iter().map(|d| d.name.clone()).collect();
    for m in table.models() {
        if !names.contains(&m) {
            table.remove(&m);
            LoadTable::global().remove(&m);
        }
    }
    let uids: Vec<String> = deployments.iter().map(|d| format!("{}/", d.uid)).collect();
    autoscalers().retain(|k| uids.iter().any(|u| k.starts_with(u.as_str())));
    // GPUs: the node's healthy ones, less what jobs and (as the passes go) deployments hold.
    let jobs_held = job_gpus(ctx).await?;
    let unhealthy = ctx.agent.unhealthy_gpus();
    let node_gpus: Vec<(u32, String)> = ctx
        .agent
        .gpus()
        .iter()
        .filter(|g| unhealthy.get(&g.index).is_none_or(|h| h.healthy))
        .map(|g| (g.index, g.product.clone()))
        .collect();
    let mut held: HashMap<String, BTreeSet<u32>> =
        deployments.iter().map(|d| (d.uid.clone(), status_gpus(&d.status))).collect();
    for d in deployments {
        let reps = by_uid.remove(d.uid.as_str()).unwrap_or_default();
        let pool = GpuPool {
            gpus: node_gpus.clone(),
            jobs: jobs_held.clone(),
            deployments: held.iter().filter(|(u, _)| **u != d.uid).flat_map(|(_, g)| g.iter().copied()).collect(),
        };
        match reconcile(ctx, &d, &reps, &pool).await {
            Ok(mine) => {
                held.insert(d.uid.clone(), mine);
            }
            Err(e) => {
                tracing::warn!(deployment = %d.name, error = %e, "model deployment reconcile failed");
                let _ = ctx.store.add_event(&d.uid, "Warning", "ReconcileError", &e.to_string()).await;
            }
        }
    }
    Ok(())
}

/// One pass for one deployment; returns the GPUs its replicas hold now.
async fn reconcile(
    ctx: &Context,
    d: &StoredResource,
    found: &[&FoundReplica],
    pool: &GpuPool,
) -> Result<BTreeSet<u32>, Error> {
    let table = RouteTable::global();
    if d.deletion_timestamp.is_some() {
        for f in found {
            ctx.agent.stop(&f.handle, GRACE).await?;
            ctx.agent.cleanup(&f.handle).await?;
        }
        table.remove(&d.name);
        LoadTable::global().remove(&d.name);
        ctx.store.remove_resource(&d.uid).await?;
        return Ok(BTreeSet::new());
    }
    let spec: ModelDeploymentSpec = serde_json::from_value(d.spec.clone())?;
    let mut status: ModelDeploymentStatus = serde_json::from_value(d.status.clone()).unwrap_or_default();
    let before = serde_json::to_value(&status)?;
    let mut events: Vec<(&str, &str, String)> = Vec::new();

    let stable = match resolve(ctx, &spec.model).await {
        Ok(s) => s,
        Err(why) => {
            status.phase = if status.versions.is_empty() { DeploymentPhase::Failed } else { DeploymentPhase::Degraded };
            set_condition(&mut status.conditions, condition("Ready", false, "ModelUnresolved", &why));
            let held = status_gpus(&serde_json::to_value(&status)?);
            write(ctx, d, &before, status, events).await?;
            return Ok(held);
        }
    };
    // A promoted canary is the stable version from then on.
    let promoted = status
        .canary
        .as_ref()
        .filter(|c| c.phase == CanaryPhase::Promoted)
        .map(|c| c.version.clone())
        .filter(|v| status.versions.iter().any(|s| &s.version == v) || status.stable_version.as_deref() == Some(v));
    let mut canary_ref = None;
    if let Some(c) = &spec.canary {
        match resolve(ctx, &c.model).await {
            Ok(cv) => {
                let decided = status.canary.as_ref().is_some_and(|s| {
                    s.version == cv.0 && matches!(s.phase, CanaryPhase::Promoted | CanaryPhase::RolledBack)
                });
                if !decided && cv.0 != stable.0 {
                    canary_ref = Some(cv);
                }
            }
            Err(why) => events.push(("Warning", "CanaryUnresolved", why)),
        }
    }
    let stable = match (&promoted, &spec.canary) {
        (Some(p), Some(c)) => (p.clone(), source_for(&c.model, p)),
        _ => stable,
    };
    let previous_stable =
        status.stable_version.clone().filter(|v| v != &stable.0).map(|v| (v.clone(), source_for(&spec.model, &v)));
    let replicas = spec.min_replicas.unwrap_or(1).max(1);

    // Ready endpoints per version, from the replicas found and the ports in the status.
    let ports: HashMap<(String, u32), String> = status
        .versions
        .iter()
        .flat_map(|v| v.endpoints.iter().enumerate().map(move |(i, e)| ((v.version.clone(), i as u32), e.clone())))
        .collect();
    let versions_seen: BTreeMap<u32, String> =
        status.versions.iter().map(|v| (version_key(&v.version), v.version.clone())).collect();
    let mut ready: Vec<String> = Vec::new();
    let mut ready_endpoints_seen: Vec<String> = Vec::new();
    for v in [Some(&stable), previous_stable.as_ref(), canary_ref.as_ref()].into_iter().flatten() {
        let key = version_key(&v.0);
        for f in found.iter().filter(|f| f.attempt == key) {
            if let Some(ep) = ports.get(&(v.0.clone(), f.index)) {
                if is_ready(ep).await {
                    ready_endpoints_seen.push(ep.clone());
                    if !ready.contains(&v.0) {
                        ready.push(v.0.clone());
                    }
                }
            }
        }
    }
    let canary_percent = spec.canary.as_ref().map(|c| c.canary_percent).unwrap_or(0);
    let mut planned = plan(&PlanInput {
        stable: stable.clone(),
        previous_stable: previous_stable.clone(),
        canary: canary_ref.clone(),
        canary_percent,
        ready: ready.clone(),
        replicas,
    });

    // Autoscaling: each version's count from its load (unknown until it has a ready replica).
    let mut desired: HashMap<String, u32> = HashMap::new();
    if let Some(pol) = scale_policy(&spec) {
        for p in planned.iter_mut() {
            let previous = status.versions.iter().find(|v| v.version == p.version).map(|v| v.replicas);
            let current = previous.unwrap_or(pol.min);
            let load = ready
                .contains(&p.version)
                .then(|| LoadTable::global().load(&d.name, &p.version, autoscale::LOAD_WINDOW_MS).value(pol.metric));
            let key = format!("{}/{}", d.uid, p.version);
            let decision = autoscalers()
                .with(&key, |s, _| autoscale::decide(&pol, s, load, current, capstan_serving::route::now_ms()));
            p.replicas = decision.replicas;
            desired.insert(p.version.clone(), decision.desired);
            if let (Some(reason), Some(_)) = (scale_reason(&decision), previous) {
                let message =
                    format!("version {}: {current} -> {} replicas: {}", p.version, decision.replicas, decision.reason);
                tracing::info!(deployment = %d.name, %message, "scaled a model version");
                set_condition(&mut status.conditions, condition("Scaled", true, reason, &message));
                events.push(("Normal", reason, message));
            }
        }
    }

    // GPUs: replicas keep theirs while planned; those of replicas leaving are not reused
    // this pass (they are still stopping).
    let gpus_per = spec.gpus.unwrap_or(0);
    let prev_gpus: HashMap<(String, u32), Vec<u32>> = status
        .versions
        .iter()
        .flat_map(|v| v.replica_gpus.iter().map(move |r| ((v.version.clone(), r.index), r.gpus.clone())))
        .collect();
    let is_planned = |version: &str, index: u32| planned.iter().any(|p| p.version == version && index < p.replicas);
    let conflicts = |g: &u32| pool.jobs.contains(g) || pool.deployments.contains(g);
    let mut mine: BTreeSet<u32> = BTreeSet::new();
    let mut draining: BTreeSet<u32> = BTreeSet::new();
    for ((v, i), g) in &prev_gpus {
        if is_planned(v, *i) && g.len() == gpus_per as usize && !g.iter().any(conflicts) {
            mine.extend(g.iter().copied());
        } else {
            draining.extend(g.iter().copied());
        }
    }
    let mut gpu_wait: Option<String> = None;
    let previous_messages: HashMap<String, Option<String>> =
        status.versions.iter().map(|v| (v.version.clone(), v.message.clone())).collect();

    let mut version_statuses = Vec::new();
    let mut backends = Vec::new();
    for p in &planned {
        let key = version_key(&p.version);
        let mut endpoints = Vec::new();
        let mut ready_endpoints = Vec::new();
        let mut replica_gpus = Vec::new();
        let mut message = None;
        for index in 0..p.replicas {
            // Its GPUs: those it held, else free ones, else it waits (with those after it).
            let gpus = if gpus_per == 0 {
                Vec::new()
            } else {
                match prev_gpus.get(&(p.version.clone(), index)).filter(|g| g.iter().all(|x| mine.contains(x))) {
                    Some(g) if g.len() == gpus_per as usize => g.clone(),
                    _ => {
                        let taken: BTreeSet<u32> = mine.union(&draining).copied().collect();
                        match pick_gpus(pool, spec.gpu_product.as_deref(), &taken, gpus_per) {
                            Ok(g) => {
                                mine.extend(g.iter().copied());
                                g
                            }
                            Err(why) => {
                                let why = format!("replica {index}: {why}");
                                if gpu_wait.is_none() {
                                    gpu_wait = Some(format!("version {}: {why}", p.version));
                                }
                                message = Some(why);
                                break;
                            }
                        }
                    }
                }
            };
            let existing = found.iter().find(|f| f.attempt == key && f.index == index);
            let known_port = ports.get(&(p.version.clone(), index)).cloned();
            let running = match existing {
                Some(f) => match ctx.agent.observe(&f.handle).await {
                    Observation::Running => true,
                    Observation::Exited { code, reason } => {
                        message = Some(format!("replica {index} exited with code {code} ({reason}); restarting"));
                        false
                    }
                    Observation::Missing => false,
                },
                None => false,
            };
            let endpoint = match (running, known_port) {
                (true, Some(ep)) => ep,
                _ => {
                    let port = free_port()
                        .ok_or_else(|| Error::Io("no free port".into(), std::io::ErrorKind::AddrInUse.into()))?;
                    let ep = format!("127.0.0.1:{port}");
                    if let Err(e) = start_replica(ctx, d, &spec, p, index, port, &gpus).await {
                        message = Some(format!("replica {index} cannot start: {e}"));
                    }
                    ep
                }
            };
            if ready_endpoints_seen.contains(&endpoint) {
                ready_endpoints.push(endpoint.clone());
            }
            endpoints.push(endpoint);
            if !gpus.is_empty() {
                replica_gpus.push(ReplicaGpus { index, gpus });
            }
        }
        if let Some(m) = &message {
            if previous_messages.get(&p.version).cloned().flatten().as_ref() != Some(m) {
                let reason = if m.contains("GPU(s) per replica") { INSUFFICIENT_GPUS } else { "ReplicaNotStarted" };
                events.push(("Warning", reason, format!("version {}: {m}", p.version)));
            }
        }
        backends.push(Backend { version: p.version.clone(), endpoints: ready_endpoints.clone(), weight: p.weight });
        version_statuses.push(VersionStatus {
            version: p.version.clone(),
            role: p.role,
            state: if !ready_endpoints.is_empty() { VersionState::Ready } else { VersionState::Pending },
            replicas: p.replicas,
            desired_replicas: desired.get(&p.version).copied(),
            ready_replicas: ready_endpoints.len() as u32,
            traffic_percent: if ready_endpoints.is_empty() { 0 } else { p.weight },
            endpoints,
            replica_gpus,
            message,
        });
    }
    if gpus_per > 0 {
        let c = match &gpu_wait {
            Some(why) => condition("Scheduled", false, INSUFFICIENT_GPUS, why),
            None => condition(
                "Scheduled",
                true,
                "GpusAllocated",
                &format!("{} GPU(s) held: {:?}", mine.len(), mine.iter().collect::<Vec<_>>()),
            ),
        };
        set_condition(&mut status.conditions, c);
    }
    table.publish(&d.name, backends);

    // Replicas no longer planned (versions gone, or beyond the count): out of the routes
    // (just above), then stopped.
    for f in found {
        let keep = planned.iter().any(|p| version_key(&p.version) == f.attempt && f.index < p.replicas);
        if !keep {
            let v = versions_seen.get(&f.attempt).cloned().unwrap_or_else(|| f.attempt.to_string());
            ctx.agent.stop(&f.handle, GRACE).await?;
            ctx.agent.cleanup(&f.handle).await?;
            tracing::info!(deployment = %d.name, version = %v, index = f.index, "stopped a model replica");
        }
    }

    // The canary verdict.
    let now_rfc = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let (Some(c), Some((cv, _))) = (&spec.canary, &canary_ref) {
        let pol = policy(c);
        let mut cs = status.canary.clone().filter(|s| &s.version == cv).unwrap_or_else(|| CanaryStatus {
            version: cv.clone(),
            phase: CanaryPhase::Starting,
            ..Default::default()
        });
        let weight = planned.iter().find(|p| &p.version == cv).map(|p| p.weight).unwrap_or(0);
        cs.traffic_percent = weight;
        if weight > 0 && cs.phase == CanaryPhase::Starting {
            cs.phase = CanaryPhase::Progressing;
            cs.started_at = Some(now_rfc.clone());
            table.reset(&d.name, cv);
            table.reset(&d.name, &stable.0);
            events.push(("Normal", "CanaryStarted", format!("version {cv} receives {weight}% of the requests")));
        }
        if cs.phase == CanaryPhase::Progressing {
            let s = table.stats(&d.name, &stable.0, pol.window_ms);
            let k = table.stats(&d.name, cv, pol.window_ms);
            let elapsed = cs
                .started_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as u64)
                .unwrap_or(0);
            let v = canary::verdict(&pol, &s, &k, elapsed >= pol.window_ms);
            cs.requests = k.requests;
            cs.errors = k.errors;
            cs.p99_ms = k.p99_ms;
            cs.stable_requests = s.requests;
            cs.stable_errors = s.errors;
            cs.stable_p99_ms = s.p99_ms;
            match v {
                Verdict::Wait { reason } => {
                    cs.verdict = Some("Wait".into());
                    cs.reason = Some(reason);
                }
                Verdict::Rollback { reason } => {
                    cs.verdict = Some("Rollback".into());
                    cs.phase = CanaryPhase::RolledBack;
                    cs.traffic_percent = 0;
                    cs.reason = Some(reason.clone());
                    events.push(("Warning", "CanaryRolledBack", format!("version {cv} rolled back: {reason}")));
                    set_condition(
                        &mut status.conditions,
                        condition("CanaryRolledBack", true, "MetricsFailed", &reason),
                    );
                    // Traffic back on the stable version at once; replicas stop next pass.
                    table.publish(
                        &d.name,
                        version_statuses
                            .iter()
                            .filter(|vs| vs.role == VersionRole::Stable)
                            .map(|vs| Backend {
                                version: vs.version.clone(),
                                endpoints: if vs.ready_replicas > 0 { vs.endpoints.clone() } else { vec![] },
                                weight: 100,
                            })
                            .collect(),
                    );
                    for vs in version_statuses.iter_mut() {
                        vs.traffic_percent =
                            if vs.role == VersionRole::Stable && vs.ready_replicas > 0 { 100 } else { 0 };
                    }
                }
                Verdict::Promote => {
                    let reason = format!(
                        "{} requests, error rate {:.2}%, p99 {:.2} ms over the window",
                        k.requests,
                        k.error_rate() * 100.0,
                        k.p99_ms.unwrap_or(0.0)
                    );
                    cs.verdict = Some("Promote".into());
                    cs.phase = CanaryPhase::Promoted;
                    cs.reason = Some(reason.clone());
                    events.push(("Normal", "CanaryPromoted", format!("version {cv} promoted: {reason}")));
                    set_condition(&mut status.conditions, condition("CanaryPromoted", true, "MetricsPassed", &reason));
                }
            }
        }
        status.canary = Some(cs);
    }

    // Alias roll-forward, recorded once the new version serves.
    let serving_stable = version_statuses
        .iter()
        .find(|v| v.role == VersionRole::Stable && v.traffic_percent > 0)
        .map(|v| v.version.clone());
    if let Some(v) = &serving_stable {
        if status.stable_version.as_ref().is_some_and(|old| old != v) {
            events.push((
                "Normal",
                "RolledForward",
                format!("stable version {} -> {v}", status.stable_version.clone().unwrap_or_default()),
            ));
        }
        status.stable_version = Some(v.clone());
    }
    status.ready_replicas = version_statuses.iter().map(|v| v.ready_replicas).sum();
    status.replicas = version_statuses.iter().map(|v| v.replicas).sum();
    status.desired_replicas =
        (!desired.is_empty()).then(|| version_statuses.iter().map(|v| v.desired_replicas.unwrap_or(v.replicas)).sum());
    status.traffic = version_statuses
        .iter()
        .filter(|v| v.traffic_percent > 0)
        .map(|v| TrafficTarget { version: v.version.clone(), percent: v.traffic_percent })
        .collect();
    status.versions = version_statuses;
    status.url = Some(format!("{}/v2/models/{}", ctx.tracking_uri.trim_end_matches('/'), d.name));
    status.observed_generation = Some(d.generation);
    let canary_live = status.canary.as_ref().is_some_and(|c| c.phase == CanaryPhase::Progressing);
    status.phase = if serving_stable.is_none() {
        DeploymentPhase::Pending
    } else if canary_live {
        DeploymentPhase::Canary
    } else {
        DeploymentPhase::Ready
    };
    let (ready_reason, ready_msg) = match (&serving_stable, &gpu_wait) {
        (Some(v), _) => ("Serving", format!("version {v} serves at {}", status.url.clone().unwrap_or_default())),
        (None, Some(why)) => (INSUFFICIENT_GPUS, why.clone()),
        (None, None) => ("Starting", "waiting for a ready replica".into()),
    };
    set_condition(&mut status.conditions, condition("Ready", serving_stable.is_some(), ready_reason, &ready_msg));
    write(ctx, d, &before, status, events).await?;
    Ok(mine)
}

async fn write(
    ctx: &Context,
    d: &StoredResource,
    before: &serde_json::Value,
    status: ModelDeploymentStatus,
    events: Vec<(&str, &str, String)>,
) -> Result<(), Error> {
    for (type_, reason, message) in events {
        ctx.store.add_event(&d.uid, type_, reason, &message).await?;
    }
    let value = serde_json::to_value(&status)?;
    if &value != before {
        ctx.store.set_status(&d.uid, &value).await?;
    }
    Ok(())
}

/// The model's `.onnx` file of version `p`, fetched once into `<data dir>/models/<uid>/<key>/`
/// (the folder mounted at [`MODEL_DIR`] in image replicas).
async fn model_folder(ctx: &Context, d: &StoredResource, p: &PlannedVersion) -> Result<std::path::PathBuf, String> {
    let dir = ctx.data_dir.join("models").join(&d.uid).join(version_key(&p.version).to_string());
    let file = dir.join("model.onnx");
    if tokio::fs::try_exists(&file).await.unwrap_or(false) {
        return Ok(dir);
    }
    let source = capstan_serving::source::ModelSource::parse(&p.source).map_err(|e| e.to_string())?;
    let registry = capstan_serving::source::RegistryClient::new(&ctx.tracking_uri, None).map_err(|e| e.to_string())?;
    let fetched = capstan_serving::source::fetch(&source, Some(&registry)).await.map_err(|e| e.to_string())?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!("model.onnx.{}.tmp", std::process::id()));
    tokio::fs::write(&tmp, &fetched.bytes).await.map_err(|e| format!("{}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, &file).await.map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(dir)
}

async fn start_replica(
    ctx: &Context,
    d: &StoredResource,
    spec: &ModelDeploymentSpec,
    p: &PlannedVersion,
    index: u32,
    port: u16,
    gpus: &[u32],
) -> Result<(), Error> {
    let runtime = spec.runtime.clone().unwrap_or_default();
    let image = runtime.type_.unwrap_or_default() == RuntimeType::Image;
    let endpoint = format!("127.0.0.1:{port}");
    let mut env: Vec<(String, String)> = runtime.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    env.push(("CAPSTAN_MODEL_URI".into(), p.source.clone()));
    env.push(("CAPSTAN_MODEL_SOURCE".into(), p.source.clone()));
    env.push(("CAPSTAN_MODEL_VERSION".into(), p.version.clone()));
    env.push(("CAPSTAN_MODEL_NAME".into(), d.name.clone()));
    env.push(("MLFLOW_TRACKING_URI".into(), ctx.tracking_uri.clone()));
    env.push(("PORT".into(), port.to_string()));
    if !gpus.is_empty() {
        env.push(("CAPSTAN_GPUS".into(), gpus.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",")));
    }
    let mut mounts = Vec::new();
    if image {
        match model_folder(ctx, d, p).await {
            Ok(dir) => {
                mounts.push((dir.display().to_string(), format!("{MODEL_DIR}:ro")));
                env.push(("CAPSTAN_MODEL_DIR".into(), MODEL_DIR.into()));
            }
            Err(why) => {
                // Not an .onnx model (or not reachable now): the image gets its URI only.
                tracing::warn!(deployment = %d.name, version = %p.version, %why, "model file not fetched for an image replica");
            }
        }
    }
    let args: Vec<String> = runtime.args.iter().map(|a| expand_vars(a, &env)).collect();
    let argv = if image {
        let mut argv = vec![capstan_agent::container::KEEP_ENTRYPOINT.to_string()];
        argv.extend(args);
        argv
    } else {
        let exe = std::env::current_exe().map_err(|e| Error::Io("the capstan executable".into(), e))?;
        let mut argv = vec![
            exe.display().to_string(),
            "--server".into(),
            ctx.tracking_uri.clone(),
            "serve".into(),
            "--model".into(),
            p.source.clone(),
            "--name".into(),
            d.name.clone(),
            "--listen".into(),
            endpoint.clone(),
            "--model-version".into(),
            p.version.clone(),
        ];
        argv.extend(args);
        argv
    };
    let key = version_key(&p.version);
    let resources = spec.resources.as_ref();
    let rs = ReplicaSpec {
        namespace: d.namespace.clone(),
        job_name: d.name.clone(),
        job_uid: format!("{UID_PREFIX}{}", d.uid),
        index,
        attempt: key,
        runtime: if image { Runtime::Container } else { Runtime::Process },
        image: if image { runtime.image.clone() } else { None },
        argv,
        env,
        working_dir: None,
        gpus: gpus.to_vec(),
        cpu: resources.and_then(|r| r.cpu.as_deref()).and_then(crate::mapping::parse_cpu),
        memory_bytes: resources.and_then(|r| r.memory.as_deref()).and_then(crate::mapping::parse_memory),
        log_path: crate::standalone::log_path(&ctx.data_dir, &d.namespace, &d.name, &d.uid, key, index),
        mounts,
    };
    ctx.agent.start(&rs).await?;
    tracing::info!(deployment = %d.name, version = %p.version, index, %endpoint, ?gpus, image, "started a model replica");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(ready: &[&str], previous: Option<&str>, canary: Option<&str>) -> PlanInput {
        PlanInput {
            stable: ("2".into(), "models:/m/2".into()),
            previous_stable: previous.map(|v| (v.to_string(), format!("models:/m/{v}"))),
            canary: canary.map(|v| (v.to_string(), format!("models:/m/{v}"))),
            canary_percent: 20,
            ready: ready.iter().map(|s| s.to_string()).collect(),
            replicas: 1,
        }
    }

    fn weights(p: &[PlannedVersion]) -> Vec<(&str, u32)> {
        p.iter().map(|v| (v.version.as_str(), v.weight)).collect()
    }

    #[test]
    fn canary_gets_its_share_once_ready() {
        assert_eq!(weights(&plan(&input(&["2"], None, Some("3")))), [("2", 100), ("3", 0)]);
        assert_eq!(weights(&plan(&input(&["2", "3"], None, Some("3")))), [("2", 80), ("3", 20)]);
        // The canary equal to the stable version is no canary.
        assert_eq!(weights(&plan(&input(&["2"], None, Some("2")))), [("2", 100)]);
    }

    #[test]
    fn roll_forward_waits_for_the_new_version() {
        assert_eq!(weights(&plan(&input(&["1"], Some("1"), None))), [("2", 0), ("1", 100)]);
        assert_eq!(weights(&plan(&input(&["1", "2"], Some("1"), None))), [("2", 100)]);
        // Same version as before: nothing to roll.
        assert_eq!(weights(&plan(&input(&["2"], Some("2"), None))), [("2", 100)]);
    }

    #[test]
    fn args_expand_like_kubernetes() {
        let env = vec![("PORT".to_string(), "8123".to_string()), ("M".to_string(), "models:/m/2".to_string())];
        assert_eq!(expand_vars("--http-port=$(PORT)", &env), "--http-port=8123");
        assert_eq!(expand_vars("$(M) at 0.0.0.0:$(PORT)", &env), "models:/m/2 at 0.0.0.0:8123");
        assert_eq!(expand_vars("$(NOPE) $$(PORT) $5 $(", &env), "$(NOPE) $(PORT) $5 $(");
        assert_eq!(expand_vars("plain", &env), "plain");
    }

    fn pool(n: u32, jobs: &[u32], others: &[u32]) -> GpuPool {
        GpuPool {
            gpus: (0..n).map(|i| (i, "NVIDIA-H100-80GB-HBM3".to_string())).collect(),
            jobs: jobs.iter().copied().collect(),
            deployments: others.iter().copied().collect(),
        }
    }

    #[test]
    fn gpus_never_double_booked() {
        let p = pool(4, &[0, 1], &[2]);
        assert_eq!(pick_gpus(&p, None, &BTreeSet::new(), 1), Ok(vec![3]));
        let why = pick_gpus(&p, None, &[3].into_iter().collect(), 1).unwrap_err();
        assert!(
            why.contains("0 free of 4 GPUs (2 held by TrainingJobs, 1 by other deployments, 1 by this one)"),
            "{why}"
        );
        assert_eq!(pick_gpus(&pool(4, &[], &[]), None, &BTreeSet::new(), 2), Ok(vec![0, 1]));
        assert_eq!(pick_gpus(&pool(4, &[], &[]), Some("nvidia h100 80gb hbm3"), &BTreeSet::new(), 1), Ok(vec![0]));
        assert!(pick_gpus(&pool(4, &[], &[]), Some("A100"), &BTreeSet::new(), 1).unwrap_err().contains("0 A100 GPUs"));
    }

    proptest::proptest! {
        #[test]
        fn picked_gpus_are_free(n in 0u32..8, jobs in proptest::collection::btree_set(0u32..8, 0..8),
                                others in proptest::collection::btree_set(0u32..8, 0..8), want in 0u32..4) {
            let p = GpuPool { gpus: (0..n).map(|i| (i, "g".to_string())).collect(), jobs: jobs.clone(), deployments: others.clone() };
            let free = (0..n).filter(|g| !jobs.contains(g) && !others.contains(g)).count();
            match pick_gpus(&p, None, &BTreeSet::new(), want) {
                Ok(g) => {
                    proptest::prop_assert_eq!(g.len(), want as usize);
                    proptest::prop_assert!(g.iter().all(|x| *x < n && !jobs.contains(x) && !others.contains(x)));
                }
                Err(_) => proptest::prop_assert!(free < want as usize),
            }
        }
    }

    #[test]
    fn version_keys() {
        assert_eq!(version_key("7"), 7);
        let k = version_key("s3://b/m.onnx");
        assert!(k >= 0x8000_0000);
        assert_eq!(k, version_key("s3://b/m.onnx"));
        assert!(owns("mdep-abc") && !owns("abc"));
    }
}
