//! The fleet table: the latest status record of every gateway, keyed by (account, server
//! name), with whether its leaf link is up and when it was last seen. Pure state: the
//! subscriptions feed it ([`Table::store`]), the sweeper and the pages tell it which links
//! are up ([`Table::refresh`]).
//!
//! Bounded: at most [`Limits::max_gateways`] gateways and [`Limits::max_bytes`] of records
//! (each record counted by its body's size plus its key). Past either, gateways are evicted,
//! offline ones first, the longest unseen first (counted in [`Table::evicted`]).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use leaf_core::fleet::StatusRecord;

/// Default most gateways kept.
pub const DEFAULT_MAX_GATEWAYS: usize = 100_000;
/// Default most bytes of records kept (a typical record is below 1 KB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The table's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most gateways.
    pub max_gateways: usize,
    /// Most bytes of records.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_gateways: DEFAULT_MAX_GATEWAYS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One gateway as the hub knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// The account its leaf link is bound to on the hub.
    pub account: String,
    /// Its server name (the name its link announced, and its record's).
    pub name: String,
    /// Its latest record.
    pub record: StatusRecord,
    /// The record's size as counted against [`Limits::max_bytes`].
    pub size: usize,
    /// When the latest record arrived (the hub's clock).
    pub received: SystemTime,
    /// The connection id of the link the latest record came on.
    pub link: u64,
    /// Whether a link from it is up.
    pub connected: bool,
    /// When its link was last seen up.
    pub last_seen: SystemTime,
}

/// The table (see the module documentation).
#[derive(Debug, Default)]
pub struct Table {
    gateways: HashMap<(String, String), Gateway>,
    bytes: usize,
    limits: Limits,
    evicted: u64,
    /// Counts changes (records stored, gateways connected or gone), for the snapshot.
    changes: u64,
}

impl Table {
    /// An empty table bounded by `limits`.
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            ..Table::default()
        }
    }

    /// Keeps `record` (`size` bytes on the wire) of the gateway in `account`, received at
    /// `now` on the link with connection id `link`: it replaces that gateway's previous one.
    /// Then evicts what exceeds the bounds (never the gateway just stored, unless the
    /// bounds hold nothing else).
    pub fn store(
        &mut self,
        account: &str,
        link: u64,
        record: StatusRecord,
        size: usize,
        now: SystemTime,
    ) {
        let key = (account.to_owned(), record.server_name.clone());
        let size = size + key.0.len() + key.1.len();
        let gateway = Gateway {
            account: key.0.clone(),
            name: key.1.clone(),
            record,
            size,
            received: now,
            link,
            connected: true,
            last_seen: now,
        };
        self.insert(key, gateway);
    }

    /// Puts back a gateway from a snapshot (`persist`), unless a record of it arrived since.
    pub fn restore(&mut self, gateway: Gateway) {
        let key = (gateway.account.clone(), gateway.name.clone());
        if !self.gateways.contains_key(&key) {
            self.insert(key, gateway);
        }
    }

    /// Inserts `gateway` under `key`, then evicts what exceeds the bounds (never `key`).
    fn insert(&mut self, key: (String, String), gateway: Gateway) {
        self.changes += 1;
        self.bytes += gateway.size;
        if let Some(old) = self.gateways.insert(key.clone(), gateway) {
            self.bytes -= old.size;
        }
        while self.gateways.len() > self.limits.max_gateways || self.bytes > self.limits.max_bytes {
            if !self.evict_one(&key) {
                break;
            }
        }
    }

    /// Evicts the offline gateway seen longest ago, else the connected one; never `keep`.
    fn evict_one(&mut self, keep: &(String, String)) -> bool {
        let victim = self
            .gateways
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, g)| (g.connected, g.last_seen))
            .map(|(k, _)| k.clone());
        let Some(victim) = victim else {
            return false;
        };
        if let Some(g) = self.gateways.remove(&victim) {
            self.bytes -= g.size;
            self.evicted += 1;
        }
        true
    }

    /// Marks each gateway connected (seen at `now`) when one of the up `links` (connection
    /// id, announced server name) is the one its record came on or has its name; the others
    /// are offline since they were last seen.
    pub fn refresh(&mut self, links: &[(u64, String)], now: SystemTime) {
        let ids: HashSet<u64> = links.iter().map(|(id, _)| *id).collect();
        let names: HashSet<&str> = links.iter().map(|(_, name)| name.as_str()).collect();
        for g in self.gateways.values_mut() {
            let up = ids.contains(&g.link) || names.contains(g.name.as_str());
            if g.connected != up {
                g.connected = up;
                self.changes += 1;
            }
            if up {
                g.last_seen = now.max(g.last_seen);
            }
        }
    }

    /// Every gateway, by account and name.
    pub fn gateways(&self) -> Vec<&Gateway> {
        let mut all: Vec<&Gateway> = self.gateways.values().collect();
        all.sort_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
        all
    }

    /// The gateway `name` of `account`.
    #[cfg(test)]
    pub fn get(&self, account: &str, name: &str) -> Option<&Gateway> {
        self.gateways.get(&(account.to_owned(), name.to_owned()))
    }

    /// How many gateways are kept.
    pub fn count(&self) -> usize {
        self.gateways.len()
    }

    /// Bytes of records kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A counter that moves whenever the table changed in a way a snapshot keeps.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Gateways evicted to stay within the bounds.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use leaf_core::fleet::{UplinkRecord, FORMAT};
    use std::time::Duration;

    /// A record of `name` with one uplink holding `backlog` messages of 100 bytes.
    pub(crate) fn record(name: &str, backlog: u64) -> StatusRecord {
        StatusRecord {
            format: FORMAT,
            server_name: name.into(),
            server_id: format!("ID{name}"),
            version: "0.1.0".into(),
            start: "2026-01-01T00:00:00Z".into(),
            uptime_secs: 1,
            sent: "2026-01-01T00:00:01Z".into(),
            interval_secs: 10,
            stopping: false,
            uplinks: vec![UplinkRecord {
                name: "sensors".into(),
                state: "live".into(),
                hub_stream: "S".into(),
                backlog_msgs: backlog,
                backlog_bytes: backlog * 100,
                oldest_age_ms: None,
                rate_msgs_per_sec: 0.0,
                last_ack: None,
                last_error: None,
            }],
            uplinks_total: 1,
            sources: Vec::new(),
            sources_total: 0,
            store: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn the_latest_record_per_account_and_name_is_kept() {
        let mut t = Table::new(Limits::default());
        t.store("A", 1, record("gw1", 5), 100, at(0));
        t.store("A", 1, record("gw1", 7), 100, at(1));
        t.store("B", 2, record("gw1", 9), 100, at(1));
        assert_eq!(t.count(), 2);
        assert_eq!(t.get("A", "gw1").unwrap().record.backlog_msgs(), 7);
        assert_eq!(t.get("B", "gw1").unwrap().record.backlog_msgs(), 9);
        assert_eq!(t.bytes(), 2 * (100 + 1 + 3));
        let names: Vec<&str> = t.gateways().iter().map(|g| g.account.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn a_gateway_whose_link_is_gone_is_offline_since_last_seen() {
        let mut t = Table::new(Limits::default());
        t.store("A", 1, record("gw1", 5), 100, at(0));
        t.refresh(&[(1, "gw1".into())], at(5));
        let g = t.get("A", "gw1").unwrap();
        assert!(g.connected);
        assert_eq!(g.last_seen, at(5));
        t.refresh(&[(3, "other".into())], at(9));
        let g = t.get("A", "gw1").unwrap();
        assert!(!g.connected, "its record said nothing about the link");
        assert_eq!(g.last_seen, at(5));
        assert_eq!(g.record.backlog_msgs(), 5, "the last record stays");
        // Reconnected on a new link: connected by name until its next record.
        t.refresh(&[(4, "gw1".into())], at(12));
        assert!(t.get("A", "gw1").unwrap().connected);
    }

    #[test]
    fn the_bounds_evict_offline_gateways_first_oldest_first() {
        let mut t = Table::new(Limits {
            max_gateways: 3,
            max_bytes: usize::MAX,
        });
        t.store("A", 1, record("a", 0), 10, at(0));
        t.store("A", 2, record("b", 0), 10, at(1));
        t.store("A", 3, record("c", 0), 10, at(2));
        // b and c go offline, a stays up; c was seen last.
        t.refresh(&[(1, "a".into())], at(3));
        t.store("A", 4, record("d", 0), 10, at(4));
        assert_eq!(t.count(), 3);
        assert!(
            t.get("A", "b").is_none(),
            "the offline one seen longest ago"
        );
        assert!(t.get("A", "c").is_some() && t.get("A", "a").is_some());
        assert_eq!(t.evicted(), 1);
        // Bytes bound: a large record pushes out others, never itself.
        let mut t = Table::new(Limits {
            max_gateways: 10,
            max_bytes: 300,
        });
        t.store("A", 1, record("a", 0), 100, at(0));
        t.store("A", 2, record("b", 0), 100, at(1));
        t.store("A", 3, record("c", 0), 250, at(2));
        assert!(t.bytes() <= 300, "{}", t.bytes());
        assert!(t.get("A", "c").is_some());
        assert_eq!(t.evicted(), 2);
        // Alone and over the bound, it stays (the parser caps a record's size).
        let mut t = Table::new(Limits {
            max_gateways: 10,
            max_bytes: 50,
        });
        t.store("A", 1, record("a", 0), 100, at(0));
        assert_eq!(t.count(), 1);
    }
}
