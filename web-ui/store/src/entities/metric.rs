//! Table `metrics`: every logged point. The primary key is the whole point, so logging the
//! same point again (a client retry) is a no-op.

use sea_orm::entity::prelude::*;

/// One metric point. NaN is stored as `value` 0 with `is_nan` set (SQLite cannot store NaN).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "metrics")]
pub struct Model {
    /// Run.
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_uuid: String,
    /// Metric key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Step.
    #[sea_orm(primary_key, auto_increment = false)]
    pub step: i64,
    /// ms since epoch.
    #[sea_orm(primary_key, auto_increment = false)]
    pub timestamp: i64,
    /// Value (0 when `is_nan`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub value: f64,
    /// The value is NaN.
    #[sea_orm(primary_key, auto_increment = false)]
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
