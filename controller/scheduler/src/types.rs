//! The values the scheduler reads (a [`Snapshot`]) and writes ([`Decision`]s).

use serde::{Deserialize, Serialize};

/// Everything the scheduler sees at one instant. It is read, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The nodes. Names are unique; a later node with an already seen name is ignored.
    pub nodes: Vec<Node>,
    /// The queues. Names are unique; a later queue with an already seen name is ignored.
    pub queues: Vec<QueueDef>,
    /// Gangs holding GPUs now (including ones told to stop that have not stopped yet).
    pub running: Vec<RunningGang>,
    /// Gangs waiting for admission. Each gets exactly one `Admit` or `Pending` decision.
    pub pending: Vec<PendingGang>,
    /// The current time, seconds since the epoch (same clock as the other timestamps).
    pub now: i64,
}

/// One machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    /// Host name, unique in the cluster; it is also the `host` topology level.
    pub name: String,
    /// GPU product of all the node's GPUs, as in the `nvidia.com/gpu.product` label
    /// (for example `NVIDIA-H100-80GB-HBM3`).
    pub product: String,
    /// Memory of one GPU, MiB (informational; gangs ask by product).
    pub gpu_memory_mib: u64,
    /// The node's GPUs with their health.
    pub gpus: Vec<Gpu>,
    /// Allocatable CPU, millicores.
    pub cpu_millis: u64,
    /// Allocatable memory, bytes.
    pub memory_bytes: u64,
    /// Where the node sits: host (its name) < rack < block.
    pub topology: Topology,
    /// `false` (cordoned, draining, not ready): the node gets nothing new.
    pub schedulable: bool,
}

/// One GPU of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Gpu {
    /// Device index on the node (`CUDA_VISIBLE_DEVICES` numbering).
    pub index: u32,
    /// `false`: never given to a gang.
    pub healthy: bool,
}

/// Topology labels of a node. The host level is the node itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Topology {
    /// The block (for example a network spine or NVLink domain group): the widest level.
    pub block: String,
    /// The rack inside the block.
    pub rack: String,
}

/// A queue: who may use how many GPUs, and who may preempt whom (Kueue's ClusterQueue).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueDef {
    /// Queue name, unique.
    pub name: String,
    /// Queues in the same cohort lend each other unused quota.
    pub cohort: Option<String>,
    /// Quota per GPU product; at most one entry per product (a later duplicate is ignored).
    pub quotas: Vec<Quota>,
    /// Fair-share weight: a queue of weight 2 is entitled to twice the share of one of
    /// weight 1. 0 is read as 1.
    pub weight: u32,
    /// Whether a higher-priority gang of this queue may preempt lower-priority running
    /// gangs of the same queue (Kueue `withinClusterQueue: LowerPriority`).
    pub preempt_within_queue: bool,
    /// Whether this queue preempts borrowers in its cohort to get its nominal quota back
    /// (Kueue `reclaimWithinCohort`).
    pub reclaim: Reclaim,
}

/// Who a queue may preempt to reclaim quota that its cohort borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Reclaim {
    /// Any borrowing gang, whatever its priority.
    #[default]
    Any,
    /// Only borrowing gangs of lower priority than the gang that needs the quota.
    LowerPriority,
    /// Never preempt to reclaim; wait for borrowers to finish.
    Never,
}

/// Quota of one GPU product in one queue (Kueue's nominalQuota of a ResourceFlavor).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// GPU product, or `*`: the quota for every product the queue does not list by name
    /// (one shared amount for all of them).
    pub product: String,
    /// GPUs the queue owns.
    pub nominal: u32,
    /// Most GPUs it may use beyond `nominal` by borrowing from its cohort. `None`: no
    /// limit. Without a cohort nothing can be borrowed.
    pub borrowing_limit: Option<u32>,
    /// Most of its `nominal` it lends to the cohort. `None`: all of it (when unused).
    pub lending_limit: Option<u32>,
}

/// What a gang asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GangShape {
    /// Replicas; all are placed or none.
    pub replicas: u32,
    /// GPUs each replica needs, all on the replica's node.
    pub gpus_per_replica: u32,
    /// GPU product wanted; `None`: any one product (all replicas get the same product).
    pub product: Option<String>,
    /// CPU per replica, millicores.
    pub cpu_millis: u64,
    /// Memory per replica, bytes.
    pub memory_bytes: u64,
}

/// A gang waiting for admission.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PendingGang {
    /// Caller's id, unique among pending and running gangs.
    pub id: String,
    /// Queue it was submitted to.
    pub queue: String,
    /// Priority; higher goes first and may preempt lower.
    pub priority: i32,
    /// What it needs.
    pub shape: GangShape,
    /// When it was submitted (orders gangs of one priority within a queue).
    pub submitted_at: i64,
}

/// A gang holding GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunningGang {
    /// Caller's id.
    pub id: String,
    /// Queue it was admitted through (its usage counts against this queue's quota).
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// What it asked for (CPU and memory per replica are taken from here).
    pub shape: GangShape,
    /// Where it runs: one slot per replica.
    pub placement: Vec<Slot>,
    /// When it started.
    pub started_at: i64,
    /// When it last saved a checkpoint, if ever.
    pub last_checkpoint: Option<i64>,
}

/// Where one replica runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Slot {
    /// Node name.
    pub node: String,
    /// GPU indices on that node.
    pub gpus: Vec<u32>,
}

/// One decision of a scheduling pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Decision {
    /// Start the gang on exactly these slots, one per replica in replica order.
    Admit {
        /// Pending gang id.
        gang: String,
        /// One slot per replica.
        placement: Vec<Slot>,
        /// Whether the queue goes beyond its nominal quota with it (borrowing from the
        /// cohort; such a gang may later be preempted when the owner reclaims).
        borrowed: bool,
    },
    /// Stop a running gang (grace period: SIGTERM, time to checkpoint), then requeue it;
    /// this does not count against its backoffLimit. `for_gang` stays `Pending` in this
    /// pass and is admitted by a later pass once the victims are gone.
    Preempt {
        /// Running gang id.
        victim: String,
        /// Pending gang that needs its GPUs or quota.
        for_gang: String,
        /// For a person.
        reason: String,
    },
    /// The gang waits.
    Pending {
        /// Pending gang id.
        gang: String,
        /// For a person: what it needs and what is missing, with the numbers.
        reason: String,
        /// Position among the still-pending gangs of its queue, 1 = next.
        position: u32,
    },
}
