//! The engine abstraction (anything that turns an RGB image into a foreground mask) and a loaded
//! engine with its bounded queue. The set of engines a process serves is [`crate::registry`].

use std::sync::Arc;
use std::time::Instant;

use image::{GrayImage, RgbImage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;

/// A failure inside an engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The runtime failed (e.g. ONNX Runtime refused the input): `500 internal`.
    #[error("{0}")]
    Runtime(String),
    /// `plain-background` cannot cut this picture out reliably: `422 no_plain_background`.
    #[error("{0}")]
    NoPlainBackground(String),
}

/// Something that segments the foreground of an image.
///
/// Implementations are shared between requests (`&self`), so they synchronise internally; calls
/// are blocking and CPU/GPU-heavy, so callers run them on a blocking thread.
pub trait Engine: Send + Sync + 'static {
    /// The public model name (as in the catalog).
    fn name(&self) -> &str;

    /// The foreground mask of `image`: same width × height, 0 = background, 255 = foreground,
    /// values in between for soft edges.
    ///
    /// # Errors
    /// A runtime failure (e.g. ONNX Runtime refusing the input).
    fn segment(&self, image: &RgbImage) -> Result<GrayImage, EngineError>;

    /// [`Engine::segment`] with the time spent in each stage. The default puts the whole call
    /// under `inference_ms`; engines with distinct stages (ONNX: resize and normalise, run, mask
    /// back to full size) override it.
    ///
    /// # Errors
    /// As [`Engine::segment`].
    fn segment_timed(&self, image: &RgbImage) -> Result<(GrayImage, EngineTimings), EngineError> {
        let t = Instant::now();
        let mask = self.segment(image)?;
        let timings = EngineTimings {
            inference_ms: t.elapsed().as_secs_f64() * 1e3,
            ..EngineTimings::default()
        };
        Ok((mask, timings))
    }
}

/// Wall-clock time of the stages of one [`Engine::segment_timed`] call, in milliseconds (≥ 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineTimings {
    /// Building the network input (resize to the input size, normalise, NCHW).
    pub preprocess_ms: f64,
    /// The network itself (ONNX Runtime's `run`, incl. waiting for the session lock), or the
    /// whole engine for engines without separate stages.
    pub inference_ms: f64,
    /// Turning the output into the full-size mask (activation, min-max, resize back).
    pub mask_resize_ms: f64,
}

/// One loaded engine and its queue.
#[derive(Clone)]
pub struct LoadedEngine {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    queue: Arc<Semaphore>,
    depth: usize,
}

impl LoadedEngine {
    /// Wraps an engine with a queue admitting `depth` requests in flight (running + waiting).
    pub fn new(engine: Arc<dyn Engine>, depth: usize) -> Self {
        Self {
            engine,
            queue: Arc::new(Semaphore::new(depth.max(1))),
            depth: depth.max(1),
        }
    }

    /// A place in this engine's queue, held for the whole request (decode → inference → encode).
    ///
    /// # Errors
    /// [`ServiceError::Overloaded`] (503) when `depth` requests are already in flight.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.queue
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServiceError::Overloaded {
                model: self.engine.name().to_owned(),
                depth: self.depth,
            })
    }
}
