//! Table `resources`: Kubernetes-shaped objects (TrainingJob, Queue, ...).

use sea_orm::entity::prelude::*;

/// One stored object; unique on (kind, namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resources")]
pub struct Model {
    /// uuid v4, new for each create.
    #[sea_orm(primary_key, auto_increment = false)]
    pub uid: String,
    /// Kind, e.g. "TrainingJob".
    pub kind: String,
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Bumped whenever the spec changes.
    pub generation: i64,
    /// Bumped on every write.
    pub resource_version: i64,
    /// RFC 3339.
    pub creation_timestamp: String,
    /// RFC 3339, set once deletion was asked for.
    pub deletion_timestamp: Option<String>,
    /// JSON text.
    #[sea_orm(column_type = "Text")]
    pub labels: String,
    /// JSON text.
    #[sea_orm(column_type = "Text")]
    pub annotations: String,
    /// JSON text.
    #[sea_orm(column_type = "Text")]
    pub spec: String,
    /// JSON text.
    #[sea_orm(column_type = "Text")]
    pub status: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
