//! Table `webhook_deliveries`: every accepted webhook delivery id (replay protection).

use sea_orm::entity::prelude::*;

/// One delivery.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// github, gitlab or generic.
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    /// The provider's delivery id (X-GitHub-Delivery, ...).
    #[sea_orm(primary_key, auto_increment = false)]
    pub delivery_id: String,
    /// When it was first received, ms since the epoch.
    pub received_ms: i64,
    /// What it did (JSON: runs created, or why it was ignored).
    pub outcome: String,
}

/// Relations (none).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
