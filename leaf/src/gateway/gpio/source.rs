//! The backend boundary: what the GPIO pipeline needs from the kernel's GPIO character
//! device. [`super::cdev`] implements it with `gpiocdev` (uAPI v2); [`super::sim`] with an
//! in-process model of the kernel's behaviour, for tests and benchmarks.

use std::future::Future;
use std::time::Duration;

use crate::gateway::board::GpioLine;
use crate::gateway::config::gpio::{Bias, Drive, Edge, EventClock};

/// One line to request, resolved through the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSpec {
    /// Where the line is.
    pub line: GpioLine,
    /// The line's name in subjects, payloads and logs.
    pub name: String,
    /// How it is configured.
    pub mode: LineMode,
}

/// How a requested line is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMode {
    /// An input.
    Input {
        /// Which edges are reported.
        edge: Edge,
        /// Kernel debounce period (zero: none).
        debounce: Duration,
        /// Pull resistor.
        bias: Bias,
        /// Whether low is the active (1) value.
        active_low: bool,
    },
    /// An output.
    Output {
        /// The value driven when the line is requested.
        value: bool,
        /// Whether low is the active (1) value.
        active_low: bool,
        /// How the line is driven.
        drive: Drive,
    },
}

impl LineMode {
    /// Whether the line is an input with edge detection.
    pub fn detects_edges(&self) -> bool {
        matches!(self, LineMode::Input { edge, .. } if *edge != Edge::None)
    }
}

/// Everything a request asks for: the lines and the request-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// The consumer label the kernel shows for the lines (`gpioinfo`).
    pub consumer: String,
    /// The lines; an event's or a call's `index` is a position in this list.
    pub lines: Vec<LineSpec>,
    /// The clock to timestamp edges with (a backend may fall back; see
    /// [`LineRequest::clock`]).
    pub clock: EventClock,
    /// The kernel's edge event buffer, in events (0: the kernel default, 16 per line).
    pub event_buffer: u32,
}

/// An edge, in the kernel's terms (after `active_low`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// Inactive to active.
    Rising,
    /// Active to inactive.
    Falling,
}

impl EdgeKind {
    /// `rising` or `falling`.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Rising => "rising",
            EdgeKind::Falling => "falling",
        }
    }
}

/// One edge event as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEvent {
    /// The line (a position in [`RequestSpec::lines`]).
    pub index: usize,
    /// Rising or falling.
    pub kind: EdgeKind,
    /// When, in nanoseconds of the request's [`LineRequest::clock`].
    pub timestamp_ns: u64,
    /// The event's number among all events of its request (per chip), from 1.
    pub seqno: u32,
    /// The event's number among the events of its line, from 1; a gap means the kernel's
    /// buffer overflowed and dropped events.
    pub line_seqno: u32,
}

/// Why lines could not be requested, or a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// No chip with that label or path.
    #[error("no GPIO chip `{0}`")]
    ChipNotFound(String),
    /// The chip has no such line.
    #[error("no line {line} on GPIO chip {chip}")]
    LineNotFound {
        /// The chip (label and path).
        chip: String,
        /// The line as configured.
        line: String,
    },
    /// The kernel refused the request (a line is used by another program, say).
    #[error("requesting {what}: {message}")]
    Request {
        /// What was requested (the chip and lines).
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// Reading events, reading values or setting values failed (the device went away).
    #[error("{0}")]
    Io(String),
    /// The call named a line that is not in the request, or an input was set.
    #[error("line index {0} is not a requested line of that kind")]
    BadIndex(usize),
}

/// A backend that can request lines.
pub trait LineSource: Send + 'static {
    /// The granted lines.
    type Request: LineRequest;

    /// Requests the lines of `spec`. Called again (with the same lines, outputs at their
    /// last values) after a failure, once the previous request has been dropped.
    ///
    /// # Errors
    /// [`SourceError`] when a chip or line cannot be found or the kernel refuses.
    fn request(&mut self, spec: &RequestSpec) -> Result<Self::Request, SourceError>;
}

/// Lines granted by a [`LineSource`]. Dropping it releases them.
pub trait LineRequest: Send + 'static {
    /// The next edge event of any input. Must be cancel safe: the pipeline polls it in a
    /// `select!` and may drop the future before it completes, losing no event.
    ///
    /// # Errors
    /// [`SourceError::Io`] when the request can no longer be read (the chip went away);
    /// the pipeline then drops the request and requests again.
    fn next_event(&mut self) -> impl Future<Output = Result<LineEvent, SourceError>> + Send;

    /// The current (logical, debounced) value of line `index`.
    ///
    /// # Errors
    /// [`SourceError`].
    fn value(&mut self, index: usize) -> Result<bool, SourceError>;

    /// Sets output `index` to `value` (logical).
    ///
    /// # Errors
    /// [`SourceError`].
    fn set_value(&mut self, index: usize, value: bool) -> Result<(), SourceError>;

    /// The clock edge timestamps are read from.
    fn clock(&self) -> EventClock;

    /// What was requested, for monitoring (`pinctrl-bcm2711 (/dev/gpiochip0): GPIO17=17`).
    fn describe(&self) -> String;
}
