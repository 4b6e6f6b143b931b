//! Table `input_tags`: tags of a dataset input (`mlflow.data.context`).

use sea_orm::entity::prelude::*;

/// One tag.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "input_tags")]
pub struct Model {
    /// Input.
    #[sea_orm(primary_key, auto_increment = false)]
    pub input_uuid: String,
    /// Key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Value.
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
