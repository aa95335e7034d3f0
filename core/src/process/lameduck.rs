//! The timing of lame duck mode, as nats-server's: after the grace period the connections
//! still open are closed one by one, spread evenly over `lame_duck_duration` less the grace
//! period, but never more than a second apart (a handful of clients need not wait two
//! minutes), each pause drawn at random between half and all of its share so that clients
//! closed together do not reconnect in lockstep. With more connections than the time allows
//! at one per millisecond, they are closed in batches.

use std::time::Duration;

/// The longest pause between two closes.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The shortest pause between two closes (more connections are closed in batches).
pub const MIN_PAUSE: Duration = Duration::from_millis(1);

/// How long lame duck mode takes (the configuration's `lame_duck_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `lame_duck_duration`.
    pub duration: Duration,
    /// `lame_duck_grace_period`.
    pub grace: Duration,
}

impl Timing {
    /// From a configuration.
    pub fn of(cfg: &crate::config::Config) -> Timing {
        Timing {
            duration: cfg.lame_duck_duration,
            grace: cfg.lame_duck_grace_period,
        }
    }

    /// How `connections` connections are closed after the grace period.
    pub fn schedule(&self, connections: usize) -> Schedule {
        let spread = self
            .duration
            .checked_sub(self.grace)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(1));
        let n = u32::try_from(connections.max(1)).unwrap_or(u32::MAX);
        let share = spread / n;
        if share >= MIN_PAUSE {
            return Schedule {
                pause: share.min(MAX_PAUSE),
                batch: 1,
            };
        }
        let slots = usize::try_from(spread.as_millis().max(1)).unwrap_or(usize::MAX);
        Schedule {
            pause: MIN_PAUSE,
            batch: connections.div_ceil(slots),
        }
    }
}

/// How the remaining connections are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The pause after each batch (before jitter: see [`Schedule::jittered`]).
    pub pause: Duration,
    /// How many connections are closed together.
    pub batch: usize,
}

impl Schedule {
    /// The pause with jitter: `fraction` (in `0.0..=1.0`, drawn at random) picks a point
    /// between half and all of it.
    pub fn jittered(&self, fraction: f64) -> Duration {
        let half = self.pause / 2;
        half + half.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// The longest the closing can take for `connections` connections.
    pub fn longest(&self, connections: usize) -> Duration {
        let batches = connections.div_ceil(self.batch.max(1));
        let pauses = u32::try_from(batches.saturating_sub(1)).unwrap_or(u32::MAX);
        self.pause.saturating_mul(pauses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(duration: u64, grace: u64) -> Timing {
        Timing {
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn few_connections_are_at_most_a_second_apart() {
        let s = timing(120, 10).schedule(3);
        assert_eq!(
            s,
            Schedule {
                pause: MAX_PAUSE,
                batch: 1
            }
        );
        assert_eq!(s.longest(3), Duration::from_secs(2));
        assert_eq!(s.longest(1), Duration::ZERO);
    }

    #[test]
    fn many_connections_are_spread_over_the_duration_less_the_grace_period() {
        let s = timing(120, 10).schedule(1_100);
        assert_eq!(s.batch, 1);
        assert_eq!(s.pause, Duration::from_millis(100));
        assert!(s.longest(1_100) <= Duration::from_secs(110));
        // More than one per millisecond: in batches, still within the time.
        let s = timing(31, 30).schedule(5_000);
        assert_eq!(s.pause, MIN_PAUSE);
        assert_eq!(s.batch, 5);
        assert!(s.longest(5_000) <= Duration::from_secs(1));
    }

    #[test]
    fn a_grace_period_as_long_as_the_duration_leaves_one_second() {
        let s = timing(30, 30).schedule(2);
        assert_eq!(s.pause, Duration::from_millis(500));
        assert_eq!(timing(30, 40).schedule(0).pause, MAX_PAUSE);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        let s = Schedule {
            pause: Duration::from_millis(800),
            batch: 1,
        };
        assert_eq!(s.jittered(0.0), Duration::from_millis(400));
        assert_eq!(s.jittered(1.0), Duration::from_millis(800));
        assert_eq!(s.jittered(7.0), Duration::from_millis(800));
        assert_eq!(s.jittered(0.5), Duration::from_millis(600));
    }
}
