//! Table `gpu_samples`: GPU readings, raw (`resolution_s` 1) and rolled up per minute
//! (`resolution_s` 60); see `crate::gpus` for the retention.

use sea_orm::entity::prelude::*;

/// One reading (or one minute's roll-up) of one GPU.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "gpu_samples")]
pub struct Model {
    /// Node name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    /// GPU index.
    #[sea_orm(primary_key, auto_increment = false)]
    pub gpu_index: i32,
    /// 1: a raw reading; 60: a minute's roll-up.
    #[sea_orm(primary_key, auto_increment = false)]
    pub resolution_s: i32,
    /// ms since the epoch (start of the minute for roll-ups).
    #[sea_orm(primary_key, auto_increment = false)]
    pub timestamp_ms: i64,
    /// Values (JSON object of name -> number; roll-ups carry `_n`, the readings folded in).
    pub sample_values: String,
    /// UID of the job the GPU was given to, if any.
    pub job_uid: Option<String>,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The node.
    #[sea_orm(
        belongs_to = "super::gpu_node::Entity",
        from = "Column::Node",
        to = "super::gpu_node::Column::Node",
        on_delete = "Cascade"
    )]
    Node,
}

impl Related<super::gpu_node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Node.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
