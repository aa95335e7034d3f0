//! Leafnode links: the NATS server-to-server protocol between a leaf (`leafd`) and its hub
//! (`hubd` or nats-server), both sides, over plain TCP or TLS.
//!
//! * [`accept`]: the hub side: a listener (`leafnodes { listen }`), the INFO / CONNECT /
//!   INFO(`connect_info`) handshake, authentication (`leafnodes.authorization`);
//! * [`solicit`]: the leaf side: one task per `leafnodes.remotes` entry, connecting, handshaking
//!   and reconnecting forever with exponential backoff and jitter;
//! * [`link`]: an established link, the same on both sides: `LS+`/`LS-` interest in,
//!   `LMSG`/`HMSG` messages in and routed locally, keepalive;
//! * [`interest`]: what each link has been told (`LS+`/`LS-` out), kept exact by the server's
//!   central subscription hooks;
//! * [`info`]: the handshake JSON; [`url`]: remote URLs;
//! * `login`: who an accepted leaf is (its identity) and what it may do (its permissions,
//!   enforced both ways), and on a leaf the permissions its hub announced;
//! * [`tls`]: TLS settings of remotes and of the listener (rustls), started inside the
//!   handshake as nats-server 2.9 does (after the hub's plain-text INFO);
//! * [`nkey`]: nkey authentication: a remote's `nkey` seed or `credentials` file (the leaf
//!   signs the hub's nonce), and the user nkeys a listener accepts.
//!
//! Authentication: a remote presents a user and password (or a token) from its URL, an nkey
//! seed, or a `.creds` file (a user JWT and its seed); a listener accepts a user and
//! password, a token, or any of `leafnodes.authorization.users` (passwords or user nkeys,
//! each with optional permissions), and without `leafnodes.authorization` the client users
//! (see `login`). The JWT of a creds file is sent as is. A listener's own nkey users take the
//! user key from it without checking its issuer; in hubd's operator mode (leaves logging in as
//! client users, decided by `auth::Authority`) the whole operator → account → user chain is
//! verified, as a nats-server hub in operator mode does. A leaf server name is taken over only by a connection with the same credentials
//! (`LeafState::replace_stale`); loop-detection subjects are one per link and cannot be
//! echoed against another link (see `link`).
//!
//! Messages go out on the normal message path: interest received from a link is a
//! subscription in the server's sublist whose target encodes `LMSG`/`HMSG` into the link's
//! outbound queue (see [`crate::server::fanout`]). Each link is bound to one account (see
//! [`crate::server::account`]): its interest table and its messages are that account's. Not
//! implemented yet: WebSocket, compression, `hub: true` remotes. A remote's `deny_imports`/`deny_exports`, and a leaf's permissions, are enforced
//! by [`LinkDeny`].

pub mod accept;
pub mod info;
pub mod interest;
pub mod link;
mod login;
pub mod nkey;
pub mod settings;
pub mod solicit;
pub mod tls;
pub mod url;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::interest::Origin;
use crate::auth::{Authenticator, Permissions};
use crate::server::fanout::{ClientHandle, LinkStats};
use crate::server::{Account, Peers, ServerError, Shared, Subscription};

pub use crate::server::deny::{
    js_denied, route_denied, LinkDeny, JS_DENIED_PREFIXES, ROUTE_DENIED_PREFIX,
};
pub use interest::Interest;
pub use nkey::{NkeyUsers, RemoteAuth};
pub use tls::{ClientTls, ServerTls, TlsError};
pub use url::{RemoteUrl, UrlError};

/// The subject prefix of loop-detection subscriptions.
pub const LDS_PREFIX: &str = "$LDS.";

/// How long a solicited link waits before reconnecting after a loop was detected, or after
/// either side refused the other's subscriptions as too many.
pub const LOOP_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// The first reconnect delay.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// One hub to connect to.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Its URLs, tried in random order.
    pub urls: Vec<RemoteUrl>,
    /// Subjects kept off the link.
    pub deny: Arc<LinkDeny>,
    /// TLS towards the hub (every URL of the remote); `None` is plain TCP.
    pub tls: Option<Arc<ClientTls>>,
    /// An nkey seed or a creds file to sign the hub's nonce with; `None` uses the URL's
    /// user and password (or token), if any.
    pub auth: Option<Arc<RemoteAuth>>,
    /// The local account the link is bound to (`None`: the global account).
    pub account: Option<String>,
}

impl RemoteOptions {
    /// A plain-TCP remote with `urls` and nothing denied.
    pub fn new(urls: Vec<RemoteUrl>) -> RemoteOptions {
        RemoteOptions {
            urls,
            deny: Arc::default(),
            tls: None,
            auth: None,
            account: None,
        }
    }
}

/// The leafnode settings of a server.
#[derive(Clone)]
pub struct LeafOptions {
    /// Where to accept leafnode connections (`host`, `port`; port 0 picks one).
    pub listen: Option<(String, u16)>,
    /// Who may connect as a leaf (users with passwords and their permissions, or a token).
    pub auth: Authenticator,
    /// `auth` is the client users' (`authorization`): the listener has no
    /// `leafnodes.authorization` of its own, so leaves log in as clients and get those
    /// users' permissions, as on nats-server; unlike nats-server, a leaf that presents no
    /// credentials is refused (nats-server 2.9 lets it in with every right).
    pub clients_auth: bool,
    /// User nkeys that may connect as a leaf, besides `auth`'s users (a leaf proves its key
    /// by signing the nonce of the hub's INFO).
    pub nkeys: NkeyUsers,
    /// The permissions of the nkeys in `nkeys` that have any (the others may do anything).
    pub nkey_permissions: HashMap<String, Arc<Permissions>>,
    /// The accounts of the nkeys in `nkeys` bound to one (the others: the global account).
    pub nkey_accounts: HashMap<String, Arc<str>>,
    /// How long an accepted connection has to send CONNECT.
    pub auth_timeout: Duration,
    /// Hubs to connect to.
    pub remotes: Vec<RemoteOptions>,
    /// Cap of the reconnect backoff (from 100 ms, doubling, with jitter).
    pub reconnect_max: Duration,
    /// Interval between keepalive PINGs.
    pub ping_interval: Duration,
    /// Unanswered PINGs after which a link is closed as dead.
    pub ping_max: u32,
    /// How long to wait for a TCP connect to a hub.
    pub dial_timeout: Duration,
    /// TLS on the listener: when set, every accepted link must use TLS.
    pub tls: Option<Arc<ServerTls>>,
    /// Most subscriptions the peer of one link may announce (`LS+`), either side; 0 is
    /// unlimited. Past it the link is closed with `-ERR 'maximum subscriptions exceeded'`.
    pub max_subscriptions: usize,
    /// Most connections the listener serves at once, handshakes included.
    pub max_connections: usize,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            listen: None,
            auth: Authenticator::Open,
            clients_auth: false,
            nkeys: NkeyUsers::default(),
            nkey_permissions: HashMap::new(),
            nkey_accounts: HashMap::new(),
            auth_timeout: crate::auth::settings::DEFAULT_AUTH_TIMEOUT,
            remotes: Vec::new(),
            reconnect_max: settings::DEFAULT_LEAFNODE_RECONNECT,
            ping_interval: settings::DEFAULT_LEAFNODE_PING_INTERVAL,
            ping_max: settings::DEFAULT_LEAFNODE_PING_MAX,
            dial_timeout: Duration::from_secs(2),
            tls: None,
            max_subscriptions: crate::config::DEFAULT_LINK_MAX_SUBSCRIPTIONS,
            max_connections: settings::DEFAULT_LEAFNODE_MAX_CONNECTIONS,
        }
    }
}

impl fmt::Debug for LeafOptions {
    /// Secrets (URL passwords, the authenticator) are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafOptions")
            .field("listen", &self.listen)
            .field("auth_required", &self.auth_required())
            .field("clients_auth", &self.clients_auth)
            .field("nkeys", &self.nkeys)
            .field("nkey_permissions", &self.nkey_permissions)
            .field("remotes", &self.remotes)
            .field("reconnect_max", &self.reconnect_max)
            .field("ping_interval", &self.ping_interval)
            .field("ping_max", &self.ping_max)
            .field("tls", &self.tls)
            .field("max_subscriptions", &self.max_subscriptions)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl LeafOptions {
    /// Whether any link is configured (a listener or a remote).
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.remotes.is_empty()
    }

    /// Whether leaves must authenticate (the INFO's `auth_required`).
    pub fn auth_required(&self) -> bool {
        self.auth.required() || !self.nkeys.is_empty()
    }
}

/// The state of one link as reported by [`LeafState::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// This server opened the link (a `remotes` entry); otherwise it was accepted.
    pub solicited: bool,
    /// The URL (solicited, password hidden) or the peer address (accepted).
    pub url: String,
    /// The link is up (handshake complete).
    pub connected: bool,
    /// The link (when up: the current one; when down: the last one) runs over TLS.
    pub tls: bool,
    /// When it came up (or, when down, went down); `None` before the first attempt ended.
    pub since: Option<SystemTime>,
    /// How many times it connected after the first time.
    pub reconnects: u64,
    /// The peer's server name, once known.
    pub remote_server: String,
    /// Why it last went down, if it did.
    pub last_error: Option<String>,
    /// Messages received.
    pub msgs_in: u64,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// The local account the link is bound to (once up).
    pub account: String,
    /// The subjects the peer announced interest in (`LS+`), sorted.
    pub subscriptions: Vec<String>,
    /// The round trip of the last keepalive `PING` answered on the current link (none before
    /// the first, sent `ping_interval` after the link came up).
    pub rtt: Option<std::time::Duration>,
}

/// The live status of one link (a remote, or one accepted connection).
pub(crate) struct LinkEntry {
    solicited: bool,
    stats: Arc<LinkStats>,
    state: Mutex<EntryState>,
    /// The established connection, while there is one (for components that write to the
    /// link directly, such as uplinks).
    link: tokio::sync::watch::Sender<Option<Arc<ClientHandle>>>,
    /// Leafnode URLs the hub announced (`leafnode_urls` in its INFO: every server of its
    /// cluster), tried after the configured ones.
    discovered: Mutex<Vec<String>>,
    /// The peer's interest (`LS+` keys: `subject[ queue]`), for `/leafz?subs=1`; bounded by
    /// the link's subscription limit.
    interest: Mutex<std::collections::BTreeSet<Box<[u8]>>>,
}

#[derive(Default)]
struct EntryState {
    url: String,
    connected: bool,
    tls: bool,
    since: Option<SystemTime>,
    connects: u64,
    remote_server: String,
    last_error: Option<String>,
    /// Closed because a newer connection from the same leaf server arrived.
    replaced: bool,
    /// Accepted links: who the leaf authenticated as (see [`link`]'s `Login`); a newer
    /// connection with the same server name replaces this one only with the same identity.
    identity: String,
    /// The local account the link is bound to.
    account: String,
    /// The last measured round trip of the current link.
    rtt: Option<std::time::Duration>,
}

impl LinkEntry {
    /// Records the leafnode URLs (`host:port`) the hub announced; they replace the previous
    /// announcement (a server that left the cluster is dropped).
    pub(crate) fn set_discovered(&self, urls: &[String]) {
        if let Ok(mut d) = self.discovered.lock() {
            *d = urls.to_vec();
        }
    }

    /// The leafnode URLs the hub announced last.
    pub(crate) fn discovered(&self) -> Vec<String> {
        self.discovered
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn new(solicited: bool, url: String) -> Arc<LinkEntry> {
        Arc::new(LinkEntry {
            solicited,
            stats: Arc::default(),
            state: Mutex::new(EntryState {
                url,
                ..EntryState::default()
            }),
            link: tokio::sync::watch::Sender::new(None),
            discovered: Mutex::new(Vec::new()),
            interest: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// Records (`added`) or forgets the peer's interest `key` (`subject[ queue]`).
    pub(crate) fn note_interest(&self, key: &[u8], added: bool) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        if added {
            interest.insert(key.into());
        } else {
            interest.remove(key);
        }
    }

    /// Forgets all of the peer's interest (the link ended).
    pub(crate) fn clear_interest(&self) {
        self.interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Records the round trip of an answered keepalive `PING`.
    pub(crate) fn set_rtt(&self, rtt: std::time::Duration) {
        self.lock().rtt = Some(rtt);
    }

    /// Records the local account the link is bound to.
    pub(crate) fn set_account(&self, account: &str) {
        self.lock().account = account.to_owned();
    }

    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters shared with the link's handle.
    pub(crate) fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Records who the leaf of this (accepted) link authenticated as.
    pub(crate) fn set_identity(&self, identity: String) {
        self.lock().identity = identity;
    }

    /// Whether a newer connection from the same leaf server replaced this (accepted) one.
    pub(crate) fn is_replaced(&self) -> bool {
        self.lock().replaced
    }

    /// Publishes the established connection (`None` when it ends).
    pub(crate) fn set_link(&self, handle: Option<Arc<ClientHandle>>) {
        self.link.send_replace(handle);
    }

    /// Records that the link came up (over TLS when `tls`).
    pub(crate) fn up(&self, url: String, remote_server: String, tls: bool) {
        let mut s = self.lock();
        s.url = url;
        s.connected = true;
        s.tls = tls;
        s.since = Some(SystemTime::now());
        s.connects += 1;
        s.remote_server = remote_server;
    }

    /// Records that the link went down (or an attempt failed) because of `reason`.
    pub(crate) fn down(&self, reason: String) {
        let mut s = self.lock();
        if s.connected || s.since.is_none() {
            s.since = Some(SystemTime::now());
        }
        s.connected = false;
        s.rtt = None;
        s.last_error = Some(reason);
    }

    fn snapshot(&self) -> LinkStatus {
        let s = self.lock();
        LinkStatus {
            solicited: self.solicited,
            url: s.url.clone(),
            connected: s.connected,
            tls: s.tls,
            since: s.since,
            reconnects: s.connects.saturating_sub(1),
            remote_server: s.remote_server.clone(),
            last_error: s.last_error.clone(),
            msgs_in: self.stats.msgs_in.load(Ordering::Relaxed),
            bytes_in: self.stats.bytes_in.load(Ordering::Relaxed),
            msgs_out: self.stats.msgs_out.load(Ordering::Relaxed),
            bytes_out: self.stats.bytes_out.load(Ordering::Relaxed),
            account: s.account.clone(),
            rtt: s.rtt,
            subscriptions: self
                .interest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|k| {
                    let subject = k.split(|b| *b == b' ').next().unwrap_or_default();
                    String::from_utf8_lossy(subject).into_owned()
                })
                .collect(),
        }
    }
}

/// Why a remote could not be started, replaced or removed while the server runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The server was started without leafnode links (no listener, no remote), so it has
    /// no leafnode state to add a remote to.
    #[error("this server was started without leafnode links (restart to add a remote)")]
    NotEnabled,
    /// There is no remote with this index (and it is not the next one, which would add one).
    #[error("there is no leafnodes.remotes[{index}] ({count} configured)")]
    NoSuchRemote {
        /// The index asked for.
        index: usize,
        /// How many remotes run.
        count: usize,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The task of each remote and the settings it runs with.
#[derive(Default)]
struct RemoteTasks {
    /// The current settings of each remote, by index (those at startup, then those of the
    /// last reload).
    opts: Vec<RemoteOptions>,
    /// The running task of each remote (`None` before the server runs).
    tasks: Vec<Option<solicit::RemoteTask>>,
    /// Whether tasks may be started.
    phase: Phase,
}

/// Where the server is in its life, for the remote tasks.
#[derive(Default)]
enum Phase {
    /// Bound, not running yet: remotes are started by [`crate::server::Server::run`].
    #[default]
    Bound,
    /// Running: a started task holds a clone of this sender until it ends (the server's
    /// shutdown waits for all of them).
    Running(mpsc::Sender<()>),
    /// Shutting down: no task starts any more.
    Stopped,
}

/// The first URL of a remote as its status shows it before the first connection.
fn first_url(remote: &RemoteOptions) -> String {
    remote
        .urls
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The leafnode links of a server (present when links are configured): the server holds it
/// as its [`Peers`]; whoever built the server keeps it for the links' status and reloads.
pub struct LeafState {
    /// The settings the server started with (a reload may change the remotes since: see
    /// [`LeafState::remote_options`]).
    pub opts: LeafOptions,
    /// The address the leafnode listener is bound to, if any.
    pub listen_addr: Option<SocketAddr>,
    /// The bound listener, until the server starts running.
    listener: Mutex<Option<TcpListener>>,
    /// Per account: all its interest and each of its links' view of it; see [`interest`].
    /// A link is registered in the table of the account it is bound to.
    interests: Mutex<HashMap<String, Arc<Mutex<Interest>>>>,
    /// The loop-detection subjects (`$LDS.<random>`) of this server's established links: a
    /// fresh one per connection (see [`LeafState::new_lds`]).
    lds: Mutex<HashSet<Box<[u8]>>>,
    /// Status entries: one per remote (first), then one per accepted link.
    entries: Mutex<Vec<Arc<LinkEntry>>>,
    /// The remotes' tasks and current settings. Locked before `entries` when both are.
    remotes: Mutex<RemoteTasks>,
    /// The leafnode URLs of the other servers of this hub's cluster (hubd's routes learn
    /// them): announced to accepted leaves in `leafnode_urls`, so that a leaf whose server
    /// dies reconnects to another (see [`LeafState::set_cluster_urls`]).
    cluster_urls: Mutex<Vec<String>>,
}

impl LeafState {
    /// Binds the leafnode listener of `opts` (if any) and returns the links' state, for
    /// [`crate::server::Server::bind_with`]. The links start when the server runs.
    pub async fn bind(opts: LeafOptions) -> Result<Arc<LeafState>, ServerError> {
        let listener = match &opts.listen {
            Some((host, port)) => {
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                Some(
                    crate::listen::bind(&addr)
                        .await
                        .map_err(|source| ServerError::Bind { addr, source })?,
                )
            }
            None => None,
        };
        let mut state = LeafState::new(opts);
        state.listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        state.listener = Mutex::new(listener);
        Ok(Arc::new(state))
    }

    /// New state for `opts`, with no listener bound.
    pub fn new(opts: LeafOptions) -> LeafState {
        let entries = opts
            .remotes
            .iter()
            .map(|remote| LinkEntry::new(true, first_url(remote)))
            .collect();
        let remotes = RemoteTasks {
            opts: opts.remotes.clone(),
            tasks: opts.remotes.iter().map(|_| None).collect(),
            phase: Phase::Bound,
        };
        LeafState {
            opts,
            listen_addr: None,
            listener: Mutex::new(None),
            interests: Mutex::new(HashMap::new()),
            lds: Mutex::new(HashSet::new()),
            entries: Mutex::new(entries),
            remotes: Mutex::new(remotes),
            cluster_urls: Mutex::new(Vec::new()),
        }
    }

    /// The leafnode URLs of the other servers of this hub's cluster.
    pub fn cluster_urls(&self) -> Vec<String> {
        self.cluster_urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the leafnode URLs of the other servers of this hub's cluster, and when they
    /// changed tells every accepted leaf with an INFO whose `leafnode_urls` lists this
    /// server's URL and theirs, as nats-server does when members join or leave.
    pub fn set_cluster_urls(&self, shared: &Shared, mut urls: Vec<String>) {
        urls.sort();
        urls.dedup();
        {
            let mut current = self.cluster_urls.lock().unwrap_or_else(|e| e.into_inner());
            if *current == urls {
                return;
            }
            current.clone_from(&urls);
        }
        if shared.in_lame_duck() {
            // Leaves were told to go; this server is no place to come back to.
            self.tell_accepted(shared, urls, true);
            return;
        }
        let mut all: Vec<String> = self
            .listen_addr
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.to_string())
            .into_iter()
            .collect();
        all.extend(urls);
        self.tell_accepted(shared, all, false);
    }

    /// Sends every accepted leaf an INFO with `leafnode_urls` (and `ldm`); returns their
    /// connections.
    fn tell_accepted(
        &self,
        shared: &Shared,
        leafnode_urls: Vec<String>,
        ldm: bool,
    ) -> Vec<Arc<ClientHandle>> {
        let info = info::UpdateInfo {
            server_id: &shared.server_id,
            server_name: shared.server_name(),
            version: crate::server::info::NATS_FEATURE_LEVEL,
            proto: 1,
            headers: true,
            max_payload: shared.opts.max_payload,
            leafnode_urls: &leafnode_urls,
            ldm,
        };
        let Ok(json) = serde_json::to_vec(&info) else {
            return Vec::new();
        };
        let mut line = bytes::BytesMut::new();
        leaf_proto::write_info(&mut line, &json);
        let entries: Vec<Arc<LinkEntry>> = self.lock_entries().clone();
        let mut links = Vec::new();
        for entry in entries.iter().filter(|e| !e.solicited) {
            if let Some(link) = entry.link.borrow().clone() {
                link.out.append_bytes(&line);
                link.out.flush();
                links.push(link);
            }
        }
        links
    }

    fn lock_remotes(&self) -> MutexGuard<'_, RemoteTasks> {
        self.remotes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many remotes there are now.
    pub fn remote_count(&self) -> usize {
        self.lock_remotes().opts.len()
    }

    /// The current settings of remote number `index`.
    pub fn remote_options(&self, index: usize) -> Option<RemoteOptions> {
        self.lock_remotes().opts.get(index).cloned()
    }

    /// Starts a task for every remote (the server starts running); `done` is held by each
    /// task until it ends, including tasks a reload starts later.
    fn start_remotes(self: &Arc<Self>, shared: &Arc<Shared>, done: &mpsc::Sender<()>) {
        let mut r = self.lock_remotes();
        if !matches!(r.phase, Phase::Bound) {
            return;
        }
        let RemoteTasks { opts, tasks, .. } = &mut *r;
        for (index, (remote, task)) in opts.iter().zip(tasks.iter_mut()).enumerate() {
            if let Some(entry) = self.remote_entry(index) {
                *task = Some(solicit::spawn(
                    shared.clone(),
                    self.clone(),
                    remote.clone(),
                    entry,
                    done.clone(),
                ));
            }
        }
        r.phase = Phase::Running(done.clone());
    }

    /// Tells every remote task to stop (the server shuts down); no task starts after this.
    fn stop_remotes(&self) {
        let mut r = self.lock_remotes();
        r.phase = Phase::Stopped;
        for task in r.tasks.iter().flatten() {
            task.signal_stop();
        }
    }

    /// Runs remote number `index` with `remote` from now on: its task is stopped (its link,
    /// if up, is closed, so the hub sees the leaf go) and a new one connects with the new
    /// settings. `index` equal to [`LeafState::remote_count`] adds a remote. The remote's
    /// status entry, and so the [`LeafState::watch_remote`] receivers of it, carry over.
    pub async fn set_remote(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        index: usize,
        remote: RemoteOptions,
    ) -> Result<(), RemoteError> {
        let (old, entry) = {
            let mut guard = self.lock_remotes();
            let r = &mut *guard;
            if matches!(r.phase, Phase::Stopped) {
                return Err(RemoteError::ShuttingDown);
            }
            let count = r.opts.len();
            if index == count {
                let entry = LinkEntry::new(true, first_url(&remote));
                r.opts.push(remote.clone());
                r.tasks.push(None);
                self.lock_entries().insert(index, entry.clone());
                (None, entry)
            } else {
                let (Some(opts), Some(task), Some(entry)) = (
                    r.opts.get_mut(index),
                    r.tasks.get_mut(index),
                    self.remote_entry(index),
                ) else {
                    return Err(RemoteError::NoSuchRemote { index, count });
                };
                opts.clone_from(&remote);
                (task.take(), entry)
            }
        };
        if let Some(old) = old {
            old.stop().await;
            entry.down("closed by a configuration reload".into());
        }
        // The old hub's cluster is no fallback for the new settings.
        entry.set_discovered(&[]);
        entry.lock().url = first_url(&remote);
        let mut r = self.lock_remotes();
        let done = match &r.phase {
            Phase::Running(done) => done.clone(),
            Phase::Bound => return Ok(()),
            Phase::Stopped => return Err(RemoteError::ShuttingDown),
        };
        if let Some(task) = r.tasks.get_mut(index) {
            *task = Some(solicit::spawn(
                shared.clone(),
                self.clone(),
                remote,
                entry,
                done,
            ));
        }
        Ok(())
    }

    /// Stops the last remote (its link, if up, is closed) and removes it and its status
    /// entry. Only the last one can go: the others keep their index.
    pub async fn remove_last_remote(&self) -> Result<(), RemoteError> {
        let old = {
            let mut r = self.lock_remotes();
            let Some(index) = r.opts.len().checked_sub(1) else {
                return Err(RemoteError::NoSuchRemote { index: 0, count: 0 });
            };
            r.opts.truncate(index);
            let old = r.tasks.pop().flatten();
            let mut entries = self.lock_entries();
            if entries.get(index).is_some_and(|e| e.solicited) {
                entries.remove(index);
            }
            old
        };
        if let Some(old) = old {
            old.stop().await;
        }
        Ok(())
    }

    /// The interest table of `account` (see [`interest`]), made on first use.
    pub(crate) fn interest(&self, account: &str) -> Arc<Mutex<Interest>> {
        let mut all = self.interests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = all.get(account) {
            return table.clone();
        }
        let table = Arc::new(Mutex::new(Interest::default()));
        all.insert(account.to_string(), table.clone());
        table
    }

    /// Every account's interest table.
    fn interest_tables(&self) -> Vec<Arc<Mutex<Interest>>> {
        let all = self.interests.lock().unwrap_or_else(|e| e.into_inner());
        all.values().cloned().collect()
    }

    fn lock_lds(&self) -> MutexGuard<'_, HashSet<Box<[u8]>>> {
        self.lds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh loop-detection subject for a link that is being established, `$LDS.<random>`;
    /// it is this server's until [`LeafState::drop_lds`].
    ///
    /// nats-server has one per account for the whole run; one per connection means a peer
    /// that learned a link's subject cannot use it against that link's next connection (by
    /// announcing it first, so the reconnecting link would look like the loop).
    pub(crate) fn new_lds(&self) -> Box<[u8]> {
        let lds: Box<[u8]> = format!("{LDS_PREFIX}{}", random_token(22))
            .into_bytes()
            .into_boxed_slice();
        self.lock_lds().insert(lds.clone());
        lds
    }

    /// Forgets the loop-detection subject of a link that ended.
    pub(crate) fn drop_lds(&self, lds: &[u8]) {
        self.lock_lds().remove(lds);
    }

    /// Whether `subject` is the loop-detection subject of one of this server's links: it came
    /// back, so there is a loop.
    pub fn is_own_lds(&self, subject: &[u8]) -> bool {
        self.lock_lds().contains(subject)
    }

    /// The status of every link: each remote (connected or not), then each accepted link.
    pub fn status(&self) -> Vec<LinkStatus> {
        self.lock_entries().iter().map(|e| e.snapshot()).collect()
    }

    /// The accepted links that are up: each one's connection id (the id of the
    /// `Publisher::Link` its messages come from) and the server name its leaf announced.
    /// hubd's fleet view matches status records against them.
    pub fn accepted_links(&self) -> Vec<(u64, String)> {
        self.lock_entries()
            .iter()
            .filter(|e| !e.solicited)
            .filter_map(|e| {
                let id = e.link.borrow().as_ref().map(|h| h.id)?;
                let s = e.lock();
                s.connected.then(|| (id, s.remote_server.clone()))
            })
            .collect()
    }

    fn lock_entries(&self) -> MutexGuard<'_, Vec<Arc<LinkEntry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status entry of remote number `index`.
    pub(crate) fn remote_entry(&self, index: usize) -> Option<Arc<LinkEntry>> {
        self.lock_entries()
            .get(index)
            .filter(|e| e.solicited)
            .cloned()
    }

    /// Watches remote number `index`'s established connection: `Some` while the link is up.
    /// Writing to it bypasses interest (the caller decides what to send).
    pub fn watch_remote(
        &self,
        index: usize,
    ) -> Option<tokio::sync::watch::Receiver<Option<Arc<ClientHandle>>>> {
        self.remote_entry(index).map(|e| e.link.subscribe())
    }

    /// Adds the status entry of a newly accepted link.
    pub(crate) fn add_accepted(&self, peer: String) -> Arc<LinkEntry> {
        let entry = LinkEntry::new(false, peer);
        self.lock_entries().push(entry.clone());
        entry
    }

    /// Removes an accepted link's status entry.
    pub(crate) fn remove_accepted(&self, entry: &Arc<LinkEntry>) {
        self.lock_entries().retain(|e| !Arc::ptr_eq(e, entry));
    }

    /// Closes the accepted links from the leaf server named `remote` other than `keep`, and
    /// returns how many: a leaf reconnecting before this side noticed that its old
    /// connection died (a cut WAN) must not leave the old one holding its interest and
    /// buffering messages until its pings time out. nats-server does the same.
    ///
    /// Only a connection that authenticated as the same `identity` may replace another: when
    /// a link from a leaf of that name is up with another identity, nothing is closed and
    /// [`NameTaken`] says so (the new connection is refused; nats-server 2.9 replaces by name
    /// alone, so any leaf could cut another off by sending its name).
    pub(crate) fn replace_stale(
        &self,
        remote: &str,
        identity: &str,
        keep: &Arc<ClientHandle>,
    ) -> Result<usize, NameTaken> {
        if remote.is_empty() {
            return Ok(0);
        }
        let entries: Vec<Arc<LinkEntry>> = self.lock_entries().clone();
        let same_name = |entry: &LinkEntry| {
            let s = entry.lock();
            (s.connected && s.remote_server == remote).then(|| s.identity.clone())
        };
        let mut stale = Vec::new();
        for entry in entries.iter().filter(|e| !e.solicited) {
            let Some(old) = entry.link.borrow().clone() else {
                continue;
            };
            if Arc::ptr_eq(&old, keep) {
                continue;
            }
            match same_name(entry) {
                Some(held) if held == identity => stale.push((entry.clone(), old)),
                Some(held) => {
                    return Err(NameTaken {
                        held_by: held,
                        link: old.id,
                    })
                }
                None => {}
            }
        }
        for (entry, old) in &stale {
            entry.lock().replaced = true;
            old.out.close();
            for table in self.interest_tables() {
                lock_interest(&table).drop_origin(old.id);
            }
        }
        Ok(stale.len())
    }
}

/// A leaf server name already in use by a link that authenticated as someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameTaken {
    /// Who the link holding the name authenticated as.
    pub held_by: String,
    /// That link's connection id.
    pub link: u64,
}

impl Peers for LeafState {
    fn announce(
        &self,
        account: &Account,
        sub: &Subscription,
        edit: &mut dyn FnMut() -> Option<i64>,
    ) {
        let table = self.interest(account.name());
        let mut interest = lock_interest(&table);
        if let Some(delta) = edit() {
            interest.change(&sub.subject, sub.queue.as_deref(), Origin::of(sub), delta);
        }
    }

    fn start(
        self: Arc<Self>,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
        done: &mpsc::Sender<()>,
    ) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(listener) = listener {
            tokio::spawn(accept::run(
                shared.clone(),
                self.clone(),
                listener,
                stop.clone(),
                done.clone(),
            ));
        }
        self.start_remotes(shared, done);
    }

    fn stop(&self) {
        self.stop_remotes();
    }

    /// Lame duck mode: every accepted leaf gets an INFO with `ldm: true` and the other
    /// members' leafnode URLs (this server's left out), and is closed over the lame duck
    /// duration; the listener closes (see [`accept`]). The remotes stay up.
    fn lame_duck(&self, shared: &Shared) -> Vec<Arc<ClientHandle>> {
        self.tell_accepted(shared, self.cluster_urls(), true)
    }
}

/// Locks one account's interest table.
pub(crate) fn lock_interest(table: &Mutex<Interest>) -> MutexGuard<'_, Interest> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random token of upper-case letters and digits (for `$LDS.` subjects).
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| {
            ALPHABET
                .get(fastrand::usize(..ALPHABET.len()))
                .copied()
                .map_or('A', char::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_remotes_and_accepted_links() {
        let url = RemoteUrl::parse("nats-leaf://u:p@hub:1").unwrap();
        let state = LeafState::new(LeafOptions {
            remotes: vec![RemoteOptions::new(vec![url])],
            ..LeafOptions::default()
        });
        let lds = state.new_lds();
        assert!(lds.starts_with(b"$LDS.") && state.is_own_lds(&lds));
        assert_ne!(state.new_lds(), lds);
        state.drop_lds(&lds);
        assert!(!state.is_own_lds(&lds));
        let st = state.status();
        assert_eq!(st.len(), 1);
        assert!(st[0].solicited && !st[0].connected);
        assert_eq!(st[0].url, "nats-leaf://u:[REDACTED]@hub:1");

        let remote = state.remote_entry(0).unwrap();
        remote.up("nats-leaf://hub:1".into(), "hub".into(), false);
        remote.down("closed".into());
        remote.up("tls://hub:1".into(), "hub".into(), true);
        remote.stats().msgs_in.fetch_add(3, Ordering::Relaxed);
        let accepted = state.add_accepted("127.0.0.1:5".into());
        accepted.up("127.0.0.1:5".into(), "leaf".into(), false);
        let st = state.status();
        assert_eq!(st.len(), 2);
        assert!(st[0].connected && st[0].tls);
        assert!(!st[1].tls);
        assert_eq!(st[0].reconnects, 1);
        assert_eq!(st[0].msgs_in, 3);
        assert_eq!(st[0].last_error.as_deref(), Some("closed"));
        assert!(!st[1].solicited);
        // Up, but without its connection published yet: not listed.
        assert!(state.accepted_links().is_empty());
        let handle = Arc::new(ClientHandle::new(42, 1024));
        remote.set_link(Some(handle.clone()));
        accepted.set_link(Some(handle));
        assert_eq!(state.accepted_links(), vec![(42, "leaf".to_owned())]);
        accepted.down("gone".into());
        assert!(state.accepted_links().is_empty());
        state.remove_accepted(&accepted);
        assert_eq!(state.status().len(), 1);
        assert!(state.remote_entry(1).is_none());
    }
}
