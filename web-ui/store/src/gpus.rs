//! GPU telemetry that node agents push: nodes, their GPUs (identity, health, latest reading)
//! and a bounded history of readings for the GPU dashboard.
//!
//! Retention ([`Retention`]): raw readings (1 s) are kept for the last hour; older ones are
//! folded into 1-minute roll-ups ([`rollup`]: the mean of gauges, the largest value of
//! counters, the union of throttle-reason bits, and `_n`, how many readings went in), kept
//! for 24 hours, then deleted. Per GPU that is at most 3,600 raw rows + 1,440 roll-ups
//! (about 40,000 rows for an 8-GPU node, a few MB), whatever the uptime. Long-term history
//! belongs in Prometheus (scraping `/metrics`); a job's own GPU history is kept with its run
//! as MLflow system metrics.
//!
//! [`Store::compact_gpu_samples`] applies the retention; the server calls it on ingest, at
//! most once a minute.

use std::collections::BTreeMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::entities::{gpu_device, gpu_node, gpu_sample};
use crate::{Result, Store, StoreError};

/// Resolution of raw readings, s.
pub const RAW_RESOLUTION_S: i32 = 1;
/// Resolution of roll-ups, s.
pub const ROLLUP_RESOLUTION_S: i32 = 60;
const ROLLUP_MS: i64 = ROLLUP_RESOLUTION_S as i64 * 1000;
/// Raw rows folded per compaction call at most (the rest waits for the next call).
const COMPACT_BATCH: u64 = 20_000;
/// Sample rows per multi-row INSERT.
const SAMPLE_ROWS: usize = 500;

/// How long readings are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw readings younger than this stay as they are, ms.
    pub raw_ms: i64,
    /// Roll-ups younger than this are kept, ms.
    pub rollup_ms: i64,
}

impl Default for Retention {
    /// One hour raw, one day of 1-minute roll-ups.
    fn default() -> Self {
        Retention { raw_ms: 3_600_000, rollup_ms: 86_400_000 }
    }
}

/// A reading's values by name (`gpu_util`, `fb_used_mib`, ...).
pub type Values = BTreeMap<String, f64>;

/// How a value folds into a roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Mean,
    Max,
    BitOr,
}

fn fold_of(key: &str) -> Fold {
    match key {
        "energy_mj" | "pcie_replay" | "ecc_sbe_volatile" | "ecc_dbe_volatile" | "last_xid" => Fold::Max,
        "throttle_reasons" => Fold::BitOr,
        _ => Fold::Mean,
    }
}

/// Readings folded into one value set, weighted by how many readings each side holds.
/// `a` and `b` may themselves be roll-ups (their `_n`) or raw readings (weight 1).
pub fn merge(a: &Values, b: &Values) -> Values {
    let na = a.get("_n").copied().unwrap_or(1.0);
    let nb = b.get("_n").copied().unwrap_or(1.0);
    let mut out = Values::new();
    for key in a.keys().chain(b.keys()) {
        if key == "_n" || out.contains_key(key) {
            continue;
        }
        let v = match (a.get(key), b.get(key)) {
            (Some(x), None) | (None, Some(x)) => *x,
            (Some(x), Some(y)) => match fold_of(key) {
                Fold::Mean => (x * na + y * nb) / (na + nb),
                Fold::Max => x.max(*y),
                Fold::BitOr => ((*x as u64) | (*y as u64)) as f64,
            },
            (None, None) => continue,
        };
        out.insert(key.clone(), v);
    }
    out.insert("_n".into(), na + nb);
    out
}

/// Fold readings (timestamp ms, values), in any order, into buckets of `bucket_ms` starting
/// at multiples of it. Returns (bucket start, roll-up), ascending.
pub fn rollup(points: &[(i64, &Values)], bucket_ms: i64) -> Vec<(i64, Values)> {
    let bucket_ms = bucket_ms.max(1);
    let mut buckets: BTreeMap<i64, Values> = BTreeMap::new();
    for (t, v) in points {
        let start = t.div_euclid(bucket_ms) * bucket_ms;
        let merged = match buckets.get(&start) {
            Some(acc) => merge(acc, v),
            None => {
                let mut first = (*v).clone();
                first.entry("_n".into()).or_insert(1.0);
                first
            }
        };
        buckets.insert(start, merged);
    }
    buckets.into_iter().collect()
}

/// What a push says about the node.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuNodeUpdate {
    /// Node name.
    pub node: String,
    /// `nvml`, `simulated` or `none`.
    pub source: String,
    /// Driver version.
    pub driver_version: String,
    /// Sampling interval, ms.
    pub sample_interval_ms: i64,
    /// Samples the agent dropped since it started.
    pub dropped_samples: i64,
    /// Run metric points the agent dropped since it started.
    pub dropped_run_metrics: i64,
}

/// What a push says about one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDeviceUpdate {
    /// Index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product.
    pub product: String,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// Simulated.
    pub simulated: bool,
    /// Healthy.
    pub healthy: bool,
    /// Why not.
    pub health_reason: String,
    /// For a person.
    pub health_message: String,
    /// Since when, ms.
    pub health_since_ms: i64,
    /// Last XID.
    pub last_xid: i64,
}

/// One reading pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSampleIn {
    /// GPU index.
    pub index: u32,
    /// ms since the epoch.
    pub timestamp_ms: i64,
    /// Values.
    pub values: Values,
    /// The replica the GPU was given to (JSON object with at least `uid`), if any.
    pub job: Option<Value>,
}

/// A node as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuNodeRecord {
    /// Node name.
    pub node: String,
    /// `nvml`, `simulated` or `none`.
    pub source: String,
    /// Driver version.
    pub driver_version: String,
    /// Sampling interval, ms.
    pub sample_interval_ms: i64,
    /// Last push, ms.
    pub last_seen_ms: i64,
    /// Samples the agent dropped.
    pub dropped_samples: i64,
    /// Run metric points the agent dropped.
    pub dropped_run_metrics: i64,
    /// GPUs.
    pub gpus: u32,
    /// Unhealthy GPUs.
    pub unhealthy: u32,
}

/// A GPU as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDeviceRecord {
    /// Node.
    pub node: String,
    /// Index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product.
    pub product: String,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// Simulated.
    pub simulated: bool,
    /// Healthy.
    pub healthy: bool,
    /// Why not ("" when healthy).
    pub health_reason: String,
    /// For a person.
    pub health_message: String,
    /// Since when, ms (0 when healthy).
    pub health_since_ms: i64,
    /// Last XID (0: none).
    pub last_xid: i64,
    /// Time of the latest reading.
    pub latest_ms: Option<i64>,
    /// The latest reading.
    pub latest: Values,
    /// The replica on it at the latest reading.
    pub job: Option<Value>,
}

/// A stored reading or roll-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSampleRecord {
    /// ms since the epoch (start of the minute for roll-ups).
    pub timestamp_ms: i64,
    /// 1 (raw) or 60 (roll-up).
    pub resolution_s: i32,
    /// Values (roll-ups: `_n` readings folded in).
    pub values: Values,
    /// Job on the GPU.
    pub job_uid: Option<String>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Raw rows folded into roll-ups (and deleted).
    pub folded: u64,
    /// Roll-up rows written.
    pub rollups: u64,
    /// Rows deleted for age.
    pub expired: u64,
}

fn parse_values(text: &str) -> Values {
    serde_json::from_str(text).unwrap_or_default()
}

fn values_text(v: &Values) -> String {
    // Only finite numbers are stored (JSON has no NaN).
    let clean: Values = v.iter().filter(|(_, x)| x.is_finite()).map(|(k, x)| (k.clone(), *x)).collect();
    serde_json::to_string(&clean).unwrap_or_else(|_| "{}".into())
}

fn to_device(m: gpu_device::Model) -> GpuDeviceRecord {
    GpuDeviceRecord {
        latest: parse_values(&m.latest),
        job: m.job.as_deref().and_then(|j| serde_json::from_str(j).ok()),
        node: m.node,
        index: m.gpu_index.max(0) as u32,
        uuid: m.uuid,
        product: m.product,
        memory_mib: m.memory_mib,
        pci_bus_id: m.pci_bus_id,
        simulated: m.simulated,
        healthy: m.healthy,
        health_reason: m.health_reason,
        health_message: m.health_message,
        health_since_ms: m.health_since_ms,
        last_xid: m.last_xid,
        latest_ms: m.latest_ms,
    }
}

impl Store {
    /// Store one push: the node, its GPUs (identity, health, latest reading) and the
    /// readings (those older than the roll-up retention are ignored; one already stored is
    /// not stored twice, so a retried push is harmless). Returns the commands that waited
    /// for this node (now handed out) and how many readings were new or retried.
    pub async fn put_gpu_batch(
        &self,
        node: &GpuNodeUpdate,
        devices: &[GpuDeviceUpdate],
        samples: &[GpuSampleIn],
        now_ms: i64,
        retention: Retention,
    ) -> Result<(Vec<Value>, u64)> {
        let txn = self.begin_write().await?;
        let previous = gpu_node::Entity::find_by_id(node.node.clone()).one(&txn).await?;
        let commands: Vec<Value> =
            previous.as_ref().and_then(|p| serde_json::from_str(&p.commands).ok()).unwrap_or_default();
        let row = gpu_node::ActiveModel {
            node: ActiveValue::Set(node.node.clone()),
            source: ActiveValue::Set(node.source.clone()),
            driver_version: ActiveValue::Set(node.driver_version.clone()),
            sample_interval_ms: ActiveValue::Set(node.sample_interval_ms),
            last_seen_ms: ActiveValue::Set(now_ms),
            dropped_samples: ActiveValue::Set(node.dropped_samples),
            dropped_run_metrics: ActiveValue::Set(node.dropped_run_metrics),
            commands: ActiveValue::Set("[]".into()),
        };
        gpu_node::Entity::insert(row)
            .on_conflict(
                OnConflict::column(gpu_node::Column::Node)
                    .update_columns([
                        gpu_node::Column::Source,
                        gpu_node::Column::DriverVersion,
                        gpu_node::Column::SampleIntervalMs,
                        gpu_node::Column::LastSeenMs,
                        gpu_node::Column::DroppedSamples,
                        gpu_node::Column::DroppedRunMetrics,
                        gpu_node::Column::Commands,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;

        // The newest reading of each GPU in this push.
        let mut newest: BTreeMap<u32, &GpuSampleIn> = BTreeMap::new();
        for s in samples {
            if newest.get(&s.index).is_none_or(|n| n.timestamp_ms <= s.timestamp_ms) {
                newest.insert(s.index, s);
            }
        }
        for d in devices {
            let latest = newest.get(&d.index);
            let row = gpu_device::ActiveModel {
                node: ActiveValue::Set(node.node.clone()),
                gpu_index: ActiveValue::Set(d.index as i32),
                uuid: ActiveValue::Set(d.uuid.clone()),
                product: ActiveValue::Set(d.product.clone()),
                memory_mib: ActiveValue::Set(d.memory_mib),
                pci_bus_id: ActiveValue::Set(d.pci_bus_id.clone()),
                simulated: ActiveValue::Set(d.simulated),
                healthy: ActiveValue::Set(d.healthy),
                health_reason: ActiveValue::Set(d.health_reason.clone()),
                health_message: ActiveValue::Set(d.health_message.clone()),
                health_since_ms: ActiveValue::Set(d.health_since_ms),
                last_xid: ActiveValue::Set(d.last_xid),
                latest_ms: ActiveValue::Set(latest.map(|s| s.timestamp_ms)),
                latest: ActiveValue::Set(latest.map(|s| values_text(&s.values)).unwrap_or_else(|| "{}".into())),
                job: ActiveValue::Set(latest.and_then(|s| s.job.as_ref()).map(|j| j.to_string())),
            };
            let mut columns = vec![
                gpu_device::Column::Uuid,
                gpu_device::Column::Product,
                gpu_device::Column::MemoryMib,
                gpu_device::Column::PciBusId,
                gpu_device::Column::Simulated,
                gpu_device::Column::Healthy,
                gpu_device::Column::HealthReason,
                gpu_device::Column::HealthMessage,
                gpu_device::Column::HealthSinceMs,
                gpu_device::Column::LastXid,
            ];
            if latest.is_some() {
                columns.extend([gpu_device::Column::LatestMs, gpu_device::Column::Latest, gpu_device::Column::Job]);
            }
            gpu_device::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([gpu_device::Column::Node, gpu_device::Column::GpuIndex])
                        .update_columns(columns)
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        // GPUs the node no longer has.
        let indices: Vec<i32> = devices.iter().map(|d| d.index as i32).collect();
        gpu_device::Entity::delete_many()
            .filter(gpu_device::Column::Node.eq(node.node.clone()))
            .filter(gpu_device::Column::GpuIndex.is_not_in(indices))
            .exec(&txn)
            .await?;

        let oldest = now_ms - retention.rollup_ms;
        let rows: Vec<gpu_sample::ActiveModel> = samples
            .iter()
            .filter(|s| s.timestamp_ms >= oldest)
            .map(|s| gpu_sample::ActiveModel {
                node: ActiveValue::Set(node.node.clone()),
                gpu_index: ActiveValue::Set(s.index as i32),
                resolution_s: ActiveValue::Set(RAW_RESOLUTION_S),
                timestamp_ms: ActiveValue::Set(s.timestamp_ms),
                sample_values: ActiveValue::Set(values_text(&s.values)),
                job_uid: ActiveValue::Set(
                    s.job.as_ref().and_then(|j| j.get("uid")).and_then(Value::as_str).map(str::to_owned),
                ),
            })
            .collect();
        let stored = rows.len() as u64;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<gpu_sample::ActiveModel> = rows.by_ref().take(SAMPLE_ROWS).collect();
            gpu_sample::Entity::insert_many(chunk).on_conflict_do_nothing().exec_without_returning(&txn).await?;
        }
        txn.commit().await?;
        Ok((commands, stored))
    }

    /// Queue a command for the node's agent (handed out with its next push). NotFound when
    /// no agent of that name ever pushed.
    pub async fn add_gpu_command(&self, node: &str, command: Value) -> Result<()> {
        let txn = self.begin_write().await?;
        let Some(row) = gpu_node::Entity::find_by_id(node.to_owned()).one(&txn).await? else {
            return Err(StoreError::NotFound(format!("node {node}")));
        };
        let mut commands: Vec<Value> = serde_json::from_str(&row.commands).unwrap_or_default();
        commands.push(command);
        let mut am: gpu_node::ActiveModel = row.into();
        am.commands = ActiveValue::Set(serde_json::to_string(&commands)?);
        gpu_node::Entity::update(am).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Every node that pushed GPU telemetry, by name.
    pub async fn gpu_nodes(&self) -> Result<Vec<GpuNodeRecord>> {
        let nodes = gpu_node::Entity::find().order_by_asc(gpu_node::Column::Node).all(&self.db).await?;
        let devices = gpu_device::Entity::find().all(&self.db).await?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let mine = devices.iter().filter(|d| d.node == n.node);
                let (gpus, unhealthy) = mine.fold((0, 0), |(g, u), d| (g + 1, u + u32::from(!d.healthy)));
                GpuNodeRecord {
                    node: n.node,
                    source: n.source,
                    driver_version: n.driver_version,
                    sample_interval_ms: n.sample_interval_ms,
                    last_seen_ms: n.last_seen_ms,
                    dropped_samples: n.dropped_samples,
                    dropped_run_metrics: n.dropped_run_metrics,
                    gpus,
                    unhealthy,
                }
            })
            .collect())
    }

    /// The node, if it ever pushed.
    pub async fn gpu_node(&self, node: &str) -> Result<Option<GpuNodeRecord>> {
        Ok(self.gpu_nodes().await?.into_iter().find(|n| n.node == node))
    }

    /// The GPUs of a node by index; None when the node never pushed.
    pub async fn gpu_devices(&self, node: &str) -> Result<Option<Vec<GpuDeviceRecord>>> {
        if gpu_node::Entity::find_by_id(node.to_owned()).one(&self.db).await?.is_none() {
            return Ok(None);
        }
        let rows = gpu_device::Entity::find()
            .filter(gpu_device::Column::Node.eq(node))
            .order_by_asc(gpu_device::Column::GpuIndex)
            .all(&self.db)
            .await?;
        Ok(Some(rows.into_iter().map(to_device).collect()))
    }

    /// Readings of one GPU in `[from_ms, to_ms)`, oldest first, at most `limit`: roll-ups
    /// where only they remain, raw readings after.
    pub async fn gpu_samples(
        &self,
        node: &str,
        index: u32,
        from_ms: i64,
        to_ms: i64,
        limit: u64,
    ) -> Result<Vec<GpuSampleRecord>> {
        let rows = gpu_sample::Entity::find()
            .filter(gpu_sample::Column::Node.eq(node))
            .filter(gpu_sample::Column::GpuIndex.eq(index as i32))
            .filter(gpu_sample::Column::TimestampMs.gte(from_ms))
            .filter(gpu_sample::Column::TimestampMs.lt(to_ms))
            .order_by_asc(gpu_sample::Column::TimestampMs)
            .order_by_desc(gpu_sample::Column::ResolutionS)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| GpuSampleRecord {
                timestamp_ms: r.timestamp_ms,
                resolution_s: r.resolution_s,
                values: parse_values(&r.sample_values),
                job_uid: r.job_uid,
            })
            .collect())
    }

    /// Apply the retention: fold raw readings older than `retention.raw_ms` (whole minutes
    /// only) into 1-minute roll-ups, and delete roll-ups older than `retention.rollup_ms`.
    /// Folds at most 20,000 raw rows per call; call again while `folded` is that large.
    pub async fn compact_gpu_samples(&self, now_ms: i64, retention: Retention) -> Result<CompactStats> {
        let cutoff = (now_ms - retention.raw_ms).div_euclid(ROLLUP_MS) * ROLLUP_MS;
        let expire = now_ms - retention.rollup_ms;
        let txn = self.begin_write().await?;
        let raw = gpu_sample::Entity::find()
            .filter(gpu_sample::Column::ResolutionS.eq(RAW_RESOLUTION_S))
            .filter(gpu_sample::Column::TimestampMs.lt(cutoff))
            .order_by_asc(gpu_sample::Column::Node)
            .order_by_asc(gpu_sample::Column::GpuIndex)
            .order_by_asc(gpu_sample::Column::TimestampMs)
            .limit(COMPACT_BATCH)
            .all(&txn)
            .await?;
        let mut stats = CompactStats { folded: raw.len() as u64, ..CompactStats::default() };
        let mut groups: BTreeMap<(String, i32), Vec<&gpu_sample::Model>> = BTreeMap::new();
        for r in &raw {
            groups.entry((r.node.clone(), r.gpu_index)).or_default().push(r);
        }
        for ((node, index), rows) in &groups {
            let values: Vec<Values> = rows.iter().map(|r| parse_values(&r.sample_values)).collect();
            let points: Vec<(i64, &Values)> = rows.iter().zip(&values).map(|(r, v)| (r.timestamp_ms, v)).collect();
            for (start, mut folded) in rollup(&points, ROLLUP_MS) {
                if start < expire {
                    continue;
                }
                let existing = gpu_sample::Entity::find_by_id((node.clone(), *index, ROLLUP_RESOLUTION_S, start))
                    .one(&txn)
                    .await?;
                if let Some(e) = &existing {
                    folded = merge(&parse_values(&e.sample_values), &folded);
                }
                let job = rows
                    .iter()
                    .filter(|r| r.timestamp_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS == start)
                    .filter_map(|r| r.job_uid.clone())
                    .next_back()
                    .or_else(|| existing.and_then(|e| e.job_uid));
                let row = gpu_sample::ActiveModel {
                    node: ActiveValue::Set(node.clone()),
                    gpu_index: ActiveValue::Set(*index),
                    resolution_s: ActiveValue::Set(ROLLUP_RESOLUTION_S),
                    timestamp_ms: ActiveValue::Set(start),
                    sample_values: ActiveValue::Set(values_text(&folded)),
                    job_uid: ActiveValue::Set(job),
                };
                gpu_sample::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([
                            gpu_sample::Column::Node,
                            gpu_sample::Column::GpuIndex,
                            gpu_sample::Column::ResolutionS,
                            gpu_sample::Column::TimestampMs,
                        ])
                        .update_columns([gpu_sample::Column::SampleValues, gpu_sample::Column::JobUid])
                        .to_owned(),
                    )
                    .exec_without_returning(&txn)
                    .await?;
                stats.rollups += 1;
            }
            let last = rows.last().map(|r| r.timestamp_ms).unwrap_or(i64::MIN);
            gpu_sample::Entity::delete_many()
                .filter(gpu_sample::Column::Node.eq(node.clone()))
                .filter(gpu_sample::Column::GpuIndex.eq(*index))
                .filter(gpu_sample::Column::ResolutionS.eq(RAW_RESOLUTION_S))
                .filter(gpu_sample::Column::TimestampMs.lte(last))
                .exec(&txn)
                .await?;
        }
        let expired =
            gpu_sample::Entity::delete_many().filter(gpu_sample::Column::TimestampMs.lt(expire)).exec(&txn).await?;
        stats.expired = expired.rows_affected;
        txn.commit().await?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(pairs: &[(&str, f64)]) -> Values {
        pairs.iter().map(|(k, x)| (k.to_string(), *x)).collect()
    }

    #[test]
    fn rollup_folds_by_kind() {
        let a = v(&[("gpu_util", 90.0), ("energy_mj", 100.0), ("throttle_reasons", 1.0)]);
        let b = v(&[("gpu_util", 70.0), ("energy_mj", 300.0), ("throttle_reasons", 0x40 as f64)]);
        let c = v(&[("gpu_util", 10.0)]);
        let out = rollup(&[(60_500, &a), (61_000, &b), (125_000, &c)], 60_000);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 60_000);
        assert_eq!(out[0].1["gpu_util"], 80.0);
        assert_eq!(out[0].1["energy_mj"], 300.0);
        assert_eq!(out[0].1["throttle_reasons"], 0x41 as f64);
        assert_eq!(out[0].1["_n"], 2.0);
        assert_eq!(out[1].0, 120_000);
        assert_eq!(out[1].1["_n"], 1.0);
        assert_eq!(out[1].1["gpu_util"], 10.0);
    }

    fn node(name: &str) -> GpuNodeUpdate {
        GpuNodeUpdate {
            node: name.into(),
            source: "simulated".into(),
            driver_version: "simulated".into(),
            sample_interval_ms: 1000,
            dropped_samples: 0,
            dropped_run_metrics: 0,
        }
    }

    fn device(index: u32, healthy: bool) -> GpuDeviceUpdate {
        GpuDeviceUpdate {
            index,
            uuid: format!("GPU-sim-{index}"),
            product: "NVIDIA-H100-80GB-HBM3".into(),
            memory_mib: 81559,
            pci_bus_id: String::new(),
            simulated: true,
            healthy,
            health_reason: if healthy { String::new() } else { "XidError".into() },
            health_message: String::new(),
            health_since_ms: 0,
            last_xid: 0,
        }
    }

    fn sample(index: u32, t: i64, util: f64) -> GpuSampleIn {
        GpuSampleIn {
            index,
            timestamp_ms: t,
            values: v(&[("gpu_util", util)]),
            job: Some(serde_json::json!({"uid": "job-1", "name": "train"})),
        }
    }

    async fn ingest_query_and_retention(db: &crate::test_db::TestDb) {
        let store = &db.store;
        let r = Retention::default();
        let now = 10 * 86_400_000;
        assert!(store.gpu_devices("n1").await.unwrap().is_none());
        assert!(matches!(
            store.add_gpu_command("n1", serde_json::json!({"gpu": 0})).await,
            Err(StoreError::NotFound(_))
        ));
        let samples: Vec<GpuSampleIn> =
            (0..3).flat_map(|t| (0..2).map(move |g| sample(g, now - 2000 + t * 1000, 50.0 + t as f64))).collect();
        let (cmds, stored) =
            store.put_gpu_batch(&node("n1"), &[device(0, true), device(1, false)], &samples, now, r).await.unwrap();
        assert!(cmds.is_empty());
        assert_eq!(stored, 6);
        // A retried push stores nothing twice.
        store.put_gpu_batch(&node("n1"), &[device(0, true), device(1, false)], &samples, now, r).await.unwrap();
        let nodes = store.gpu_nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].gpus, nodes[0].unhealthy), (2, 1));
        let gpus = store.gpu_devices("n1").await.unwrap().unwrap();
        assert_eq!(gpus[1].health_reason, "XidError");
        assert_eq!(gpus[0].latest["gpu_util"], 52.0);
        assert_eq!(gpus[0].latest_ms, Some(now));
        assert_eq!(gpus[0].job.as_ref().unwrap()["name"], "train");
        let hist = store.gpu_samples("n1", 0, 0, i64::MAX, 100).await.unwrap();
        assert_eq!(hist.len(), 3);
        assert_eq!(hist[0].job_uid.as_deref(), Some("job-1"));

        // Commands wait for the next push, then are handed out once.
        store.add_gpu_command("n1", serde_json::json!({"gpu": 1, "fault": {"xid": 79}})).await.unwrap();
        let (cmds, _) =
            store.put_gpu_batch(&node("n1"), &[device(0, true), device(1, false)], &[], now + 1000, r).await.unwrap();
        assert_eq!(cmds, vec![serde_json::json!({"gpu": 1, "fault": {"xid": 79}})]);
        let (cmds, _) = store.put_gpu_batch(&node("n1"), &[device(0, true)], &[], now + 2000, r).await.unwrap();
        assert!(cmds.is_empty());
        // A push without readings keeps the latest; a GPU gone from the node goes.
        let gpus = store.gpu_devices("n1").await.unwrap().unwrap();
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].latest["gpu_util"], 52.0);

        // Retention: two hours of raw readings, compacted: the first hour becomes roll-ups.
        let base = now - 2 * 3_600_000;
        let old: Vec<GpuSampleIn> = (0..7200).step_by(10).map(|s| sample(0, base + s * 1000, 40.0)).collect();
        store.put_gpu_batch(&node("n1"), &[device(0, true)], &old, now, r).await.unwrap();
        let stats = store.compact_gpu_samples(now, r).await.unwrap();
        assert_eq!(stats.folded, 360, "{stats:?}");
        assert_eq!(stats.rollups, 60);
        let hist = store.gpu_samples("n1", 0, 0, i64::MAX, 10_000).await.unwrap();
        let rollups: Vec<&GpuSampleRecord> = hist.iter().filter(|h| h.resolution_s == 60).collect();
        assert_eq!(rollups.len(), 60);
        assert!(rollups.iter().all(|h| h.values["_n"] == 6.0 && h.values["gpu_util"] == 40.0));
        assert!(hist.iter().filter(|h| h.resolution_s == 1).all(|h| h.timestamp_ms >= now - 3_600_000));
        // Compacting again changes nothing; a day later everything has expired.
        assert_eq!(store.compact_gpu_samples(now, r).await.unwrap().folded, 0);
        let later = now + 2 * 86_400_000;
        let expired = store.compact_gpu_samples(later, r).await.unwrap().expired;
        assert!(expired > 0);
        assert!(store.gpu_samples("n1", 0, 0, i64::MAX, 10_000).await.unwrap().is_empty());
        // Readings older than the retention are not stored at all.
        let (_, stored) =
            store.put_gpu_batch(&node("n1"), &[device(0, true)], &[sample(0, 1, 1.0)], later, r).await.unwrap();
        assert_eq!(stored, 0);
    }

    #[tokio::test]
    async fn sqlite_ingest_query_and_retention() {
        ingest_query_and_retention(&crate::test_db::TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn postgres_ingest_query_and_retention() {
        ingest_query_and_retention(&crate::test_db::TestDb::postgres().await).await;
    }

    proptest! {
        /// Folding in pieces and merging equals folding at once (late readings merge into an
        /// existing roll-up correctly).
        #[test]
        fn merge_is_piecewise_consistent(xs in proptest::collection::vec(0.0f64..100.0, 1..40), cut in 0usize..40) {
            let vals: Vec<Values> = xs.iter().map(|x| v(&[("gpu_util", *x), ("energy_mj", *x)])).collect();
            let pts: Vec<(i64, &Values)> = vals.iter().enumerate().map(|(i, x)| (i as i64, x)).collect();
            let cut = cut.min(pts.len());
            let whole = rollup(&pts, 1_000_000);
            let (a, b) = pts.split_at(cut);
            let ra = rollup(a, 1_000_000);
            let rb = rollup(b, 1_000_000);
            let merged = match (ra.first(), rb.first()) {
                (Some(x), Some(y)) => merge(&x.1, &y.1),
                (Some(x), None) | (None, Some(x)) => x.1.clone(),
                (None, None) => unreachable!(),
            };
            let w = &whole[0].1;
            prop_assert_eq!(w["_n"], xs.len() as f64);
            prop_assert_eq!(merged["_n"], w["_n"]);
            prop_assert!((merged["gpu_util"] - w["gpu_util"]).abs() < 1e-9);
            prop_assert_eq!(merged["energy_mj"], w["energy_mj"]);
        }
    }
}
