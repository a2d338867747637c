//! The API's one integration-test binary (the router in process over `shared::fakes`, with no
//! emulator): one module per concern, linked once. The access log's test is its own binary
//! (`tests/access_log.rs`): it scopes a `tracing` subscriber, which races other tests' threads
//! over the callsites' cached interest.

mod console;
mod events;
mod openapi;
mod router;
