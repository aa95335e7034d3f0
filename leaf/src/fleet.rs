//! The fleet status record, leafd's side: with a leafnode remote, leafd publishes a small
//! JSON record of its state ([`leaf_core::fleet::StatusRecord`]: version, uptime, each
//! uplink's state, backlog, oldest age, rate and last hub ack, the gateway sources' state
//! and latest error, the store's usage) on `$LEAF.STATUS.<server name>` in the account of
//! each remote, so a hub can show the whole fleet (hubd's `/fleetz`, `hubd fleet`; any
//! subscriber on a nats-server hub reads it too). The format is documented in
//! `hub/FLEET.md`.
//!
//! When: every `fleet.interval` (10 s by default) while a link is up, once right after a
//! link comes up (as soon as the hub announced its interest, at most
//! [`FIRST_RECORD_WAIT`] later), and once at a clean shutdown (`stopping: true`).
//! `fleet.interval = 0` sends none. Like any message, a record crosses the link only while
//! the hub has interest in it.
//!
//! ```toml
//! [fleet]
//! interval = "10s"   # 0 disables the records
//! ```

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use leaf_core::app::AbortOnDrop;
use leaf_core::config::ConfigError;
use leaf_core::fleet::{self, SourceRecord, StatusRecord, StoreRecord, UplinkRecord};
use leaf_core::jetstream::JetStream;
use leaf_core::leafnode::LeafState;
use leaf_core::monitor::system_rfc3339;
use leaf_core::server::{Msg, Shared};
use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use crate::config::value;
use crate::gateway::Registry;
use crate::uplink::{UplinkStatus, Uplinks};

/// Default time between two records.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest interval accepted (other than 0, which disables the records).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// How long the record after a link came up waits for the hub's interest.
pub const FIRST_RECORD_WAIT: Duration = Duration::from_secs(3);
/// How often the task looks at the links.
const POLL: Duration = Duration::from_millis(250);

/// The `fleet` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Time between two records; zero: no records at all.
    #[serde(deserialize_with = "value::de_duration")]
    pub interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl Settings {
    /// Refuses an interval other than 0 outside [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = self.interval;
        if !i.is_zero() && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i) {
            return Err(ConfigError::invalid(
                "fleet.interval",
                "must be between 1s and 1h, or 0 to send no status records",
            ));
        }
        Ok(())
    }
}

/// What a record is made of.
pub struct Parts {
    /// The server (its name, id, accounts).
    pub shared: Weak<Shared>,
    /// Its leafnode links (the records go where the remotes are).
    pub leaf: Arc<LeafState>,
    /// The uplinks, if any.
    pub uplinks: Option<Arc<Uplinks>>,
    /// The gateway sources.
    pub sources: Registry,
    /// JetStream, if on (the store's usage).
    pub js: Option<JetStream>,
}

/// The running reporter: its task ends when this is dropped.
pub struct Reporter {
    inner: Arc<Inner>,
    _task: AbortOnDrop,
}

struct Inner {
    parts: Parts,
    interval: Duration,
    start: SystemTime,
    started: Instant,
}

impl Reporter {
    /// Starts the reporter, unless `settings` disable it or the server has no remote
    /// (`None`).
    pub fn start(settings: &Settings, parts: Parts) -> Option<Reporter> {
        if settings.interval.is_zero() || parts.leaf.remote_count() == 0 {
            return None;
        }
        let inner = Arc::new(Inner {
            parts,
            interval: settings.interval,
            start: SystemTime::now(),
            started: Instant::now(),
        });
        let task = tokio::spawn(run(inner.clone()));
        Some(Reporter {
            inner,
            _task: AbortOnDrop(task),
        })
    }

    /// Publishes the last record (`stopping: true`), for a clean shutdown.
    pub fn publish_final(&self) {
        self.inner.publish(true);
    }
}

/// Every [`POLL`]: a record when a link came up (once the hub listens), and every interval
/// while a link is up.
async fn run(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(POLL);
    let mut links: Vec<Option<u64>> = Vec::new();
    let mut pending: Option<Instant> = None;
    let mut due = Instant::now() + inner.interval;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let current = inner.link_ids();
        let came_up = current
            .iter()
            .enumerate()
            .any(|(i, id)| id.is_some() && links.get(i).copied().flatten() != *id);
        links = current;
        if came_up {
            pending = Some(now);
        }
        if links.iter().all(Option::is_none) {
            pending = None;
            continue;
        }
        let first = pending
            .is_some_and(|t| inner.hub_listens() || now.duration_since(t) >= FIRST_RECORD_WAIT);
        if first || now >= due {
            inner.publish(false);
            pending = None;
            due = now + inner.interval;
        }
    }
}

impl Inner {
    /// The connection id of each remote's link, while it is up.
    fn link_ids(&self) -> Vec<Option<u64>> {
        let leaf = &self.parts.leaf;
        (0..leaf.remote_count())
            .map(|i| {
                leaf.watch_remote(i).and_then(|rx| {
                    let id = rx.borrow().as_ref().map(|h| h.id);
                    id
                })
            })
            .collect()
    }

    /// The accounts the remotes are bound to (the global one for a remote without).
    fn accounts(&self, shared: &Shared) -> Vec<Arc<leaf_core::server::Account>> {
        let leaf = &self.parts.leaf;
        let mut out: Vec<Arc<leaf_core::server::Account>> = Vec::new();
        for i in 0..leaf.remote_count() {
            let account = leaf
                .remote_options(i)
                .and_then(|r| r.account)
                .and_then(|name| shared.accounts.get(&name))
                .unwrap_or_else(|| shared.global().clone());
            if !out.iter().any(|a| Arc::ptr_eq(a, &account)) {
                out.push(account);
            }
        }
        out
    }

    /// Whether someone (the hub, through the link) listens to our record's subject.
    fn hub_listens(&self) -> bool {
        let Some(shared) = self.parts.shared.upgrade() else {
            return false;
        };
        let subject = fleet::subject(&server_name(&shared));
        self.accounts(&shared)
            .iter()
            .any(|a| a.has_interest(subject.as_bytes()))
    }

    /// Publishes the current record in every remote's account.
    fn publish(&self, stopping: bool) {
        let Some(shared) = self.parts.shared.upgrade() else {
            return;
        };
        let record = self.record(&shared, stopping);
        let subject = fleet::subject(&record.server_name);
        if !leaf_proto::subject::is_valid_literal_subject(subject.as_bytes()) {
            debug!(%subject, "the server name makes no valid subject: no status record");
            return;
        }
        let body = record.to_body();
        for account in self.accounts(&shared) {
            account.publish(&Msg {
                subject: subject.as_bytes(),
                reply: None,
                headers: None,
                payload: &body,
            });
        }
    }

    /// The record as things stand.
    fn record(&self, shared: &Shared, stopping: bool) -> StatusRecord {
        let uplinks = self
            .parts
            .uplinks
            .as_ref()
            .map(|u| u.status())
            .unwrap_or_default();
        let sources = self.parts.sources.sources();
        StatusRecord {
            format: fleet::FORMAT,
            server_name: server_name(shared),
            server_id: shared.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            start: system_rfc3339(self.start),
            uptime_secs: self.started.elapsed().as_secs(),
            sent: system_rfc3339(SystemTime::now()),
            interval_secs: self.interval.as_secs(),
            stopping,
            uplinks_total: uplinks.len() as u64,
            uplinks: uplinks
                .iter()
                .take(fleet::MAX_UPLINKS)
                .map(uplink_record)
                .collect(),
            sources_total: sources.len() as u64,
            sources: sources
                .iter()
                .take(fleet::MAX_SOURCES)
                .map(|s| {
                    let error = s.last_error();
                    SourceRecord {
                        name: s.name().to_owned(),
                        kind: s.kind().to_owned(),
                        state: s.state().as_str().to_owned(),
                        last_error_time: error
                            .as_ref()
                            .map(|(at, _)| leaf_proto::time::rfc3339(*at)),
                        last_error: error.map(|(_, message)| message),
                    }
                })
                .collect(),
            store: self.parts.js.as_ref().map(|js| {
                let used = js.store().file_size();
                let limit = js.max_file_bytes().filter(|l| *l > 0);
                StoreRecord {
                    used_bytes: used,
                    limit_bytes: limit,
                    percent: limit.map(|l| used as f64 * 100.0 / l as f64),
                }
            }),
        }
    }
}

/// The name the leafnode links announce: `server_name`, else the server id.
fn server_name(shared: &Shared) -> String {
    shared
        .opts
        .server_name
        .clone()
        .unwrap_or_else(|| shared.server_id.clone())
}

/// One uplink's part of the record.
fn uplink_record(s: &UplinkStatus) -> UplinkRecord {
    let state = match serde_json::to_value(s.state) {
        Ok(Value::String(state)) => state,
        _ => String::new(),
    };
    UplinkRecord {
        name: s.name.clone(),
        state,
        hub_stream: s.hub_stream.clone(),
        backlog_msgs: s.backlog_msgs,
        backlog_bytes: s.backlog_bytes,
        oldest_age_ms: s
            .oldest_age
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        rate_msgs_per_sec: s.rate_msgs_per_sec,
        last_ack: s.last_ack.map(system_rfc3339),
        last_error: s.last_error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_bounded_or_zero() {
        assert_eq!(Settings::default().interval, DEFAULT_INTERVAL);
        for ok in [0, 1, 10, 3600] {
            Settings {
                interval: Duration::from_secs(ok),
            }
            .validate()
            .unwrap();
        }
        for bad in [Duration::from_millis(500), Duration::from_secs(3601)] {
            let err = Settings { interval: bad }.validate().unwrap_err();
            assert!(err.to_string().starts_with("fleet.interval: "), "{err}");
        }
    }
}
