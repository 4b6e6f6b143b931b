//! Table `tags`: mutable key/value pairs of a run.

use sea_orm::entity::prelude::*;

/// One tag of a run.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tags")]
pub struct Model {
    /// Run.
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_uuid: String,
    /// Key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Value.
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The run.
    #[sea_orm(
        belongs_to = "super::run::Entity",
        from = "Column::RunUuid",
        to = "super::run::Column::RunUuid",
        on_delete = "Cascade"
    )]
    Run,
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
