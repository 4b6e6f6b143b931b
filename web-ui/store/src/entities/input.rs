//! Table `inputs`: edges between runs and their inputs and outputs (MLflow's shape):
//! `DATASET -> RUN`, `RUN_INPUT -> MODEL_INPUT`, `RUN_OUTPUT -> MODEL_OUTPUT`.

use sea_orm::entity::prelude::*;

/// One edge.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inputs")]
pub struct Model {
    /// 32 hex characters.
    #[sea_orm(primary_key, auto_increment = false)]
    pub input_uuid: String,
    /// DATASET, RUN_INPUT or RUN_OUTPUT.
    pub source_type: String,
    /// Dataset uuid or run id.
    pub source_id: String,
    /// RUN, MODEL_INPUT or MODEL_OUTPUT.
    pub destination_type: String,
    /// Run id or logged model id.
    pub destination_id: String,
    /// Step of a model output.
    pub step: i64,
}

/// Relations (joins are written explicitly in the queries).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
