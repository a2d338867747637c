//! `generate`: an illustration from a prompt (fal.ai's Seedream v4 text-to-image), or of the
//! person in a reference image (the edit model), in the three modes of the illustration service
//! it replaces (docs/providers.md §2.9, §2.10).

use serde::{Deserialize, Serialize};

use super::edit::{GenerationOptions, check_image_count, pairs_to_json};
use super::{ModelIds, ModelRequest, ParamError, check_prompt};
use crate::image_check::ImageInfo;

/// How `generate` makes an illustration (the three endpoints of the illustration service it replaces).
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
    /// Accepted for the illustration service's clients (1–150) and recorded, but not sent: Seedream has no
    /// step count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<u32>,
    /// Size, count, seed, safety checker.
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// The instruction behind `subject` mode; the caller's prompt, if any, is appended.
pub const SUBJECT_PROMPT: &str = "A professional portrait illustration of the person in the reference image: head and shoulders, neutral studio background, soft even lighting, keep the person's identity and features";
/// The instruction behind `memory` mode, before the caller's prompt.
pub const MEMORY_PROMPT: &str =
    "An illustration featuring the person in the reference image, keeping their identity:";

impl GenerateParams {
    /// Parses and validates JSON `params`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ParamError> {
        let p: Self = super::deserialize_params(map)?;
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
    pub fn request(&self, models: &ModelIds, image_urls: Vec<String>) -> ModelRequest {
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

/// At most one input, `image`, which modes `memory` and `subject` need.
///
/// # Errors
/// As [`super::check_inputs`].
pub(super) fn check_inputs(
    params: &GenerateParams,
    inputs: &[(&str, ImageInfo, u64)],
) -> Result<(), crate::Error> {
    if let Some((other, _, _)) = inputs.iter().find(|(n, _, _)| *n != "image") {
        return Err(crate::Error::Invalid {
            code: "invalid_input",
            message: format!(
                "generate takes one reference image; '{other}' is not an input it accepts"
            ),
        });
    }
    if params.mode.needs_image() && inputs.is_empty() {
        return Err(crate::Error::Invalid {
            code: "missing_input",
            message: "generate in modes memory and subject needs the person's image (the avatar or the photo)".into(),
        });
    }
    check_image_count(inputs.len(), &params.options).map_err(crate::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generate_modes_pick_model_and_prompt() {
        let models = ModelIds::default();
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
}
