//! The fleet view: the status records of every leafd connected to this hub (see
//! `leaf_core::fleet` for the record and `hub/FLEET.md` for its format), kept per gateway
//! and shown as `/fleetz`, in `/metrics` ([`pages`]) and by `hubd fleet` ([`cmd`]).
//!
//! * [`Fleet::start`] subscribes internally to `$LEAF.STATUS.>` in every account: the
//!   configured ones and the global one at once, accounts that appear while the server runs
//!   (operator mode's resolver accounts, added when their first user or leaf logs in)
//!   within [`SWEEP`]. The subscriptions are announced to the leaves bound to each account,
//!   so their records cross the links.
//! * A record is kept ([`table`]) only when it came from a leaf link accepted by this hub,
//!   parses as a record of the current format within its bounds
//!   (`leaf_core::fleet::parse`), and names the server the link announced, on that
//!   server's subject. Anything else is ignored and counted by reason ([`Ignored`]); it
//!   never replaces a good record.
//! * Every [`SWEEP`] the table learns which leaf links are up: a gateway whose link is gone
//!   is offline since it was last seen, whatever its last record said.
//!
//! With JetStream on, the table survives restarts ([`persist`]: a snapshot in the store
//! directory, restored gateways offline until their leaf reconnects); without it, it lives
//! in memory and fills again as the leaves reconnect.

pub mod alarms;
pub mod cmd;
pub mod pages;
pub mod persist;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use leaf_core::app::AbortOnDrop;
use leaf_core::fleet::{self, SUBJECT_PREFIX};
use leaf_core::leafnode::LeafState;
use leaf_core::server::{InternalSink, Msg, Publisher, Shared, SubRef};
use tracing::{debug, info, warn};

use table::{Limits, Table};

/// How often new accounts are subscribed and the links' state is read.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Why records were ignored: the reasons, in the order pages list them.
pub const REASONS: [&str; 5] = [
    "invalid",
    "too_large",
    "format",
    "name_mismatch",
    "not_a_leaf",
];

/// Ignored records, by reason ([`REASONS`]).
#[derive(Debug, Default)]
pub struct Ignored([AtomicU64; 5]);

impl Ignored {
    /// Counts one record ignored for `reason` (one of [`REASONS`]).
    pub fn count(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            if let Some(c) = self.0.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every reason with its count.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The fleet view of one hub.
pub struct Fleet {
    table: Mutex<Table>,
    ignored: Ignored,
    leaf: Option<Arc<LeafState>>,
    /// The internal subscriptions, one per account, and the accounts they are in.
    subs: Mutex<(HashSet<String>, Vec<SubRef>)>,
    /// The accepted links that were up at the last look (connection id → announced name),
    /// so that a record is checked without going over every link.
    names: Mutex<HashMap<u64, String>>,
    /// Where the snapshot is kept, if anywhere, and the table's change count it holds.
    snapshot: Option<(PathBuf, Mutex<u64>)>,
}

/// The running fleet view: the sweeper stops when this is dropped.
pub struct Running {
    /// The view, for the pages.
    pub fleet: Arc<Fleet>,
    _sweeper: AbortOnDrop,
}

impl Fleet {
    /// Starts the fleet view of `shared` (whose leaf links are `leaf`): restores the snapshot
    /// in `store_dir` (if given), subscribes in every account now and every [`SWEEP`] in new
    /// ones, and saves the snapshot there when the table changed, at most every
    /// [`persist::SAVE_EVERY`].
    pub fn start(
        shared: &Arc<Shared>,
        leaf: Option<Arc<LeafState>>,
        store_dir: Option<&Path>,
    ) -> Running {
        let mut table = Table::new(Limits::default());
        let path = store_dir.map(|d| d.join(persist::FILE_NAME));
        if let Some(path) = &path {
            match persist::restore(path, &mut table) {
                Ok(0) => {}
                Ok(n) => info!(gateways = n, "fleet view restored"),
                Err(e) => warn!("fleet view not restored: {e}"),
            }
        }
        let saved = table.changes();
        let fleet = Arc::new(Fleet {
            table: Mutex::new(table),
            ignored: Ignored::default(),
            leaf,
            subs: Mutex::new((HashSet::new(), Vec::new())),
            names: Mutex::new(HashMap::new()),
            snapshot: path.map(|p| (p, Mutex::new(saved))),
        });
        fleet.subscribe_new(shared);
        let weak_shared = Arc::downgrade(shared);
        let weak = Arc::downgrade(&fleet);
        let sweeper = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SWEEP);
            let mut last_save = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                let (Some(fleet), Some(shared)) = (weak.upgrade(), weak_shared.upgrade()) else {
                    return;
                };
                fleet.subscribe_new(&shared);
                fleet.refresh();
                if last_save.elapsed() >= persist::SAVE_EVERY {
                    last_save = tokio::time::Instant::now();
                    let fleet = fleet.clone();
                    let _ = tokio::task::spawn_blocking(move || fleet.save()).await;
                }
            }
        });
        Running {
            fleet,
            _sweeper: AbortOnDrop(sweeper),
        }
    }

    /// Subscribes in the accounts that have no subscription yet.
    fn subscribe_new(self: &Arc<Self>, shared: &Shared) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        for account in shared.accounts.all() {
            if subs.0.contains(account.name()) {
                continue;
            }
            let sink = Arc::new(Sink {
                fleet: Arc::downgrade(self),
                account: account.name().to_owned(),
            });
            let subject = format!("{SUBJECT_PREFIX}.>");
            match account.subscribe_internal(subject.as_bytes(), None, sink) {
                Ok(sub) => {
                    subs.0.insert(account.name().to_owned());
                    subs.1.push(sub);
                }
                Err(e) => debug!(account = account.name(), error = %e, "no fleet subscription"),
            }
        }
    }

    /// Writes the snapshot if the table changed since the last one (a blocking write).
    pub fn save(&self) {
        let Some((path, saved)) = &self.snapshot else {
            return;
        };
        let mut saved = saved.lock().unwrap_or_else(|e| e.into_inner());
        let (changes, bytes) = {
            let table = self.table();
            if table.changes() == *saved {
                return;
            }
            (table.changes(), persist::snapshot(&table))
        };
        match persist::write(path, &bytes) {
            Ok(()) => *saved = changes,
            Err(e) => warn!("fleet view not saved: {e}"),
        }
    }

    /// The table, locked.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ignored records' counts.
    pub fn ignored(&self) -> &Ignored {
        &self.ignored
    }

    /// The accepted leaf links that are up (connection id, announced name), remembered for
    /// [`Fleet::announced`].
    fn links(&self) -> Vec<(u64, String)> {
        let links = self
            .leaf
            .as_ref()
            .map(|l| l.accepted_links())
            .unwrap_or_default();
        if let Ok(mut names) = self.names.lock() {
            *names = links.iter().cloned().collect();
        }
        links
    }

    /// The name the accepted link `id` announced, if it is up: from the last look at the
    /// links, or (a link newer than that) from a new look.
    fn announced(&self, id: u64) -> Option<String> {
        let known = self
            .names
            .lock()
            .ok()
            .and_then(|names| names.get(&id).cloned());
        known.or_else(|| {
            self.links()
                .into_iter()
                .find(|(link, _)| *link == id)
                .map(|(_, name)| name)
        })
    }

    /// Tells the table which links are up now.
    pub fn refresh(&self) {
        let links = self.links();
        self.table().refresh(&links, SystemTime::now());
    }

    /// One message on `$LEAF.STATUS.>` in `account`: kept, or ignored and counted.
    fn receive(&self, account: &str, subject: &[u8], body: &[u8], from: &Publisher) {
        match self.check(subject, body, from) {
            Ok((link, record)) => {
                self.table()
                    .store(account, link, record, body.len(), SystemTime::now());
            }
            Err(reason) => {
                debug!(
                    account,
                    subject = %String::from_utf8_lossy(subject),
                    reason,
                    "status record ignored"
                );
                self.ignored.count(reason);
            }
        }
    }

    /// The link a record came on and the record, or why it is ignored.
    fn check(
        &self,
        subject: &[u8],
        body: &[u8],
        from: &Publisher,
    ) -> Result<(u64, fleet::StatusRecord), &'static str> {
        let link = match from {
            Publisher::Link(handle) if handle.leaf().is_some_and(|peer| !peer.solicited) => {
                handle.id
            }
            _ => return Err("not_a_leaf"),
        };
        let record = fleet::parse(body).map_err(|e| e.reason())?;
        let announced = self.announced(link);
        if announced.as_deref() != Some(record.server_name.as_str())
            || subject != fleet::subject(&record.server_name).as_bytes()
        {
            return Err("name_mismatch");
        }
        Ok((link, record))
    }
}

/// The internal subscription of one account.
struct Sink {
    fleet: Weak<Fleet>,
    account: String,
}

impl InternalSink for Sink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        if let Some(fleet) = self.fleet.upgrade() {
            fleet.receive(&self.account, msg.subject, msg.payload, from);
        }
    }
}
