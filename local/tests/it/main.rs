//! The `imagejobs-local` integration and end-to-end tests, in one test binary so the AWS SDK
//! and the handlers are linked once. Each module is one suite; `common` is their shared set-up
//! (one AWS emulator per test on a free 127.0.0.1 port, the real handlers, the real segmenter).

mod common;

mod api;
mod chaos;
mod chaos_suite;
mod cli;
mod compat_000;
mod compat_001;
mod compat_002;
mod compat_003;
mod compat_004;
mod emulator;
mod fal;
mod hostile;
mod load_replay;
mod notifications;
mod pipeline;
mod processor;
mod real_models;
mod recovery;
mod relight;
mod sagemaker;
mod template;
