//! Table `metrics`: every logged point, by series (a run's metric key: see
//! [`super::metric_series`]). The primary key is the whole point, so logging the same point
//! again (a client retry) is a no-op.

use sea_orm::entity::prelude::*;

/// One metric point. NaN is stored as `value` 0 with `is_nan` set (SQLite cannot store NaN).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "metrics")]
pub struct Model {
    /// Series: the run and metric key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub series_id: i64,
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
    /// The series (run and key).
    #[sea_orm(
        belongs_to = "super::metric_series::Entity",
        from = "Column::SeriesId",
        to = "super::metric_series::Column::Id",
        on_delete = "Cascade"
    )]
    Series,
}

impl Related<super::metric_series::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Series.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
