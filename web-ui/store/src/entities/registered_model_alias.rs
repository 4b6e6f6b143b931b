//! Table `registered_model_aliases`: named pointers (`champion`) to a version of a model.

use sea_orm::entity::prelude::*;

/// One alias.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registered_model_aliases")]
pub struct Model {
    /// Registered model.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: i64,
    /// Alias.
    #[sea_orm(primary_key, auto_increment = false)]
    pub alias: String,
    /// The version it points to.
    pub version: i64,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
