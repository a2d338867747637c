//! `edit`: change an image as a prompt says, with up to 9 further reference images, on fal.ai's
//! Seedream v4 edit model (docs/providers.md §2.9; images go as presigned S3 GET URLs, §2.7),
//! and the generation options `edit` and [`super::generate`] share.

use serde::{Deserialize, Serialize};

use super::{ModelIds, ModelRequest, ParamError, check_prompt};
use crate::image_check::ImageInfo;

/// Most images one fal request may take (§2.9 `image_urls`: at most 10).
pub const MAX_INPUT_IMAGES: usize = 10;
/// Most generations per request (§2.9 `num_images`: 1–6).
pub const MAX_NUM_IMAGES: u8 = 6;
/// Inputs plus outputs of one request (§2.9: "inputs + outputs ≤ 15").
pub const MAX_IMAGES_PER_REQUEST: usize = 15;
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
pub struct GenerationOptions {
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

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            image_size: None,
            num_images: 1,
            seed: None,
            enable_safety_checker: true,
        }
    }
}

impl GenerationOptions {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
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

    pub(super) fn put(&self, input: &mut serde_json::Map<String, serde_json::Value>) {
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

/// Parameters of `edit`: change `inputs.image` as the prompt says, with up to 9 further
/// reference images (`reference_1` … `reference_9`), on `fal-ai/bytedance/seedream/v4/edit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditParams {
    /// The edit instruction (required, ≤ 10,000 characters).
    pub prompt: String,
    /// Size, count, seed, safety checker.
    #[serde(flatten)]
    pub options: GenerationOptions,
}

impl EditParams {
    /// Parses and validates JSON `params`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ParamError> {
        let p: Self = super::deserialize_params(map)?;
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
    pub fn request(&self, models: &ModelIds, image_urls: Vec<String>) -> ModelRequest {
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

/// Form pairs → JSON: `strings` stay text, `image_size` goes through [`ImageSize::parse`],
/// booleans and numbers are parsed, anything else is refused.
pub(super) fn pairs_to_json<'a>(
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

/// Checks a request's image count against §2.9: at most 10 inputs, and inputs + outputs ≤ 15.
///
/// # Errors
/// `invalid_params` on `num_images`, or `invalid_input` style message on the inputs.
pub fn check_image_count(inputs: usize, options: &GenerationOptions) -> Result<(), ParamError> {
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

/// `image` and up to nine `reference_N`, within the provider's image count.
///
/// # Errors
/// As [`super::check_inputs`].
pub(super) fn check_inputs(
    params: &EditParams,
    inputs: &[(&str, ImageInfo, u64)],
) -> Result<(), crate::Error> {
    if let Some((other, _, _)) = inputs
        .iter()
        .find(|(n, _, _)| *n != "image" && !EDIT_REFERENCE_INPUTS.contains(n))
    {
        return Err(crate::Error::Invalid {
            code: "invalid_input",
            message: format!(
                "edit takes 'image' and reference_1 … reference_9; '{other}' is not one of them"
            ),
        });
    }
    if !inputs.iter().any(|(n, _, _)| *n == "image") {
        return Err(crate::Error::Invalid {
            code: "missing_input",
            message: "edit needs the image to edit".into(),
        });
    }
    check_image_count(inputs.len(), &params.options).map_err(crate::Error::from)
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
            &ModelIds::default(),
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
        let r = p.request(&ModelIds::default(), vec!["u".into()]);
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
        let options = GenerationOptions {
            num_images: 6,
            ..Default::default()
        };
        assert!(check_image_count(9, &options).is_ok());
        assert_eq!(
            check_image_count(10, &options).unwrap_err().field,
            "num_images"
        );
        assert_eq!(
            check_image_count(11, &GenerationOptions::default())
                .unwrap_err()
                .field,
            "inputs"
        );
    }
}
