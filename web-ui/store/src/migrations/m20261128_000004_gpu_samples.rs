//! GPU telemetry pushed by node agents: `gpu_nodes` (one row per node: where its GPUs come
//! from, when it last pushed, what it dropped, commands waiting for it), `gpu_devices` (one
//! row per GPU: identity, health, latest reading) and `gpu_samples` (readings at 1 s for the
//! last hour and as 1-minute roll-ups for a day; see `crate::gpus`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, boolean, integer, string, string_null, text};

/// Creates the three GPU tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GpuNodes {
    Table,
    Node,
    Source,
    DriverVersion,
    SampleIntervalMs,
    LastSeenMs,
    DroppedSamples,
    DroppedRunMetrics,
    Commands,
}

#[derive(DeriveIden)]
enum GpuDevices {
    Table,
    Node,
    GpuIndex,
    Uuid,
    Product,
    MemoryMib,
    PciBusId,
    Simulated,
    Healthy,
    HealthReason,
    HealthMessage,
    HealthSinceMs,
    LastXid,
    LatestMs,
    Latest,
    Job,
}

#[derive(DeriveIden)]
enum GpuSamples {
    Table,
    Node,
    GpuIndex,
    ResolutionS,
    TimestampMs,
    SampleValues,
    JobUid,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(GpuNodes::Table)
                    .col(string(GpuNodes::Node).primary_key())
                    .col(string(GpuNodes::Source))
                    .col(string(GpuNodes::DriverVersion))
                    .col(big_integer(GpuNodes::SampleIntervalMs))
                    .col(big_integer(GpuNodes::LastSeenMs))
                    .col(big_integer(GpuNodes::DroppedSamples))
                    .col(big_integer(GpuNodes::DroppedRunMetrics))
                    .col(text(GpuNodes::Commands))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GpuDevices::Table)
                    .col(string(GpuDevices::Node))
                    .col(integer(GpuDevices::GpuIndex))
                    .col(string(GpuDevices::Uuid))
                    .col(string(GpuDevices::Product))
                    .col(big_integer(GpuDevices::MemoryMib))
                    .col(string(GpuDevices::PciBusId))
                    .col(boolean(GpuDevices::Simulated))
                    .col(boolean(GpuDevices::Healthy))
                    .col(string(GpuDevices::HealthReason))
                    .col(text(GpuDevices::HealthMessage))
                    .col(big_integer(GpuDevices::HealthSinceMs))
                    .col(big_integer(GpuDevices::LastXid))
                    .col(big_integer_null(GpuDevices::LatestMs))
                    .col(text(GpuDevices::Latest))
                    .col(string_null(GpuDevices::Job))
                    .primary_key(Index::create().col(GpuDevices::Node).col(GpuDevices::GpuIndex))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_gpu_devices_node")
                            .from(GpuDevices::Table, GpuDevices::Node)
                            .to(GpuNodes::Table, GpuNodes::Node)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GpuSamples::Table)
                    .col(string(GpuSamples::Node))
                    .col(integer(GpuSamples::GpuIndex))
                    .col(integer(GpuSamples::ResolutionS))
                    .col(big_integer(GpuSamples::TimestampMs))
                    .col(text(GpuSamples::SampleValues))
                    .col(string_null(GpuSamples::JobUid))
                    .primary_key(
                        Index::create()
                            .col(GpuSamples::Node)
                            .col(GpuSamples::GpuIndex)
                            .col(GpuSamples::ResolutionS)
                            .col(GpuSamples::TimestampMs),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_gpu_samples_node")
                            .from(GpuSamples::Table, GpuSamples::Node)
                            .to(GpuNodes::Table, GpuNodes::Node)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Compaction scans by resolution and age across all GPUs.
        manager
            .create_index(
                Index::create()
                    .name("idx_gpu_samples_resolution_time")
                    .table(GpuSamples::Table)
                    .col(GpuSamples::ResolutionS)
                    .col(GpuSamples::TimestampMs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [GpuSamples::Table.into_iden(), GpuDevices::Table.into_iden(), GpuNodes::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
