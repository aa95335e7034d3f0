//! Serial ports: open the device, cut its byte stream into frames, publish each frame.
//!
//! One task per port:
//!
//! ```text
//!   resolve device (path | board alias | USB ids) ─► open (termios, RS-485, non-blocking)
//!        ▲                                              │
//!        │ backoff 100 ms .. reopen_max                 ▼
//!   EOF / EIO / error ◄── read chunk ─► decoder.push(byte) per byte ─► frame
//!                          (gap framing: a read that times out after `gap` ends the frame)
//!                                                        │
//!         subject template + format split (raw | kv | json) + Leaf-Received / Leaf-Seq
//!                                                        ▼
//!                                    Outlet::publish (streams, uplinks, subscribers)
//! ```
//!
//! The decoders are `leaf-frames`' allocation-free state machines (one fixed buffer per
//! port, [`MAX_FRAME_LIMIT`] bytes); reads go through embedded-io-async's `Read`, the trait
//! those decoders are written against, so firmware can drive the same code. Bad input
//! (overlong, truncated, bad COBS, bad CRC, a record that does not decode, a frame that does
//! not split) is counted per kind and logged at a bounded rate; the port keeps reading.
//! An unplugged device (EOF, or EIO on a hung-up terminal) closes the port; it is reopened
//! with backoff once the device is back.

pub mod device;
pub mod port;
pub mod split;

use std::sync::Arc;
use std::time::Duration;

use leaf_frames::{
    Decoder, FixedDecoder, FrameError, GapDecoder, LineDecoder, Record, RecordDecoder,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::stats::LogLimiter;
use super::template::Template;
use super::{Board, Context, GatewayError, Outlet, Registry, SourceState, SourceStats};
use crate::gateway::config::serial::{Format, Framing, SerialSource};
use leaf_proto::time::now_ns;
use port::SerialPort;

pub use crate::gateway::config::serial::MAX_FRAME_LIMIT;

/// Placeholders a serial subject template may use.
pub const PLACEHOLDERS: &[&str] = &["board", "server", "port", "channel", "field"];

/// Header carrying a COBS record's device timestamp (microseconds, device clock).
pub const DEVICE_TIME_HEADER: &str = "Leaf-Device-Time";

/// The counters every serial port reports.
const COUNTERS: &[&str] = &[
    "frames",
    "messages",
    "bytes",
    "overlong",
    "truncated",
    "bad_cobs",
    "bad_crc",
    "bad_record",
    "bad_format",
    "publish_errors",
    "reopens",
];

/// Shortest wait before reopening a port.
const REOPEN_MIN: Duration = Duration::from_millis(100);

/// A port session shorter than this does not reset the reopen backoff (a device that
/// opens and hangs up at once must not be reopened in a tight loop).
const STABLE_SESSION: Duration = Duration::from_secs(1);

/// Starts reading the port `source` (`serial[index]` in the config).
///
/// # Errors
/// [`GatewayError::Config`] for a subject template that does not parse, a placeholder the
/// framing cannot fill, or a device name the board does not define.
pub fn start(
    outlet: &Outlet,
    registry: &Registry,
    ctx: &Context,
    index: usize,
    source: &SerialSource,
) -> Result<JoinHandle<()>, GatewayError> {
    let key = |k: &str| format!("serial[{index}].{k}");
    let config_error = |k: &str, message: String| GatewayError::Config {
        key: key(k),
        message,
    };
    let template = Template::parse(&source.subject, PLACEHOLDERS)
        .map_err(|e| config_error("subject", e.to_string()))?;
    if template.uses("channel") && source.framing != Framing::Cobs {
        return Err(config_error(
            "subject",
            "{channel} needs framing = \"cobs\"".to_owned(),
        ));
    }
    if template.uses("field") && source.format == Format::Raw {
        return Err(config_error(
            "subject",
            "{field} needs format = \"kv\" or \"json\"".to_owned(),
        ));
    }
    if let Err(e) = device::resolve(&source.port.device, ctx.board.as_deref()) {
        if e.is_config() {
            return Err(config_error("port.device", e.to_string()));
        }
    }
    // Check the framing settings now, so a bad delimiter is a start error.
    Framer::new(source).map_err(|(k, e)| config_error(k, e))?;
    let stats = registry.register(SourceStats::new("serial", &source.name, COUNTERS));
    let port = PortTask {
        outlet: outlet.clone(),
        source: source.clone(),
        template,
        board: ctx.board.clone(),
        board_name: ctx.board_name.clone(),
        server_name: ctx.server_name.clone(),
        counters: Counters::new(&stats),
        stats,
        seq: 0,
        log: LogLimiter::new(5, Duration::from_secs(10)),
    };
    Ok(tokio::spawn(port.run()))
}

/// Indexes of the counters, resolved once.
struct Counters {
    frames: usize,
    messages: usize,
    bytes: usize,
    publish_errors: usize,
    reopens: usize,
}

impl Counters {
    fn new(stats: &SourceStats) -> Self {
        let i = |name| stats.index(name).unwrap_or(usize::MAX);
        Counters {
            frames: i("frames"),
            messages: i("messages"),
            bytes: i("bytes"),
            publish_errors: i("publish_errors"),
            reopens: i("reopens"),
        }
    }
}

/// The decoder a port's framing selects. Boxed: each holds a [`MAX_FRAME_LIMIT`] buffer.
enum Framer {
    Line(Box<LineDecoder<MAX_FRAME_LIMIT>>),
    Gap(Box<GapDecoder<MAX_FRAME_LIMIT>>),
    Fixed(Box<FixedDecoder<MAX_FRAME_LIMIT>>),
    Cobs(Box<RecordDecoder<MAX_FRAME_LIMIT>>),
}

/// One decoded frame.
struct Frame<'a> {
    /// A record's channel (cobs framing).
    channel: Option<&'a str>,
    /// A record's device timestamp (cobs framing).
    device_time_us: Option<u64>,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    fn bytes(payload: &'a [u8]) -> Self {
        Frame {
            channel: None,
            device_time_us: None,
            payload,
        }
    }

    fn record(r: Record<'a>) -> Self {
        Frame {
            channel: Some(r.channel),
            device_time_us: Some(r.timestamp_us),
            payload: r.payload,
        }
    }
}

impl Framer {
    /// The decoder for `source`, or the key and message of a bad setting.
    fn new(source: &SerialSource) -> Result<Framer, (&'static str, String)> {
        Ok(match source.framing {
            Framing::Line => Framer::Line(Box::new(
                LineDecoder::new(source.delimiter.as_bytes())
                    .map_err(|e| ("delimiter", e.to_string()))?,
            )),
            Framing::Gap => Framer::Gap(Box::default()),
            Framing::Fixed => Framer::Fixed(Box::new(
                FixedDecoder::new(source.frame_len).map_err(|e| ("frame_len", e.to_string()))?,
            )),
            Framing::Cobs => Framer::Cobs(Box::default()),
        })
    }

    /// Whether a silent line ends a frame (so reads wait at most `gap`).
    fn uses_gap(&self) -> bool {
        matches!(self, Framer::Gap(_))
    }

    fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, FrameError>> {
        match self {
            Framer::Line(d) => d.push(byte).map(|r| r.map(Frame::bytes)),
            Framer::Gap(d) => d.push(byte).map(|r| r.map(Frame::bytes)),
            Framer::Fixed(d) => d.push(byte).map(|r| r.map(Frame::bytes)),
            Framer::Cobs(d) => d.push(byte).map(|r| r.map(Frame::record)),
        }
    }

    fn idle(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        match self {
            Framer::Line(d) => d.idle().map(|r| r.map(Frame::bytes)),
            Framer::Gap(d) => d.idle().map(|r| r.map(Frame::bytes)),
            Framer::Fixed(d) => d.idle().map(|r| r.map(Frame::bytes)),
            Framer::Cobs(d) => d.idle().map(Err),
        }
    }
}

/// The counter a decoder error is counted in.
fn error_counter(e: &FrameError) -> &'static str {
    match e {
        FrameError::Overlong { .. } => "overlong",
        FrameError::Truncated { .. } => "truncated",
        FrameError::Cobs => "bad_cobs",
        FrameError::Crc => "bad_crc",
        FrameError::Record => "bad_record",
    }
}

/// One port's task state.
struct PortTask {
    outlet: Outlet,
    source: SerialSource,
    template: Template,
    board: Option<Arc<Board>>,
    board_name: String,
    server_name: String,
    stats: Arc<SourceStats>,
    counters: Counters,
    /// Frames published since the start (`Leaf-Seq`).
    seq: u64,
    log: LogLimiter,
}

impl PortTask {
    /// Opens, reads, and reopens the port forever (until the task is aborted).
    async fn run(mut self) {
        let name = self.source.name.clone();
        let mut backoff = REOPEN_MIN;
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.source.port.reopen_max.max(REOPEN_MIN));
            }
            first = false;
            let path = match device::resolve(&self.source.port.device, self.board.as_deref()) {
                Ok(path) => path,
                Err(e) => {
                    self.waiting(&e.to_string());
                    continue;
                }
            };
            self.stats.set_target(path.display().to_string());
            let port = match SerialPort::open(&path, &self.source.port) {
                Ok(port) => port,
                Err(e) => {
                    self.waiting(&e.to_string());
                    continue;
                }
            };
            info!(port = %name, device = %path.display(), "serial port open");
            self.stats.set_state(SourceState::Open);
            let opened = std::time::Instant::now();
            let why = self.read(port).await;
            if opened.elapsed() >= STABLE_SESSION {
                backoff = REOPEN_MIN;
            }
            self.stats.add(self.counters.reopens, 1);
            self.stats.set_state(SourceState::Waiting);
            self.stats.set_error(why.clone());
            warn!(port = %name, device = %path.display(), "serial port closed: {why}; reopening");
        }
    }

    /// Records why the port is not open, logging at a bounded rate.
    fn waiting(&mut self, why: &str) {
        self.stats.set_state(SourceState::Waiting);
        self.stats.set_error(why);
        if let Some(suppressed) = self.log.allow() {
            warn!(port = %self.source.name, suppressed, "serial port not open: {why}");
        }
    }

    /// Reads until the device goes away; returns why.
    async fn read(&mut self, mut port: SerialPort) -> String {
        let Ok(mut framer) = Framer::new(&self.source) else {
            return "invalid framing settings".to_owned();
        };
        let mut buf = vec![0u8; 4096];
        let gap = self.source.gap;
        let mut pending = false;
        loop {
            let read = embedded_io_async::Read::read(&mut port, &mut buf);
            let result = if framer.uses_gap() && pending {
                match tokio::time::timeout(gap, read).await {
                    Ok(r) => r,
                    Err(_silence) => {
                        pending = false;
                        let received = now_ns();
                        if let Some(frame) = framer.idle() {
                            self.handle(frame, received);
                        }
                        continue;
                    }
                }
            } else {
                read.await
            };
            let n = match result {
                Ok(0) => {
                    let received = now_ns();
                    if let Some(frame) = framer.idle() {
                        self.handle(frame, received);
                    }
                    return "end of file (device gone)".to_owned();
                }
                Ok(n) => n,
                Err(e) => return e.to_string(),
            };
            self.stats.add(self.counters.bytes, n as u64);
            let received = now_ns();
            for &byte in buf.get(..n).unwrap_or_default() {
                if let Some(frame) = framer.push(byte) {
                    self.handle(frame, received);
                }
            }
            pending = true;
        }
    }

    /// Publishes a frame, or counts and logs a decoder error.
    fn handle(&mut self, frame: Result<Frame<'_>, FrameError>, received_ns: i64) {
        let frame = match frame {
            Ok(f) if f.payload.len() > self.source.max_frame => {
                self.bad(
                    "overlong",
                    &format!("frame of {} bytes over max_frame", f.payload.len()),
                );
                return;
            }
            Ok(f) => f,
            Err(e) => {
                self.bad(error_counter(&e), &e.to_string());
                return;
            }
        };
        self.seq += 1;
        self.stats.add(self.counters.frames, 1);
        let device_time = frame.device_time_us.map(|t| t.to_string());
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = &device_time {
            extra.push((DEVICE_TIME_HEADER, t));
        }
        let headers = super::outlet::stamp(received_ns, self.seq, &extra);
        let fields = match self.source.format {
            Format::Raw => None,
            Format::Kv => Some(split::key_values(frame.payload)),
            Format::Json => Some(split::json_fields(frame.payload)),
        };
        match fields {
            None => self.publish(frame.channel, None, &headers, frame.payload),
            Some(Ok(fields)) => {
                for (field, value) in &fields {
                    self.publish(frame.channel, Some(field), &headers, value);
                }
            }
            Some(Err(e)) => self.bad("bad_format", &e.to_string()),
        }
    }

    fn publish(
        &mut self,
        channel: Option<&str>,
        field: Option<&str>,
        headers: &[u8],
        payload: &[u8],
    ) {
        let subject = self.template.render(|name| match name {
            "board" => Some(self.board_name.as_str()),
            "server" => Some(self.server_name.as_str()),
            "port" => Some(self.source.name.as_str()),
            "channel" => channel,
            "field" => field,
            _ => None,
        });
        match self.outlet.publish(&subject, Some(headers), payload) {
            Ok(_) => self.stats.add(self.counters.messages, 1),
            Err(e) => {
                self.stats.add(self.counters.publish_errors, 1);
                self.stats.set_error(e.to_string());
            }
        }
    }

    /// Counts bad input under `counter` and logs it at a bounded rate.
    fn bad(&mut self, counter: &str, what: &str) {
        self.stats.add_named(counter, 1);
        let message = format!("{counter}: {what}");
        self.stats.set_error(message.clone());
        if let Some(suppressed) = self.log.allow() {
            warn!(port = %self.source.name, suppressed, "bad serial input: {message}");
        }
    }
}
