//! `imagejobs-segmenter`: the background-removal inference server (SageMaker/ECS container
//! contract) of imagejobs.
//!
//! Modules:
//! * [`config`] — flags and environment variables;
//! * [`engine`] — the [`engine::Engine`] trait and a loaded engine with its bounded queue;
//! * [`registry`] — the engines loaded at start-up, the default model and stand-ins;
//! * [`onnx`] — rembg-family ONNX models on ONNX Runtime (`ort`, loaded dynamically);
//! * [`plain_background`] — the built-in engine for plain / smoothly graded backgrounds;
//! * [`imaging`] — decode with limits, EXIF orientation, resize, compose, encode;
//! * [`png`] — the PNG writer that filters and deflates bands of rows in parallel;
//! * [`pipeline`] — one removal end to end, independent of HTTP;
//! * [`http`] — the axum router (`/ping`, `/models`, `/invocations`);
//! * [`error`] — the error enum and its status / code mapping.
//!
//! In-process use (e.g. an end-to-end test in another crate):
//! ```no_run
//! # async fn demo() -> Result<(), imagejobs_segmenter::StartupError> {
//! let mut config = imagejobs_segmenter::Config::new("/path/to/models");
//! config.ort_dylib_path = Some("/path/to/libonnxruntime.so.1.31.1".into());
//! // Either a Router to serve or to call with tower::ServiceExt::oneshot …
//! let router = imagejobs_segmenter::app(&config)?;
//! // … or a running server on 127.0.0.1:<free port>.
//! let (addr, _task) = imagejobs_segmenter::spawn(config).await?;
//! println!("http://{addr}/ping");
//! # let _ = router; Ok(()) }
//! ```

pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod imaging;
pub mod memory;
pub mod onnx;
pub mod pipeline;
pub mod plain_background;
pub mod png;
pub mod registry;

use std::net::SocketAddr;
use std::process::ExitCode;

pub use axum::Router;
pub use config::Config;
pub use error::{ServiceError, StartupError};
pub use http::{AppState, router};

/// Loads every engine `config` allows (blocking: ONNX sessions are created here) and returns
/// the router, ready to serve or to call in-process.
///
/// # Errors
/// See [`registry::Registry::load`].
pub fn app(config: &Config) -> Result<Router, StartupError> {
    let registry = registry::Registry::load(config)?;
    tracing::info!(
        models = ?registry.available(),
        default_model = registry.default_model(),
        ort_intra_threads = ?config.ort_intra_threads,
        ort_spinning = config.ort_spinning,
        ort_spinning_stop = config.ort_spinning_stop,
        "engines ready"
    );
    Ok(router(AppState::new(registry, config)))
}

/// Binds `config.host:config.port` (port 0 picks a free one), loads the engines and serves on a
/// task of the current Tokio runtime. Returns the bound address and the task.
///
/// # Errors
/// Engine loading ([`app`]) or binding failures.
pub async fn spawn(
    config: Config,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>), StartupError> {
    let router = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || app(&config))
            .await
            .map_err(|e| StartupError::Config(format!("loading engines panicked: {e}")))??
    };
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((local, task))
}

/// Loads the engines, binds and serves until SIGTERM / Ctrl-C (graceful: in-flight requests
/// finish).
///
/// # Errors
/// Engine loading or binding failures; I/O errors of the server.
pub async fn serve(config: Config) -> Result<(), StartupError> {
    let router = app(&config)?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// The binary's entry point: the allocator's settings ([`memory::keep_freed_memory`]), logging
/// (`RUST_LOG`, default `info`; `LOG_FORMAT=json` for JSON lines), configuration from
/// flags/environment, then [`serve`]. Start-up errors are printed and give exit code 1.
pub fn main_entry() -> ExitCode {
    use clap::Parser;
    let kept = memory::keep_freed_memory();
    init_tracing();
    tracing::debug!(kept, "malloc keeps freed memory for the next request");
    let config = Config::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("segmenter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("segmenter: start-up failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
