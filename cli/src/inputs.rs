//! Which files a command reads and where their outputs go.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Extensions taken from a folder (case-insensitive): the formats the API accepts.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

/// Expands the command line's inputs, in order and without repeats: a file is itself; a folder
/// is its JPEG/PNG/WebP files (not recursive, hidden files skipped, sorted by name); an argument
/// with `*`, `?` or `[` that is not an existing path is a glob pattern (for shells that pass
/// it quoted), of which the files it matches are taken.
///
/// # Errors
/// [`CliError::Usage`] for a missing path, a pattern that matches nothing, or no inputs at all;
/// [`CliError::Io`] when a folder cannot be read.
pub fn expand(args: &[String]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if seen.insert(p.clone()) {
            out.push(p);
        }
    };
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            let mut found = Vec::new();
            let entries = std::fs::read_dir(path).map_err(|source| CliError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| CliError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let p = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && p.is_file() && is_image_name(&p) {
                    found.push(p);
                }
            }
            found.sort();
            for p in found {
                push(p, &mut out);
            }
        } else if path.is_file() {
            push(path.to_path_buf(), &mut out);
        } else if arg.contains(['*', '?', '[']) {
            let matches = glob::glob(arg)
                .map_err(|e| CliError::Usage(format!("'{arg}' is not a valid pattern: {e}")))?;
            let mut any = false;
            for m in matches {
                let p = m.map_err(|e| CliError::Io {
                    path: e.path().to_path_buf(),
                    source: e.into(),
                })?;
                if p.is_file() {
                    any = true;
                    push(p, &mut out);
                }
            }
            if !any {
                return Err(CliError::Usage(format!("'{arg}' matches no file")));
            }
        } else {
            return Err(CliError::Usage(format!("{arg}: no such file or folder")));
        }
    }
    if out.is_empty() {
        return Err(CliError::Usage(
            "no input images (folders are searched for .jpg, .jpeg, .png and .webp files)".into(),
        ));
    }
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The file extension of an `output_format` (`png`, `webp`, `jpeg`/`jpg` → `jpg`).
pub fn extension_of(format: &str) -> &'static str {
    match format {
        "webp" => "webp",
        "jpeg" | "jpg" => "jpg",
        _ => "png",
    }
}

/// The `output_format` implied by an output path's extension, if it names one.
pub fn format_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "png" => Some("png"),
        "webp" => Some("webp"),
        "jpg" | "jpeg" => Some("jpeg"),
        _ => None,
    }
}

/// Whether `-o` names a folder: an existing one, or a path ending in `/`.
pub fn is_folder(output: &Path) -> bool {
    output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/')
}

/// Where each input's output goes, with extension `ext`: with one input and an `output` that
/// is not a folder, that file; with an `output` folder, `{folder}/{stem}.{ext}`; without
/// `output`, beside the input as `{stem}{suffix}.{ext}`.
///
/// # Errors
/// [`CliError::Usage`] when several inputs would share one output file, an output would
/// overwrite its own input, or several inputs are given with `-o` naming an existing file.
pub fn plan_outputs(
    inputs: &[PathBuf],
    output: Option<&Path>,
    ext: &str,
    suffix: &str,
) -> Result<Vec<PathBuf>, CliError> {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into())
    };
    let planned: Vec<PathBuf> = match output {
        Some(o) if inputs.len() == 1 && !is_folder(o) => vec![o.to_path_buf()],
        Some(o) if o.is_file() => {
            return Err(CliError::Usage(format!(
                "-o {} is a file, but {} inputs need a folder",
                o.display(),
                inputs.len()
            )));
        }
        Some(dir) => inputs
            .iter()
            .map(|i| dir.join(format!("{}.{ext}", stem(i))))
            .collect(),
        None => inputs
            .iter()
            .map(|i| i.with_file_name(format!("{}{suffix}.{ext}", stem(i))))
            .collect(),
    };
    let mut seen = HashSet::new();
    for (input, out) in inputs.iter().zip(&planned) {
        if same_file(input, out) {
            return Err(CliError::Usage(format!(
                "the output {} would overwrite its input: pick another -o",
                out.display()
            )));
        }
        if !seen.insert(out.clone()) {
            return Err(CliError::Usage(format!(
                "two inputs would both write {}: rename one or use -o with separate runs",
                out.display()
            )));
        }
    }
    Ok(planned)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Output `index` of a multi-output job: `out.png`, then `out-1.png`, `out-2.png`, … (the
/// API's own naming of `results/{id}-{n}`).
pub fn numbered(path: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}-{index}.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}-{index}")),
    }
}

/// The MIME type of an image from its first bytes (JPEG, PNG, WebP), for `POST /v1/uploads`'s
/// `content_type`; anything else is sent as `application/octet-stream` and the API answers 415
/// `unsupported_image`.
pub fn sniff(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        p
    }

    #[test]
    fn folders_give_their_images_sorted_and_skip_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let b = touch(dir.path(), "b.PNG");
        let a = touch(dir.path(), "a.jpg");
        touch(dir.path(), "notes.txt");
        touch(dir.path(), ".a.png.x.part");
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        let arg = dir.path().to_string_lossy().into_owned();
        assert_eq!(
            expand(&[arg.clone(), a.to_string_lossy().into()]).unwrap(),
            [a, b]
        );
    }

    #[test]
    fn globs_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = touch(dir.path(), "a.webp");
        touch(dir.path(), "b.jpg");
        let pattern = format!("{}/*.webp", dir.path().display());
        assert_eq!(expand(&[pattern]).unwrap(), [a]);
        let none = format!("{}/*.gif", dir.path().display());
        assert_eq!(expand(&[none]).unwrap_err().exit_code(), 2);
        let missing = format!("{}/missing.jpg", dir.path().display());
        assert_eq!(expand(&[missing]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn outputs_for_one_file_a_folder_and_beside_the_inputs() {
        let one = [PathBuf::from("in/photo.jpg")];
        assert_eq!(
            plan_outputs(&one, Some(Path::new("out.png")), "png", "-nobg").unwrap(),
            [PathBuf::from("out.png")]
        );
        let two = [PathBuf::from("in/a.jpg"), PathBuf::from("in/b.jpg")];
        assert_eq!(
            plan_outputs(&two, Some(Path::new("cut/")), "webp", "-nobg").unwrap(),
            [PathBuf::from("cut/a.webp"), PathBuf::from("cut/b.webp")]
        );
        assert_eq!(
            plan_outputs(&two, None, "png", "-nobg").unwrap(),
            [
                PathBuf::from("in/a-nobg.png"),
                PathBuf::from("in/b-nobg.png")
            ]
        );
    }

    #[test]
    fn outputs_never_collide_or_overwrite_inputs() {
        let clash = [PathBuf::from("x/a.jpg"), PathBuf::from("y/a.png")];
        assert!(plan_outputs(&clash, Some(Path::new("out/")), "png", "").is_err());
        let dir = tempfile::tempdir().unwrap();
        let input = touch(dir.path(), "a.png");
        assert!(plan_outputs(std::slice::from_ref(&input), None, "png", "").is_err());
    }

    #[test]
    fn numbering_and_formats() {
        assert_eq!(numbered(Path::new("d/out.png"), 0), Path::new("d/out.png"));
        assert_eq!(
            numbered(Path::new("d/out.png"), 2),
            Path::new("d/out-2.png")
        );
        assert_eq!(format_of(Path::new("x.JPG")), Some("jpeg"));
        assert_eq!(format_of(Path::new("x.tiff")), None);
        assert_eq!(extension_of("jpeg"), "jpg");
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"GIF89a"), "application/octet-stream");
    }
}
