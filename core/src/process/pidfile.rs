//! The pid file (`-P`/`--pid FILE`, `pid_file`): the process id, in decimal, written at start
//! and removed at a clean exit, for `--signal` and for init scripts.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong with a pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// It could not be written.
    #[error("pid_file: cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// It could not be read.
    #[error("cannot read the pid file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// It holds no process id.
    #[error("the pid file {} holds no process id", path.display())]
    NoPid {
        /// The file.
        path: PathBuf,
    },
}

/// The pid file of this process: removed when dropped (the clean exit of `main`).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id to `path`.
    pub fn write(path: &Path) -> Result<PidFile, PidFileError> {
        std::fs::write(path, std::process::id().to_string()).map_err(|source| {
            PidFileError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the process id in `path`.
pub fn read(path: &Path) -> Result<i32, PidFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PidFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_pid(&text).ok_or_else(|| PidFileError::NoPid {
        path: path.to_owned(),
    })
}

/// A positive process id (surrounding whitespace allowed).
pub fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            i32::try_from(std::process::id()).unwrap()
        );
        drop(file);
        assert!(!path.exists());
        assert!(matches!(read(&path), Err(PidFileError::Read { .. })));
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(read(&path), Err(PidFileError::NoPid { .. })));
        assert_eq!(parse_pid(" 42\n"), Some(42));
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("-1"), None);
    }
}
