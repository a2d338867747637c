//! The imagejobs HTTP API (`functions/api`): accepts jobs, answers their status and results.
//! See [`router()`] for the routes, [`AppState`] for what the handlers share, and [`wiring`]
//! for how the deployed function builds it.

mod access;
mod auth;
mod body;
mod cancel;
mod compat;
pub mod console;
mod docs;
mod error;
mod health;
mod identity;
pub mod jobs;
mod metrics;
mod models;
mod openapi;
mod provider_callbacks;
mod request_id;
mod router;
mod state;
mod uploads;
mod webhooks;
pub mod wiring;

pub use error::ApiError;
pub use router::{openapi_json, router};
pub use state::{AppState, Ports};
