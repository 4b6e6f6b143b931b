//! Table `metric_series`: one row per run and metric key, with the integer id that `metrics`
//! and `metric_tiles` are keyed by (a point row carries the id, not the run id and key text).
//! Made by the first point of the key; never changes.

use sea_orm::entity::prelude::*;

/// One metric of one run.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "metric_series")]
pub struct Model {
    /// Series id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Run.
    pub run_uuid: String,
    /// Metric key (unique within the run).
    pub key: String,
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
    /// Its points.
    #[sea_orm(has_many = "super::metric::Entity")]
    Metric,
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl Related<super::metric::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Metric.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
