//! An in-process stand-in for the kernel's GPIO character device, behind the same
//! [`LineSource`] trait as [`super::cdev`]. The machines leafd is developed and tested on
//! have no GPIO simulator (Debian's kernels are built without gpio-sim), so the pipeline's
//! tests and its benchmark drive this instead.
//!
//! A test holds a [`SimHandle`] and changes the *physical* level of lines at timestamps it
//! chooses ([`SimHandle::set_level`]); the simulated kernel turns them into edge events the
//! way gpiolib-cdev does:
//!
//! * **Debounce**: a new level must stay stable for the debounce period before it is
//!   reported; the event is stamped when the period ends (the kernel's debounce work runs
//!   then). Bounces shorter than the period are swallowed, and a pulse that returns to the
//!   reported level within the period produces nothing. Time is the test's: levels settle
//!   when a later change or [`SimHandle::advance`] passes the end of the period.
//! * **Active low** inverts the level before the edge is classified; edge filters
//!   (rising/falling) drop events but still track the level.
//! * **Sequence numbers**: `line_seqno` counts a line's events, `seqno` the request's.
//! * **Overflow**: the event buffer holds `event_buffer` events (default 16 per line,
//!   rounded up to a power of two); when it is full the oldest event is dropped, leaving a
//!   gap in the sequence numbers. [`SimHandle::hold`] stops the reader so a test can
//!   overflow it; [`SimHandle::inject_gap`] skips sequence numbers directly.
//! * **Chips** are found by label or path and lines by name or offset, with the same
//!   resolution as the real backend; chips can be removed and restored
//!   ([`SimHandle::remove_chip`]) and lines marked busy, to exercise reopening.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use super::cdev::BATCH;
use super::source::{
    EdgeKind, LineEvent, LineMode, LineRequest, LineSource, RequestSpec, SourceError,
};
use crate::gateway::board::ChipRef;
use crate::gateway::config::gpio::{Bias, Edge, EventClock};

/// A simulated chip.
#[derive(Debug, Clone)]
struct SimChip {
    label: String,
    path: PathBuf,
    /// Line names by offset.
    names: Vec<String>,
    /// Physical levels by offset (`None`: never driven; a request applies its bias).
    levels: Vec<Option<bool>>,
    present: bool,
    busy: Vec<bool>,
}

/// One requested line.
#[derive(Debug)]
struct SimLine {
    chip: usize,
    offset: u32,
    mode: LineMode,
    /// The physical level last reported (inputs; the kernel's debounced level).
    stable: bool,
    /// When the physical level last changed (inputs).
    changed_ns: u64,
    /// Events of this line so far.
    line_seqno: u32,
}

/// The lines of the current request.
#[derive(Debug)]
struct Active {
    generation: u64,
    lines: Vec<SimLine>,
    events: VecDeque<LineEvent>,
    capacity: usize,
    seqno: u32,
    clock: EventClock,
    /// Set when a chip of the request is removed.
    closed: bool,
}

#[derive(Debug, Default)]
struct State {
    chips: Vec<SimChip>,
    active: Option<Active>,
    generation: u64,
    held: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: Notify,
    room: Notify,
    requested: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The simulated kernel, as a [`LineSource`].
#[derive(Debug)]
pub struct SimSource {
    shared: Arc<Shared>,
}

/// The test's side of a [`SimSource`]: drives levels, reads outputs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

/// Lines granted by a [`SimSource`].
#[derive(Debug)]
pub struct SimRequest {
    shared: Arc<Shared>,
    generation: u64,
    describe: String,
    /// Events read from the buffer, not yet returned (reads take up to a batch, as the
    /// real backend's do).
    pending: VecDeque<LineEvent>,
}

impl SimSource {
    /// A simulated kernel with no chips, and its handle.
    pub fn new() -> (SimSource, SimHandle) {
        let (requested, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            events: Notify::new(),
            room: Notify::new(),
            requested,
        });
        (
            SimSource {
                shared: shared.clone(),
            },
            SimHandle { shared },
        )
    }
}

impl SimHandle {
    /// Adds a chip with `label`, device `path` and line names by offset.
    pub fn add_chip(&self, label: &str, path: &str, names: &[&str]) {
        self.shared.lock().chips.push(SimChip {
            label: label.to_owned(),
            path: PathBuf::from(path),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            levels: vec![None; names.len()],
            present: true,
            busy: vec![false; names.len()],
        });
    }

    /// Removes the chip `label` (an unplugged expander): requests fail, and a request
    /// holding its lines fails on its next read.
    pub fn remove_chip(&self, label: &str) {
        let mut st = self.shared.lock();
        let Some(pos) = st.chips.iter().position(|c| c.label == label) else {
            return;
        };
        if let Some(c) = st.chips.get_mut(pos) {
            c.present = false;
        }
        if let Some(active) = &mut st.active {
            if active.lines.iter().any(|l| l.chip == pos) {
                active.closed = true;
            }
        }
        drop(st);
        self.shared.events.notify_one();
    }

    /// Brings back a removed chip.
    pub fn restore_chip(&self, label: &str) {
        let mut st = self.shared.lock();
        for c in st.chips.iter_mut().filter(|c| c.label == label) {
            c.present = true;
        }
    }

    /// Marks the line `name` as used by another program (requests fail) or free.
    pub fn set_busy(&self, name: &str, busy: bool) {
        let mut st = self.shared.lock();
        if let Some((c, o)) = find_line(&st, name) {
            if let Some(b) = st.chips.get_mut(c).and_then(|c| c.busy.get_mut(o)) {
                *b = busy;
            }
        }
    }

    /// Changes the physical level of line `name` (a kernel line name, or `label:offset`)
    /// at `t_ns`. Times must not go backwards. Returns false if there is no such line.
    pub fn set_level(&self, name: &str, level: bool, t_ns: u64) -> bool {
        let mut st = self.shared.lock();
        let Some((c, o)) = find_line(&st, name) else {
            return false;
        };
        let emitted = settle(&mut st, t_ns);
        let current = level_of(&st, c, o);
        let mut emitted_now = false;
        if current != Some(level) {
            if let Some(l) = st.chips.get_mut(c).and_then(|c| c.levels.get_mut(o)) {
                *l = Some(level);
            }
            if let Some(active) = &mut st.active {
                let found = active
                    .lines
                    .iter()
                    .position(|l| l.chip == c && usize::try_from(l.offset).ok() == Some(o));
                if let Some(i) = found {
                    if let Some(LineMode::Input { debounce, .. }) =
                        active.lines.get(i).map(|l| l.mode)
                    {
                        if debounce.is_zero() {
                            emitted_now = report(active, i, level, t_ns);
                        } else if let Some(line) = active.lines.get_mut(i) {
                            line.changed_ns = t_ns;
                        }
                    }
                }
            }
        }
        drop(st);
        if emitted || emitted_now {
            self.shared.events.notify_one();
        }
        true
    }

    /// Lets simulated time reach `t_ns`: levels that have been stable for their debounce
    /// period by then are reported.
    pub fn advance(&self, t_ns: u64) {
        let emitted = settle(&mut self.shared.lock(), t_ns);
        if emitted {
            self.shared.events.notify_one();
        }
    }

    /// Skips `n` sequence numbers of line `name`, as if the kernel had dropped `n` of its
    /// events.
    pub fn inject_gap(&self, name: &str, n: u32) {
        let mut st = self.shared.lock();
        let Some((c, o)) = find_line(&st, name) else {
            return;
        };
        if let Some(active) = &mut st.active {
            if let Some(line) = active
                .lines
                .iter_mut()
                .find(|l| l.chip == c && usize::try_from(l.offset).ok() == Some(o))
            {
                line.line_seqno = line.line_seqno.wrapping_add(n);
                active.seqno = active.seqno.wrapping_add(n);
            }
        }
    }

    /// Stops (`true`) or resumes (`false`) handing events to the reader, as a reader that
    /// falls behind; events pile up in the buffer and overflow it.
    pub fn hold(&self, held: bool) {
        self.shared.lock().held = held;
        if !held {
            self.shared.events.notify_one();
        }
    }

    /// The physical level of line `name` (`None`: unknown line or never driven).
    pub fn level(&self, name: &str) -> Option<bool> {
        let st = self.shared.lock();
        let (c, o) = find_line(&st, name)?;
        level_of(&st, c, o)
    }

    /// Events waiting in the buffer.
    pub fn queued(&self) -> usize {
        self.shared
            .lock()
            .active
            .as_ref()
            .map_or(0, |a| a.events.len())
    }

    /// How many requests have succeeded so far.
    pub fn requests(&self) -> u64 {
        *self.shared.requested.borrow()
    }

    /// Waits until at least `n` requests have succeeded.
    pub async fn wait_requests(&self, n: u64) {
        let mut rx = self.shared.requested.subscribe();
        let _ = rx.wait_for(|&g| g >= n).await;
    }

    /// Waits until the event buffer has room (or nothing is requested).
    pub async fn wait_room(&self) {
        loop {
            let notified = self.shared.room.notified();
            {
                let st = self.shared.lock();
                match &st.active {
                    Some(a) if a.events.len() >= a.capacity && !a.closed => {}
                    _ => return,
                }
            }
            notified.await;
        }
    }
}

/// The chip and offset of `name`: a line name on a present chip, or `label:offset`.
fn find_line(st: &State, name: &str) -> Option<(usize, usize)> {
    if let Some((label, offset)) = name.rsplit_once(':') {
        let o: usize = offset.parse().ok()?;
        let c = st.chips.iter().position(|c| c.label == label)?;
        return (o < st.chips.get(c)?.names.len()).then_some((c, o));
    }
    st.chips
        .iter()
        .enumerate()
        .find_map(|(c, chip)| chip.names.iter().position(|n| n == name).map(|o| (c, o)))
}

fn level_of(st: &State, chip: usize, offset: usize) -> Option<bool> {
    st.chips.get(chip)?.levels.get(offset).copied().flatten()
}

/// Reports every debounced line whose new level has been stable long enough by `t_ns`,
/// in time order. Returns whether an event was queued.
fn settle(st: &mut State, t_ns: u64) -> bool {
    let State { chips, active, .. } = st;
    let Some(active) = active else {
        return false;
    };
    let mut due: Vec<(u64, usize, bool)> = Vec::new();
    for (i, line) in active.lines.iter().enumerate() {
        let LineMode::Input { debounce, .. } = line.mode else {
            continue;
        };
        if debounce.is_zero() {
            continue;
        }
        let level = chips
            .get(line.chip)
            .and_then(|c| c.levels.get(usize::try_from(line.offset).ok()?).copied())
            .flatten()
            .unwrap_or(false);
        let period = u64::try_from(debounce.as_nanos()).unwrap_or(u64::MAX);
        let at = line.changed_ns.saturating_add(period);
        if level != line.stable && at <= t_ns {
            due.push((at, i, level));
        }
    }
    due.sort_unstable();
    let mut queued = false;
    for (at, i, level) in due {
        queued |= report(active, i, level, at);
    }
    queued
}

/// The kernel reporting line `i`'s new physical `level` at `t_ns`: tracks the level, and
/// queues an event if the edge is watched. Returns whether it queued one.
fn report(active: &mut Active, i: usize, level: bool, t_ns: u64) -> bool {
    let Some(line) = active.lines.get_mut(i) else {
        return false;
    };
    line.stable = level;
    let LineMode::Input {
        edge, active_low, ..
    } = line.mode
    else {
        return false;
    };
    let logical = level != active_low;
    let watched = match edge {
        Edge::Both => true,
        Edge::Rising => logical,
        Edge::Falling => !logical,
        Edge::None => false,
    };
    if !watched {
        return false;
    }
    line.line_seqno = line.line_seqno.wrapping_add(1);
    active.seqno = active.seqno.wrapping_add(1);
    let event = LineEvent {
        index: i,
        kind: if logical {
            EdgeKind::Rising
        } else {
            EdgeKind::Falling
        },
        timestamp_ns: t_ns,
        seqno: active.seqno,
        line_seqno: line.line_seqno,
    };
    if active.events.len() >= active.capacity {
        // The kernel's kfifo drops the oldest event to make room.
        active.events.pop_front();
    }
    active.events.push_back(event);
    true
}

impl LineSource for SimSource {
    type Request = SimRequest;

    fn request(&mut self, spec: &RequestSpec) -> Result<SimRequest, SourceError> {
        let mut st = self.shared.lock();
        let mut lines: Vec<SimLine> = Vec::with_capacity(spec.lines.len());
        let mut describe = Vec::new();
        for line in &spec.lines {
            let found = st.chips.iter().position(|c| {
                c.present
                    && match &line.line.chip {
                        ChipRef::Label(l) => c.label == *l,
                        ChipRef::Path(p) => c.path == *p || same_file(&c.path, p),
                    }
            });
            let c = found.ok_or_else(|| SourceError::ChipNotFound(line.line.chip.to_string()))?;
            let chip = st.chips.get(c).ok_or(SourceError::BadIndex(c))?;
            let what = || format!("{} ({})", chip.label, chip.path.display());
            let offset =
                line.line
                    .offset_in(&chip.names)
                    .ok_or_else(|| SourceError::LineNotFound {
                        chip: what(),
                        line: line.line.to_string(),
                    })?;
            let o = usize::try_from(offset).map_err(|_| SourceError::BadIndex(0))?;
            if chip.busy.get(o).copied().unwrap_or(false) {
                return Err(SourceError::Request {
                    what: what(),
                    message: format!("line {offset}: Device or resource busy"),
                });
            }
            if lines.iter().any(|l| l.chip == c && l.offset == offset) {
                return Err(SourceError::Request {
                    what: what(),
                    message: format!("offset {offset} is configured twice"),
                });
            }
            describe.push(format!("{}: {}={offset}", what(), line.name));
            lines.push(SimLine {
                chip: c,
                offset,
                mode: line.mode,
                stable: false,
                changed_ns: 0,
                line_seqno: 0,
            });
        }
        // Apply the request: bias of never-driven inputs, output values.
        for line in &mut lines {
            let o = usize::try_from(line.offset).unwrap_or(usize::MAX);
            let Some(level) = st
                .chips
                .get_mut(line.chip)
                .and_then(|c| c.levels.get_mut(o))
            else {
                continue;
            };
            match line.mode {
                LineMode::Input { bias, .. } => {
                    let l = *level.get_or_insert(bias == Bias::PullUp);
                    line.stable = l;
                }
                LineMode::Output {
                    value, active_low, ..
                } => *level = Some(value != active_low),
            }
        }
        let capacity = if spec.event_buffer > 0 {
            usize::try_from(spec.event_buffer).unwrap_or(1024)
        } else {
            16 * lines.len().max(1)
        }
        .next_power_of_two();
        st.generation += 1;
        let generation = st.generation;
        st.active = Some(Active {
            generation,
            lines,
            events: VecDeque::with_capacity(capacity),
            capacity,
            seqno: 0,
            clock: spec.clock,
            closed: false,
        });
        drop(st);
        self.shared.requested.send_replace(generation);
        Ok(SimRequest {
            shared: self.shared.clone(),
            generation,
            describe: describe.join("; "),
            pending: VecDeque::with_capacity(BATCH),
        })
    }
}

/// Whether two paths name the same existing file (a symlink to a chip, say).
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

impl SimRequest {
    /// Runs `f` on this request's lines, if they are still the active ones and open.
    fn with_active<T>(
        &self,
        f: impl FnOnce(&mut Active, &mut Vec<SimChip>) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let mut st = self.shared.lock();
        let State { active, chips, .. } = &mut *st;
        match active {
            Some(a) if a.generation == self.generation && !a.closed => f(a, chips),
            _ => Err(SourceError::Io("the GPIO chip went away".to_owned())),
        }
    }
}

impl LineRequest for SimRequest {
    async fn next_event(&mut self) -> Result<LineEvent, SourceError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let notified = self.shared.events.notified();
            let failed = {
                let mut st = self.shared.lock();
                let held = st.held;
                match &mut st.active {
                    Some(a) if a.generation == self.generation => {
                        if a.closed {
                            Some(SourceError::Io("the GPIO chip went away".to_owned()))
                        } else {
                            if !held {
                                let n = a.events.len().min(BATCH);
                                self.pending.extend(a.events.drain(..n));
                            }
                            None
                        }
                    }
                    _ => Some(SourceError::Io("the request was released".to_owned())),
                }
            };
            if let Some(e) = failed {
                return Err(e);
            }
            if self.pending.is_empty() {
                notified.await;
            } else {
                self.shared.room.notify_one();
            }
        }
    }

    fn value(&mut self, index: usize) -> Result<bool, SourceError> {
        self.with_active(|a, chips| {
            let line = a.lines.get(index).ok_or(SourceError::BadIndex(index))?;
            match line.mode {
                LineMode::Input { active_low, .. } => Ok(line.stable != active_low),
                LineMode::Output { active_low, .. } => {
                    let physical = chips
                        .get(line.chip)
                        .and_then(|c| c.levels.get(usize::try_from(line.offset).ok()?).copied())
                        .flatten()
                        .unwrap_or(false);
                    Ok(physical != active_low)
                }
            }
        })
    }

    fn set_value(&mut self, index: usize, value: bool) -> Result<(), SourceError> {
        self.with_active(|a, chips| {
            let line = a.lines.get(index).ok_or(SourceError::BadIndex(index))?;
            let LineMode::Output { active_low, .. } = line.mode else {
                return Err(SourceError::BadIndex(index));
            };
            let level = chips
                .get_mut(line.chip)
                .and_then(|c| c.levels.get_mut(usize::try_from(line.offset).ok()?))
                .ok_or(SourceError::BadIndex(index))?;
            *level = Some(value != active_low);
            Ok(())
        })
    }

    fn clock(&self) -> EventClock {
        self.shared
            .lock()
            .active
            .as_ref()
            .map_or(EventClock::Monotonic, |a| a.clock)
    }

    fn describe(&self) -> String {
        format!("simulated {}", self.describe)
    }
}

impl Drop for SimRequest {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st
            .active
            .as_ref()
            .is_some_and(|a| a.generation == self.generation)
        {
            st.active = None;
        }
        drop(st);
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::board::GpioLine;
    use crate::gateway::gpio::source::LineSpec;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn input(name: &str, debounce_ms: u64, edge: Edge) -> LineSpec {
        LineSpec {
            line: GpioLine {
                chip: ChipRef::Label("chip".into()),
                name: Some(name.into()),
                offset: None,
            },
            name: name.into(),
            mode: LineMode::Input {
                edge,
                debounce: Duration::from_millis(debounce_ms),
                bias: Bias::AsIs,
                active_low: false,
            },
        }
    }

    fn spec(lines: Vec<LineSpec>, event_buffer: u32) -> RequestSpec {
        RequestSpec {
            consumer: "t".into(),
            lines,
            clock: EventClock::Realtime,
            event_buffer,
        }
    }

    fn drain(a: &Arc<Shared>) -> Vec<LineEvent> {
        a.lock()
            .active
            .as_mut()
            .map(|a| a.events.drain(..).collect())
            .unwrap_or_default()
    }

    #[test]
    fn debounce_reports_stable_levels_only() {
        let (mut src, h) = SimSource::new();
        h.add_chip("chip", "/dev/gpiochip9", &["A", "B"]);
        let _req = src
            .request(&spec(vec![input("A", 10, Edge::Both)], 0))
            .unwrap();
        // Bounces: the level is stable from 3 ms, so the edge is reported at 13 ms.
        h.set_level("A", true, 0);
        h.set_level("A", false, 2 * MS);
        h.set_level("A", true, 3 * MS);
        h.advance(12 * MS);
        assert!(drain(&src.shared).is_empty());
        h.advance(13 * MS);
        let evs = drain(&src.shared);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EdgeKind::Rising);
        assert_eq!(evs[0].timestamp_ns, 13 * MS);
        assert_eq!((evs[0].seqno, evs[0].line_seqno), (1, 1));
        // A 5 ms pulse back to the reported level: nothing.
        h.set_level("A", false, 20 * MS);
        h.set_level("A", true, 25 * MS);
        h.advance(100 * MS);
        assert!(drain(&src.shared).is_empty());
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let (mut src, h) = SimSource::new();
        h.add_chip("chip", "/dev/gpiochip9", &["A"]);
        let _req = src
            .request(&spec(vec![input("A", 0, Edge::Both)], 3))
            .unwrap();
        for i in 0..10u64 {
            h.set_level("A", i % 2 == 0, i * MS);
        }
        let seqs: Vec<u32> = drain(&src.shared).iter().map(|e| e.line_seqno).collect();
        // Capacity 3 rounds up to 4, like the kernel's kfifo.
        assert_eq!(seqs, vec![7, 8, 9, 10]);
    }

    #[test]
    fn edge_filters_track_the_level() {
        let (mut src, h) = SimSource::new();
        h.add_chip("chip", "/dev/gpiochip9", &["A"]);
        let _req = src
            .request(&spec(vec![input("A", 0, Edge::Rising)], 0))
            .unwrap();
        for i in 0..4u64 {
            h.set_level("A", i % 2 == 0, i * MS);
        }
        let evs = drain(&src.shared);
        assert_eq!(evs.len(), 2);
        assert!(evs.iter().all(|e| e.kind == EdgeKind::Rising));
        assert_eq!(evs[1].line_seqno, 2);
    }

    #[test]
    fn missing_busy_and_unknown_lines() {
        let (mut src, h) = SimSource::new();
        assert!(matches!(
            src.request(&spec(vec![input("A", 0, Edge::Both)], 0)),
            Err(SourceError::ChipNotFound(_))
        ));
        h.add_chip("chip", "/dev/gpiochip9", &["A"]);
        assert!(matches!(
            src.request(&spec(vec![input("Z", 0, Edge::Both)], 0)),
            Err(SourceError::LineNotFound { .. })
        ));
        h.set_busy("A", true);
        assert!(matches!(
            src.request(&spec(vec![input("A", 0, Edge::Both)], 0)),
            Err(SourceError::Request { .. })
        ));
        h.set_busy("A", false);
        assert!(src
            .request(&spec(vec![input("A", 0, Edge::Both)], 0))
            .is_ok());
        assert_eq!(h.requests(), 1);
    }
}
