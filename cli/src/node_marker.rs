//! The agent's Kubernetes half: keep its own Node's GPU facts current (`capstan agent
//! --kubernetes`, which the chart's DaemonSet passes). The values come from
//! `capstan_agent::node::node_state` (GPU Feature Discovery labels, the unhealthy-GPU
//! annotation the controller's scheduler reads, a condition, a taint); this module only
//! applies them: labels and annotation by server-side apply (field manager
//! `capstan-agent`), the taint by a merge patch guarded by the resourceVersion it read, the
//! condition by a strategic merge patch of the Node's status. Runs whenever a GPU's health
//! changes, and every 30 s.
//!
//! Every 5 s (and at once when a GPU's health changes) it also lists the pods bound to its
//! node and works out which pod uses which GPU (`capstan_agent::attribution`: the kubelet's
//! pod-resources API when its socket answers, else the simulated device plugin of simulated
//! GPUs, else NVML's processes and their cgroups); the telemetry labels the GPUs' series with those pods, and every pod on
//! an unhealthy GPU gets the annotation `capstan.dev/gpu-unhealthy` (merge patch; removed when
//! the verdict is cleared), from which the controller evicts its gang. Pods are marked before
//! the Node is written, so a Node showing a verdict means its pods were marked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use capstan_agent::attribution::{self, podresources, Attribution, NodePod, SimAllocation};
use capstan_agent::gpu::SourceKind;
use capstan_agent::health::GpuHealth;
use capstan_agent::node::{self, NodeGpuState};
use capstan_agent::push::JobRef;
use capstan_agent::telemetry::Telemetry;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "capstan-agent";

/// Apply `state` to the Node `name`.
pub async fn apply(api: &Api<Node>, name: &str, state: &NodeGpuState) -> Result<()> {
    let meta = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": state.labels,
            "annotations": { node::ANNOTATION_UNHEALTHY: state.unhealthy },
        }
    });
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&meta))
        .await
        .with_context(|| format!("labelling node {name}"))?;

    let current = api.get(name).await.with_context(|| format!("reading node {name}"))?;
    let taints: Vec<Taint> = current.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut wanted: Vec<Taint> = taints.iter().filter(|t| t.key != node::TAINT).cloned().collect();
    if let Some((key, value, effect)) = &state.taint {
        wanted.push(Taint { key: key.clone(), value: Some(value.clone()), effect: effect.clone(), time_added: None });
    }
    if wanted != taints {
        let patch =
            json!({"metadata": {"resourceVersion": current.metadata.resource_version}, "spec": {"taints": wanted}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("tainting node {name}"))?;
    }

    let (status, reason, message) = &state.condition;
    let previous = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == node::CONDITION));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let transition = match previous {
        Some(p) if &p.status == status => {
            p.last_transition_time.as_ref().map(|t| t.0.to_string()).unwrap_or(now.clone())
        }
        _ => now.clone(),
    };
    let cond = json!({"status": {"conditions": [{
        "type": node::CONDITION, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": transition,
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&cond))
        .await
        .with_context(|| format!("setting the {} condition of node {name}", node::CONDITION))?;
    Ok(())
}

/// Labels of a TrainingJob's pod (the controller's `k8s::objects`).
const LABEL_JOB_NAME: &str = "capstan.dev/job-name";
const LABEL_JOB_UID: &str = "capstan.dev/job-uid";
const LABEL_INDEX: &str = "capstan.dev/replica-index";
const LABEL_ATTEMPT: &str = "capstan.dev/attempt";

/// A pod as the attribution needs it (pure).
pub fn node_pod(pod: &Pod) -> Option<NodePod> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref()?;
    let labels = meta.labels.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let gpus_of = |c: &k8s_openapi::api::core::v1::Container| -> u32 {
        let r = c.resources.as_ref();
        let q = r
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(attribution::GPU_RESOURCE))
            .or_else(|| r.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(attribution::GPU_RESOURCE)));
        q.and_then(|q| q.0.trim().parse().ok()).unwrap_or(0)
    };
    let run_id = spec
        .containers
        .iter()
        .find_map(|c| c.env.as_ref()?.iter().rev().find(|e| e.name == "MLFLOW_RUN_ID").and_then(|e| e.value.clone()));
    let job = match (labels.get(LABEL_JOB_NAME), labels.get(LABEL_JOB_UID)) {
        (Some(name), Some(uid)) => Some(JobRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            uid: uid.clone(),
            replica: labels.get(LABEL_INDEX).and_then(|v| v.parse().ok()).unwrap_or(0),
            attempt: labels.get(LABEL_ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(0),
            run_id,
        }),
        _ => None,
    };
    let container_ids = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let id = c.container_id.as_deref()?;
                    let id = id.split_once("://").map(|(_, id)| id).unwrap_or(id);
                    Some((id.to_string(), c.name.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(NodePod {
        uid: meta.uid.clone()?,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone()?,
        created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        finished: matches!(phase, "Succeeded" | "Failed"),
        containers: spec.containers.iter().map(|c| (c.name.clone(), gpus_of(c))).collect(),
        container_ids,
        job,
        marked: meta.annotations.as_ref().and_then(|a| a.get(attribution::ANNOTATION_POD_UNHEALTHY)).cloned(),
    })
}

/// Works out which pod uses which GPU, keeping what the simulated device plugin gave (in
/// memory and in its state file, so a restarted agent keeps the grants).
#[derive(Debug, Default)]
pub struct Attributor {
    socket: PathBuf,
    sim: SimAllocation,
    sim_state: PathBuf,
    warned: bool,
}

impl Attributor {
    /// Over the kubelet's pod-resources socket at `socket`; the simulated device plugin's
    /// grants kept in `sim_state` (read now: an unreadable file is logged and starts afresh).
    pub fn new(socket: PathBuf, sim_state: PathBuf) -> Attributor {
        let sim = attribution::load_sim_allocation(&sim_state).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the simulated device plugin's grants cannot be read; starting afresh");
            SimAllocation::new()
        });
        Attributor { socket, sim, sim_state, warned: false }
    }

    /// The attributions for these pods of the node.
    pub async fn attribute(
        &mut self,
        tel: &Telemetry,
        pods: &[NodePod],
        health: &BTreeMap<u32, GpuHealth>,
    ) -> Vec<Attribution> {
        if tel.gpus().is_empty() {
            return Vec::new();
        }
        // The kubelet's word first, simulated GPUs included: where a kubelet and a device
        // plugin run, they decided which container got which device.
        if Path::new(&self.socket).exists() {
            match podresources::list(&self.socket).await {
                Ok(answer) => return attribution::from_pod_resources(&answer, pods, tel.gpus()),
                Err(e) if !self.warned => {
                    self.warned = true;
                    tracing::warn!(error = %e, "the kubelet's pod-resources API failed; attributing GPUs by process cgroups or the simulated device plugin");
                }
                Err(_) => {}
            }
        }
        if tel.kind() == SourceKind::Simulated {
            let sim = attribution::simulate_allocation(&self.sim, pods, tel.gpus(), health);
            if sim != self.sim {
                if let Err(e) = attribution::save_sim_allocation(&self.sim_state, &sim) {
                    tracing::warn!(error = %e, "keeping the simulated device plugin's grants failed");
                }
                self.sim = sim;
            }
            return attribution::from_simulated(&self.sim, pods);
        }
        let processes: Vec<(u32, u32)> = tel
            .latest()
            .iter()
            .flat_map(|r| r.reading.processes.iter().map(move |p| (r.reading.index, p.pid)))
            .collect();
        attribution::from_processes(&processes, attribution::read_cgroup, pods)
    }
}

/// List the node's pods, attribute its GPUs, give the telemetry the pods and mark (or
/// unmark) the pods on unhealthy GPUs.
pub async fn attribute_and_mark(
    client: &kube::Client,
    node: &str,
    tel: &Telemetry,
    health: &BTreeMap<u32, GpuHealth>,
    attributor: &mut Attributor,
) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .with_context(|| format!("listing the pods of node {node}"))?;
    let node_pods: Vec<NodePod> = list.items.iter().filter_map(node_pod).collect();
    let attributions = attributor.attribute(tel, &node_pods, health).await;
    let marks = attribution::pod_marks(&attributions, tel.gpus(), health);
    tel.set_pod_attributions(attributions);
    for (ns, name, value) in attribution::mark_changes(&node_pods, &marks) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {attribution::ANNOTATION_POD_UNHEALTHY: value}}});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => match &value {
                Some(v) => tracing::warn!(pod = %format!("{ns}/{name}"), "pod on an unhealthy GPU marked: {v}"),
                None => tracing::info!(pod = %format!("{ns}/{name}"), "pod's GPU mark removed"),
            },
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("marking pod {ns}/{name}")),
        }
    }
    Ok(())
}

/// Keep the Node (and its pods' GPU marks) current until `shutdown`; `attributor` says which
/// pod uses which GPU.
pub async fn run(
    client: kube::Client,
    name: String,
    tel: Arc<Telemetry>,
    mut attributor: Attributor,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client.clone());
    let changed = tel.health_changed();
    let mut last: Option<NodeGpuState> = None;
    let mut since_write = std::time::Instant::now();
    let mut pods_failing = false;
    loop {
        // One reading of the verdicts for the pods and the Node: once the Node shows a verdict,
        // the pods on that GPU were marked (unless marking failed, which is logged).
        let health = tel.health();
        match attribute_and_mark(&client, &name, &tel, &health, &mut attributor).await {
            Ok(()) => pods_failing = false,
            Err(e) if !pods_failing => {
                pods_failing = true;
                tracing::warn!(error = %format!("{e:#}"), "attributing GPUs to pods failed; retrying");
            }
            Err(_) => {}
        }
        let state = node::node_state(tel.gpus(), &health);
        // Rewrite when something changed, and every 30 s (the condition's heartbeat).
        if last.as_ref() != Some(&state) || since_write.elapsed() >= Duration::from_secs(30) {
            match apply(&api, &name, &state).await {
                Ok(()) => {
                    if last.as_ref() != Some(&state) {
                        tracing::info!(node = %name, unhealthy = %state.unhealthy, "node GPU state written");
                    }
                    last = Some(state);
                    since_write = std::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "updating the node failed; retrying"),
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_jobs_pod_becomes_a_node_pod_with_its_job_and_gpus() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "llm-2-1", "namespace": "ml", "uid": "u-1",
                "creationTimestamp": "2026-11-28T10:00:00Z",
                "labels": {"capstan.dev/job-name": "llm", "capstan.dev/job-uid": "j-1",
                           "capstan.dev/replica-index": "1", "capstan.dev/attempt": "2"},
                "annotations": {"capstan.dev/gpu-unhealthy": "GPU 3 (x): XidError: m"}
            },
            "spec": {"nodeName": "n1", "containers": [
                {"name": "trainer", "env": [{"name": "MLFLOW_RUN_ID", "value": "r-9"}],
                 "resources": {"limits": {"nvidia.com/gpu": "4"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "1"}}}
            ]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "trainer", "containerID": "containerd://abc123", "image": "i", "imageID": "",
                 "ready": true, "restartCount": 0}
            ]}
        }))
        .unwrap();
        let p = node_pod(&pod).unwrap();
        assert_eq!(p.containers, [("trainer".to_string(), 4), ("sidecar".to_string(), 0)]);
        assert_eq!(p.container_ids, [("abc123".to_string(), "trainer".to_string())]);
        assert!(!p.finished);
        let job = p.job.unwrap();
        assert_eq!((job.name.as_str(), job.replica, job.attempt), ("llm", 1, 2));
        assert_eq!(job.run_id.as_deref(), Some("r-9"));
        assert_eq!(p.marked.as_deref(), Some("GPU 3 (x): XidError: m"));
    }
}
