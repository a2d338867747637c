//! The imagejobs HTTP API (`functions/api`): accepts jobs, answers their status and results.
//! See [`http_handler::router`] for the routes.

mod error;
pub mod http_handler;

pub use error::ApiError;
pub use http_handler::{AppState, router};
