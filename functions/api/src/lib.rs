//! The imagejobs HTTP API (`functions/api`): accepts jobs, answers their status and results.
//! See [`http_handler::router`] for the routes.

mod auth;
mod cancel;
mod compat;
mod error;
mod fal_webhook;
mod health;
pub mod http_handler;
mod identity;
pub mod jobs;
mod metrics;
mod uploads;
mod webhooks;

pub use error::ApiError;
pub use http_handler::{AppState, router};
