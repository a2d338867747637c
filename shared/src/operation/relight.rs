//! `replace_background_relight`: Stability's v2beta "Replace Background and Relight", field by
//! field (docs/providers.md §1.3: ranges, defaults, enums; §1.1: seed range, 10 MiB body limit).

use serde::{Deserialize, Serialize};

use super::{MAX_PROMPT_CHARS, ParamError, ProviderImageLimits};
use crate::image_check::ImageInfo;

/// Largest seed Stability accepts (§1.1); 0 means random.
pub const MAX_SEED: u64 = 4_294_967_294;

/// Direction of the added light (§1.3 `light_source_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LightDirection {
    /// From the left.
    Left,
    /// From the right.
    Right,
    /// From above.
    Above,
    /// From below.
    Below,
}

impl LightDirection {
    /// The provider's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Above => "above",
            Self::Below => "below",
        }
    }
}

/// Result encoding of a Stability generation (§1.3 `output_format`: jpeg | png | webp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GenFormat {
    /// `image/png` (the provider's default).
    #[default]
    Png,
    /// `image/jpeg`.
    Jpeg,
    /// `image/webp`.
    Webp,
}

impl GenFormat {
    /// The provider's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }

    /// File extension of results in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    /// MIME type of results in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }
}

fn default_preserve() -> f64 {
    0.6
}
fn default_depth() -> f64 {
    0.5
}
fn default_strength() -> f64 {
    0.3
}

/// Parameters of `replace_background_relight` (docs/providers.md §1.3).
///
/// The subject image is the job's `image` input; `background_reference` and `light_reference`
/// are optional further inputs. Ranges: the three numbers 0–1, `seed` 0–4294967294
/// (0 = random), prompts ≤ 10000 characters. The rules that involve inputs are in
/// [`RelightParams::check_with_inputs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelightParams {
    /// What the new background (or just its lighting) looks like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_prompt: Option<String>,
    /// Describes the subject so the background does not bleed into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreground_prompt: Option<String>,
    /// What to keep out of the picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// 0–1, default 0.6: 1.0 overlays the original subject pixel-exact.
    #[serde(default = "default_preserve")]
    pub preserve_original_subject: f64,
    /// 0–1, default 0.5: how closely the new background follows the original's depth.
    #[serde(default = "default_depth")]
    pub original_background_depth: f64,
    /// Keep the original background but relight it (sent as the string `"true"`/`"false"`).
    #[serde(default)]
    pub keep_original_background: bool,
    /// Where the light comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_source_direction: Option<LightDirection>,
    /// 0–1; only with `light_source_direction` or a `light_reference`. `None` = the
    /// provider's default 0.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_source_strength: Option<f64>,
    /// 0–4294967294; 0 or absent = random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Result encoding, default png.
    #[serde(default)]
    pub output_format: GenFormat,
}

/// Field names [`RelightParams::from_pairs`] accepts.
pub const RELIGHT_FIELDS: &[&str] = &[
    "background_prompt",
    "foreground_prompt",
    "negative_prompt",
    "preserve_original_subject",
    "original_background_depth",
    "keep_original_background",
    "light_source_direction",
    "light_source_strength",
    "seed",
    "output_format",
];

impl RelightParams {
    /// The defaults with a background prompt.
    pub fn with_prompt(prompt: impl Into<String>) -> Self {
        Self {
            background_prompt: Some(prompt.into()),
            foreground_prompt: None,
            negative_prompt: None,
            preserve_original_subject: default_preserve(),
            original_background_depth: default_depth(),
            keep_original_background: false,
            light_source_direction: None,
            light_source_strength: None,
            seed: None,
            output_format: GenFormat::Png,
        }
    }

    /// Parses form fields (multipart API). Unknown names are refused.
    ///
    /// # Errors
    /// The first field that does not parse, then anything [`Self::validate`] refuses.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ParamError> {
        let mut map = serde_json::Map::new();
        for (key, value) in pairs {
            let v = match key {
                "preserve_original_subject"
                | "original_background_depth"
                | "light_source_strength" => {
                    serde_json::Value::from(value.trim().parse::<f64>().map_err(|_| {
                        ParamError::invalid(key, format!("'{value}' is not a number 0–1"))
                    })?)
                }
                "seed" => serde_json::Value::from(value.trim().parse::<u64>().map_err(|_| {
                    ParamError::invalid(key, format!("'{value}' is not an integer 0–{MAX_SEED}"))
                })?),
                "keep_original_background" => match value.trim() {
                    "true" | "1" => serde_json::Value::Bool(true),
                    "false" | "0" => serde_json::Value::Bool(false),
                    _ => {
                        return Err(ParamError::invalid(key, "must be true or false"));
                    }
                },
                k if RELIGHT_FIELDS.contains(&k) => serde_json::Value::from(value),
                other => {
                    return Err(ParamError::invalid(
                        other,
                        format!("unknown field; accepted: {}", RELIGHT_FIELDS.join(", ")),
                    ));
                }
            };
            map.insert(key.to_owned(), v);
        }
        Self::from_json(map)
    }

    /// Parses and validates JSON `params`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ParamError> {
        let p: Self = super::deserialize_params(map)?;
        p.validate()?;
        Ok(p)
    }

    /// Checks the contract's ranges (§1.3).
    ///
    /// # Errors
    /// `invalid_params` naming the first offending field.
    pub fn validate(&self) -> Result<(), ParamError> {
        for (field, text) in [
            ("background_prompt", &self.background_prompt),
            ("foreground_prompt", &self.foreground_prompt),
            ("negative_prompt", &self.negative_prompt),
        ] {
            if text
                .as_ref()
                .is_some_and(|t| t.chars().count() > MAX_PROMPT_CHARS)
            {
                return Err(ParamError::invalid(
                    field,
                    format!("is longer than {MAX_PROMPT_CHARS} characters"),
                ));
            }
        }
        for (field, v) in [
            (
                "preserve_original_subject",
                Some(self.preserve_original_subject),
            ),
            (
                "original_background_depth",
                Some(self.original_background_depth),
            ),
            ("light_source_strength", self.light_source_strength),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(ParamError::invalid(field, format!("{v} is not within 0–1")));
            }
        }
        if self.seed.is_some_and(|s| s > MAX_SEED) {
            return Err(ParamError::invalid(
                "seed",
                format!("must be within 0–{MAX_SEED}"),
            ));
        }
        Ok(())
    }

    /// The rules that join parameters and inputs (§1.3): `background_prompt` or a
    /// `background_reference` is required; `light_source_strength` only goes with a
    /// `light_reference` or a `light_source_direction`.
    ///
    /// # Errors
    /// `invalid_params` naming the field.
    pub fn check_with_inputs(
        &self,
        has_background_reference: bool,
        has_light_reference: bool,
    ) -> Result<(), ParamError> {
        let has_prompt = self
            .background_prompt
            .as_ref()
            .is_some_and(|p| !p.trim().is_empty());
        if !has_prompt && !has_background_reference {
            return Err(ParamError::invalid(
                "background_prompt",
                "send background_prompt or a background_reference image (at least one)",
            ));
        }
        if self.light_source_strength.is_some()
            && self.light_source_direction.is_none()
            && !has_light_reference
        {
            return Err(ParamError::invalid(
                "light_source_strength",
                "is only valid together with light_reference or light_source_direction",
            ));
        }
        Ok(())
    }

    /// The multipart text fields sent to the provider (the file parts are added by the client).
    /// Numbers are always sent so the provider's defaults never drift from ours;
    /// `light_source_strength` only when light is steered (`has_light_reference` or a direction).
    pub fn to_form_fields(&self, has_light_reference: bool) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(p) = &self.background_prompt {
            out.push(("background_prompt", p.clone()));
        }
        if let Some(p) = &self.foreground_prompt {
            out.push(("foreground_prompt", p.clone()));
        }
        if let Some(p) = &self.negative_prompt {
            out.push(("negative_prompt", p.clone()));
        }
        out.push((
            "preserve_original_subject",
            self.preserve_original_subject.to_string(),
        ));
        out.push((
            "original_background_depth",
            self.original_background_depth.to_string(),
        ));
        out.push((
            "keep_original_background",
            self.keep_original_background.to_string(),
        ));
        if let Some(d) = self.light_source_direction {
            out.push(("light_source_direction", d.as_str().to_owned()));
        }
        if self.light_source_direction.is_some() || has_light_reference {
            out.push((
                "light_source_strength",
                self.light_source_strength
                    .unwrap_or_else(default_strength)
                    .to_string(),
            ));
        }
        if let Some(seed) = self.seed {
            out.push(("seed", seed.to_string()));
        }
        out.push(("output_format", self.output_format.as_str().to_owned()));
        out
    }
}

/// Relight's `subject_image` limits: sides ≥ 64 px, 4,096–9,437,184 pixels, aspect ratio
/// 1:2.5–2.5:1, body ≤ 10 MiB (§1.1, §1.3).
pub const RELIGHT_LIMITS: ProviderImageLimits = ProviderImageLimits {
    min_side: 64,
    min_pixels: 4_096,
    max_pixels: 9_437_184,
    max_aspect: Some(2.5),
    max_bytes: 10 * 1024 * 1024,
};

/// Stability's reference-image limits (`background_reference`, `light_reference`, §1.3):
/// sides ≥ 64 px, 4,096–9,437,184 pixels; no aspect-ratio limit is documented for them.
pub const REFERENCE_LIMITS: ProviderImageLimits = ProviderImageLimits {
    max_aspect: None,
    ..RELIGHT_LIMITS
};

/// Names of the extra inputs `replace_background_relight` takes (§1.3).
pub const RELIGHT_REFERENCE_INPUTS: &[&str] = &["background_reference", "light_reference"];

/// Checks the subject image and the references against Stability's limits, their sum against
/// the 10 MiB body limit (§1.1), and the parameters against the inputs present.
///
/// # Errors
/// As [`super::check_inputs`].
pub(super) fn check_inputs(
    params: &RelightParams,
    inputs: &[(&str, ImageInfo, u64)],
) -> Result<(), crate::Error> {
    let mut total = 0;
    for (name, info, bytes) in inputs {
        let limits = match *name {
            "image" => RELIGHT_LIMITS,
            n if RELIGHT_REFERENCE_INPUTS.contains(&n) => REFERENCE_LIMITS,
            other => {
                return Err(crate::Error::Invalid {
                    code: "invalid_input",
                    message: format!(
                        "replace_background_relight takes no input '{other}' (accepted: subject_image, {})",
                        RELIGHT_REFERENCE_INPUTS.join(", ")
                    ),
                });
            }
        };
        let shown = if *name == "image" {
            "subject_image"
        } else {
            name
        };
        limits
            .check(info, *bytes)
            .map_err(|e| crate::Error::Invalid {
                code: "invalid_image",
                message: format!("{shown}: {e}"),
            })?;
        total += bytes;
    }
    // The whole multipart body the provider receives must fit in 10 MiB (§1.1).
    if total > RELIGHT_LIMITS.max_bytes {
        return Err(crate::Error::Invalid {
            code: "invalid_image",
            message: format!(
                "the provider accepts request bodies up to {} bytes; these images add up to {total}",
                RELIGHT_LIMITS.max_bytes
            ),
        });
    }
    let has = |n: &str| inputs.iter().any(|(name, _, _)| *name == n);
    params
        .check_with_inputs(has("background_reference"), has("light_reference"))
        .map_err(crate::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let p = RelightParams::from_json(
            serde_json::json!({"background_prompt": "a beach"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(p, RelightParams::with_prompt("a beach"));
        let fields = p.to_form_fields(false);
        assert!(fields.contains(&("preserve_original_subject", "0.6".into())));
        assert!(fields.contains(&("original_background_depth", "0.5".into())));
        assert!(fields.contains(&("keep_original_background", "false".into())));
        assert!(fields.contains(&("output_format", "png".into())));
        assert!(!fields.iter().any(|(k, _)| *k == "light_source_strength"));
    }

    #[test]
    fn pairs_parse_and_strength_goes_with_direction() {
        let p = RelightParams::from_pairs([
            ("background_prompt", "sunset"),
            ("light_source_direction", "left"),
            ("keep_original_background", "true"),
            ("seed", "4294967294"),
            ("output_format", "webp"),
        ])
        .unwrap();
        let f = p.to_form_fields(false);
        assert!(f.contains(&("light_source_strength", "0.3".into())));
        assert!(f.contains(&("keep_original_background", "true".into())));
        assert!(f.contains(&("seed", "4294967294".into())));
    }

    #[test]
    fn refuses_out_of_range() {
        for (pairs, field) in [
            (
                vec![
                    ("background_prompt", "x"),
                    ("preserve_original_subject", "1.5"),
                ],
                "preserve_original_subject",
            ),
            (
                vec![("background_prompt", "x"), ("seed", "4294967295")],
                "seed",
            ),
            (
                vec![("background_prompt", "x"), ("colour", "red")],
                "colour",
            ),
        ] {
            let e = RelightParams::from_pairs(pairs).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let e = RelightParams::from_pairs([
            ("background_prompt", "x"),
            ("light_source_direction", "behind"),
        ])
        .unwrap_err();
        assert!(e.message.contains("behind"), "{e}");
    }

    #[test]
    fn inputs_and_params_fit_together() {
        let no_prompt = RelightParams {
            background_prompt: None,
            ..RelightParams::with_prompt("")
        };
        let e = no_prompt.check_with_inputs(false, false).unwrap_err();
        assert_eq!(e.field, "background_prompt");
        assert!(no_prompt.check_with_inputs(true, false).is_ok());
        let strength = RelightParams {
            light_source_strength: Some(0.5),
            ..RelightParams::with_prompt("x")
        };
        let e = strength.check_with_inputs(false, false).unwrap_err();
        assert_eq!(e.field, "light_source_strength");
        assert!(strength.check_with_inputs(false, true).is_ok());
        assert!(
            strength
                .to_form_fields(true)
                .contains(&("light_source_strength", "0.5".into()))
        );
    }
}
