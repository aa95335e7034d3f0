//! The production backend: the Linux GPIO character device through `gpiocdev`, uAPI v2
//! (debounce, per-line settings in one request, sequence numbers on edge events, event
//! clock selection). Compiled into every build, whatever the target.
//!
//! * Chips are found by label by opening each `/dev/gpiochip*` and reading its info (the
//!   number of the RP1 chip changed between Raspberry Pi 5 OS builds), or by path.
//! * Lines are found by the kernel's line name, else by offset (see
//!   [`GpioLine::offset_in`](crate::gateway::board::GpioLine::offset_in)).
//! * One kernel request per chip; a group's lines normally share one chip.
//! * Edge timestamps use CLOCK_REALTIME unless the group asks otherwise. Kernels before 5.11
//!   refuse it; the request is then repeated with CLOCK_MONOTONIC, and
//!   [`LineRequest::clock`] (hence every payload's `clock`) says `monotonic`.
//! * Events are read in batches of up to [`BATCH`] from the request's file descriptor,
//!   which tokio's reactor watches (`AsyncFd`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::task::{Context, Poll};

use gpiocdev::line::EventClock as CClock;
use gpiocdev::line::{Bias as CBias, Drive as CDrive, EdgeDetection, EdgeKind as CEdge, Value};
use gpiocdev::request::Builder;
use gpiocdev::Chip;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::info;

use super::source::{
    EdgeKind, LineEvent, LineMode, LineRequest, LineSource, RequestSpec, SourceError,
};
use crate::gateway::board::ChipRef;
use crate::gateway::config::gpio::{Bias, Drive, Edge, EventClock};

/// Events read from the kernel per `read` call, at most.
pub const BATCH: usize = 64;

/// The gpiocdev backend.
#[derive(Debug, Default, Clone)]
pub struct CdevSource {
    _private: (),
}

impl CdevSource {
    /// A backend over the system's `/dev/gpiochip*` devices.
    pub fn new() -> Self {
        CdevSource::default()
    }
}

/// One chip's request.
struct ChipRequest {
    fd: AsyncFd<gpiocdev::Request>,
    /// `(offset, index in the spec)` of every requested line.
    lines: Vec<(u32, usize)>,
    has_edges: bool,
    /// Raw events, `u64` words.
    buf: Vec<u64>,
}

/// Lines requested through gpiocdev.
pub struct CdevRequest {
    chips: Vec<ChipRequest>,
    /// `(chip position, offset)` of each line, by spec index.
    lines: Vec<(usize, u32)>,
    pending: VecDeque<LineEvent>,
    next_chip: usize,
    clock: EventClock,
    describe: String,
}

/// A chip found for a request, before the request is made.
struct FoundChip {
    path: PathBuf,
    label: String,
    /// The kernel's line names, by offset.
    names: Vec<String>,
    /// `(offset, spec index)`.
    lines: Vec<(u32, usize)>,
}

impl LineSource for CdevSource {
    type Request = CdevRequest;

    fn request(&mut self, spec: &RequestSpec) -> Result<CdevRequest, SourceError> {
        let found = find_chips(spec)?;
        match request_all(spec, &found, spec.clock) {
            Ok(r) => Ok(r),
            Err(first)
                if spec.clock == EventClock::Realtime
                    && spec.lines.iter().any(|l| l.mode.detects_edges()) =>
            {
                match request_all(spec, &found, EventClock::Monotonic) {
                    Ok(r) => {
                        info!(
                            consumer = %spec.consumer,
                            "the kernel refused CLOCK_REALTIME edge timestamps ({first}); \
                             using CLOCK_MONOTONIC"
                        );
                        Ok(r)
                    }
                    Err(_) => Err(first),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Opens the chips `spec` names and resolves every line to an offset.
fn find_chips(spec: &RequestSpec) -> Result<Vec<FoundChip>, SourceError> {
    let mut found: Vec<(ChipRef, FoundChip)> = Vec::new();
    let mut system: Option<Vec<PathBuf>> = None;
    for (index, line) in spec.lines.iter().enumerate() {
        let pos = match found.iter().position(|(r, _)| *r == line.line.chip) {
            Some(p) => p,
            None => {
                let chip = open_chip(&line.line.chip, &mut system)?;
                found.push((line.line.chip.clone(), chip));
                found.len() - 1
            }
        };
        let Some((_, chip)) = found.get_mut(pos) else {
            continue;
        };
        let offset = line
            .line
            .offset_in(&chip.names)
            .ok_or_else(|| SourceError::LineNotFound {
                chip: format!("{} ({})", chip.label, chip.path.display()),
                line: line.line.to_string(),
            })?;
        if let Some(&(_, other)) = chip.lines.iter().find(|(o, _)| *o == offset) {
            let other = spec.lines.get(other).map_or("?", |l| l.name.as_str());
            return Err(SourceError::Request {
                what: format!("{} ({})", chip.label, chip.path.display()),
                message: format!(
                    "offset {offset} is configured twice ({other} and {})",
                    line.name
                ),
            });
        }
        chip.lines.push((offset, index));
    }
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

/// Finds a chip by label (scanning the system's chips once) or path.
fn open_chip(chip: &ChipRef, system: &mut Option<Vec<PathBuf>>) -> Result<FoundChip, SourceError> {
    let not_found = || SourceError::ChipNotFound(chip.to_string());
    match chip {
        ChipRef::Path(path) => {
            let c = Chip::from_path(path).map_err(|_| not_found())?;
            let label = c.info().map(|i| i.label).unwrap_or_default();
            Ok(FoundChip {
                path: c.path().to_owned(),
                label,
                names: line_names(&c),
                lines: Vec::new(),
            })
        }
        ChipRef::Label(label) => {
            if system.is_none() {
                *system = Some(gpiocdev::chip::chips().unwrap_or_default());
            }
            let paths = system.as_deref().unwrap_or_default();
            paths
                .iter()
                .filter_map(|p| Chip::from_path(p).ok())
                .find(|c| c.info().is_ok_and(|i| i.label == *label))
                .map(|c| FoundChip {
                    path: c.path().to_owned(),
                    label: label.clone(),
                    names: line_names(&c),
                    lines: Vec::new(),
                })
                .ok_or_else(not_found)
        }
    }
}

/// The kernel's line names of `chip`, by offset.
fn line_names(chip: &Chip) -> Vec<String> {
    let count = chip.info().map(|i| i.num_lines).unwrap_or(0);
    (0..count)
        .map(|o| chip.line_info(o).map(|i| i.name).unwrap_or_default())
        .collect()
}

/// Requests every chip's lines with `clock`.
fn request_all(
    spec: &RequestSpec,
    found: &[FoundChip],
    clock: EventClock,
) -> Result<CdevRequest, SourceError> {
    let mut chips = Vec::with_capacity(found.len());
    let mut lines = vec![(0usize, 0u32); spec.lines.len()];
    let mut describe = Vec::new();
    for (pos, chip) in found.iter().enumerate() {
        let what = || format!("{} ({})", chip.label, chip.path.display());
        let mut builder = Builder::default();
        builder
            .on_chip(chip.path.as_path())
            .with_consumer(consumer(&spec.consumer));
        if spec.event_buffer > 0 {
            builder.with_kernel_event_buffer_size(spec.event_buffer);
        }
        let mut has_edges = false;
        let mut names = Vec::new();
        for &(offset, index) in &chip.lines {
            let Some(line) = spec.lines.get(index) else {
                continue;
            };
            if let Some(slot) = lines.get_mut(index) {
                *slot = (pos, offset);
            }
            names.push(format!("{}={offset}", line.name));
            builder.with_line(offset);
            configure(&mut builder, &line.mode, clock);
            has_edges |= line.mode.detects_edges();
        }
        let request = builder.request().map_err(|e| SourceError::Request {
            what: what(),
            message: e.to_string(),
        })?;
        let words = request.edge_event_u64_size().max(1);
        // SAFETY: the request owns its descriptor, closes it only when dropped and always
        // returns the same one from `as_raw_fd`; the `AsyncFd` owns the request.
        let fd = unsafe { AsyncFd::register_with_interest(request, Interest::READABLE) }
            .map_err(|e| SourceError::Io(format!("{}: {e}", what())))?;
        describe.push(format!("{}: {}", what(), names.join(", ")));
        chips.push(ChipRequest {
            fd,
            lines: chip.lines.clone(),
            has_edges,
            buf: vec![0; words * BATCH],
        });
    }
    Ok(CdevRequest {
        chips,
        lines,
        pending: VecDeque::new(),
        next_chip: 0,
        clock,
        describe: describe.join("; "),
    })
}

/// The kernel keeps at most 31 bytes of a consumer label.
fn consumer(name: &str) -> String {
    let mut end = name.len().min(31);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or("leafd").to_owned()
}

/// Applies a line's settings to the selected line of `builder`.
fn configure(builder: &mut Builder, mode: &LineMode, clock: EventClock) {
    match *mode {
        LineMode::Input {
            edge,
            debounce,
            bias,
            active_low,
        } => {
            builder.as_input();
            if active_low {
                builder.as_active_low();
            }
            builder.with_bias(match bias {
                Bias::AsIs => None,
                Bias::PullUp => Some(CBias::PullUp),
                Bias::PullDown => Some(CBias::PullDown),
                Bias::Disabled => Some(CBias::Disabled),
            });
            if !debounce.is_zero() {
                builder.with_debounce_period(debounce);
            }
            let edge = match edge {
                Edge::Rising => Some(EdgeDetection::RisingEdge),
                Edge::Falling => Some(EdgeDetection::FallingEdge),
                Edge::Both => Some(EdgeDetection::BothEdges),
                Edge::None => None,
            };
            if edge.is_some() {
                builder.with_edge_detection(edge);
                builder.with_event_clock(match clock {
                    EventClock::Realtime => CClock::Realtime,
                    EventClock::Monotonic => CClock::Monotonic,
                    EventClock::Hte => CClock::Hte,
                });
            }
        }
        LineMode::Output {
            value,
            active_low,
            drive,
        } => {
            if active_low {
                builder.as_active_low();
            }
            builder.as_output(Value::from(value));
            builder.with_drive(match drive {
                Drive::PushPull => CDrive::PushPull,
                Drive::OpenDrain => CDrive::OpenDrain,
                Drive::OpenSource => CDrive::OpenSource,
            });
        }
    }
}

impl CdevRequest {
    /// Reads a batch of events from one ready chip into `pending`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        let count = self.chips.len();
        for k in 0..count {
            let pos = (self.next_chip + k) % count.max(1);
            let Some(chip) = self.chips.get_mut(pos) else {
                continue;
            };
            if !chip.has_edges {
                continue;
            }
            loop {
                let mut guard = match chip.fd.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SourceError::Io(e.to_string()))),
                    Poll::Ready(Ok(guard)) => guard,
                };
                let request = chip.fd.get_ref();
                // The descriptor is blocking: read only what is there.
                match request.has_edge_event() {
                    Ok(true) => {}
                    Ok(false) => {
                        guard.clear_ready();
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(SourceError::Io(e.to_string()))),
                }
                let words = match request.read_edge_events_into_slice(&mut chip.buf) {
                    Ok(w) => w,
                    Err(e) => return Poll::Ready(Err(SourceError::Io(e.to_string()))),
                };
                let size = request.edge_event_u64_size().max(1);
                if words < chip.buf.len() {
                    // The kernel's buffer is drained (reads copy all that fits).
                    guard.clear_ready();
                }
                for raw in chip.buf.get(..words).unwrap_or_default().chunks_exact(size) {
                    let ev = match request.edge_event_from_slice(raw) {
                        Ok(ev) => ev,
                        Err(e) => return Poll::Ready(Err(SourceError::Io(e.to_string()))),
                    };
                    let Some(&(_, index)) = chip.lines.iter().find(|(o, _)| *o == ev.offset) else {
                        continue;
                    };
                    self.pending.push_back(LineEvent {
                        index,
                        kind: match ev.kind {
                            CEdge::Rising => EdgeKind::Rising,
                            CEdge::Falling => EdgeKind::Falling,
                        },
                        timestamp_ns: ev.timestamp_ns,
                        seqno: ev.seqno,
                        line_seqno: ev.line_seqno,
                    });
                }
                self.next_chip = pos + 1;
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    }

    /// The chip request and offset of line `index`.
    fn line(&self, index: usize) -> Result<(&gpiocdev::Request, u32), SourceError> {
        let &(pos, offset) = self.lines.get(index).ok_or(SourceError::BadIndex(index))?;
        let chip = self.chips.get(pos).ok_or(SourceError::BadIndex(index))?;
        Ok((chip.fd.get_ref(), offset))
    }
}

impl LineRequest for CdevRequest {
    fn next_event(
        &mut self,
    ) -> impl std::future::Future<Output = Result<LineEvent, SourceError>> + Send {
        std::future::poll_fn(move |cx| loop {
            if let Some(ev) = self.pending.pop_front() {
                return Poll::Ready(Ok(ev));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
    }

    fn value(&mut self, index: usize) -> Result<bool, SourceError> {
        let (request, offset) = self.line(index)?;
        request
            .value(offset)
            .map(bool::from)
            .map_err(|e| SourceError::Io(e.to_string()))
    }

    fn set_value(&mut self, index: usize, value: bool) -> Result<(), SourceError> {
        let (request, offset) = self.line(index)?;
        request
            .set_value(offset, Value::from(value))
            .map_err(|e| SourceError::Io(e.to_string()))
    }

    fn clock(&self) -> EventClock {
        self.clock
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::board::GpioLine;
    use crate::gateway::gpio::source::LineSpec;

    #[test]
    fn consumer_labels_fit_the_kernel() {
        assert_eq!(consumer("leafd-panel"), "leafd-panel");
        assert_eq!(consumer(&"x".repeat(40)).len(), 31);
        assert_eq!(consumer(&"é".repeat(20)).len(), 30);
    }

    #[tokio::test]
    async fn a_missing_chip_is_reported_not_panicked() {
        // These machines have no GPIO chips (and no gpio-sim); the backend must say so.
        let spec = RequestSpec {
            consumer: "leafd-test".into(),
            lines: vec![LineSpec {
                line: GpioLine {
                    chip: ChipRef::Label("no-such-chip-label".into()),
                    name: Some("GPIO17".into()),
                    offset: Some(17),
                },
                name: "GPIO17".into(),
                mode: LineMode::Input {
                    edge: Edge::Both,
                    debounce: std::time::Duration::ZERO,
                    bias: Bias::AsIs,
                    active_low: false,
                },
            }],
            clock: EventClock::Realtime,
            event_buffer: 0,
        };
        let err = CdevSource::new().request(&spec).err().unwrap();
        assert_eq!(err, SourceError::ChipNotFound("no-such-chip-label".into()));
        let mut by_path = spec.clone();
        if let Some(l) = by_path.lines.first_mut() {
            l.line.chip = ChipRef::Path("/dev/gpiochip-none".into());
        }
        let err = CdevSource::new().request(&by_path).err().unwrap();
        assert_eq!(err, SourceError::ChipNotFound("/dev/gpiochip-none".into()));
    }
}
