//! Table `datasets`: datasets logged as run inputs, one row per (experiment, name, digest).

use sea_orm::entity::prelude::*;

/// One dataset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "datasets")]
pub struct Model {
    /// 32 hex characters.
    #[sea_orm(primary_key, auto_increment = false)]
    pub dataset_uuid: String,
    /// Experiment.
    pub experiment_id: i64,
    /// Name.
    pub name: String,
    /// Digest.
    pub digest: String,
    /// Source type (`local`, `http`, `s3`, ...).
    pub source_type: String,
    /// Source (JSON).
    #[sea_orm(column_type = "Text")]
    pub source: String,
    /// Schema (JSON).
    #[sea_orm(column_type = "Text", nullable)]
    pub schema: Option<String>,
    /// Profile (JSON).
    #[sea_orm(column_type = "Text", nullable)]
    pub profile: Option<String>,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
