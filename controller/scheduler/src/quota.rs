//! Quota accounting: per queue per quota entry (a product, or `*`), and per cohort pool.
//!
//! The model is Kueue's. An entry has `nominal`, an optional `borrowing_limit` and a
//! `lending_limit` (default: all of nominal). The part of nominal that is not lendable is
//! guaranteed to the queue. Queues of one cohort that have an entry with the same key
//! share a pool of the lendable parts: the pool's `cap` is the sum of the lending limits,
//! its `used` the sum over members of their usage above their guaranteed part. A queue may
//! add `need` when
//! * its usage stays within `nominal + borrowing_limit` (no cohort: within `nominal`), and
//! * it stays within its guaranteed part, or the pool's `used` stays within `cap`.

use std::collections::{BTreeMap, HashMap};

use crate::types::QueueDef;

/// One quota entry of one queue.
pub(crate) struct Entry {
    pub queue: u32,
    pub nominal: u64,
    /// `None`: unlimited.
    pub borrow: Option<u64>,
    pub guaranteed: u64,
    pub usage: u64,
    pub cpool: Option<u32>,
}

/// The lendable quota of one key in one cohort.
pub(crate) struct CohortPool {
    pub cap: u64,
    pub used: u64,
    pub members: Vec<u32>,
}

/// One queue's state during a pass.
pub(crate) struct QueueSt<'a> {
    pub def: &'a QueueDef,
    pub weight: f64,
    /// Entry charged for each cluster pool (product), if any.
    pub entry_for_pool: Vec<Option<u32>>,
    /// GPUs in use per cluster pool (fair share).
    pub gpu_use: Vec<u64>,
    pub cpu_use: u64,
    pub mem_use: u64,
}

/// Why a quota check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaFail {
    /// More than the queue may ever use.
    Limit,
    /// Not now: in use, or lent to the cohort.
    Now,
}

pub(crate) struct Quotas<'a> {
    pub queues: Vec<QueueSt<'a>>,
    pub by_name: HashMap<&'a str, u32>,
    pub entries: Vec<Entry>,
    pub cpools: Vec<CohortPool>,
}

impl<'a> Quotas<'a> {
    pub fn build(defs: &'a [QueueDef], products: &[&str]) -> Self {
        let mut by_name: HashMap<&'a str, u32> = HashMap::new();
        let mut sorted: Vec<&'a QueueDef> = Vec::new();
        for d in defs {
            if !by_name.contains_key(d.name.as_str()) {
                by_name.insert(d.name.as_str(), 0);
                sorted.push(d);
            }
        }
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut queues = Vec::with_capacity(sorted.len());
        let mut entries: Vec<Entry> = Vec::new();
        let mut cpool_of: BTreeMap<(&'a str, &'a str), u32> = BTreeMap::new();
        let mut cpools: Vec<CohortPool> = Vec::new();
        for (qi, d) in sorted.iter().enumerate() {
            by_name.insert(d.name.as_str(), qi as u32);
            let mut keys: HashMap<&'a str, u32> = HashMap::new();
            for q in &d.quotas {
                if keys.contains_key(q.product.as_str()) {
                    continue;
                }
                let nominal = u64::from(q.nominal);
                let lend = q.lending_limit.map_or(nominal, |l| u64::from(l).min(nominal));
                let cpool = d.cohort.as_deref().map(|c| {
                    *cpool_of.entry((c, q.product.as_str())).or_insert_with(|| {
                        cpools.push(CohortPool { cap: 0, used: 0, members: Vec::new() });
                        (cpools.len() - 1) as u32
                    })
                });
                let e = entries.len() as u32;
                if let Some(c) = cpool {
                    cpools[c as usize].cap += lend;
                    cpools[c as usize].members.push(e);
                }
                entries.push(Entry {
                    queue: qi as u32,
                    nominal,
                    borrow: if d.cohort.is_some() { q.borrowing_limit.map(u64::from) } else { Some(0) },
                    guaranteed: nominal - lend,
                    usage: 0,
                    cpool,
                });
                keys.insert(q.product.as_str(), e);
            }
            let entry_for_pool = products.iter().map(|p| keys.get(p).or_else(|| keys.get("*")).copied()).collect();
            queues.push(QueueSt {
                def: d,
                weight: f64::from(d.weight.max(1)),
                entry_for_pool,
                gpu_use: vec![0; products.len()],
                cpu_use: 0,
                mem_use: 0,
            });
        }
        Quotas { queues, by_name, entries, cpools }
    }

    fn own(e: &Entry) -> u64 {
        e.usage.saturating_sub(e.guaranteed)
    }

    /// Whether `need` more fits entry `e`; `Ok(true)` when it goes beyond nominal.
    pub fn check(&self, e: u32, need: u64) -> Result<bool, QuotaFail> {
        let en = &self.entries[e as usize];
        let after = en.usage + need;
        if let Some(b) = en.borrow {
            if need > en.nominal + b {
                return Err(QuotaFail::Limit);
            }
            if after > en.nominal + b {
                return Err(QuotaFail::Now);
            }
        }
        if let Some(c) = en.cpool {
            if after > en.guaranteed {
                let pool = &self.cpools[c as usize];
                if need > pool.cap + en.guaranteed {
                    return Err(QuotaFail::Limit);
                }
                let used = pool.used - Self::own(en) + (after - en.guaranteed);
                if used > pool.cap {
                    return Err(QuotaFail::Now);
                }
            }
        }
        Ok(after > en.nominal)
    }

    pub fn add(&mut self, e: u32, amount: u64) {
        let en = &mut self.entries[e as usize];
        let before = Self::own(en);
        en.usage += amount;
        let after = Self::own(en);
        if let Some(c) = en.cpool {
            self.cpools[c as usize].used += after - before;
        }
    }

    pub fn sub(&mut self, e: u32, amount: u64) {
        let en = &mut self.entries[e as usize];
        let before = Self::own(en);
        en.usage -= amount;
        let after = Self::own(en);
        if let Some(c) = en.cpool {
            self.cpools[c as usize].used -= before - after;
        }
    }

    /// Most the entry could add now.
    pub fn avail(&self, e: u32) -> u64 {
        let en = &self.entries[e as usize];
        let by_limit = en.borrow.map_or(u64::MAX, |b| (en.nominal + b).saturating_sub(en.usage));
        let by_pool = match en.cpool {
            None => u64::MAX,
            Some(c) => {
                let p = &self.cpools[c as usize];
                en.guaranteed.saturating_sub(en.usage) + p.cap.saturating_sub(p.used)
            }
        };
        by_limit.min(by_pool)
    }

    /// Of the entry's unused nominal, how much others in the cohort use now.
    pub fn lent(&self, e: u32) -> u64 {
        let en = &self.entries[e as usize];
        en.nominal.saturating_sub(en.usage).saturating_sub(self.avail(e))
    }

    /// Other queues of the entry's cohort pool using more than their nominal: (entry, borrowed).
    pub fn borrowers(&self, e: u32) -> Vec<(u32, u64)> {
        let en = &self.entries[e as usize];
        let Some(c) = en.cpool else { return Vec::new() };
        self.cpools[c as usize]
            .members
            .iter()
            .filter(|&&m| m != e)
            .map(|&m| (m, &self.entries[m as usize]))
            .filter(|(_, m)| m.usage > m.nominal)
            .map(|(i, m)| (i, m.usage - m.nominal))
            .collect()
    }
}
