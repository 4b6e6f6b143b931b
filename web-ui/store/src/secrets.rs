//! Standalone secrets (`capstan secret create NAME --from-literal KEY=VALUE`) and webhook
//! delivery ids (replay protection).
//!
//! Secret values are only read back by the server itself ([`Store::secret_value`], to check a
//! webhook's signature); listing gives names and keys only, so no API can echo a value.

use std::collections::BTreeMap;

use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};

use crate::entities::{secret, webhook_delivery};
use crate::{now_ms, now_rfc3339, Result, Store, StoreError};

/// What listing a secret shows: never its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// RFC 3339.
    pub creation_timestamp: String,
}

fn info(m: &secret::Model) -> Result<SecretInfo> {
    let data: BTreeMap<String, String> = serde_json::from_str(&m.data)?;
    Ok(SecretInfo {
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        keys: data.into_keys().collect(),
        creation_timestamp: m.creation_timestamp.clone(),
    })
}

impl Store {
    /// Create a secret. AlreadyExists when the name is taken (as `kubectl create secret`).
    pub async fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<SecretInfo> {
        let txn = self.begin_write().await?;
        let existing = secret::Entity::find_by_id((namespace.to_owned(), name.to_owned())).one(&txn).await?;
        if existing.is_some() {
            return Err(StoreError::AlreadyExists(format!("secret {namespace}/{name}")));
        }
        let model = secret::Model {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            data: serde_json::to_string(data)?,
            creation_timestamp: now_rfc3339(),
        };
        secret::Entity::insert(secret::ActiveModel {
            namespace: ActiveValue::Set(model.namespace.clone()),
            name: ActiveValue::Set(model.name.clone()),
            data: ActiveValue::Set(model.data.clone()),
            creation_timestamp: ActiveValue::Set(model.creation_timestamp.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        info(&model)
    }

    /// Secrets (names and keys only) in one namespace or all, ordered by namespace and name.
    pub async fn list_secrets(&self, namespace: Option<&str>) -> Result<Vec<SecretInfo>> {
        let mut q = secret::Entity::find();
        if let Some(ns) = namespace {
            q = q.filter(secret::Column::Namespace.eq(ns));
        }
        q.order_by_asc(secret::Column::Namespace)
            .order_by_asc(secret::Column::Name)
            .all(&self.db)
            .await?
            .iter()
            .map(info)
            .collect()
    }

    /// Delete a secret; false when it did not exist.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let r = secret::Entity::delete_by_id((namespace.to_owned(), name.to_owned())).exec(&txn).await?;
        txn.commit().await?;
        Ok(r.rows_affected > 0)
    }

    /// One value of a secret, for the server's own use (webhook signatures). None when the
    /// secret or the key is missing.
    pub async fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<Option<String>> {
        let Some(m) = secret::Entity::find_by_id((namespace.to_owned(), name.to_owned())).one(&self.db).await? else {
            return Ok(None);
        };
        let mut data: BTreeMap<String, String> = serde_json::from_str(&m.data)?;
        Ok(data.remove(key))
    }

    /// Claim a webhook delivery id: true the first time, false for a replay (same provider and
    /// id seen before). Atomic: two concurrent deliveries of one id cannot both claim it.
    pub async fn claim_delivery(&self, provider: &str, delivery_id: &str, outcome: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let existing =
            webhook_delivery::Entity::find_by_id((provider.to_owned(), delivery_id.to_owned())).one(&txn).await?;
        if existing.is_some() {
            return Ok(false);
        }
        webhook_delivery::Entity::insert(webhook_delivery::ActiveModel {
            provider: ActiveValue::Set(provider.to_owned()),
            delivery_id: ActiveValue::Set(delivery_id.to_owned()),
            received_ms: ActiveValue::Set(now_ms()),
            outcome: ActiveValue::Set(outcome.to_owned()),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Record what a claimed delivery did (for audit).
    pub async fn set_delivery_outcome(&self, provider: &str, delivery_id: &str, outcome: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        webhook_delivery::Entity::update(webhook_delivery::ActiveModel {
            provider: ActiveValue::Unchanged(provider.to_owned()),
            delivery_id: ActiveValue::Unchanged(delivery_id.to_owned()),
            received_ms: ActiveValue::NotSet,
            outcome: ActiveValue::Set(outcome.to_owned()),
        })
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Forget a claimed delivery (its processing failed, so a redelivery may try again).
    pub async fn release_delivery(&self, provider: &str, delivery_id: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        webhook_delivery::Entity::delete_by_id((provider.to_owned(), delivery_id.to_owned())).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_list_keys_only_and_deliveries_claim_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
        let data: BTreeMap<String, String> = [("secret".to_string(), "s3cr3t".to_string())].into();
        let made = store.create_secret("default", "hook", &data).await.unwrap();
        assert_eq!(made.keys, ["secret"]);
        assert!(matches!(store.create_secret("default", "hook", &data).await, Err(StoreError::AlreadyExists(_))));
        let listed = store.list_secrets(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!serde_json::to_string(&listed).unwrap().contains("s3cr3t"));
        assert_eq!(store.secret_value("default", "hook", "secret").await.unwrap().as_deref(), Some("s3cr3t"));
        assert_eq!(store.secret_value("default", "hook", "nope").await.unwrap(), None);
        assert_eq!(store.secret_value("other", "hook", "secret").await.unwrap(), None);

        assert!(store.claim_delivery("github", "d-1", "{}").await.unwrap());
        assert!(!store.claim_delivery("github", "d-1", "{}").await.unwrap());
        assert!(store.claim_delivery("gitlab", "d-1", "{}").await.unwrap());
        store.set_delivery_outcome("github", "d-1", "{\"runs\":1}").await.unwrap();
        store.release_delivery("github", "d-1").await.unwrap();
        assert!(store.claim_delivery("github", "d-1", "{}").await.unwrap());
        assert!(store.delete_secret("default", "hook").await.unwrap());
        assert!(!store.delete_secret("default", "hook").await.unwrap());
    }
}
