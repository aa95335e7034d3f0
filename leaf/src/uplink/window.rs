//! The uplink's send window: how many messages may be in flight to the hub, sized from what
//! the path delivers.
//!
//! A fixed window is wrong on one side or the other. On a fast link the hub's answers come
//! back within milliseconds and a big window keeps its store busy with large group commits;
//! on a thin WAN every message queued in front of another adds to that message's wait (and to
//! the link's pings behind it): a window worth seconds of the link's rate makes answers time
//! out and the link look dead, and the whole window goes again.
//!
//! So the window is the path's bandwidth-delay product plus a bounded queue, in the manner of
//! delay-based congestion control (BBR, LEDBAT):
//!
//! * the base delay is the shortest answer delay seen on this connection (from a message's
//!   send to its PubAck: the round trip and the hub's commit, without queueing);
//! * the delivery rate is measured over intervals of at least a base delay (and
//!   [`MIN_SAMPLE`]): messages acknowledged per second. It follows a higher sample at once and
//!   a lower one half-way;
//! * the window is `rate x (base delay + queue target)`, where the queue target is a tenth
//!   of `ack_timeout`, between [`MIN_WINDOW`] and `max_in_flight`.
//!
//! The slack the queue target gives lets the rate grow from one interval to the next while
//! the path has room (on loopback the window reaches `max_in_flight` within milliseconds); once
//! the path is full the rate stops growing and the queue in front of each message stays near
//! the target. A timeout quarters the window and forgets the rate; a new connection starts
//! over at [`INITIAL_WINDOW`].

use std::time::{Duration, Instant};

/// The smallest window.
pub const MIN_WINDOW: usize = 64;
/// The window a connection starts with (when `max_in_flight` allows).
pub const INITIAL_WINDOW: usize = 1024;
/// Shortest interval a delivery rate is measured over.
pub const MIN_SAMPLE: Duration = Duration::from_millis(50);

/// The number of messages that may be in flight, sized from the measured delivery rate and
/// base delay.
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    max: usize,
    /// Queueing allowed on top of the base delay.
    queue_target: Duration,
    base_delay: Option<Duration>,
    /// Messages acknowledged per second.
    rate: f64,
    /// The interval being measured: its start and what was acknowledged since.
    sample: Option<(Instant, usize)>,
}

impl Window {
    /// A window of at most `max` messages whose answers are due within `ack_timeout`.
    pub fn new(max: usize, ack_timeout: Duration) -> Window {
        let max = max.max(1);
        Window {
            limit: INITIAL_WINDOW.min(max),
            max,
            queue_target: ack_timeout / 10,
            base_delay: None,
            rate: 0.0,
            sample: None,
        }
    }

    /// Messages that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// New settings (a configuration reload): the window stays where it is, within `max`.
    pub fn reconfigure(&mut self, max: usize, ack_timeout: Duration) {
        self.max = max.max(1);
        self.limit = self.limit.min(self.max);
        self.queue_target = ack_timeout / 10;
    }

    /// A new connection: the path may be another one.
    pub fn restart(&mut self) {
        self.limit = INITIAL_WINDOW.min(self.max);
        self.base_delay = None;
        self.rate = 0.0;
        self.sample = None;
    }

    /// An answer at `now` to a message sent `delay` earlier acknowledges `acked` messages.
    pub fn on_answer(&mut self, now: Instant, delay: Duration, acked: usize) {
        let base = self.base_delay.map_or(delay, |b| b.min(delay));
        self.base_delay = Some(base);
        let (start, count) = self.sample.get_or_insert((now, 0));
        *count += acked;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < base.max(MIN_SAMPLE) {
            return;
        }
        let sample = *count as f64 / elapsed.as_secs_f64();
        self.sample = Some((now, 0));
        self.rate = if sample >= self.rate {
            sample
        } else {
            (self.rate + sample) / 2.0
        };
        let window = self.rate * (base + self.queue_target).as_secs_f64();
        self.limit = (window as usize).clamp(self.floor(), self.max);
    }

    /// No answer came within the timeout.
    pub fn on_timeout(&mut self) {
        self.limit = (self.limit / 4).max(self.floor());
        self.rate = 0.0;
        self.sample = None;
    }

    fn floor(&self) -> usize {
        MIN_WINDOW.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    /// A path: messages delivered per second, and the delay from send to answer.
    type Path = (f64, Duration);
    const LOOPBACK: Path = (250_000.0, Duration::from_millis(5));

    /// Feeds `w` answers of 128 messages each, as `path` would, for `secs` seconds from `t0`.
    fn run(w: &mut Window, t0: Instant, (per_sec, delay): Path, secs: f64) {
        let answers = (per_sec * secs / 128.0) as u64;
        for i in 1..=answers {
            let at = t0 + Duration::from_secs_f64(i as f64 * 128.0 / per_sec);
            w.on_answer(at, delay, 128);
        }
    }

    #[test]
    fn a_fast_path_opens_the_window_to_the_cap() {
        let mut w = Window::new(32_768, TIMEOUT);
        assert_eq!(w.limit(), INITIAL_WINDOW);
        run(&mut w, Instant::now(), LOOPBACK, 1.0);
        assert_eq!(w.limit(), 32_768);
    }

    #[test]
    fn a_thin_path_keeps_the_queue_near_the_target() {
        // 1,000 messages per second, 400 ms round trip: the path holds 400 messages and
        // the queue target (500 ms) 500 more.
        let mut w = Window::new(32_768, TIMEOUT);
        run(
            &mut w,
            Instant::now(),
            (1_000.0, Duration::from_millis(400)),
            10.0,
        );
        assert!((800..=1_000).contains(&w.limit()), "{}", w.limit());
    }

    #[test]
    fn a_slower_path_shrinks_the_window() {
        let mut w = Window::new(32_768, TIMEOUT);
        let t0 = Instant::now();
        run(&mut w, t0, LOOPBACK, 1.0);
        let thin = (2_000.0, Duration::from_millis(300));
        run(&mut w, t0 + Duration::from_secs(1), thin, 5.0);
        assert!(w.limit() < 2_000, "{}", w.limit());
    }

    #[test]
    fn a_small_cap_is_the_start_and_the_floor() {
        let mut w = Window::new(16, TIMEOUT);
        assert_eq!(w.limit(), 16);
        w.on_timeout();
        assert_eq!(w.limit(), 16);
        run(&mut w, Instant::now(), LOOPBACK, 0.5);
        assert_eq!(w.limit(), 16);
    }

    #[test]
    fn timeouts_shrink_to_the_floor_and_a_restart_starts_over() {
        let mut w = Window::new(32_768, TIMEOUT);
        for _ in 0..10 {
            w.on_timeout();
        }
        assert_eq!(w.limit(), MIN_WINDOW);
        w.restart();
        assert_eq!(w.limit(), INITIAL_WINDOW);
    }

    #[test]
    fn a_reload_caps_the_window_at_once() {
        let mut w = Window::new(32_768, TIMEOUT);
        w.reconfigure(100, TIMEOUT);
        assert_eq!(w.limit(), 100);
        run(&mut w, Instant::now(), LOOPBACK, 0.5);
        assert_eq!(w.limit(), 100);
    }
}
