//! Small builders and checks shared by the scenario and property tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use capstan_scheduler::{
    Decision, GangShape, Gpu, Node, PendingGang, QueueDef, Quota, Reclaim, RunningGang, Slot, Snapshot, Topology,
};

pub const H100: &str = "H100";
pub const A100: &str = "A100";

/// An H100 node with `gpus` healthy GPUs in rack r1 of block b1.
pub fn node(name: &str, gpus: u32) -> Node {
    Node {
        name: name.into(),
        product: H100.into(),
        gpu_memory_mib: 81_559,
        gpus: (0..gpus).map(|index| Gpu { index, healthy: true }).collect(),
        cpu_millis: 128_000,
        memory_bytes: 1 << 40,
        topology: Topology { block: "b1".into(), rack: "r1".into() },
        schedulable: true,
    }
}

/// The node placed in `block`/`rack`.
pub fn at(mut n: Node, block: &str, rack: &str) -> Node {
    n.topology = Topology { block: block.into(), rack: rack.into() };
    n
}

/// The node with these GPUs unhealthy.
pub fn sick(mut n: Node, bad: &[u32]) -> Node {
    for g in &mut n.gpus {
        if bad.contains(&g.index) {
            g.healthy = false;
        }
    }
    n
}

/// A queue with an H100 nominal quota, no cohort, weight 1, preemption within the queue,
/// reclaim Any.
pub fn queue(name: &str, nominal: u32) -> QueueDef {
    QueueDef {
        name: name.into(),
        cohort: None,
        quotas: vec![Quota { product: H100.into(), nominal, borrowing_limit: None, lending_limit: None }],
        weight: 1,
        preempt_within_queue: true,
        reclaim: Reclaim::Any,
    }
}

/// The queue in `cohort`.
pub fn in_cohort(mut q: QueueDef, cohort: &str) -> QueueDef {
    q.cohort = Some(cohort.into());
    q
}

/// A pending gang of `replicas` x `gpus` H100 in `queue`, priority 0, submitted at 0.
pub fn job(id: &str, queue: &str, replicas: u32, gpus: u32) -> PendingGang {
    PendingGang {
        id: id.into(),
        queue: queue.into(),
        priority: 0,
        shape: GangShape {
            replicas,
            gpus_per_replica: gpus,
            product: Some(H100.into()),
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
        },
        submitted_at: 0,
    }
}

/// The gang with this priority.
pub fn prio(mut g: PendingGang, p: i32) -> PendingGang {
    g.priority = p;
    g
}

/// The gang submitted at `t`.
pub fn submitted(mut g: PendingGang, t: i64) -> PendingGang {
    g.submitted_at = t;
    g
}

/// A running gang of `queue` at priority `priority` holding these GPUs (one slot per
/// replica), started at 0, never checkpointed.
pub fn running(id: &str, queue: &str, priority: i32, slots: &[(&str, &[u32])]) -> RunningGang {
    let per = slots.first().map_or(0, |s| s.1.len() as u32);
    RunningGang {
        id: id.into(),
        queue: queue.into(),
        priority,
        shape: GangShape {
            replicas: slots.len() as u32,
            gpus_per_replica: per,
            product: Some(H100.into()),
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
        },
        placement: slots.iter().map(|(n, g)| Slot { node: (*n).into(), gpus: g.to_vec() }).collect(),
        started_at: 0,
        last_checkpoint: None,
    }
}

/// `n` GPUs starting at `from` on one node.
pub fn gpus(from: u32, n: u32) -> Vec<u32> {
    (from..from + n).collect()
}

/// Decisions by kind.
#[derive(Debug, Default)]
pub struct Outcome {
    pub admit: BTreeMap<String, (Vec<Slot>, bool)>,
    pub pending: BTreeMap<String, (String, u32)>,
    pub preempt: BTreeMap<String, (String, String)>,
}

pub fn outcome(ds: &[Decision]) -> Outcome {
    let mut o = Outcome::default();
    for d in ds {
        match d {
            Decision::Admit { gang, placement, borrowed } => {
                assert!(
                    o.admit.insert(gang.clone(), (placement.clone(), *borrowed)).is_none(),
                    "{gang} admitted twice"
                );
            }
            Decision::Pending { gang, reason, position } => {
                assert!(o.pending.insert(gang.clone(), (reason.clone(), *position)).is_none(), "{gang} pending twice");
            }
            Decision::Preempt { victim, for_gang, reason } => {
                assert!(
                    o.preempt.insert(victim.clone(), (for_gang.clone(), reason.clone())).is_none(),
                    "{victim} preempted twice"
                );
            }
        }
    }
    o
}

/// The invariants every pass must keep; panics with a description otherwise.
pub fn check_invariants(s: &Snapshot, ds: &[Decision]) {
    let o = outcome(ds);
    // Exactly one Admit or Pending per pending gang.
    for p in &s.pending {
        let a = o.admit.contains_key(&p.id);
        let w = o.pending.contains_key(&p.id);
        assert!(a ^ w, "{}: admitted {a}, pending {w}", p.id);
    }
    assert_eq!(o.admit.len() + o.pending.len(), s.pending.len(), "decisions for unknown gangs");
    let nodes: HashMap<&str, &Node> = s.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let by_id: HashMap<&str, &PendingGang> = s.pending.iter().map(|p| (p.id.as_str(), p)).collect();
    // No GPU twice: running gangs' GPUs and admitted ones are disjoint.
    let mut used: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut cpu: HashMap<&str, u64> = HashMap::new();
    let mut mem: HashMap<&str, u64> = HashMap::new();
    for r in &s.running {
        for sl in &r.placement {
            for g in &sl.gpus {
                used.insert((sl.node.clone(), *g));
            }
            *cpu.entry(sl.node.as_str()).or_default() += r.shape.cpu_millis;
            *mem.entry(sl.node.as_str()).or_default() += r.shape.memory_bytes;
        }
    }
    for (id, (placement, _)) in &o.admit {
        let p = by_id[id.as_str()];
        // All or nothing: one slot per replica, each with its GPUs.
        assert_eq!(placement.len() as u32, p.shape.replicas, "{id}: slots");
        let mut products = BTreeSet::new();
        for sl in placement {
            assert_eq!(sl.gpus.len() as u32, p.shape.gpus_per_replica, "{id}: GPUs per replica");
            let n = nodes.get(sl.node.as_str()).unwrap_or_else(|| panic!("{id}: unknown node {}", sl.node));
            assert!(n.schedulable, "{id}: on unschedulable {}", n.name);
            if p.shape.gpus_per_replica > 0 {
                products.insert(n.product.clone());
            }
            if let Some(pr) = &p.shape.product {
                if p.shape.gpus_per_replica > 0 {
                    assert_eq!(&n.product, pr, "{id}: product");
                }
            }
            for g in &sl.gpus {
                let gpu =
                    n.gpus.iter().find(|x| x.index == *g).unwrap_or_else(|| panic!("{id}: no GPU {g} on {}", n.name));
                assert!(
                    n.gpus.iter().filter(|x| x.index == *g).all(|x| x.healthy),
                    "{id}: unhealthy GPU {g} on {}",
                    n.name
                );
                assert!(gpu.healthy);
                assert!(used.insert((sl.node.clone(), *g)), "{id}: GPU {g} on {} given twice", sl.node);
            }
            *cpu.entry(sl.node.as_str()).or_default() += p.shape.cpu_millis;
            *mem.entry(sl.node.as_str()).or_default() += p.shape.memory_bytes;
        }
        assert!(products.len() <= 1, "{id}: mixes products {products:?}");
    }
    // CPU and memory not overcommitted on nodes that received new gangs.
    let touched: BTreeSet<&str> = o.admit.values().flat_map(|(pl, _)| pl.iter().map(|s| s.node.as_str())).collect();
    for n in touched {
        let node = nodes[n];
        assert!(cpu[n] <= node.cpu_millis, "CPU overcommitted on {n}");
        assert!(mem[n] <= node.memory_bytes, "memory overcommitted on {n}");
    }
    // Preemptions name running gangs and pending gangs that stay pending.
    let running_ids: BTreeSet<&str> = s.running.iter().map(|r| r.id.as_str()).collect();
    for (v, (f, _)) in &o.preempt {
        assert!(running_ids.contains(v.as_str()), "preempts unknown {v}");
        assert!(o.pending.contains_key(f), "{f} preempts {v} but is not pending");
    }
    // Positions: 1..=k within each queue.
    let mut per_queue: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (id, (_, pos)) in &o.pending {
        per_queue.entry(by_id[id.as_str()].queue.as_str()).or_default().push(*pos);
    }
    for (q, mut ps) in per_queue {
        ps.sort_unstable();
        assert_eq!(ps, (1..=ps.len() as u32).collect::<Vec<_>>(), "positions in {q}");
    }
}
