//! Table `logged_models`: MLflow 3 logged models.

use sea_orm::entity::prelude::*;

/// One logged model.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "logged_models")]
pub struct Model {
    /// `m-` and 32 hex characters.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: String,
    /// Experiment.
    pub experiment_id: i64,
    /// Name.
    pub name: String,
    /// `<experiment artifact location>/models/<model_id>/artifacts`.
    #[sea_orm(column_type = "Text")]
    pub artifact_location: String,
    /// ms since epoch.
    pub creation_timestamp_ms: i64,
    /// ms since epoch.
    pub last_updated_timestamp_ms: i64,
    /// LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED.
    pub status: String,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// Model type.
    pub model_type: Option<String>,
    /// Run that produced it.
    pub source_run_id: Option<String>,
    /// Status message.
    #[sea_orm(column_type = "Text", nullable)]
    pub status_message: Option<String>,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
