//! Table `latest_metrics`: per run and key, the point with the highest (step, timestamp,
//! value), MLflow's rule. Kept up to date by `log_batch` in the same transaction.

use sea_orm::entity::prelude::*;

/// The latest point of one metric of a run.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "latest_metrics")]
pub struct Model {
    /// Run.
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_uuid: String,
    /// Metric key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Value (0 when `is_nan`).
    pub value: f64,
    /// ms since epoch.
    pub timestamp: i64,
    /// Step.
    pub step: i64,
    /// The value is NaN.
    pub is_nan: bool,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The run.
    #[sea_orm(
        belongs_to = "super::run::Entity",
        from = "Column::RunUuid",
        to = "super::run::Column::RunUuid",
        on_delete = "Cascade"
    )]
    Run,
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
