//! Server-wide statistics for monitoring: the live client connections with their counters,
//! and totals that outlive closed connections.
//!
//! Counting stays off shared cache lines: each connection counts into its own handle
//! ([`ClientHandle::traffic`]: what it published, what was delivered to it); totals are
//! summed when monitoring asks, over the live connections plus what closed ones left behind.
//! A connection's entry also lists its subscriptions (`/connz?subs=1`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::fanout::{ClientHandle, LinkStats, Subscription};
use crate::auth::Permissions;

/// What a client told about itself in CONNECT.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    /// The client's `name`.
    pub name: String,
    /// The client library's language.
    pub lang: String,
    /// The client library's version.
    pub version: String,
    /// The authenticated user, if any.
    pub user: String,
    /// The account the connection belongs to.
    pub account: String,
    /// How it logged in (`None` before CONNECT).
    pub login: Option<crate::auth::Login>,
    /// When its credentials were issued (a user JWT's `iat`), else when it logged in.
    pub login_at: Option<SystemTime>,
}

/// One live client connection, as monitoring sees it.
pub struct ConnEntry {
    /// Its handle (outbound queue and counters).
    pub handle: Arc<ClientHandle>,
    /// The client's address.
    pub peer: SocketAddr,
    /// When it connected.
    pub start: SystemTime,
    /// What CONNECT said.
    pub meta: Mutex<ConnMeta>,
    /// Its subscriptions.
    pub subs: AtomicUsize,
    /// New permissions from a reload, waiting for the connection's task to apply them
    /// (see [`ConnEntry::regrant`]).
    pub(crate) regranted: Mutex<Option<Option<Arc<Permissions>>>>,
    /// Wakes the connection's task when `regranted` or `info_changed` is set.
    pub(crate) regrant_wake: tokio::sync::Notify,
    /// The server's INFO changed (its cluster's `connect_urls`): the connection's task sends
    /// the client a new one.
    pub(crate) info_changed: std::sync::atomic::AtomicBool,
    /// The next INFO carries `ldm: true` (the server entered lame duck mode; sent once).
    pub(crate) lame_duck: std::sync::atomic::AtomicBool,
    /// Its subscriptions by sid, for `/connz?subs=1` (kept by the connection's task beside
    /// its own map; bounded by `max_subscriptions`).
    sub_list: Mutex<HashMap<Box<[u8]>, Arc<Subscription>>>,
    /// The client came through the websocket listener (`/connz` type `websocket`).
    pub websocket: std::sync::atomic::AtomicBool,
    /// It logged in with the websocket block's own credentials, which a reload of
    /// `authorization` does not concern.
    pub own_auth: std::sync::atomic::AtomicBool,
}

impl ConnEntry {
    /// Hands the connection new permissions (a reload changed only those): its task applies
    /// them between two reads, as soon as it is woken.
    pub fn regrant(&self, permissions: Option<Arc<Permissions>>) {
        *self
            .regranted
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(permissions);
        self.regrant_wake.notify_one();
    }

    /// Asks the connection's task to send its client a new INFO.
    pub fn announce_info(&self) {
        self.info_changed.store(true, Ordering::Relaxed);
        self.regrant_wake.notify_one();
    }

    /// Asks the connection's task to send its client an INFO with `ldm: true` (lame duck
    /// mode).
    pub fn announce_lame_duck(&self) {
        self.lame_duck.store(true, Ordering::Relaxed);
        self.announce_info();
    }

    /// Whether the next INFO is the lame duck one (and clears it).
    pub(crate) fn take_lame_duck(&self) -> bool {
        self.lame_duck.swap(false, Ordering::Relaxed)
    }

    /// Whether a new INFO is due (and clears it).
    pub(crate) fn take_info_changed(&self) -> bool {
        self.info_changed.swap(false, Ordering::Relaxed)
    }

    /// The permissions a reload handed over, if any since the last call.
    pub(crate) fn take_regrant(&self) -> Option<Option<Arc<Permissions>>> {
        self.regranted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The live subscriptions, by sid.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        let list = self.sub_list.lock().unwrap_or_else(PoisonError::into_inner);
        let mut subs: Vec<Arc<Subscription>> =
            list.values().filter(|s| !s.is_done()).cloned().collect();
        subs.sort_by(|a, b| a.sid.cmp(&b.sid));
        subs
    }

    /// Records a new subscription (`Some`) or forgets sid's (`None`).
    pub(crate) fn note_subscription(&self, sid: &[u8], sub: Option<&Arc<Subscription>>) {
        let mut list = self.sub_list.lock().unwrap_or_else(PoisonError::into_inner);
        match sub {
            Some(sub) => {
                list.insert(sid.into(), sub.clone());
            }
            None => {
                list.remove(sid);
            }
        }
    }

    /// Forgets the subscriptions that ended (reached their max) or, with `all`, every one.
    pub(crate) fn sweep_subscriptions(&self, all: bool) {
        let mut list = self.sub_list.lock().unwrap_or_else(PoisonError::into_inner);
        if all {
            list.clear();
        } else {
            list.retain(|_, s| !s.is_done());
        }
    }

    /// The CONNECT details.
    pub fn meta(&self) -> ConnMeta {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Message and byte totals, both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Body bytes received from clients.
    pub in_bytes: u64,
    /// Messages delivered to clients.
    pub out_msgs: u64,
    /// Body bytes delivered to clients.
    pub out_bytes: u64,
}

impl Totals {
    fn add(&mut self, s: &LinkStats) {
        self.in_msgs += s.msgs_in.load(Ordering::Relaxed);
        self.in_bytes += s.bytes_in.load(Ordering::Relaxed);
        self.out_msgs += s.msgs_out.load(Ordering::Relaxed);
        self.out_bytes += s.bytes_out.load(Ordering::Relaxed);
    }
}

/// The statistics of one server.
pub struct ServerStats {
    /// When the server started.
    pub start: SystemTime,
    /// Client connections accepted since the start.
    pub total_connections: AtomicU64,
    /// Clients closed as slow consumers since the start.
    pub slow_consumers: AtomicU64,
    /// Answers of the server's responders dropped because the requester may not publish to
    /// the reply subject and is not subscribed to it (see [`super::reply`]).
    pub replies_refused: Arc<super::reply::Refusals>,
    /// What closed connections counted.
    closed: LinkStats,
    conns: Mutex<HashMap<u64, Arc<ConnEntry>>>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            start: SystemTime::now(),
            total_connections: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            replies_refused: Arc::default(),
            closed: LinkStats::default(),
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl ServerStats {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnEntry>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection.
    pub fn register(&self, handle: Arc<ClientHandle>, peer: SocketAddr) -> Arc<ConnEntry> {
        let entry = Arc::new(ConnEntry {
            handle,
            peer,
            start: SystemTime::now(),
            meta: Mutex::new(ConnMeta::default()),
            subs: AtomicUsize::new(0),
            regranted: Mutex::new(None),
            info_changed: std::sync::atomic::AtomicBool::new(false),
            lame_duck: std::sync::atomic::AtomicBool::new(false),
            regrant_wake: tokio::sync::Notify::new(),
            sub_list: Mutex::new(HashMap::new()),
            websocket: std::sync::atomic::AtomicBool::new(false),
            own_auth: std::sync::atomic::AtomicBool::new(false),
        });
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(entry.handle.id, entry.clone());
        entry
    }

    /// Forgets a closed connection, keeping its counts in the totals.
    pub fn unregister(&self, id: u64) {
        if let Some(entry) = self.lock().remove(&id) {
            let t = &entry.handle.traffic;
            for (from, to) in [
                (&t.msgs_in, &self.closed.msgs_in),
                (&t.bytes_in, &self.closed.bytes_in),
                (&t.msgs_out, &self.closed.msgs_out),
                (&t.bytes_out, &self.closed.bytes_out),
            ] {
                to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// The live connections, by id.
    pub fn connections(&self) -> Vec<Arc<ConnEntry>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|e| e.handle.id);
        v
    }

    /// Client traffic since the start (live and closed connections).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        t.add(&self.closed);
        for e in self.lock().values() {
            t.add(&e.handle.traffic);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_survive_closed_connections() {
        let stats = ServerStats::default();
        let a = Arc::new(ClientHandle::new(1, 1024));
        let b = Arc::new(ClientHandle::new(2, 1024));
        let peer: SocketAddr = "127.0.0.1:5".parse().unwrap();
        stats.register(a.clone(), peer);
        stats.register(b.clone(), peer);
        a.traffic.msgs_in.fetch_add(3, Ordering::Relaxed);
        b.traffic.bytes_out.fetch_add(10, Ordering::Relaxed);
        assert_eq!(stats.connections().len(), 2);
        stats.unregister(1);
        a.traffic.msgs_in.fetch_add(100, Ordering::Relaxed); // after close: not counted
        let t = stats.totals();
        assert_eq!((t.in_msgs, t.out_bytes), (3, 10));
        assert_eq!(stats.connections().len(), 1);
        assert_eq!(stats.total_connections.load(Ordering::Relaxed), 2);
    }
}
