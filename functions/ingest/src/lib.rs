//! The imagejobs ingest function (`functions/ingest`): S3 `ObjectCreated` under `inbox/` →
//! jobs. See [`event_handler`].

mod error;
pub mod event_handler;
mod wiring;

pub use error::IngestError;
pub use event_handler::{Ingest, IngestOutcome};
