//! Creates the stack's resources on the emulator with the shapes `template.yaml` declares:
//! the jobs table (pk/sk, TTL), the jobs queue with its dead-letter queue and redrive policy, the
//! images bucket with its lifecycle rules, and — locally only — a queue that receives the
//! bucket's `inbox/` notifications (on AWS, S3 invokes the ingest function directly).
//! Idempotent: existing resources are kept.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, Event, ExpirationStatus, FilterRule, FilterRuleName,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;

use shared::resources::{self as r, local};

/// Names of the local resources (a suffix keeps parallel tests apart on one emulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// Jobs table.
    pub table: String,
    /// Jobs queue.
    pub queue: String,
    /// Dead-letter queue.
    pub dead_letter_queue: String,
    /// Images bucket.
    pub bucket: String,
    /// Local queue for the bucket's inbox notifications.
    pub ingest_queue: String,
}

impl ResourceNames {
    /// The default local names ([`shared::resources::local`]).
    pub fn local() -> Self {
        Self {
            table: local::TABLE.into(),
            queue: local::QUEUE.into(),
            dead_letter_queue: local::DEAD_LETTER_QUEUE.into(),
            bucket: local::BUCKET.into(),
            ingest_queue: local::INGEST_QUEUE.into(),
        }
    }

    /// The local names with `-{suffix}` appended (lower-case, for S3).
    pub fn with_suffix(suffix: &str) -> Self {
        let s = suffix.to_ascii_lowercase();
        let l = Self::local();
        Self {
            table: format!("{}-{s}", l.table),
            queue: format!("{}-{s}", l.queue),
            dead_letter_queue: format!("{}-dlq-{s}", l.queue),
            bucket: format!("{}-{s}", l.bucket),
            ingest_queue: format!("{}-{s}", l.ingest_queue),
        }
    }
}

/// What provisioning created, with everything the functions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The names used.
    pub names: ResourceNames,
    /// Jobs queue URL.
    pub queue_url: String,
    /// Jobs queue ARN.
    pub queue_arn: String,
    /// Dead-letter queue URL.
    pub dead_letter_queue_url: String,
    /// Dead-letter queue ARN.
    pub dead_letter_queue_arn: String,
    /// Ingest notifications queue URL.
    pub ingest_queue_url: String,
}

/// Provisioning failures, each naming the resource.
#[derive(Debug, thiserror::Error)]
#[error("provisioning {resource}: {message}")]
pub struct ProvisionError {
    resource: String,
    message: String,
}

fn fail(resource: &str) -> impl Fn(String) -> ProvisionError + '_ {
    move |message| ProvisionError {
        resource: resource.to_owned(),
        message,
    }
}

/// Creates (or keeps) every resource.
///
/// # Errors
/// [`ProvisionError`] naming the resource that could not be created.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    names: &ResourceNames,
) -> Result<Provisioned, ProvisionError> {
    create_table(&aws_sdk_dynamodb::Client::new(sdk), &names.table).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (dlq_url, dlq_arn) = create_queue(
        &sqs,
        &names.dead_letter_queue,
        HashMap::from([
            (
                QueueAttributeName::MessageRetentionPeriod,
                r::DEAD_LETTER_QUEUE_RETENTION_SECONDS.to_string(),
            ),
            // The processor consumes the dead-letter queue too, and Lambda requires a queue's
            // visibility timeout to cover the function timeout.
            (
                QueueAttributeName::VisibilityTimeout,
                r::JOBS_QUEUE_VISIBILITY_TIMEOUT_SECONDS.to_string(),
            ),
        ]),
    )
    .await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": r::JOBS_QUEUE_MAX_RECEIVE_COUNT,
    });
    let (queue_url, queue_arn) = create_queue(
        &sqs,
        &names.queue,
        HashMap::from([
            (
                QueueAttributeName::VisibilityTimeout,
                r::JOBS_QUEUE_VISIBILITY_TIMEOUT_SECONDS.to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                r::JOBS_QUEUE_RETENTION_SECONDS.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ]),
    )
    .await?;
    let (ingest_queue_url, ingest_queue_arn) =
        create_queue(&sqs, &names.ingest_queue, HashMap::new()).await?;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    create_bucket(&s3, &names.bucket, &ingest_queue_arn).await?;
    Ok(Provisioned {
        names: names.clone(),
        queue_url,
        queue_arn,
        dead_letter_queue_url: dlq_url,
        dead_letter_queue_arn: dlq_arn,
        ingest_queue_url,
    })
}

/// Verifies `address` as an SES (v2) e-mail identity on the emulator, so the processor may send
/// from it (`NOTIFY_FROM_EMAIL`). On AWS the identity is verified once by its owner (a
/// confirmation e-mail, or DNS for a domain) and `template.yaml` grants the processor
/// `ses:SendEmail` from that address only. Idempotent.
///
/// # Errors
/// [`ProvisionError`] naming the identity.
pub async fn verify_email_identity(
    sdk: &aws_config::SdkConfig,
    address: &str,
) -> Result<(), ProvisionError> {
    let err = fail(address);
    let ses = aws_sdk_sesv2::Client::new(sdk);
    if let Err(e) = ses
        .create_email_identity()
        .email_identity(address)
        .send()
        .await
    {
        let e = e.into_service_error();
        if !e.is_already_exists_exception() {
            return Err(err(e.to_string()));
        }
    }
    Ok(())
}

/// The jobs table's key schema as provisioned: `(attribute, key type)` pairs, for the test that
/// compares it with `template.yaml`.
pub fn table_key_schema() -> Vec<(&'static str, &'static str)> {
    vec![
        (r::TABLE_PARTITION_KEY, "HASH"),
        (r::TABLE_SORT_KEY, "RANGE"),
    ]
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    let err = fail(table);
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| err(e.to_string()))
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| err(e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(r::TABLE_PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(r::TABLE_SORT_KEY, KeyType::Range)?)
        .attribute_definitions(attr(r::TABLE_PARTITION_KEY)?)
        .attribute_definitions(attr(r::TABLE_SORT_KEY)?)
        .attribute_definitions(attr(r::PENDING_SHARD_ATTRIBUTE)?)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(r::PENDING_DUE_ATTRIBUTE)
                .attribute_type(ScalarAttributeType::N)
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(r::PENDING_INDEX)
                .key_schema(key(r::PENDING_SHARD_ATTRIBUTE, KeyType::Hash)?)
                .key_schema(key(r::PENDING_DUE_ATTRIBUTE, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(
                            r::PENDING_INDEX_ATTRIBUTES
                                .iter()
                                .map(|a| a.to_string())
                                .collect(),
                        ))
                        .build(),
                )
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .send()
        .await;
    if let Err(e) = created {
        let e = e.into_service_error();
        if !e.is_resource_in_use_exception() {
            return Err(err(e.to_string()));
        }
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(r::TABLE_TTL_ATTRIBUTE)
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| err(e.into_service_error().to_string()))?;
    Ok(())
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, String), ProvisionError> {
    let err = fail(name);
    let out = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| err(e.into_service_error().to_string()))?;
    let url = out
        .queue_url
        .ok_or_else(|| err("no queue URL returned".into()))?;
    let attrs = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| err(e.into_service_error().to_string()))?;
    let arn = attrs
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| err("no queue ARN returned".into()))?;
    Ok((url, arn))
}

/// The bucket's lifecycle rules: `(prefix, expiration days)`.
pub fn lifecycle_rules() -> Vec<(&'static str, u32)> {
    vec![
        (r::INBOX_PREFIX, r::INBOX_EXPIRATION_DAYS),
        (r::UPLOADS_PREFIX, r::UPLOADS_EXPIRATION_DAYS),
        (r::INPUTS_PREFIX, r::INPUTS_EXPIRATION_DAYS),
        (r::RESULTS_PREFIX, r::RESULTS_EXPIRATION_DAYS),
    ]
}

async fn create_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    ingest_queue_arn: &str,
) -> Result<(), ProvisionError> {
    let err = fail(bucket);
    if let Err(e) = client.create_bucket().bucket(bucket).send().await {
        let e = e.into_service_error();
        if !(e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) {
            return Err(err(e.to_string()));
        }
    }
    let mut rules = Vec::new();
    for (prefix, days) in lifecycle_rules() {
        rules.push(
            LifecycleRule::builder()
                .id(format!("expire-{}", prefix.trim_end_matches('/')))
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                .expiration(LifecycleExpiration::builder().days(days as i32).build())
                .build()
                .map_err(|e| err(e.to_string()))?,
        );
    }
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(|e| err(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| err(e.into_service_error().to_string()))?;
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value(r::INBOX_PREFIX)
                        .build(),
                )
                .build(),
        )
        .build();
    client
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .id("inbox-ingest")
                        .queue_arn(ingest_queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| err(e.into_service_error().to_string()))?;
    Ok(())
}
