//! One module per operation: [`remove_background`] (segmenter, Stability's synchronous
//! removal), [`relight`] (Stability), [`model_queue`] (fal.ai: `edit`, `generate`); [`provider`]
//! is the submit/poll lifecycle the last two share.

mod model_queue;
pub(crate) mod provider;
mod relight;
mod remove_background;

/// Largest provider output downloaded, bytes (a 4096×4096 PNG fits).
pub const OUTPUT_MAX_BYTES: u64 = 64 * 1024 * 1024;
