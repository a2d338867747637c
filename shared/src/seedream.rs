//! Parameters of the operations that run on fal.ai's Seedream v4 models — `edit` and
//! `generate` — and the model inputs built from them. Pure: no I/O.
//!
//! Contract: `docs/providers.md` §2.9 (`fal-ai/bytedance/seedream/v4/edit` input and output),
//! §2.10 (`…/text-to-image`), §2.7 (images are passed as URLs: presigned S3 GET URLs here).

use serde::{Deserialize, Serialize};

use crate::params::ParamError;

/// Most images one fal request may take (§2.9 `image_urls`: at most 10).
pub const MAX_INPUT_IMAGES: usize = 10;
/// Most generations per request (§2.9 `num_images`: 1–6).
pub const MAX_NUM_IMAGES: u8 = 6;
/// Inputs plus outputs of one request (§2.9: "inputs + outputs ≤ 15").
pub const MAX_IMAGES_PER_REQUEST: usize = 15;
/// Longest prompt accepted (our limit: the contract gives none; Stability's is the same).
pub const MAX_PROMPT_CHARS: usize = 10_000;
/// Largest custom side, px (§2.9, a third-party claim: custom sizes are 1024–4096; smaller
/// totals than 921,600 px are scaled up by the provider, so only the upper bound is refused
/// here).
pub const MAX_SIDE: u32 = 4096;

/// Names of the further reference images `edit` takes besides `image` (at most 9, §2.9).
pub const EDIT_REFERENCE_INPUTS: &[&str] = &[
    "reference_1",
    "reference_2",
    "reference_3",
    "reference_4",
    "reference_5",
    "reference_6",
    "reference_7",
    "reference_8",
    "reference_9",
];

/// Output size (§2.9 `image_size`): a preset name or explicit pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSize {
    /// One of the provider's presets.
    Preset(SizePreset),
    /// Explicit size, each side 1–4096 px.
    Custom {
        /// Width, px.
        width: u32,
        /// Height, px.
        height: u32,
    },
}

/// The provider's size presets (§2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum SizePreset {
    SquareHd,
    Square,
    #[serde(rename = "portrait_4_3")]
    Portrait4x3,
    #[serde(rename = "portrait_16_9")]
    Portrait16x9,
    #[serde(rename = "landscape_4_3")]
    Landscape4x3,
    #[serde(rename = "landscape_16_9")]
    Landscape16x9,
    Auto,
    #[serde(rename = "auto_2K")]
    Auto2k,
    #[serde(rename = "auto_4K")]
    Auto4k,
}

impl ImageSize {
    /// Parses a form value: a preset name, or `WIDTHxHEIGHT`.
    ///
    /// # Errors
    /// `invalid_params` on `image_size`.
    pub fn parse(value: &str) -> Result<Self, ParamError> {
        let v = value.trim();
        if let Some((w, h)) = v.split_once(['x', 'X']) {
            let px = |s: &str| s.trim().parse::<u32>().ok();
            if let (Some(width), Some(height)) = (px(w), px(h)) {
                let size = Self::Custom { width, height };
                size.validate()?;
                return Ok(size);
            }
        }
        serde_json::from_value(serde_json::Value::String(v.to_owned())).map_err(|_| {
            ParamError::invalid(
                "image_size",
                format!(
                    "'{v}' is neither WIDTHxHEIGHT nor a preset (square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9, auto, auto_2K, auto_4K)"
                ),
            )
        })
    }

    fn validate(&self) -> Result<(), ParamError> {
        if let Self::Custom { width, height } = *self
            && !((1..=MAX_SIDE).contains(&width) && (1..=MAX_SIDE).contains(&height))
        {
            return Err(ParamError::invalid(
                "image_size",
                format!("{width}×{height}: each side must be 1–{MAX_SIDE} px"),
            ));
        }
        Ok(())
    }
}

fn default_num_images() -> u8 {
    1
}
fn default_true() -> bool {
    true
}

/// What the Seedream request shares between `edit` and `generate` (§2.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedreamOptions {
    /// Output size; absent = the provider's default (2048×2048).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<ImageSize>,
    /// Separate generations, 1–6 (default 1); each is copied to S3.
    #[serde(default = "default_num_images")]
    pub num_images: u8,
    /// Fixed seed for repeatable output; absent = random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The provider's safety checker (default on).
    #[serde(default = "default_true")]
    pub enable_safety_checker: bool,
}

impl Default for SeedreamOptions {
    fn default() -> Self {
        Self {
            image_size: None,
            num_images: 1,
            seed: None,
            enable_safety_checker: true,
        }
    }
}

impl SeedreamOptions {
    fn validate(&self) -> Result<(), ParamError> {
        if !(1..=MAX_NUM_IMAGES).contains(&self.num_images) {
            return Err(ParamError::invalid(
                "num_images",
                format!("{} is not within 1–{MAX_NUM_IMAGES}", self.num_images),
            ));
        }
        if let Some(size) = &self.image_size {
            size.validate()?;
        }
        Ok(())
    }

    fn put(&self, input: &mut serde_json::Map<String, serde_json::Value>) {
        if let Some(size) = &self.image_size {
            input.insert("image_size".into(), serde_json::json!(size));
        }
        input.insert("num_images".into(), self.num_images.into());
        if let Some(seed) = self.seed {
            input.insert("seed".into(), seed.into());
        }
        input.insert(
            "enable_safety_checker".into(),
            self.enable_safety_checker.into(),
        );
    }
}

fn check_prompt(field: &str, prompt: &str) -> Result<(), ParamError> {
    if prompt.trim().is_empty() {
        return Err(ParamError::invalid(field, "is required"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ParamError::invalid(
            field,
            format!("is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Parameters of `edit`: change `inputs.image` as the prompt says, with up to 9 further
/// reference images (`reference_1` … `reference_9`), on `fal-ai/bytedance/seedream/v4/edit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditParams {
    /// The edit instruction (required, ≤ 10,000 characters).
    pub prompt: String,
    /// Size, count, seed, safety checker.
    #[serde(flatten)]
    pub options: SeedreamOptions,
}

/// How `generate` makes an illustration (seed 001's three endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerateMode {
    /// From the prompt alone, or with `inputs.image` as an optional reference.
    Text,
    /// The prompt illustrated with the owner's avatar (`inputs.image`) as identity reference.
    Memory,
    /// A professional portrait from the owner's photo (`inputs.image`); the prompt is optional.
    Subject,
}

impl GenerateMode {
    /// Whether `inputs.image` must be present.
    pub fn needs_image(self) -> bool {
        !matches!(self, Self::Text)
    }
}

/// Parameters of `generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateParams {
    /// `text`, `memory` or `subject`.
    pub mode: GenerateMode,
    /// What to draw: required for `text` and `memory`, an optional addition for `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Accepted for seed 001 compatibility (1–150) and recorded, but not sent: Seedream has no
    /// step count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<u32>,
    /// Size, count, seed, safety checker.
    #[serde(flatten)]
    pub options: SeedreamOptions,
}

/// The instruction behind `subject` mode; the caller's prompt, if any, is appended.
pub const SUBJECT_PROMPT: &str = "A professional portrait illustration of the person in the reference image: head and shoulders, neutral studio background, soft even lighting, keep the person's identity and features";
/// The instruction behind `memory` mode, before the caller's prompt.
pub const MEMORY_PROMPT: &str =
    "An illustration featuring the person in the reference image, keeping their identity:";

/// Which fal model ids a deployment uses (configuration, not code: `FAL_EDIT_MODEL`,
/// `FAL_TEXT_TO_IMAGE_MODEL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedreamModels {
    /// Image(s) + prompt → image(s). Default `fal-ai/bytedance/seedream/v4/edit`.
    pub edit: String,
    /// Prompt → image(s). Default `fal-ai/bytedance/seedream/v4/text-to-image`.
    pub text_to_image: String,
}

impl Default for SeedreamModels {
    fn default() -> Self {
        Self {
            edit: "fal-ai/bytedance/seedream/v4/edit".into(),
            text_to_image: "fal-ai/bytedance/seedream/v4/text-to-image".into(),
        }
    }
}

/// A model request: which model, and its JSON input.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// fal model id, e.g. `fal-ai/bytedance/seedream/v4/edit`.
    pub model: String,
    /// The model's input object.
    pub input: serde_json::Value,
}

impl EditParams {
    /// Parses and validates JSON `params`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ParamError> {
        let p: Self = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ParamError::invalid("params", e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Parses form fields (multipart API): `prompt`, `image_size`, `num_images`, `seed`,
    /// `enable_safety_checker`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ParamError> {
        Self::from_json(pairs_to_json(pairs, &["prompt"])?)
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// `invalid_params` naming the first offending field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check_prompt("prompt", &self.prompt)?;
        self.options.validate()
    }

    /// The request to `models.edit` with the images as URLs (the job image first).
    pub fn request(&self, models: &SeedreamModels, image_urls: Vec<String>) -> ModelRequest {
        let mut input = serde_json::Map::new();
        input.insert("prompt".into(), self.prompt.clone().into());
        input.insert("image_urls".into(), image_urls.into());
        self.options.put(&mut input);
        ModelRequest {
            model: models.edit.clone(),
            input: input.into(),
        }
    }
}

impl GenerateParams {
    /// Parses and validates JSON `params`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ParamError> {
        let p: Self = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ParamError::invalid("params", e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Parses form fields (multipart API): `mode`, `prompt`, `num_inference_steps` and the
    /// shared options.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ParamError> {
        Self::from_json(pairs_to_json(pairs, &["prompt", "mode"])?)
    }

    /// Checks ranges and that `text`/`memory` have a prompt.
    ///
    /// # Errors
    /// `invalid_params` naming the first offending field.
    pub fn validate(&self) -> Result<(), ParamError> {
        match (&self.prompt, self.mode) {
            (Some(p), _) => check_prompt("prompt", p)?,
            (None, GenerateMode::Subject) => {}
            (None, mode) => {
                return Err(ParamError::invalid(
                    "prompt",
                    format!("is required in mode {}", mode_name(mode)),
                ));
            }
        }
        if let Some(steps) = self.num_inference_steps
            && !(1..=150).contains(&steps)
        {
            return Err(ParamError::invalid(
                "num_inference_steps",
                format!("{steps} is not within 1–150"),
            ));
        }
        self.options.validate()
    }

    /// The prompt sent to the provider (mode instruction + the caller's words).
    pub fn provider_prompt(&self) -> String {
        let own = self.prompt.as_deref().map(str::trim).unwrap_or("");
        match self.mode {
            GenerateMode::Text => own.to_owned(),
            GenerateMode::Memory => format!("{MEMORY_PROMPT} {own}"),
            GenerateMode::Subject if own.is_empty() => SUBJECT_PROMPT.to_owned(),
            GenerateMode::Subject => format!("{SUBJECT_PROMPT}. {own}"),
        }
    }

    /// The request: text-to-image without a reference, the edit model with one.
    pub fn request(&self, models: &SeedreamModels, image_urls: Vec<String>) -> ModelRequest {
        let mut input = serde_json::Map::new();
        input.insert("prompt".into(), self.provider_prompt().into());
        let model = if image_urls.is_empty() {
            models.text_to_image.clone()
        } else {
            input.insert("image_urls".into(), image_urls.into());
            models.edit.clone()
        };
        self.options.put(&mut input);
        ModelRequest {
            model,
            input: input.into(),
        }
    }
}

fn mode_name(mode: GenerateMode) -> &'static str {
    match mode {
        GenerateMode::Text => "text",
        GenerateMode::Memory => "memory",
        GenerateMode::Subject => "subject",
    }
}

/// Form pairs → JSON: `strings` stay text, `image_size` goes through [`ImageSize::parse`],
/// booleans and numbers are parsed, anything else is refused.
fn pairs_to_json<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    strings: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, ParamError> {
    let mut map = serde_json::Map::new();
    for (key, value) in pairs {
        let v = match key {
            k if strings.contains(&k) => serde_json::Value::from(value),
            "image_size" => serde_json::json!(ImageSize::parse(value)?),
            "enable_safety_checker" => match value.trim() {
                "true" | "1" => serde_json::Value::Bool(true),
                "false" | "0" => serde_json::Value::Bool(false),
                _ => return Err(ParamError::invalid(key, "must be true or false")),
            },
            "num_images" | "seed" | "num_inference_steps" => {
                serde_json::Value::from(value.trim().parse::<u64>().map_err(|_| {
                    ParamError::invalid(key, format!("'{value}' is not a whole number"))
                })?)
            }
            other => {
                return Err(ParamError::invalid(
                    other,
                    "unknown field; accepted: prompt, mode, image_size, num_images, seed, enable_safety_checker, num_inference_steps",
                ));
            }
        };
        map.insert(key.to_owned(), v);
    }
    Ok(map)
}

/// One output image (§2.9 `Image`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutputImage {
    /// Where the provider serves it (fal CDN; expires, so it is copied to S3 at once).
    pub url: String,
    /// Its MIME type, when given.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The model's output (§2.9): `images` (required) and `seed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SeedreamOutput {
    /// The generated images, in order.
    pub images: Vec<OutputImage>,
    /// The seed used.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Checks a request's image count against §2.9: at most 10 inputs, and inputs + outputs ≤ 15.
///
/// # Errors
/// `invalid_params` on `num_images`, or `invalid_input` style message on the inputs.
pub fn check_image_count(inputs: usize, options: &SeedreamOptions) -> Result<(), ParamError> {
    if inputs > MAX_INPUT_IMAGES {
        return Err(ParamError::invalid(
            "inputs",
            format!("the provider takes at most {MAX_INPUT_IMAGES} images; this job has {inputs}"),
        ));
    }
    if inputs + usize::from(options.num_images) > MAX_IMAGES_PER_REQUEST {
        return Err(ParamError::invalid(
            "num_images",
            format!(
                "inputs + outputs must be ≤ {MAX_IMAGES_PER_REQUEST}; {inputs} inputs leave room for {}",
                MAX_IMAGES_PER_REQUEST - inputs
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edit_request_follows_the_contract() {
        let p = EditParams::from_pairs([
            ("prompt", "make it night"),
            ("image_size", "1280x720"),
            ("num_images", "2"),
            ("seed", "42"),
            ("enable_safety_checker", "false"),
        ])
        .unwrap();
        let r = p.request(
            &SeedreamModels::default(),
            vec!["https://a/1".into(), "https://a/2".into()],
        );
        assert_eq!(r.model, "fal-ai/bytedance/seedream/v4/edit");
        assert_eq!(
            r.input,
            json!({
                "prompt": "make it night",
                "image_urls": ["https://a/1", "https://a/2"],
                "image_size": {"width": 1280, "height": 720},
                "num_images": 2,
                "seed": 42,
                "enable_safety_checker": false
            })
        );
    }

    #[test]
    fn presets_and_defaults() {
        let p = EditParams::from_json(
            json!({"prompt": "x", "image_size": "auto_2K"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(
            p.options.image_size,
            Some(ImageSize::Preset(SizePreset::Auto2k))
        );
        assert_eq!(p.options.num_images, 1);
        assert!(p.options.enable_safety_checker);
        let r = p.request(&SeedreamModels::default(), vec!["u".into()]);
        assert_eq!(r.input["image_size"], json!("auto_2K"));
        assert_eq!(
            ImageSize::parse("portrait_16_9").unwrap(),
            ImageSize::Preset(SizePreset::Portrait16x9)
        );
    }

    #[test]
    fn refuses_out_of_range() {
        for (pairs, field) in [
            (vec![("prompt", " ")], "prompt"),
            (vec![("prompt", "x"), ("num_images", "7")], "num_images"),
            (vec![("prompt", "x"), ("num_images", "0")], "num_images"),
            (
                vec![("prompt", "x"), ("image_size", "5000x100")],
                "image_size",
            ),
            (vec![("prompt", "x"), ("image_size", "huge")], "image_size"),
            (vec![("prompt", "x"), ("strength", "1")], "strength"),
        ] {
            let e = EditParams::from_pairs(pairs).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let options = SeedreamOptions {
            num_images: 6,
            ..Default::default()
        };
        assert!(check_image_count(9, &options).is_ok());
        assert_eq!(
            check_image_count(10, &options).unwrap_err().field,
            "num_images"
        );
        assert_eq!(
            check_image_count(11, &SeedreamOptions::default())
                .unwrap_err()
                .field,
            "inputs"
        );
    }

    #[test]
    fn generate_modes_pick_model_and_prompt() {
        let models = SeedreamModels::default();
        let text = GenerateParams::from_pairs([("mode", "text"), ("prompt", "a fox")]).unwrap();
        let r = text.request(&models, vec![]);
        assert_eq!(r.model, models.text_to_image);
        assert_eq!(r.input["prompt"], json!("a fox"));
        assert!(r.input.get("image_urls").is_none());
        let with_ref = text.request(&models, vec!["u".into()]);
        assert_eq!(with_ref.model, models.edit);

        let subject = GenerateParams::from_pairs([("mode", "subject")]).unwrap();
        assert_eq!(subject.provider_prompt(), SUBJECT_PROMPT);
        let memory =
            GenerateParams::from_pairs([("mode", "memory"), ("prompt", "at the beach")]).unwrap();
        assert!(memory.provider_prompt().ends_with("at the beach"));
        assert!(memory.mode.needs_image());

        let e = GenerateParams::from_pairs([("mode", "memory")]).unwrap_err();
        assert_eq!(e.field, "prompt");
        let e = GenerateParams::from_pairs([
            ("mode", "text"),
            ("prompt", "x"),
            ("num_inference_steps", "500"),
        ])
        .unwrap_err();
        assert_eq!(e.field, "num_inference_steps");
    }

    #[test]
    fn output_decodes() {
        let out: SeedreamOutput = serde_json::from_value(json!({
            "images": [{"url": "https://v3.fal.media/files/a.png", "content_type": "image/png",
                        "file_size": 1824075, "width": 1024, "height": 1024}],
            "seed": 7
        }))
        .unwrap();
        assert_eq!(out.images.len(), 1);
        assert_eq!(out.seed, Some(7));
    }
}
