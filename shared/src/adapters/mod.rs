//! AWS and HTTP implementations of the ports in [`crate::core`].

mod api_keys;
mod dynamodb;
mod fal;
mod notification_records;
mod public_http;
mod s3;
mod sagemaker_segmenter;
mod segmenter;
mod ses;
mod sqs;
mod stability;

pub use api_keys::DynamoApiKeys;
pub use dynamodb::{DynamoJobs, Quotas};
pub use fal::{FalClient, JwksCache};
pub use notification_records::{DynamoNotifications, WEBHOOK_SK};
pub use public_http::{PublicHttp, SystemResolver};
pub use s3::S3Blobs;
pub use sagemaker_segmenter::{
    MAX_INVOKE_BODY_BYTES, ResultAttributes, SageMakerSegmenter, custom_attributes,
};
pub use segmenter::HttpSegmenter;
pub use ses::SesEmail;
pub use sqs::SqsJobQueue;
pub use stability::StabilityClient;

use crate::config::Settings;
use crate::error::{Error, Result};

/// `dependency_unavailable` for a failed DynamoDB call, with the SDK error's whole chain of
/// causes (its own `Display` says only "dispatch failure" or "unhandled error").
pub(crate) fn dynamodb_unavailable(e: impl std::error::Error) -> crate::error::Error {
    crate::error::Error::unavailable("dynamodb", crate::error::chain(&e))
}

/// The AWS adapters every function needs, built once per cold start.
#[derive(Debug, Clone)]
pub struct Aws {
    /// Jobs table.
    pub jobs: DynamoJobs,
    /// Jobs queue.
    pub queue: SqsJobQueue,
    /// Images bucket.
    pub blobs: S3Blobs,
    /// API keys (same table as the jobs).
    pub keys: DynamoApiKeys,
    /// Owner webhook settings and notification attempts (same table).
    pub notifications: DynamoNotifications,
}

impl Aws {
    /// Builds the clients from the environment's SDK configuration.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when no region is configured.
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        let sdk = crate::adapters::aws_sdk_config().await?;
        Ok(Self::with_sdk_config(&sdk, settings))
    }

    /// Builds the clients from a given SDK configuration.
    pub fn with_sdk_config(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            // The emulator serves path-style URLs only; AWS serves both.
            .force_path_style(uses_custom_endpoint())
            .build();
        Self {
            jobs: DynamoJobs::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &settings.resources.table,
            )
            .with_quotas(Quotas {
                max_in_flight: settings.jobs.max_in_flight,
                max_per_minute: settings.jobs.max_per_minute,
            }),
            keys: DynamoApiKeys::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &settings.resources.table,
            ),
            notifications: DynamoNotifications::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &settings.resources.table,
            ),
            queue: SqsJobQueue::new(aws_sdk_sqs::Client::new(sdk), &settings.resources.queue_url),
            blobs: S3Blobs::new(
                aws_sdk_s3::Client::from_conf(s3_config),
                &settings.resources.bucket,
            ),
        }
    }
}

/// Loads the AWS SDK configuration (credentials chain, region, and `AWS_ENDPOINT_URL` for the
/// emulator).
///
/// # Errors
/// [`Error::Config`] when no region is configured: the SDK would otherwise fail later with an
/// unhelpful dispatch error.
pub async fn aws_sdk_config() -> Result<aws_config::SdkConfig> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    if config.region().is_none() {
        return Err(Error::Config(
            "no AWS region configured: set AWS_REGION (e.g. us-east-1)".into(),
        ));
    }
    Ok(config)
}

/// Whether an endpoint override is in effect (the emulator), which needs path-style S3 URLs.
pub fn uses_custom_endpoint() -> bool {
    let env = crate::env::Env::process();
    env.text("AWS_ENDPOINT_URL").is_some() || env.text("AWS_ENDPOINT_URL_S3").is_some()
}
