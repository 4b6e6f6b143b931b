//! Capstan's scheduling core: one pure function, [`schedule`], from a [`Snapshot`] of the
//! cluster (nodes, queues, running and pending gangs) to a list of [`Decision`]s (admit
//! this gang on these exact nodes and GPUs, preempt these gangs and why, leave this gang
//! pending and why). No kube, no tokio, no database, no clock, no randomness: the same
//! snapshot always gives the same decisions, whatever the order of its lists. Both
//! backends (standalone and Kubernetes) call it once per controller pass.
//!
//! # The pass
//!
//! 1. **Index.** Nodes are sorted by (product, block, rack, name), so each GPU product (a
//!    *pool*), each block and each rack is a contiguous range. Running gangs' GPUs, CPU and
//!    memory are taken off; unhealthy GPUs and unschedulable nodes are never indexed. Each
//!    pool keeps, per free-GPU count, the set of nodes with exactly that many free GPUs,
//!    and every pool, block and rack a histogram of free-GPU counts. Queue usage is
//!    charged per quota entry (product, or `*`) and per cohort pool.
//! 2. **Order.** Within a queue, gangs go by priority (high first), then submission time.
//!    Across queues, a heap picks the queue whose next gang has the highest priority,
//!    then the lowest weighted dominant resource share (DRF: the largest of its GPU share
//!    per product, CPU share and memory share of the cluster, divided by its weight),
//!    then the queue name. A queue's share is updated after every admission.
//! 3. **Quota.** Kueue's model: a queue may use its `nominal` quota of a product, plus up
//!    to `borrowing_limit` more from its cohort while other members leave theirs unused
//!    (up to their `lending_limit`). See [`Quota`]. As in Kueue's scheduling cycle, a gang
//!    that would have to borrow waits until every gang within its own queue's nominal
//!    quota has been considered (a second round, same order): lending is of quota the
//!    owners do not use now. Without this, an owner reclaims, the borrower takes the freed
//!    GPUs back in the next pass, the owner reclaims again, and so on.
//! 4. **Placement** (all replicas or none). From the pool histogram: the fewest nodes `k`
//!    that can hold the gang (a replica of 8 GPUs thus takes a whole 8-GPU node, and a
//!    2x4 gang one node with 8 free rather than two). Among placements on `k` nodes it
//!    prefers one rack, then one block, then anywhere; among racks (blocks) the tightest
//!    one that works; within it, node by node, the node with the fewest free GPUs that
//!    still lets the rest of the gang fit (best fit, so small gangs fill holes and leave
//!    whole nodes to big ones). A gang within quota that cannot be placed is not admitted
//!    (Kueue #4329: 8 free GPUs as 4+4 do not hold a 1x8 gang). Cost per gang: a few
//!    histogram scans plus `O(log n)` per picked node, never a scan of all nodes.
//! 5. **Preemption**, for a gang that did not get in. Candidates: lower-priority running
//!    gangs of its own queue (`preempt_within_queue`), and, when the gang fits within its
//!    queue's nominal quota and `reclaim` allows it, running gangs of queues in its
//!    cohort that borrow that quota. Candidates are ordered to lose the least work:
//!    lowest priority, then latest save (last checkpoint, else start), then youngest;
//!    victims are added in that order until the gang fits quota and placement, then any
//!    victim that is not needed is spared again (most valuable first). The victims get
//!    `Preempt`; the gang stays `Pending` and what it will use that is free now is claimed,
//!    so later gangs of the pass cannot take it; a later pass admits it once the victims
//!    are gone. (Grace period, requeue and not counting against backoffLimit are the
//!    lifecycle's side.)
//! 6. **Backfill without delaying the head.** The first gang of a product that fits quota
//!    but cannot be placed (nor preempt its way in) becomes that product's head: the
//!    nodes that will first have room for it (most free GPUs now) are held for the rest of
//!    the pass. Gangs after it may start only on other nodes, so they cannot delay it; as
//!    work on the held nodes ends the head gets them, so it is not starved. This costs the
//!    held nodes' free GPUs while the head waits (see the bench).
//! 7. **Explain.** Every gang left pending gets a reason with the numbers (needed, free in
//!    quota, lent and to whom and whether reclaimable, fragmentation, unhealthy GPUs,
//!    GPUs held for the head or given to gangs ahead) and its position in its queue.
//!
//! Invalid input does not fail the pass: a gang of an unknown queue, for a product no node
//! has, or with zero replicas is `Pending` with a reason; slots of running gangs on unknown
//! nodes or GPUs are ignored.
//!
//! # Output
//!
//! `Admit` and `Preempt` decisions in the order they were made, then one `Pending` per
//! gang not admitted, by queue name and position.

#![warn(missing_docs)]

mod cluster;
mod engine;
mod quota;
mod types;

pub mod bench;

pub use types::{
    Decision, GangShape, Gpu, Node, PendingGang, QueueDef, Quota, Reclaim, RunningGang, Slot, Snapshot, Topology,
};

/// Decide one pass: every pending gang gets exactly one `Admit` or `Pending`, and running
/// gangs that must make room get `Preempt`. Deterministic.
///
/// ```
/// use capstan_scheduler::*;
///
/// let node = |name: &str, rack: &str| Node {
///     name: name.into(),
///     product: "H100".into(),
///     gpu_memory_mib: 81_559,
///     gpus: (0..8).map(|index| Gpu { index, healthy: true }).collect(),
///     cpu_millis: 128_000,
///     memory_bytes: 1 << 40,
///     topology: Topology { block: "b1".into(), rack: rack.into() },
///     schedulable: true,
/// };
/// let s = Snapshot {
///     nodes: vec![node("a", "r1"), node("b", "r2"), node("c", "r2")],
///     queues: vec![QueueDef {
///         name: "team-a".into(),
///         cohort: None,
///         quotas: vec![Quota { product: "H100".into(), nominal: 16, borrowing_limit: None, lending_limit: None }],
///         weight: 1,
///         preempt_within_queue: true,
///         reclaim: Reclaim::Any,
///     }],
///     running: vec![],
///     pending: vec![PendingGang {
///         id: "llm".into(),
///         queue: "team-a".into(),
///         priority: 0,
///         shape: GangShape { replicas: 2, gpus_per_replica: 8, product: None, cpu_millis: 8_000, memory_bytes: 1 << 36 },
///         submitted_at: 0,
///     }],
///     now: 0,
/// };
/// // Two whole nodes in one rack.
/// let Decision::Admit { placement, .. } = &schedule(&s)[0] else { panic!() };
/// assert_eq!(placement.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(), ["b", "c"]);
/// ```
pub fn schedule(s: &Snapshot) -> Vec<Decision> {
    engine::Engine::new(s).run()
}
