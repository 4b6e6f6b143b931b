//! Schema migrations, one module per schema change, applied in order by [`Migrator`]
//! (sea-orm-migration records the applied ones in `seaql_migrations`).
//!
//! A migration, once released, never changes: a later schema change is a new module
//! (`mYYYYMMDD_NNNNNN_what`) appended to [`Migrator::migrations`]. Migrations describe their
//! tables with their own identifiers rather than the entities', so that editing an entity
//! cannot rewrite history, and use only portable statements (SQLite and PostgreSQL).

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub mod m20261128_000001_initial;
pub mod m20261128_000002_registry;
pub mod m20261128_000003_metric_tiles;
pub mod m20261128_000004_gpu_samples;
pub mod m20261128_000005_pipelines;
pub mod m20261128_000006_metric_series;

/// Every migration of the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial::Migration),
            Box::new(m20261128_000002_registry::Migration),
            Box::new(m20261128_000003_metric_tiles::Migration),
            Box::new(m20261128_000004_gpu_samples::Migration),
            Box::new(m20261128_000005_pipelines::Migration),
            Box::new(m20261128_000006_metric_series::Migration),
        ]
    }
}
