//! Table `secrets`: standalone secrets (`capstan secret create`), a JSON map of keys to values.

use sea_orm::entity::prelude::*;

/// One secret.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secrets")]
pub struct Model {
    /// Namespace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    /// Name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// JSON object of key -> value.
    pub data: String,
    /// RFC 3339.
    pub creation_timestamp: String,
}

/// Relations (none).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
