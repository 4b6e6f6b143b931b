//! Git-triggered pipelines: `secrets` (standalone secrets made by `capstan secret create`:
//! webhook keys and the like, never returned by any API) and `webhook_deliveries` (every
//! accepted webhook delivery id, for replay protection).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string, text};

/// Creates `secrets` and `webhook_deliveries`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Namespace,
    Name,
    Data,
    CreationTimestamp,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Provider,
    DeliveryId,
    ReceivedMs,
    Outcome,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Secrets::Table)
                    .col(string(Secrets::Namespace))
                    .col(string(Secrets::Name))
                    .col(text(Secrets::Data))
                    .col(string(Secrets::CreationTimestamp))
                    .primary_key(Index::create().col(Secrets::Namespace).col(Secrets::Name))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(string(WebhookDeliveries::Provider))
                    .col(string(WebhookDeliveries::DeliveryId))
                    .col(big_integer(WebhookDeliveries::ReceivedMs))
                    .col(text(WebhookDeliveries::Outcome))
                    .primary_key(Index::create().col(WebhookDeliveries::Provider).col(WebhookDeliveries::DeliveryId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Secrets::Table).to_owned()).await
    }
}
