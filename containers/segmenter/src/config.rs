//! Server configuration: command-line flags, each with an environment variable (the container
//! is configured through the environment; SageMaker passes `serve` as the only argument).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// Default `MAX_BODY_BYTES`: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Default `MAX_PIXELS`: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default `MAX_SIDE`: 12 000 px.
pub const DEFAULT_MAX_SIDE: u32 = 12_000;
/// Default `QUEUE_DEPTH`: requests per engine in flight (running + waiting) before `503 overloaded`.
pub const DEFAULT_QUEUE_DEPTH: usize = 4;

/// Segmenter configuration. Build it with [`Config::parse`] (flags + environment) in the binary,
/// or [`Config::new`] (defaults, no environment) in tests.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "segmenter",
    version,
    about = "Background-removal inference server (SageMaker container contract)"
)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind (0.0.0.0 in a container; 127.0.0.1 for local runs and tests).
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Directory holding the ONNX weights, named as in the model catalog (e.g. `u2net.onnx`).
    #[arg(long, env = "MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,
    /// Path of the ONNX Runtime shared library (`libonnxruntime.so.<version>`). Required only when
    /// `MODEL_DIR` holds at least one catalog model; start-up fails if it cannot be loaded.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,
    /// Model used when a request names none. Unset or empty: the best loaded general-purpose
    /// neural model (catalog rank: `isnet` before `isnet-int8` before `u2netp`, …), else
    /// `plain-background`. Start-up fails if the named model is unknown or not loaded.
    #[arg(long, env = "DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Largest accepted image, in pixels (width × height), checked from the header before decoding.
    #[arg(long, env = "MAX_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Largest accepted image side, in pixels.
    #[arg(long, env = "MAX_SIDE", default_value_t = DEFAULT_MAX_SIDE)]
    pub max_side: u32,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// ONNX Runtime intra-op threads per session (default: ONNX Runtime's choice, one per core).
    #[arg(long, env = "ORT_INTRA_THREADS")]
    pub ort_intra_threads: Option<usize>,
    /// Whether idle ONNX Runtime intra-op threads spin before blocking (its
    /// `session.intra_op.allow_spinning`). `false` suits a machine shared with other busy
    /// processes (the local stack); a dedicated instance keeps the default.
    #[arg(long, env = "ORT_SPINNING", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ort_spinning: bool,
    /// Whether spinning intra-op threads stop as soon as a run returns (ONNX Runtime's
    /// `session.force_spinning_stop`), so the mask resize and the encode after inference get
    /// the cores (measured: containers/segmenter/README.md, "Benchmark").
    #[arg(long, env = "ORT_SPINNING_STOP", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ort_spinning_stop: bool,
    /// Register the CUDA execution provider for every ONNX session (needs the `cuda` cargo feature
    /// and the onnxruntime-gpu library). Registration failure fails start-up.
    #[arg(long, env = "USE_CUDA", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub use_cuda: bool,
    /// Requests per engine in flight (running or waiting) before new ones get `503 overloaded`.
    #[arg(long, env = "QUEUE_DEPTH", default_value_t = DEFAULT_QUEUE_DEPTH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub queue_depth: usize,
    /// Optional sub-command; SageMaker starts containers as `<image> serve`, which is accepted
    /// and ignored.
    #[arg(value_parser = ["serve"], hide = true)]
    pub command: Option<String>,
}

impl Config {
    /// Defaults for everything, ignoring the environment, with the given `MODEL_DIR`; binds
    /// 127.0.0.1:0. For tests and embedding.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            port: 0,
            host: IpAddr::from([127, 0, 0, 1]),
            model_dir: model_dir.into(),
            ort_dylib_path: None,
            default_model: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: DEFAULT_MAX_SIDE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ort_intra_threads: None,
            ort_spinning: true,
            ort_spinning_stop: true,
            use_cuda: false,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            command: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_argument_is_harmless_and_flags_parse() {
        let c = Config::try_parse_from([
            "segmenter",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "9000",
            "--use-cuda",
            "false",
            "--queue-depth",
            "2",
            "--ort-spinning",
            "false",
            "--ort-spinning-stop",
            "false",
        ])
        .unwrap();
        assert_eq!(c.command.as_deref(), Some("serve"));
        assert_eq!(c.port, 9000);
        assert!(!c.use_cuda);
        assert_eq!(c.queue_depth, 2);
        assert!(!c.ort_spinning);
        assert!(!c.ort_spinning_stop);
        assert!(Config::new("m").ort_spinning_stop);
        assert!(
            Config::new("m").ort_spinning,
            "ONNX Runtime's default unless told"
        );
        assert!(Config::try_parse_from(["segmenter", "train"]).is_err());
        assert!(Config::try_parse_from(["segmenter", "--queue-depth", "0"]).is_err());
    }
}
