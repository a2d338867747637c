//! The local stack's handlers built over fault-injecting ports ([`shared::faults`]): the same
//! API, processor, notifier and sweeper as [`crate::runner`] builds, with every job-path port
//! (the jobs table's job, transition, provider and pending views, the queue, the bucket, the
//! segmenter and the provider clients) wrapped in a [`Faulty`] that shares one [`Faults`].
//! `imagejobs-local serve`/`worker` enable it with `FAULTS=seed=N,rate=R` (`--faults`).
//!
//! Left unwrapped on purpose: API keys, uploads, capabilities, the processor's message
//! visibility changes (a lost one only costs time), ingest (the chaos suite creates
//! jobs through the API only), the webhook and download HTTP clients, and the whole notify path
//! (the notifier's job reads, its queue sends, its records): the suite's "exactly one webhook
//! per job and status, 0 duplicates" is the issue's check with notify faults off.

use std::sync::Arc;

use imagejobs_api::{AppState, Ports};
use imagejobs_processor::{Notifier, Processor, Providers};
use shared::adapters::{Aws, FalClient, HttpSegmenter, PublicHttp, StabilityClient};
use shared::config::Settings;
use shared::core::{
    BlobStore, JobQueue, JobStore, JobTransitions, ModelQueue, PendingJobs, Probe,
    ProviderTransitions, RelightProvider, RemoveBackgroundProvider, Segmenter,
};
use shared::egress::FetchPolicy;
use shared::faults::{Faults, Faulty};
use shared::recovery::Sweeper;

/// The wrapped ports, built once and shared by the handlers of one process.
struct FaultyPorts {
    jobs: Arc<Faulty<shared::adapters::DynamoJobs>>,
    queue: Arc<Faulty<shared::adapters::SqsJobQueue>>,
    blobs: Arc<Faulty<shared::adapters::S3Blobs>>,
}

impl FaultyPorts {
    fn new(aws: &Aws, faults: &Arc<Faults>) -> Self {
        Self {
            jobs: Arc::new(Faulty::new(aws.jobs.clone(), faults.clone())),
            queue: Arc::new(Faulty::new(aws.queue.clone(), faults.clone())),
            blobs: Arc::new(Faulty::new(aws.blobs.clone(), faults.clone())),
        }
    }
}

/// The API state over faulty ports (as [`AppState::new`] builds it over the adapters).
///
/// # Errors
/// [`shared::Error::Config`] when an HTTP client cannot be built.
pub fn api(settings: &Settings, aws: &Aws, faults: &Arc<Faults>) -> shared::Result<AppState> {
    let ports = FaultyPorts::new(aws, faults);
    let mut probes: Vec<Arc<dyn Probe>> = vec![
        Arc::new(aws.jobs.clone()),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.blobs.clone()),
    ];
    if let Some(url) = &settings.segmenter.url {
        probes.push(Arc::new(HttpSegmenter::new(
            url,
            std::time::Duration::from_secs(3),
        )?));
    }
    AppState::from_ports(
        settings.clone(),
        Ports {
            store: ports.jobs.clone() as Arc<dyn JobStore>,
            provider_transitions: ports.jobs.clone() as Arc<dyn ProviderTransitions>,
            blobs: ports.blobs.clone() as Arc<dyn BlobStore>,
            queue: ports.queue.clone() as Arc<dyn JobQueue>,
            keys: Arc::new(aws.keys.clone()),
            uploads: Arc::new(aws.jobs.clone()),
            capabilities: Arc::new(aws.jobs.clone()),
            notifications: Arc::new(aws.notifications.clone()),
            probes,
            fetcher: Arc::new(PublicHttp::new(FetchPolicy::for_inputs(settings))?),
        },
    )
}

/// The processor and its notifier over faulty ports (as `Processor::with_aws` and
/// `Notifier::with_aws` build them over the adapters); `settings` already carries the
/// dead-letter queue's ARN.
///
/// # Errors
/// [`imagejobs_processor::ProcessorError`] when `SEGMENTER_URL` is unset or a client cannot be
/// built.
pub fn processor(
    sdk: &aws_config::SdkConfig,
    settings: &Settings,
    aws: &Aws,
    faults: &Arc<Faults>,
) -> Result<Processor, imagejobs_processor::ProcessorError> {
    let ports = FaultyPorts::new(aws, faults);
    let url = settings.segmenter.url.as_deref().ok_or_else(|| {
        imagejobs_processor::ProcessorError::Config("SEGMENTER_URL is not set".into())
    })?;
    let segmenter: Arc<dyn Segmenter> = Arc::new(Faulty::new(
        HttpSegmenter::new(url, settings.segmenter.timeout)?,
        faults.clone(),
    ));
    let p = settings.providers.clone();
    let stability = match &p.stability_api_key {
        Some(key) => Some(Arc::new(Faulty::new(
            StabilityClient::new(&p.stability_base_url, key, p.stability_timeout)?,
            faults.clone(),
        ))),
        None => None,
    };
    let fal = match &p.fal_key {
        Some(key) => Some(Arc::new(Faulty::new(
            FalClient::new(&p.fal_queue_url, key, p.fal_timeout)?,
            faults.clone(),
        )) as Arc<dyn ModelQueue>),
        None => None,
    };
    // The notify path stays unfaulted (module docs): the production notifier as it is.
    let notifier = Notifier::with_aws(sdk, settings, aws)?;
    Ok(Processor::new(
        ports.jobs.clone() as Arc<dyn JobTransitions>,
        ports.blobs.clone(),
        segmenter,
        settings,
    )
    .with_providers(Providers {
        store: ports.jobs.clone(),
        transitions: ports.jobs.clone(),
        queue: ports.queue.clone(),
        relight: stability.clone().map(|c| c as Arc<dyn RelightProvider>),
        remove_background: stability.map(|c| c as Arc<dyn RemoveBackgroundProvider>),
        models: fal,
        downloads: Arc::new(PublicHttp::new(imagejobs_processor::output_downloads(
            settings,
        ))?),
        settings: p,
    })
    // Unwrapped, like the notify path: a lost visibility change only costs time.
    .with_visibility(Arc::new(aws.queue.clone()))
    .with_notifier(notifier))
}

/// The recovery sweeper over faulty ports (as `imagejobs_processor::sweeper::with_aws`).
pub fn sweeper(settings: &Settings, aws: &Aws, faults: &Arc<Faults>) -> Sweeper {
    let ports = FaultyPorts::new(aws, faults);
    Sweeper::new(
        ports.jobs.clone() as Arc<dyn PendingJobs>,
        ports.queue.clone(),
        ports.jobs.clone(),
        settings.jobs.max_receive_count,
    )
}
