//! Table `registered_model_tags`: key/value tags of a registered model.

use sea_orm::entity::prelude::*;

/// One tag.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registered_model_tags")]
pub struct Model {
    /// Registered model.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_id: i64,
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
