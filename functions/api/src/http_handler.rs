//! The HTTP API: one axum `Router`, served by `lambda_http` on AWS and over plain HTTP locally.
//! Handlers stay thin: parse → call the domain → map to a response. Routes live in modules
//! named after what they serve ([`crate::jobs`], [`crate::health`]).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;

use shared::adapters::{Aws, HttpSegmenter, PublicHttp};
use shared::config::Settings;
use shared::core::{ApiKeyStore, BlobStore, CapabilityStore, JobStore, Probe, UploadStore};
use shared::egress::FetchPolicy;
use shared::service::JobSubmitter;

use crate::error::ApiError;
use crate::{auth, cancel, compat, fal_webhook, health, jobs, metrics, uploads, webhooks};

/// Multipart overhead allowed on top of the image byte limit.
const BODY_OVERHEAD: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) submitter: JobSubmitter,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    pub(crate) keys: Arc<dyn ApiKeyStore>,
    pub(crate) uploads: Arc<dyn UploadStore>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) provider_transitions: Arc<dyn shared::core::ProviderTransitions>,
    pub(crate) queue: Arc<dyn shared::core::JobQueue>,
    pub(crate) fal_keys: Arc<shared::adapters::JwksCache>,
    /// Seed 003's `processing_id` pointers.
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

/// The API's routes: `/v1/…`, `/health`, and the compatibility routes of the services it
/// replaces ([`crate::compat`]).
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.image_limits.max_bytes as usize + BODY_OVERHEAD;
    Router::new()
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/result", get(jobs::get_result))
        .route("/v1/auth/token", post(auth::issue_token))
        .route("/v1/uploads", post(uploads::create_upload))
        .route("/v1/jobs/{id}/cancel", post(cancel::cancel_job))
        .route(
            "/v1/providers/fal/webhook",
            post(fal_webhook::receive_fal_webhook),
        )
        .route("/v1/metrics", get(metrics::get_metrics))
        .route(
            "/v1/webhooks",
            get(webhooks::get_webhooks).put(webhooks::put_webhooks),
        )
        .route("/v1/webhooks/rotate-secret", post(webhooks::rotate_secret))
        .route("/health", get(health::health))
        .merge(compat::routes())
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&state.settings.cors_allowed_origins))
        // Every response: the API serves JSON and redirects only, never pages.
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .layer(header_layer(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, UlidRequestId))
        .with_state(state)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives each request without an `X-Request-Id` a ULID; the id is echoed on the response.
#[derive(Clone, Copy)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Browser access for the configured origins only (`*` for any); none configured, none allowed.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("x-api-key"),
            X_REQUEST_ID,
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("preference-applied"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(600))
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}
