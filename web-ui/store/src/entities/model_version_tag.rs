//! Table `model_version_tags`: key/value tags of a model version.

use sea_orm::entity::prelude::*;

/// One tag.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "model_version_tags")]
pub struct Model {
    /// Registered model.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: i64,
    /// Version.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    /// Key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Value.
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
