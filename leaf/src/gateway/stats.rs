//! What each gateway source (a serial port, a Modbus bus, a GPIO line group) reports to
//! monitoring: its state, counters and last error. Sources update atomics on their own task;
//! `/sourcesz` and `/metrics` read them.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use leaf_proto::time::now_ns;

/// The connection state of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    /// Not opened yet.
    Starting = 0,
    /// Open and reading.
    Open = 1,
    /// Closed after an error or an unplug; waiting to reopen.
    Waiting = 2,
    /// Stopped (leafd is shutting down).
    Stopped = 3,
}

impl SourceState {
    /// The state's name in monitoring output.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Open => "open",
            SourceState::Waiting => "waiting",
            SourceState::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => SourceState::Open,
            2 => SourceState::Waiting,
            3 => SourceState::Stopped,
            _ => SourceState::Starting,
        }
    }
}

/// One source's monitoring record. Counters are named once, at creation; a source keeps
/// the indexes it needs ([`SourceStats::index`]) and bumps them with [`SourceStats::add`].
#[derive(Debug)]
pub struct SourceStats {
    kind: &'static str,
    name: String,
    /// What the source reads (a device path, a chip and lines).
    target: Mutex<String>,
    state: AtomicU8,
    since_ns: AtomicI64,
    counters: Vec<(&'static str, AtomicU64)>,
    last_error: Mutex<Option<(i64, String)>>,
}

impl SourceStats {
    /// A record for the source `name` of `kind` (`serial`, `modbus`, `gpio`) with the given
    /// counters, all zero.
    pub fn new(kind: &'static str, name: &str, counters: &[&'static str]) -> Self {
        SourceStats {
            kind,
            name: name.to_owned(),
            target: Mutex::new(String::new()),
            state: AtomicU8::new(SourceState::Starting as u8),
            since_ns: AtomicI64::new(now_ns()),
            counters: counters.iter().map(|&c| (c, AtomicU64::new(0))).collect(),
            last_error: Mutex::new(None),
        }
    }

    /// The source kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The source name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of counter `name`, or `None` if it was not declared.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.counters.iter().position(|(n, _)| *n == name)
    }

    /// Adds `n` to the counter at `index` (ignored when out of range).
    pub fn add(&self, index: usize, n: u64) {
        if let Some((_, c)) = self.counters.get(index) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds `n` to the counter called `name` (a linear search: for rare events).
    pub fn add_named(&self, name: &str, n: u64) {
        if let Some(i) = self.index(name) {
            self.add(i, n);
        }
    }

    /// The counter called `name` (0 when not declared).
    pub fn get(&self, name: &str) -> u64 {
        self.index(name)
            .and_then(|i| self.counters.get(i))
            .map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }

    /// Every counter with its value.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters
            .iter()
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Sets the state (and the time it was entered, when it changes).
    pub fn set_state(&self, state: SourceState) {
        if self.state.swap(state as u8, Ordering::Relaxed) != state as u8 {
            self.since_ns.store(now_ns(), Ordering::Relaxed);
        }
    }

    /// The current state.
    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// When the current state was entered (ns since the Unix epoch).
    pub fn since_ns(&self) -> i64 {
        self.since_ns.load(Ordering::Relaxed)
    }

    /// Records the latest error (shown in monitoring).
    pub fn set_error(&self, message: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((now_ns(), message.into()));
        }
    }

    /// The latest error and when it happened.
    pub fn last_error(&self) -> Option<(i64, String)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Records what the source reads (a resolved device path, say).
    pub fn set_target(&self, target: impl Into<String>) {
        if let Ok(mut t) = self.target.lock() {
            *t = target.into();
        }
    }

    /// What the source reads.
    pub fn target(&self) -> String {
        self.target.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Every source of a running leafd, for monitoring.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    sources: Arc<Mutex<Vec<Arc<SourceStats>>>>,
}

impl Registry {
    /// Adds a source's record and returns it.
    pub fn register(&self, stats: SourceStats) -> Arc<SourceStats> {
        let stats = Arc::new(stats);
        if let Ok(mut s) = self.sources.lock() {
            s.push(stats.clone());
        }
        stats
    }

    /// Makes this registry list what `other` lists (a restart: the monitoring port keeps
    /// its handle on this registry).
    pub fn replace_with(&self, other: &Registry) {
        let new = other.sources();
        if let Ok(mut s) = self.sources.lock() {
            *s = new;
        }
    }

    /// Every registered source, in registration order.
    pub fn sources(&self) -> Vec<Arc<SourceStats>> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Logs at most a few messages per interval and counts the rest, so a source that produces
/// garbage at line rate cannot flood the journal.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ns: i64,
    burst: u32,
    window_start_ns: i64,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `burst` messages per `interval`.
    pub fn new(burst: u32, interval: std::time::Duration) -> Self {
        LogLimiter {
            interval_ns: i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX),
            burst,
            window_start_ns: 0,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a message may be logged now. When a new window opens after suppression, the
    /// returned count says how many were suppressed in the last one.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(now_ns())
    }

    fn allow_at(&mut self, now: i64) -> Option<u64> {
        if now.saturating_sub(self.window_start_ns) >= self.interval_ns {
            self.window_start_ns = now;
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_state_and_errors() {
        let reg = Registry::default();
        let s = reg.register(SourceStats::new("serial", "p1", &["frames", "bytes"]));
        let frames = s.index("frames").unwrap();
        s.add(frames, 3);
        s.add_named("bytes", 10);
        s.add_named("nope", 1);
        assert_eq!(s.get("frames"), 3);
        assert_eq!(s.get("bytes"), 10);
        assert_eq!(s.counters(), vec![("frames", 3), ("bytes", 10)]);
        assert_eq!(s.state(), SourceState::Starting);
        s.set_state(SourceState::Open);
        assert_eq!(s.state().as_str(), "open");
        s.set_error("boom");
        assert_eq!(s.last_error().unwrap().1, "boom");
        assert_eq!(reg.sources().len(), 1);
    }

    #[test]
    fn log_limiter_bounds_and_reports_suppressed() {
        let mut l = LogLimiter::new(2, Duration::from_secs(1));
        assert_eq!(l.allow_at(10), Some(0));
        assert_eq!(l.allow_at(11), Some(0));
        assert_eq!(l.allow_at(12), None);
        assert_eq!(l.allow_at(13), None);
        assert_eq!(l.allow_at(1_000_000_011), Some(2));
    }
}
