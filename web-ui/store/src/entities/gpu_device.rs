//! Table `gpu_devices`: one row per GPU of a node: identity, health and latest reading.

use sea_orm::entity::prelude::*;

/// A GPU.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "gpu_devices")]
pub struct Model {
    /// Node name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    /// Index on the node.
    #[sea_orm(primary_key, auto_increment = false)]
    pub gpu_index: i32,
    /// "GPU-..." UUID.
    pub uuid: String,
    /// Product, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: String,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// Simulated (`--simulate-gpus`) rather than real.
    pub simulated: bool,
    /// Health.
    pub healthy: bool,
    /// Why unhealthy ("" when healthy).
    pub health_reason: String,
    /// For a person.
    pub health_message: String,
    /// When it turned unhealthy, ms (0 when healthy).
    pub health_since_ms: i64,
    /// Last XID seen (0: none).
    pub last_xid: i64,
    /// Time of the latest reading, ms.
    pub latest_ms: Option<i64>,
    /// The latest reading's values (JSON object).
    pub latest: String,
    /// The replica the GPU was given to at the latest reading (JSON), if any.
    pub job: Option<String>,
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
