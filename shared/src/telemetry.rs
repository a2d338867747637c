//! Logging setup shared by every binary.

/// Installs a `tracing` subscriber: JSON lines inside Lambda (CloudWatch parses them), readable
/// text elsewhere. `RUST_LOG` filters (default `info`).
pub fn init() {
    let filter = tracing_subscriber_filter();
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests, the local runner hosting several handlers) is harmless.
    let _ = if in_lambda {
        builder.json().without_time().try_init()
    } else {
        builder.try_init()
    };
}

fn tracing_subscriber_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}
