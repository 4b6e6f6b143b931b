//! GPU health on Kubernetes: `capstan agent --kubernetes` works out which pod uses which GPU
//! of its node (`capstan_agent::attribution`: the kubelet's pod-resources API, else process
//! cgroups, or a simulated device plugin for simulated GPUs) and puts the annotation
//! [`ANNOTATION`] on every pod using an unhealthy GPU (critical XID, double-bit ECC, repeated
//! thermal throttling). Here a gang with such a pod in its current attempt is evicted with
//! reason [`crate::health::REASON`] (`GpuUnhealthy`): `capstan_core` stops its pods and
//! requeues it *without* counting a restart against `backoffLimit`, and the scheduler places
//! it again on GPUs the node's `capstan.dev/unhealthy-gpus` annotation does not exclude
//! (resuming from the last checkpoint with `checkpoint.resume: Latest`).
//!
//! Pure; [`super::reconcile_all`] calls [`evict_marked`] after the scheduler decided.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_core::lifecycle::{Eviction, Phase};
use capstan_crds::trainingjob::TrainingJobStatus;
use k8s_openapi::api::core::v1::Pod;

use super::objects;
use crate::mapping;
use crate::scheduling::JobDecision;

/// Pod annotation the agent writes on a pod using an unhealthy GPU (its value names the GPU
/// and the verdict).
pub const ANNOTATION: &str = capstan_agent::attribution::ANNOTATION_POD_UNHEALTHY;

/// The eviction of a gang one of whose current pods the agent marked, if any. Only a gang
/// that holds GPUs (starting, running or restarting) is evicted, and only for pods of its
/// current attempt (the pods of an earlier attempt keep their mark while they go).
pub fn eviction(status: &TrainingJobStatus, pods: &[Arc<Pod>]) -> Option<Eviction> {
    let state = mapping::gang_state(status);
    if !matches!(state.phase, Phase::Starting | Phase::Running | Phase::Restarting) || state.evicting.is_some() {
        return None;
    }
    let mut marked: Vec<(&str, &str, &str)> = pods
        .iter()
        .filter(|p| {
            p.metadata.labels.as_ref().and_then(|l| l.get(objects::LABEL_ATTEMPT)).and_then(|a| a.parse::<u32>().ok())
                == Some(state.attempt)
        })
        .filter_map(|p| {
            let mark = p.metadata.annotations.as_ref()?.get(ANNOTATION)?;
            let name = p.metadata.name.as_deref().unwrap_or("");
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
            (!mark.trim().is_empty()).then_some((name, node, mark.as_str()))
        })
        .collect();
    marked.sort();
    let (pod, node, mark) = marked.first()?;
    let more = match marked.len() {
        1 => String::new(),
        n => format!(" (and {} more of its pods)", n - 1),
    };
    Some(Eviction {
        reason: crate::health::REASON.to_string(),
        message: format!(
            "pod {pod} on node {node} uses an unhealthy GPU{more}: {mark}; moving the job to healthy GPUs, resuming from its last checkpoint"
        ),
    })
}

/// Replace the scheduler's decision for every gang with a marked pod by its eviction.
/// `jobs`: each job's uid, effective status and pods.
pub fn evict_marked<'a>(
    decisions: &mut HashMap<String, JobDecision>,
    jobs: impl IntoIterator<Item = (&'a str, &'a TrainingJobStatus, &'a [Arc<Pod>])>,
) {
    for (uid, status, pods) in jobs {
        if let Some(e) = eviction(status, pods) {
            decisions.insert(uid.to_string(), JobDecision::Evict(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_core::lifecycle::{self, Action, Observed, PassInput, ReplicaObs};
    use serde_json::json;

    fn running(attempt: u32) -> TrainingJobStatus {
        serde_json::from_value(json!({
            "phase": "Running", "attempt": attempt, "restarts": 0,
            "startTime": "2026-11-28T00:00:00Z",
            "replicaStatuses": [
                {"index": 0, "state": "Running", "node": "n1", "gpus": [0, 1]},
                {"index": 1, "state": "Running", "node": "n1", "gpus": [2, 3]}
            ],
        }))
        .unwrap()
    }

    fn pod(name: &str, attempt: u32, mark: Option<&str>) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "labels": {objects::LABEL_ATTEMPT: attempt.to_string(), objects::LABEL_INDEX: "0"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "trainer"}]},
        });
        if let Some(m) = mark {
            v["metadata"]["annotations"] = json!({ANNOTATION: m});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    const MARK: &str = "GPU 3 (GPU-sim-n1-3): XidError: XID 79 (GPU has fallen off the bus) on GPU 3";

    #[test]
    fn a_marked_pod_of_the_current_attempt_evicts_its_gang() {
        let status = running(2);
        let pods = vec![pod("job-2-0", 2, None), pod("job-2-1", 2, Some(MARK))];
        let e = eviction(&status, &pods).expect("evicted");
        assert_eq!(e.reason, "GpuUnhealthy");
        assert!(
            e.message.contains("pod job-2-1 on node n1") && e.message.contains("GPU 3") && e.message.contains("XID 79")
        );
        // Unmarked, or only the previous attempt's pod marked: nothing.
        assert!(eviction(&status, &[pod("job-2-0", 2, None)]).is_none());
        assert!(eviction(&status, &[pod("job-1-0", 1, Some(MARK)), pod("job-2-0", 2, None)]).is_none());
        assert!(eviction(&status, &[pod("job-2-0", 2, Some("  "))]).is_none(), "an empty mark is none");
        // A pending or finished gang holds no GPUs.
        let pending: TrainingJobStatus = serde_json::from_value(json!({"phase": "Pending", "attempt": 2})).unwrap();
        assert!(eviction(&pending, &pods).is_none());
        let done: TrainingJobStatus = serde_json::from_value(json!({"phase": "Succeeded", "attempt": 2})).unwrap();
        assert!(eviction(&done, &pods).is_none());
        // Two marked pods: one eviction that says so.
        let both = vec![pod("job-2-0", 2, Some(MARK)), pod("job-2-1", 2, Some(MARK))];
        assert!(eviction(&status, &both).unwrap().message.contains("and 1 more"));

        let mut decisions = HashMap::new();
        decisions.insert("u".to_string(), JobDecision::Pending { reason: "x".into(), position: 1 });
        evict_marked(&mut decisions, [("u", &status, pods.as_slice())]);
        assert!(matches!(&decisions["u"], JobDecision::Evict(e) if e.reason == "GpuUnhealthy"));
    }

    #[test]
    fn the_lifecycle_stops_and_requeues_the_gang_without_counting_a_restart() {
        let status = running(1);
        let pods = vec![pod("job-1-0", 1, Some(MARK)), pod("job-1-1", 1, None)];
        let spec: capstan_crds::TrainingJobSpec = serde_json::from_value(json!({
            "image": "t:1", "replicas": 2, "gpusPerReplica": 2, "command": ["x"],
            "runPolicy": {"backoffLimit": 0}
        }))
        .unwrap();
        let gspec = mapping::gang_spec(&spec);
        let prev = mapping::gang_state(&status);
        let observed: Vec<Observed> =
            (0..2).map(|index| Observed { index, attempt: 1, state: ReplicaObs::Running }).collect();
        let input = PassInput {
            observed: observed.clone(),
            evict: eviction(&status, &pods),
            now: 1_800_000_000,
            ..Default::default()
        };
        let plan = lifecycle::plan(&gspec, &prev, &input);
        assert!(plan.actions.iter().any(|a| matches!(a, Action::Stop { attempt: 1, .. })), "{:?}", plan.actions);
        assert!(plan.actions.iter().any(
            |a| matches!(a, Action::Event { reason, message, .. } if reason == "GpuUnhealthy" && message.contains("GPU 3"))
        ));
        // The pods are gone: requeued, the restart not counted (backoffLimit 0 is not hit).
        let gone = PassInput { observed: vec![], now: 1_800_000_005, ..Default::default() };
        let next = lifecycle::plan(&gspec, &plan.state, &gone);
        assert_eq!(next.state.phase, Phase::Pending);
        assert_eq!(next.state.restarts, 0);
        assert_eq!(next.state.uncounted_restarts, 1);
        assert_eq!(next.state.reason, "GpuUnhealthy");
    }
}
