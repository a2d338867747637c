//! One module per operation: [`remove_background`] (segmenter, Stability's synchronous
//! removal), [`relight`] (Stability), [`model_queue`] (fal.ai: `edit`, `generate`); [`provider`]
//! is the submit/poll lifecycle the last two share.

mod model_queue;
pub(crate) mod provider;
mod relight;
mod remove_background;
