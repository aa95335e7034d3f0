//! A running server's signals, as nats-server's: SIGTERM and SIGINT shut down, SIGUSR1
//! reopens the log file, SIGUSR2 enters lame duck mode (SIGHUP reloads the configuration:
//! `crate::app::reload_on_sighup`).
//!
//! Lame duck mode ([`crate::server::Shared::enter_lame_duck`]): the client and leafnode
//! listeners close, clients get an INFO with `ldm: true` and the other members' URLs, leaves
//! one with `ldm: true` and the other members' leafnode URLs, routes one with `ldm: true` (the
//! other members stop announcing this one's URLs); after `lame_duck_grace_period` the
//! connections still open are closed over `lame_duck_duration` ([`super::lameduck`]); then the
//! server shuts down as on SIGTERM (queues flushed, JetStream stores closed). A second SIGUSR2,
//! a SIGTERM or a SIGINT during lame duck mode shuts down at once (nats-server ignores SIGTERM
//! then; a service manager's stop must not wait two minutes). Every phase is logged.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use super::lameduck::Timing;
use super::logfile::LogFile;
use crate::server::Shared;

/// Why waiting for signals ended.
enum Got {
    /// SIGTERM, SIGINT (or SIGUSR2 during lame duck mode): shut down now.
    Stop,
    /// SIGUSR2.
    LameDuck,
}

/// The handlers, installed.
struct Handlers {
    term: Signal,
    int: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Handlers {
    fn install() -> std::io::Result<Handlers> {
        Ok(Handlers {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next signal that ends a phase; SIGUSR1 reopens `log` meanwhile.
    async fn next(&mut self, log: Option<&LogFile>) -> Got {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    info!("SIGTERM received");
                    return Got::Stop;
                }
                _ = self.int.recv() => {
                    info!("SIGINT received");
                    return Got::Stop;
                }
                _ = self.usr2.recv() => {
                    info!("SIGUSR2 received");
                    return Got::LameDuck;
                }
                _ = self.usr1.recv() => reopen(log),
            }
        }
    }
}

/// SIGUSR1: reopens the log file, if there is one.
fn reopen(log: Option<&LogFile>) {
    match log {
        Some(log) => match log.reopen() {
            Ok(()) => info!(file = %log.path().display(), "SIGUSR1 received: log file reopened"),
            Err(e) => error!("SIGUSR1 received: {e}; logging on to the open file"),
        },
        None => info!("SIGUSR1 received: no log file to reopen (logging to stderr); ignored"),
    }
}

/// Installs the handlers now (a signal that arrives before the returned future is first
/// polled is kept, instead of killing the process) and returns a future that completes when
/// the server must shut down: on SIGTERM or SIGINT, or at the end of lame duck mode (SIGUSR2)
/// of the server `shared`, timed by `timing`. SIGUSR1 reopens `log`.
pub fn until_shutdown(
    shared: &Arc<Shared>,
    timing: Timing,
    log: Option<LogFile>,
) -> impl Future<Output = ()> + Send + 'static {
    let handlers = Handlers::install();
    let shared = Arc::downgrade(shared);
    async move {
        let mut handlers = match handlers {
            Ok(h) => h,
            Err(e) => {
                error!("cannot install the signal handlers: {e}");
                std::future::pending::<()>().await;
                return;
            }
        };
        if let Got::Stop = handlers.next(log.as_ref()).await {
            return;
        }
        lame_duck(&shared, timing, &mut handlers, log.as_ref()).await;
    }
}

/// Lame duck mode, to its end (or until a signal ends it early).
async fn lame_duck(
    shared: &Weak<Shared>,
    timing: Timing,
    handlers: &mut Handlers,
    log: Option<&LogFile>,
) {
    let Some(doomed) = shared.upgrade().and_then(|s| s.enter_lame_duck()) else {
        return;
    };
    info!(
        connections = doomed.len(),
        grace_period = ?timing.grace,
        duration = ?timing.duration,
        "entering lame duck mode: no new clients or leaves; clients, leaves and routes are told \
         (INFO ldm)"
    );
    if doomed.is_empty() {
        info!("lame duck mode: no connection to close; shutting down");
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(timing.grace) => {}
        _ = handlers.next(log) => {
            info!("lame duck mode ended early: shutting down now");
            return;
        }
    }
    let schedule = timing.schedule(doomed.len());
    info!(
        connections = doomed.len(),
        pause = ?schedule.pause,
        "lame duck mode: grace period over, closing the remaining connections"
    );
    let mut batches = doomed.chunks(schedule.batch.max(1)).peekable();
    while let Some(batch) = batches.next() {
        for handle in batch {
            handle.out.close();
        }
        if batches.peek().is_none() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.jittered(fastrand::f64())) => {}
            _ = handlers.next(log) => {
                warn!("lame duck mode ended early: shutting down now");
                return;
            }
        }
    }
    info!("lame duck mode: every connection closed; shutting down");
}

/// Resolves once `lame_duck` (a receiver of [`Shared::lame_duck`]) is true: at once in lame
/// duck mode, never if the server shuts down without it.
pub async fn entered(lame_duck: &mut tokio::sync::watch::Receiver<bool>) {
    if lame_duck.wait_for(|ldm| *ldm).await.is_err() {
        std::future::pending::<()>().await;
    }
}
