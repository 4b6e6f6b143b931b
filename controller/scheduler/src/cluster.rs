//! Free capacity, indexed for placement.
//!
//! Nodes are sorted by (product, block, rack, name), so every product ("pool"), every
//! block and every rack of a product is a contiguous range of node numbers. For each pool
//! a `BTreeSet` per free-GPU count holds the nodes with exactly that many free GPUs, and
//! every pool, block and rack keeps a histogram of its nodes' free-GPU counts. Placement
//! works on histograms (a few dozen integers) and touches only the nodes it picks:
//! it never scans all nodes for a replica.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::types::{GangShape, Node};

/// A gang's request in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub r: u32,
    pub g: u32,
    pub cpu: u64,
    pub mem: u64,
}

impl Shape {
    pub fn of(s: &GangShape) -> Self {
        Shape { r: s.replicas, g: s.gpus_per_replica, cpu: s.cpu_millis, mem: s.memory_bytes }
    }
    /// GPUs in all.
    pub fn gpus(&self) -> u64 {
        u64::from(self.r) * u64::from(self.g)
    }
}

/// One node's state during a pass.
pub(crate) struct NodeSt<'a> {
    pub name: &'a str,
    pub pool: u32,
    pub rack: u32,
    pub block: u32,
    /// Free healthy GPU indices, ascending.
    pub free: Vec<u32>,
    pub healthy: u32,
    pub cpu_free: u64,
    pub mem_free: u64,
    pub cpu_total: u64,
    pub mem_total: u64,
    /// Schedulable (may get new work at all).
    pub usable: bool,
    /// In the pool's index: usable and not held by a reservation.
    pub indexed: bool,
}

/// A contiguous range of nodes of one pool (a rack or a block) with its free histogram.
pub(crate) struct Domain {
    pub lo: u32,
    pub hi: u32,
    pub hist: Vec<u32>,
    pub free: u64,
}

/// All nodes of one GPU product.
pub(crate) struct Pool<'a> {
    pub product: &'a str,
    pub lo: u32,
    pub hi: u32,
    /// Largest healthy GPU count of a node: histograms have `maxg + 1` entries.
    pub maxg: usize,
    /// `sets[f]`: indexed nodes with exactly `f` free GPUs (`f >= 1`).
    pub sets: Vec<BTreeSet<u32>>,
    /// `hist[f]`: how many indexed nodes have `f` free GPUs.
    pub hist: Vec<u32>,
    /// Free GPUs on indexed nodes.
    pub free: u64,
    /// Histogram of healthy GPU counts of usable nodes (the pool as if empty).
    pub total_hist: Vec<u32>,
    /// Healthy GPUs on usable nodes.
    pub healthy: u64,
    /// Unhealthy GPUs on usable nodes.
    pub unhealthy: u64,
    pub max_cpu: u64,
    pub max_mem: u64,
    pub racks: (u32, u32),
    pub blocks: (u32, u32),
}

/// The cluster's free capacity.
pub(crate) struct Cluster<'a> {
    pub nodes: Vec<NodeSt<'a>>,
    pub by_name: HashMap<&'a str, u32>,
    pub pools: Vec<Pool<'a>>,
    pub pool_by_product: HashMap<&'a str, u32>,
    pub racks: Vec<Domain>,
    pub blocks: Vec<Domain>,
    pub cpu_total: u64,
    pub mem_total: u64,
}

/// Replicas one node can take with `free` GPUs, CPU and memory.
fn cap_of(free_gpus: u64, cpu: u64, mem: u64, s: &Shape) -> u64 {
    let by_gpu = free_gpus.checked_div(u64::from(s.g)).unwrap_or(u64::MAX);
    let by_cpu = cpu.checked_div(s.cpu).unwrap_or(u64::MAX);
    let by_mem = mem.checked_div(s.mem).unwrap_or(u64::MAX);
    by_gpu.min(by_cpu).min(by_mem)
}

/// Fewest nodes of a histogram that hold `r` replicas of `g` GPUs (GPUs only).
pub(crate) fn min_nodes(hist: &[u32], r: u32, g: u32) -> Option<u32> {
    let g = g as usize;
    let mut rem = u64::from(r);
    let mut k = 0u32;
    if rem == 0 {
        return Some(0);
    }
    for f in (g.max(1)..hist.len()).rev() {
        let n = hist[f];
        if n == 0 {
            continue;
        }
        let cap = (f / g) as u64;
        let want = rem.div_ceil(cap);
        let take = want.min(u64::from(n));
        k += take as u32;
        rem = rem.saturating_sub(take * cap);
        if rem == 0 {
            return Some(k);
        }
    }
    None
}

/// Replicas of `g` GPUs a histogram holds in all (GPUs only).
pub(crate) fn hist_cap(hist: &[u32], g: u32) -> u64 {
    let g = g as usize;
    (g.max(1)..hist.len()).map(|f| u64::from(hist[f]) * (f / g) as u64).sum()
}

/// Replicas the `j` best nodes of a histogram hold.
fn top_sum(hist: &[u32], g: usize, mut j: u32) -> u64 {
    let mut sum = 0;
    for f in (g..hist.len()).rev() {
        if j == 0 {
            break;
        }
        let t = hist[f].min(j);
        sum += u64::from(t) * (f / g) as u64;
        j -= t;
    }
    sum
}

/// Largest `f` with a nonzero histogram entry.
pub(crate) fn hist_max(hist: &[u32]) -> usize {
    (1..hist.len()).rev().find(|&f| hist[f] > 0).unwrap_or(0)
}

impl<'a> Cluster<'a> {
    /// Index the nodes. Running gangs are applied afterwards with [`Cluster::occupy`] on
    /// unindexed nodes, then [`Cluster::index_all`].
    pub fn build(input: &'a [Node]) -> Self {
        let mut seen = HashSet::new();
        let mut order: Vec<&'a Node> = input.iter().filter(|n| seen.insert(n.name.as_str())).collect();
        order.sort_by(|a, b| {
            (a.product.as_str(), a.topology.block.as_str(), a.topology.rack.as_str(), a.name.as_str()).cmp(&(
                b.product.as_str(),
                b.topology.block.as_str(),
                b.topology.rack.as_str(),
                b.name.as_str(),
            ))
        });
        let mut nodes = Vec::with_capacity(order.len());
        let mut pools: Vec<Pool<'a>> = Vec::new();
        let mut racks: Vec<Domain> = Vec::new();
        let mut blocks: Vec<Domain> = Vec::new();
        let (mut cpu_total, mut mem_total) = (0u64, 0u64);
        let mut prev: Option<&Node> = None;
        for (i, n) in order.iter().enumerate() {
            let i = i as u32;
            let new_pool = prev.is_none_or(|p| p.product != n.product);
            let new_block = new_pool || prev.is_some_and(|p| p.topology.block != n.topology.block);
            let new_rack = new_block || prev.is_some_and(|p| p.topology.rack != n.topology.rack);
            if new_pool {
                if let Some(p) = pools.last_mut() {
                    p.hi = i;
                    p.racks.1 = racks.len() as u32;
                    p.blocks.1 = blocks.len() as u32;
                }
                pools.push(Pool {
                    product: n.product.as_str(),
                    lo: i,
                    hi: i,
                    maxg: 0,
                    sets: Vec::new(),
                    hist: Vec::new(),
                    free: 0,
                    total_hist: Vec::new(),
                    healthy: 0,
                    unhealthy: 0,
                    max_cpu: 0,
                    max_mem: 0,
                    racks: (racks.len() as u32, 0),
                    blocks: (blocks.len() as u32, 0),
                });
            }
            if new_block {
                if let Some(b) = blocks.last_mut() {
                    b.hi = i;
                }
                blocks.push(Domain { lo: i, hi: i, hist: Vec::new(), free: 0 });
            }
            if new_rack {
                if let Some(r) = racks.last_mut() {
                    r.hi = i;
                }
                racks.push(Domain { lo: i, hi: i, hist: Vec::new(), free: 0 });
            }
            prev = Some(n);
            // GPUs: one entry per index; an index listed twice is healthy only if every
            // listing says so.
            let mut gpus: Vec<(u32, bool)> = n.gpus.iter().map(|g| (g.index, g.healthy)).collect();
            gpus.sort_unstable();
            let mut free: Vec<u32> = Vec::with_capacity(gpus.len());
            let mut unhealthy = 0u32;
            let mut j = 0;
            while j < gpus.len() {
                let idx = gpus[j].0;
                let mut healthy = true;
                while j < gpus.len() && gpus[j].0 == idx {
                    healthy &= gpus[j].1;
                    j += 1;
                }
                if healthy {
                    free.push(idx);
                } else {
                    unhealthy += 1;
                }
            }
            let pool = pools.last_mut().expect("pool");
            let healthy = free.len() as u32;
            pool.maxg = pool.maxg.max(free.len());
            if n.schedulable {
                pool.healthy += u64::from(healthy);
                pool.unhealthy += u64::from(unhealthy);
                pool.max_cpu = pool.max_cpu.max(n.cpu_millis);
                pool.max_mem = pool.max_mem.max(n.memory_bytes);
            }
            cpu_total = cpu_total.saturating_add(n.cpu_millis);
            mem_total = mem_total.saturating_add(n.memory_bytes);
            nodes.push(NodeSt {
                name: n.name.as_str(),
                pool: (pools.len() - 1) as u32,
                rack: (racks.len() - 1) as u32,
                block: (blocks.len() - 1) as u32,
                free,
                healthy,
                cpu_free: n.cpu_millis,
                mem_free: n.memory_bytes,
                cpu_total: n.cpu_millis,
                mem_total: n.memory_bytes,
                usable: n.schedulable,
                indexed: false,
            });
        }
        let end = nodes.len() as u32;
        if let Some(p) = pools.last_mut() {
            p.hi = end;
            p.racks.1 = racks.len() as u32;
            p.blocks.1 = blocks.len() as u32;
        }
        if let Some(b) = blocks.last_mut() {
            b.hi = end;
        }
        if let Some(r) = racks.last_mut() {
            r.hi = end;
        }
        for p in &mut pools {
            let len = p.maxg + 1;
            p.sets = (0..len).map(|_| BTreeSet::new()).collect();
            p.hist = vec![0; len];
            p.total_hist = vec![0; len];
            for d in &mut racks[p.racks.0 as usize..p.racks.1 as usize] {
                d.hist = vec![0; len];
            }
            for d in &mut blocks[p.blocks.0 as usize..p.blocks.1 as usize] {
                d.hist = vec![0; len];
            }
            for n in &nodes[p.lo as usize..p.hi as usize] {
                if n.usable {
                    p.total_hist[n.healthy as usize] += 1;
                }
            }
        }
        let by_name = nodes.iter().enumerate().map(|(i, n)| (n.name, i as u32)).collect();
        let pool_by_product = pools.iter().enumerate().map(|(i, p)| (p.product, i as u32)).collect();
        Cluster { nodes, by_name, pools, pool_by_product, racks, blocks, cpu_total, mem_total }
    }

    /// Put every usable node into the index (once, after the running gangs are applied).
    pub fn index_all(&mut self) {
        for n in 0..self.nodes.len() as u32 {
            if self.nodes[n as usize].usable {
                self.nodes[n as usize].indexed = true;
                self.add_to_index(n);
            }
        }
    }

    fn add_to_index(&mut self, n: u32) {
        let nd = &self.nodes[n as usize];
        if !nd.indexed {
            return;
        }
        let f = nd.free.len();
        let (p, r, b) = (nd.pool as usize, nd.rack as usize, nd.block as usize);
        let pool = &mut self.pools[p];
        pool.free += f as u64;
        self.racks[r].free += f as u64;
        self.blocks[b].free += f as u64;
        if f > 0 {
            pool.sets[f].insert(n);
            pool.hist[f] += 1;
            self.racks[r].hist[f] += 1;
            self.blocks[b].hist[f] += 1;
        }
    }

    fn remove_from_index(&mut self, n: u32) {
        let nd = &self.nodes[n as usize];
        if !nd.indexed {
            return;
        }
        let f = nd.free.len();
        let (p, r, b) = (nd.pool as usize, nd.rack as usize, nd.block as usize);
        let pool = &mut self.pools[p];
        pool.free -= f as u64;
        self.racks[r].free -= f as u64;
        self.blocks[b].free -= f as u64;
        if f > 0 {
            pool.sets[f].remove(&n);
            pool.hist[f] -= 1;
            self.racks[r].hist[f] -= 1;
            self.blocks[b].hist[f] -= 1;
        }
    }

    /// Take the node out of the index for the rest of the pass (a reservation).
    pub fn hold(&mut self, n: u32) {
        self.remove_from_index(n);
        self.nodes[n as usize].indexed = false;
    }

    /// Mark GPUs (those still free), CPU and memory as used. Returns the GPUs it took.
    pub fn occupy(&mut self, n: u32, gpus: &[u32], cpu: u64, mem: u64) -> Vec<u32> {
        self.remove_from_index(n);
        let nd = &mut self.nodes[n as usize];
        let mut took = Vec::new();
        for g in gpus {
            if let Ok(pos) = nd.free.binary_search(g) {
                nd.free.remove(pos);
                took.push(*g);
            }
        }
        nd.cpu_free = nd.cpu_free.saturating_sub(cpu);
        nd.mem_free = nd.mem_free.saturating_sub(mem);
        self.add_to_index(n);
        took
    }

    /// Give GPUs, CPU and memory back (exact inverse of a successful `occupy`).
    pub fn give(&mut self, n: u32, gpus: &[u32], cpu: u64, mem: u64) {
        self.remove_from_index(n);
        let nd = &mut self.nodes[n as usize];
        for g in gpus {
            if let Err(pos) = nd.free.binary_search(g) {
                nd.free.insert(pos, *g);
            }
        }
        nd.cpu_free += cpu;
        nd.mem_free += mem;
        self.add_to_index(n);
    }

    /// Take `k` replicas of `s` on node `n`: lowest free GPU indices first.
    pub fn take(&mut self, n: u32, k: u32, s: &Shape) -> Vec<Vec<u32>> {
        self.remove_from_index(n);
        let nd = &mut self.nodes[n as usize];
        let g = s.g as usize;
        let out: Vec<Vec<u32>> = (0..k).map(|_| nd.free.drain(..g).collect()).collect();
        nd.cpu_free -= s.cpu * u64::from(k);
        nd.mem_free -= s.mem * u64::from(k);
        self.add_to_index(n);
        out
    }

    /// Replicas of `s` node `n` can take now.
    pub fn node_cap(&self, n: u32, s: &Shape) -> u64 {
        let nd = &self.nodes[n as usize];
        cap_of(nd.free.len() as u64, nd.cpu_free, nd.mem_free, s)
    }

    /// Replicas of `s` node `n` could take if nothing ran on it.
    pub fn node_total_cap(&self, n: u32, s: &Shape) -> u64 {
        let nd = &self.nodes[n as usize];
        cap_of(u64::from(nd.healthy), nd.cpu_total, nd.mem_total, s)
    }

    /// Whether the pool could ever hold the gang (all usable nodes empty).
    pub fn ever_fits(&self, p: u32, s: &Shape) -> bool {
        let pool = &self.pools[p as usize];
        s.cpu <= pool.max_cpu && s.mem <= pool.max_mem && min_nodes(&pool.total_hist, s.r, s.g).is_some()
    }

    /// Place all replicas of `s` (GPUs > 0) in pool `p` or none: `(node, replicas)` pairs.
    ///
    /// Fewest nodes first; among placements with that many nodes, one rack, else one
    /// block, else anywhere; within that, best fit (the tightest domain, the nodes with the
    /// fewest free GPUs that still work), ties to the lowest node number.
    pub fn place(&self, p: u32, s: &Shape) -> Option<Vec<(u32, u32)>> {
        let pool = &self.pools[p as usize];
        if s.g as usize > pool.maxg || hist_cap(&pool.hist, s.g) < u64::from(s.r) {
            return None;
        }
        let k = min_nodes(&pool.hist, s.r, s.g)?;
        if k == 1 {
            let need = s.gpus() as usize;
            for f in need..=pool.maxg {
                for &n in &pool.sets[f] {
                    if self.node_cap(n, s) >= u64::from(s.r) {
                        return Some(vec![(n, s.r)]);
                    }
                }
            }
        } else {
            let need = s.gpus();
            for (domains, range) in [(&self.racks, pool.racks), (&self.blocks, pool.blocks)] {
                let mut cands: Vec<(u64, u32)> = (range.0..range.1)
                    .filter(|&d| {
                        let dom = &domains[d as usize];
                        dom.free >= need && min_nodes(&dom.hist, s.r, s.g) == Some(k)
                    })
                    .map(|d| (domains[d as usize].free, d))
                    .collect();
                cands.sort_unstable();
                for (_, d) in cands {
                    let dom = &domains[d as usize];
                    if let Some(pl) = self.select(pool, dom.lo, dom.hi, &dom.hist, k, s) {
                        return Some(pl);
                    }
                }
            }
            if let Some(pl) = self.select(pool, pool.lo, pool.hi, &pool.hist, k, s) {
                return Some(pl);
            }
        }
        self.place_slow(pool, s)
    }

    /// Choose `k` nodes in `[lo, hi)` holding `s.r` replicas: each step takes the node with
    /// the fewest free GPUs that still lets the remaining steps finish.
    fn select(&self, pool: &Pool, lo: u32, hi: u32, hist: &[u32], k: u32, s: &Shape) -> Option<Vec<(u32, u32)>> {
        let g = s.g as usize;
        let mut h = hist.to_vec();
        let mut rem = u64::from(s.r);
        let mut left = k;
        let mut picks: Vec<(u32, u32)> = Vec::with_capacity(k as usize);
        while rem > 0 {
            if left == 0 {
                return None;
            }
            let mut chosen = None;
            'f: for f in g..h.len() {
                if h[f] == 0 {
                    continue;
                }
                let take = ((f / g) as u64).min(rem);
                h[f] -= 1;
                let rest = top_sum(&h, g, left - 1);
                h[f] += 1;
                if take + rest < rem {
                    continue;
                }
                for &n in pool.sets[f].range(lo..hi) {
                    if picks.iter().any(|p| p.0 == n) {
                        continue;
                    }
                    if self.node_cap(n, s) >= take {
                        chosen = Some((n, take, f));
                        break 'f;
                    }
                }
            }
            let (n, take, f) = chosen?;
            h[f] -= 1;
            rem -= take;
            left -= 1;
            picks.push((n, take as u32));
        }
        Some(picks)
    }

    /// Fallback when CPU or memory, not GPUs, limit nodes: largest real capacity first.
    fn place_slow(&self, pool: &Pool, s: &Shape) -> Option<Vec<(u32, u32)>> {
        let mut caps: Vec<(u64, u32)> = (pool.lo..pool.hi)
            .filter(|&n| self.nodes[n as usize].indexed)
            .map(|n| (self.node_cap(n, s), n))
            .filter(|c| c.0 > 0)
            .collect();
        if caps.iter().map(|c| c.0).sum::<u64>() < u64::from(s.r) {
            return None;
        }
        caps.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rem = u64::from(s.r);
        let mut out = Vec::new();
        for (c, n) in caps {
            let t = c.min(rem);
            out.push((n, t as u32));
            rem -= t;
            if rem == 0 {
                break;
            }
        }
        Some(out)
    }

    /// The GPUs `take` would give for a placement, without taking them.
    pub fn peek(&self, plan: &[(u32, u32)], s: &Shape) -> Vec<(u32, Vec<u32>)> {
        plan.iter().map(|&(n, k)| (n, self.nodes[n as usize].free[..(k * s.g) as usize].to_vec())).collect()
    }
}
