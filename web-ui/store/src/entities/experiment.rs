//! Table `experiments` (MLflow's shape). Id 0 is the "Default" experiment.

use sea_orm::entity::prelude::*;

/// One experiment.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "experiments")]
pub struct Model {
    /// Autoincrement; exposed as a decimal string.
    #[sea_orm(primary_key)]
    pub experiment_id: i64,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// `mlflow-artifacts:/<experiment_id>`.
    #[sea_orm(column_type = "Text")]
    pub artifact_location: String,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// ms since epoch.
    pub creation_time: i64,
    /// ms since epoch.
    pub last_update_time: i64,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Its tags.
    #[sea_orm(has_many = "super::experiment_tag::Entity")]
    ExperimentTag,
    /// Its runs.
    #[sea_orm(has_many = "super::run::Entity")]
    Run,
}

impl Related<super::experiment_tag::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ExperimentTag.def()
    }
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
