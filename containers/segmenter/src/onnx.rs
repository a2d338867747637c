//! ONNX models of the rembg family served with ONNX Runtime (`ort` 2.0.0-rc.15, `load-dynamic`).
//!
//! The runtime library is loaded once per process from an explicit path
//! ([`init_runtime`], from `ORT_DYLIB_PATH`), so a missing or incompatible library fails start-up
//! instead of panicking at the first request. Each model gets one session, created at start-up
//! and reused; `Session::run` takes `&mut self` in rc.15, so the session sits behind a mutex
//! (requests for the same model run one at a time; the engine queue bounds the wait).
//!
//! Pre- and post-processing follow rembg (`docs/providers.md` §3.2; the steps as implemented
//! are in `docs/models.md`, "Pre- and post-processing") exactly:
//!
//! * input: RGB → **Lanczos3** resize to the model's input size, aspect ratio not kept (rembg uses
//!   PIL `LANCZOS`) → divide by the resized image's own maximum value (an all-black image stays
//!   0) → `(x − mean) / std` per channel → `[1, 3, H, W]` f32, NCHW;
//! * output: output 0, batch 0, channel 0 (`[1, 1, h, w]`, any `h × w`) → sigmoid if the catalog
//!   says so → min-max normalise to 0..1 (a constant output becomes all 0) → ×255, rounded → L8
//!   → Lanczos3 resize back to the original size (tiled: [`crate::imaging::resize_mask`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use shared::models::ModelSpec;

use crate::engine::{Engine, EngineError, EngineTimings};
use crate::error::StartupError;
use crate::imaging::{Filter, resize_mask, resize_rgb};

/// How sessions are created.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// Path of `libonnxruntime.so.<version>`.
    pub dylib: PathBuf,
    /// Intra-op threads per session (`None`: ONNX Runtime's default).
    pub intra_threads: Option<usize>,
    /// Register the CUDA execution provider (requires the `cuda` cargo feature).
    pub use_cuda: bool,
    /// Let idle intra-op threads spin before they block (ONNX Runtime's
    /// `session.intra_op.allow_spinning`, on by default). Off gives the cores back at once to
    /// whatever shares the machine, such as the local stack's emulator and runner.
    pub spinning: bool,
    /// Stop the spinning as soon as a run returns (ONNX Runtime's
    /// `session.force_spinning_stop`): threads spin while a network runs, where it pays, but
    /// not into the resize and encode that follow, which need the same cores.
    pub spinning_stop: bool,
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads the ONNX Runtime library from `dylib` and creates the process-wide environment; later
/// calls return the same environment (ONNX Runtime allows one per process, and a library once
/// loaded stays loaded, so a different path on a later call is ignored).
///
/// # Errors
/// [`StartupError::Runtime`] if the file does not exist, cannot be `dlopen`ed, is older than the
/// API version `ort` needs, or the environment cannot be created.
pub fn init_runtime(dylib: &Path) -> Result<&'static Environment, StartupError> {
    // Checked even when the library is already loaded, so a wrong path is always reported.
    if !dylib.is_file() {
        return Err(StartupError::Runtime(format!(
            "ORT_DYLIB_PATH {} does not exist or is not a file (it should be libonnxruntime.so.<version> \
             from the onnxruntime / onnxruntime-gpu wheel)",
            dylib.display()
        )));
    }
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let env = ort::init_from(dylib)
        .map_err(|e| StartupError::Runtime(e.to_string()))?
        .with_name("imagejobs-segmenter")
        .build()
        .map_err(|e| StartupError::Runtime(format!("creating the environment: {e}")))?;
    tracing::info!(dylib = %dylib.display(), "ONNX Runtime loaded");
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// One ONNX model with its warm session.
pub struct OnnxEngine {
    spec: &'static ModelSpec,
    session: Mutex<Session>,
}

impl OnnxEngine {
    /// Creates the session for `spec` from the file at `path` (call [`init_runtime`] first).
    ///
    /// # Errors
    /// [`StartupError::Runtime`] if the runtime is not initialised or CUDA was requested but is
    /// not compiled in / cannot be registered; [`StartupError::Model`] if the file does not load
    /// or its first input is not a 4-D float tensor.
    pub fn load(
        spec: &'static ModelSpec,
        path: &Path,
        options: &OrtOptions,
    ) -> Result<Self, StartupError> {
        let env = init_runtime(&options.dylib)?;
        let model_err = |message: String| StartupError::Model {
            model: spec.name.to_owned(),
            path: path.display().to_string(),
            message,
        };
        let mut builder = Session::builder(env).map_err(|e| model_err(e.to_string()))?;
        if let Some(n) = options.intra_threads {
            builder = builder
                .with_intra_threads(n)
                .map_err(|e| model_err(e.to_string()))?;
        }
        if !options.spinning {
            builder = builder
                .with_intra_op_spinning(false)
                .map_err(|e| model_err(e.to_string()))?;
        }
        if options.spinning_stop {
            builder = builder
                .with_config_entry("session.force_spinning_stop", "1")
                .map_err(|e| model_err(e.to_string()))?;
        }
        if options.use_cuda {
            builder = with_cuda(builder)?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| model_err(e.to_string()))?;
        if session.inputs().is_empty() || session.outputs().is_empty() {
            return Err(model_err("the graph has no input or no output".into()));
        }
        Ok(Self {
            spec,
            session: Mutex::new(session),
        })
    }

    /// The catalog entry this engine serves.
    pub fn spec(&self) -> &'static ModelSpec {
        self.spec
    }
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, StartupError> {
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| StartupError::Runtime(format!("registering the CUDA execution provider: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, StartupError> {
    Err(StartupError::Runtime(
        "USE_CUDA=true but this binary was built without the `cuda` feature \
         (cargo build -p imagejobs-segmenter --features cuda)"
            .into(),
    ))
}

/// The model input for `image`: `[1, 3, H, W]` f32 NCHW, flattened, per the module docs.
pub fn preprocess(spec: &ModelSpec, image: &RgbImage) -> Vec<f32> {
    let (w, h) = (spec.input_width, spec.input_height);
    let resized = resize_rgb(image, w, h, Filter::Lanczos3);
    let max = resized.as_raw().iter().copied().max().unwrap_or(0);
    let inv_max = if max == 0 { 0.0 } else { 1.0 / f32::from(max) };
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) * inv_max - spec.mean[c]) / spec.std[c];
        }
    }
    out
}

/// The mask from the raw output tensor (`shape` as reported, at least 2-D; the last two
/// dimensions are height and width, batch 0 / channel 0 is the first `h × w` block), resized to
/// `width`×`height`.
///
/// # Errors
/// If the shape is not at least 2-D with positive sides, or `data` is shorter than one plane.
pub fn postprocess(
    spec: &ModelSpec,
    shape: &[i64],
    data: &[f32],
    width: u32,
    height: u32,
) -> Result<GrayImage, EngineError> {
    let small = output_mask(spec, shape, data)?;
    Ok(resize_mask(&small, width, height))
}

/// [`postprocess`] before the resize: the mask at the network's output size.
fn output_mask(spec: &ModelSpec, shape: &[i64], data: &[f32]) -> Result<GrayImage, EngineError> {
    let bad = || EngineError::Runtime(format!("model output has an unusable shape {shape:?}"));
    if shape.len() < 2 {
        return Err(bad());
    }
    let (oh, ow) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if oh <= 0 || ow <= 0 {
        return Err(bad());
    }
    let plane = (oh * ow) as usize;
    let values = data.get(..plane).ok_or_else(bad)?;
    let act = |v: f32| {
        if spec.sigmoid {
            1.0 / (1.0 + (-v).exp())
        } else {
            v
        }
    };
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in values {
        let a = act(v);
        lo = lo.min(a);
        hi = hi.max(a);
    }
    let range = hi - lo;
    let mask: Vec<u8> = values
        .iter()
        .map(|&v| {
            if range.is_finite() && range > f32::EPSILON {
                ((act(v) - lo) / range * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    GrayImage::from_raw(ow as u32, oh as u32, mask).ok_or_else(bad)
}

impl Engine for OnnxEngine {
    fn name(&self) -> &str {
        self.spec.name
    }

    fn segment(&self, image: &RgbImage) -> Result<GrayImage, EngineError> {
        self.segment_timed(image).map(|(mask, _)| mask)
    }

    fn segment_timed(&self, image: &RgbImage) -> Result<(GrayImage, EngineTimings), EngineError> {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let input = preprocess(self.spec, image);
        let shape = [
            1i64,
            3,
            i64::from(self.spec.input_height),
            i64::from(self.spec.input_width),
        ];
        let tensor = Tensor::from_array((shape, input))
            .map_err(|e| EngineError::Runtime(format!("building the input tensor: {e}")))?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![tensor]).map_err(|e| {
            EngineError::Runtime(format!("{}: inference failed: {e}", self.spec.name))
        })?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| {
            EngineError::Runtime(format!("{}: output 0 is not f32: {e}", self.spec.name))
        })?;
        // The small mask is made under the lock (the output borrows the session); the resize to
        // full size, the costly part, after it, so the next request's inference can start.
        let small = output_mask(self.spec, shape, data)?;
        drop(outputs);
        drop(session);
        let inference_ms = ms(t);
        let t = Instant::now();
        let mask = resize_mask(&small, image.width(), image.height());
        let timings = EngineTimings {
            preprocess_ms,
            inference_ms,
            mask_resize_ms: ms(t),
        };
        Ok((mask, timings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_normalises_by_own_max_and_guards_black() {
        let spec = shared::models::find("u2net").unwrap();
        let img = RgbImage::from_pixel(10, 10, image::Rgb([100, 50, 0]));
        let x = preprocess(spec, &img);
        let plane = 320 * 320;
        assert_eq!(x.len(), 3 * plane);
        // 100 is the max → red = 1.0, green 0.5, blue 0.
        assert!((x[0] - (1.0 - 0.485) / 0.229).abs() < 1e-4);
        assert!((x[plane] - (0.5 - 0.456) / 0.224).abs() < 1e-4);
        assert!((x[2 * plane] - (0.0 - 0.406) / 0.225).abs() < 1e-4);
        let black = preprocess(spec, &RgbImage::new(4, 4));
        assert!((black[0] - (-0.485 / 0.229)).abs() < 1e-5);
    }

    #[test]
    fn postprocess_min_max_sigmoid_and_constant_output() {
        let mut spec = *shared::models::find("u2net").unwrap();
        let data = [0.0f32, 1.0, 2.0, 4.0];
        let m = postprocess(&spec, &[1, 1, 2, 2], &data, 2, 2).unwrap();
        assert_eq!(m.as_raw(), &[0, 64, 128, 255]);
        let flat = postprocess(&spec, &[1, 1, 2, 2], &[3.0; 4], 2, 2).unwrap();
        assert_eq!(flat.as_raw(), &[0, 0, 0, 0]);
        spec.sigmoid = true;
        let s = postprocess(&spec, &[1, 1, 1, 3], &[-10.0, 0.0, 10.0], 3, 1).unwrap();
        assert_eq!(s.as_raw(), &[0, 128, 255]);
        assert!(postprocess(&spec, &[4], &[0.0; 4], 2, 2).is_err());
        assert!(postprocess(&spec, &[1, 1, 4, 4], &[0.0; 4], 2, 2).is_err());
    }
}
