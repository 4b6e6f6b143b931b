//! A deterministic benchmark: a generated cluster and mixed workload, scheduled pass after
//! pass by capstan and by a naive first-fit gang scheduler, on the same input.
//!
//! The cluster has racks of 8 nodes and blocks of 8 racks; every fourth rack is A100, the
//! rest H100; about 1 GPU in 300 is unhealthy and 1 node in 500 is cordoned. Queues come in
//! cohorts of four, with nominal quotas that add up to the cluster (weighted), some with a
//! lending limit, all allowed to borrow within their cohort. Jobs are gangs of 1x1, 1x2,
//! 1x4, 1x8, 2x8 and 8x8 GPUs (30/20/20/15/10/5 %), mostly asking for one product, some
//! for any, 10 % of them at a higher priority, spread over the queues.
//!
//! Each pass's admissions become running gangs and each preemption puts its victim back
//! into the pending set (its grace period is taken to have passed by the next pass);
//! nothing finishes. Passes repeat until one admits and preempts nothing.
//!
//! The baseline takes gangs in submission order and places each replica on the first node
//! (by name) with room, all replicas or none, skipping gangs that do not fit. It ignores
//! queues, quotas, priorities and topology, which can only help its GPU allocation.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::types::{
    Decision, GangShape, Gpu, Node, PendingGang, QueueDef, Quota, Reclaim, RunningGang, Slot, Snapshot, Topology,
};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Nodes in the cluster.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// Pending gangs.
    pub jobs: u32,
    /// Queues (in cohorts of four).
    pub queues: u32,
    /// Generator seed: the same config gives the same input.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig { nodes: 1000, gpus_per_node: 8, jobs: 10_000, queues: 8, seed: 1 }
    }
}

/// How one scheduler did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Wall time of the first pass, seconds.
    pub pass_seconds: f64,
    /// Decisions of the first pass per second of it.
    pub decisions_per_second: f64,
    /// Passes until one changed nothing.
    pub passes: u32,
    /// Wall time of all passes, seconds.
    pub total_seconds: f64,
    /// GPUs given out at the end over healthy GPUs on schedulable nodes.
    pub gpu_allocation: f64,
    /// GPUs given out at the end.
    pub gpus_allocated: u64,
    /// Gangs running at the end.
    pub admitted: u32,
    /// Gangs pending at the end.
    pub pending: u32,
    /// Preemptions over all passes.
    pub preempted: u32,
}

/// The benchmark's result: one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The input.
    pub config: BenchConfig,
    /// Healthy GPUs on schedulable nodes.
    pub gpus_usable: u64,
    /// GPUs all jobs together ask for.
    pub gpus_demanded: u64,
    /// Capstan's scheduler.
    pub capstan: RunStats,
    /// The naive baseline: strict FIFO first-fit gangs ([`fifo`], the spine's admission before this scheduler
    /// today).
    pub baseline: RunStats,
    /// Greedy first-fit gangs that skip what does not fit ([`first_fit`]).
    pub greedy_first_fit: RunStats,
}

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

const H100: &str = "NVIDIA-H100-80GB-HBM3";
const A100: &str = "NVIDIA-A100-SXM4-80GB";
const GIB: u64 = 1 << 30;

/// The generated cluster and workload (nothing running yet).
pub fn generate(cfg: &BenchConfig) -> Snapshot {
    let mut rng = Rng::new(cfg.seed);
    let g = cfg.gpus_per_node;
    let mut nodes = Vec::with_capacity(cfg.nodes as usize);
    let mut cap: HashMap<&str, u64> = HashMap::new();
    for i in 0..cfg.nodes {
        let (rack, block) = (i / 8, i / 64);
        let product = if rack % 4 == 3 { A100 } else { H100 };
        let gpus: Vec<Gpu> = (0..g).map(|index| Gpu { index, healthy: rng.below(300) != 0 }).collect();
        *cap.entry(product).or_default() += u64::from(g);
        nodes.push(Node {
            name: format!("node-{i:05}"),
            product: product.to_string(),
            gpu_memory_mib: 81_559,
            gpus,
            cpu_millis: 16_000 * u64::from(g) + 16_000,
            memory_bytes: 128 * GIB * u64::from(g) + 64 * GIB,
            topology: Topology { block: format!("block-{block:03}"), rack: format!("rack-{rack:04}") },
            schedulable: rng.below(500) != 0,
        });
    }
    let nq = cfg.queues.max(1);
    let weights: Vec<u32> = (0..nq).map(|_| 1 + rng.below(4) as u32).collect();
    let wsum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let queues = (0..nq)
        .map(|i| {
            let w = weights[i as usize];
            let quotas = [H100, A100]
                .iter()
                .map(|p| {
                    let nominal = (cap.get(p).copied().unwrap_or(0) * u64::from(w) / wsum) as u32;
                    Quota {
                        product: p.to_string(),
                        nominal,
                        borrowing_limit: None,
                        lending_limit: if i % 3 == 2 { Some(nominal / 2) } else { None },
                    }
                })
                .collect();
            QueueDef {
                name: format!("team-{i:02}"),
                cohort: Some(format!("cohort-{}", i / 4)),
                quotas,
                weight: w,
                preempt_within_queue: true,
                reclaim: if i % 2 == 0 { Reclaim::Any } else { Reclaim::LowerPriority },
            }
        })
        .collect();
    let pending = (0..cfg.jobs)
        .map(|i| {
            let (replicas, per) = match rng.below(100) {
                0..30 => (1, 1),
                30..50 => (1, 2),
                50..70 => (1, 4),
                70..85 => (1, 8),
                85..95 => (2, 8),
                _ => (8, 8),
            };
            let per = per.min(g.max(1));
            let product = match rng.below(100) {
                0..65 => Some(H100.to_string()),
                65..85 => Some(A100.to_string()),
                _ => None,
            };
            PendingGang {
                id: format!("job-{i:06}"),
                queue: format!("team-{:02}", rng.below(u64::from(nq))),
                priority: if rng.below(10) == 0 { 1 } else { 0 },
                shape: GangShape {
                    replicas,
                    gpus_per_replica: per,
                    product,
                    cpu_millis: 8_000 * u64::from(per),
                    memory_bytes: 64 * GIB * u64::from(per),
                },
                submitted_at: i64::from(i),
            }
        })
        .collect();
    Snapshot { nodes, queues, running: Vec::new(), pending, now: i64::from(cfg.jobs) }
}

/// Greedy first fit: gangs in submission order, each replica on the first node (by name)
/// with room, all or none; a gang that does not fit is skipped. No quotas, no priorities.
pub fn first_fit(s: &Snapshot) -> Vec<Decision> {
    first_fit_impl(s, false)
}

/// Strict FIFO first fit, the spine's first admission rule: like
/// [`first_fit`], but the first gang that does not fit blocks all later ones.
pub fn fifo(s: &Snapshot) -> Vec<Decision> {
    first_fit_impl(s, true)
}

fn first_fit_impl(s: &Snapshot, strict: bool) -> Vec<Decision> {
    struct N {
        free: Vec<u32>,
        cpu: u64,
        mem: u64,
    }
    let mut idx: HashMap<&str, usize> = HashMap::new();
    let mut order: Vec<&Node> = s.nodes.iter().filter(|n| idx.insert(n.name.as_str(), 0).is_none()).collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    let mut nodes: Vec<N> = order
        .iter()
        .enumerate()
        .map(|(i, n)| {
            idx.insert(n.name.as_str(), i);
            let mut free: Vec<u32> = n.gpus.iter().filter(|g| g.healthy).map(|g| g.index).collect();
            free.sort_unstable();
            free.dedup();
            if !n.schedulable {
                free.clear();
            }
            let (cpu, mem) = if n.schedulable { (n.cpu_millis, n.memory_bytes) } else { (0, 0) };
            N { free, cpu, mem }
        })
        .collect();
    for r in &s.running {
        for slot in &r.placement {
            if let Some(&i) = idx.get(slot.node.as_str()) {
                let n = &mut nodes[i];
                n.free.retain(|g| !slot.gpus.contains(g));
                n.cpu = n.cpu.saturating_sub(r.shape.cpu_millis);
                n.mem = n.mem.saturating_sub(r.shape.memory_bytes);
            }
        }
    }
    let mut gangs: Vec<&PendingGang> = s.pending.iter().collect();
    gangs.sort_by(|a, b| (a.submitted_at, &a.id).cmp(&(b.submitted_at, &b.id)));
    let mut out = Vec::with_capacity(gangs.len());
    let mut position = 0;
    let mut blocked = false;
    for p in gangs {
        if blocked {
            position += 1;
            out.push(Decision::Pending { gang: p.id.clone(), reason: "behind a blocked gang".into(), position });
            continue;
        }
        let sh = &p.shape;
        let g = sh.gpus_per_replica as usize;
        let mut product = sh.product.as_deref();
        let mut picks: Vec<usize> = Vec::new();
        let mut used: HashMap<usize, (usize, u64, u64)> = HashMap::new();
        for _ in 0..sh.replicas {
            let found = (0..nodes.len()).find(|&i| {
                let n = &nodes[i];
                let u = used.get(&i).copied().unwrap_or_default();
                product.is_none_or(|pr| order[i].product == pr)
                    && n.free.len() >= u.0 + g
                    && n.cpu >= u.1 + sh.cpu_millis
                    && n.mem >= u.2 + sh.memory_bytes
            });
            let Some(i) = found else {
                picks.clear();
                break;
            };
            product = Some(order[i].product.as_str());
            let u = used.entry(i).or_default();
            u.0 += g;
            u.1 += sh.cpu_millis;
            u.2 += sh.memory_bytes;
            picks.push(i);
        }
        if picks.len() as u32 == sh.replicas && sh.replicas > 0 {
            let placement = picks
                .iter()
                .map(|&i| {
                    let n = &mut nodes[i];
                    n.cpu -= sh.cpu_millis;
                    n.mem -= sh.memory_bytes;
                    Slot { node: order[i].name.clone(), gpus: n.free.drain(..g).collect() }
                })
                .collect();
            out.push(Decision::Admit { gang: p.id.clone(), placement, borrowed: false });
        } else {
            position += 1;
            out.push(Decision::Pending { gang: p.id.clone(), reason: "does not fit".into(), position });
            blocked = strict;
        }
    }
    out
}

/// Healthy GPUs on schedulable nodes.
pub fn usable_gpus(s: &Snapshot) -> u64 {
    s.nodes.iter().filter(|n| n.schedulable).map(|n| n.gpus.iter().filter(|g| g.healthy).count() as u64).sum()
}

/// Run passes of `f` from `start` until one admits and preempts nothing (at most 200).
pub fn drive(start: &Snapshot, f: fn(&Snapshot) -> Vec<Decision>) -> (RunStats, Snapshot) {
    let mut s = start.clone();
    let mut stats = RunStats {
        pass_seconds: 0.0,
        decisions_per_second: 0.0,
        passes: 0,
        total_seconds: 0.0,
        gpu_allocation: 0.0,
        gpus_allocated: 0,
        admitted: 0,
        pending: 0,
        preempted: 0,
    };
    let mut originals: HashMap<String, PendingGang> = start.pending.iter().map(|p| (p.id.clone(), p.clone())).collect();
    for r in &start.running {
        originals.entry(r.id.clone()).or_insert_with(|| PendingGang {
            id: r.id.clone(),
            queue: r.queue.clone(),
            priority: r.priority,
            shape: r.shape.clone(),
            submitted_at: r.started_at,
        });
    }
    loop {
        let t = Instant::now();
        let decisions = f(&s);
        let dt = t.elapsed().as_secs_f64();
        if stats.passes == 0 {
            stats.pass_seconds = dt;
            stats.decisions_per_second = decisions.len() as f64 / dt.max(1e-9);
        }
        stats.passes += 1;
        stats.total_seconds += dt;
        let mut changed = false;
        let mut admitted: HashMap<&str, &Vec<Slot>> = HashMap::new();
        let mut victims: Vec<&str> = Vec::new();
        for d in &decisions {
            match d {
                Decision::Admit { gang, placement, .. } => {
                    admitted.insert(gang.as_str(), placement);
                }
                Decision::Preempt { victim, .. } => victims.push(victim.as_str()),
                Decision::Pending { .. } => {}
            }
        }
        if !admitted.is_empty() || !victims.is_empty() {
            changed = true;
        }
        stats.preempted += victims.len() as u32;
        let now = s.now;
        let mut running: Vec<RunningGang> = Vec::with_capacity(s.running.len() + admitted.len());
        let mut pending: Vec<PendingGang> = Vec::with_capacity(s.pending.len());
        for r in std::mem::take(&mut s.running) {
            if victims.contains(&r.id.as_str()) {
                pending.push(originals[&r.id].clone());
            } else {
                running.push(r);
            }
        }
        for p in std::mem::take(&mut s.pending) {
            match admitted.get(p.id.as_str()) {
                Some(placement) => running.push(RunningGang {
                    id: p.id.clone(),
                    queue: p.queue.clone(),
                    priority: p.priority,
                    shape: p.shape.clone(),
                    placement: (*placement).clone(),
                    started_at: now,
                    last_checkpoint: None,
                }),
                None => pending.push(p),
            }
        }
        s.running = running;
        s.pending = pending;
        s.now += 60;
        if !changed || stats.passes >= 200 {
            break;
        }
    }
    stats.gpus_allocated = s.running.iter().flat_map(|r| &r.placement).map(|sl| sl.gpus.len() as u64).sum();
    stats.gpu_allocation = stats.gpus_allocated as f64 / usable_gpus(&s).max(1) as f64;
    stats.admitted = s.running.len() as u32;
    stats.pending = s.pending.len() as u32;
    (stats, s)
}

/// Generate the input for `cfg`, run capstan and the baseline on it, report both.
pub fn run(cfg: BenchConfig) -> BenchReport {
    let s = generate(&cfg);
    let (capstan, _) = drive(&s, crate::schedule);
    let (baseline, _) = drive(&s, fifo);
    let (greedy_first_fit, _) = drive(&s, first_fit);
    BenchReport {
        config: cfg,
        gpus_usable: usable_gpus(&s),
        gpus_demanded: s
            .pending
            .iter()
            .map(|p| u64::from(p.shape.replicas) * u64::from(p.shape.gpus_per_replica))
            .sum(),
        capstan,
        baseline,
        greedy_first_fit,
    }
}
