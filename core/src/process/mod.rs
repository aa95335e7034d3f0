//! Process conventions, as nats-server's: what signals do, `--signal`, the pid file, the log
//! file and lame duck mode.
//!
//! * [`logfile`]: logging to a file (`-l`/`--log`, `log_file`) that SIGUSR1 reopens, for
//!   logrotate's rename-then-signal;
//! * [`pidfile`]: the process id written to `--pid`/`pid_file` at start, removed at a clean
//!   exit;
//! * [`command`]: `--signal stop|quit|term|reopen|reload|ldm[=PID|=PIDFILE]`: which signal to
//!   send to which running server;
//! * [`lameduck`]: the pure timing of lame duck mode (when each remaining connection is
//!   closed);
//! * [`signals`]: the running server's signal handling: SIGTERM and SIGINT shut down, SIGUSR1
//!   reopens the log file, SIGUSR2 runs lame duck mode and then shuts down (SIGHUP reloads:
//!   `crate::app::reload_on_sighup`);
//! * [`startup_pages`]: the code only start-up ran, dropped from the resident set once the
//!   server serves.
//!
//! See core/DESIGN.md, "Process conventions".

pub mod command;
pub mod lameduck;
pub mod logfile;
pub mod pidfile;
pub mod signals;
pub mod startup_pages;
