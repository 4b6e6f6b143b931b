//! The spine's simple gang admission: strict FIFO onto free GPUs, all replicas or none.
//! The full scheduler (queues, quotas, preemption, topology) replaces it behind the same
//! inputs and outputs.

use crate::lifecycle::Slot;

/// Free GPUs of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFree {
    /// Node name.
    pub name: String,
    /// Healthy GPU indices not given to any running gang.
    pub free_gpus: Vec<u32>,
}

/// A gang waiting for admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangRequest {
    /// Caller's id for the gang.
    pub id: String,
    /// Replicas.
    pub replicas: u32,
    /// GPUs per replica.
    pub gpus_per_replica: u32,
}

/// The decision for one gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admit on these slots (one per replica).
    Admit(Vec<Slot>),
    /// Stay pending: why, and the position in the queue (1 = next).
    Pending {
        /// For a person.
        reason: String,
        /// Position in the queue.
        position: u32,
    },
}

/// Admit gangs in order while they fit; the first that does not fit blocks the rest
/// (strict FIFO: no backfill, so a large gang is never starved by small ones).
pub fn admit(nodes: &[NodeFree], queue: &[GangRequest]) -> Vec<(String, Decision)> {
    let mut free: Vec<NodeFree> = nodes.to_vec();
    let mut out = Vec::with_capacity(queue.len());
    let mut blocked: Option<String> = None;
    let total: u64 = nodes.iter().map(|n| n.free_gpus.len() as u64).sum();
    let mut position = 0;
    for g in queue {
        if let Some(head) = &blocked {
            position += 1;
            out.push((
                g.id.clone(),
                Decision::Pending { reason: format!("waiting behind {head} (first in, first out)"), position },
            ));
            continue;
        }
        match place(&free, g) {
            Some((slots, after)) => {
                free = after;
                out.push((g.id.clone(), Decision::Admit(slots)));
            }
            None => {
                position += 1;
                let need = u64::from(g.replicas) * u64::from(g.gpus_per_replica);
                let now_free: u64 = free.iter().map(|n| n.free_gpus.len() as u64).sum();
                let reason = if need > total {
                    format!("needs {need} GPUs ({} x {}); this node has {total} in all", g.replicas, g.gpus_per_replica)
                } else {
                    format!("needs {need} GPUs ({} x {}); {now_free} free now", g.replicas, g.gpus_per_replica)
                };
                out.push((g.id.clone(), Decision::Pending { reason, position }));
                blocked = Some(g.id.clone());
            }
        }
    }
    out
}

/// Place every replica (first fit, lowest GPU indices) or none.
fn place(free: &[NodeFree], g: &GangRequest) -> Option<(Vec<Slot>, Vec<NodeFree>)> {
    let have: u64 = free.iter().map(|n| n.free_gpus.len() as u64).sum();
    if u64::from(g.replicas) * u64::from(g.gpus_per_replica) > have {
        return None;
    }
    let mut free = free.to_vec();
    let mut slots = Vec::new();
    for _ in 0..g.replicas {
        let node = if g.gpus_per_replica == 0 {
            free.first_mut()?
        } else {
            free.iter_mut().find(|n| n.free_gpus.len() >= g.gpus_per_replica as usize)?
        };
        node.free_gpus.sort_unstable();
        let gpus: Vec<u32> = node.free_gpus.drain(..g.gpus_per_replica as usize).collect();
        slots.push(Slot { node: node.name.clone(), gpus });
    }
    Some((slots, free))
}
