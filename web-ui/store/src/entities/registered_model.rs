//! Table `registered_models`: the model registry's named models.

use sea_orm::entity::prelude::*;

/// One registered model.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registered_models")]
pub struct Model {
    /// Autoincrement; never exposed (the name is the API's key, and a rename keeps the id).
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// ms since epoch.
    pub creation_timestamp: i64,
    /// ms since epoch.
    pub last_updated_timestamp: i64,
    /// Description.
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// Highest version number ever given out (versions are never reused).
    pub last_version: i64,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
