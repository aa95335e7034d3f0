//! `--signal SIGNAL[=PID|=PIDFILE]`, as nats-server's: the signal names and the process they
//! go to. `stop` is SIGKILL, `quit` SIGINT, `term` SIGTERM, `reopen` SIGUSR1 (reopen the log
//! file), `reload` SIGHUP, `ldm` SIGUSR2 (lame duck mode). Without `=...` the process is the
//! one in the pid file (`--pid FILE` or the configuration's `pid_file`); nats-server would
//! look for a single running nats-server with pgrep instead, which could pick another
//! server's process, so we ask for the pid file.

use std::path::{Path, PathBuf};

use super::pidfile::{self, PidFileError};

/// A signal `--signal` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `stop`: SIGKILL.
    Stop,
    /// `quit`: SIGINT (shut down).
    Quit,
    /// `term`: SIGTERM (shut down).
    Term,
    /// `reopen`: SIGUSR1 (reopen the log file).
    Reopen,
    /// `reload`: SIGHUP (reload the configuration).
    Reload,
    /// `ldm`: SIGUSR2 (lame duck mode).
    LameDuck,
}

impl Signal {
    /// The signal for a `--signal` name.
    pub fn from_name(name: &str) -> Option<Signal> {
        Some(match name {
            "stop" => Signal::Stop,
            "quit" => Signal::Quit,
            "term" => Signal::Term,
            "reopen" => Signal::Reopen,
            "reload" => Signal::Reload,
            "ldm" => Signal::LameDuck,
            _ => return None,
        })
    }

    /// Its `--signal` name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Stop => "stop",
            Signal::Quit => "quit",
            Signal::Term => "term",
            Signal::Reopen => "reopen",
            Signal::Reload => "reload",
            Signal::LameDuck => "ldm",
        }
    }

    /// The Unix signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Stop => libc::SIGKILL,
            Signal::Quit => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Reopen => libc::SIGUSR1,
            Signal::Reload => libc::SIGHUP,
            Signal::LameDuck => libc::SIGUSR2,
        }
    }
}

/// Which process a `--signal` goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `=PID`.
    Pid(i32),
    /// `=PIDFILE` (anything after `=` that is not a process id).
    PidFile(PathBuf),
    /// Nothing after the name: the server's own pid file.
    Default,
}

/// A parsed `--signal` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalCommand {
    /// What to send.
    pub signal: Signal,
    /// Where to.
    pub target: Target,
}

/// Why `--signal` failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Not one of the names.
    #[error("--signal: unknown signal {0:?} (one of stop, quit, term, reopen, reload, ldm)")]
    Unknown(String),
    /// `name=a=b`.
    #[error("--signal: invalid signal parameters: {0:?}")]
    Parameters(String),
    /// No `=PID`, and no pid file configured.
    #[error(
        "--signal {0}: no process id: give {0}=PID or {0}=PIDFILE, or the server's pid file \
         with --pid FILE (or pid_file in its configuration)"
    )]
    NoTarget(&'static str),
    /// The pid file could not be read.
    #[error("--signal: {0}")]
    PidFile(#[from] PidFileError),
    /// `kill` failed (no such process, not permitted).
    #[error("--signal {signal}: cannot signal process {pid}: {source}")]
    Kill {
        /// The signal's name.
        signal: &'static str,
        /// The process.
        pid: i32,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SignalCommand {
    /// Parses `name[=PID|=PIDFILE]`.
    pub fn parse(text: &str) -> Result<SignalCommand, CommandError> {
        let mut parts = text.split('=');
        let name = parts.next().unwrap_or_default();
        let target = parts.next();
        if parts.next().is_some() {
            return Err(CommandError::Parameters(text.to_owned()));
        }
        let signal = Signal::from_name(name).ok_or_else(|| CommandError::Unknown(name.into()))?;
        let target = match target {
            None => Target::Default,
            Some(t) => match pidfile::parse_pid(t) {
                Some(pid) => Target::Pid(pid),
                None if t.is_empty() => Target::Default,
                None => Target::PidFile(PathBuf::from(t)),
            },
        };
        Ok(SignalCommand { signal, target })
    }

    /// The process to signal: the explicit PID, or the one in the explicit pid file, or the
    /// one in `pid_file` (the server's own, `--pid` or the configuration's).
    pub fn pid(&self, pid_file: Option<&Path>) -> Result<i32, CommandError> {
        match (&self.target, pid_file) {
            (Target::Pid(pid), _) => Ok(*pid),
            (Target::PidFile(path), _) => Ok(pidfile::read(path)?),
            (Target::Default, Some(path)) => Ok(pidfile::read(path)?),
            (Target::Default, None) => Err(CommandError::NoTarget(self.signal.name())),
        }
    }

    /// Sends the signal (see [`SignalCommand::pid`]); returns the process it went to.
    pub fn send(&self, pid_file: Option<&Path>) -> Result<i32, CommandError> {
        let pid = self.pid(pid_file)?;
        // SAFETY: `kill` takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::kill(pid, self.signal.number()) };
        if rc != 0 {
            return Err(CommandError::Kill {
                signal: self.signal.name(),
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_targets() {
        let c = SignalCommand::parse("ldm").unwrap();
        assert_eq!(c.signal, Signal::LameDuck);
        assert_eq!(c.target, Target::Default);
        assert_eq!(c.signal.number(), libc::SIGUSR2);
        let c = SignalCommand::parse("reload=42").unwrap();
        assert_eq!((c.signal, c.target), (Signal::Reload, Target::Pid(42)));
        let c = SignalCommand::parse("reopen=/run/leafd.pid").unwrap();
        assert_eq!(c.target, Target::PidFile("/run/leafd.pid".into()));
        for (name, number) in [
            ("stop", libc::SIGKILL),
            ("quit", libc::SIGINT),
            ("term", libc::SIGTERM),
            ("reopen", libc::SIGUSR1),
            ("reload", libc::SIGHUP),
        ] {
            let s = Signal::from_name(name).unwrap();
            assert_eq!((s.number(), s.name()), (number, name));
        }
        assert!(matches!(
            SignalCommand::parse("kill"),
            Err(CommandError::Unknown(n)) if n == "kill"
        ));
        assert!(matches!(
            SignalCommand::parse("ldm=1=2"),
            Err(CommandError::Parameters(_))
        ));
    }

    #[test]
    fn the_pid_comes_from_the_target_or_the_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.pid");
        std::fs::write(&file, "77\n").unwrap();
        let c = SignalCommand::parse("reload").unwrap();
        let err = c.pid(None).unwrap_err().to_string();
        assert!(err.contains("reload=PID"), "{err}");
        assert_eq!(c.pid(Some(&file)).unwrap(), 77);
        let c = SignalCommand::parse(&format!("ldm={}", file.display())).unwrap();
        assert_eq!(c.pid(None).unwrap(), 77);
        let c = SignalCommand::parse("ldm=/nonexistent/x.pid").unwrap();
        assert!(c.pid(None).unwrap_err().to_string().contains("cannot read"));
    }
}
