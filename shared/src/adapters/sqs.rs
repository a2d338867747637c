//! SQS adapter for the jobs queue.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use std::time::Duration;

use crate::core::{JobQueue, MessageVisibility, Probe};
use crate::error::{Error, Result};
use crate::job::JobMessage;

/// SQS caps `DelaySeconds` at 15 minutes.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// The jobs queue.
#[derive(Debug, Clone)]
pub struct SqsJobQueue {
    client: Client,
    queue_url: String,
}

impl SqsJobQueue {
    /// Wraps a client for the queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send(&self, message: &JobMessage, delay: Duration) -> Result<()> {
        let body = serde_json::to_string(message).map_err(|e| Error::Corrupt {
            what: "queue message",
            message: e.to_string(),
        })?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| Error::unavailable("sqs", e.into_service_error()))?;
        Ok(())
    }
}

#[async_trait]
impl MessageVisibility for SqsJobQueue {
    async fn visible_after(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(delay.as_secs().min(12 * 3600) as i32)
            .send()
            .await
            .map_err(|e| Error::unavailable("sqs", e.into_service_error()))?;
        Ok(())
    }
}

#[async_trait]
impl Probe for SqsJobQueue {
    fn name(&self) -> &'static str {
        "queue"
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| Error::unavailable("sqs", e.into_service_error()))?;
        Ok(())
    }
}
