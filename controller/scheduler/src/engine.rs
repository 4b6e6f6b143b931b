//! One scheduling pass. See the crate documentation for the algorithm.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fmt::Write as _;

use crate::cluster::{hist_cap, hist_max, Cluster, Shape};
use crate::quota::{QuotaFail, Quotas};
use crate::types::{Decision, PendingGang, Reclaim, RunningGang, Slot, Snapshot};

/// A pending gang.
struct Gang<'a> {
    p: &'a PendingGang,
    q: Option<u32>,
    shape: Shape,
}

/// A running gang, with exactly what it holds in this pass's accounting.
struct Run<'a> {
    r: &'a RunningGang,
    q: Option<u32>,
    /// (node, GPUs, CPU, memory) it holds.
    held: Vec<(u32, Vec<u32>, u64, u64)>,
    /// (quota entry, GPUs) it is charged.
    charges: Vec<(u32, u64)>,
    /// (pool, GPUs) for fair share.
    gpu_pools: Vec<(u32, u64)>,
    /// Chosen as a victim in this pass.
    taken: bool,
}

/// The free GPUs held back from later gangs in this pass for one blocked gang.
struct Reservation {
    gang: u32,
}

/// Queue order key: higher priority first, then lower weighted dominant share, then name.
struct Key {
    prio: i32,
    share: f64,
    q: u32,
}

impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        o.prio.cmp(&self.prio).then(self.share.total_cmp(&o.share)).then(self.q.cmp(&o.q))
    }
}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Key {}

/// How one candidate product went for a gang.
#[derive(Clone, Copy)]
enum Try {
    /// The queue has no quota entry for the product.
    NoEntry(u32),
    /// Quota said no.
    Quota(u32, u32, QuotaFail),
    /// Quota fine; no placement now.
    Place(u32, u32),
}

type PlaceKey = (u32, u32, u32, u64, u64);
type PreemptKey = (u32, i32, u32, u32, u32, u64, u64);

pub(crate) struct Engine<'a> {
    cl: Cluster<'a>,
    qs: Quotas<'a>,
    runs: Vec<Run<'a>>,
    runs_by_queue: Vec<Vec<u32>>,
    gangs: Vec<Gang<'a>>,
    /// Gangs per known queue, in queue order.
    lists: Vec<Vec<u32>>,
    /// Gangs of unknown queues, by queue name.
    unknown: BTreeMap<&'a str, Vec<u32>>,
    reason: Vec<String>,
    admitted: Vec<bool>,
    out: Vec<Decision>,
    failed_place: HashSet<PlaceKey>,
    failed_preempt: HashSet<PreemptKey>,
    reservation: Vec<Option<Reservation>>,
    /// Free GPUs per pool held by the reservation.
    held: Vec<u64>,
    /// Free GPUs per pool claimed for gangs waiting on preemption.
    claimed: Vec<u64>,
    /// GPUs per pool admitted in this pass.
    given: Vec<u64>,
    pool_totals: Vec<f64>,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn list_names(names: &[&str]) -> String {
    const MAX: usize = 3;
    if names.len() <= MAX {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..MAX].join(", "), names.len() - MAX)
    }
}

impl<'a> Engine<'a> {
    pub fn new(s: &'a Snapshot) -> Self {
        let mut cl = Cluster::build(&s.nodes);
        let products: Vec<&str> = cl.pools.iter().map(|p| p.product).collect();
        let mut qs = Quotas::build(&s.queues, &products);
        let npools = products.len();

        // Running gangs: take what they hold, charge their queues.
        let mut runs = Vec::with_capacity(s.running.len());
        let mut runs_by_queue = vec![Vec::new(); qs.queues.len()];
        let mut order: Vec<&'a RunningGang> = s.running.iter().collect();
        order.sort_by(|a, b| a.id.cmp(&b.id));
        for r in order {
            let q = qs.by_name.get(r.queue.as_str()).copied();
            let mut run = Run { r, q, held: Vec::new(), charges: Vec::new(), gpu_pools: Vec::new(), taken: false };
            for slot in &r.placement {
                let Some(&n) = cl.by_name.get(slot.node.as_str()) else { continue };
                let nd = &cl.nodes[n as usize];
                let (cpu, mem) = (r.shape.cpu_millis.min(nd.cpu_free), r.shape.memory_bytes.min(nd.mem_free));
                let pool = nd.pool;
                let took = cl.occupy(n, &slot.gpus, cpu, mem);
                run.held.push((n, took, cpu, mem));
                let used = slot.gpus.len() as u64;
                if let Some(q) = q {
                    let qst = &mut qs.queues[q as usize];
                    qst.gpu_use[pool as usize] += used;
                    qst.cpu_use += cpu;
                    qst.mem_use += mem;
                    if let Some(e) = qst.entry_for_pool[pool as usize] {
                        match run.charges.iter_mut().find(|c| c.0 == e) {
                            Some(c) => c.1 += used,
                            None => run.charges.push((e, used)),
                        }
                    }
                }
                match run.gpu_pools.iter_mut().find(|c| c.0 == pool) {
                    Some(c) => c.1 += used,
                    None => run.gpu_pools.push((pool, used)),
                }
            }
            for &(e, used) in &run.charges {
                qs.add(e, used);
            }
            if let Some(q) = q {
                runs_by_queue[q as usize].push(runs.len() as u32);
            }
            runs.push(run);
        }
        cl.index_all();

        // Pending gangs, per queue in queue order.
        let mut gangs = Vec::with_capacity(s.pending.len());
        let mut lists = vec![Vec::new(); qs.queues.len()];
        let mut unknown: BTreeMap<&'a str, Vec<u32>> = BTreeMap::new();
        for p in &s.pending {
            let q = qs.by_name.get(p.queue.as_str()).copied();
            let gi = gangs.len() as u32;
            match q {
                Some(q) => lists[q as usize].push(gi),
                None => unknown.entry(p.queue.as_str()).or_default().push(gi),
            }
            gangs.push(Gang { p, q, shape: Shape::of(&p.shape) });
        }
        let order_key = |gi: &u32| {
            let p = gangs[*gi as usize].p;
            (Reverse(p.priority), p.submitted_at, p.id.as_str(), *gi)
        };
        for l in lists.iter_mut().chain(unknown.values_mut()) {
            l.sort_by_cached_key(order_key);
        }
        let pool_totals = cl.pools.iter().map(|p| p.healthy as f64).collect();
        let n = gangs.len();
        Engine {
            cl,
            qs,
            runs,
            runs_by_queue,
            gangs,
            lists,
            unknown,
            reason: vec![String::new(); n],
            admitted: vec![false; n],
            out: Vec::new(),
            failed_place: HashSet::new(),
            failed_preempt: HashSet::new(),
            reservation: (0..npools).map(|_| None).collect(),
            held: vec![0; npools],
            claimed: vec![0; npools],
            given: vec![0; npools],
            pool_totals,
        }
    }

    /// Weighted dominant resource share of a queue.
    fn share(&self, q: u32) -> f64 {
        let st = &self.qs.queues[q as usize];
        let mut d: f64 = 0.0;
        for (p, &u) in st.gpu_use.iter().enumerate() {
            if self.pool_totals[p] > 0.0 {
                d = d.max(u as f64 / self.pool_totals[p]);
            }
        }
        if self.cl.cpu_total > 0 {
            d = d.max(st.cpu_use as f64 / self.cl.cpu_total as f64);
        }
        if self.cl.mem_total > 0 {
            d = d.max(st.mem_use as f64 / self.cl.mem_total as f64);
        }
        d / st.weight
    }

    /// The pass: take gangs in order (priority, fair share, submission) and decide each.
    pub fn run(mut self) -> Vec<Decision> {
        let mut heap = BinaryHeap::new();
        let mut cursor = vec![0usize; self.lists.len()];
        let mut deferred = Vec::new();
        for q in 0..self.lists.len() {
            if let Some(&gi) = self.lists[q].first() {
                heap.push(Reverse(Key {
                    prio: self.gangs[gi as usize].p.priority,
                    share: self.share(q as u32),
                    q: q as u32,
                }));
            }
        }
        while let Some(Reverse(k)) = heap.pop() {
            let q = k.q as usize;
            let gi = self.lists[q][cursor[q]];
            cursor[q] += 1;
            if self.decide(gi, true) {
                deferred.push(gi);
            }
            if let Some(&next) = self.lists[q].get(cursor[q]) {
                heap.push(Reverse(Key { prio: self.gangs[next as usize].p.priority, share: self.share(k.q), q: k.q }));
            }
        }
        for gi in deferred {
            self.decide(gi, false);
        }
        for l in self.unknown.values() {
            for &gi in l {
                self.reason[gi as usize] = format!("queue {} does not exist", self.gangs[gi as usize].p.queue);
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Vec<Decision> {
        let mut names: Vec<(&str, &Vec<u32>)> =
            self.qs.queues.iter().map(|q| q.def.name.as_str()).zip(self.lists.iter()).collect();
        names.extend(self.unknown.iter().map(|(n, l)| (*n, l)));
        names.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = std::mem::take(&mut self.out);
        for (_, l) in names {
            let mut pos = 0;
            for &gi in l {
                if self.admitted[gi as usize] {
                    continue;
                }
                pos += 1;
                out.push(Decision::Pending {
                    gang: self.gangs[gi as usize].p.id.clone(),
                    reason: std::mem::take(&mut self.reason[gi as usize]),
                    position: pos,
                });
            }
        }
        out
    }

    /// Decide gang `gi`. In the first round a gang that could only get in by borrowing is
    /// deferred (returns true): owners' nominal quota goes before lending.
    fn decide(&mut self, gi: u32, first_round: bool) -> bool {
        let g = &self.gangs[gi as usize];
        let (p, q, shape) = (g.p, g.q.expect("known queue"), g.shape);
        if shape.r == 0 {
            self.reason[gi as usize] = "replicas must be at least 1".into();
            return false;
        }
        if shape.g == 0 {
            self.decide_cpu_only(gi);
            return false;
        }
        let need = shape.gpus();
        let pools: Vec<u32> = match &p.shape.product {
            Some(prod) => match self.cl.pool_by_product.get(prod.as_str()) {
                Some(&pl) => vec![pl],
                None => {
                    self.reason[gi as usize] = format!("no node has {prod} GPUs");
                    return false;
                }
            },
            None => (0..self.cl.pools.len() as u32).collect(),
        };
        let qst = &self.qs.queues[q as usize];
        let mut tries: Vec<(Try, Option<bool>)> = pools
            .iter()
            .map(|&pl| match qst.entry_for_pool[pl as usize] {
                None => (Try::NoEntry(pl), None),
                Some(e) => match self.qs.check(e, need) {
                    Err(f) => (Try::Quota(pl, e, f), None),
                    Ok(b) => (Try::Place(pl, e), Some(b)),
                },
            })
            .collect();
        if p.shape.product.is_none() {
            if tries.iter().all(|t| matches!(t.0, Try::NoEntry(_))) {
                self.reason[gi as usize] = format!("queue {} has no GPU quota", qst.def.name);
                return false;
            }
            tries.retain(|t| !matches!(t.0, Try::NoEntry(_)));
            // Within nominal before borrowing, then any quota fit before none.
            tries.sort_by_key(|t| match t {
                (Try::Place(pl, _), Some(b)) => (0, *b, *pl),
                (Try::Place(pl, _), None) => (0, true, *pl),
                (Try::Quota(pl, _, _), _) | (Try::NoEntry(pl), _) => (1, true, *pl),
            });
        }
        for &(t, borrowed) in &tries {
            if first_round && borrowed == Some(true) {
                continue;
            }
            if let Try::Place(pl, e) = t {
                let key = (pl, shape.r, shape.g, shape.cpu, shape.mem);
                if self.failed_place.contains(&key) {
                    continue;
                }
                match self.cl.place(pl, &shape) {
                    Some(plan) => {
                        self.admit(gi, pl, e, &plan, borrowed.unwrap_or(false));
                        return false;
                    }
                    None => {
                        self.failed_place.insert(key);
                    }
                }
            }
        }
        if first_round && tries.iter().any(|t| t.1 == Some(true)) {
            return true;
        }
        for &(t, _) in &tries {
            let (pl, e) = match t {
                Try::Place(pl, e) => (pl, e),
                Try::Quota(pl, e, QuotaFail::Now) => (pl, e),
                _ => continue,
            };
            if !self.cl.ever_fits(pl, &shape) {
                continue;
            }
            let why = self.explain(gi, t);
            if let Some(how) = self.try_preempt(gi, pl, e) {
                self.reason[gi as usize] = format!("{why}; {how}");
                return false;
            }
        }
        let mut parts: Vec<String> = tries.iter().map(|&(t, _)| self.explain(gi, t)).collect();
        for (i, &(t, _)) in tries.iter().enumerate() {
            if let Try::Place(pl, _) = t {
                if self.reservation[pl as usize].is_none() && self.cl.ever_fits(pl, &shape) {
                    if let Some((nodes, gpus)) = self.reserve(pl, gi) {
                        let product = self.cl.pools[pl as usize].product;
                        let _ = write!(
                            parts[i],
                            "; next for {product}: {} held for it ({} now) so smaller gangs cannot delay it",
                            plural(nodes as usize, "node", "nodes"),
                            plural(gpus as usize, "free GPU", "free GPUs")
                        );
                        break;
                    }
                }
            }
        }
        // A gang that may run on several products explains each: "H100: ... | A100: ...".
        self.reason[gi as usize] = parts.join(" | ");
        false
    }

    fn admit(&mut self, gi: u32, pl: u32, e: u32, plan: &[(u32, u32)], borrowed: bool) {
        let g = &self.gangs[gi as usize];
        let (shape, q) = (g.shape, g.q.expect("known queue"));
        let mut placement = Vec::with_capacity(shape.r as usize);
        for &(n, k) in plan {
            for gpus in self.cl.take(n, k, &shape) {
                placement.push(Slot { node: self.cl.nodes[n as usize].name.to_string(), gpus });
            }
        }
        let need = shape.gpus();
        self.qs.add(e, need);
        let qst = &mut self.qs.queues[q as usize];
        qst.gpu_use[pl as usize] += need;
        qst.cpu_use += shape.cpu * u64::from(shape.r);
        qst.mem_use += shape.mem * u64::from(shape.r);
        self.given[pl as usize] += need;
        self.admitted[gi as usize] = true;
        self.out.push(Decision::Admit { gang: g.p.id.clone(), placement, borrowed });
    }

    /// Gangs that need no GPUs: first fit on CPU and memory over all schedulable nodes.
    fn decide_cpu_only(&mut self, gi: u32) {
        let g = &self.gangs[gi as usize];
        let shape = g.shape;
        let mut rem = u64::from(shape.r);
        let mut plan = Vec::new();
        for n in 0..self.cl.nodes.len() as u32 {
            if rem == 0 {
                break;
            }
            if !self.cl.nodes[n as usize].indexed {
                continue;
            }
            let c = self.cl.node_cap(n, &shape).min(rem);
            if c > 0 {
                plan.push((n, c as u32));
                rem -= c;
            }
        }
        if rem > 0 {
            self.reason[gi as usize] = format!(
                "needs {} x ({} mCPU, {} bytes memory) and no GPUs: not enough CPU or memory free on schedulable nodes",
                shape.r, shape.cpu, shape.mem
            );
            return;
        }
        let mut placement = Vec::new();
        for (n, k) in plan {
            let nd = &mut self.cl.nodes[n as usize];
            nd.cpu_free -= shape.cpu * u64::from(k);
            nd.mem_free -= shape.mem * u64::from(k);
            for _ in 0..k {
                placement.push(Slot { node: nd.name.to_string(), gpus: Vec::new() });
            }
        }
        if let Some(q) = g.q {
            let qst = &mut self.qs.queues[q as usize];
            qst.cpu_use += shape.cpu * u64::from(shape.r);
            qst.mem_use += shape.mem * u64::from(shape.r);
        }
        self.admitted[gi as usize] = true;
        self.out.push(Decision::Admit { gang: g.p.id.clone(), placement, borrowed: false });
    }

    fn apply_victim(&mut self, ri: u32) {
        let run = &self.runs[ri as usize];
        for (n, gpus, cpu, mem) in &run.held {
            self.cl.give(*n, gpus, *cpu, *mem);
        }
        for &(e, u) in &run.charges {
            self.qs.sub(e, u);
        }
    }

    fn revert_victim(&mut self, ri: u32) {
        let run = &self.runs[ri as usize];
        for (n, gpus, cpu, mem) in &run.held {
            self.cl.occupy(*n, gpus, *cpu, *mem);
        }
        for &(e, u) in &run.charges {
            self.qs.add(e, u);
        }
    }

    fn fits(&self, pl: u32, e: u32, shape: &Shape) -> bool {
        self.qs.check(e, shape.gpus()).is_ok() && self.cl.place(pl, shape).is_some()
    }

    /// Find the running gangs to stop so that gang `gi` fits product `pl` charged to quota
    /// entry `e`. On success emit the preemptions, claim what the gang will use and
    /// say so for the gang's reason.
    fn try_preempt(&mut self, gi: u32, pl: u32, e: u32) -> Option<String> {
        let g = &self.gangs[gi as usize];
        let (p, q, shape) = (g.p, g.q.expect("known queue"), g.shape);
        let key = (q, p.priority, pl, shape.r, shape.g, shape.cpu, shape.mem);
        if self.failed_preempt.contains(&key) {
            return None;
        }
        let need = shape.gpus();
        let def = self.qs.queues[q as usize].def;
        let ent = &self.qs.entries[e as usize];
        // (run, reclaim entry) — the entry is the victim queue's entry in our cohort pool.
        let mut cands: Vec<(u32, Option<u32>)> = Vec::new();
        if def.preempt_within_queue {
            for &ri in &self.runs_by_queue[q as usize] {
                let run = &self.runs[ri as usize];
                if !run.taken
                    && run.r.priority < p.priority
                    && (run.charges.iter().any(|c| c.0 == e) || run.gpu_pools.iter().any(|c| c.0 == pl))
                {
                    cands.push((ri, None));
                }
            }
        }
        if def.reclaim != Reclaim::Never && ent.cpool.is_some() && ent.usage + need <= ent.nominal {
            let cpool = ent.cpool;
            for (ri, run) in self.runs.iter().enumerate() {
                if run.taken || run.q == Some(q) || run.q.is_none() {
                    continue;
                }
                if def.reclaim == Reclaim::LowerPriority && run.r.priority >= p.priority {
                    continue;
                }
                if let Some(&(ce, _)) = run.charges.iter().find(|c| self.qs.entries[c.0 as usize].cpool == cpool) {
                    cands.push((ri as u32, Some(ce)));
                }
            }
        }
        if cands.is_empty() {
            self.failed_preempt.insert(key);
            return None;
        }
        let runs = &self.runs;
        cands.sort_by_cached_key(|&(ri, _)| {
            let r = runs[ri as usize].r;
            (r.priority, Reverse(r.last_checkpoint.unwrap_or(r.started_at)), Reverse(r.started_at), r.id.as_str())
        });
        // Enough GPUs at all?
        let mut could: u64 = self.cl.pools[pl as usize].free;
        for &(ri, _) in &cands {
            for (n, gpus, _, _) in &self.runs[ri as usize].held {
                let nd = &self.cl.nodes[*n as usize];
                if nd.pool == pl && nd.indexed {
                    could += gpus.len() as u64;
                }
            }
        }
        if could < need {
            self.failed_preempt.insert(key);
            return None;
        }
        let mut chosen: Vec<(u32, Option<u32>)> = Vec::new();
        let mut ok = false;
        for &(ri, rec) in &cands {
            if let Some(ce) = rec {
                let en = &self.qs.entries[ce as usize];
                if en.usage <= en.nominal {
                    continue; // no longer borrowing
                }
            }
            self.apply_victim(ri);
            chosen.push((ri, rec));
            if self.fits(pl, e, &shape) {
                ok = true;
                break;
            }
        }
        if !ok {
            for &(ri, _) in chosen.iter().rev() {
                self.revert_victim(ri);
            }
            self.failed_preempt.insert(key);
            return None;
        }
        // Keep only the victims that are needed, sparing the most valuable first.
        let mut i = chosen.len();
        while i > 0 {
            i -= 1;
            let ri = chosen[i].0;
            self.revert_victim(ri);
            if self.fits(pl, e, &shape) {
                chosen.remove(i);
            } else {
                self.apply_victim(ri);
            }
        }
        let plan = self.cl.place(pl, &shape).expect("fits");
        let planned = self.cl.peek(&plan, &shape);
        for &(ri, _) in chosen.iter().rev() {
            self.revert_victim(ri);
        }
        // Claim what the gang will use that is free now, so later gangs of this pass
        // cannot take it; count its quota as used.
        for (slot, &(n, k)) in planned.iter().zip(&plan) {
            let (mut vcpu, mut vmem) = (0u64, 0u64);
            for &(ri, _) in &chosen {
                for h in self.runs[ri as usize].held.iter().filter(|h| h.0 == n) {
                    vcpu += h.2;
                    vmem += h.3;
                }
            }
            let cpu = (shape.cpu * u64::from(k)).saturating_sub(vcpu);
            let mem = (shape.mem * u64::from(k)).saturating_sub(vmem);
            let took = self.cl.occupy(n, &slot.1, cpu, mem);
            self.claimed[pl as usize] += took.len() as u64;
        }
        self.qs.add(e, need);
        let product = self.cl.pools[pl as usize].product;
        let mut names = Vec::with_capacity(chosen.len());
        for &(ri, rec) in &chosen {
            self.runs[ri as usize].taken = true;
            let v = self.runs[ri as usize].r;
            names.push(v.id.as_str());
            let reason = match rec {
                None => format!(
                    "preempted for {} (priority {}) in queue {}: its priority {} is lower",
                    p.id, p.priority, def.name, v.priority
                ),
                Some(_) => format!(
                    "queue {} reclaims its {product} quota that queue {} borrowed, for {}",
                    def.name, v.queue, p.id
                ),
            };
            self.out.push(Decision::Preempt { victim: v.id.clone(), for_gang: p.id.clone(), reason });
        }
        Some(format!(
            "preempting {} ({}); admitted once {} stopped",
            plural(chosen.len(), "gang", "gangs"),
            list_names(&names),
            if chosen.len() == 1 { "it has" } else { "they have" }
        ))
    }

    /// Hold the nodes that will first have room for gang `gi` (the most free GPUs now) so
    /// that gangs after it in this pass cannot delay it. Returns (nodes, free GPUs held).
    fn reserve(&mut self, pl: u32, gi: u32) -> Option<(u32, u64)> {
        let shape = self.gangs[gi as usize].shape;
        let pool = &self.cl.pools[pl as usize];
        let mut picks = Vec::new();
        let mut sum = 0u64;
        'outer: for f in (1..=pool.maxg).rev() {
            for &n in &pool.sets[f] {
                let c = self.cl.node_total_cap(n, &shape);
                if c > 0 {
                    picks.push(n);
                    sum += c;
                    if sum >= u64::from(shape.r) {
                        break 'outer;
                    }
                }
            }
        }
        if sum < u64::from(shape.r) {
            for n in pool.lo..pool.hi {
                let nd = &self.cl.nodes[n as usize];
                if !nd.indexed || !nd.free.is_empty() {
                    continue;
                }
                let c = self.cl.node_total_cap(n, &shape);
                if c > 0 {
                    picks.push(n);
                    sum += c;
                    if sum >= u64::from(shape.r) {
                        break;
                    }
                }
            }
        }
        if sum < u64::from(shape.r) {
            return None;
        }
        let mut gpus = 0;
        for &n in &picks {
            gpus += self.cl.nodes[n as usize].free.len() as u64;
            self.cl.hold(n);
        }
        self.held[pl as usize] += gpus;
        self.reservation[pl as usize] = Some(Reservation { gang: gi });
        Some((picks.len() as u32, gpus))
    }

    /// A person's explanation of why gang `gi` did not get product `t`.
    fn explain(&self, gi: u32, t: Try) -> String {
        let g = &self.gangs[gi as usize];
        let shape = g.shape;
        let need = shape.gpus();
        let q = &self.qs.queues[g.q.expect("known queue") as usize];
        let qname = q.def.name.as_str();
        match t {
            Try::NoEntry(pl) => format!("queue {qname} has no quota for {}", self.cl.pools[pl as usize].product),
            Try::Quota(pl, e, f) => {
                let product = self.cl.pools[pl as usize].product;
                let en = &self.qs.entries[e as usize];
                if f == QuotaFail::Limit {
                    return match (en.cpool, en.borrow) {
                        (None, _) => format!(
                            "needs {need} {product} but queue {qname} has a nominal quota of {} and no cohort to borrow from",
                            en.nominal
                        ),
                        (Some(_), Some(b)) if need > en.nominal + b => format!(
                            "needs {need} {product} but queue {qname} may use at most {} ({} nominal + {b} borrowing limit)",
                            en.nominal + b,
                            en.nominal
                        ),
                        (Some(c), _) => format!(
                            "needs {need} {product} but queue {qname} may use at most {} ({} of its own + {} its cohort {} can lend)",
                            en.guaranteed + self.qs.cpools[c as usize].cap,
                            en.guaranteed,
                            self.qs.cpools[c as usize].cap,
                            q.def.cohort.as_deref().unwrap_or_default()
                        ),
                    };
                }
                let avail = self.qs.avail(e);
                let lent = self.qs.lent(e);
                let mut s = format!("needs {need} {product} in queue {qname}: {avail} free");
                if lent > 0 {
                    let borrowers = self.qs.borrowers(e);
                    let names: Vec<&str> = borrowers
                        .iter()
                        .map(|b| self.qs.queues[self.qs.entries[b.0 as usize].queue as usize].def.name.as_str())
                        .collect();
                    let to = if names.is_empty() { "the cohort".to_string() } else { list_names(&names) };
                    let how = match q.def.reclaim {
                        Reclaim::Never => "not reclaimable (reclaim: Never)".to_string(),
                        _ if en.usage + need > en.nominal => {
                            format!("reclaimable only for gangs within its nominal {}", en.nominal)
                        }
                        Reclaim::Any => "reclaimable".to_string(),
                        Reclaim::LowerPriority => "reclaimable from lower-priority gangs".to_string(),
                    };
                    let _ = write!(s, ", {lent} lent to {to}, {how}");
                } else {
                    let _ = write!(s, " ({} in use of nominal {}", en.usage, en.nominal);
                    match (en.cpool, en.borrow) {
                        (None, _) => s.push_str(", no cohort to borrow from)"),
                        (Some(_), Some(b)) if en.usage + need > en.nominal + b => {
                            let _ = write!(s, ", borrowing limit {b})");
                        }
                        (Some(c), _) => {
                            let p = &self.qs.cpools[c as usize];
                            let _ = write!(
                                s,
                                ", cohort {} has {} of {} lendable free)",
                                q.def.cohort.as_deref().unwrap_or_default(),
                                p.cap.saturating_sub(p.used),
                                p.cap
                            );
                        }
                    }
                }
                s
            }
            Try::Place(pl, _) => {
                let pool = &self.cl.pools[pl as usize];
                let product = pool.product;
                let mut s = format!("needs {} x {} {product} ({need} GPUs)", shape.r, shape.g);
                if !self.cl.ever_fits(pl, &shape) {
                    s.push_str(": never fits: ");
                    if pool.healthy < need {
                        let _ = write!(s, "only {} healthy {product} GPUs on schedulable nodes", pool.healthy);
                    } else if shape.g as usize > hist_max(&pool.total_hist) {
                        let _ =
                            write!(s, "the largest schedulable node has {} healthy GPUs", hist_max(&pool.total_hist));
                    } else if shape.cpu > pool.max_cpu || shape.mem > pool.max_mem {
                        s.push_str("no node has that much CPU or memory per replica");
                    } else {
                        let _ = write!(
                            s,
                            "schedulable nodes hold at most {} replicas of {}",
                            hist_cap(&pool.total_hist, shape.g),
                            shape.g
                        );
                    }
                    if pool.unhealthy > 0 {
                        let _ = write!(
                            s,
                            " ({} excluded)",
                            plural(pool.unhealthy as usize, "unhealthy GPU", "unhealthy GPUs")
                        );
                    }
                    return s;
                }
                let _ = write!(s, ": {} free", pool.free);
                if pool.free >= need {
                    let fit = hist_cap(&pool.hist, shape.g);
                    if fit >= u64::from(shape.r) {
                        s.push_str(" but not enough CPU or memory on the nodes that have them");
                    } else {
                        let _ = write!(
                            s,
                            ", fragmented: at most {} of {g} fit (largest free on one node: {})",
                            plural(fit as usize, "replica", "replicas"),
                            hist_max(&pool.hist),
                            g = shape.g,
                        );
                    }
                }
                if self.given[pl as usize] > 0 {
                    let _ = write!(s, "; {} given this pass to gangs ahead in order", self.given[pl as usize]);
                }
                if let Some(r) = &self.reservation[pl as usize] {
                    if r.gang != gi && self.held[pl as usize] > 0 {
                        let _ = write!(
                            s,
                            "; {} held for {} (ahead in order)",
                            self.held[pl as usize], self.gangs[r.gang as usize].p.id
                        );
                    }
                }
                if self.claimed[pl as usize] > 0 {
                    let _ = write!(s, "; {} held for gangs waiting on preemption", self.claimed[pl as usize]);
                }
                if pool.unhealthy > 0 {
                    let _ =
                        write!(s, "; {} excluded", plural(pool.unhealthy as usize, "unhealthy GPU", "unhealthy GPUs"));
                }
                s
            }
        }
    }
}
