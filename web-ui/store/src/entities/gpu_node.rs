//! Table `gpu_nodes`: one row per node whose agent pushes GPU telemetry.

use sea_orm::entity::prelude::*;

/// A node with GPU telemetry.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "gpu_nodes")]
pub struct Model {
    /// Node name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    /// Where its GPUs come from: `nvml`, `simulated` or `none`.
    pub source: String,
    /// NVIDIA driver version ("simulated" for simulated GPUs).
    pub driver_version: String,
    /// The agent's sampling interval, ms.
    pub sample_interval_ms: i64,
    /// Last push, ms since the epoch.
    pub last_seen_ms: i64,
    /// Samples the agent dropped (outbox full) since it started.
    pub dropped_samples: i64,
    /// Run metric points the agent dropped since it started.
    pub dropped_run_metrics: i64,
    /// Commands waiting for the agent's next push (JSON array).
    pub commands: String,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
