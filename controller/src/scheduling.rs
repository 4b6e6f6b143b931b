//! The adapter between the resources and `capstan_scheduler`: build a snapshot from the
//! jobs, queues and the node's GPUs; turn the scheduler's decisions into what each job's
//! lifecycle pass needs (an admission, an eviction, or a pending reason and position); and
//! compute each Queue's status. Every decision is the scheduler's; this module only maps.

use std::collections::{BTreeMap, HashMap};

use capstan_core::lifecycle::{Eviction, Phase, Slot};
use capstan_crds::queue::{QueueSpec, QueueStatus, ReclaimPolicy, WithinQueue};
use capstan_crds::trainingjob::{TrainingJobSpec, TrainingJobStatus};
use capstan_scheduler::{
    Decision, GangShape, Gpu, Node, PendingGang, QueueDef, Quota, Reclaim, RunningGang, Snapshot, Topology,
};
use capstan_store::StoredResource;

use crate::mapping;

/// The queue a job without `spec.queue` goes to.
pub const DEFAULT_QUEUE: &str = "default";

/// What the scheduler decided for one job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobDecision {
    /// Start on these slots.
    Admit(Vec<Slot>),
    /// Stop it and requeue (it is preempted).
    Evict(Eviction),
    /// Keep waiting: why, and where in its queue.
    Pending {
        /// For a person.
        reason: String,
        /// 1 = next.
        position: u32,
    },
}

/// One job as the scheduler sees it.
pub struct JobView<'a> {
    /// The stored object.
    pub job: &'a StoredResource,
    /// Its spec.
    pub spec: &'a TrainingJobSpec,
    /// Its status.
    pub status: &'a TrainingJobStatus,
}

/// The local node: its name, GPUs (index, product, memory), CPU and memory.
pub struct LocalNode {
    /// Node name.
    pub name: String,
    /// GPUs: (index, product, memory MiB).
    pub gpus: Vec<(u32, String, u64)>,
    /// Allocatable CPU in millicores.
    pub cpu_millis: u64,
    /// Allocatable memory in bytes.
    pub memory_bytes: u64,
}

impl LocalNode {
    /// CPU and memory of this machine, read from the OS once per process (they do not change
    /// while it runs; the controller builds a node every pass).
    pub fn probe(name: String, gpus: Vec<(u32, String, u64)>) -> LocalNode {
        static CAPACITY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        let &(cpu_millis, memory_bytes) = CAPACITY.get_or_init(|| {
            let cpu_millis = std::thread::available_parallelism().map(|n| n.get() as u64 * 1000).unwrap_or(1000);
            let memory_bytes = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| {
                        l.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).map(|kib| kib * 1024)
                    })
                })
                .unwrap_or(0);
            (cpu_millis, memory_bytes)
        });
        LocalNode { name, gpus, cpu_millis, memory_bytes }
    }
}

pub fn queue_name(spec: &TrainingJobSpec) -> String {
    spec.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string())
}

/// Standalone has no PriorityClass objects: a class name alone means priority 0.
fn priority(spec: &TrainingJobSpec) -> i32 {
    spec.priority.unwrap_or(0)
}

pub fn shape(spec: &TrainingJobSpec) -> GangShape {
    let res = spec.resources.as_ref();
    GangShape {
        replicas: spec.replicas,
        gpus_per_replica: spec.gpus_per_replica.unwrap_or(0),
        product: spec.gpu_product.clone(),
        cpu_millis: res
            .and_then(|r| r.cpu.as_deref())
            .and_then(mapping::parse_cpu)
            .map(|c| (c * 1000.0) as u64)
            .unwrap_or(0),
        memory_bytes: res.and_then(|r| r.memory.as_deref()).and_then(mapping::parse_memory).unwrap_or(0),
    }
}

/// A Queue resource as the scheduler's queue.
pub fn queue_def(name: &str, spec: &QueueSpec) -> QueueDef {
    QueueDef {
        name: name.to_string(),
        cohort: spec.cohort.clone(),
        quotas: spec
            .quotas
            .iter()
            .map(|q| Quota {
                product: q.product.clone(),
                nominal: q.nominal,
                borrowing_limit: q.borrowing_limit,
                lending_limit: q.lending_limit,
            })
            .collect(),
        weight: spec.weight.unwrap_or(1),
        preempt_within_queue: spec.preemption.within_queue.unwrap_or_default() == WithinQueue::LowerPriority,
        reclaim: match spec.preemption.reclaim_within_cohort.unwrap_or_default() {
            ReclaimPolicy::Any => Reclaim::Any,
            ReclaimPolicy::LowerPriority => Reclaim::LowerPriority,
            ReclaimPolicy::Never => Reclaim::Never,
        },
    }
}

/// Whether the job holds its placement (admitted and not finished).
pub fn holds(status: &TrainingJobStatus) -> bool {
    matches!(mapping::gang_state(status).phase, Phase::Starting | Phase::Running | Phase::Restarting)
}

/// Whether the job waits for admission.
fn waits(view: &JobView) -> bool {
    let phase = mapping::gang_state(view.status).phase;
    matches!(phase, Phase::Pending | Phase::Suspended)
        && view.job.deletion_timestamp.is_none()
        && !view.spec.run_policy.suspended()
}

/// The snapshot of this node. Without a Queue named `default`, an implicit one owns every
/// GPU of the node, so jobs run without any queue set up.
pub fn snapshot(node: &LocalNode, queues: &[(String, QueueSpec)], jobs: &[JobView], now: i64) -> Snapshot {
    let product = node.gpus.first().map(|g| g.1.clone()).unwrap_or_default();
    let nodes = vec![Node {
        name: node.name.clone(),
        product,
        gpu_memory_mib: node.gpus.first().map(|g| g.2).unwrap_or(0),
        gpus: node.gpus.iter().map(|g| Gpu { index: g.0, healthy: true }).collect(),
        cpu_millis: node.cpu_millis,
        memory_bytes: node.memory_bytes,
        topology: Topology { block: "local".into(), rack: "local".into() },
        schedulable: true,
    }];
    snapshot_of(nodes, queues, jobs, &priority, now)
}

/// The snapshot of any set of nodes (the Kubernetes controller passes the cluster's). Without
/// a Queue named `default`, an implicit one owns every GPU of the nodes; `priority` gives a
/// job's priority (Kubernetes resolves `priorityClassName` through PriorityClass objects).
pub fn snapshot_of(
    nodes: Vec<Node>,
    queues: &[(String, QueueSpec)],
    jobs: &[JobView],
    priority: &dyn Fn(&TrainingJobSpec) -> i32,
    now: i64,
) -> Snapshot {
    let mut defs: Vec<QueueDef> = queues.iter().map(|(n, s)| queue_def(n, s)).collect();
    if !defs.iter().any(|q| q.name == DEFAULT_QUEUE) {
        defs.push(QueueDef {
            name: DEFAULT_QUEUE.into(),
            cohort: None,
            quotas: vec![Quota {
                product: "*".into(),
                nominal: nodes.iter().map(|n| n.gpus.len() as u32).sum(),
                borrowing_limit: None,
                lending_limit: None,
            }],
            weight: 1,
            preempt_within_queue: true,
            reclaim: Reclaim::Any,
        });
    }
    let mut running = Vec::new();
    let mut pending = Vec::new();
    for v in jobs {
        if holds(v.status) {
            running.push(RunningGang {
                id: v.job.uid.clone(),
                queue: queue_name(v.spec),
                priority: priority(v.spec),
                shape: shape(v.spec),
                placement: v
                    .status
                    .replica_statuses
                    .iter()
                    .map(|r| capstan_scheduler::Slot { node: r.node.clone().unwrap_or_default(), gpus: r.gpus.clone() })
                    .collect(),
                started_at: v.status.start_time.as_deref().and_then(mapping::parse_time).unwrap_or(now),
                last_checkpoint: None,
            });
        } else if waits(v) {
            pending.push(PendingGang {
                id: v.job.uid.clone(),
                queue: queue_name(v.spec),
                priority: priority(v.spec),
                shape: shape(v.spec),
                submitted_at: mapping::parse_time(&v.job.creation_timestamp).unwrap_or(now),
            });
        }
    }
    Snapshot { nodes, queues: defs, running, pending, now }
}

/// The scheduler's decisions, by job uid.
pub fn decide(s: &Snapshot) -> HashMap<String, JobDecision> {
    let mut out = HashMap::new();
    for d in capstan_scheduler::schedule(s) {
        match d {
            Decision::Admit { gang, placement, .. } => {
                let slots = placement.into_iter().map(|p| Slot { node: p.node, gpus: p.gpus }).collect();
                out.insert(gang, JobDecision::Admit(slots));
            }
            Decision::Preempt { victim, reason, .. } => {
                out.insert(victim, JobDecision::Evict(Eviction { reason: "Preempted".into(), message: reason }));
            }
            Decision::Pending { gang, reason, position } => {
                out.insert(gang, JobDecision::Pending { reason, position });
            }
        }
    }
    out
}

/// A Queue's status: GPUs in use per product, jobs pending and admitted.
pub fn queue_status(name: &str, node: &LocalNode, jobs: &[JobView], previous: &QueueStatus) -> QueueStatus {
    let product = node.gpus.first().map(|g| g.1.clone()).unwrap_or_default();
    queue_status_of(name, &|_| product.clone(), jobs, previous)
}

/// A Queue's status over any nodes: `product_of(node)` names the GPU product of a node.
pub fn queue_status_of(
    name: &str,
    product_of: &dyn Fn(&str) -> String,
    jobs: &[JobView],
    previous: &QueueStatus,
) -> QueueStatus {
    let mut usage: BTreeMap<String, u32> = BTreeMap::new();
    let (mut pending, mut admitted) = (0, 0);
    for v in jobs.iter().filter(|v| queue_name(v.spec) == name) {
        if holds(v.status) {
            admitted += 1;
            for r in &v.status.replica_statuses {
                if !r.gpus.is_empty() {
                    *usage.entry(product_of(r.node.as_deref().unwrap_or_default())).or_default() += r.gpus.len() as u32;
                }
            }
        } else if waits(v) {
            pending += 1;
        }
    }
    QueueStatus { usage, pending, admitted, conditions: previous.conditions.clone() }
}
