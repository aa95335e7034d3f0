//! The task that runs one GPIO group: requests its lines (retrying with backoff), turns
//! edge events into messages, samples levels, and answers set/get requests.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::source::{LineEvent, LineMode, LineRequest, LineSource, RequestSpec, SourceError};
use crate::gateway::config::gpio::EventClock;
use crate::gateway::outlet::{stamp, Outlet, Request};
use crate::gateway::stats::{LogLimiter, SourceState, SourceStats};
use crate::gateway::GatewayError;
use leaf_proto::time::now_ns;

/// The counters every GPIO group reports.
pub const COUNTERS: &[&str] = &["events", "dropped", "samples", "sets", "gets", "errors"];
/// Header naming the line a message is about.
pub const LINE_HEADER: &str = "Leaf-Gpio-Line";
/// First wait before requesting the lines again.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// What a request on a line's subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `<subject>.get`.
    Get,
    /// `<subject>.set`.
    Set,
}

/// A request, tagged with its line and operation by the forwarding task.
pub(super) type Tagged = (usize, Op, Request);

/// One configured line, as the pipeline publishes it.
#[derive(Debug)]
pub(super) struct Line {
    /// The name in payloads and headers.
    pub name: String,
    /// Where its edge events go.
    pub subject: String,
    /// Where its samples go.
    pub level_subject: String,
    /// How often it is sampled.
    pub sample_interval: Option<Duration>,
    /// The last kernel `line_seqno` seen since the lines were requested.
    last_line_seqno: u32,
}

impl Line {
    /// A line publishing on `subject` (`.level` for samples).
    pub fn new(name: String, subject: String, sample_interval: Option<Duration>) -> Self {
        Line {
            name,
            level_subject: format!("{subject}.level"),
            subject,
            sample_interval,
            last_line_seqno: 0,
        }
    }
}

/// Counter indexes.
struct Counters {
    events: usize,
    dropped: usize,
    samples: usize,
    sets: usize,
    gets: usize,
    errors: usize,
}

/// Why serving an open request ended.
enum End {
    /// The server is gone.
    Stopped,
    /// The request failed; request again.
    Failed(SourceError),
}

/// A group's running state.
pub(super) struct Pipeline<S: LineSource> {
    outlet: Outlet,
    stats: Arc<SourceStats>,
    source: S,
    spec: RequestSpec,
    lines: Vec<Line>,
    requests: mpsc::Receiver<Tagged>,
    requests_open: bool,
    reopen_max: Duration,
    group: String,
    seq: u64,
    counters: Counters,
    errors_log: LogLimiter,
    drops_log: LogLimiter,
    buf: Vec<u8>,
}

#[derive(Serialize)]
struct EventPayload<'a> {
    line: &'a str,
    value: u8,
    edge: &'static str,
    timestamp_ns: u64,
    seq: u32,
    clock: &'static str,
}

#[derive(Serialize)]
struct ValuePayload<'a> {
    line: &'a str,
    value: u8,
}

#[derive(Serialize)]
struct ErrorPayload<'a> {
    line: &'a str,
    error: &'a str,
}

impl<S: LineSource> Pipeline<S> {
    /// A pipeline for `spec`'s lines, described by `lines` (same order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        outlet: Outlet,
        stats: Arc<SourceStats>,
        source: S,
        spec: RequestSpec,
        lines: Vec<Line>,
        requests: mpsc::Receiver<Tagged>,
        reopen_max: Duration,
        group: String,
    ) -> Self {
        let index = |n: &str| stats.index(n).unwrap_or(usize::MAX);
        let counters = Counters {
            events: index("events"),
            dropped: index("dropped"),
            samples: index("samples"),
            sets: index("sets"),
            gets: index("gets"),
            errors: index("errors"),
        };
        Pipeline {
            outlet,
            stats,
            source,
            spec,
            lines,
            requests,
            requests_open: true,
            reopen_max: reopen_max.max(INITIAL_BACKOFF),
            group,
            seq: 0,
            counters,
            errors_log: LogLimiter::new(5, Duration::from_secs(60)),
            drops_log: LogLimiter::new(5, Duration::from_secs(60)),
            buf: Vec::with_capacity(160),
        }
    }

    /// Runs until the server is gone: requests the lines, serves them while they work,
    /// and waits with backoff (answering requests with an error) while they do not.
    pub async fn run(mut self) {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let error = match self.source.request(&self.spec) {
                Ok(request) => {
                    backoff = INITIAL_BACKOFF;
                    self.stats.set_target(request.describe());
                    self.stats.set_state(SourceState::Open);
                    info!(group = %self.group, lines = %request.describe(), clock = request.clock().as_str(), "GPIO lines open");
                    for line in &mut self.lines {
                        line.last_line_seqno = 0;
                    }
                    match self.serve(request).await {
                        End::Stopped => break,
                        End::Failed(e) => e,
                    }
                }
                Err(e) => e,
            };
            let message = error.to_string();
            self.stats.set_error(message.clone());
            self.stats.set_state(SourceState::Waiting);
            if let Some(suppressed) = self.errors_log.allow() {
                warn!(group = %self.group, error = %message, suppressed, retry_in = ?backoff, "GPIO lines not available");
            }
            if self.wait(backoff, &message).await.is_err() {
                break;
            }
            backoff = (backoff * 2).min(self.reopen_max);
        }
        self.stats.set_state(SourceState::Stopped);
    }

    /// Serves an open request until it fails or the server stops.
    async fn serve(&mut self, mut request: S::Request) -> End {
        let clock = request.clock();
        let start = Instant::now();
        let mut due: Vec<Option<Instant>> = self
            .lines
            .iter()
            .map(|l| l.sample_interval.map(|_| start))
            .collect();
        loop {
            let next_due = due.iter().flatten().min().copied();
            let sample_timer = async move {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = request.next_event() => match event {
                    Ok(event) => {
                        if let Err(end) = self.on_event(&event, clock) {
                            return end;
                        }
                    }
                    Err(e) => return End::Failed(e),
                },
                () = sample_timer => {
                    let now = Instant::now();
                    for (index, slot) in due.iter_mut().enumerate() {
                        let Some(at) = *slot else { continue };
                        if at > now {
                            continue;
                        }
                        let interval = self
                            .lines
                            .get(index)
                            .and_then(|l| l.sample_interval)
                            .unwrap_or(Duration::from_secs(1));
                        // Keep the cadence; skip samples missed while busy.
                        let mut next = at + interval;
                        if next <= now {
                            next = now + interval;
                        }
                        *slot = Some(next);
                        if let Err(end) = self.sample(&mut request, index) {
                            return end;
                        }
                    }
                }
                tagged = self.requests.recv(), if self.requests_open => match tagged {
                    Some((index, op, req)) => {
                        if let Err(end) = self.on_request(&mut request, index, op, &req) {
                            return end;
                        }
                    }
                    None => self.requests_open = false,
                },
            }
        }
    }

    /// Waits `delay`, answering requests with `error`. Err when the server is gone.
    async fn wait(&mut self, delay: Duration, error: &str) -> Result<(), ()> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(()),
                tagged = self.requests.recv(), if self.requests_open => match tagged {
                    Some((index, _, req)) => {
                        let message = format!("GPIO group `{}` is not open: {error}", self.group);
                        self.reply_error(index, &req, &message);
                    }
                    None => self.requests_open = false,
                },
            }
        }
    }

    /// Publishes one edge event, counting sequence gaps as dropped events.
    fn on_event(&mut self, event: &LineEvent, clock: EventClock) -> Result<(), End> {
        let Some(line) = self.lines.get_mut(event.index) else {
            self.stats.add(self.counters.errors, 1);
            return Ok(());
        };
        if event.line_seqno != 0 {
            let expected = line.last_line_seqno.wrapping_add(1);
            if event.line_seqno > expected {
                let lost = u64::from(event.line_seqno - expected);
                self.stats.add(self.counters.dropped, lost);
                if let Some(suppressed) = self.drops_log.allow() {
                    warn!(group = %self.group, line = %line.name, lost, suppressed,
                        "the kernel's GPIO event buffer overflowed; events were lost");
                }
            }
            line.last_line_seqno = event.line_seqno;
        }
        self.buf.clear();
        let payload = EventPayload {
            line: &line.name,
            value: u8::from(event.kind == super::source::EdgeKind::Rising),
            edge: event.kind.as_str(),
            timestamp_ns: event.timestamp_ns,
            seq: event.line_seqno,
            clock: clock.as_str(),
        };
        if serde_json::to_writer(&mut self.buf, &payload).is_err() {
            self.stats.add(self.counters.errors, 1);
            return Ok(());
        }
        self.publish_buf(event.index, false, self.counters.events)
    }

    /// Publishes the level of line `index` on its `.level` subject.
    fn sample(&mut self, request: &mut S::Request, index: usize) -> Result<(), End> {
        let value = request.value(index).map_err(End::Failed)?;
        let Some(line) = self.lines.get(index) else {
            return Ok(());
        };
        self.buf.clear();
        let payload = ValuePayload {
            line: &line.name,
            value: u8::from(value),
        };
        if serde_json::to_writer(&mut self.buf, &payload).is_err() {
            return Ok(());
        }
        self.publish_buf(index, true, self.counters.samples)
    }

    /// Publishes the JSON in `buf` about line `index` on the line's event subject, or on its
    /// `.level` subject when `level`, with the gateway headers; counts it under `counter`, or
    /// as an error when the outlet refuses it.
    fn publish_buf(&mut self, index: usize, level: bool, counter: usize) -> Result<(), End> {
        let Some(line) = self.lines.get(index) else {
            return Ok(());
        };
        let subject = if level {
            &line.level_subject
        } else {
            &line.subject
        };
        self.seq += 1;
        let headers = stamp(now_ns(), self.seq, &[(LINE_HEADER, &line.name)]);
        match self.outlet.publish(subject, Some(&headers), &self.buf) {
            Ok(_) => {
                self.stats.add(counter, 1);
                Ok(())
            }
            Err(GatewayError::Stopped) => Err(End::Stopped),
            Err(_) => {
                self.stats.add(self.counters.errors, 1);
                Ok(())
            }
        }
    }

    /// Answers a get or set on line `index`.
    fn on_request(
        &mut self,
        request: &mut S::Request,
        index: usize,
        op: Op,
        req: &Request,
    ) -> Result<(), End> {
        let Some(mode) = self.spec.lines.get(index).map(|l| l.mode) else {
            return Ok(());
        };
        let result = match (op, mode) {
            (Op::Get, _) => request
                .value(index)
                .inspect(|_| self.stats.add(self.counters.gets, 1)),
            (Op::Set, LineMode::Input { .. }) => {
                let name = self.lines.get(index).map_or("?", |l| l.name.as_str());
                let message = format!("`{name}` is an input; only the group's outputs can be set");
                self.reply_error(index, req, &message);
                return Ok(());
            }
            (Op::Set, LineMode::Output { .. }) => match parse_value(&req.payload) {
                Ok(value) => request.set_value(index, value).map(|()| {
                    self.stats.add(self.counters.sets, 1);
                    // Reopening drives the last value set.
                    if let Some(LineMode::Output { value: v, .. }) =
                        self.spec.lines.get_mut(index).map(|l| &mut l.mode)
                    {
                        *v = value;
                    }
                    value
                }),
                Err(message) => {
                    self.reply_error(index, req, &message);
                    return Ok(());
                }
            },
        };
        match result {
            Ok(value) => {
                let Some(line) = self.lines.get(index) else {
                    return Ok(());
                };
                self.buf.clear();
                let payload = ValuePayload {
                    line: &line.name,
                    value: u8::from(value),
                };
                if serde_json::to_writer(&mut self.buf, &payload).is_ok() {
                    self.outlet.respond(req, &self.buf);
                }
                Ok(())
            }
            Err(e) => {
                self.reply_error(index, req, &e.to_string());
                match e {
                    SourceError::Io(_) => Err(End::Failed(e)),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Answers `req` with `{"line":…,"error":…}` and counts an error.
    fn reply_error(&mut self, index: usize, req: &Request, message: &str) {
        self.stats.add(self.counters.errors, 1);
        let line = self.lines.get(index).map_or("", |l| l.name.as_str());
        self.buf.clear();
        let payload = ErrorPayload {
            line,
            error: message,
        };
        if serde_json::to_writer(&mut self.buf, &payload).is_ok() {
            self.outlet.respond(req, &self.buf);
        }
    }
}

/// Parses a set request's body: `1`, `0`, `true`, `false`, `on`, `off`, `high`, `low`
/// (any case, surrounding whitespace ignored), one of those as a JSON string (or a JSON
/// `true`, `false`, `0`, `1`), or a JSON object whose only key is `value`, holding one of
/// those. Anything else is refused, in particular the answers and messages of the gateways
/// (`{"line":…,"value":…}` from a `.get`, an edge event or a level sample), so a reply that
/// lands on a `.set` subject cannot drive an output.
pub fn parse_value(payload: &[u8]) -> Result<bool, String> {
    fn word(s: &str) -> Option<bool> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "high" => Some(true),
            "0" | "false" | "off" | "low" => Some(false),
            _ => None,
        }
    }
    fn scalar(v: &serde_json::Value) -> Option<bool> {
        match v {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            serde_json::Value::String(s) => word(s),
            _ => None,
        }
    }
    fn json(v: &serde_json::Value) -> Option<bool> {
        match v {
            serde_json::Value::Object(o) if o.len() == 1 => o.get("value").and_then(scalar),
            other => scalar(other),
        }
    }
    let text = std::str::from_utf8(payload).unwrap_or_default();
    word(text)
        .or_else(|| {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .as_ref()
                .and_then(json)
        })
        .ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            format!(
                "cannot set a line to `{shown}`: send 1, 0, true, false, on, off, high, low \
                 or {{\"value\":1}}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_payloads() {
        for (text, want) in [
            ("1", true),
            (" 0\r\n", false),
            ("TRUE", true),
            ("off", false),
            ("High", true),
            ("\"low\"", false),
            ("{\"value\":1}", true),
            ("{\"value\":false}", false),
            ("{\"value\":\"on\"}", true),
            ("true\n", true),
        ] {
            assert_eq!(parse_value(text.as_bytes()), Ok(want), "{text:?}");
        }
        for bad in ["", "2", "yes", "{\"v\":1}", "[1]", "\u{fffd}"] {
            assert!(parse_value(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn other_handlers_answers_do_not_set_a_line() {
        // What the gateways and JetStream send as answers or messages: none of it is a set
        // request, so a reply loop cannot drive an output.
        for answer in [
            r#"{"line":"door","value":1}"#,
            r#"{"line":"door","value":1,"edge":"rising","timestamp_ns":5,"seq":1,"clock":"realtime"}"#,
            r#"{"line":"door","error":"`door` is an input"}"#,
            r#"{"value":{"value":1}}"#,
            r#"{"value":1,"unit":"V"}"#,
            r#"{"ok":true}"#,
            r#"{"stream":"S","seq":1}"#,
            r#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0}"#,
        ] {
            assert!(parse_value(answer.as_bytes()).is_err(), "{answer}");
        }
    }
}
