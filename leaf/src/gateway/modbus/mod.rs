//! Modbus RTU buses polled from a register map (`[[modbus]]`).
//!
//! One task per bus owns the serial port and does everything on it one transaction at a
//! time: reads each register when it is due (registers due together are read one after
//! the other, earliest first) and carries out writes requested on the bus's
//! `write_subject`. Each read is published as `{"value": ..., "unit": ...}` on the
//! register's subject, with the [`stamp`](super::outlet::stamp) headers plus `Leaf-Bus`,
//! `Leaf-Slave` and `Leaf-Register`.
//!
//! * [`value`]: words and bits to JSON values and back (types, byte and word order, scale).
//! * [`session`]: timeouts, the inter-frame gap, a fresh client context after errors.
//! * `poll`: the bus task (open with backoff, schedule, publish, count).
//! * `write`: write requests.
//!
//! A failing register (timeouts, exceptions, garbage) is counted in the bus's
//! [`SourceStats`] (kind `modbus`: `polls`, `values`, `timeouts`, `errors`, `exceptions`,
//! `writes`, `reopens`), logged at a bounded rate, and never stops the other registers.

mod poll;
pub mod session;
pub mod value;
mod write;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::outlet::Requests;
use super::serial::device;
use super::stats::{LogLimiter, SourceStats};
use super::template::Template;
use super::{Context, GatewayError, Outlet, Registry};
use crate::gateway::config::modbus::{Register, SUBJECT_PLACEHOLDERS, WRITE_PLACEHOLDERS};
use crate::gateway::config::ModbusBus;
use leaf_proto::subject::is_valid_literal_subject;

/// The bus's counters, in this order (see the constants below).
const COUNTERS: &[&str] = &[
    "polls",
    "values",
    "timeouts",
    "errors",
    "exceptions",
    "writes",
    "reopens",
];
/// Read requests sent.
const POLLS: usize = 0;
/// Values published (one per successful read).
const VALUES: usize = 1;
/// Requests the slave did not answer at all in time.
const TIMEOUTS: usize = 2;
/// Transport errors: garbled or cut-off answers (bad CRC), answers that do not fit the
/// request, device failures.
const ERRORS: usize = 3;
/// Modbus exception responses.
const EXCEPTIONS: usize = 4;
/// Successful writes.
const WRITES: usize = 5;
/// Times the device was opened again after a failure.
const REOPENS: usize = 6;

/// Write requests waiting for the bus before more are dropped.
const WRITE_QUEUE: usize = 16;
/// The first wait before reopening a device; it doubles up to `port.reopen_max`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Log at most this many failures of one bus per [`LOG_INTERVAL`].
const LOG_BURST: u32 = 5;
/// See [`LOG_BURST`].
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One register of the map, ready to poll.
struct Point {
    /// Its settings.
    reg: Register,
    /// The filled subject template.
    subject: String,
    /// The slave id as text, for the `Leaf-Slave` header.
    slave: String,
    /// The last published sequence number.
    seq: u64,
    /// When it is next read.
    next: Instant,
}

/// Everything the bus task owns.
struct Bus {
    /// `modbus[index]`.
    cfg: ModbusBus,
    /// Resolves the device before each open.
    ctx: Context,
    points: Vec<Point>,
    outlet: Outlet,
    stats: Arc<SourceStats>,
    /// Write requests, when `write_subject` is set.
    requests: Option<Requests>,
    log: LogLimiter,
    /// The wait before the next reopen.
    backoff: Duration,
}

/// Starts polling the bus `bus` (`modbus[index]` in the config).
///
/// # Errors
/// [`GatewayError::Config`] for settings that refer to nothing (a device alias the board
/// does not define), [`GatewayError::Subject`] when a filled subject is not valid.
pub fn start(
    outlet: &Outlet,
    registry: &Registry,
    ctx: &Context,
    index: usize,
    bus: &ModbusBus,
) -> Result<JoinHandle<()>, GatewayError> {
    if let Err(e) = device::resolve(&bus.port.device, ctx.board.as_deref()) {
        if e.is_config() {
            return Err(GatewayError::Config {
                key: format!("modbus[{index}].port.device"),
                message: e.to_string(),
            });
        }
    }
    let value_template =
        Template::parse(&bus.subject, SUBJECT_PLACEHOLDERS).map_err(|e| GatewayError::Config {
            key: format!("modbus[{index}].subject"),
            message: e.to_string(),
        })?;
    let now = Instant::now();
    let mut points = Vec::with_capacity(bus.registers.len());
    for reg in &bus.registers {
        let slave = reg.slave.to_string();
        let subject = value_template.fill(&[
            ("board", &ctx.board_name),
            ("server", &ctx.server_name),
            ("bus", &bus.name),
            ("register", &reg.name),
            ("slave", &slave),
        ]);
        if !is_valid_literal_subject(subject.as_bytes()) {
            return Err(GatewayError::Subject(subject));
        }
        points.push(Point {
            reg: reg.clone(),
            subject,
            slave,
            seq: 0,
            next: now,
        });
    }
    let requests = match &bus.write_subject {
        Some(template) => {
            let subject = Template::parse(template, WRITE_PLACEHOLDERS)
                .map_err(|e| GatewayError::Config {
                    key: format!("modbus[{index}].write_subject"),
                    message: e.to_string(),
                })?
                .fill(&[
                    ("board", &ctx.board_name),
                    ("server", &ctx.server_name),
                    ("bus", &bus.name),
                ]);
            if !is_valid_literal_subject(subject.as_bytes()) {
                return Err(GatewayError::Subject(subject));
            }
            Some(outlet.serve(&subject, WRITE_QUEUE)?)
        }
        None => None,
    };
    let stats = registry.register(SourceStats::new("modbus", &bus.name, COUNTERS));
    let task = Bus {
        cfg: bus.clone(),
        ctx: ctx.clone(),
        points,
        outlet: outlet.clone(),
        stats,
        requests,
        log: LogLimiter::new(LOG_BURST, LOG_INTERVAL),
        backoff: INITIAL_BACKOFF,
    };
    Ok(tokio::spawn(task.run()))
}
