//! GPIO lines through the Linux GPIO character device: input edges and sampled levels
//! published as messages, outputs set and read through request/reply subjects.
//!
//! The subjects, payloads and settings are described in [`crate::gateway::config::gpio`]. Inside:
//!
//! * [`source`]: the backend boundary, [`LineSource`] and [`LineRequest`] (request lines
//!   with their settings, await edge events, read values, set outputs).
//! * [`cdev`]: the production backend, `gpiocdev` on uAPI v2, compiled into every build.
//! * [`sim`]: an in-process model of the kernel's behaviour (debounce, sequence numbers,
//!   buffer overflow), used by the tests and the benchmark because the development and CI
//!   machines have no GPIO simulator (Debian kernels are built without gpio-sim).
//! * [`pipeline`]: the per-group task.
//!
//! [`start`] resolves every line through the board when leafd starts, so an unknown line
//! is refused then, naming its config key; it subscribes the group's request subjects and
//! spawns the task. The task requests the lines and, whenever that fails (no chip, a busy
//! line, a chip that went away), marks the source `waiting` and tries again with backoff:
//! GPIO trouble never stops the server.
//!
//! Monitoring (`SourceStats`, kind `gpio`, named after the group) counts `events` (edges
//! published), `dropped` (edges the kernel lost, from gaps in its per-line sequence
//! numbers), `samples`, `sets`, `gets` and `errors` (refused requests: a set on an input, a
//! bad value, a request while the lines are not open; failed publishes). Its target is the
//! chips and offsets the lines resolved to.
//!
//! Lines are addressed by name rather than number because numbering is not stable: the
//! Raspberry Pi 5 moved the header GPIOs to the RP1 chip, whose device number changed
//! between OS builds (see [`super::board`]).

pub mod cdev;
pub mod pipeline;
pub mod sim;
pub mod source;

#[doc(hidden)]
pub mod bench;
#[cfg(test)]
mod tests;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::board::{resolve_line, GpioLine};
use super::template::Template;
use super::{Context, GatewayError, Outlet, Registry, SourceStats};
use crate::gateway::config::gpio::{LineConfig, SUBJECT_PLACEHOLDERS};
use crate::gateway::config::{ConfigError, GpioGroup};
use leaf_proto::subject::is_valid_literal_subject;

pub use cdev::CdevSource;
pub use pipeline::{COUNTERS, LINE_HEADER};
pub use sim::{SimHandle, SimSource};
pub use source::{LineEvent, LineMode, LineRequest, LineSource, LineSpec, RequestSpec};

use pipeline::{Line, Op, Pipeline, Tagged};

/// Requests waiting per served subject before more are dropped.
const REQUEST_QUEUE: usize = 16;

/// Starts the GPIO group `group` (`gpio[index]` in the config) on the system's GPIO chips.
///
/// # Errors
/// [`GatewayError::Config`] for a line the board does not define (the key is
/// `gpio[index].inputs[i].line` or `...outputs[i].line`) or a subject that cannot be built;
/// [`GatewayError::Stopped`] when the server is gone.
pub fn start(
    outlet: &Outlet,
    registry: &Registry,
    ctx: &Context,
    index: usize,
    group: &GpioGroup,
) -> Result<JoinHandle<()>, GatewayError> {
    start_with_source(outlet, registry, ctx, index, group, CdevSource::new())
}

/// [`start`] with another backend (the tests' and the benchmark's [`SimSource`]).
///
/// # Errors
/// As [`start`].
pub fn start_with_source<S: LineSource>(
    outlet: &Outlet,
    registry: &Registry,
    ctx: &Context,
    index: usize,
    group: &GpioGroup,
    source: S,
) -> Result<JoinHandle<()>, GatewayError> {
    let (spec, lines) = prepare(ctx, index, group)?;
    let mut forwarders = Forwarders(Vec::new());
    let (tx, rx) = mpsc::channel::<Tagged>(64);
    for (i, line) in lines.iter().enumerate() {
        for (op, suffix) in [(Op::Get, "get"), (Op::Set, "set")] {
            let mut requests =
                outlet.serve(&format!("{}.{suffix}", line.subject), REQUEST_QUEUE)?;
            let tx = tx.clone();
            forwarders.0.push(tokio::spawn(async move {
                while let Some(req) = requests.next().await {
                    if tx.send((i, op, req)).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    drop(tx);
    let stats = registry.register(SourceStats::new("gpio", &group.name, COUNTERS));
    stats.set_target(
        spec.lines
            .iter()
            .map(|l| format!("{}={}", l.name, l.line))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let pipeline = Pipeline::new(
        outlet.clone(),
        stats,
        source,
        spec,
        lines,
        rx,
        group.reopen_max,
        group.name.clone(),
    );
    Ok(tokio::spawn(async move {
        // Aborting this task drops the forwarders' subscriptions with it.
        let _forwarders = forwarders;
        pipeline.run().await;
    }))
}

/// Aborts the request forwarding tasks when dropped.
struct Forwarders(Vec<JoinHandle<()>>);

impl Drop for Forwarders {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Resolves the group's lines and subjects.
fn prepare(
    ctx: &Context,
    index: usize,
    group: &GpioGroup,
) -> Result<(RequestSpec, Vec<Line>), GatewayError> {
    // Config::validate has normally done this; embedders may not have called it.
    group.validate(index).map_err(|e| match e {
        ConfigError::Invalid { key, message } => GatewayError::Config { key, message },
        other => GatewayError::Config {
            key: format!("gpio[{index}]"),
            message: other.to_string(),
        },
    })?;
    let template = Template::parse(&group.subject, SUBJECT_PLACEHOLDERS).map_err(|e| {
        GatewayError::Config {
            key: format!("gpio[{index}].subject"),
            message: e.to_string(),
        }
    })?;
    let mut specs: Vec<LineSpec> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (entry, cfg) in group.lines() {
        let key = format!("gpio[{index}].{entry}.line");
        let line = resolve_line(cfg.line(), ctx.board.as_deref()).map_err(|message| {
            GatewayError::Config {
                key: key.clone(),
                message,
            }
        })?;
        if let Some(other) = specs.iter().position(|s| same_line(&s.line, &line)) {
            let other = keys.get(other).map_or("another line", String::as_str);
            return Err(GatewayError::Config {
                key,
                message: format!("`{}` is the same line as {other}", cfg.line()),
            });
        }
        let name = cfg.display_name().to_owned();
        let subject = fill(&template, ctx, &group.name, &name);
        if !is_valid_literal_subject(subject.as_bytes())
            || !is_valid_literal_subject(format!("{subject}.level").as_bytes())
        {
            return Err(GatewayError::Config {
                key: format!("gpio[{index}].subject"),
                message: format!("`{subject}` (for {name}) is not a valid subject"),
            });
        }
        let (mode, sample_interval) = match cfg {
            LineConfig::Input(i) => (
                LineMode::Input {
                    edge: i.edge,
                    debounce: i.debounce,
                    bias: i.bias,
                    active_low: i.active_low,
                },
                i.sample_interval,
            ),
            LineConfig::Output(o) => (
                LineMode::Output {
                    value: o.initial,
                    active_low: o.active_low,
                    drive: o.drive,
                },
                None,
            ),
        };
        if let Some(other) = lines.iter().position(|l| l.subject == subject) {
            let other = keys.get(other).map_or("another line", String::as_str);
            return Err(GatewayError::Config {
                key: format!("gpio[{index}].subject"),
                message: format!("`{subject}` is also the subject of {other}"),
            });
        }
        specs.push(LineSpec {
            line,
            name: name.clone(),
            mode,
        });
        lines.push(Line::new(name, subject, sample_interval));
        keys.push(format!("gpio[{index}].{entry}"));
    }
    let spec = RequestSpec {
        consumer: format!("leafd-{}", group.name),
        lines: specs,
        clock: group.event_clock,
        event_buffer: group.event_buffer,
    };
    Ok((spec, lines))
}

/// Whether two resolved lines are certainly the same (same chip, and the same kernel name
/// or offset).
fn same_line(a: &GpioLine, b: &GpioLine) -> bool {
    a.chip == b.chip
        && ((a.name.is_some() && a.name == b.name) || (a.offset.is_some() && a.offset == b.offset))
}

/// Fills a subject template.
fn fill(template: &Template, ctx: &Context, group: &str, line: &str) -> String {
    template.fill(&[
        ("board", &ctx.board_name),
        ("server", &ctx.server_name),
        ("group", group),
        ("line", line),
    ])
}
