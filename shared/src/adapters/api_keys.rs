//! API keys in the jobs table: `pk = APIKEY#{sha256}`, `sk = APIKEY`, plus the
//! [`ApiKeyRecord`] fields. Lookups are by hash (one `GetItem` per request); listing and
//! revoking by id are admin operations and scan the `APIKEY#` items.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::ApiKeyRecord;
use crate::core::ApiKeyStore;
use crate::error::{Error, Result};
use crate::job::OwnerId;
use crate::resources::{TABLE_PARTITION_KEY as PK, TABLE_SORT_KEY as SK};

/// The API key records.
#[derive(Debug, Clone)]
pub struct DynamoApiKeys {
    client: Client,
    table: String,
}

use super::dynamodb_unavailable as unavailable;

fn key(hash: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(format!("APIKEY#{hash}"))),
        (SK.to_owned(), AttributeValue::S("APIKEY".into())),
    ])
}

fn decode(item: HashMap<String, AttributeValue>) -> Result<ApiKeyRecord> {
    serde_dynamo::from_item(item).map_err(|e| Error::Corrupt {
        what: "API key record",
        message: e.to_string(),
    })
}

impl DynamoApiKeys {
    /// Wraps a client for `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeys {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<()> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(record).map_err(|e| Error::Corrupt {
                what: "API key record",
                message: e.to_string(),
            })?;
        item.extend(key(&record.hash));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn find_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(hash)))
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(decode).transpose()
    }

    async fn list_keys(&self, owner: Option<&OwnerId>) -> Result<Vec<ApiKeyRecord>> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":prefix", AttributeValue::S("APIKEY#".into()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items.unwrap_or_default() {
                let record = decode(item)?;
                if owner.is_none_or(|o| *o == record.owner) {
                    keys.push(record);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn revoke_key(&self, key_id: &str) -> Result<bool> {
        let Some(record) = self
            .list_keys(None)
            .await?
            .into_iter()
            .find(|k| k.key_id == key_id)
        else {
            return Ok(false);
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&record.hash)))
            .update_expression("SET revoked = :yes")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn touch_key(&self, hash: &str, now: OffsetDateTime) -> Result<()> {
        let stamp = |t: OffsetDateTime| AttributeValue::S(t.format(&Rfc3339).expect("UTC formats"));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(hash)))
            .update_expression("SET last_used_at = :now")
            // RFC 3339 UTC strings of equal precision sort like the instants they name.
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(last_used_at) OR last_used_at <= :stale)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":now", stamp(now))
            .expression_attribute_values(":stale", stamp(now - crate::auth::KEY_USE_RESOLUTION))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Ok(())
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }
}
