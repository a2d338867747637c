//! The composition root: builds [`Ingest`] over the AWS adapters from the environment. The only
//! module that names concrete adapters; the handler sees ports.

use std::sync::Arc;

use shared::adapters::{Aws, PublicHttp};
use shared::config::Settings;
use shared::core::{BlobStore, JobQueue, JobStore};
use shared::egress::FetchPolicy;
use shared::service::JobSubmitter;

use crate::error::IngestError;
use crate::event_handler::Ingest;

impl Ingest {
    /// Builds the handler over the AWS adapters.
    ///
    /// # Errors
    /// [`IngestError`] when the submitter cannot be built.
    pub fn with_aws(settings: Settings, aws: &Aws) -> Result<Self, IngestError> {
        let settings = Arc::new(settings);
        let store: Arc<dyn JobStore> = Arc::new(aws.jobs.clone());
        let queue: Arc<dyn JobQueue> = Arc::new(aws.queue.clone());
        let blobs: Arc<dyn BlobStore> = Arc::new(aws.blobs.clone());
        let fetcher = Arc::new(PublicHttp::new(FetchPolicy::for_inputs(&settings))?);
        let submitter = JobSubmitter::new(
            store.clone(),
            queue,
            blobs.clone(),
            settings.clone(),
            fetcher,
        );
        Ok(Self::new(
            submitter,
            store,
            Arc::new(aws.jobs.clone()),
            blobs,
            settings,
        ))
    }

    /// Builds the handler from the environment.
    ///
    /// # Errors
    /// [`IngestError`] naming the missing configuration.
    pub async fn from_env() -> Result<Self, IngestError> {
        let settings = Settings::from_env()?;
        let aws = Aws::from_settings(&settings).await?;
        Self::with_aws(settings, &aws)
    }
}
