//! Logging to a file that can be reopened: `-l FILE`/`log_file` appends the log there instead
//! of stderr, and SIGUSR1 reopens the path (logrotate renames the file, then signals; the old
//! file gets no more lines and the new one starts at once).
//!
//! [`LogFile`] is the writer tracing's formatter writes each event to (one `write_all` of the
//! formatted line, under a lock); [`LogFile::reopen`] swaps the file underneath.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Why the log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("log_file: cannot open {}: {source}", path.display())]
pub struct LogFileError {
    /// The path tried.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// A log file opened for appending, shared by the logger and the SIGUSR1 handler.
#[derive(Debug, Clone)]
pub struct LogFile {
    path: Arc<Path>,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens (creates if missing) `path` for appending.
    pub fn open(path: &Path) -> Result<LogFile, LogFileError> {
        Ok(LogFile {
            path: Arc::from(path),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// The path it logs to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (a new file if it was renamed or removed) and logs there from now
    /// on; on an error the current file stays in use.
    pub fn reopen(&self) -> Result<(), LogFileError> {
        let fresh = open_append(&self.path)?;
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = file.flush();
        *file = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogFileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.to_owned(),
            source,
        })
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> LogFile {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write_all(b"one\n").unwrap();
        let rotated = dir.path().join("x.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        log.write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let err = LogFile::open(&dir.path().join("no/such/dir.log")).unwrap_err();
        assert!(
            err.to_string().starts_with("log_file: cannot open"),
            "{err}"
        );
    }
}
