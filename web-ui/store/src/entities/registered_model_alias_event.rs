//! Table `registered_model_alias_events`: every change of an alias (set, moved, deleted), with
//! who and when. A Capstan extension (MLflow keeps no alias history); rows outlive the model.

use sea_orm::entity::prelude::*;

/// One alias change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registered_model_alias_events")]
pub struct Model {
    /// Autoincrement: the order of changes.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Registered model (its id survives renames).
    pub model_id: i64,
    /// The model's name when it happened.
    pub model_name: String,
    /// Alias.
    pub alias: String,
    /// Version it pointed to before (None: it was new).
    pub from_version: Option<i64>,
    /// Version it points to after (None: deleted).
    pub to_version: Option<i64>,
    /// Who (the HTTP basic-auth user, or "unknown").
    pub user_name: String,
    /// ms since epoch.
    pub timestamp: i64,
    /// `set`, `deleted`, `version deleted` or `model deleted`.
    pub reason: String,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
