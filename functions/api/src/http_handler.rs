//! The HTTP API: one axum `Router`, served by `lambda_http` on AWS and over plain HTTP locally.
//! Handlers stay thin: parse → call the domain → map to a response. Routes live in modules
//! named after what they serve ([`crate::jobs`], [`crate::health`]).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

use shared::adapters::{Aws, HttpSegmenter};
use shared::config::Settings;
use shared::core::{BlobStore, JobStore, Probe};
use shared::service::JobSubmitter;

use crate::error::ApiError;
use crate::{cancel, health, jobs};

/// Multipart overhead allowed on top of the image byte limit.
const BODY_OVERHEAD: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) submitter: JobSubmitter,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) provider_transitions: Arc<dyn shared::core::ProviderTransitions>,
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
        )?;
        Ok(Self {
            submitter,
            store,
            blobs,
            probes,
            settings,
            provider_transitions: Arc::new(aws.jobs.clone()),
        })
    }

    /// Reads settings and AWS configuration from the environment.
    ///
    /// # Errors
    /// [`shared::Error::Config`] naming what is missing.
    pub async fn from_env() -> shared::Result<Self> {
        let settings = Settings::from_env()?;
        let aws = Aws::from_settings(&settings).await?;
        Self::new(settings, &aws)
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.image_limits.max_bytes as usize + BODY_OVERHEAD;
    Router::new()
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/result", get(jobs::get_result))
        .route("/v1/jobs/{id}/cancel", post(cancel::cancel_job))
        .route("/health", get(health::health))
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
