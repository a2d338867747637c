//! What every handler shares: the job service, the stores behind the API's ports, and the
//! settings. Handlers take it as `State<AppState>`; it knows nothing of routes.

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::{Aws, HttpSegmenter, PublicHttp};
use shared::config::Settings;
use shared::core::{ApiKeyStore, BlobStore, CapabilityStore, JobStore, Probe, UploadStore};
use shared::egress::FetchPolicy;
use shared::service::JobSubmitter;

/// What the handlers share. Cheap to clone: every field is an `Arc` or holds them.
#[derive(Clone)]
pub struct AppState {
    /// Validates, stores and queues new jobs: the one way in for every route that creates one.
    pub(crate) submitter: JobSubmitter,
    /// Job records, read by the status, result, list and metrics routes.
    pub(crate) store: Arc<dyn JobStore>,
    /// Inputs and results in the bucket.
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// What `GET /health` checks: table, queue, bucket, and the segmenter when configured.
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    /// API key records, looked up by hash.
    pub(crate) keys: Arc<dyn ApiKeyStore>,
    /// Presigned-upload records (`POST /v1/uploads`).
    pub(crate) uploads: Arc<dyn UploadStore>,
    /// The deployment's settings.
    pub(crate) settings: Arc<Settings>,
    /// The job transitions the API makes itself: cancel, and marking a fal delivery seen.
    pub(crate) provider_transitions: Arc<dyn shared::core::ProviderTransitions>,
    /// The processor's queue (fal completions and cancels, notifications).
    pub(crate) queue: Arc<dyn shared::core::JobQueue>,
    /// fal's webhook signing keys, cached.
    pub(crate) fal_keys: Arc<shared::adapters::JwksCache>,
    /// The async background-removal service's `processing_id` pointers.
    pub(crate) capabilities: Arc<dyn CapabilityStore>,
    /// Owner webhook settings (`/v1/webhooks`).
    pub(crate) notifications: Arc<dyn shared::notification::NotificationStore>,
}

impl AppState {
    /// Builds the state over the AWS adapters; `SEGMENTER_URL`, when set, joins the health
    /// check.
    ///
    /// # Errors
    /// [`shared::Error::Config`] for unusable settings.
    pub fn new(settings: Settings, aws: &Aws) -> shared::Result<Self> {
        let settings = Arc::new(settings);
        let store: Arc<dyn JobStore> = Arc::new(aws.jobs.clone());
        let blobs: Arc<dyn BlobStore> = Arc::new(aws.blobs.clone());
        let mut probes: Vec<Arc<dyn Probe>> = vec![
            Arc::new(aws.jobs.clone()),
            Arc::new(aws.queue.clone()),
            Arc::new(aws.blobs.clone()),
        ];
        if let Some(url) = &settings.segmenter_url {
            probes.push(Arc::new(HttpSegmenter::new(url, Duration::from_secs(3))?));
        }
        let submitter = JobSubmitter::new(
            store.clone(),
            Arc::new(aws.queue.clone()),
            blobs.clone(),
            settings.clone(),
            Arc::new(PublicHttp::new(FetchPolicy::for_inputs(&settings))?),
        )
        .with_uploads(Arc::new(aws.jobs.clone()));
        // fal allows caching its keys for up to 24 h (docs/providers.md §2.6).
        let fal_keys = Arc::new(shared::adapters::JwksCache::new(
            &settings.fal_jwks_url,
            Duration::from_secs(24 * 3600),
        )?);
        Ok(Self {
            submitter,
            store,
            blobs,
            probes,
            keys: Arc::new(aws.keys.clone()),
            uploads: Arc::new(aws.jobs.clone()),
            settings,
            provider_transitions: Arc::new(aws.jobs.clone()),
            queue: Arc::new(aws.queue.clone()),
            fal_keys,
            capabilities: Arc::new(aws.jobs.clone()),
            notifications: Arc::new(aws.notifications.clone()),
        })
    }

    /// The same state with another name resolver for URL inputs and non-public addresses that
    /// may still be fetched (tests; VPC endpoints).
    ///
    /// # Errors
    /// [`shared::Error::Config`] when the HTTP client cannot be built.
    pub fn with_url_resolution(
        mut self,
        resolver: Arc<dyn shared::egress::Resolver>,
        allowed_addresses: Vec<std::net::SocketAddr>,
    ) -> shared::Result<Self> {
        let policy = FetchPolicy {
            resolver: Some(resolver),
            allowed_addresses,
            ..FetchPolicy::for_inputs(&self.settings)
        };
        self.submitter = self
            .submitter
            .with_fetcher(Arc::new(PublicHttp::new(policy)?));
        Ok(self)
    }
}
