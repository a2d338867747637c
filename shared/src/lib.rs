//! imagejobs shared library: the job domain (pure), the ports, and the AWS/HTTP adapters.
//! Dependencies point one way: adapters → ports → domain (`docs/ARCHITECTURE.md`).
//!
//! - Always (no feature): the pure domain: [`job`], [`operation`], [`models`], [`image_check`],
//!   [`resources`], [`metrics`], [`env`], [`error`].
//! - Feature `ports`: the ports ([`core`], one small trait per capability), the settings
//!   ([`config`], [`providers`]), and the logic written against the ports only: job submission
//!   ([`service`]), API keys and tokens ([`auth`]), job-end notifications ([`notification`]),
//!   fal.ai webhook signatures ([`fal_signature`]) and the outbound-request policy ([`egress`]).
//!   No AWS crate and no HTTP client is compiled in.
//! - Feature `aws` (default, implies `ports`): the [`adapters`] (DynamoDB, SQS, S3, SES, the
//!   segmenter, Stability, fal.ai, outbound HTTP) and [`telemetry`].
//! - Feature `fakes` (implies `ports`, not in `default`): in-memory implementations of the
//!   ports ([`fakes`]) for in-process tests; never enabled by a deployed function.
//! - Feature `faults` (implies `ports`, not in `default`): seeded fault-injecting decorators
//!   on the ports (`faults`) for the chaos suite and the local runner; never enabled by a
//!   deployed function.

pub mod env;
pub mod error;
pub mod image_check;
pub mod job;
pub mod metrics;
pub mod models;
pub mod operation;
pub mod resources;

#[cfg(feature = "ports")]
pub mod auth;
#[cfg(feature = "ports")]
pub mod config;
#[cfg(feature = "ports")]
pub mod core;
#[cfg(feature = "ports")]
pub mod egress;
#[cfg(feature = "ports")]
pub mod fal_signature;
#[cfg(feature = "ports")]
pub mod notification;
#[cfg(feature = "ports")]
pub mod providers;
#[cfg(feature = "ports")]
pub mod recovery;
#[cfg(feature = "ports")]
pub mod service;

#[cfg(feature = "aws")]
pub mod adapters;
#[cfg(feature = "fakes")]
pub mod fakes;
#[cfg(feature = "faults")]
pub mod faults;
#[cfg(feature = "aws")]
pub mod telemetry;

pub use error::{Error, Result};
