//! `remove_background`: parameters of the segmenter's engines and of Stability's synchronous
//! remove-background (docs/providers.md §1.5).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::{ParamError, ProviderImageLimits, only_image};
use crate::image_check::ImageInfo;
use crate::models;

/// Encoded format of a result image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Lossless PNG with alpha (the default: a cutout needs transparency).
    #[default]
    Png,
    /// Lossless WebP with alpha (`quality` does not apply: the encoder is lossless-only).
    Webp,
    /// Baseline JPEG: no alpha, so a cutout needs `background_color`.
    #[serde(alias = "jpg")]
    Jpeg,
}

impl OutputFormat {
    /// MIME type of the encoded bytes.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Jpeg => "image/jpeg",
        }
    }

    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Jpeg => "jpg",
        }
    }

    /// Lower-case API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Jpeg => "jpeg",
        }
    }
}

impl FromStr for OutputFormat {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "webp" => Ok(Self::Webp),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            other => Err(ParamError::invalid(
                "output_format",
                format!("'{other}' is not one of png, webp, jpeg"),
            )),
        }
    }
}

/// An sRGB colour with alpha, written as hex `#RRGGBB` or `#RRGGBBAA` (the `#` is optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    /// Red, 0–255.
    pub r: u8,
    /// Green, 0–255.
    pub g: u8,
    /// Blue, 0–255.
    pub b: u8,
    /// Alpha, 0–255 (255 = opaque; the default when only six digits are given).
    pub a: u8,
}

impl Color {
    /// The channels in RGBA order.
    pub fn to_rgba(self) -> [u8; 4] {
        [self.r, self.g, self.b, self.a]
    }
}

impl FromStr for Color {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.trim().trim_start_matches('#');
        let bad = || {
            ParamError::invalid(
                "background_color",
                format!("'{s}' is not a hex colour like #ffffff or #ffffff80"),
            )
        };
        if !(hex.len() == 6 || hex.len() == 8) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        Ok(Self {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
            a: if hex.len() == 8 { byte(6)? } else { 255 },
        })
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)?;
        if self.a != 255 {
            write!(f, "{:02x}", self.a)?;
        }
        Ok(())
    }
}

impl Serialize for Color {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Default JPEG quality, as in the asynchronous background-removal service it replaces.
pub const DEFAULT_QUALITY: u8 = 95;

/// Parameters of `remove_background`.
///
/// Ranges: `quality` 1–100 (JPEG only), `scale` 0.1–1.0 of the original size, `model` from
/// [`crate::models`]. `output_format = jpeg` needs `background_color` unless `only_mask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBackgroundParams {
    /// Engine name; see [`crate::models::known_names`].
    pub model: String,
    /// Result encoding.
    #[serde(default)]
    pub output_format: OutputFormat,
    /// JPEG quality 1–100.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Output size as a fraction of the input, 0.1–1.0.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Return the grey-level mask (alpha as luminance) instead of the cutout.
    #[serde(default)]
    pub only_mask: bool,
    /// Composite the cutout over this colour instead of leaving it transparent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_color: Option<Color>,
    /// Who removes the background: the segmenter container (default) or Stability's
    /// synchronous endpoint (docs/providers.md §1.5). Left out of JSON when default, so
    /// existing records and the segmenter's query string are unchanged.
    #[serde(default, skip_serializing_if = "RemovalProvider::is_default")]
    pub provider: RemovalProvider,
    /// When `model`'s weights are not deployed, run the best loaded general-purpose neural model
    /// instead of failing with `model_unavailable` (never `plain-background`); the job's
    /// `result.engine` names the model that ran. The compatibility routes set it, because their
    /// legacy clients name rembg models (`u2net`, `u2net_human_seg`, RMBG) that a deployment may
    /// not carry. Left out of JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub model_fallback: bool,
}

/// Engine family of `remove_background`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RemovalProvider {
    /// The segmenter container (`model` picks the engine).
    #[default]
    Segmenter,
    /// Stability `v2beta/stable-image/edit/remove-background`: png/webp only, 4,096–4,194,304
    /// pixels, no other options (§1.5).
    Stability,
}

impl RemovalProvider {
    fn is_default(&self) -> bool {
        *self == Self::Segmenter
    }
}

impl FromStr for RemovalProvider {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "segmenter" => Ok(Self::Segmenter),
            "stability" => Ok(Self::Stability),
            other => Err(ParamError::invalid(
                "provider",
                format!("'{other}' is not one of segmenter, stability"),
            )),
        }
    }
}

fn default_quality() -> u8 {
    DEFAULT_QUALITY
}

fn default_scale() -> f32 {
    1.0
}

/// The field names [`RemoveBackgroundParams::from_pairs`] accepts.
pub const REMOVE_BACKGROUND_FIELDS: &[&str] = &[
    "model",
    "output_format",
    "quality",
    "scale",
    "only_mask",
    "background_color",
    "provider",
    "model_fallback",
];

impl RemoveBackgroundParams {
    /// Defaults with the given model.
    pub fn with_model(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            output_format: OutputFormat::Png,
            quality: DEFAULT_QUALITY,
            scale: 1.0,
            only_mask: false,
            background_color: None,
            provider: RemovalProvider::Segmenter,
            model_fallback: false,
        }
    }

    /// Parses string pairs (form fields, query strings, S3 metadata). Unknown names are refused
    /// so a typo never silently falls back to a default; `default_model` fills a missing `model`.
    ///
    /// # Errors
    /// The first field that does not parse, then anything [`Self::validate`] refuses.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        default_model: &str,
    ) -> Result<Self, ParamError> {
        let mut p = Self::with_model(default_model);
        for (key, value) in pairs {
            let value = value.trim();
            match key {
                "model" => p.model = value.to_owned(),
                "output_format" => p.output_format = value.parse()?,
                "quality" => {
                    p.quality = value.parse().map_err(|_| {
                        ParamError::invalid("quality", format!("'{value}' is not an integer 1–100"))
                    })?
                }
                "scale" => {
                    p.scale = value.parse().map_err(|_| {
                        ParamError::invalid("scale", format!("'{value}' is not a number 0.1–1.0"))
                    })?
                }
                "only_mask" => p.only_mask = parse_bool("only_mask", value)?,
                "background_color" if value.is_empty() => p.background_color = None,
                "background_color" => p.background_color = Some(value.parse()?),
                "provider" => p.provider = value.parse()?,
                "model_fallback" => p.model_fallback = parse_bool("model_fallback", value)?,
                other => {
                    return Err(ParamError::invalid(
                        other,
                        format!(
                            "unknown parameter; accepted: {}",
                            REMOVE_BACKGROUND_FIELDS.join(", ")
                        ),
                    ));
                }
            }
        }
        p.validate()?;
        Ok(p)
    }

    /// The parameters as string pairs, the inverse of [`Self::from_pairs`] (used for the
    /// segmenter's query string).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("model", self.model.clone()),
            ("output_format", self.output_format.as_str().to_owned()),
            ("quality", self.quality.to_string()),
            ("scale", self.scale.to_string()),
            ("only_mask", self.only_mask.to_string()),
        ];
        if let Some(c) = self.background_color {
            pairs.push(("background_color", c.to_string()));
        }
        if self.model_fallback {
            pairs.push(("model_fallback", "true".to_owned()));
        }
        pairs
    }

    /// Checks every range and combination.
    ///
    /// # Errors
    /// `unknown_model` for a model outside the catalog; `invalid_params` otherwise.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !models::is_known(&self.model) {
            return Err(ParamError {
                field: "model".into(),
                message: format!(
                    "unknown model '{}'; known: {}",
                    self.model,
                    models::known_names().join(", ")
                ),
                code: "unknown_model",
            });
        }
        if !(1..=100).contains(&self.quality) {
            return Err(ParamError::invalid(
                "quality",
                format!("{} is outside 1–100", self.quality),
            ));
        }
        if !self.scale.is_finite() || !(0.1..=1.0).contains(&self.scale) {
            return Err(ParamError::invalid(
                "scale",
                format!("{} is outside 0.1–1.0", self.scale),
            ));
        }
        if self.provider == RemovalProvider::Stability {
            // §1.5: the endpoint takes an image and png|webp, nothing else.
            if self.output_format == OutputFormat::Jpeg {
                return Err(ParamError::invalid(
                    "output_format",
                    "provider stability returns png or webp only",
                ));
            }
            for (field, set) in [
                ("only_mask", self.only_mask),
                ("background_color", self.background_color.is_some()),
                ("scale", self.scale != 1.0),
            ] {
                if set {
                    return Err(ParamError::invalid(
                        field,
                        "is not supported with provider stability",
                    ));
                }
            }
        }
        if self.output_format == OutputFormat::Jpeg
            && !self.only_mask
            && self.background_color.is_none()
        {
            return Err(ParamError::invalid(
                "background_color",
                "output_format jpeg has no alpha channel: give a background_color (e.g. #ffffff) or use png/webp",
            ));
        }
        Ok(())
    }
}

fn parse_bool(field: &str, value: &str) -> Result<bool, ParamError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ParamError::invalid(
            field,
            format!("'{value}' is not a boolean (true/false)"),
        )),
    }
}
/// Stability remove-background's `image` limits (§1.5): sides ≥ 64 px, 4,096–4,194,304
/// pixels, body ≤ 10 MiB.
pub const REMOVE_BACKGROUND_LIMITS: ProviderImageLimits = ProviderImageLimits {
    min_side: 64,
    min_pixels: 4_096,
    max_pixels: 4_194_304,
    max_aspect: None,
    max_bytes: 10 * 1024 * 1024,
};

/// One input, `image`; with `provider = stability`, within [`REMOVE_BACKGROUND_LIMITS`].
///
/// # Errors
/// As [`super::check_inputs`].
pub(super) fn check_inputs(
    params: &RemoveBackgroundParams,
    inputs: &[(&str, ImageInfo, u64)],
) -> Result<(), crate::Error> {
    only_image("remove_background", inputs)?;
    if params.provider == RemovalProvider::Stability {
        for (_, info, bytes) in inputs {
            REMOVE_BACKGROUND_LIMITS.check(info, *bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stability_provider_takes_png_or_webp_and_nothing_else() {
        let ok = RemoveBackgroundParams::from_pairs(
            [("provider", "stability"), ("output_format", "webp")],
            "u2net",
        )
        .unwrap();
        assert_eq!(ok.provider, RemovalProvider::Stability);
        assert_eq!(
            serde_json::to_value(RemoveBackgroundParams::with_model("u2net")).unwrap()["provider"],
            serde_json::Value::Null,
            "the default stays out of JSON"
        );
        for (pairs, field) in [
            (
                vec![
                    ("provider", "stability"),
                    ("output_format", "jpeg"),
                    ("background_color", "#ffffff"),
                ],
                "output_format",
            ),
            (
                vec![("provider", "stability"), ("only_mask", "true")],
                "only_mask",
            ),
            (vec![("provider", "stability"), ("scale", "0.5")], "scale"),
            (vec![("provider", "remove.bg")], "provider"),
        ] {
            let e = RemoveBackgroundParams::from_pairs(pairs, "u2net").unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn defaults_and_round_trip_through_pairs() {
        let p = RemoveBackgroundParams::from_pairs([], "u2net").unwrap();
        assert_eq!(p, RemoveBackgroundParams::with_model("u2net"));
        let q = RemoveBackgroundParams {
            model: "plain-background".into(),
            output_format: OutputFormat::Jpeg,
            quality: 80,
            scale: 0.5,
            only_mask: false,
            background_color: Some("#10203040".parse().unwrap()),
            provider: RemovalProvider::Segmenter,
            model_fallback: true,
        };
        let pairs = q.to_pairs();
        let back = RemoveBackgroundParams::from_pairs(
            pairs.iter().map(|(k, v)| (*k, v.as_str())),
            "u2net",
        )
        .unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn refuses_out_of_range_and_unknown() {
        let err = |pairs: &[(&str, &str)]| {
            RemoveBackgroundParams::from_pairs(pairs.iter().copied(), "u2net").unwrap_err()
        };
        assert_eq!(err(&[("quality", "0")]).field, "quality");
        assert_eq!(err(&[("quality", "101")]).field, "quality");
        assert_eq!(err(&[("quality", "abc")]).field, "quality");
        assert_eq!(err(&[("scale", "0.05")]).field, "scale");
        assert_eq!(err(&[("scale", "1.5")]).field, "scale");
        assert_eq!(err(&[("scale", "NaN")]).field, "scale");
        assert_eq!(err(&[("model", "nope")]).code, "unknown_model");
        assert_eq!(err(&[("output_format", "gif")]).field, "output_format");
        assert_eq!(err(&[("output_format", "jpeg")]).field, "background_color");
        assert_eq!(
            err(&[("background_color", "#12345")]).field,
            "background_color"
        );
        assert_eq!(err(&[("only_mask", "maybe")]).field, "only_mask");
        assert_eq!(err(&[("colour", "red")]).field, "colour");
    }

    #[test]
    fn jpeg_is_fine_for_a_mask_or_with_a_background() {
        for pairs in [
            vec![("output_format", "jpg"), ("only_mask", "true")],
            vec![("output_format", "jpeg"), ("background_color", "ffffff")],
        ] {
            let p = RemoveBackgroundParams::from_pairs(pairs, "u2net").unwrap();
            assert_eq!(p.output_format, OutputFormat::Jpeg);
        }
    }

    #[test]
    fn json_uses_the_same_rules() {
        let p: RemoveBackgroundParams = serde_json::from_str(
            r##"{"model":"u2netp","output_format":"jpg","background_color":"#fff000"}"##,
        )
        .unwrap();
        assert_eq!(p.background_color.unwrap().to_rgba(), [255, 240, 0, 255]);
        assert!(
            serde_json::from_str::<RemoveBackgroundParams>(r#"{"model":"u2net","bogus":1}"#)
                .is_err()
        );
    }
}
