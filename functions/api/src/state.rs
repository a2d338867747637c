//! What every handler shares: the job service, the stores behind the API's ports, and the
//! settings. Handlers take it as `State<AppState>`; it knows nothing of routes.

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::{Aws, HttpSegmenter, PublicHttp};
use shared::config::Settings;
use shared::core::{
    ApiKeyStore, BlobStore, CapabilityStore, JobQueue, JobStore, Probe, ProviderTransitions,
    UploadStore, UrlFetcher,
};
use shared::egress::FetchPolicy;
use shared::notification::NotificationStore;
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

/// The ports [`AppState`] is built over: the AWS adapters in a deployment
/// ([`AppState::new`]), in-memory fakes in tests ([`AppState::from_ports`]).
#[derive(Clone)]
pub struct Ports {
    /// Job records: created by the submitter, read by the status, result, list and metrics
    /// routes.
    pub store: Arc<dyn JobStore>,
    /// The job transitions the API makes itself: cancel, and marking a fal delivery seen.
    pub provider_transitions: Arc<dyn ProviderTransitions>,
    /// Inputs and results.
    pub blobs: Arc<dyn BlobStore>,
    /// The processor's queue: new jobs, fal completions and cancels, notifications.
    pub queue: Arc<dyn JobQueue>,
    /// API key records, looked up by hash.
    pub keys: Arc<dyn ApiKeyStore>,
    /// Presigned-upload records (`POST /v1/uploads`); the submitter checks references to
    /// them too.
    pub uploads: Arc<dyn UploadStore>,
    /// The async background-removal service's `processing_id` pointers.
    pub capabilities: Arc<dyn CapabilityStore>,
    /// Owner webhook settings (`/v1/webhooks`).
    pub notifications: Arc<dyn NotificationStore>,
    /// What `GET /health` checks, in order.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Downloads URL inputs (`input: "https://…"`).
    pub fetcher: Arc<dyn UrlFetcher>,
}

impl AppState {
    /// Builds the state over the AWS adapters; `SEGMENTER_URL`, when set, joins the health
    /// check.
    ///
    /// # Errors
    /// [`shared::Error::Config`] for unusable settings.
    pub fn new(settings: Settings, aws: &Aws) -> shared::Result<Self> {
        let mut probes: Vec<Arc<dyn Probe>> = vec![
            Arc::new(aws.jobs.clone()),
            Arc::new(aws.queue.clone()),
            Arc::new(aws.blobs.clone()),
        ];
        if let Some(url) = &settings.segmenter.url {
            probes.push(Arc::new(HttpSegmenter::new(url, Duration::from_secs(3))?));
        }
        let ports = Ports {
            store: Arc::new(aws.jobs.clone()),
            provider_transitions: Arc::new(aws.jobs.clone()),
            blobs: Arc::new(aws.blobs.clone()),
            queue: Arc::new(aws.queue.clone()),
            keys: Arc::new(aws.keys.clone()),
            uploads: Arc::new(aws.jobs.clone()),
            capabilities: Arc::new(aws.jobs.clone()),
            notifications: Arc::new(aws.notifications.clone()),
            probes,
            fetcher: Arc::new(PublicHttp::new(FetchPolicy::for_inputs(&settings))?),
        };
        Self::from_ports(settings, ports)
    }

    /// Builds the state over any implementation of the ports (in-memory fakes in tests). fal's
    /// webhook keys are fetched from `settings.providers.fal_jwks_url` on first use (building the cache
    /// does no I/O).
    ///
    /// # Errors
    /// [`shared::Error::Config`] when the JWKS HTTP client cannot be built.
    pub fn from_ports(settings: Settings, ports: Ports) -> shared::Result<Self> {
        let settings = Arc::new(settings);
        let submitter = JobSubmitter::new(
            ports.store.clone(),
            ports.queue.clone(),
            ports.blobs.clone(),
            settings.clone(),
            ports.fetcher,
        )
        .with_uploads(ports.uploads.clone());
        // fal allows caching its keys for up to 24 h (docs/providers.md §2.6).
        let fal_keys = Arc::new(shared::adapters::JwksCache::new(
            &settings.providers.fal_jwks_url,
            Duration::from_secs(24 * 3600),
        )?);
        Ok(Self {
            submitter,
            store: ports.store,
            blobs: ports.blobs,
            probes: ports.probes,
            keys: ports.keys,
            uploads: ports.uploads,
            settings,
            provider_transitions: ports.provider_transitions,
            queue: ports.queue,
            fal_keys,
            capabilities: ports.capabilities,
            notifications: ports.notifications,
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
