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
//! 4. the canary verdict ([`capstan_serving::canary::verdict`]) over the answers the proxy
//!    recorded: Promote or Rollback, with an event and a condition saying why;
//! 5. write the status (only when it changed).
//!
//! Replicas carry job uid `mdep-<uid>`, the version key as attempt and the replica index, so
//! the TrainingJob pass leaves them alone ([`owns`]) and a restarted `capstan up` adopts them
//! (their ports are kept in the status).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use capstan_agent::{FoundReplica, Observation, ReplicaSpec};
use capstan_crds::modeldeployment::{
    CanaryPhase, CanaryStatus, DeploymentPhase, ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, TrafficTarget,
    VersionRole, VersionState, VersionStatus,
};
use capstan_crds::trainingjob::Runtime;
use capstan_crds::Condition;
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
        }
    }
    for d in deployments {
        let reps = by_uid.remove(d.uid.as_str()).unwrap_or_default();
        if let Err(e) = reconcile(ctx, &d, &reps).await {
            tracing::warn!(deployment = %d.name, error = %e, "model deployment reconcile failed");
            let _ = ctx.store.add_event(&d.uid, "Warning", "ReconcileError", &e.to_string()).await;
        }
    }
    Ok(())
}

/// One pass for one deployment.
async fn reconcile(ctx: &Context, d: &StoredResource, found: &[&FoundReplica]) -> Result<(), Error> {
    let table = RouteTable::global();
    if d.deletion_timestamp.is_some() {
        for f in found {
            ctx.agent.stop(&f.handle, GRACE).await?;
            ctx.agent.cleanup(&f.handle).await?;
        }
        table.remove(&d.name);
        ctx.store.remove_resource(&d.uid).await?;
        return Ok(());
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
            return write(ctx, d, &before, status, events).await;
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
    let planned = plan(&PlanInput {
        stable: stable.clone(),
        previous_stable: previous_stable.clone(),
        canary: canary_ref.clone(),
        canary_percent,
        ready: ready.clone(),
        replicas,
    });

    // Replicas: stop those of versions not planned; start or restart the planned ones.
    for f in found {
        if !planned.iter().any(|p| version_key(&p.version) == f.attempt) || f.index >= replicas {
            let v = versions_seen.get(&f.attempt).cloned().unwrap_or_else(|| f.attempt.to_string());
            ctx.agent.stop(&f.handle, GRACE).await?;
            ctx.agent.cleanup(&f.handle).await?;
            tracing::info!(deployment = %d.name, version = %v, index = f.index, "stopped a model replica");
        }
    }
    let mut version_statuses = Vec::new();
    let mut backends = Vec::new();
    for p in &planned {
        let key = version_key(&p.version);
        let mut endpoints = Vec::new();
        let mut ready_endpoints = Vec::new();
        let mut message = None;
        for index in 0..p.replicas {
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
                    start_replica(ctx, d, &spec, p, index, &ep).await?;
                    ep
                }
            };
            if ready_endpoints_seen.contains(&endpoint) {
                ready_endpoints.push(endpoint.clone());
            }
            endpoints.push(endpoint);
        }
        backends.push(Backend { version: p.version.clone(), endpoints: ready_endpoints.clone(), weight: p.weight });
        version_statuses.push(VersionStatus {
            version: p.version.clone(),
            role: p.role,
            state: if !ready_endpoints.is_empty() { VersionState::Ready } else { VersionState::Pending },
            replicas: p.replicas,
            ready_replicas: ready_endpoints.len() as u32,
            traffic_percent: if ready_endpoints.is_empty() { 0 } else { p.weight },
            endpoints,
            message,
        });
    }
    table.publish(&d.name, backends);

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
    let ready_msg = match &serving_stable {
        Some(v) => format!("version {v} serves at {}", status.url.clone().unwrap_or_default()),
        None => "waiting for a ready replica".into(),
    };
    set_condition(
        &mut status.conditions,
        condition(
            "Ready",
            serving_stable.is_some(),
            if serving_stable.is_some() { "Serving" } else { "Starting" },
            &ready_msg,
        ),
    );
    write(ctx, d, &before, status, events).await
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

async fn start_replica(
    ctx: &Context,
    d: &StoredResource,
    spec: &ModelDeploymentSpec,
    p: &PlannedVersion,
    index: u32,
    endpoint: &str,
) -> Result<(), Error> {
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
        endpoint.into(),
        "--model-version".into(),
        p.version.clone(),
    ];
    let runtime = spec.runtime.clone().unwrap_or_default();
    argv.extend(runtime.args.iter().cloned());
    let mut env: Vec<(String, String)> = runtime.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    env.push(("CAPSTAN_MODEL_URI".into(), p.source.clone()));
    env.push(("CAPSTAN_MODEL_VERSION".into(), p.version.clone()));
    let key = version_key(&p.version);
    let rs = ReplicaSpec {
        namespace: d.namespace.clone(),
        job_name: d.name.clone(),
        job_uid: format!("{UID_PREFIX}{}", d.uid),
        index,
        attempt: key,
        runtime: Runtime::Process,
        image: None,
        argv,
        env,
        working_dir: None,
        gpus: Vec::new(),
        cpu: None,
        memory_bytes: None,
        log_path: crate::standalone::log_path(&ctx.data_dir, &d.namespace, &d.name, &d.uid, key, index),
        mounts: Vec::new(),
    };
    ctx.agent.start(&rs).await?;
    tracing::info!(deployment = %d.name, version = %p.version, index, %endpoint, "started a model replica");
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
    fn version_keys() {
        assert_eq!(version_key("7"), 7);
        let k = version_key("s3://b/m.onnx");
        assert!(k >= 0x8000_0000);
        assert_eq!(k, version_key("s3://b/m.onnx"));
        assert!(owns("mdep-abc") && !owns("abc"));
    }
}
