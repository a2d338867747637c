//! Notification records in the jobs table:
//! - owner webhook settings: `pk = OWNER#{owner}`, `sk = WEBHOOK`, `secret` (`whsec_…`),
//!   `default_url`, `updated_at`;
//! - delivery attempts: appended to the job item's `notifications` list with
//!   `list_append`, so concurrent writers never overwrite each other's entries;
//! - delivery claims: `notify_claim_{channel}` on the job item, Unix seconds until which one
//!   handler may send (a conditional write takes it), or `i64::MAX` once the channel settled;
//! - the outbox entry of an ended job: its `pending_shard`/`pending_due`, removed by
//!   `clear_outbox` once the `notify` message is queued.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use super::dynamodb::{job_sk, pk};
use crate::error::{Error, Result};
use crate::job::{JobStatus, NotificationAttempt, OwnerId};
use crate::notification::{NotificationStore, OwnerWebhook, WebhookSecret};
use crate::resources::{
    PENDING_DUE_ATTRIBUTE, PENDING_SHARD_ATTRIBUTE, TABLE_PARTITION_KEY as PK, TABLE_SORT_KEY as SK,
};

type Item = HashMap<String, AttributeValue>;

/// Sort key of an owner's webhook settings item.
pub const WEBHOOK_SK: &str = "WEBHOOK";

/// Webhook settings and notification attempts, in the jobs table.
#[derive(Debug, Clone)]
pub struct DynamoNotifications {
    client: Client,
    table: String,
}

use super::dynamodb_unavailable as unavailable;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn key(owner: &OwnerId, sk: String) -> Item {
    HashMap::from([(PK.to_owned(), s(pk(owner))), (SK.to_owned(), s(sk))])
}

fn now() -> AttributeValue {
    s(OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("UTC timestamps always format as RFC 3339"))
}

fn secret_of(item: &Item) -> Result<Option<WebhookSecret>> {
    match item.get("secret").and_then(|v| v.as_s().ok()) {
        None => Ok(None),
        Some(text) => WebhookSecret::parse(text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: "webhook settings",
                message: e.to_string(),
            }),
    }
}

impl DynamoNotifications {
    /// Wraps a client for `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn settings_item(&self, owner: &OwnerId) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, WEBHOOK_SK.into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// `SET secret = …` (only when missing unless `replace`), returning the stored secret.
    async fn write_secret(&self, owner: &OwnerId, replace: bool) -> Result<WebhookSecret> {
        let fresh = WebhookSecret::generate().map_err(|e| Error::Config(e.to_string()))?;
        let expression = if replace {
            "SET secret = :secret, updated_at = :now"
        } else {
            // Two first uses at once both end with the same (first written) secret.
            "SET secret = if_not_exists(secret, :secret), updated_at = if_not_exists(updated_at, :now)"
        };
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, WEBHOOK_SK.into())))
            .update_expression(expression)
            .expression_attribute_values(":secret", s(fresh.as_str()))
            .expression_attribute_values(":now", now())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(unavailable)?;
        secret_of(&out.attributes.unwrap_or_default())?.ok_or_else(|| Error::Corrupt {
            what: "webhook settings",
            message: "no secret after writing one".into(),
        })
    }
}

#[async_trait]
impl NotificationStore for DynamoNotifications {
    async fn webhook_settings(&self, owner: &OwnerId) -> Result<Option<OwnerWebhook>> {
        let Some(item) = self.settings_item(owner).await? else {
            return Ok(None);
        };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        Ok(Some(OwnerWebhook {
            secret: text("secret"),
            default_url: text("default_url"),
        }))
    }

    async fn webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret> {
        if let Some(item) = self.settings_item(owner).await?
            && let Some(secret) = secret_of(&item)?
        {
            return Ok(secret);
        }
        self.write_secret(owner, false).await
    }

    async fn rotate_webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret> {
        self.write_secret(owner, true).await
    }

    async fn set_default_webhook_url(&self, owner: &OwnerId, url: Option<&str>) -> Result<()> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, WEBHOOK_SK.into())))
            .expression_attribute_values(":now", now());
        req = match url {
            Some(url) => req
                .update_expression("SET default_url = :url, updated_at = :now")
                .expression_attribute_values(":url", s(url)),
            None => req.update_expression("SET updated_at = :now REMOVE default_url"),
        };
        req.send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn claim_delivery(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        channel: &str,
        until: OffsetDateTime,
    ) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, job_sk(job_id))))
            .update_expression("SET #claim = :until")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#claim) OR #claim < :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#claim", claim_attribute(channel))
            .expression_attribute_values(":until", number(until.unix_timestamp()))
            .expression_attribute_values(":now", number(OffsetDateTime::now_utc().unix_timestamp()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Ok(false)
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    async fn record_attempt(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        attempt: &NotificationAttempt,
        settled: bool,
    ) -> Result<()> {
        let entry = serde_dynamo::to_attribute_value(attempt).map_err(|e| Error::Corrupt {
            what: "notification attempt",
            message: e.to_string(),
        })?;
        let append = "SET notifications = list_append(if_not_exists(notifications, :empty), :entry), \
                      updated_at = :now";
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, job_sk(job_id))))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#claim", claim_attribute(&attempt.channel))
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":entry", AttributeValue::L(vec![entry]))
            .expression_attribute_values(":now", now());
        req = if settled {
            req.update_expression(format!("{append}, #claim = :settled"))
                .expression_attribute_values(":settled", number(SETTLED))
        } else {
            req.update_expression(format!("{append} REMOVE #claim"))
        };
        let out = req.send().await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Err(Error::NotFound(format!("job {job_id}")))
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    async fn clear_outbox(&self, owner: &OwnerId, job_id: Ulid) -> Result<()> {
        self.update_ended_job(
            owner,
            job_id,
            "REMOVE #shard, #due",
            "",
            &[("#shard", PENDING_SHARD_ATTRIBUTE)],
            None,
        )
        .await
    }

    async fn defer_outbox(&self, owner: &OwnerId, job_id: Ulid, due: i64) -> Result<()> {
        // Only an entry still there: a cleared one stays cleared.
        self.update_ended_job(
            owner,
            job_id,
            "SET #due = :due",
            " AND attribute_exists(#due)",
            &[],
            Some((":due", AttributeValue::N(due.to_string()))),
        )
        .await
    }
}

impl DynamoNotifications {
    /// An update of an ended job's outbox entry (`#due` is its due time), only while the job is
    /// terminal: a running job's entry is its recovery and is never touched here. A failed
    /// condition (not ended, or no entry) changes nothing and is not an error.
    async fn update_ended_job(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        update: &str,
        and_condition: &str,
        names: &[(&str, &str)],
        value: Option<(&str, AttributeValue)>,
    ) -> Result<()> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, job_sk(job_id))))
            .update_expression(update)
            .condition_expression(format!(
                "#status IN (:succeeded, :failed, :canceled){and_condition}"
            ))
            .expression_attribute_names("#due", PENDING_DUE_ATTRIBUTE)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":succeeded", s(JobStatus::Succeeded.as_str()))
            .expression_attribute_values(":failed", s(JobStatus::Failed.as_str()))
            .expression_attribute_values(":canceled", s(JobStatus::Canceled.as_str()));
        for (name, attribute) in names {
            req = req.expression_attribute_names(*name, *attribute);
        }
        if let Some((name, v)) = value {
            req = req.expression_attribute_values(name, v);
        }
        match req.send().await {
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

/// The job attribute holding a channel's delivery claim: Unix seconds until which one handler
/// may send, or [`SETTLED`] once the channel is done.
fn claim_attribute(channel: &str) -> String {
    format!("notify_claim_{channel}")
}

/// A claim that never expires: the channel was delivered or ran out of attempts.
const SETTLED: i64 = i64::MAX;

fn number(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
