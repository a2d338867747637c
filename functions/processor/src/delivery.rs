//! Job-end notifications: a signed webhook ([Standard Webhooks](https://www.standardwebhooks.com/))
//! and/or an e-mail (Amazon SES v2), sent from `{"kind": "notify", …}` queue messages — never
//! inside a request or a job run.
//!
//! - Whatever ends a job (this processor's run or poll, the dead-letter path, the API's cancel)
//!   enqueues one `notify` message when the job has a `webhook_url` or `email`, or its owner a
//!   default webhook URL ([`shared::notification::enqueue_for_ended_job`]).
//! - The handler reads the job, sends each channel that has no `delivered` attempt yet, and
//!   appends every attempt to `Job.notifications`. So a duplicate message, or a retry after one
//!   channel already went through, never sends that channel again.
//! - Each send runs under the channel's delivery claim (a conditional write on the job item,
//!   [`NotificationStore::claim_delivery`]): two handlers of duplicate messages at once send
//!   once. Recording the attempt settles the channel (delivered, or no attempt left) or
//!   releases the claim for the retry.
//! - The terminal transition left the job in the `pending` index as its outbox entry;
//!   [`Notifier::job_ended`] queues the message, and the handler clears the entry once every
//!   channel is settled (or moves it past a scheduled retry). A message never sent, or held by
//!   a processor that was killed, is relayed again by the recovery sweeper
//!   (`shared::recovery`) a minute later, not after the queue's visibility timeout.
//! - A failed attempt (non-2xx, timeout, connection error, SES refusal) is retried by sending
//!   the message again with `DelaySeconds` = `NOTIFY_RETRY_BASE_SECONDS` × 3^(n−1) (10 s, 30 s,
//!   90 s, … at most 15 min) until `NOTIFY_MAX_ATTEMPTS` attempts of that channel were made.
//!   A URL refused by the SSRF guard, or e-mail with no sender configured, is recorded once and
//!   not retried.
//!
//! Delivery is at least once: if recording a successful attempt fails, the message is retried
//! and the receiver sees the same `webhook-id` again.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

use shared::config::NotifySettings;
use shared::core::WebhookPoster;
use shared::core::{BlobStore, JobQueue, JobStore};
use shared::job::{Job, JobMessage, JobStatus, NotificationAttempt, OwnerId};
use shared::notification::{
    self as n, CHANNEL_EMAIL, CHANNEL_WEBHOOK, DELIVERED, EmailError, EmailSender, FAILED,
    NotificationStore,
};

use crate::outcome::Outcome;

/// How much longer than the send's own timeout a delivery claim lasts: room for reading the
/// signing secret and recording the attempt.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// Sends job-end notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    store: Arc<dyn JobStore>,
    notifications: Arc<dyn NotificationStore>,
    queue: Arc<dyn JobQueue>,
    blobs: Arc<dyn BlobStore>,
    email: Option<Arc<dyn EmailSender>>,
    webhook: Arc<dyn WebhookPoster>,
    settings: NotifySettings,
}

/// One attempt's result, before it is recorded.
struct Tried {
    delivered: bool,
    status: Option<u16>,
    message: Option<String>,
    /// Worth another attempt later.
    retryable: bool,
}

impl Tried {
    fn delivered(status: Option<u16>) -> Self {
        Self {
            delivered: true,
            status,
            message: None,
            retryable: false,
        }
    }

    fn failed(status: Option<u16>, message: String, retryable: bool) -> Self {
        Self {
            delivered: false,
            status,
            message: Some(message),
            retryable,
        }
    }
}

impl Notifier {
    /// A notifier over the given ports; `webhook` sends the deliveries.
    pub fn new(
        store: Arc<dyn JobStore>,
        notifications: Arc<dyn NotificationStore>,
        queue: Arc<dyn JobQueue>,
        blobs: Arc<dyn BlobStore>,
        email: Option<Arc<dyn EmailSender>>,
        webhook: Arc<dyn WebhookPoster>,
        notify: NotifySettings,
    ) -> Self {
        Self {
            store,
            notifications,
            queue,
            blobs,
            email,
            webhook,
            settings: notify,
        }
    }

    /// Called when this processor ended a job: enqueues its `notify` message if anyone is to
    /// be told. Never fails the record: the job's own outcome stands, a lost notification is
    /// logged.
    pub async fn job_ended(&self, owner: &OwnerId, job_id: Ulid) {
        let job = match self.store.get(owner, job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "could not read the ended job; no notification");
                return;
            }
        };
        // One quick second try: the message is the only trace of the notification to come.
        for round in 0..2 {
            match n::enqueue_for_ended_job(&job, self.notifications.as_ref(), self.queue.as_ref())
                .await
            {
                Ok(true) => {
                    tracing::info!(status = %job.status, "notification queued");
                    return;
                }
                Ok(false) => return,
                Err(e) if round == 0 => {
                    tracing::warn!(error = %e, "could not queue the notification; trying again")
                }
                Err(e) => tracing::error!(error = %e, "could not queue the notification"),
            }
        }
    }

    /// Handles a `notify` message: sends what is not delivered yet, records the attempts,
    /// schedules a retry for what failed.
    pub async fn handle(&self, owner: &OwnerId, job_id: Ulid, round: u32) -> Outcome {
        let job = match self.store.get(owner, job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if !job.status.is_terminal() {
            return Outcome::Skipped("the job has not ended");
        }
        let webhook_url = match &job.notify.webhook_url {
            Some(url) => Some(url.clone()),
            None => match self.notifications.webhook_settings(owner).await {
                Ok(settings) => settings.and_then(|s| s.default_url),
                Err(e) => return Outcome::Retry(e.to_string()),
            },
        };
        let mut retry_after: Option<Duration> = None;
        let mut sent = 0;
        // A channel another handler holds is not settled yet: the outbox entry must stay for
        // it (that handler may have been killed mid-send).
        let mut held_elsewhere = false;
        let channels = [
            (CHANNEL_WEBHOOK, webhook_url),
            (CHANNEL_EMAIL, job.notify.email.clone()),
        ];
        for (channel, target) in channels {
            let Some(target) = target else { continue };
            let prior: Vec<&NotificationAttempt> = job
                .notifications
                .iter()
                .filter(|a| a.channel == channel)
                .collect();
            if prior.iter().any(|a| a.outcome == DELIVERED) {
                continue;
            }
            let number = prior.len() as u32 + 1;
            if number > self.settings.max_attempts {
                continue;
            }
            // The claim outlives the send's own timeout, so a live handler never loses it
            // mid-send; a crashed one's claim expires and the retry takes it.
            let until = OffsetDateTime::now_utc() + self.settings.webhook_timeout + CLAIM_MARGIN;
            match self
                .notifications
                .claim_delivery(owner, job_id, channel, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        channel,
                        "another handler holds or settled this channel; not sent"
                    );
                    held_elsewhere = true;
                    continue;
                }
                Err(e) => {
                    return Outcome::Retry(format!("could not claim the {channel} delivery: {e}"));
                }
            }
            let tried = if channel == CHANNEL_WEBHOOK {
                self.send_webhook(&job, &target).await
            } else {
                self.send_email(&job, &target).await
            };
            sent += 1;
            let attempt = NotificationAttempt {
                channel: channel.to_owned(),
                attempt: number,
                at: OffsetDateTime::now_utc(),
                outcome: if tried.delivered { DELIVERED } else { FAILED }.to_owned(),
                status: tried.status,
                message: tried.message.clone(),
            };
            tracing::info!(channel, attempt = number, outcome = %attempt.outcome, status = ?tried.status, message = ?tried.message, "notification attempt");
            let again = !tried.delivered && tried.retryable && number < self.settings.max_attempts;
            if let Err(e) = self
                .notifications
                .record_attempt(owner, job_id, &attempt, !again)
                .await
            {
                // Sent but not recorded: once the claim expires, the redelivery may send again
                // (same webhook-id).
                return Outcome::Retry(format!("could not record the {channel} attempt: {e}"));
            }
            if again {
                let delay = n::retry_delay(self.settings.retry_base, number);
                retry_after = Some(retry_after.map_or(delay, |d| d.min(delay)));
            }
        }
        let Some(delay) = retry_after else {
            if !held_elsewhere {
                self.settle_outbox(owner, job_id, None).await;
            }
            return Outcome::Skipped(if sent == 0 {
                "nothing left to notify"
            } else {
                "notifications handled"
            });
        };
        let message = JobMessage::Notify {
            owner: owner.clone(),
            job_id,
            attempt: round.saturating_add(1),
        };
        match self.queue.send(&message, delay).await {
            Ok(()) => {
                self.settle_outbox(owner, job_id, Some(delay)).await;
                Outcome::Skipped("notification retry scheduled")
            }
            // The attempt is recorded; SQS's redelivery of this message is the fallback retry.
            Err(e) => Outcome::Retry(format!("could not schedule the notification retry: {e}")),
        }
    }

    /// Ends the job's notification outbox entry once every channel is settled (`retry: None`),
    /// or moves it past the retry just scheduled, so the sweeper relays the job only if that
    /// retry is lost. A failure is logged, not returned: the entry left behind only brings a
    /// `notify` whose handler finds nothing left to send.
    async fn settle_outbox(&self, owner: &OwnerId, job_id: Ulid, retry: Option<Duration>) {
        let result = match retry {
            None => self.notifications.clear_outbox(owner, job_id).await,
            Some(delay) => {
                let due = OffsetDateTime::now_utc().unix_timestamp()
                    + delay.as_secs() as i64
                    + shared::resources::OUTBOX_GRACE_SECONDS;
                self.notifications.defer_outbox(owner, job_id, due).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not update the outbox entry; the sweeper relays the job again");
        }
    }

    async fn send_webhook(&self, job: &Job, url: &str) -> Tried {
        let secret = match self.notifications.webhook_secret(&job.owner).await {
            Ok(secret) => secret,
            Err(e) => return Tried::failed(None, format!("no signing secret: {e}"), true),
        };
        let body = match n::event_body(job, self.settings.public_api_url.as_deref()) {
            Ok(body) => body,
            Err(e) => return Tried::failed(None, e.to_string(), false),
        };
        let id = n::webhook_id(job.id, job.status);
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("user-agent", "imagejobs-webhooks/1".to_owned()),
            ("webhook-id", id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", secret.sign(&id, timestamp, &body)),
        ];
        match self.webhook.post(url, &headers, Bytes::from(body)).await {
            Ok(status) if (200..300).contains(&status) => Tried::delivered(Some(status)),
            Ok(status) => Tried::failed(
                Some(status),
                format!("the receiver answered HTTP {status}"),
                true,
            ),
            Err(shared::Error::Unavailable { message, .. }) => Tried::failed(None, message, true),
            // Refused by the SSRF guard (scheme, address) or not a URL: retrying cannot help.
            Err(e) => Tried::failed(None, format!("{}: {e}", e.code()), false),
        }
    }

    async fn send_email(&self, job: &Job, to: &str) -> Tried {
        let Some(sender) = &self.email else {
            return Tried::failed(
                None,
                "e-mail notifications are off (NOTIFY_FROM_EMAIL is not set)".into(),
                false,
            );
        };
        let (subject, text) = match self.email_text(job).await {
            Ok(parts) => parts,
            Err(e) => return Tried::failed(None, e.to_string(), true),
        };
        match sender.send(to, &subject, &text).await {
            Ok(_) => Tried::delivered(None),
            // Refusals are retried too: an operator may verify the identity or grant the
            // permission meanwhile; NOTIFY_MAX_ATTEMPTS bounds it.
            Err(e @ (EmailError::Rejected(_) | EmailError::Unavailable(_))) => {
                Tried::failed(None, e.to_string(), true)
            }
        }
    }

    /// Subject and plain-text body. The result link of a succeeded job is a presigned S3 GET
    /// URL (valid `NOTIFY_RESULT_URL_TTL_SECONDS`), followed by the API's
    /// `/v1/jobs/{id}/result`, which needs an API key but never expires.
    async fn email_text(&self, job: &Job) -> shared::Result<(String, String)> {
        let operation = job.operation.name();
        let subject = format!("imagejobs: job {} {} ({operation})", job.id, job.status);
        let api = n::job_link(self.settings.public_api_url.as_deref(), job.id);
        let mut text = format!("Your {operation} job {} has {}.\n\n", job.id, job.status);
        match job.status {
            JobStatus::Succeeded => {
                let key = job.result.as_ref().map(|r| r.key.as_str()).ok_or_else(|| {
                    shared::Error::Corrupt {
                        what: "job record",
                        message: "succeeded without a result".into(),
                    }
                })?;
                let link = self
                    .blobs
                    .presign_get(key, self.settings.result_url_ttl)
                    .await?;
                let hours = self.settings.result_url_ttl.as_secs().div_ceil(3600);
                text.push_str(&format!(
                    "Download the result (link valid for {hours} h):\n{link}\n\n\
                     With your API key, the result is also at {api}/result\n"
                ));
            }
            JobStatus::Failed => {
                if let Some(error) = &job.error {
                    text.push_str(&format!("Error {}: {}\n\n", error.code, error.message));
                }
                text.push_str(&format!("Details: {api}\n"));
            }
            _ => text.push_str(&format!("Details: {api}\n")),
        }
        Ok((subject, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsEvent;

    #[test]
    fn notify_fixture_event_parses() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-notify.json")).unwrap();
        let body = event.records[0].body.as_deref().unwrap();
        let message: JobMessage = serde_json::from_str(body).unwrap();
        assert!(
            matches!(&message, JobMessage::Notify { attempt: 1, owner, .. } if owner.as_str() == "anonymous"),
            "{message:?}"
        );
        assert_eq!(serde_json::to_string(&message).unwrap(), body);
    }
}
