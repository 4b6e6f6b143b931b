//! Pure translations between Kubernetes objects and the scheduler's and lifecycle's values:
//! the pods and headless Service of a gang, what a pod says about its replica, and what a
//! Node offers the scheduler. No IO here; `super` does the API calls.

use std::collections::{BTreeMap, HashMap, HashSet};

use capstan_core::env::{self, ReplicaEnvInput};
use capstan_core::lifecycle::{Observed, ReplicaObs, Slot};
use capstan_crds::trainingjob::{ReplicaResources, ScratchMedium, TrainingJobSpec, TrainingJobStatus};
use capstan_scheduler::{Gpu, Node as SchedNode, Topology};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Node, Pod, PodSpec, ResourceRequirements, Service, ServicePort,
    ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::mapping;

/// Label: the job's name.
pub const LABEL_JOB_NAME: &str = "capstan.dev/job-name";
/// Label: the job's uid (pods of a job are found by it).
pub const LABEL_JOB_UID: &str = "capstan.dev/job-uid";
/// Label: the replica index.
pub const LABEL_INDEX: &str = "capstan.dev/replica-index";
/// Label: the gang attempt the pod belongs to.
pub const LABEL_ATTEMPT: &str = "capstan.dev/attempt";
/// Label every object Capstan manages carries.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The GPU resource name of NVIDIA's device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Node annotation the agent writes: the indices of unhealthy GPUs, comma-separated.
pub const ANNOTATION_UNHEALTHY_GPUS: &str = "capstan.dev/unhealthy-gpus";
/// Taint the agent puts on a node with unhealthy GPUs; Capstan's own pods tolerate it
/// because the controller already avoids the unhealthy GPUs one by one.
pub const TAINT_GPU_UNHEALTHY: &str = "capstan.dev/gpu-unhealthy";
/// Default rendezvous port on Kubernetes (each pod has its own IP).
pub const DEFAULT_MASTER_PORT: u32 = 29500;

/// Name of replica `index` of `attempt`: attempts never reuse a name, so a restart does not
/// wait for the old pods to be gone.
pub fn pod_name(job: &str, attempt: u32, index: u32) -> String {
    format!("{job}-{attempt}-{index}")
}

/// Stable host name of replica `index` (the headless Service gives it DNS:
/// `<job>-<index>.<job>.<namespace>.svc`).
pub fn host_name(job: &str, index: u32) -> String {
    format!("{job}-{index}")
}

/// MASTER_ADDR: the DNS name of replica 0.
pub fn master_addr(job: &str, namespace: &str) -> String {
    format!("{}.{job}.{namespace}.svc", host_name(job, 0))
}

/// What a pod needs that is not in the job: who owns it, and where tracking lives.
pub struct PodInput<'a> {
    /// Job name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Job uid (owner reference and label).
    pub uid: &'a str,
    /// The job's annotations, copied onto its pods (except kubectl's bookkeeping).
    pub annotations: &'a BTreeMap<String, String>,
    /// Spec.
    pub spec: &'a TrainingJobSpec,
    /// Status (rendezvous, tracking run).
    pub status: &'a TrainingJobStatus,
    /// Gang attempt.
    pub attempt: u32,
    /// Replica index.
    pub index: u32,
    /// The node the scheduler chose.
    pub slot: &'a Slot,
    /// MLFLOW_TRACKING_URI for the replicas.
    pub tracking_uri: Option<&'a str>,
    /// Resume from the latest checkpoint.
    pub resume: bool,
}

/// The owner reference that ties a pod or Service to its TrainingJob (garbage collection).
pub fn owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: capstan_crds::API_VERSION.into(),
        kind: "TrainingJob".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod of one replica, bound to the chosen node by `spec.nodeName` (the scheduler crate
/// has already placed the whole gang; binding at creation needs no kube-scheduler and cannot
/// land elsewhere; the kubelet's own admission still checks the GPUs are free).
pub fn replica_pod(p: &PodInput) -> Pod {
    let spec = p.spec;
    let gpus = spec.gpus_per_replica.unwrap_or(0);
    let nproc = env::nproc(spec.nproc_per_replica, gpus);
    let rdzv = p.status.rendezvous.clone().unwrap_or_default();
    let mut envs: Vec<(String, String)> = spec.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    envs.extend(env::replica_env(&ReplicaEnvInput {
        job_name: p.name.into(),
        replicas: spec.replicas,
        index: p.index,
        nproc_per_replica: nproc,
        launcher: mapping::launcher_kind(spec.launcher),
        master_addr: rdzv.master_addr,
        master_port: rdzv.master_port,
        // Inside the container the device plugin numbers the granted GPUs from 0.
        gpus: (0..gpus).collect(),
        tracking_uri: p.tracking_uri.map(str::to_string),
        run_id: p.status.tracking_run_id.clone(),
        hostfile: None,
        checkpoint_uri: spec.checkpoint.as_ref().map(|c| c.uri.clone()),
        resume: p.resume,
    }));
    let resources = resource_requirements(spec.resources.as_ref(), gpus);
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    if let Some(s) = &spec.scratch {
        volumes.push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: (s.medium == Some(ScratchMedium::Memory)).then(|| "Memory".to_string()),
                size_limit: Some(Quantity(s.size.clone())),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "scratch".into(), mount_path: "/scratch".into(), ..Default::default() });
        envs.push(("CAPSTAN_SCRATCH_DIR".into(), "/scratch".into()));
    }
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_JOB_NAME.to_string(), p.name.to_string());
    labels.insert(LABEL_JOB_UID.to_string(), p.uid.to_string());
    labels.insert(LABEL_INDEX.to_string(), p.index.to_string());
    labels.insert(LABEL_ATTEMPT.to_string(), p.attempt.to_string());
    labels.insert(LABEL_MANAGED_BY.to_string(), "capstan".to_string());
    let annotations: BTreeMap<String, String> = p
        .annotations
        .iter()
        .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(p.name, p.attempt, p.index)),
            namespace: Some(p.namespace.into()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner(p.name, p.uid)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(p.slot.node.clone()),
            hostname: Some(host_name(p.name, p.index)),
            subdomain: Some(p.name.into()),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(mapping::DEFAULT_GRACE_SECONDS as i64),
            containers: vec![Container {
                name: "trainer".into(),
                image: spec.image.clone(),
                command: (!spec.command.is_empty()).then(|| spec.command.clone()),
                args: (!spec.args.is_empty()).then(|| spec.args.clone()),
                working_dir: spec.working_dir.clone(),
                env: Some(
                    envs.into_iter()
                        .map(|(name, value)| EnvVar { name, value: Some(value), value_from: None })
                        .collect(),
                ),
                resources: Some(resources),
                volume_mounts: (!mounts.is_empty()).then_some(mounts),
                ports: None,
                ..Default::default()
            }],
            volumes: (!volumes.is_empty()).then_some(volumes),
            tolerations: Some(vec![
                Toleration {
                    key: Some(GPU_RESOURCE.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                },
                Toleration {
                    key: Some(TAINT_GPU_UNHEALTHY.into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Requests and limits of a container: CPU and memory as asked (memory is also the limit,
/// so the kubelet kills a replica that outgrows it), and `gpus` of [`GPU_RESOURCE`].
pub fn resource_requirements(r: Option<&ReplicaResources>, gpus: u32) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(r) = r {
        if let Some(c) = &r.cpu {
            requests.insert("cpu".to_string(), Quantity(c.clone()));
        }
        if let Some(m) = &r.memory {
            requests.insert("memory".to_string(), Quantity(m.clone()));
            limits.insert("memory".to_string(), Quantity(m.clone()));
        }
    }
    if gpus > 0 {
        requests.insert(GPU_RESOURCE.to_string(), Quantity(gpus.to_string()));
        limits.insert(GPU_RESOURCE.to_string(), Quantity(gpus.to_string()));
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

/// The headless Service that gives the replicas stable DNS names for rendezvous.
pub fn headless_service(name: &str, namespace: &str, uid: &str, port: u32) -> Service {
    let mut selector = BTreeMap::new();
    selector.insert(LABEL_JOB_UID.to_string(), uid.to_string());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_JOB_NAME.to_string(), name.to_string());
    labels.insert(LABEL_MANAGED_BY.to_string(), "capstan".to_string());
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![owner(name, uid)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort { name: Some("rendezvous".into()), port: port as i32, ..Default::default() }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn label_u32(pod: &Pod, key: &str) -> Option<u32> {
    pod.metadata.labels.as_ref()?.get(key)?.parse().ok()
}

/// What a pod says about its replica: None for a pod that is not one of a gang's.
pub fn observe(pod: &Pod) -> Option<Observed> {
    let index = label_u32(pod, LABEL_INDEX)?;
    let attempt = label_u32(pod, LABEL_ATTEMPT)?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find_map(|c| c.state.as_ref().and_then(|st| st.terminated.clone())));
    let state = match phase {
        "Succeeded" => ReplicaObs::Exited {
            code: 0,
            reason: terminated.and_then(|t| t.reason).unwrap_or_else(|| "Completed".into()),
        },
        "Failed" => {
            let pod_reason = status.and_then(|s| s.reason.clone());
            let pod_message = status.and_then(|s| s.message.clone());
            let (code, reason) = match terminated {
                Some(t) => (t.exit_code, t.reason.or(pod_reason).unwrap_or_else(|| "Error".into())),
                // Rejected by the kubelet (OutOfnvidia.com/gpu, Evicted, ...): no container ran.
                None => (
                    1,
                    match (pod_reason, pod_message) {
                        (Some(r), Some(m)) => format!("{r}: {m}"),
                        (Some(r), None) => r,
                        (None, Some(m)) => m,
                        (None, None) => "pod failed".into(),
                    },
                ),
            };
            ReplicaObs::Exited { code, reason }
        }
        // Pending (being started) and Running both count as running to the lifecycle; a pod
        // being deleted is still running until it is gone.
        _ => ReplicaObs::Running,
    };
    Some(Observed { index, attempt, state })
}

/// GPUs (and CPU, memory) on a node taken by pods the snapshot does not account for: pods
/// of other workloads, or of jobs this controller does not manage.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ForeignUse {
    /// GPUs.
    pub gpus: u32,
    /// CPU millicores.
    pub cpu_millis: u64,
    /// Memory bytes.
    pub memory_bytes: u64,
}

fn quantity(q: Option<&Quantity>, parse: fn(&str) -> Option<f64>) -> f64 {
    q.and_then(|q| parse(&q.0)).unwrap_or(0.0)
}

fn cpu_cores(s: &str) -> Option<f64> {
    mapping::parse_cpu(s)
}

fn mem_bytes(s: &str) -> Option<f64> {
    mapping::parse_memory(s).map(|b| b as f64)
}

/// What pods not in `managed` (job uids the snapshot accounts for) use, per node. Finished
/// pods use nothing.
pub fn foreign_use<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    managed: &HashSet<String>,
) -> HashMap<String, ForeignUse> {
    let mut out: HashMap<String, ForeignUse> = HashMap::new();
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        let Some(node) = &spec.node_name else { continue };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let uid = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_JOB_UID));
        if uid.is_some_and(|u| managed.contains(u)) {
            continue;
        }
        let e = out.entry(node.clone()).or_default();
        for c in &spec.containers {
            let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            let gpu = req.and_then(|r| r.get(GPU_RESOURCE)).or(lim.and_then(|l| l.get(GPU_RESOURCE)));
            e.gpus += quantity(gpu, |s| s.parse::<f64>().ok()) as u32;
            e.cpu_millis += (quantity(req.and_then(|r| r.get("cpu")), cpu_cores) * 1000.0) as u64;
            e.memory_bytes += quantity(req.and_then(|r| r.get("memory")), mem_bytes) as u64;
        }
    }
    out
}

/// Indices of the GPUs the agent reported unhealthy on this node.
pub fn unhealthy_gpus(node: &Node) -> Vec<u32> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_UNHEALTHY_GPUS))
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// A Node as the scheduler sees it. GPU indices are the scheduler's bookkeeping (the device
/// plugin picks the physical ones); `used` are the indices running gangs hold on this node.
/// GPUs the agent reported unhealthy, and as many as foreign pods use, are marked
/// unavailable among the ones no gang holds.
pub fn sched_node(node: &Node, foreign: ForeignUse, used: &HashSet<u32>) -> Option<SchedNode> {
    let name = node.metadata.name.clone()?;
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let gpus = quantity(alloc.and_then(|a| a.get(GPU_RESOURCE)), |s| s.parse::<f64>().ok()) as u32;
    let cpu = (quantity(alloc.and_then(|a| a.get("cpu")), cpu_cores) * 1000.0) as u64;
    let mem = quantity(alloc.and_then(|a| a.get("memory")), mem_bytes) as u64;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let unhealthy: HashSet<u32> = unhealthy_gpus(node).into_iter().collect();
    let mut unavailable = foreign.gpus;
    let mut list: Vec<Gpu> = (0..gpus).map(|i| Gpu { index: i, healthy: !unhealthy.contains(&i) }).collect();
    for g in list.iter_mut().rev() {
        if unavailable == 0 {
            break;
        }
        if g.healthy && !used.contains(&g.index) {
            g.healthy = false;
            unavailable -= 1;
        }
    }
    let blocking_taint = node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| {
        ts.iter().any(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                && t.key != GPU_RESOURCE
                && t.key != TAINT_GPU_UNHEALTHY
        })
    });
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let hostname = labels.get("kubernetes.io/hostname").cloned().unwrap_or_else(|| name.clone());
    Some(SchedNode {
        name,
        product: labels.get("nvidia.com/gpu.product").cloned().unwrap_or_default(),
        gpu_memory_mib: labels.get("nvidia.com/gpu.memory").and_then(|m| m.parse().ok()).unwrap_or(0),
        gpus: list,
        cpu_millis: cpu.saturating_sub(foreign.cpu_millis),
        memory_bytes: mem.saturating_sub(foreign.memory_bytes),
        topology: Topology {
            block: labels
                .get("capstan.dev/block")
                .or(labels.get("topology.kubernetes.io/zone"))
                .cloned()
                .unwrap_or_default(),
            rack: labels.get("capstan.dev/rack").cloned().unwrap_or(hostname),
        },
        schedulable: !unschedulable && !blocking_taint && node_ready(node),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_crds::trainingjob::Rendezvous;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, NodeCondition, NodeSpec, NodeStatus, PodStatus,
        Taint,
    };

    fn spec() -> TrainingJobSpec {
        serde_json::from_value(serde_json::json!({
            "image": "trainer:1", "replicas": 2, "gpusPerReplica": 4, "command": ["python"], "args": ["train.py"],
            "env": [{"name": "LR", "value": "0.1"}], "resources": {"cpu": "8", "memory": "64Gi"},
            "scratch": {"size": "100Gi", "medium": "memory"}, "launcher": "torchrun"
        }))
        .unwrap()
    }

    #[test]
    fn a_replica_pod_is_bound_named_labelled_owned_and_carries_the_rendezvous() {
        let spec = spec();
        let status = TrainingJobStatus {
            rendezvous: Some(Rendezvous { master_addr: master_addr("llm", "ml"), master_port: 29500 }),
            tracking_run_id: Some("r1".into()),
            ..Default::default()
        };
        let mut ann = BTreeMap::new();
        ann.insert("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string());
        ann.insert("team".to_string(), "nlp".to_string());
        let slot = Slot { node: "gpu-7".into(), gpus: vec![4, 5, 6, 7] };
        let pod = replica_pod(&PodInput {
            name: "llm",
            namespace: "ml",
            uid: "u-1",
            annotations: &ann,
            spec: &spec,
            status: &status,
            attempt: 3,
            index: 1,
            slot: &slot,
            tracking_uri: Some("http://capstan:8080"),
            resume: false,
        });
        assert_eq!(pod.metadata.name.as_deref(), Some("llm-3-1"));
        let ps = pod.spec.as_ref().unwrap();
        assert_eq!(ps.node_name.as_deref(), Some("gpu-7"));
        assert_eq!(ps.hostname.as_deref(), Some("llm-1"));
        assert_eq!(ps.subdomain.as_deref(), Some("llm"));
        assert_eq!(ps.restart_policy.as_deref(), Some("Never"));
        let c = &ps.containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits.get(GPU_RESOURCE), Some(&Quantity("4".into())));
        let env: HashMap<_, _> =
            c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e.value.clone().unwrap())).collect();
        assert_eq!(env["MASTER_ADDR"], "llm-0.llm.ml.svc");
        assert_eq!(env["RANK"], "1");
        assert_eq!(env["WORLD_SIZE"], "8");
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0,1,2,3", "container-local GPU numbering");
        assert_eq!(env["LR"], "0.1");
        assert_eq!(env["MLFLOW_RUN_ID"], "r1");
        assert_eq!(env["CAPSTAN_SCRATCH_DIR"], "/scratch");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_JOB_UID], "u-1");
        assert_eq!(labels[LABEL_ATTEMPT], "3");
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.len(), 1, "kubectl's annotation is not copied: {ann:?}");
        assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        let vol = &ps.volumes.as_ref().unwrap()[0];
        assert_eq!(vol.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
    }

    fn pod(phase: &str, labels: &[(&str, &str)], node: Option<&str>, gpus: u32) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let mut limits = BTreeMap::new();
        if gpus > 0 {
            limits.insert(GPU_RESOURCE.to_string(), Quantity(gpus.to_string()));
        }
        p.spec = Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements { limits: Some(limits), ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    #[test]
    fn pod_phases_become_replica_observations() {
        let l = [(LABEL_INDEX, "2"), (LABEL_ATTEMPT, "1")];
        assert_eq!(observe(&pod("Running", &l, None, 0)).unwrap().state, ReplicaObs::Running);
        assert_eq!(observe(&pod("Pending", &l, None, 0)).unwrap().state, ReplicaObs::Running);
        let ok = observe(&pod("Succeeded", &l, None, 0)).unwrap();
        assert_eq!((ok.index, ok.attempt), (2, 1));
        assert!(matches!(ok.state, ReplicaObs::Exited { code: 0, .. }));
        let mut failed = pod("Failed", &l, None, 0);
        failed.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 3,
                    reason: Some("Error".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(observe(&failed).unwrap().state, ReplicaObs::Exited { code: 3, reason: "Error".into() });
        let mut rejected = pod("Failed", &l, None, 0);
        rejected.status.as_mut().unwrap().reason = Some("OutOfnvidia.com/gpu".into());
        assert!(
            matches!(observe(&rejected).unwrap().state, ReplicaObs::Exited { code: 1, reason } if reason.starts_with("OutOf"))
        );
        assert!(observe(&pod("Running", &[], None, 0)).is_none(), "not a replica");
    }

    fn node(gpus: u32, unhealthy: Option<&str>, taint: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.labels = Some(
            [("nvidia.com/gpu.product", "H100"), ("capstan.dev/rack", "r1"), ("capstan.dev/block", "b1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if let Some(u) = unhealthy {
            n.metadata.annotations = Some([(ANNOTATION_UNHEALTHY_GPUS.to_string(), u.to_string())].into());
        }
        n.spec = Some(NodeSpec {
            taints: taint.map(|k| vec![Taint { key: k.into(), effect: "NoSchedule".into(), ..Default::default() }]),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            allocatable: Some(
                [
                    (GPU_RESOURCE.to_string(), Quantity(gpus.to_string())),
                    ("cpu".into(), Quantity("64".into())),
                    ("memory".into(), Quantity("512Gi".into())),
                ]
                .into(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    #[test]
    fn nodes_offer_their_healthy_free_gpus_in_their_topology() {
        let n = sched_node(&node(8, Some("1, 6"), None), ForeignUse::default(), &HashSet::new()).unwrap();
        assert_eq!(n.gpus.iter().filter(|g| g.healthy).count(), 6);
        assert!(!n.gpus[1].healthy && !n.gpus[6].healthy);
        assert_eq!((n.topology.rack.as_str(), n.topology.block.as_str(), n.product.as_str()), ("r1", "b1", "H100"));
        assert_eq!(n.cpu_millis, 64_000);
        assert!(n.schedulable);

        // Foreign pods take GPUs no gang holds.
        let used: HashSet<u32> = [7].into();
        let n =
            sched_node(&node(8, None, None), ForeignUse { gpus: 2, cpu_millis: 4000, memory_bytes: 0 }, &used).unwrap();
        let off: Vec<u32> = n.gpus.iter().filter(|g| !g.healthy).map(|g| g.index).collect();
        assert_eq!(off, [5, 6]);
        assert_eq!(n.cpu_millis, 60_000);

        assert!(!sched_node(&node(8, None, Some("maintenance")), ForeignUse::default(), &used).unwrap().schedulable);
        assert!(
            sched_node(&node(8, None, Some(TAINT_GPU_UNHEALTHY)), ForeignUse::default(), &used).unwrap().schedulable
        );
    }

    #[test]
    fn foreign_use_counts_other_pods_but_not_managed_or_finished_ones() {
        let managed: HashSet<String> = ["u-1".to_string()].into();
        let pods = [
            pod("Running", &[(LABEL_JOB_UID, "u-1")], Some("n1"), 4),
            pod("Running", &[], Some("n1"), 2),
            pod("Succeeded", &[], Some("n1"), 8),
            pod("Pending", &[(LABEL_JOB_UID, "u-other")], Some("n2"), 1),
            pod("Pending", &[], None, 1),
        ];
        let f = foreign_use(pods.iter(), &managed);
        assert_eq!(f["n1"].gpus, 2);
        assert_eq!(f["n2"].gpus, 1);
        assert_eq!(f.len(), 2);
    }
}
