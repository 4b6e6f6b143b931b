//! Property tests over random clusters and workloads.

mod support;

use std::collections::{BTreeMap, HashMap};

use capstan_scheduler::bench::Rng;
use capstan_scheduler::{
    schedule, Decision, GangShape, Gpu, Node, PendingGang, QueueDef, Quota, Reclaim, RunningGang, Slot, Snapshot,
    Topology,
};
use proptest::prelude::*;
use support::*;

const PRODUCTS: [&str; 2] = [H100, A100];

/// product, GPUs, unhealthy mask, schedulable, rack, block, small CPU
type NodeIn = (usize, u32, u8, bool, u8, u8, bool);
/// product (0 H100, 1 A100, 2 *), nominal, borrowing limit, lending limit
type QuotaIn = (u8, u32, Option<u32>, Option<u32>);
/// cohort, quotas, weight, preempt within queue, reclaim
type QueueIn = (Option<u8>, Vec<QuotaIn>, u32, bool, u8);
/// queue (taken modulo the queues; 255 = unknown), priority, replicas, GPUs per replica,
/// product (2 any, 3 unknown), submitted, big CPU
type PendingIn = (u8, i32, u32, u32, u8, i64, bool);

fn arb_node() -> impl Strategy<Value = NodeIn> {
    // product, GPUs, unhealthy mask, schedulable, rack, block, small CPU
    (
        0..2usize,
        prop_oneof![Just(8u32), Just(4), 0..=8u32],
        any::<u8>(),
        prop::bool::weighted(0.9),
        0..3u8,
        0..2u8,
        prop::bool::weighted(0.2),
    )
}

fn arb_quota() -> impl Strategy<Value = QuotaIn> {
    // product (0 H100, 1 A100, 2 *), nominal, borrowing limit, lending limit
    (0..3u8, 0..=24u32, prop::option::of(0..=16u32), prop::option::of(0..=24u32))
}

fn arb_queue() -> impl Strategy<Value = QueueIn> {
    (prop::option::weighted(0.8, 0..2u8), prop::collection::vec(arb_quota(), 1..3), 0..=4u32, any::<bool>(), 0..3u8)
}

fn arb_pending() -> impl Strategy<Value = PendingIn> {
    // queue (taken modulo the queues; 255 = unknown), priority, replicas, GPUs per replica, product (2 any, 3 unknown), submitted, big CPU
    (
        prop_oneof![12 => 0..4u8, 1 => Just(255u8)],
        -1..=2i32,
        prop_oneof![1 => Just(0u32), 12 => 1..=4u32],
        prop_oneof![1 => Just(0u32), 12 => 1..=8u32],
        prop_oneof![4 => 0..2u8, 2 => Just(2u8), 1 => Just(3u8)],
        0..20i64,
        prop::bool::weighted(0.1),
    )
}

/// nodes, queues, seed for the running gangs, how many running gangs to try, pending
type Input = (Vec<NodeIn>, Vec<QueueIn>, u64, usize, Vec<PendingIn>);

fn arb_input() -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(arb_node(), 0..10),
        prop::collection::vec(arb_queue(), 1..5),
        any::<u64>(),
        0..10usize,
        prop::collection::vec(arb_pending(), 0..14),
    )
}

/// One product, one cohort, small quotas, a busy cluster: borrowing, lending and reclaim.
fn arb_cohort_input() -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(arb_node().prop_map(|n| (0, n.1, n.2, n.3, n.4, n.5, n.6)), 1..8),
        prop::collection::vec(
            (
                prop::collection::vec((0..=16u32, prop::option::of(0..=16u32), prop::option::of(0..=16u32)), 1..=1),
                0..=4u32,
                any::<bool>(),
                0..3u8,
            )
                .prop_map(|(q, w, within, reclaim)| {
                    (Some(0), q.into_iter().map(|(n, b, l)| (0, n, b, l)).collect(), w, within, reclaim)
                }),
            2..5,
        ),
        any::<u64>(),
        4..14usize,
        prop::collection::vec(arb_pending().prop_map(|p| (p.0, p.1, p.2, p.3, 0, p.5, p.6)), 1..10),
    )
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![arb_input(), arb_cohort_input()]
}

/// Build a consistent snapshot: running gangs hold distinct GPUs within node CPU/memory.
fn build((nodes, queues, seed, nrun, pending): Input) -> Snapshot {
    let nodes: Vec<Node> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, (p, g, mask, sched, rack, block, small))| Node {
            name: format!("n{i}"),
            product: PRODUCTS[p].into(),
            gpu_memory_mib: 81_559,
            gpus: (0..g).map(|index| Gpu { index, healthy: mask & (1 << index) == 0 || index % 3 != 0 }).collect(),
            cpu_millis: if small { 4_000 } else { 64_000 },
            memory_bytes: 1 << 40,
            topology: Topology { block: format!("b{block}"), rack: format!("b{block}-r{rack}") },
            schedulable: sched,
        })
        .collect();
    let queues: Vec<QueueDef> = queues
        .into_iter()
        .enumerate()
        .map(|(i, (cohort, quotas, weight, within, reclaim))| QueueDef {
            name: format!("q{i}"),
            cohort: cohort.map(|c| format!("c{c}")),
            quotas: quotas
                .into_iter()
                .map(|(p, nominal, b, l)| Quota {
                    product: ["H100", "A100", "*"][p as usize].into(),
                    nominal,
                    borrowing_limit: b,
                    lending_limit: l.map(|l| l.min(nominal)),
                })
                .collect(),
            weight,
            preempt_within_queue: within,
            reclaim: [Reclaim::Any, Reclaim::LowerPriority, Reclaim::Never][reclaim as usize],
        })
        .collect();
    let nq = queues.len() as u64;
    let mut rng = Rng::new(seed);
    let mut free: Vec<Vec<u32>> = nodes.iter().map(|n| n.gpus.iter().map(|g| g.index).collect()).collect();
    let mut cpu: Vec<u64> = nodes.iter().map(|n| n.cpu_millis).collect();
    let mut running = Vec::new();
    for i in 0..nrun {
        if nodes.is_empty() {
            break;
        }
        let r = 1 + rng.below(2) as u32;
        let g = 1 + rng.below(4) as u32;
        let mut placement = Vec::new();
        let start = rng.below(nodes.len() as u64) as usize;
        for k in 0..nodes.len() {
            let n = (start + k) % nodes.len();
            while placement.len() < r as usize && free[n].len() >= g as usize && cpu[n] >= 1_000 {
                let gs: Vec<u32> = free[n].drain(..g as usize).collect();
                cpu[n] -= 1_000;
                placement.push(Slot { node: nodes[n].name.clone(), gpus: gs });
            }
        }
        if placement.len() < r as usize {
            for sl in placement {
                let n: usize = sl.node[1..].parse().expect("name");
                free[n].extend(sl.gpus);
                free[n].sort_unstable();
                cpu[n] += 1_000;
            }
            continue;
        }
        let started = rng.below(100) as i64;
        running.push(RunningGang {
            id: format!("run{i}"),
            queue: format!("q{}", rng.below(nq + 1)),
            priority: rng.below(3) as i32 - 1,
            shape: GangShape {
                replicas: r,
                gpus_per_replica: g,
                product: None,
                cpu_millis: 1_000,
                memory_bytes: 1 << 30,
            },
            placement,
            started_at: started,
            last_checkpoint: if rng.below(2) == 0 { Some(started + rng.below(50) as i64) } else { None },
        });
    }
    let pending = pending
        .into_iter()
        .enumerate()
        .map(|(i, (q, priority, replicas, g, product, submitted_at, big))| PendingGang {
            id: format!("job{i}"),
            queue: if q == 255 { "missing".into() } else { format!("q{}", u64::from(q) % nq) },
            priority,
            shape: GangShape {
                replicas,
                gpus_per_replica: g,
                product: match product {
                    0 | 1 => Some(PRODUCTS[product as usize].into()),
                    2 => None,
                    _ => Some("TPU".into()),
                },
                cpu_millis: if big { 8_000 } else { 1_000 },
                memory_bytes: 1 << 30,
            },
            submitted_at,
        })
        .collect();
    Snapshot { nodes, queues, running, pending, now: 200 }
}

/// Quota usage per (queue, entry key) and per (cohort, key), from running gangs plus the
/// admissions of `ds` (when given): an independent restatement of the quota model.
struct Usage {
    entry: BTreeMap<(String, String), u64>,
    pool: BTreeMap<(String, String), u64>,
}

fn entry_key(q: &QueueDef, product: &str) -> Option<String> {
    q.quotas
        .iter()
        .find(|x| x.product == product)
        .or_else(|| q.quotas.iter().find(|x| x.product == "*"))
        .map(|x| x.product.clone())
}

fn first_quota<'a>(q: &'a QueueDef, key: &str) -> &'a Quota {
    q.quotas.iter().find(|x| x.product == key).expect("entry")
}

fn usage(s: &Snapshot, admitted: &[(String, Vec<Slot>)]) -> Usage {
    let product: HashMap<&str, &str> = s.nodes.iter().map(|n| (n.name.as_str(), n.product.as_str())).collect();
    let queues: HashMap<&str, &QueueDef> = s.queues.iter().map(|q| (q.name.as_str(), q)).collect();
    let mut entry: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut charge = |queue: &str, slots: &[Slot]| {
        let Some(q) = queues.get(queue) else { return };
        for sl in slots {
            let Some(p) = product.get(sl.node.as_str()) else { continue };
            if let Some(k) = entry_key(q, p) {
                *entry.entry((q.name.clone(), k)).or_default() += sl.gpus.len() as u64;
            }
        }
    };
    for r in &s.running {
        charge(&r.queue, &r.placement);
    }
    let queue_of: HashMap<&str, &str> = s.pending.iter().map(|p| (p.id.as_str(), p.queue.as_str())).collect();
    for (id, slots) in admitted {
        charge(queue_of[id.as_str()], slots);
    }
    let mut pool: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((qn, k), u) in &entry {
        let q = queues[qn.as_str()];
        if let Some(c) = &q.cohort {
            let quota = first_quota(q, k);
            let lend = quota.lending_limit.unwrap_or(quota.nominal).min(quota.nominal);
            *pool.entry((c.clone(), k.clone())).or_default() += u.saturating_sub(u64::from(quota.nominal - lend));
        }
    }
    Usage { entry, pool }
}

fn pool_cap(s: &Snapshot, cohort: &str, key: &str) -> u64 {
    s.queues
        .iter()
        .filter(|q| q.cohort.as_deref() == Some(cohort))
        .filter_map(|q| q.quotas.iter().find(|x| x.product == key))
        .map(|x| u64::from(x.lending_limit.unwrap_or(x.nominal).min(x.nominal)))
        .sum()
}

fn check_quota(s: &Snapshot, ds: &[Decision]) {
    let admitted: Vec<(String, Vec<Slot>)> = ds
        .iter()
        .filter_map(|d| match d {
            Decision::Admit { gang, placement, .. } => Some((gang.clone(), placement.clone())),
            _ => None,
        })
        .collect();
    let before = usage(s, &[]);
    let after = usage(s, &admitted);
    let queues: HashMap<&str, &QueueDef> = s.queues.iter().map(|q| (q.name.as_str(), q)).collect();
    for ((qn, k), u) in &after.entry {
        let b = before.entry.get(&(qn.clone(), k.clone())).copied().unwrap_or(0);
        if *u == b {
            continue;
        }
        let q = queues[qn.as_str()];
        let quota = first_quota(q, k);
        let limit = match (&q.cohort, quota.borrowing_limit) {
            (None, _) => u64::from(quota.nominal),
            (Some(_), Some(bl)) => u64::from(quota.nominal + bl),
            (Some(_), None) => u64::MAX,
        };
        assert!(*u <= limit, "queue {qn} {k}: {u} in use after the pass, limit {limit}");
    }
    for ((c, k), u) in &after.pool {
        let b = before.pool.get(&(c.clone(), k.clone())).copied().unwrap_or(0);
        let cap = pool_cap(s, c, k);
        assert!(*u <= cap.max(b), "cohort {c} {k}: {u} lent out after the pass, {cap} lendable (before: {b})");
    }
    // A borrowing admission really goes beyond nominal.
    for d in ds {
        if let Decision::Admit { gang, borrowed: true, .. } = d {
            let p = s.pending.iter().find(|p| &p.id == gang).expect("pending");
            let q = queues[p.queue.as_str()];
            assert!(q.cohort.is_some(), "{gang} borrows without a cohort");
        }
    }
}

fn check_preemptions(s: &Snapshot, ds: &[Decision]) {
    let queues: HashMap<&str, &QueueDef> = s.queues.iter().map(|q| (q.name.as_str(), q)).collect();
    for d in ds {
        if let Decision::Preempt { victim, for_gang, .. } = d {
            let v = s.running.iter().find(|r| &r.id == victim).expect("victim");
            let f = s.pending.iter().find(|p| &p.id == for_gang).expect("for_gang");
            let fq = queues[f.queue.as_str()];
            if v.queue == f.queue {
                assert!(fq.preempt_within_queue && v.priority < f.priority, "{for_gang} may not preempt {victim}");
            } else {
                let vq = queues.get(v.queue.as_str()).expect("victim queue");
                assert!(fq.reclaim != Reclaim::Never, "{for_gang} reclaims under Never");
                assert!(fq.cohort.is_some() && fq.cohort == vq.cohort, "{for_gang} reclaims outside its cohort");
                if fq.reclaim == Reclaim::LowerPriority {
                    assert!(v.priority < f.priority, "{for_gang} reclaims from equal or higher priority");
                }
            }
        }
    }
}

fn reversed(s: &Snapshot) -> Snapshot {
    let mut r = s.clone();
    r.nodes.reverse();
    r.queues.reverse();
    r.running.reverse();
    r.pending.reverse();
    for n in &mut r.nodes {
        n.gpus.reverse();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No GPU given twice, gangs all or nothing, unhealthy GPUs and unschedulable nodes
    /// unused, CPU and memory not overcommitted, one decision per pending gang, positions.
    #[test]
    fn passes_keep_the_invariants(input in any_input()) {
        let s = build(input);
        let ds = schedule(&s);
        check_invariants(&s, &ds);
        check_preemptions(&s, &ds);
    }

    /// Quota is never exceeded beyond what borrowing allows.
    #[test]
    fn quota_is_never_exceeded(input in any_input()) {
        let s = build(input);
        check_quota(&s, &schedule(&s));
    }

    /// The same snapshot gives the same decisions, whatever the order of its lists.
    #[test]
    fn same_snapshot_same_decisions(input in any_input()) {
        let s = build(input);
        let a = schedule(&s);
        prop_assert_eq!(&a, &schedule(&s.clone()));
        prop_assert_eq!(&a, &schedule(&reversed(&s)));
    }

    /// Applying a pass and running the next one keeps the invariants, and a gang admitted
    /// after its victims are gone never lands on GPUs still held.
    #[test]
    fn consecutive_passes_keep_the_invariants(input in any_input()) {
        let mut s = build(input);
        for _ in 0..3 {
            let ds = schedule(&s);
            check_invariants(&s, &ds);
            check_quota(&s, &ds);
            apply(&mut s, &ds, &mut |_| 1_000);
        }
    }
}

/// Admissions start running (ending at `now + duration(id)`), victims go back to pending.
fn apply(s: &mut Snapshot, ds: &[Decision], duration: &mut dyn FnMut(&str) -> i64) -> Vec<(String, i64)> {
    let mut ends = Vec::new();
    for d in ds {
        match d {
            Decision::Admit { gang, placement, .. } => {
                let i = s.pending.iter().position(|p| &p.id == gang).expect("pending");
                let p = s.pending.remove(i);
                ends.push((p.id.clone(), s.now + duration(&p.id)));
                s.running.push(RunningGang {
                    id: p.id,
                    queue: p.queue,
                    priority: p.priority,
                    shape: p.shape,
                    placement: placement.clone(),
                    started_at: s.now,
                    last_checkpoint: None,
                });
            }
            Decision::Preempt { victim, .. } => {
                if let Some(i) = s.running.iter().position(|r| &r.id == victim) {
                    let r = s.running.remove(i);
                    s.pending.push(PendingGang {
                        id: r.id,
                        queue: r.queue,
                        priority: r.priority,
                        shape: r.shape,
                        submitted_at: r.started_at,
                    });
                }
            }
            Decision::Pending { .. } => {}
        }
    }
    ends
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// No starvation: a big gang at the head of its queue is admitted within a bounded
    /// number of passes, while small gangs keep arriving in other queues, fair sharing
    /// orders the queues, and running gangs end after at most `max_duration` passes.
    #[test]
    fn head_gang_is_eventually_admitted(
        nodes in 2..7u32,
        head_nodes in 1..4u32,
        head_per_replica in prop_oneof![Just(8u32), Just(4u32)],
        other_queues in 1..4usize,
        weights in prop::collection::vec(1..4u32, 4),
        max_duration in 1..6i64,
        arrivals in 2..10u64,
        head_queue_busy in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let head_nodes = head_nodes.min(nodes);
        let replicas = head_nodes * 8 / head_per_replica;
        let mut rng = Rng::new(seed);
        let mut queues = vec![QueueDef { weight: weights[0], ..queue("a-head", 1_000) }];
        for i in 0..other_queues {
            queues.push(QueueDef { weight: weights[i + 1], ..queue(&format!("other-{i}"), 1_000) });
        }
        let mut s = Snapshot {
            nodes: (0..nodes).map(|i| at(node(&format!("n{i}"), 8), "b", &format!("r{}", i / 4))).collect(),
            queues,
            running: Vec::new(),
            pending: vec![submitted(job("head", "a-head", replicas, head_per_replica), 0)],
            now: 0,
        };
        // Start with the cluster mostly busy with small gangs of random length.
        let mut ends: HashMap<String, i64> = HashMap::new();
        let mut n = 0;
        for node_i in 0..nodes {
            let mut next = 0;
            while next < 8 {
                let g = (1 + rng.below(4) as u32).min(8 - next);
                if rng.below(5) != 0 {
                    let q = if head_queue_busy && rng.below(3) == 0 {
                        "a-head".to_string()
                    } else {
                        format!("other-{}", rng.below(other_queues as u64))
                    };
                    let id = format!("init{n}");
                    n += 1;
                    s.running.push(running(&id, &q, 0, &[(&format!("n{node_i}"), &gpus(next, g))]));
                    ends.insert(id, 1 + rng.below(max_duration as u64) as i64);
                }
                next += g;
            }
        }
        let mut admitted_at = None;
        let limit = 12 * max_duration + 12;
        for pass in 0..limit {
            s.now = pass;
            s.running.retain(|r| ends.get(&r.id).is_none_or(|&e| e > pass));
            for _ in 0..arrivals {
                let id = format!("arrival{n}");
                n += 1;
                let q = format!("other-{}", rng.below(other_queues as u64));
                s.pending.push(submitted(job(&id, &q, 1, 1 + rng.below(4) as u32), pass));
            }
            let ds = schedule(&s);
            check_invariants(&s, &ds);
            if ds.iter().any(|d| matches!(d, Decision::Admit { gang, .. } if gang == "head")) {
                admitted_at = Some(pass);
                break;
            }
            let mut dur = |_: &str| 1 + rng.below(max_duration as u64) as i64;
            for (id, end) in apply(&mut s, &ds, &mut dur) {
                ends.insert(id, end);
            }
        }
        prop_assert!(admitted_at.is_some(), "head not admitted within {} passes", limit);
    }
}
