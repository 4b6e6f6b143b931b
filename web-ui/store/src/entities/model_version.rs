//! Table `model_versions`: the numbered versions of a registered model.

use sea_orm::entity::prelude::*;

/// One model version.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "model_versions")]
pub struct Model {
    /// Registered model.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: i64,
    /// 1, 2, ... per model.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    /// ms since epoch.
    pub creation_timestamp: i64,
    /// ms since epoch.
    pub last_updated_timestamp: i64,
    /// User ("" when unknown).
    pub user_id: String,
    /// None, Staging, Production or Archived.
    pub current_stage: String,
    /// Description.
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// Where the model came from (`runs:/...`, `models:/<model_id>`, a URI).
    #[sea_orm(column_type = "Text")]
    pub source: String,
    /// Where its artifacts are (a logged model's artifact location), if not `source`.
    #[sea_orm(column_type = "Text", nullable)]
    pub storage_location: Option<String>,
    /// Run that produced it.
    pub run_id: Option<String>,
    /// Link to that run.
    #[sea_orm(column_type = "Text", nullable)]
    pub run_link: Option<String>,
    /// READY (registration is synchronous).
    pub status: String,
    /// Status message.
    #[sea_orm(column_type = "Text", nullable)]
    pub status_message: Option<String>,
    /// The MLflow 3 logged model it was registered from.
    pub logged_model_id: Option<String>,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
