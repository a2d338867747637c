//! The imagejobs job processor (`functions/processor`): an SQS consumer with partial batch
//! failures. [`Processor::handle`] takes a batch; the modules, from the entry point inward:
//! `batch` (records → outcomes), `processor` (the ports and the dispatch of a run message),
//! `operation` (one module per operation, and the provider submit/poll lifecycle), [`delivery`]
//! (job-end notifications), `outcome`; `wiring` builds it all over the AWS adapters, and
//! [`metrics`] owns the operator metrics (CloudWatch EMF).

mod batch;
pub mod delivery;
mod error;
pub mod metrics;
mod operation;
mod outcome;
mod processor;
pub mod sweeper;
mod wiring;

pub use batch::UNCLAIMED_RETRY_DELAY;
pub use delivery::Notifier;
pub use error::ProcessorError;
pub use operation::provider::poll_delay;
pub use outcome::Outcome;
pub use processor::{Processor, Providers};
pub use wiring::output_downloads;
