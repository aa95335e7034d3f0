//! An account's own limits, as nats-server applies an account JWT's `conn`, `leaf`, `subs`
//! and `payload` (accounts of the configuration file have none: every limit is unlimited).
//!
//! * `conn` / `leaf`: how many client / leafnode connections of the account may be up at
//!   once; one more is refused with nats-server's `-ERR 'maximum account active connections
//!   exceeded'` (both kinds, as nats-server). A connection holds a [`Slot`] while it is
//!   counted; dropping it frees the place.
//! * `subs` and `payload`: the most subscriptions one connection of the account may hold and
//!   its largest payload; each connection takes the smaller of these and the server's own
//!   (`max_subscriptions`, `max_payload`) when it logs in, as nats-server's
//!   `applyAccountLimits`.
//!
//! New limits apply to connections that log in afterwards; the connections already counted
//! are not closed, and keep the `subs` and `payload` they logged in with. A `subs` or
//! `payload` of 0 (a JWT that leaves them out) counts as unlimited, where nats-server would
//! refuse every subscription or payload; `conn` and `leaf` of 0 refuse every connection, as
//! nats-server. `subs` applies to client connections only (nats-server also bounds a leaf's
//! subscriptions by it; leaves here have `leafnodes.max_subscriptions`).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The value of a limit that means "no limit" (a JWT's `-1`).
pub const NO_LIMIT: i64 = -1;

/// nats-server's error for a connection past its account's `conn` or `leaf` limit.
pub const MAX_ACCOUNT_CONNECTIONS_ERR: &str = "'maximum account active connections exceeded'";

/// One account's limits, as a JWT gives them (negative: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections at once (`conn`).
    pub connections: i64,
    /// Leafnode connections at once (`leaf`).
    pub leafnodes: i64,
    /// Subscriptions per connection (`subs`).
    pub subscriptions: i64,
    /// Largest payload (`payload`).
    pub payload: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: NO_LIMIT,
            leafnodes: NO_LIMIT,
            subscriptions: NO_LIMIT,
            payload: NO_LIMIT,
        }
    }
}

/// Which kind of connection counts against which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A client connection (`conn`).
    Client,
    /// A leafnode connection (`leaf`).
    Leaf,
}

/// The limits of one account and what counts against them.
#[derive(Debug)]
pub struct AccountLimits {
    connections: AtomicI64,
    leafnodes: AtomicI64,
    subscriptions: AtomicI64,
    payload: AtomicI64,
    counts: Arc<Counts>,
}

/// The connections counted, by kind.
#[derive(Debug, Default)]
struct Counts {
    clients: AtomicUsize,
    leafs: AtomicUsize,
}

impl Counts {
    fn of(&self, kind: ConnKind) -> &AtomicUsize {
        match kind {
            ConnKind::Client => &self.clients,
            ConnKind::Leaf => &self.leafs,
        }
    }
}

/// A connection's place in its account's count; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    kind: ConnKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.of(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection refused by its account's `conn` or `leaf` limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("maximum account active connections exceeded ({limit})")]
pub struct TooManyConnections {
    /// The limit.
    pub limit: i64,
}

impl Default for AccountLimits {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl AccountLimits {
    /// Limits as given.
    pub fn new(limits: Limits) -> AccountLimits {
        let this = AccountLimits {
            connections: AtomicI64::new(NO_LIMIT),
            leafnodes: AtomicI64::new(NO_LIMIT),
            subscriptions: AtomicI64::new(NO_LIMIT),
            payload: AtomicI64::new(NO_LIMIT),
            counts: Arc::default(),
        };
        this.set(limits);
        this
    }

    /// Replaces the limits (a JWT update); connections already counted stay.
    pub fn set(&self, limits: Limits) {
        self.connections
            .store(limits.connections, Ordering::Relaxed);
        self.leafnodes.store(limits.leafnodes, Ordering::Relaxed);
        self.subscriptions
            .store(limits.subscriptions, Ordering::Relaxed);
        self.payload.store(limits.payload, Ordering::Relaxed);
    }

    /// The limits in force.
    pub fn get(&self) -> Limits {
        Limits {
            connections: self.connections.load(Ordering::Relaxed),
            leafnodes: self.leafnodes.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            payload: self.payload.load(Ordering::Relaxed),
        }
    }

    /// Counts one more connection of `kind`, or refuses it at the limit.
    pub fn admit(&self, kind: ConnKind) -> Result<Slot, TooManyConnections> {
        let limit = match kind {
            ConnKind::Client => self.connections.load(Ordering::Relaxed),
            ConnKind::Leaf => self.leafnodes.load(Ordering::Relaxed),
        };
        let count = self.counts.of(kind);
        let admitted = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            let full = u64::try_from(limit).is_ok_and(|max| n as u64 >= max);
            (!full).then_some(n + 1)
        });
        match admitted {
            Ok(_) => Ok(Slot {
                counts: self.counts.clone(),
                kind,
            }),
            Err(_) => Err(TooManyConnections { limit }),
        }
    }

    /// How many connections of `kind` are counted.
    pub fn count(&self, kind: ConnKind) -> usize {
        self.counts.of(kind).load(Ordering::Acquire)
    }

    /// The most subscriptions a connection may hold: the smaller of the account's `subs` and
    /// the server's `server` (0: unlimited).
    pub fn max_subscriptions(&self, server: usize) -> usize {
        min_limit(self.subscriptions.load(Ordering::Relaxed), server)
    }

    /// The largest payload a connection may publish: the smaller of the account's `payload`
    /// and the server's `server`.
    pub fn max_payload(&self, server: usize) -> usize {
        match min_limit(self.payload.load(Ordering::Relaxed), server) {
            0 => server,
            n => n,
        }
    }
}

/// The smaller of `limit` (negative: none) and `server` (0: none), 0 meaning none.
fn min_limit(limit: i64, server: usize) -> usize {
    match usize::try_from(limit) {
        Err(_) => server,
        Ok(limit) if server == 0 => limit,
        Ok(limit) => limit.min(server),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_up_to_the_limit() {
        let limits = AccountLimits::new(Limits {
            connections: 2,
            leafnodes: 0,
            ..Limits::default()
        });
        let a = limits.admit(ConnKind::Client).unwrap();
        let _b = limits.admit(ConnKind::Client).unwrap();
        assert_eq!(
            limits.admit(ConnKind::Client).unwrap_err(),
            TooManyConnections { limit: 2 }
        );
        assert!(limits.admit(ConnKind::Leaf).is_err(), "leaf 0: none");
        drop(a);
        assert_eq!(limits.count(ConnKind::Client), 1);
        let _c = limits.admit(ConnKind::Client).expect("a place freed");
        limits.set(Limits::default());
        let many: Vec<_> = (0..10)
            .map(|_| limits.admit(ConnKind::Client).unwrap())
            .collect();
        assert_eq!(limits.count(ConnKind::Client), 12);
        drop(many);
        assert_eq!(limits.count(ConnKind::Client), 2);
    }

    #[test]
    fn per_connection_limits_take_the_smaller() {
        let limits = AccountLimits::default();
        assert_eq!(limits.max_subscriptions(0), 0);
        assert_eq!(limits.max_subscriptions(100), 100);
        assert_eq!(limits.max_payload(1 << 20), 1 << 20);
        limits.set(Limits {
            subscriptions: 5,
            payload: 1000,
            ..Limits::default()
        });
        assert_eq!(limits.max_subscriptions(0), 5);
        assert_eq!(limits.max_subscriptions(3), 3);
        assert_eq!(limits.max_payload(1 << 20), 1000);
        assert_eq!(limits.max_payload(10), 10);
    }
}
