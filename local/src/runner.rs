//! The local stack: the API Router over plain HTTP, the processor fed from the jobs queue and
//! its dead-letter queue by SQS long polling, and ingest fed from the bucket's `inbox/`
//! notifications. The handlers are the same code the Lambda functions run; this module only
//! plays the part of API Gateway and the Lambda event source mappings.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use imagejobs_api::AppState;
use imagejobs_ingest::Ingest;
use imagejobs_processor::Processor;
use shared::adapters::Aws;
use shared::config::Settings;
use shared::faults::Faults;

use crate::provision::Provisioned;

/// How the local stack is wired.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where the API listens (use port 0 for any free port); `None`: no API, the queue
    /// workers and the sweeper only (`imagejobs-local worker`).
    pub api_addr: Option<SocketAddr>,
    /// Function settings (resource names, segmenter URL, default model, limits, providers,
    /// notifications); `jobs.dead_letter_queue_arn` is set from `provisioned`.
    pub settings: Settings,
    /// The provisioned resources.
    pub provisioned: Provisioned,
    /// Long-poll wait per receive (1–20 s).
    pub poll_wait: Duration,
    /// Jobs-queue records worked on at once (1–10; clamped), each its own invocation: the
    /// processor's concurrency bound, the local counterpart of the event source's
    /// `MaximumConcurrency`.
    pub batch_size: i32,
    /// How often the recovery sweeper runs (`SweeperFunction`'s schedule on AWS); `None`: not
    /// at all (tests that drive it by hand).
    pub sweep_interval: Option<Duration>,
    /// Fault injection on the job-path ports ([`crate::chaos`]); `None`: the plain adapters.
    pub faults: Option<Arc<Faults>>,
}

/// How often a stack with faults logs its counts (a SIGKILLed worker cannot log them at exit).
const FAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A running local stack; dropping it without [`Stack::shutdown`] aborts its tasks.
pub struct Stack {
    /// The API's bound address; `None` for a worker-only stack.
    pub api_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A handler could not be built.
    #[error("{0}")]
    Handler(String),
    /// The API port could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Stack {
    /// Starts the API (unless `config.api_addr` is `None`), the queue workers and the sweeper.
    ///
    /// # Errors
    /// [`StackError`] when a handler cannot be built or the port is taken.
    pub async fn start(
        sdk: &aws_config::SdkConfig,
        config: StackConfig,
    ) -> Result<Self, StackError> {
        let aws = Aws::with_sdk_config(sdk, &config.settings);
        let handler = |e: &dyn std::fmt::Display| StackError::Handler(e.to_string());
        // As template.yaml passes the stack's own dead-letter queue to the processor.
        let mut processor_settings = config.settings.clone();
        processor_settings.jobs.dead_letter_queue_arn =
            Some(config.provisioned.dead_letter_queue_arn.clone());
        let (api, processor) = match &config.faults {
            Some(faults) => (
                crate::chaos::api(&config.settings, &aws, faults).map_err(|e| handler(&e))?,
                crate::chaos::processor(sdk, &processor_settings, &aws, faults)
                    .map_err(|e| handler(&e))?,
            ),
            None => (
                AppState::new(config.settings.clone(), &aws).map_err(|e| handler(&e))?,
                Processor::with_aws(&processor_settings, &aws)
                    .map_err(|e| handler(&e))?
                    .with_notifier(
                        imagejobs_processor::Notifier::with_aws(sdk, &processor_settings, &aws)
                            .map_err(|e| handler(&e))?,
                    ),
            ),
        };
        let ingest = Ingest::with_aws(config.settings.clone(), &aws)
            .map_err(|e| StackError::Handler(e.to_string()))?;

        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let api_addr = match config.api_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StackError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StackError::Bind { addr, source })?;
                let mut stop = shutdown.subscribe();
                let app = crate::connection::api_app(api);
                tasks.spawn(async move {
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "API server stopped");
                    }
                });
                Some(bound)
            }
            None => None,
        };

        let sqs = aws_sdk_sqs::Client::new(sdk);
        let p = &config.provisioned;
        for (url, arn) in [
            (p.queue_url.clone(), p.queue_arn.clone()),
            (
                p.dead_letter_queue_url.clone(),
                p.dead_letter_queue_arn.clone(),
            ),
        ] {
            let worker = QueueWorker {
                sqs: sqs.clone(),
                url,
                arn,
                wait: config.poll_wait,
                batch_size: config.batch_size.clamp(1, 10),
            };
            let processor = processor.clone();
            let stop = shutdown.subscribe();
            tasks.spawn(async move { worker.run_processor(processor, stop).await });
        }
        let worker = QueueWorker {
            sqs,
            url: p.ingest_queue_url.clone(),
            arn: String::new(),
            wait: config.poll_wait,
            batch_size: 10,
        };
        let stop = shutdown.subscribe();
        tasks.spawn(async move { worker.run_ingest(ingest, stop).await });

        if let Some(faults) = config.faults.clone() {
            let mut stop = shutdown.subscribe();
            tasks.spawn(async move {
                loop {
                    let stopping = tokio::select! {
                        _ = stop.wait_for(|s| *s) => true,
                        () = tokio::time::sleep(FAULT_REPORT_INTERVAL) => false,
                    };
                    // One line a second: the chaos suite adds up the last one of each process.
                    tracing::info!(faults = %faults.summary(), "fault counts");
                    if stopping {
                        break;
                    }
                }
            });
        }

        if let Some(every) = config.sweep_interval {
            let sweeper = match &config.faults {
                Some(faults) => crate::chaos::sweeper(&config.settings, &aws, faults),
                None => imagejobs_processor::sweeper::with_aws(&config.settings, &aws),
            };
            let mut stop = shutdown.subscribe();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(every) => {}
                    }
                    let now = time::OffsetDateTime::now_utc();
                    if let Err(e) = sweeper
                        .sweep(now, imagejobs_processor::sweeper::SWEEP_LIMIT)
                        .await
                    {
                        tracing::warn!(error = %e, "sweep failed; trying again next interval");
                    }
                }
            });
        }

        Ok(Self {
            api_addr,
            shutdown,
            tasks,
        })
    }

    /// `http://{api_addr}`.
    ///
    /// # Panics
    /// On a worker-only stack (no API).
    pub fn api_url(&self) -> String {
        let addr = self.api_addr.expect("this stack serves no API");
        format!("http://{addr}")
    }

    /// Stops accepting requests and lets in-flight batches finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[derive(Clone)]
struct QueueWorker {
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
    wait: Duration,
    batch_size: i32,
}

impl QueueWorker {
    /// Up to `max` messages (1–10), long polling; `None` once the stack is stopping.
    async fn receive(&self, max: i32, stop: &mut watch::Receiver<bool>) -> Option<Vec<Message>> {
        let request = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(self.wait.as_secs().clamp(1, 20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send();
        tokio::select! {
            _ = stop.changed() => None,
            out = request => match out {
                Ok(out) => Some(out.messages.unwrap_or_default()),
                Err(e) => {
                    tracing::warn!(queue = %self.url, error = %e.into_service_error(), "receive failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Some(Vec::new())
                }
            },
        }
    }

    async fn delete(&self, message: &Message) {
        if let Some(handle) = &message.receipt_handle
            && let Err(e) = self
                .sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(handle)
                .send()
                .await
        {
            tracing::warn!(error = %e.into_service_error(), "delete failed; the message will be redelivered");
        }
    }

    /// Plays the SQS event source mapping with `ReportBatchItemFailures`: each record is an
    /// invocation of its own (a batch of one), at most `batch_size` run side by side (the
    /// event source's `MaximumConcurrency`), and a slot that frees is filled by the next
    /// receive at once, as Lambda's pollers do. Run batch by batch, every batch waited for its
    /// slowest record while the segmenter sat idle.
    async fn run_processor(self, processor: Processor, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.batch_size.max(1) as usize));
        let mut invocations = JoinSet::new();
        loop {
            let first = tokio::select! {
                _ = stop.changed() => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let Some(messages) = self.receive(permits.len() as i32, &mut stop).await else {
                break;
            };
            // Slots the receive did not fill are given back as the permits left over drop.
            for (message, permit) in messages.into_iter().zip(permits) {
                let (worker, processor) = (self.clone(), processor.clone());
                invocations.spawn(async move {
                    worker.invoke(&processor, &[message]).await;
                    drop(permit);
                });
            }
            while invocations.try_join_next().is_some() {}
        }
        // Stopping: the invocations under way finish, as a Lambda's would.
        while invocations.join_next().await.is_some() {}
    }

    /// One processor invocation over `messages`; deletes those it did not report as failed.
    async fn invoke(&self, processor: &Processor, messages: &[Message]) {
        let event = sqs_event(messages, &self.arn);
        let response = processor.handle(event).await;
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        for m in messages {
            if !m.message_id.as_ref().is_some_and(|id| failed.contains(id)) {
                self.delete(m).await;
            }
        }
    }

    /// Plays S3's invocation of the ingest function.
    async fn run_ingest(self, ingest: Ingest, mut stop: watch::Receiver<bool>) {
        while let Some(messages) = self.receive(self.batch_size, &mut stop).await {
            for m in &messages {
                let Some(event) = m.body.as_deref().and_then(s3_event) else {
                    // The s3:TestEvent S3 sends when notifications are configured, or noise.
                    self.delete(m).await;
                    continue;
                };
                match ingest.handle(event).await {
                    Ok(_) => self.delete(m).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "ingest failed; the event will be redelivered")
                    }
                }
            }
        }
    }
}

/// The SQS event Lambda would deliver for these messages.
pub fn sqs_event(messages: &[Message], source_arn: &str) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect();
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "md5OfBody": m.md5_of_body,
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": source_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("the SQS event shape is fixed")
}

/// Parses an S3 notification as Lambda receives it. The emulator's records lack
/// `userIdentity`, `requestParameters`, `responseElements` and `sequencer`, which AWS always
/// sends; they are filled with empty values here so the handler sees AWS's shape. `None` for
/// `s3:TestEvent` and anything that is not a notification.
pub fn s3_event(body: &str) -> Option<S3Event> {
    let mut value: Value = serde_json::from_str(body).ok()?;
    let records = value.get_mut("Records")?.as_array_mut()?;
    for record in records.iter_mut() {
        let obj = record.as_object_mut()?;
        obj.entry("userIdentity")
            .or_insert_with(|| json!({"principalId": ""}));
        obj.entry("requestParameters")
            .or_insert_with(|| json!({"sourceIPAddress": ""}));
        obj.entry("responseElements").or_insert_with(|| json!({}));
        if let Some(object) = obj
            .get_mut("s3")
            .and_then(|s| s.get_mut("object"))
            .and_then(Value::as_object_mut)
        {
            object.entry("sequencer").or_insert_with(|| json!(""));
        }
    }
    match serde_json::from_value(value) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable S3 notification");
            None
        }
    }
}
