//! The model registry (registered models, their versions, tags and aliases, and the history
//! of every alias change), MLflow 3's logged models (with tags and params), and run inputs
//! and outputs (datasets with their tags, model inputs and outputs), plus the index that
//! run search orders by.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, big_pk_auto, string, string_null, text, text_null};

/// Creates the registry, logged-model and run-input tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Experiments {
    Table,
    ExperimentId,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    ExperimentId,
    LifecycleStage,
    StartTime,
}

#[derive(DeriveIden)]
enum RegisteredModels {
    Table,
    Id,
    Name,
    CreationTimestamp,
    LastUpdatedTimestamp,
    Description,
    LastVersion,
}

#[derive(DeriveIden)]
enum RegisteredModelTags {
    Table,
    ModelId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum ModelVersions {
    Table,
    ModelId,
    Version,
    CreationTimestamp,
    LastUpdatedTimestamp,
    UserId,
    CurrentStage,
    Description,
    Source,
    StorageLocation,
    RunId,
    RunLink,
    Status,
    StatusMessage,
    LoggedModelId,
}

#[derive(DeriveIden)]
enum ModelVersionTags {
    Table,
    ModelId,
    Version,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum RegisteredModelAliases {
    Table,
    ModelId,
    Alias,
    Version,
}

#[derive(DeriveIden)]
enum RegisteredModelAliasEvents {
    Table,
    Id,
    ModelId,
    ModelName,
    Alias,
    FromVersion,
    ToVersion,
    UserName,
    Timestamp,
    Reason,
}

#[derive(DeriveIden)]
enum Datasets {
    Table,
    DatasetUuid,
    ExperimentId,
    Name,
    Digest,
    SourceType,
    Source,
    Schema,
    Profile,
}

#[derive(DeriveIden)]
enum Inputs {
    Table,
    InputUuid,
    SourceType,
    SourceId,
    DestinationType,
    DestinationId,
    Step,
}

#[derive(DeriveIden)]
enum InputTags {
    Table,
    InputUuid,
    Name,
    Value,
}

#[derive(DeriveIden)]
enum LoggedModels {
    Table,
    ModelId,
    ExperimentId,
    Name,
    ArtifactLocation,
    CreationTimestampMs,
    LastUpdatedTimestampMs,
    Status,
    LifecycleStage,
    ModelType,
    SourceRunId,
    StatusMessage,
}

#[derive(DeriveIden, Clone, Copy)]
enum LoggedModelTags {
    Table,
    ModelId,
    Key,
    Value,
}

#[derive(DeriveIden, Clone, Copy)]
enum LoggedModelParams {
    Table,
    ModelId,
    Key,
    Value,
}

/// A `(model_id, key, value)` table of a logged model, keyed by (model_id, key).
fn logged_model_kv<T: Iden + Copy + 'static>(
    table: T,
    model_id: T,
    key: T,
    value: T,
    fk: &str,
) -> TableCreateStatement {
    Table::create()
        .table(table)
        .col(string(model_id))
        .col(string(key))
        .col(text(value))
        .primary_key(Index::create().col(model_id).col(key))
        .foreign_key(
            ForeignKey::create()
                .name(fk)
                .from(table, model_id)
                .to(LoggedModels::Table, LoggedModels::ModelId)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Run search filters by experiment and lifecycle stage and orders by start time.
        manager
            .create_index(
                Index::create()
                    .name("idx_runs_experiment_stage_start")
                    .table(Runs::Table)
                    .col(Runs::ExperimentId)
                    .col(Runs::LifecycleStage)
                    .col(Runs::StartTime)
                    .to_owned(),
            )
            .await?;

        // registered_models: an integer id, so a rename is one update.
        manager
            .create_table(
                Table::create()
                    .table(RegisteredModels::Table)
                    .col(big_pk_auto(RegisteredModels::Id))
                    .col(string(RegisteredModels::Name))
                    .col(big_integer(RegisteredModels::CreationTimestamp))
                    .col(big_integer(RegisteredModels::LastUpdatedTimestamp))
                    .col(text_null(RegisteredModels::Description))
                    .col(big_integer(RegisteredModels::LastVersion).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_registered_models_name")
                    .table(RegisteredModels::Table)
                    .col(RegisteredModels::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RegisteredModelTags::Table)
                    .col(big_integer(RegisteredModelTags::ModelId))
                    .col(string(RegisteredModelTags::Key))
                    .col(text(RegisteredModelTags::Value))
                    .primary_key(Index::create().col(RegisteredModelTags::ModelId).col(RegisteredModelTags::Key))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_registered_model_tags_model")
                            .from(RegisteredModelTags::Table, RegisteredModelTags::ModelId)
                            .to(RegisteredModels::Table, RegisteredModels::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // model_versions
        manager
            .create_table(
                Table::create()
                    .table(ModelVersions::Table)
                    .col(big_integer(ModelVersions::ModelId))
                    .col(big_integer(ModelVersions::Version))
                    .col(big_integer(ModelVersions::CreationTimestamp))
                    .col(big_integer(ModelVersions::LastUpdatedTimestamp))
                    .col(string(ModelVersions::UserId).default(""))
                    .col(string(ModelVersions::CurrentStage))
                    .col(text_null(ModelVersions::Description))
                    .col(text(ModelVersions::Source))
                    .col(text_null(ModelVersions::StorageLocation))
                    .col(string_null(ModelVersions::RunId))
                    .col(text_null(ModelVersions::RunLink))
                    .col(string(ModelVersions::Status))
                    .col(text_null(ModelVersions::StatusMessage))
                    .col(string_null(ModelVersions::LoggedModelId))
                    .primary_key(Index::create().col(ModelVersions::ModelId).col(ModelVersions::Version))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_model_versions_model")
                            .from(ModelVersions::Table, ModelVersions::ModelId)
                            .to(RegisteredModels::Table, RegisteredModels::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_model_versions_run_id")
                    .table(ModelVersions::Table)
                    .col(ModelVersions::RunId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelVersionTags::Table)
                    .col(big_integer(ModelVersionTags::ModelId))
                    .col(big_integer(ModelVersionTags::Version))
                    .col(string(ModelVersionTags::Key))
                    .col(text(ModelVersionTags::Value))
                    .primary_key(
                        Index::create()
                            .col(ModelVersionTags::ModelId)
                            .col(ModelVersionTags::Version)
                            .col(ModelVersionTags::Key),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_model_version_tags_version")
                            .from(ModelVersionTags::Table, (ModelVersionTags::ModelId, ModelVersionTags::Version))
                            .to(ModelVersions::Table, (ModelVersions::ModelId, ModelVersions::Version))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // registered_model_aliases: one version per (model, alias).
        manager
            .create_table(
                Table::create()
                    .table(RegisteredModelAliases::Table)
                    .col(big_integer(RegisteredModelAliases::ModelId))
                    .col(string(RegisteredModelAliases::Alias))
                    .col(big_integer(RegisteredModelAliases::Version))
                    .primary_key(
                        Index::create().col(RegisteredModelAliases::ModelId).col(RegisteredModelAliases::Alias),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_registered_model_aliases_model")
                            .from(RegisteredModelAliases::Table, RegisteredModelAliases::ModelId)
                            .to(RegisteredModels::Table, RegisteredModels::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // registered_model_alias_events: the audit trail of aliases. No foreign key: the
        // history outlives the model.
        manager
            .create_table(
                Table::create()
                    .table(RegisteredModelAliasEvents::Table)
                    .col(big_pk_auto(RegisteredModelAliasEvents::Id))
                    .col(big_integer(RegisteredModelAliasEvents::ModelId))
                    .col(string(RegisteredModelAliasEvents::ModelName))
                    .col(string(RegisteredModelAliasEvents::Alias))
                    .col(big_integer_null(RegisteredModelAliasEvents::FromVersion))
                    .col(big_integer_null(RegisteredModelAliasEvents::ToVersion))
                    .col(string(RegisteredModelAliasEvents::UserName))
                    .col(big_integer(RegisteredModelAliasEvents::Timestamp))
                    .col(string(RegisteredModelAliasEvents::Reason))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_alias_events_model_id", RegisteredModelAliasEvents::ModelId),
            ("idx_alias_events_model_name", RegisteredModelAliasEvents::ModelName),
        ] {
            manager
                .create_index(
                    Index::create().name(name).table(RegisteredModelAliasEvents::Table).col(column).to_owned(),
                )
                .await?;
        }

        // datasets: one row per (experiment, name, digest).
        manager
            .create_table(
                Table::create()
                    .table(Datasets::Table)
                    .col(string(Datasets::DatasetUuid).primary_key())
                    .col(big_integer(Datasets::ExperimentId))
                    .col(string(Datasets::Name))
                    .col(string(Datasets::Digest))
                    .col(string(Datasets::SourceType))
                    .col(text(Datasets::Source))
                    .col(text_null(Datasets::Schema))
                    .col(text_null(Datasets::Profile))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_datasets_experiment")
                            .from(Datasets::Table, Datasets::ExperimentId)
                            .to(Experiments::Table, Experiments::ExperimentId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_datasets_experiment_name_digest")
                    .table(Datasets::Table)
                    .col(Datasets::ExperimentId)
                    .col(Datasets::Name)
                    .col(Datasets::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // inputs: edges DATASET -> RUN, RUN_INPUT -> MODEL_INPUT, RUN_OUTPUT -> MODEL_OUTPUT
        // (MLflow's shape); an edge is stored once, so a retried request adds nothing.
        manager
            .create_table(
                Table::create()
                    .table(Inputs::Table)
                    .col(string(Inputs::InputUuid).primary_key())
                    .col(string(Inputs::SourceType))
                    .col(string(Inputs::SourceId))
                    .col(string(Inputs::DestinationType))
                    .col(string(Inputs::DestinationId))
                    .col(big_integer(Inputs::Step).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_inputs_edge")
                    .table(Inputs::Table)
                    .col(Inputs::SourceType)
                    .col(Inputs::SourceId)
                    .col(Inputs::DestinationType)
                    .col(Inputs::DestinationId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_inputs_destination")
                    .table(Inputs::Table)
                    .col(Inputs::DestinationType)
                    .col(Inputs::DestinationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InputTags::Table)
                    .col(string(InputTags::InputUuid))
                    .col(string(InputTags::Name))
                    .col(text(InputTags::Value))
                    .primary_key(Index::create().col(InputTags::InputUuid).col(InputTags::Name))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_input_tags_input")
                            .from(InputTags::Table, InputTags::InputUuid)
                            .to(Inputs::Table, Inputs::InputUuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // logged_models (MLflow 3)
        manager
            .create_table(
                Table::create()
                    .table(LoggedModels::Table)
                    .col(string(LoggedModels::ModelId).primary_key())
                    .col(big_integer(LoggedModels::ExperimentId))
                    .col(string(LoggedModels::Name))
                    .col(text(LoggedModels::ArtifactLocation))
                    .col(big_integer(LoggedModels::CreationTimestampMs))
                    .col(big_integer(LoggedModels::LastUpdatedTimestampMs))
                    .col(string(LoggedModels::Status))
                    .col(string(LoggedModels::LifecycleStage))
                    .col(string_null(LoggedModels::ModelType))
                    .col(string_null(LoggedModels::SourceRunId))
                    .col(text_null(LoggedModels::StatusMessage))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_logged_models_experiment")
                            .from(LoggedModels::Table, LoggedModels::ExperimentId)
                            .to(Experiments::Table, Experiments::ExperimentId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_logged_models_experiment")
                    .table(LoggedModels::Table)
                    .col(LoggedModels::ExperimentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(logged_model_kv(
                LoggedModelTags::Table,
                LoggedModelTags::ModelId,
                LoggedModelTags::Key,
                LoggedModelTags::Value,
                "fk_logged_model_tags_model",
            ))
            .await?;
        manager
            .create_table(logged_model_kv(
                LoggedModelParams::Table,
                LoggedModelParams::ModelId,
                LoggedModelParams::Key,
                LoggedModelParams::Value,
                "fk_logged_model_params_model",
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children first, so foreign keys never dangle.
        for table in [
            LoggedModelParams::Table.into_iden(),
            LoggedModelTags::Table.into_iden(),
            LoggedModels::Table.into_iden(),
            InputTags::Table.into_iden(),
            Inputs::Table.into_iden(),
            Datasets::Table.into_iden(),
            RegisteredModelAliasEvents::Table.into_iden(),
            RegisteredModelAliases::Table.into_iden(),
            ModelVersionTags::Table.into_iden(),
            ModelVersions::Table.into_iden(),
            RegisteredModelTags::Table.into_iden(),
            RegisteredModels::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager.drop_index(Index::drop().name("idx_runs_experiment_stage_start").table(Runs::Table).to_owned()).await?;
        Ok(())
    }

    /// Create everything or nothing.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
