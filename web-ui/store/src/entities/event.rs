//! Table `events`: what happened to an object, as `kubectl describe` shows it.

use sea_orm::entity::prelude::*;

/// One (possibly folded) event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Autoincrement; gives the order of first occurrence.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// UID of the object it is about (indexed; no foreign key, events may outlive a race).
    pub object_uid: String,
    /// "Normal" or "Warning".
    #[sea_orm(column_name = "type")]
    pub type_: String,
    /// One CamelCase word.
    pub reason: String,
    /// For a person.
    #[sea_orm(column_type = "Text")]
    pub message: String,
    /// How many times it happened.
    pub count: i64,
    /// RFC 3339.
    pub first_timestamp: String,
    /// RFC 3339.
    pub last_timestamp: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
