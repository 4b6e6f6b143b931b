//! ModelDeployments on Kubernetes: one apps/v1 Deployment per served version (the stable one
//! and, while there is one, the canary), a Service in front of all of them, and, where the
//! Gateway API is installed, an HTTPRoute whose backend weights carry the exact traffic split
//! (one Service per version behind it). Without the Gateway API the front Service spreads
//! requests over every ready replica, so the split follows the replica counts.
//!
//! The canary is judged as under `capstan up` (the same
//! [`capstan_serving::canary::verdict`]): while it is Progressing, every pass scrapes the
//! `/metrics` of both versions' Ready pods (requests by outcome, the latency histogram) into
//! a [`capstan_serving::canary::ScrapeHistory`] per version, whose counter differences over
//! the canary window give the requests, errors and p99 ([`canary_step`]; a pod that cannot be
//! read means Wait). Rollback: the canary's weight goes to 0 and its Deployment is removed;
//! Promote: it becomes the stable version (100%) and the old version's Deployment is removed.
//! Either is recorded in `status.canary`, a condition and an event (`CanaryRolledBack` /
//! `CanaryPromoted`).
//!
//! With `autoscaling`, each version Deployment's `replicas` follows the version's load:
//! every pass scrapes the `/metrics` of the version's Ready pods (`capstan_serving_in_flight`,
//! `capstan_serving_requests_total`), averages them over a window and runs the same
//! [`capstan_serving::autoscale::decide`] as `capstan up`; when a Ready pod cannot be scraped
//! (or none is Ready) the count holds, within minReplicas..maxReplicas. Each change is an
//! event (`ScaledUp` / `ScaledDown`) and the `Scaled` condition, with the load against the
//! target.
//!
//! The objects are plain functions of the resource ([`version_deployment`],
//! [`front_service`], [`version_service`], [`http_route`], [`deployment_status`]); the
//! adapter below applies them with server-side apply (field manager
//! [`super::FIELD_MANAGER`]), removes versions no longer wanted, and writes the status once.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_crds::modeldeployment::{
    CanaryPhase, CanaryStatus, DeploymentPhase, ModelDeployment, ModelDeploymentStatus, ModelRef, RuntimeType,
    TrafficTarget, VersionRole, VersionState, VersionStatus,
};
use capstan_serving::autoscale::{Autoscalers, ScalePolicy};
use capstan_serving::canary::{CanaryPolicy, PodCounters, ScrapeHistory, Verdict, WindowStats};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use super::{objects, Context, FIELD_MANAGER};
use crate::Error;

/// Label: the ModelDeployment a Deployment, Service or pod belongs to.
pub const LABEL_DEPLOYMENT: &str = "capstan.dev/model-deployment";
/// Label: the served version.
pub const LABEL_VERSION: &str = "capstan.dev/model-version";
/// Port the builtin server listens on in its pod.
pub const BUILTIN_PORT: u32 = 8080;
/// Port of the front Service.
pub const SERVICE_PORT: i32 = 80;

/// One version to serve: its key (registry version, or a sanitised URI), the `--model`
/// source, its role, share of traffic and replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// Key, used in object names and labels.
    pub version: String,
    /// What `capstan serve --model` loads.
    pub source: String,
    /// Stable or canary.
    pub role: VersionRole,
    /// Percent of requests.
    pub percent: u32,
    /// Replicas.
    pub replicas: u32,
}

/// A label-safe key for a version: the registry version, else a sanitised source.
pub fn version_key(r: &ModelRef, resolved: Option<&str>) -> String {
    if let Some(v) = r.version {
        return v.to_string();
    }
    if let Some(v) = resolved {
        return v.to_string();
    }
    let s = r.source().unwrap_or_default();
    let mut key = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && key.ends_with('-')) {
            key.push(c);
        }
    }
    key.truncate(40);
    key.trim_matches('-').to_string()
}

/// The versions a deployment wants. `resolve` gives an alias's current version (None when
/// unknown: the alias itself is then served and keyed).
pub fn wanted(md: &ModelDeployment, resolve: &dyn Fn(&ModelRef) -> Option<String>) -> Vec<Want> {
    let spec = &md.spec;
    let replicas = spec.min_replicas.unwrap_or(1).max(1);
    let source = |r: &ModelRef, v: Option<&str>| match (&r.registered_model, v) {
        (Some(name), Some(v)) if r.uri.is_none() => format!("models:/{name}/{v}"),
        _ => r.source().unwrap_or_default(),
    };
    let stable_v = resolve(&spec.model);
    let stable_key = version_key(&spec.model, stable_v.as_deref());
    let mut out = vec![Want {
        version: stable_key.clone(),
        source: source(&spec.model, stable_v.as_deref()),
        role: VersionRole::Stable,
        percent: 100,
        replicas,
    }];
    if let Some(c) = &spec.canary {
        let cv = resolve(&c.model);
        let key = version_key(&c.model, cv.as_deref());
        let decided = |phase: CanaryPhase| {
            md.status.as_ref().and_then(|s| s.canary.as_ref()).is_some_and(|cs| cs.version == key && cs.phase == phase)
        };
        if key != stable_key && decided(CanaryPhase::Promoted) {
            // A promoted canary is the stable version from then on; the old one goes.
            out[0] = Want { version: key, source: source(&c.model, cv.as_deref()), ..out[0].clone() };
            return out;
        }
        if key != stable_key && !decided(CanaryPhase::RolledBack) {
            out[0].percent = 100 - c.canary_percent;
            // Enough canary replicas for its share, at least one.
            let canary_replicas = ((replicas * c.canary_percent).div_ceil(100)).max(1);
            out.push(Want {
                version: key,
                source: source(&c.model, cv.as_deref()),
                role: VersionRole::Canary,
                percent: c.canary_percent,
                replicas: canary_replicas,
            });
        }
    }
    out
}

fn owner(md: &ModelDeployment) -> OwnerReference {
    OwnerReference {
        api_version: capstan_crds::API_VERSION.into(),
        kind: "ModelDeployment".into(),
        name: md.name_any(),
        uid: md.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Name of a version's Deployment and Service.
pub fn version_name(md: &str, version: &str) -> String {
    let mut n = if version.chars().all(|c| c.is_ascii_digit()) {
        format!("{md}-v{version}")
    } else {
        format!("{md}-{version}")
    };
    n.truncate(63);
    n.trim_end_matches('-').to_string()
}

fn labels(md: &str, version: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_DEPLOYMENT.to_string(), md.to_string());
    l.insert(objects::LABEL_MANAGED_BY.to_string(), "capstan".to_string());
    if let Some(v) = version {
        l.insert(LABEL_VERSION.to_string(), v.to_string());
    }
    l
}

/// Settings of the serving pods.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// Image holding the `capstan` binary (the builtin runtime).
    pub image: String,
    /// Server the builtin runtime resolves `models:/` through.
    pub server: Option<String>,
}

/// The Deployment of one version.
pub fn version_deployment(md: &ModelDeployment, want: &Want, s: &ServingSettings) -> Deployment {
    let name = md.name_any();
    let spec = &md.spec;
    let rt = spec.runtime.clone().unwrap_or_default();
    let builtin = rt.type_.unwrap_or_default() == RuntimeType::Builtin;
    let port = rt.port.unwrap_or(BUILTIN_PORT);
    let (image, args) = if builtin {
        let mut args = vec![
            "serve".to_string(),
            "--model".into(),
            want.source.clone(),
            "--name".into(),
            name.clone(),
            "--listen".into(),
            format!("0.0.0.0:{port}"),
        ];
        if let Some(server) = &s.server {
            args.extend(["--server".to_string(), server.clone()]);
        }
        args.extend(rt.args.iter().cloned());
        (s.image.clone(), Some(args))
    } else {
        (rt.image.clone().unwrap_or_default(), (!rt.args.is_empty()).then(|| rt.args.clone()))
    };
    let mut env: Vec<EnvVar> = rt
        .env
        .iter()
        .map(|e| EnvVar { name: e.name.clone(), value: Some(e.value.clone()), value_from: None })
        .collect();
    env.push(EnvVar { name: "CAPSTAN_MODEL_SOURCE".into(), value: Some(want.source.clone()), value_from: None });
    if !builtin {
        // The port contract of image runtimes (as on `capstan up`, where it is a free port).
        env.push(EnvVar { name: "PORT".into(), value: Some(port.to_string()), value_from: None });
    }
    let resources = objects::resource_requirements(spec.resources.as_ref(), spec.gpus.unwrap_or(0));
    let node_selector = spec.gpu_product.as_ref().map(|p| {
        let mut m = BTreeMap::new();
        m.insert("nvidia.com/gpu.product".to_string(), p.clone());
        m
    });
    let pod_labels = labels(&name, Some(&want.version));
    Deployment {
        metadata: ObjectMeta {
            name: Some(version_name(&name, &want.version)),
            namespace: md.namespace(),
            labels: Some(pod_labels.clone()),
            owner_references: Some(vec![owner(md)]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(want.replicas as i32),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some(image),
                        args,
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: port as i32,
                            ..Default::default()
                        }]),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/v2/health/ready".into()),
                                port: IntOrString::String("http".into()),
                                ..Default::default()
                            }),
                            period_seconds: Some(2),
                            ..Default::default()
                        }),
                        liveness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/v2/health/live".into()),
                                port: IntOrString::String("http".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        resources: Some(resources),
                        ..Default::default()
                    }],
                    node_selector,
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn service(md: &ModelDeployment, name: String, selector: BTreeMap<String, String>, target: u32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: md.namespace(),
            labels: Some(labels(&md.name_any(), None)),
            owner_references: Some(vec![owner(md)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(target as i32)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn target_port(md: &ModelDeployment) -> u32 {
    md.spec.runtime.as_ref().and_then(|r| r.port).unwrap_or(BUILTIN_PORT)
}

/// The Service in front of every version.
pub fn front_service(md: &ModelDeployment) -> Service {
    service(md, md.name_any(), labels(&md.name_any(), None), target_port(md))
}

/// The Service of one version (an HTTPRoute backend).
pub fn version_service(md: &ModelDeployment, version: &str) -> Service {
    service(md, version_name(&md.name_any(), version), labels(&md.name_any(), Some(version)), target_port(md))
}

/// The Gateway API HTTPRoute that splits `/v2/models/{name}` by weight across versions.
pub fn http_route(md: &ModelDeployment, wants: &[Want]) -> Value {
    let name = md.name_any();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "namespace": md.namespace(),
            "labels": labels(&name, None),
            "ownerReferences": [owner(md)],
        },
        "spec": {
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/v2/models/{name}")}}],
                "backendRefs": wants.iter().map(|w| json!({
                    "name": version_name(&name, &w.version), "port": SERVICE_PORT, "weight": w.percent,
                })).collect::<Vec<_>>(),
            }],
        },
    })
}

/// The status from what is wanted and the Deployments' ready replicas (by version).
pub fn deployment_status(
    md: &ModelDeployment,
    wants: &[Want],
    ready: &BTreeMap<String, u32>,
    previous: &ModelDeploymentStatus,
    now: i64,
) -> ModelDeploymentStatus {
    let name = md.name_any();
    let ns = md.namespace().unwrap_or_default();
    let versions: Vec<VersionStatus> = wants
        .iter()
        .map(|w| {
            let r = ready.get(&w.version).copied().unwrap_or(0);
            VersionStatus {
                version: w.version.clone(),
                role: w.role,
                state: if r > 0 { VersionState::Ready } else { VersionState::Pending },
                replicas: w.replicas,
                desired_replicas: None,
                ready_replicas: r,
                traffic_percent: w.percent,
                endpoints: vec![format!("{}.{ns}.svc:{SERVICE_PORT}", version_name(&name, &w.version))],
                message: None,
                replica_gpus: Vec::new(),
            }
        })
        .collect();
    let stable_ready = versions.first().is_some_and(|v| v.ready_replicas > 0);
    let all_ready = versions.iter().all(|v| v.ready_replicas >= v.replicas);
    let has_canary = versions.len() > 1;
    let phase = match (stable_ready, all_ready, has_canary) {
        (false, _, _) => DeploymentPhase::Pending,
        (true, true, true) => DeploymentPhase::Canary,
        (true, true, false) => DeploymentPhase::Ready,
        (true, false, _) => DeploymentPhase::Degraded,
    };
    let mut conditions = previous.conditions.clone();
    let (st, reason, msg) = if stable_ready {
        (true, "Ready", format!("{} of {} replicas ready", versions[0].ready_replicas, versions[0].replicas))
    } else {
        (false, "ReplicasStarting", "no replica of the stable version is ready yet".to_string())
    };
    crate::mapping::set_condition(&mut conditions, "Ready", st, reason, &msg, now);
    let mut canary = previous.canary.clone();
    if let Some(c) = wants.iter().find(|w| w.role == VersionRole::Canary) {
        let r = ready.get(&c.version).copied().unwrap_or(0);
        let cs = canary.get_or_insert_with(Default::default);
        if cs.version != c.version {
            *cs = Default::default();
            cs.version = c.version.clone();
        }
        cs.traffic_percent = c.percent;
        cs.phase = if r > 0 { CanaryPhase::Progressing } else { CanaryPhase::Starting };
        if cs.phase == CanaryPhase::Progressing && cs.started_at.is_none() {
            cs.started_at =
                chrono::DateTime::from_timestamp(now, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    ModelDeploymentStatus {
        phase,
        url: Some(format!("http://{name}.{ns}.svc/v2/models/{name}")),
        stable_version: wants.first().map(|w| w.version.clone()),
        ready_replicas: versions.iter().map(|v| v.ready_replicas).sum(),
        traffic: wants.iter().map(|w| TrafficTarget { version: w.version.clone(), percent: w.percent }).collect(),
        replicas: versions.iter().map(|v| v.replicas).sum(),
        desired_replicas: None,
        versions,
        canary,
        observed_generation: md.meta().generation,
        conditions,
    }
}

/// Scale states and scrape windows between passes, by `uid/version`.
fn autoscalers() -> &'static Autoscalers {
    static A: std::sync::OnceLock<Autoscalers> = std::sync::OnceLock::new();
    A.get_or_init(Autoscalers::default)
}

/// The Ready pods of one version: (name, `ip:port`).
pub fn ready_pods(pods: &[Arc<Pod>], ns: &str, md: &str, version: &str, port: u32) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns)
                && p.meta().deletion_timestamp.is_none()
                && p.labels().get(LABEL_DEPLOYMENT).map(String::as_str) == Some(md)
                && p.labels().get(LABEL_VERSION).map(String::as_str) == Some(version)
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
            Some((p.name_any(), addr))
        })
        .collect()
}

fn scrape_client() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_millis(300))
            .timeout(std::time::Duration::from_millis(800))
            .build()
            .expect("HTTP client")
    })
}

/// Each pod's (name, in flight, requests counter); `None` when there is no pod or one of
/// them cannot be read (the count then holds).
async fn scrape(pods: &[(String, String)]) -> Option<Vec<(String, f64, f64)>> {
    if pods.is_empty() {
        return None;
    }
    let reads = pods.iter().map(|(name, addr)| async move {
        let text = scrape_client().get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        let (in_flight, requests) = capstan_serving::autoscale::parse_serving_metrics(&text)?;
        Some((name.clone(), in_flight, requests))
    });
    futures_util::future::join_all(reads).await.into_iter().collect()
}

/// Sets each version's replicas from its load (autoscaling only); the desired counts by
/// version, and (reason, message) of each change.
async fn autoscale(
    ctx: &Context,
    md: &ModelDeployment,
    wants: &mut [Want],
) -> (BTreeMap<String, u32>, Vec<(&'static str, String)>) {
    let mut desired = BTreeMap::new();
    let mut scaled = Vec::new();
    let Some(base) = crate::deployments::scale_policy(&md.spec) else { return (desired, scaled) };
    let ns = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let uid = md.uid().unwrap_or_default();
    let pods = ctx.pods.state();
    for w in wants.iter_mut() {
        // A canary's floor is its share of minReplicas.
        let pol = ScalePolicy { min: w.replicas.clamp(1, base.max), ..base.clone() };
        let previous =
            md.status.as_ref().and_then(|s| s.versions.iter().find(|v| v.version == w.version)).map(|v| v.replicas);
        let current = previous.unwrap_or(pol.min);
        let samples = scrape(&ready_pods(&pods, &ns, &name, &w.version, target_port(md))).await;
        let now = capstan_serving::route::now_ms();
        let decision = autoscalers().with(&format!("{uid}/{}", w.version), |state, window| {
            let load = samples.and_then(|s| {
                window.add(now, &s);
                window.load(now, capstan_serving::autoscale::LOAD_WINDOW_MS).map(|l| l.value(pol.metric))
            });
            capstan_serving::autoscale::decide(&pol, state, load, current, now)
        });
        w.replicas = decision.replicas;
        desired.insert(w.version.clone(), decision.desired);
        if let (Some(reason), Some(_)) = (crate::deployments::scale_reason(&decision), previous) {
            scaled.push((
                reason,
                format!("version {}: {current} -> {} replicas: {}", w.version, decision.replicas, decision.reason),
            ));
        }
    }
    (desired, scaled)
}

/// An event and a condition to record: (event type, reason, message).
pub type CanaryEvent = (kube::runtime::events::EventType, &'static str, String);

/// One pass's judgement of a Progressing canary (pure), as `capstan up` makes it: the
/// [`capstan_serving::canary::verdict`] over the window stats of the stable version and the
/// canary, written into the canary status; the event to record on a decision. Stats are
/// `None` when some Ready pod's `/metrics` could not be read (or no pod is Ready, or a
/// single scrape is kept so far): the verdict is then Wait, never Promote on missing data.
pub fn canary_step(
    cs: &CanaryStatus,
    policy: &CanaryPolicy,
    stable: Option<WindowStats>,
    canary: Option<WindowStats>,
    elapsed_ms: u64,
) -> (CanaryStatus, Option<CanaryEvent>) {
    use kube::runtime::events::EventType;
    let mut cs = cs.clone();
    let cv = cs.version.clone();
    let (Some(s), Some(k)) = (stable, canary) else {
        cs.verdict = Some("Wait".into());
        cs.reason = Some(format!(
            "no metrics yet from the {} version's pods (every Ready pod's /metrics is scraped each pass)",
            if stable.is_none() { "stable" } else { "canary" }
        ));
        return (cs, None);
    };
    cs.requests = k.requests;
    cs.errors = k.errors;
    cs.p99_ms = k.p99_ms;
    cs.stable_requests = s.requests;
    cs.stable_errors = s.errors;
    cs.stable_p99_ms = s.p99_ms;
    match capstan_serving::canary::verdict(policy, &s, &k, elapsed_ms >= policy.window_ms) {
        Verdict::Wait { reason } => {
            cs.verdict = Some("Wait".into());
            cs.reason = Some(reason);
            (cs, None)
        }
        Verdict::Rollback { reason } => {
            cs.verdict = Some("Rollback".into());
            cs.phase = CanaryPhase::RolledBack;
            cs.traffic_percent = 0;
            cs.reason = Some(reason.clone());
            (cs, Some((EventType::Warning, "CanaryRolledBack", format!("version {cv} rolled back: {reason}"))))
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
            (cs, Some((EventType::Normal, "CanaryPromoted", format!("version {cv} promoted: {reason}"))))
        }
    }
}

/// Scrape histories of canaries between passes, by `uid/role/version`.
fn canary_histories() -> &'static std::sync::Mutex<BTreeMap<String, ScrapeHistory>> {
    static H: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, ScrapeHistory>>> = std::sync::OnceLock::new();
    H.get_or_init(Default::default)
}

/// Each Ready pod's cumulative counters; `None` when there is no pod or one of them cannot
/// be read.
async fn scrape_counters(pods: &[(String, String)]) -> Option<Vec<(String, PodCounters)>> {
    if pods.is_empty() {
        return None;
    }
    let reads = pods.iter().map(|(name, addr)| async move {
        let text = scrape_client().get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        Some((name.clone(), capstan_serving::canary::parse_pod_counters(&text)?))
    });
    futures_util::future::join_all(reads).await.into_iter().collect()
}

/// Judges a Progressing canary from its pods' and the stable version's pods' `/metrics`:
/// the updated canary status and the event of a decision. `None` when there is no canary
/// under observation (its scrape histories are then forgotten).
async fn judge_canary(
    ctx: &Context,
    md: &ModelDeployment,
    wants: &[Want],
) -> Option<(CanaryStatus, Option<CanaryEvent>)> {
    let uid = md.uid().unwrap_or_default();
    let stable = wants.iter().find(|w| w.role == VersionRole::Stable);
    let canary = wants.iter().find(|w| w.role == VersionRole::Canary);
    let cs = md.status.as_ref().and_then(|s| s.canary.as_ref());
    let (Some(stable), Some(canary), Some(spec), Some(cs)) = (stable, canary, md.spec.canary.as_ref(), cs) else {
        canary_histories().lock().expect("canary lock").retain(|k, _| !k.starts_with(&format!("{uid}/")));
        canary_written().lock().expect("canary lock").remove(&uid);
        return None;
    };
    if cs.version != canary.version || cs.phase != CanaryPhase::Progressing {
        canary_histories().lock().expect("canary lock").retain(|k, _| !k.starts_with(&format!("{uid}/")));
        canary_written().lock().expect("canary lock").remove(&uid);
        return None;
    }
    let policy = crate::deployments::policy(spec);
    let ns = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let pods = ctx.pods.state();
    let port = target_port(md);
    let s = scrape_counters(&ready_pods(&pods, &ns, &name, &stable.version, port)).await;
    let k = scrape_counters(&ready_pods(&pods, &ns, &name, &canary.version, port)).await;
    let now = capstan_serving::route::now_ms();
    let stats = {
        let mut h = canary_histories().lock().expect("canary lock");
        // A new canary starts fresh histories.
        let prefix = format!("{uid}/");
        let keys =
            [format!("{uid}/stable/{}/{}", stable.version, canary.version), format!("{uid}/canary/{}", canary.version)];
        h.retain(|k, _| !k.starts_with(&prefix) || keys.contains(k));
        let mut stats = Vec::new();
        for (key, sample) in keys.iter().zip([s, k]) {
            let hist = h.entry(key.clone()).or_default();
            // A failed scrape leaves a gap, not a zero.
            stats.push(sample.and_then(|pods| {
                hist.add(now, pods, policy.window_ms);
                hist.stats(now, policy.window_ms)
            }));
        }
        stats
    };
    let elapsed = cs
        .started_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as u64)
        .unwrap_or(0);
    let (next, event) = canary_step(cs, &policy, stats[0], stats[1], elapsed);
    // Each status write wakes a pass: while only the counts of a Wait change, write them at
    // most every CANARY_STATUS_REFRESH_MS, so a canary under traffic does not spin passes.
    let mut written = canary_written().lock().expect("canary lock");
    let last = written.get(&uid).copied();
    if event.is_none() && cs.verdict.is_some() && last.is_some_and(|t| now < t + CANARY_STATUS_REFRESH_MS) {
        return Some((cs.clone(), None));
    }
    written.insert(uid, now);
    Some((next, event))
}

/// Least time between two status writes of a waiting canary's counts.
const CANARY_STATUS_REFRESH_MS: u64 = 2000;

/// When each deployment's canary status was last written (by uid).
fn canary_written() -> &'static std::sync::Mutex<BTreeMap<String, u64>> {
    static W: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, u64>>> = std::sync::OnceLock::new();
    W.get_or_init(Default::default)
}

/// Whether the Gateway API's HTTPRoute is served by this cluster.
async fn gateway_api(ctx: &Context) -> bool {
    let gvk = kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    api.list(&kube::api::ListParams::default().limit(1)).await.is_ok()
}

/// Reconcile every ModelDeployment.
pub async fn reconcile_all(ctx: &Context) -> Result<(), Error> {
    let mds = ctx.model_deployments.state();
    let uids: Vec<String> = mds.iter().map(|m| format!("{}/", m.uid().unwrap_or_default())).collect();
    autoscalers().retain(|k| uids.iter().any(|u| k.starts_with(u.as_str())));
    canary_histories().lock().expect("canary lock").retain(|k, _| uids.iter().any(|u| k.starts_with(u.as_str())));
    canary_written().lock().expect("canary lock").retain(|k, _| uids.iter().any(|u| u.trim_end_matches('/') == k));
    if mds.is_empty() {
        return Ok(());
    }
    let gateway = gateway_api(ctx).await;
    for md in mds {
        if md.meta().deletion_timestamp.is_some() {
            continue; // owner references let the garbage collector remove what it owns
        }
        if let Err(e) = reconcile(ctx, &md, gateway).await {
            tracing::warn!(deployment = %md.name_any(), error = %e, "model deployment reconcile failed");
        }
    }
    Ok(())
}

async fn resolve(ctx: &Context, r: &ModelRef) -> Option<String> {
    let (Some(name), Some(alias)) = (&r.registered_model, &r.alias) else { return None };
    ctx.tracking.as_ref()?.alias_version(name, alias).await.ok()
}

async fn reconcile(ctx: &Context, md: &Arc<ModelDeployment>, gateway: bool) -> Result<(), Error> {
    let ns = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let stable = resolve(ctx, &md.spec.model).await;
    let canary = match &md.spec.canary {
        Some(c) => resolve(ctx, &c.model).await,
        None => None,
    };
    let resolver = |r: &ModelRef| {
        if *r == md.spec.model {
            stable.clone()
        } else {
            canary.clone()
        }
    };
    let mut wants = wanted(md, &resolver);
    // The canary verdict, before anything is applied: a decision changes what is wanted.
    let mut view: Option<ModelDeployment> = None;
    let mut canary_event = None;
    if let Some((cs, event)) = judge_canary(ctx, md, &wants).await {
        let mut v = (**md).clone();
        v.status.get_or_insert_with(Default::default).canary = Some(cs);
        if event.is_some() {
            wants = wanted(&v, &resolver);
        }
        canary_event = event;
        view = Some(v);
    }
    let md_now: &ModelDeployment = view.as_ref().unwrap_or(md);
    let (desired, scaled) = autoscale(ctx, md_now, &mut wants).await;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    for w in &wants {
        let d = version_deployment(md, w, &ctx.serving);
        deps.patch(&version_name(&name, &w.version), &pp, &Patch::Apply(&d)).await?;
        let s = version_service(md, &w.version);
        svcs.patch(&version_name(&name, &w.version), &pp, &Patch::Apply(&s)).await?;
    }
    svcs.patch(&name, &pp, &Patch::Apply(&front_service(md))).await?;
    if gateway {
        let gvk = kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        routes.patch(&name, &pp, &Patch::Apply(&http_route(md, &wants))).await?;
    }
    // Versions no longer wanted go (a finished canary, a moved alias).
    let mut ready = BTreeMap::new();
    for d in ctx.kube_deployments.state() {
        if d.namespace().as_deref() != Some(ns.as_str()) || d.labels().get(LABEL_DEPLOYMENT) != Some(&name) {
            continue;
        }
        let v = d.labels().get(LABEL_VERSION).cloned().unwrap_or_default();
        if wants.iter().any(|w| w.version == v) {
            ready.insert(v, d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0).max(0) as u32);
        } else {
            let n = d.name_any();
            for r in [
                deps.delete(&n, &DeleteParams::background()).await.map(|_| ()),
                svcs.delete(&n, &DeleteParams::background()).await.map(|_| ()),
            ] {
                match r {
                    Ok(()) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let previous = md_now.status.clone().unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let mut status = deployment_status(md, &wants, &ready, &previous, now);
    if let Some((type_, reason, message)) = &canary_event {
        let (cond_reason, other) = if *reason == "CanaryPromoted" {
            ("MetricsPassed", "CanaryRolledBack")
        } else {
            ("MetricsFailed", "CanaryPromoted")
        };
        status.conditions.retain(|c| c.type_ != other);
        crate::mapping::set_condition(&mut status.conditions, reason, true, cond_reason, message, now);
        let ev = kube::runtime::events::Event {
            type_: *type_,
            reason: reason.to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: "Canary".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &md.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
    if !desired.is_empty() {
        for v in status.versions.iter_mut() {
            v.desired_replicas = desired.get(&v.version).copied();
        }
        status.desired_replicas = Some(status.versions.iter().map(|v| v.desired_replicas.unwrap_or(v.replicas)).sum());
    }
    for (reason, message) in &scaled {
        crate::mapping::set_condition(&mut status.conditions, "Scaled", true, reason, message, now);
        let ev = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Normal,
            reason: reason.to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &md.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
    if md.status.as_ref() != Some(&status) {
        let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"apiVersion": capstan_crds::API_VERSION, "kind": "ModelDeployment", "status": status});
        api.patch_status(&name, &pp, &Patch::Apply(&patch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(canary: bool) -> ModelDeployment {
        let mut spec: capstan_crds::modeldeployment::ModelDeploymentSpec = serde_json::from_value(json!({
            "model": {"registeredModel": "iris", "alias": "champion"},
            "minReplicas": 4, "gpus": 1, "resources": {"cpu": "2"}
        }))
        .unwrap();
        if canary {
            spec.canary = Some(
                serde_json::from_value(
                    json!({"model": {"registeredModel": "iris", "version": 3}, "canaryPercent": 20}),
                )
                .unwrap(),
            );
        }
        let mut m = ModelDeployment::new("iris", spec);
        m.metadata.namespace = Some("ml".into());
        m.metadata.uid = Some("u1".into());
        m
    }

    #[test]
    fn versions_split_traffic_and_replicas() {
        let m = md(true);
        let w = wanted(&m, &|r| if r.alias.is_some() { Some("2".into()) } else { None });
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].version.as_str(), w[0].percent, w[0].replicas), ("2", 80, 4));
        assert_eq!(w[0].source, "models:/iris/2", "an alias is pinned to the version it resolved to");
        assert_eq!((w[1].version.as_str(), w[1].percent, w[1].replicas), ("3", 20, 1));
        // Unresolvable alias: served by alias, keyed by a sanitised source.
        let w = wanted(&md(false), &|_| None);
        assert_eq!(w[0].version, "models-iris-champion");
        assert_eq!(w[0].source, "models:/iris@champion");
    }

    #[test]
    fn a_version_deployment_runs_the_builtin_server_with_its_model() {
        let m = md(false);
        let w = &wanted(&m, &|_| Some("2".into()))[0];
        let s = ServingSettings { image: "capstan:0.1.0".into(), server: Some("http://capstan:8080".into()) };
        let d = version_deployment(&m, w, &s);
        assert_eq!(d.metadata.name.as_deref(), Some("iris-v2"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(4));
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("capstan:0.1.0"));
        let args = c.args.clone().unwrap();
        assert_eq!(&args[..3], ["serve", "--model", "models:/iris/2"]);
        assert!(args.windows(2).any(|a| a == ["--server", "http://capstan:8080"]));
        assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"].0, "1");
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/v2/health/ready")
        );
    }

    #[test]
    fn only_ready_pods_of_the_version_are_scraped() {
        let pod = |name: &str, version: &str, ready: &str, ip: Option<&str>| {
            Arc::new(
                serde_json::from_value::<Pod>(json!({
                    "metadata": {"name": name, "namespace": "ml",
                        "labels": {LABEL_DEPLOYMENT: "iris", LABEL_VERSION: version}},
                    "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
                }))
                .unwrap(),
            )
        };
        let pods = vec![
            pod("a", "2", "True", Some("10.0.0.1")),
            pod("b", "2", "False", Some("10.0.0.2")),
            pod("c", "3", "True", Some("10.0.0.3")),
            pod("d", "2", "True", None),
            pod("e", "2", "True", Some("fd00::5")),
        ];
        assert_eq!(
            ready_pods(&pods, "ml", "iris", "2", 8080),
            [("a".to_string(), "10.0.0.1:8080".to_string()), ("e".to_string(), "[fd00::5]:8080".to_string())]
        );
        assert!(ready_pods(&pods, "other", "iris", "2", 8080).is_empty());
    }

    #[test]
    fn autoscaling_policy_from_the_spec() {
        let mut m = md(false);
        assert_eq!(crate::deployments::scale_policy(&m.spec), None);
        m.spec.max_replicas = Some(8);
        m.spec.autoscaling = Some(
            serde_json::from_value(json!({"metric": "rps", "target": 50, "scaleDownStabilizationSeconds": 5})).unwrap(),
        );
        let p = crate::deployments::scale_policy(&m.spec).unwrap();
        assert_eq!((p.min, p.max, p.target, p.scale_down_window_ms), (4, 8, 50.0, 5000));
        assert_eq!(p.metric, capstan_serving::autoscale::ScaleMetric::Rps);
        let w = wanted(&m, &|_| Some("2".into()));
        let s = deployment_status(&m, &w, &BTreeMap::new(), &Default::default(), 0);
        assert_eq!(s.replicas, 4);
    }

    #[test]
    fn a_decided_canary_changes_what_is_wanted() {
        let mut m = md(true);
        let resolve = |r: &ModelRef| if r.alias.is_some() { Some("2".to_string()) } else { None };
        let decided = |phase| ModelDeploymentStatus {
            canary: Some(CanaryStatus { version: "3".into(), phase, ..Default::default() }),
            ..Default::default()
        };
        m.status = Some(decided(CanaryPhase::RolledBack));
        let w = wanted(&m, &resolve);
        assert_eq!(w.iter().map(|w| (w.version.as_str(), w.percent)).collect::<Vec<_>>(), [("2", 100)]);
        m.status = Some(decided(CanaryPhase::Promoted));
        let w = wanted(&m, &resolve);
        assert_eq!(w.len(), 1, "the old stable version goes: {w:?}");
        assert_eq!((w[0].version.as_str(), w[0].role, w[0].percent, w[0].replicas), ("3", VersionRole::Stable, 100, 4));
        assert_eq!(w[0].source, "models:/iris/3");
        // The status keeps the verdict and names the promoted version stable.
        let s = deployment_status(&m, &w, &BTreeMap::new(), m.status.as_ref().unwrap(), 0);
        assert_eq!(s.stable_version.as_deref(), Some("3"));
        assert_eq!(s.canary.unwrap().phase, CanaryPhase::Promoted);
        // Still observing: both versions.
        m.status = Some(decided(CanaryPhase::Progressing));
        assert_eq!(wanted(&m, &resolve).len(), 2);
    }

    #[test]
    fn a_canary_is_judged_like_under_capstan_up() {
        use kube::runtime::events::EventType;
        let pol = CanaryPolicy { min_requests: 10, window_ms: 1000, max_error_rate: 0.05, ..Default::default() };
        let cs = CanaryStatus { version: "3".into(), phase: CanaryPhase::Progressing, ..Default::default() };
        let ok = WindowStats { requests: 50, errors: 0, p99_ms: Some(1.0) };
        let bad = WindowStats { requests: 20, errors: 20, p99_ms: Some(1.0) };
        // No metrics: wait, whatever the other side says.
        let (c, e) = canary_step(&cs, &pol, None, Some(ok), 5000);
        assert_eq!((c.phase, c.verdict.as_deref(), e), (CanaryPhase::Progressing, Some("Wait"), None));
        assert!(c.reason.unwrap().contains("stable"));
        let (c, e) = canary_step(&cs, &pol, Some(ok), None, 5000);
        assert_eq!((c.phase, e), (CanaryPhase::Progressing, None));
        // Failing canary: rolled back at once, with the reason.
        let (c, e) = canary_step(&cs, &pol, Some(ok), Some(bad), 0);
        assert_eq!((c.phase, c.traffic_percent, c.errors, c.stable_requests), (CanaryPhase::RolledBack, 0, 20, 50));
        let (t, reason, msg) = e.unwrap();
        assert_eq!((t, reason), (EventType::Warning, "CanaryRolledBack"));
        assert!(msg.contains("version 3 rolled back: canary error rate 100.0%"), "{msg}");
        // Healthy: waits for the window, then promoted.
        let (c, e) = canary_step(&cs, &pol, Some(ok), Some(ok), 500);
        assert_eq!((c.phase, e), (CanaryPhase::Progressing, None));
        let (c, e) = canary_step(&cs, &pol, Some(ok), Some(ok), 1000);
        assert_eq!((c.phase, c.verdict.as_deref()), (CanaryPhase::Promoted, Some("Promote")));
        assert_eq!(e.unwrap().1, "CanaryPromoted");
    }

    #[test]
    fn the_canary_window_starts_when_it_serves() {
        let m = md(true);
        let w = wanted(&m, &|r| if r.alias.is_some() { Some("2".into()) } else { None });
        let mut ready = BTreeMap::from([("2".to_string(), 4)]);
        let s = deployment_status(&m, &w, &ready, &Default::default(), 1_700_000_000);
        assert_eq!(s.canary.as_ref().map(|c| (c.phase, c.started_at.clone())), Some((CanaryPhase::Starting, None)));
        ready.insert("3".to_string(), 1);
        let s = deployment_status(&m, &w, &ready, &s, 1_700_000_000);
        let c = s.canary.clone().unwrap();
        assert_eq!((c.phase, c.started_at.as_deref()), (CanaryPhase::Progressing, Some("2023-11-14T22:13:20Z")));
        // Later passes keep the start and the last verdict.
        let mut prev = s;
        prev.canary.as_mut().unwrap().verdict = Some("Wait".into());
        let s = deployment_status(&m, &w, &ready, &prev, 1_800_000_000);
        assert_eq!(s.canary.unwrap(), prev.canary.unwrap());
    }

    #[test]
    fn status_follows_ready_replicas() {
        let m = md(true);
        let w = wanted(&m, &|r| if r.alias.is_some() { Some("2".into()) } else { None });
        let mut ready = BTreeMap::new();
        let s = deployment_status(&m, &w, &ready, &Default::default(), 0);
        assert_eq!(s.phase, DeploymentPhase::Pending);
        ready.insert("2".to_string(), 4);
        ready.insert("3".to_string(), 1);
        let s = deployment_status(&m, &w, &ready, &Default::default(), 0);
        assert_eq!(s.phase, DeploymentPhase::Canary);
        assert_eq!(s.ready_replicas, 5);
        assert_eq!(s.traffic.iter().map(|t| t.percent).collect::<Vec<_>>(), [80, 20]);
        assert_eq!(s.url.as_deref(), Some("http://iris.ml.svc/v2/models/iris"));
        let route = http_route(&m, &w);
        assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 20);
    }
}
