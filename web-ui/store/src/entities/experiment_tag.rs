//! Table `experiment_tags`.

use sea_orm::entity::prelude::*;

/// One tag of an experiment.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "experiment_tags")]
pub struct Model {
    /// Experiment.
    #[sea_orm(primary_key, auto_increment = false)]
    pub experiment_id: i64,
    /// Tag key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Tag value.
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The experiment.
    #[sea_orm(
        belongs_to = "super::experiment::Entity",
        from = "Column::ExperimentId",
        to = "super::experiment::Column::ExperimentId",
        on_delete = "Cascade"
    )]
    Experiment,
}

impl Related<super::experiment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Experiment.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
