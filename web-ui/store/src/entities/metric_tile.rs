//! Table `metric_tiles`: per series (run and metric key: see [`super::metric_series`]), level and tile (the steps
//! `tile * 16^level ..= (tile + 1) * 16^level - 1`), the first, last, lowest and highest point
//! logged in it (see [`crate::downsample`]). Kept up to date by `log_batch` in the same
//! transaction as the points; read by `metrics/get-history-bulk-interval`.

use sea_orm::entity::prelude::*;

/// The extreme points of one tile. NaN is stored as value 0 with its `*_is_nan` set.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "metric_tiles")]
pub struct Model {
    /// Series: the run and metric key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub series_id: i64,
    /// Level: tiles of 16^level steps (`downsample::MIN_LEVEL`..=8, that is 2..=8).
    #[sea_orm(primary_key, auto_increment = false)]
    pub level: i16,
    /// Tile index: step >> (4 * level).
    #[sea_orm(primary_key, auto_increment = false)]
    pub tile: i64,
    /// First point in history order: step.
    pub first_step: i64,
    /// First point: timestamp.
    pub first_timestamp: i64,
    /// First point: value.
    pub first_value: f64,
    /// First point: NaN.
    pub first_is_nan: bool,
    /// Last point in history order: step.
    pub last_step: i64,
    /// Last point: timestamp.
    pub last_timestamp: i64,
    /// Last point: value.
    pub last_value: f64,
    /// Last point: NaN.
    pub last_is_nan: bool,
    /// Lowest point: step.
    pub min_step: i64,
    /// Lowest point: timestamp.
    pub min_timestamp: i64,
    /// Lowest point: value.
    pub min_value: f64,
    /// Lowest point: NaN.
    pub min_is_nan: bool,
    /// Highest point: step.
    pub max_step: i64,
    /// Highest point: timestamp.
    pub max_timestamp: i64,
    /// Highest point: value.
    pub max_value: f64,
    /// Highest point: NaN.
    pub max_is_nan: bool,
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
