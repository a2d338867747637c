//! The imagejobs job processor (`functions/processor`): an SQS consumer with partial batch
//! failures. See [`event_handler`].

mod error;
pub mod event_handler;
pub mod notify;

pub use error::ProcessorError;
pub use event_handler::{Outcome, Processor, ProcessorOptions, Providers};
pub use notify::{Notifier, NotifySettings};
