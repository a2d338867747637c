//! Output files that are either complete or absent: bytes go to a hidden temporary file in the
//! destination's directory and are renamed over the destination only once all are written and
//! flushed. A rename within one directory is atomic (POSIX `rename(2)`), so an interrupted run
//! (Ctrl-C, a dropped connection) leaves the old file or nothing, never half an image; the
//! temporary file is removed when the [`AtomicFile`] is dropped uncommitted.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// A file being written to a temporary path beside its destination.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    written: u64,
}

impl AtomicFile {
    /// Opens `.{name}.{random}.part` in `dest`'s directory (created if missing).
    ///
    /// # Errors
    /// [`CliError::Io`] when the directory cannot be created or written.
    pub fn create(dest: &Path) -> Result<Self, CliError> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|source| CliError::Io {
            path: dir.clone(),
            source,
        })?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".part");
        // tempfile's default is 0600; an output image is an ordinary file (0666 less the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder
            .tempfile_in(&dir)
            .map_err(|source| CliError::Io { path: dir, source })?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            written: 0,
        })
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    /// [`CliError::Io`] (disk full, …).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        self.tmp.write_all(bytes).map_err(|source| CliError::Io {
            path: self.tmp.path().to_path_buf(),
            source,
        })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes to disk and renames over the destination; returns the bytes written.
    ///
    /// # Errors
    /// [`CliError::Io`] when the flush or the rename fails (the temporary file is removed).
    pub fn commit(self) -> Result<u64, CliError> {
        let Self { tmp, dest, written } = self;
        tmp.as_file().sync_all().map_err(|source| CliError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        tmp.persist(&dest).map_err(|e| CliError::Io {
            path: dest,
            source: e.error,
        })?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn committed_files_appear_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.png");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write(b"abc").unwrap();
        assert!(!dest.exists(), "nothing at the destination before commit");
        f.write(b"def").unwrap();
        assert_eq!(f.commit().unwrap(), 6);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcdef");
        assert_eq!(entries(dir.path()), ["out.png"], "no temporary file left");
    }

    #[test]
    fn dropped_files_leave_nothing_and_keep_the_old_output() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.png");
        std::fs::write(&dest, b"old").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write(b"half of a new im").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["out.png"]);
    }
}
