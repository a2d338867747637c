//! imagejobs shared library: the job domain (pure), the ports, and the AWS/HTTP adapters.
//!
//! - [`job`], [`operation`], [`models`], [`imaging`], [`resources`], [`metrics`]: the pure domain.
//! - [`core`]: the ports (one small trait per capability).
//! - [`adapters`]: DynamoDB, SQS, S3 and segmenter implementations (feature `aws`).
//! - [`service`]: job submission shared by the API and ingest (feature `aws`).

pub mod env;
pub mod error;
#[cfg(feature = "aws")]
pub mod fetch;
pub mod imaging;
pub mod job;
pub mod metrics;
pub mod models;
pub mod operation;
pub mod resources;

#[cfg(feature = "aws")]
pub mod adapters;
#[cfg(feature = "aws")]
pub mod auth;
#[cfg(feature = "aws")]
pub mod config;
#[cfg(feature = "aws")]
pub mod core;
#[cfg(feature = "aws")]
pub mod fal_webhook;
#[cfg(feature = "aws")]
pub mod notify;
#[cfg(feature = "aws")]
pub mod providers;
#[cfg(feature = "aws")]
pub mod service;
#[cfg(feature = "aws")]
pub mod telemetry;

pub use error::{Error, Result};
