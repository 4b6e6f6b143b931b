//! The ModelDeployment resource: a registered model (or a URI) served over the Open
//! Inference Protocol v2 by replicas of the builtin server (`capstan serve`) or of any image
//! speaking the protocol, with autoscaling bounds and a metric-gated canary.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Condition, EnvVar};
use crate::trainingjob::ReplicaResources;

/// A model served over the Open Inference Protocol v2 at `/v2/models/{name}/...`, where
/// `name` is the deployment's name. A canary sends `canaryPercent` of the requests to another
/// version and promotes it, or rolls it back, on its error rate and p99 latency against the
/// stable version's over a window.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    namespaced,
    shortname = "mdep",
    category = "capstan",
    category = "all",
    status = "ModelDeploymentStatus",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.registeredModel"),
    printcolumn(name = "Stable", type_ = "string", json_path = ".status.stableVersion"),
    printcolumn(name = "Canary", type_ = "string", json_path = ".status.canary.version"),
    printcolumn(
        name = "Canary%",
        type_ = "integer",
        json_path = ".status.canary.trafficPercent",
        description = "Share of requests the canary receives now"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas").message("minReplicas cannot exceed maxReplicas").field_path(".minReplicas"))]
pub struct ModelDeploymentSpec {
    /// The model served as the stable version.
    pub model: ModelRef,

    /// What serves the model: the builtin ONNX server (`capstan serve`, the default) or an
    /// image speaking the Open Inference Protocol v2 on a port (Triton, vLLM, KServe runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<DeploymentRuntime>,

    /// Fewest replicas per version (default 1). Scale to zero is not built: 0 runs 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub min_replicas: Option<u32>,

    /// Most replicas per version (default: minReplicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<u32>,

    /// What the replica count follows between minReplicas and maxReplicas (without it, every
    /// version runs minReplicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// CPU and memory each replica requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ReplicaResources>,

    /// GPUs each replica needs. On `capstan up` they come from the same allocation as
    /// TrainingJobs' (a GPU serving a replica is given to no job, and the reverse): a process
    /// replica gets CUDA_VISIBLE_DEVICES, a container replica a device request for them
    /// (none for simulated GPUs), and the status lists them per replica
    /// (`versions[].replicaGpus`). A replica waits, with the `Ready` condition's reason
    /// `InsufficientGpus`, while not enough GPUs are free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub gpus: Option<u32>,

    /// GPU product the replicas must run on (as in the `nvidia.com/gpu.product` node label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_product: Option<String>,

    /// A new version receiving part of the traffic, promoted or rolled back on metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// Which model: a registered model with a version or an alias, or a URI.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.registeredModel) != has(self.uri)").message("set registeredModel (with version or alias) or uri, not both").field_path(".registeredModel"))]
#[x_kube(validation = Rule::new("!has(self.registeredModel) || (has(self.version) != has(self.alias))").message("a registeredModel needs exactly one of version or alias").field_path(".version"))]
#[x_kube(validation = Rule::new("has(self.registeredModel) || (!has(self.version) && !has(self.alias))").message("version and alias apply to registeredModel only").field_path(".version"))]
pub struct ModelRef {
    /// Name of a model in Capstan's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub registered_model: Option<String>,

    /// A version number of registeredModel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<u64>,

    /// An alias of registeredModel (for example `champion`). The deployment follows it:
    /// moving the alias in the registry rolls the deployment forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub alias: Option<String>,

    /// The model's location instead of the registry: an .onnx file or a folder holding one
    /// (a path, file://, s3://, gs://, az://), or models:/NAME@ALIAS / models:/NAME/VERSION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub uri: Option<String>,
}

/// The builtin server or an image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.type) || self.type != 'image' || (has(self.image) && has(self.port))").message("runtime type image needs image and port").field_path(".image"))]
#[x_kube(validation = Rule::new("has(self.type) && self.type == 'image' || !has(self.image)").message("image applies to runtime type image only").field_path(".image"))]
pub struct DeploymentRuntime {
    /// `builtin` (default: `capstan serve`, ONNX models through tract) or `image`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<RuntimeType>,

    /// Container image of an Open Inference Protocol v2 server (type image). On `capstan up`
    /// the agent runs it from the local container engine (Docker or Podman; never pulled:
    /// load it first) on the host network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Port the image serves the protocol on (type image): the container port on Kubernetes.
    /// On `capstan up` replicas share the host network, so each replica is given a free port
    /// instead, in the environment variable `PORT` (and as `$(PORT)` in args), and must serve
    /// on it; readiness is `GET /v2/health/ready` on that port, and the Capstan server's
    /// `/v2/models/{name}/...` proxy routes to it. Kubernetes replicas get `PORT` = this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u32>,

    /// Arguments for the image's entrypoint (its command is kept), or extra `capstan serve`
    /// flags (builtin, for example `--max-batch 32`). `$(VAR)` is replaced by the replica's
    /// environment variable VAR, as Kubernetes does (for example `--http-port=$(PORT)` or
    /// `--model=$(CAPSTAN_MODEL_URI)`); `$$` is a literal `$`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Extra environment of every replica. The model's location is passed as
    /// CAPSTAN_MODEL_URI (and CAPSTAN_MODEL_SOURCE): `models:/NAME/VERSION` for a registered
    /// model, resolved through MLFLOW_TRACKING_URI (the Capstan server), or the `uri`; the
    /// version as CAPSTAN_MODEL_VERSION, the deployment's name (the model name in
    /// `/v2/models/{name}`) as CAPSTAN_MODEL_NAME. On `capstan up`, when the model is an `.onnx`
    /// file (or a folder holding one), an image replica also finds it downloaded at
    /// `/mnt/models/model.onnx` (KServe's model folder; CAPSTAN_MODEL_DIR=/mnt/models,
    /// mounted read-only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,
}

/// Which server runs the model.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeType {
    /// `capstan serve`: ONNX through tract, batching, metrics.
    #[default]
    Builtin,
    /// A container image speaking the Open Inference Protocol v2.
    Image,
}

/// What the replica count follows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// `concurrency` (requests in flight per replica) or `rps` (requests per second per
    /// replica).
    pub metric: ScaleMetric,

    /// The per-replica value the replica count aims at: replicas = ceil(load / target),
    /// within minReplicas..maxReplicas, unchanged while the load per replica is within 10%
    /// of the target; up at once (at most doubling, or +4, per step).
    #[schemars(range(min = 1, max = 100000))]
    pub target: u32,

    /// Seconds a scale down waits: the count goes down only to the highest recommendation of
    /// this window, so a dip in the load does not stop replicas (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3600))]
    pub scale_down_stabilization_seconds: Option<u32>,
}

/// Autoscaling signal.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    /// Requests in flight per replica.
    #[default]
    Concurrency,
    /// Requests per second per replica.
    Rps,
}

/// A canary version, its share of traffic, and the thresholds that gate its promotion.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.maxP99LatencyRatio) || self.maxP99LatencyRatio >= 1.0").message("maxP99LatencyRatio below 1 would reject a canary as fast as the stable version").field_path(".maxP99LatencyRatio"))]
pub struct Canary {
    /// The version tried as the canary.
    pub model: ModelRef,

    /// Share of requests (percent) the canary receives while it is observed.
    #[schemars(range(min = 1, max = 99))]
    pub canary_percent: u32,

    /// Seconds the canary is observed before it can be promoted (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: Option<u32>,

    /// Largest tolerated share of failed canary requests, 0 to 1 (default 0.01). Failed:
    /// any answer but a success, when the stable version fails less often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,

    /// Largest tolerated ratio of the canary's p99 latency to the stable version's
    /// (default 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000.0))]
    pub max_p99_latency_ratio: Option<f64>,

    /// Largest tolerated canary p99 latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub max_p99_latency_ms: Option<f64>,

    /// Canary requests needed in the window before a verdict (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub min_requests: Option<u64>,
}

/// Where the deployment is.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeploymentPhase {
    /// Replicas are starting; nothing answers yet.
    #[default]
    Pending,
    /// The stable version answers; no canary is being observed.
    Ready,
    /// A canary is being observed.
    Canary,
    /// Serving, but some replicas are not ready or the model cannot be resolved.
    Degraded,
    /// Nothing can serve (the model cannot be loaded).
    Failed,
}

/// Role of a version in the deployment.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VersionRole {
    /// Takes the traffic the canary does not.
    #[default]
    Stable,
    /// Takes canaryPercent of the traffic while observed.
    Canary,
}

/// State of one version's replicas.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VersionState {
    /// Replicas starting or loading the model.
    #[default]
    Pending,
    /// At least one replica is ready.
    Ready,
    /// Replicas keep failing.
    Failed,
}

/// One served version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// The registry version (or the URI for a uri model).
    pub version: String,
    /// Stable or Canary.
    pub role: VersionRole,
    /// State of its replicas.
    pub state: VersionState,
    /// Replicas wanted.
    pub replicas: u32,
    /// What the autoscaler's load alone asks for now (within the bounds); `replicas`
    /// follows it up at once and down after the scale-down window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// Replicas answering ready.
    pub ready_replicas: u32,
    /// Share of requests (percent) routed to it.
    pub traffic_percent: u32,
    /// Replica addresses (host:port) the router sends to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// GPUs given to each replica (`capstan up`; only replicas holding GPUs are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_gpus: Vec<ReplicaGpus>,
    /// Why it is in its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The GPUs one serving replica holds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaGpus {
    /// Replica index within its version.
    pub index: u32,
    /// GPU indices on the node.
    pub gpus: Vec<u32>,
}

/// A version and its share of the traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    /// The version.
    pub version: String,
    /// Share of requests (percent).
    pub percent: u32,
}

/// Where the canary is.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CanaryPhase {
    /// Replicas starting.
    #[default]
    Starting,
    /// Receiving its share and being observed.
    Progressing,
    /// Met every threshold: now the stable version.
    Promoted,
    /// Failed a threshold: traffic is back on the stable version.
    RolledBack,
}

/// The canary's observation and verdict.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The canary's version.
    pub version: String,
    /// Where it is.
    pub phase: CanaryPhase,
    /// Share of requests (percent) it receives now.
    pub traffic_percent: u32,
    /// Latest verdict: Wait, Promote or Rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Why (which threshold, by how much, or what is still missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Canary requests in the window.
    #[serde(default)]
    pub requests: u64,
    /// Of which failed.
    #[serde(default)]
    pub errors: u64,
    /// Canary p99 latency in the window (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Stable requests in the window.
    #[serde(default)]
    pub stable_requests: u64,
    /// Of which failed.
    #[serde(default)]
    pub stable_errors: u64,
    /// Stable p99 latency in the window (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_p99_ms: Option<f64>,
    /// When the canary began receiving traffic (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// Observed state of a ModelDeployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// Where the deployment is.
    #[serde(default)]
    pub phase: DeploymentPhase,
    /// Base URL of the Open Inference Protocol endpoint (`.../v2/models/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stable version now (the alias's target for a deployment following an alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// Ready replicas over every version.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Replicas wanted over every version.
    #[serde(default)]
    pub replicas: u32,
    /// What the load alone asks for over every version (autoscaling only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// Every served version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    /// The traffic split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// The canary, while there is one and after its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, CanaryPromoted, CanaryRolledBack, Scaled (the last scale decision and why), ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ModelRef {
    /// The `--model` value for `capstan serve`: the URI, `models:/NAME/VERSION` or
    /// `models:/NAME@ALIAS`.
    pub fn source(&self) -> Option<String> {
        if let Some(u) = &self.uri {
            return Some(u.clone());
        }
        let name = self.registered_model.as_ref()?;
        match (&self.version, &self.alias) {
            (Some(v), _) => Some(format!("models:/{name}/{v}")),
            (None, Some(a)) => Some(format!("models:/{name}@{a}")),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ref_sources() {
        let r = |m: Option<&str>, v: Option<u64>, a: Option<&str>, u: Option<&str>| ModelRef {
            registered_model: m.map(Into::into),
            version: v,
            alias: a.map(Into::into),
            uri: u.map(Into::into),
        };
        assert_eq!(r(Some("iris"), Some(2), None, None).source().unwrap(), "models:/iris/2");
        assert_eq!(r(Some("iris"), None, Some("champion"), None).source().unwrap(), "models:/iris@champion");
        assert_eq!(r(None, None, None, Some("s3://b/m.onnx")).source().unwrap(), "s3://b/m.onnx");
        assert_eq!(r(Some("iris"), None, None, None).source(), None);
    }

    #[test]
    fn autoscaling_window_is_checked_by_field() {
        let doc = |window: &str| {
            format!(
                "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: m}}\nspec:\n  model: {{uri: /m.onnx}}\n  maxReplicas: 3\n  autoscaling: {{metric: rps, target: 5, scaleDownStabilizationSeconds: {window}}}\n"
            )
        };
        let rs = crate::manifest::load(doc("30").as_bytes()).expect("a valid window");
        let crate::manifest::Resource::ModelDeployment(d) = &rs[0] else { panic!("not a ModelDeployment") };
        assert_eq!(d.spec.autoscaling.as_ref().unwrap().scale_down_stabilization_seconds, Some(30));
        match crate::manifest::load(doc("7200").as_bytes()) {
            Err(crate::manifest::ManifestError::Invalid(e)) => {
                assert!(e.iter().any(|x| x.path == "spec.autoscaling.scaleDownStabilizationSeconds"), "{e:?}")
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }
}
