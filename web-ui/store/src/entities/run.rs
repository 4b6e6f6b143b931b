//! Table `runs` (MLflow's shape).

use sea_orm::entity::prelude::*;

/// One run.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    /// 32 lowercase hex characters (uuid v4, simple form).
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_uuid: String,
    /// Experiment (indexed).
    pub experiment_id: i64,
    /// Run name.
    pub name: String,
    /// RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
    pub status: String,
    /// ms since epoch.
    pub start_time: i64,
    /// ms since epoch.
    pub end_time: Option<i64>,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// `mlflow-artifacts:/<experiment_id>/<run_uuid>/artifacts`.
    #[sea_orm(column_type = "Text")]
    pub artifact_uri: String,
    /// User ("" when unknown).
    pub user_id: String,
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
    /// Every metric (series of points).
    #[sea_orm(has_many = "super::metric_series::Entity")]
    MetricSeries,
    /// Latest point of each metric.
    #[sea_orm(has_many = "super::latest_metric::Entity")]
    LatestMetric,
    /// Params.
    #[sea_orm(has_many = "super::param::Entity")]
    Param,
    /// Tags.
    #[sea_orm(has_many = "super::tag::Entity")]
    Tag,
}

impl Related<super::experiment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Experiment.def()
    }
}

impl Related<super::metric_series::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MetricSeries.def()
    }
}

impl Related<super::latest_metric::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::LatestMetric.def()
    }
}

impl Related<super::param::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Param.def()
    }
}

impl Related<super::tag::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tag.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
