//! GPU health in scheduling: the agent marks GPUs unhealthy (critical XID, double-bit ECC,
//! repeated thermal throttling; see `capstan_agent::health`); here that verdict reaches the
//! scheduler and the jobs.
//!
//! - [`mark_unhealthy`]: the scheduler's snapshot shows those GPUs as unhealthy, so nothing new
//!   goes to them (the scheduler never indexes unhealthy GPUs).
//! - [`evict_on_unhealthy`]: every gang holding one of them is evicted with reason
//!   [`REASON`]: `capstan_core` stops it and requeues it *without* counting a restart against
//!   `backoffLimit`, and the scheduler places it on healthy GPUs in a later pass. Its next
//!   attempt resumes from the last checkpoint when the job asks for that
//!   (`checkpoint.resume: Latest` sets `CAPSTAN_RESUME_FROM`).
//!
//! Pure functions over values; the standalone controller calls them each pass. On Kubernetes
//! the agent writes the verdict on its Node (annotation, condition, taint, GPU Feature
//! Discovery labels) and on the pods using a bad GPU; `k8s::gpu_health` evicts their gangs
//! with the same [`REASON`].

use std::collections::{BTreeMap, HashMap};

use capstan_agent::health::GpuHealth;
use capstan_core::lifecycle::{Eviction, Phase};
use capstan_scheduler::Snapshot;

use crate::mapping;
use crate::scheduling::{JobDecision, JobView};

/// Reason of the eviction of a gang on an unhealthy GPU.
pub const REASON: &str = "GpuUnhealthy";

/// Show `node`'s unhealthy GPUs as such in the snapshot.
pub fn mark_unhealthy(snapshot: &mut Snapshot, node: &str, unhealthy: &BTreeMap<u32, GpuHealth>) {
    for n in snapshot.nodes.iter_mut().filter(|n| n.name == node) {
        for g in &mut n.gpus {
            if unhealthy.get(&g.index).is_some_and(|h| !h.healthy) {
                g.healthy = false;
            }
        }
    }
}

/// The gangs that hold an unhealthy GPU of `node` (starting, running or restarting), by job
/// uid, with the eviction that moves them.
pub fn evictions(jobs: &[JobView], node: &str, unhealthy: &BTreeMap<u32, GpuHealth>) -> HashMap<String, Eviction> {
    let mut out = HashMap::new();
    for v in jobs {
        let state = mapping::gang_state(v.status);
        if !matches!(state.phase, Phase::Starting | Phase::Running | Phase::Restarting) {
            continue;
        }
        let bad = state
            .placement
            .iter()
            .filter(|slot| slot.node == node)
            .flat_map(|slot| slot.gpus.iter())
            .find_map(|g| unhealthy.get(g).filter(|h| !h.healthy).map(|h| (*g, h)));
        if let Some((gpu, h)) = bad {
            let message = format!(
                "GPU {gpu} of node {node} is unhealthy ({}: {}); moving the job to healthy GPUs, resuming from its last checkpoint",
                h.reason, h.message
            );
            out.insert(v.job.uid.clone(), Eviction { reason: REASON.to_string(), message });
        }
    }
    out
}

/// Replace the scheduler's decision for every gang on an unhealthy GPU with its eviction.
pub fn evict_on_unhealthy(
    decisions: &mut HashMap<String, JobDecision>,
    jobs: &[JobView],
    node: &str,
    unhealthy: &BTreeMap<u32, GpuHealth>,
) {
    for (uid, eviction) in evictions(jobs, node, unhealthy) {
        decisions.insert(uid, JobDecision::Evict(eviction));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::{self, LocalNode};
    use capstan_crds::trainingjob::{TrainingJobSpec, TrainingJobStatus};
    use capstan_store::StoredResource;
    use serde_json::json;

    fn resource(uid: &str) -> StoredResource {
        StoredResource {
            kind: "TrainingJob".into(),
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            generation: 1,
            resource_version: 1,
            creation_timestamp: "2026-11-28T00:00:00Z".into(),
            deletion_timestamp: None,
            labels: json!({}),
            annotations: json!({}),
            spec: json!({}),
            status: json!({}),
        }
    }

    fn spec(gpus: u32) -> TrainingJobSpec {
        serde_json::from_value(
            json!({"runtime": "process", "replicas": 1, "gpusPerReplica": gpus, "command": ["sleep", "60"]}),
        )
        .unwrap()
    }

    fn running(gpus: &[u32]) -> TrainingJobStatus {
        serde_json::from_value(json!({
            "phase": "Running",
            "attempt": 1,
            "startTime": "2026-11-28T00:00:00Z",
            "replicaStatuses": [{"index": 0, "state": "Running", "node": "n1", "gpus": gpus}],
        }))
        .unwrap()
    }

    fn bad(reason: &str) -> GpuHealth {
        GpuHealth {
            healthy: false,
            reason: reason.into(),
            message: "XID 79 (GPU has fallen off the bus) on GPU 0".into(),
            since_ms: 1,
        }
    }

    fn node() -> LocalNode {
        LocalNode {
            name: "n1".into(),
            gpus: (0..8).map(|i| (i, "NVIDIA-H100-80GB-HBM3".to_string(), 81559)).collect(),
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
        }
    }

    #[test]
    fn gang_on_an_unhealthy_gpu_is_evicted_others_are_not() {
        let (ra, rb, rc) = (resource("a"), resource("b"), resource("c"));
        let (sa, sb, sc) = (spec(2), spec(2), spec(2));
        let (ta, tb) = (running(&[0, 1]), running(&[2, 3]));
        let tc: TrainingJobStatus = serde_json::from_value(json!({"phase": "Succeeded", "replicaStatuses": [{"index": 0, "state": "Succeeded", "node": "n1", "gpus": [0, 1]}]})).unwrap();
        let views = vec![
            JobView { job: &ra, spec: &sa, status: &ta },
            JobView { job: &rb, spec: &sb, status: &tb },
            JobView { job: &rc, spec: &sc, status: &tc },
        ];
        let mut unhealthy = BTreeMap::new();
        unhealthy.insert(0, bad("XidError"));
        let ev = evictions(&views, "n1", &unhealthy);
        assert_eq!(ev.keys().collect::<Vec<_>>(), vec!["a"], "only the running gang on GPU 0");
        assert_eq!(ev["a"].reason, "GpuUnhealthy");
        assert!(
            ev["a"].message.contains("GPU 0 of node n1") && ev["a"].message.contains("XID 79"),
            "{}",
            ev["a"].message
        );
        // Another node's GPU 0 is not this node's.
        assert!(evictions(&views, "n2", &unhealthy).is_empty());
        // A healthy verdict evicts nothing.
        let mut fine = BTreeMap::new();
        fine.insert(0, GpuHealth::default());
        assert!(evictions(&views, "n1", &fine).is_empty());
    }

    #[test]
    fn the_scheduler_places_the_requeued_gang_on_healthy_gpus() {
        // Pass 1: the gang on GPUs 0-1 is evicted (GPU 0 unhealthy); the other keeps 2-3.
        let (ra, rb) = (resource("a"), resource("b"));
        let (sa, sb) = (spec(2), spec(2));
        let (ta, tb) = (running(&[0, 1]), running(&[2, 3]));
        let mut unhealthy = BTreeMap::new();
        unhealthy.insert(0, bad("XidError"));
        let views = vec![JobView { job: &ra, spec: &sa, status: &ta }, JobView { job: &rb, spec: &sb, status: &tb }];
        let mut snap = scheduling::snapshot(&node(), &[], &views, 1_800_000_000);
        mark_unhealthy(&mut snap, "n1", &unhealthy);
        assert!(!snap.nodes[0].gpus[0].healthy && snap.nodes[0].gpus[1].healthy);
        let mut decisions = scheduling::decide(&snap);
        evict_on_unhealthy(&mut decisions, &views, "n1", &unhealthy);
        assert!(matches!(&decisions["a"], JobDecision::Evict(e) if e.reason == REASON));
        assert!(!decisions.contains_key("b") || !matches!(decisions["b"], JobDecision::Evict(_)));

        // Pass 2: the gang is Pending again; it is admitted, never on GPU 0.
        let pending: TrainingJobStatus =
            serde_json::from_value(json!({"phase": "Pending", "attempt": 1, "uncountedRestarts": 1})).unwrap();
        let views =
            vec![JobView { job: &ra, spec: &sa, status: &pending }, JobView { job: &rb, spec: &sb, status: &tb }];
        let mut snap = scheduling::snapshot(&node(), &[], &views, 1_800_000_010);
        mark_unhealthy(&mut snap, "n1", &unhealthy);
        let decisions = scheduling::decide(&snap);
        match &decisions["a"] {
            JobDecision::Admit(slots) => {
                let gpus: Vec<u32> = slots.iter().flat_map(|s| s.gpus.iter().copied()).collect();
                assert_eq!(gpus.len(), 2);
                assert!(!gpus.contains(&0), "placed on the unhealthy GPU: {gpus:?}");
                assert!(!gpus.iter().any(|g| [2, 3].contains(g)), "placed on b's GPUs: {gpus:?}");
            }
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn nothing_fits_when_too_few_healthy_gpus() {
        let ra = resource("a");
        let sa = spec(8);
        let pending: TrainingJobStatus = serde_json::from_value(json!({"phase": "Pending"})).unwrap();
        let views = vec![JobView { job: &ra, spec: &sa, status: &pending }];
        let mut unhealthy = BTreeMap::new();
        unhealthy.insert(5, bad("DoubleBitEccError"));
        let mut snap = scheduling::snapshot(&node(), &[], &views, 1_800_000_000);
        mark_unhealthy(&mut snap, "n1", &unhealthy);
        match &scheduling::decide(&snap)["a"] {
            JobDecision::Pending { reason, .. } => assert!(reason.contains("unhealthy"), "{reason}"),
            other => panic!("an 8-GPU gang cannot fit on 7 healthy GPUs: {other:?}"),
        }
    }
}
