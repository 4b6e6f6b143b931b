//! The initial schema: resources, events, experiments (with MLflow's "Default" experiment,
//! id 0), experiment tags, runs, metrics, latest metrics, params and tags.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, double, string, string_null, text,
};

/// Creates every table of the first release.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Resources {
    Table,
    Uid,
    Kind,
    Namespace,
    Name,
    Generation,
    ResourceVersion,
    CreationTimestamp,
    DeletionTimestamp,
    Labels,
    Annotations,
    Spec,
    Status,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    ObjectUid,
    Type,
    Reason,
    Message,
    Count,
    FirstTimestamp,
    LastTimestamp,
}

#[derive(DeriveIden)]
enum Experiments {
    Table,
    ExperimentId,
    Name,
    ArtifactLocation,
    LifecycleStage,
    CreationTime,
    LastUpdateTime,
}

#[derive(DeriveIden)]
enum ExperimentTags {
    Table,
    ExperimentId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    RunUuid,
    ExperimentId,
    Name,
    Status,
    StartTime,
    EndTime,
    LifecycleStage,
    ArtifactUri,
    UserId,
}

#[derive(DeriveIden)]
enum Metrics {
    Table,
    RunUuid,
    Key,
    Step,
    Timestamp,
    Value,
    IsNan,
}

#[derive(DeriveIden)]
enum LatestMetrics {
    Table,
    RunUuid,
    Key,
    Value,
    Timestamp,
    Step,
    IsNan,
}

#[derive(DeriveIden, Clone, Copy)]
enum Params {
    Table,
    RunUuid,
    Key,
    Value,
}

#[derive(DeriveIden, Clone, Copy)]
enum Tags {
    Table,
    RunUuid,
    Key,
    Value,
}

/// A `(run_uuid, key, value)` table keyed by (run_uuid, key), its run deleted with it.
fn run_key_value_table<T: Iden + Copy + 'static>(
    table: T,
    run_uuid: T,
    key: T,
    value: T,
    fk_name: &str,
) -> TableCreateStatement {
    Table::create()
        .table(table)
        .col(string(run_uuid))
        .col(string(key))
        .col(text(value))
        .primary_key(Index::create().col(run_uuid).col(key))
        .foreign_key(
            ForeignKey::create()
                .name(fk_name)
                .from(table, run_uuid)
                .to(Runs::Table, Runs::RunUuid)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // resources
        manager
            .create_table(
                Table::create()
                    .table(Resources::Table)
                    .col(string(Resources::Uid).primary_key())
                    .col(string(Resources::Kind))
                    .col(string(Resources::Namespace))
                    .col(string(Resources::Name))
                    .col(big_integer(Resources::Generation))
                    .col(big_integer(Resources::ResourceVersion))
                    .col(string(Resources::CreationTimestamp))
                    .col(string_null(Resources::DeletionTimestamp))
                    .col(text(Resources::Labels))
                    .col(text(Resources::Annotations))
                    .col(text(Resources::Spec))
                    .col(text(Resources::Status))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_resources_kind_namespace_name")
                    .table(Resources::Table)
                    .col(Resources::Kind)
                    .col(Resources::Namespace)
                    .col(Resources::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // events (no foreign key: an event may be recorded while its object is removed;
        // remove_resource deletes them explicitly)
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(big_pk_auto(Events::Id))
                    .col(string(Events::ObjectUid))
                    .col(string(Events::Type))
                    .col(string(Events::Reason))
                    .col(text(Events::Message))
                    .col(big_integer(Events::Count))
                    .col(string(Events::FirstTimestamp))
                    .col(string(Events::LastTimestamp))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_events_object_uid").table(Events::Table).col(Events::ObjectUid).to_owned(),
            )
            .await?;

        // experiments
        manager
            .create_table(
                Table::create()
                    .table(Experiments::Table)
                    .col(big_pk_auto(Experiments::ExperimentId))
                    .col(string(Experiments::Name))
                    .col(text(Experiments::ArtifactLocation))
                    .col(string(Experiments::LifecycleStage))
                    .col(big_integer(Experiments::CreationTime))
                    .col(big_integer(Experiments::LastUpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_experiments_name")
                    .table(Experiments::Table)
                    .col(Experiments::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // MLflow's "Default" experiment has id 0; autoincrement then hands out 1, 2, ...
        let now_ms = chrono::Utc::now().timestamp_millis();
        manager
            .execute(
                Query::insert()
                    .into_table(Experiments::Table)
                    .columns([
                        Experiments::ExperimentId,
                        Experiments::Name,
                        Experiments::ArtifactLocation,
                        Experiments::LifecycleStage,
                        Experiments::CreationTime,
                        Experiments::LastUpdateTime,
                    ])
                    .values_panic([
                        0i64.into(),
                        "Default".into(),
                        "mlflow-artifacts:/0".into(),
                        "active".into(),
                        now_ms.into(),
                        now_ms.into(),
                    ])
                    .to_owned(),
            )
            .await?;

        // experiment_tags
        manager
            .create_table(
                Table::create()
                    .table(ExperimentTags::Table)
                    .col(big_integer(ExperimentTags::ExperimentId))
                    .col(string(ExperimentTags::Key))
                    .col(text(ExperimentTags::Value))
                    .primary_key(Index::create().col(ExperimentTags::ExperimentId).col(ExperimentTags::Key))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_experiment_tags_experiment")
                            .from(ExperimentTags::Table, ExperimentTags::ExperimentId)
                            .to(Experiments::Table, Experiments::ExperimentId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // runs
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(string(Runs::RunUuid).primary_key())
                    .col(big_integer(Runs::ExperimentId))
                    .col(string(Runs::Name))
                    .col(string(Runs::Status))
                    .col(big_integer(Runs::StartTime))
                    .col(big_integer_null(Runs::EndTime))
                    .col(string(Runs::LifecycleStage))
                    .col(text(Runs::ArtifactUri))
                    .col(string(Runs::UserId).default(""))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_runs_experiment")
                            .from(Runs::Table, Runs::ExperimentId)
                            .to(Experiments::Table, Experiments::ExperimentId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_runs_experiment_id").table(Runs::Table).col(Runs::ExperimentId).to_owned(),
            )
            .await?;

        // metrics: the whole point is the key, so a retried point is not stored twice. Its
        // leading columns (run_uuid, key, step) serve metric-history lookups, so no separate
        // index on them is needed (it would only slow inserts down).
        manager
            .create_table(
                Table::create()
                    .table(Metrics::Table)
                    .col(string(Metrics::RunUuid))
                    .col(string(Metrics::Key))
                    .col(big_integer(Metrics::Step))
                    .col(big_integer(Metrics::Timestamp))
                    .col(double(Metrics::Value))
                    .col(boolean(Metrics::IsNan))
                    .primary_key(
                        Index::create()
                            .col(Metrics::RunUuid)
                            .col(Metrics::Key)
                            .col(Metrics::Step)
                            .col(Metrics::Timestamp)
                            .col(Metrics::Value)
                            .col(Metrics::IsNan),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_metrics_run")
                            .from(Metrics::Table, Metrics::RunUuid)
                            .to(Runs::Table, Runs::RunUuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // latest_metrics
        manager
            .create_table(
                Table::create()
                    .table(LatestMetrics::Table)
                    .col(string(LatestMetrics::RunUuid))
                    .col(string(LatestMetrics::Key))
                    .col(double(LatestMetrics::Value))
                    .col(big_integer(LatestMetrics::Timestamp))
                    .col(big_integer(LatestMetrics::Step))
                    .col(boolean(LatestMetrics::IsNan))
                    .primary_key(Index::create().col(LatestMetrics::RunUuid).col(LatestMetrics::Key))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_latest_metrics_run")
                            .from(LatestMetrics::Table, LatestMetrics::RunUuid)
                            .to(Runs::Table, Runs::RunUuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // params, tags
        manager
            .create_table(run_key_value_table(
                Params::Table,
                Params::RunUuid,
                Params::Key,
                Params::Value,
                "fk_params_run",
            ))
            .await?;
        manager
            .create_table(run_key_value_table(Tags::Table, Tags::RunUuid, Tags::Key, Tags::Value, "fk_tags_run"))
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children first, so foreign keys never dangle.
        for table in [
            Tags::Table.into_iden(),
            Params::Table.into_iden(),
            LatestMetrics::Table.into_iden(),
            Metrics::Table.into_iden(),
            Runs::Table.into_iden(),
            ExperimentTags::Table.into_iden(),
            Experiments::Table.into_iden(),
            Events::Table.into_iden(),
            Resources::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }

    /// Create everything or nothing (SQLite and PostgreSQL both have transactional DDL).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
