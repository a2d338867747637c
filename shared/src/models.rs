//! The background-removal model catalog: every engine the segmenter knows, with the exact
//! preprocessing each ONNX model expects.
//!
//! Source of the sizes and normalisation constants: `reference/provider-contracts.md` §4.2
//! (rembg `sessions/*.py`). The API validates `model` against this catalog before any write; the
//! segmenter decides at start-up which of them it can actually serve (weights present in
//! `MODEL_DIR`).

/// ImageNet channel means (RGB), used by most of the rembg family.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Name of the built-in engine that needs no weights: background colour estimated from the
/// image border, region growing, edge refinement. Right for product shots and other photos on a
/// plain or smoothly graded background; wrong for cluttered scenes (use a neural model there).
pub const PLAIN_BACKGROUND: &str = "plain-background";

/// How one ONNX model wants its input and how its output becomes a mask.
///
/// Input tensor: `[1, 3, input_height, input_width]` float32, RGB, resized without keeping the
/// aspect ratio, divided by the image's own maximum value, then `(x - mean) / std` per channel.
/// Output: channel 0 of output 0, `[1, 1, H, W]` (any spatial size), min-max normalised to 0..1
/// after an optional sigmoid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    /// Public model name, as accepted by the API's `model` parameter.
    pub name: &'static str,
    /// ONNX file name looked up in `MODEL_DIR`.
    pub file: &'static str,
    /// Network input width in pixels.
    pub input_width: u32,
    /// Network input height in pixels.
    pub input_height: u32,
    /// Per-channel mean subtracted after scaling to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided after subtracting the mean.
    pub std: [f32; 3],
    /// Apply a sigmoid to the raw output before min-max normalisation (BiRefNet family).
    pub sigmoid: bool,
}

const fn imagenet(name: &'static str, file: &'static str, side: u32, sigmoid: bool) -> ModelSpec {
    ModelSpec {
        name,
        file,
        input_width: side,
        input_height: side,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        sigmoid,
    }
}

/// Every ONNX model of the rembg family that the segmenter can serve (§4.2). Models that need
/// prompts or return several masks (`sam`, `u2net_cloth_seg`) are deliberately absent.
pub const CATALOG: &[ModelSpec] = &[
    imagenet("u2net", "u2net.onnx", 320, false),
    imagenet("u2netp", "u2netp.onnx", 320, false),
    imagenet("u2net_human_seg", "u2net_human_seg.onnx", 320, false),
    imagenet("silueta", "silueta.onnx", 320, false),
    ModelSpec {
        name: "isnet-general-use",
        file: "isnet-general-use.onnx",
        input_width: 1024,
        input_height: 1024,
        mean: [0.5, 0.5, 0.5],
        std: [1.0, 1.0, 1.0],
        sigmoid: false,
    },
    ModelSpec {
        name: "isnet-anime",
        file: "isnet-anime.onnx",
        input_width: 1024,
        input_height: 1024,
        mean: IMAGENET_MEAN,
        std: [1.0, 1.0, 1.0],
        sigmoid: false,
    },
    imagenet("birefnet-general", "birefnet-general.onnx", 1024, true),
    imagenet(
        "birefnet-general-lite",
        "birefnet-general-lite.onnx",
        1024,
        true,
    ),
    imagenet("birefnet-portrait", "birefnet-portrait.onnx", 1024, true),
    imagenet("birefnet-dis", "birefnet-dis.onnx", 1024, true),
    imagenet("birefnet-hrsod", "birefnet-hrsod.onnx", 1024, true),
    imagenet("birefnet-cod", "birefnet-cod.onnx", 1024, true),
    imagenet("birefnet-massive", "birefnet-massive.onnx", 1024, true),
    imagenet("bria-rmbg", "bria-rmbg.onnx", 1024, false),
];

/// The catalog entry for an ONNX model name, or `None` (also for [`PLAIN_BACKGROUND`]).
pub fn find(name: &str) -> Option<&'static ModelSpec> {
    CATALOG.iter().find(|m| m.name == name)
}

/// Whether `name` is any engine the segmenter knows: a catalog model or [`PLAIN_BACKGROUND`].
pub fn is_known(name: &str) -> bool {
    name == PLAIN_BACKGROUND || find(name).is_some()
}

/// All known engine names, the built-in one first; for error messages and `GET /models`.
pub fn known_names() -> Vec<&'static str> {
    std::iter::once(PLAIN_BACKGROUND)
        .chain(CATALOG.iter().map(|m| m.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_the_rembg_contract() {
        let u2net = find("u2net").unwrap();
        assert_eq!((u2net.input_width, u2net.input_height), (320, 320));
        assert_eq!(u2net.mean, IMAGENET_MEAN);
        let isnet = find("isnet-general-use").unwrap();
        assert_eq!((isnet.mean, isnet.std), ([0.5; 3], [1.0; 3]));
        assert!(find("birefnet-general").unwrap().sigmoid);
        assert!(!find("u2netp").unwrap().sigmoid);
    }

    #[test]
    fn names_are_unique_and_known() {
        let names = known_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(is_known(PLAIN_BACKGROUND));
        assert!(is_known("bria-rmbg"));
        assert!(!is_known("u2net_cloth_seg"));
        assert!(!is_known("U2NET"));
    }
}
