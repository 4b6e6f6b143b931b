//! ModelDeployments on Kubernetes: one apps/v1 Deployment per served version (the stable one
//! and, while there is one, the canary), a Service in front of all of them, and, where the
//! Gateway API is installed, an HTTPRoute whose backend weights carry the exact traffic split
//! (one Service per version behind it). Without the Gateway API the front Service spreads
//! requests over every ready replica, so the split follows the replica counts; Capstan's own
//! router (the server's `/v2/models/...` under `capstan up`) splits exactly and judges the
//! canary on its error rate and latency.
//!
//! The objects are plain functions of the resource ([`version_deployment`],
//! [`front_service`], [`version_service`], [`http_route`], [`deployment_status`]); the
//! adapter below applies them with server-side apply (field manager
//! [`super::FIELD_MANAGER`]), removes versions no longer wanted, and writes the status once.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_crds::modeldeployment::{
    DeploymentPhase, ModelDeployment, ModelDeploymentStatus, ModelRef, RuntimeType, TrafficTarget, VersionRole,
    VersionState, VersionStatus,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
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
        let rolled_back =
            md.status.as_ref().and_then(|s| s.canary.as_ref()).is_some_and(|cs| {
                cs.version == key && cs.phase == capstan_crds::modeldeployment::CanaryPhase::RolledBack
            });
        if key != stable_key && !rolled_back {
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
                ready_replicas: r,
                traffic_percent: w.percent,
                endpoints: vec![format!("{}.{ns}.svc:{SERVICE_PORT}", version_name(&name, &w.version))],
                message: None,
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
        cs.phase = if r > 0 {
            capstan_crds::modeldeployment::CanaryPhase::Progressing
        } else {
            capstan_crds::modeldeployment::CanaryPhase::Starting
        };
    }
    ModelDeploymentStatus {
        phase,
        url: Some(format!("http://{name}.{ns}.svc/v2/models/{name}")),
        stable_version: wants.first().map(|w| w.version.clone()),
        ready_replicas: versions.iter().map(|v| v.ready_replicas).sum(),
        traffic: wants.iter().map(|w| TrafficTarget { version: w.version.clone(), percent: w.percent }).collect(),
        versions,
        canary,
        observed_generation: md.meta().generation,
        conditions,
    }
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
    let wants = wanted(md, &resolver);
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
    let previous = md.status.clone().unwrap_or_default();
    let status = deployment_status(md, &wants, &ready, &previous, chrono::Utc::now().timestamp());
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
