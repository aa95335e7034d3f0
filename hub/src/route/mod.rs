//! Routes: hubd in a cluster, speaking nats-server 2.9's route protocol (issue 21), so hubd
//! nodes form a cluster with each other and with nats-server.
//!
//! * [`settings`]: the `cluster` block (`name`, `listen`, `routes`, `authorization`, ...);
//! * [`link`]: one route connection, either side: the INFO/CONNECT handshake, `RS+`/`RS-`
//!   interest in, `RMSG`/`HMSG` messages in and delivered locally, keepalive;
//! * this module: the cluster's state ([`Routes`]): the listener and the dialers of the
//!   configured routes, the established routes by peer server id (one per peer), and the
//!   interest announced to them.
//!
//! # Interest
//!
//! Every route is told the interest of this server: its clients' and components'
//! subscriptions and those of the leaves it accepted, per account (`RS+ <account> <subject>`
//! when the first one appears, `RS-` when the last one goes; a queue group's `RS+` carries
//! its number of members here and is sent again whenever that changes). Interest learned
//! from a route is never announced to another route: every member has a route to every other
//! member, and a message crosses one route at most (see `leaf_core::server::fanout`). The
//! table of what was announced lives here, under one lock that the server's subscription hooks
//! take through [`crate::peers::HubPeers`]; a route that comes up is sent the whole table
//! under that lock, so it misses no change and gets none twice.
//!
//! JetStream stays on each server (`$JS.API.`, `$KV.`, `$OBJ.` neither announced nor
//! forwarded, as on leafnode links) until replicated JetStream (issue 22).
//!
//! # Duplicates
//!
//! Two members that dial each other end up with two connections to the same peer; one is
//! closed, and messages queued on a closed route are lost, so the choice avoids closing one
//! that carries traffic. A route up for longer than [`SETTLED`] is kept and the new
//! connection refused (as nats-server refuses a duplicate route). Two connections that came
//! up within [`SETTLED`] of each other (a simultaneous dial) are settled alike on both sides:
//! the one dialled by the member with the smaller server id stays. A new connection dialled by
//! the same side as the existing one replaces it (the old one is most likely dead and not
//! noticed yet). A dialer whose connection lost waits while the route is up; dialers retry
//! with a random delay so that two members do not race again and again.
//!
//! # Gossip
//!
//! When a route comes up, its peer's INFO (with `ip`, the peer's route URL: its address as
//! seen here and the route port its INFO gives) is forwarded to every other route; a server
//! that receives an INFO about another member dials it (an implicit route, tried
//! `connect_retries + 1` times), so a member given one seed meets them all.
//!
//! # What clients and leaves are told
//!
//! Each member's route INFO carries its leafnode URL (`leafnode_urls`) and its client URL
//! (`connect_urls`, unless `no_advertise`); this server gives its leaves the members'
//! leafnode URLs and its clients their client URLs (INFO `connect_urls`, sent again when
//! members come and go), so both fail over to another member.
//!
//! `cluster.advertise` replaces the address in the gossiped `ip`.
//!
//! # TLS
//!
//! With `cluster.tls` every route starts TLS right after the TCP connect, before the INFO (as
//! nats-server 2.9), and both sides verify each other against `ca_file`
//! (`leaf_core::tls::mutual`): a member without TLS, or with a certificate from another CA,
//! never gets a route, and both sides log why. A route dialled at an IP address (every route
//! learned by gossip) checks the peer's certificate against the first host name among the
//! configured routes if there is one, else the address (which the certificate must list).
//!
//! # Lame duck mode
//!
//! A member entering lame duck mode sends every route an INFO with `ldm: true`
//! ([`Routes::lame_duck`]); a member that receives one drops that peer's client and leafnode
//! URLs from what it announces ([`Routes::peer_in_lame_duck`]), so clients and leaves moving
//! away from it are not sent back. Routes stay up until the member shuts down.
//!
//! # JetStream cluster members
//!
//! A hubd member of a JetStream cluster sends its Raft node id in its route INFO
//! (`leaf_jsc`: [`JscInfo`], set with [`Routes::set_jsc`]; nats-server ignores the field), and
//! each [`Established`] route keeps the peer's (`jsc`) and its INFO's `jetstream` flag: how
//! `crate::jsc` finds the hubd members of the meta group and the nats-server members with
//! JetStream. [`Routes::configured_peers`] counts the members the configuration lists (the
//! meta group's expected size). hubd's own INFO keeps `jetstream: false`: it takes no part in
//! nats-server's JetStream groups.

pub mod link;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use leaf_core::server::fanout::{ClientHandle, SubTarget, Subscription};
use leaf_core::server::{Account, Shared};
use leaf_core::tls::mutual::MutualTls;
use leaf_proto as proto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use settings::{ClusterSettings, RouteUrl};

/// How long a dialer waits between attempts at an explicit route (plus up to a quarter of
/// it at random).
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A route up for this long is kept when a duplicate connection to the same peer comes up.
pub const SETTLED: Duration = Duration::from_millis(250);

/// The cluster's state: settings, listener, established routes and the interest told to them.
pub struct Routes {
    /// The `cluster` block.
    pub settings: ClusterSettings,
    /// The cluster's name (configured, or made up at start).
    pub cluster_name: String,
    /// The route listener, until the server starts it.
    listener: Mutex<Option<TcpListener>>,
    /// The address routes are accepted on.
    pub listen_addr: std::net::SocketAddr,
    /// TLS on every route (`cluster.tls`), both sides verified.
    tls: Option<Arc<MutualTls>>,
    /// The name a dialled route's certificate is checked against when its URL holds an IP
    /// address: the first host name among the configured routes (as nats-server, so that
    /// routes learned by gossip, whose URLs carry addresses, can be verified), else the
    /// address itself.
    tls_name: Option<String>,
    /// The server, once it runs, and what route tasks started later need.
    runtime: OnceLock<Runtime>,
    /// This server's leafnode links, if it has a leafnode listener: told the other members'
    /// leafnode URLs.
    leaf: OnceLock<Arc<leaf_core::leafnode::LeafState>>,
    /// This server's JetStream cluster identity, sent in the route INFO (`leaf_jsc`).
    jsc: OnceLock<JscInfo>,
    state: Mutex<State>,
}

/// A hubd member's JetStream cluster identity, in its route INFO as `leaf_jsc` (nats-server
/// ignores the field): how hubd members with JetStream recognise each other (see
/// `hub/JETSTREAM-CLUSTER.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JscInfo {
    /// Its Raft node id (derived from its server name).
    pub node_id: u64,
    /// Its `server_tags` (a stream's `placement.tags` choose among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What route tasks started after the server (implicit routes) need.
struct Runtime {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Weak: the server's shutdown waits for every strong sender.
    done: mpsc::WeakSender<()>,
}

/// What [`Routes::state`] guards.
#[derive(Default)]
struct State {
    /// Established routes, by the peer's server id.
    routes: HashMap<String, Established>,
    /// Interest announced to every route, by (account, `subject[ queue]`): the members here.
    interest: HashMap<(String, Box<[u8]>), u32>,
    /// Route URLs found to lead back to this server.
    own_urls: Vec<String>,
    /// Server ids an implicit route is being dialled to.
    dialling: HashSet<String>,
}

/// One established route.
#[derive(Clone)]
pub struct Established {
    /// Its connection.
    pub handle: Arc<ClientHandle>,
    /// This server dialled it.
    pub solicited: bool,
    /// The peer's server name.
    pub name: String,
    /// When it came up.
    pub since: SystemTime,
    /// The peer's INFO, with `ip` (its route URL) set: forwarded to the other members so
    /// they connect to it (gossip).
    pub info: serde_json::Value,
    /// The peer's address.
    pub addr: std::net::SocketAddr,
    /// This server dialled it because the configuration lists it (not learned by gossip).
    pub configured: bool,
    /// What the connection keeps up to date: interest count, RTT, traffic.
    pub status: Arc<RouteStatus>,
    /// The peer's leafnode URL (`leafnode_urls` in its INFO), announced to this server's
    /// leaves.
    pub leaf_url: Option<String>,
    /// The peer's client URLs (`connect_urls` in its INFO), announced to this server's
    /// clients unless `no_advertise`.
    pub client_urls: Vec<String>,
    /// The peer's INFO says it runs JetStream (nats-server's field; hubd leaves it false).
    pub jetstream: bool,
    /// The peer is a hubd member of the JetStream cluster (its INFO's `leaf_jsc`).
    pub jsc: Option<JscInfo>,
}

/// A route's figures, kept by its connection and read by `/routez` and `/metrics`.
#[derive(Debug, Default)]
pub struct RouteStatus {
    /// Subscriptions (interest keys) the peer announced.
    pub subs: std::sync::atomic::AtomicUsize,
    /// The last PING's round trip, nanoseconds (0: none measured yet).
    pub rtt_ns: std::sync::atomic::AtomicU64,
    /// Traffic both ways.
    pub stats: Arc<leaf_core::server::fanout::LinkStats>,
    /// When the peer last sent anything, Unix nanoseconds.
    pub last_activity_ns: std::sync::atomic::AtomicU64,
}

/// Why a route could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The peer is this server.
    #[error("route to self")]
    ToSelf,
    /// A route to this peer exists and is kept.
    #[error("duplicate route to {0}")]
    Duplicate(String),
}

impl Routes {
    /// Binds the route listener of `settings`.
    pub async fn bind(settings: ClusterSettings) -> Result<Arc<Routes>, String> {
        let addr = settings.listen_addr()?;
        let listener = leaf_core::listen::bind(&addr)
            .await
            .map_err(|e| format!("cluster.listen: cannot listen on {addr}: {e}"))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| format!("cluster.listen: {e}"))?;
        let cluster_name = settings
            .name
            .clone()
            .unwrap_or_else(|| format!("C{:016X}", fastrand::u64(..)));
        let tls = match &settings.tls {
            Some(tls) => Some(Arc::new(tls.build().map_err(|e| e.to_string())?)),
            None => None,
        };
        let tls_name = settings
            .routes
            .iter()
            .find(|u| u.host.parse::<std::net::IpAddr>().is_err())
            .map(|u| u.host.clone());
        Ok(Arc::new(Routes {
            settings,
            cluster_name,
            listener: Mutex::new(Some(listener)),
            listen_addr,
            tls,
            tls_name,
            runtime: OnceLock::new(),
            leaf: OnceLock::new(),
            jsc: OnceLock::new(),
            state: Mutex::new(State::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the routes this server's leafnode links (see [`Routes::leaf_url`]).
    pub fn set_leaf(&self, leaf: Arc<leaf_core::leafnode::LeafState>) {
        let _ = self.leaf.set(leaf);
    }

    /// Makes this server a member of the JetStream cluster: its route INFO carries `jsc` (set
    /// before the routes start).
    pub fn set_jsc(&self, jsc: JscInfo) {
        let _ = self.jsc.set(jsc);
    }

    /// This server's JetStream cluster identity, if it is a member.
    pub fn jsc(&self) -> Option<JscInfo> {
        self.jsc.get().cloned()
    }

    /// The number of other members the configuration lists: distinct route URLs, less those
    /// that are this server's own (its listen address, or found to lead back here).
    pub fn configured_peers(&self) -> usize {
        let own = self.lock().own_urls.clone();
        let mut urls: Vec<String> = self
            .settings
            .routes
            .iter()
            .map(RouteUrl::addr)
            .filter(|a| !own.contains(a) && !self.is_listen_addr(a))
            .collect();
        urls.sort();
        urls.dedup();
        urls.len()
    }

    /// Whether `addr` (`host:port`) is this server's route listener.
    fn is_listen_addr(&self, addr: &str) -> bool {
        let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
            return false;
        };
        sock.port() == self.listen_addr.port()
            && (sock.ip() == self.listen_addr.ip()
                || (self.listen_addr.ip().is_unspecified() && sock.ip().is_loopback()))
    }

    /// This server's leafnode URL, announced to the other members in the route INFO.
    pub fn leaf_url(&self) -> Option<String> {
        let addr = self.leaf.get()?.listen_addr?;
        let ip = if addr.ip().is_unspecified() {
            self.listen_addr.ip()
        } else {
            addr.ip()
        };
        (!ip.is_unspecified()).then(|| std::net::SocketAddr::new(ip, addr.port()).to_string())
    }

    /// Tells this server's leaves the leafnode URLs of the members with a route up, and its
    /// clients their client URLs (unless `no_advertise`).
    fn update_leaf_urls(&self) {
        let Some(rt) = self.runtime.get() else {
            return;
        };
        let (leaf_urls, client_urls): (Vec<String>, Vec<String>) = {
            let state = self.lock();
            (
                state
                    .routes
                    .values()
                    .filter_map(|r| r.leaf_url.clone())
                    .collect(),
                state
                    .routes
                    .values()
                    .flat_map(|r| r.client_urls.iter().cloned())
                    .collect(),
            )
        };
        if let Some(leaf) = self.leaf.get() {
            leaf.set_cluster_urls(&rt.shared, leaf_urls);
        }
        if !self.settings.no_advertise {
            rt.shared.set_cluster_urls(client_urls);
        }
    }

    /// The established routes.
    pub fn established(&self) -> Vec<(String, Established)> {
        self.lock()
            .routes
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    /// Whether a route to the server with id `server_id` is up.
    pub fn is_connected(&self, server_id: &str) -> bool {
        self.lock().routes.contains_key(server_id)
    }

    /// Runs `edit` (one change of `account`'s subscriptions) under the interest lock, and
    /// tells every route what changed for `sub`, unless the interest came from a route.
    pub fn announce_with(
        &self,
        account: &Account,
        sub: &Subscription,
        edit: &mut dyn FnMut() -> Option<i64>,
    ) -> Option<i64> {
        let mut state = self.lock();
        let change = edit();
        let Some(delta) = change else {
            return change;
        };
        if from_route(sub) || leaf_core::leafnode::route_denied(&sub.subject) {
            return change;
        }
        let key = (account.name().to_owned(), interest_key(sub));
        let old = state.interest.get(&key).copied().unwrap_or(0);
        let new = u32::try_from((i64::from(old) + delta).max(0)).unwrap_or(u32::MAX);
        if new == 0 {
            state.interest.remove(&key);
        } else {
            state.interest.insert(key, new);
        }
        let mut out = BytesMut::new();
        write_change(&mut out, account.name(), sub, old, new);
        if !out.is_empty() {
            for route in state.routes.values() {
                route.handle.out.append_bytes(&out);
                route.handle.out.flush();
            }
        }
        change
    }

    /// Registers an established route to `server_id` and sends it the whole interest table,
    /// under the interest lock. `ours` is this server's id.
    pub fn register(
        &self,
        ours: &str,
        server_id: &str,
        route: Established,
    ) -> Result<(), RegisterError> {
        if server_id == ours {
            return Err(RegisterError::ToSelf);
        }
        let mut state = self.lock();
        if let Some(existing) = state.routes.get(server_id) {
            let settled = existing.since.elapsed().unwrap_or_default() >= SETTLED;
            if !keep_new(
                existing.solicited,
                route.solicited,
                settled,
                ours,
                server_id,
            ) {
                return Err(RegisterError::Duplicate(server_id.to_owned()));
            }
            info!(
                peer = server_id,
                "duplicate route: the new connection replaces the old"
            );
            existing.handle.out.close();
        }
        let mut out = BytesMut::new();
        for ((account, key), members) in &state.interest {
            let (subject, queue) = split_key(key);
            write_interest(&mut out, account, subject, queue, *members);
        }
        route.handle.out.append_bytes(&out);
        route.handle.out.flush();
        state.routes.insert(server_id.to_owned(), route);
        drop(state);
        self.update_leaf_urls();
        Ok(())
    }

    /// Forgets the route `handle` (to `server_id`), if it is the registered one.
    pub fn unregister(&self, server_id: &str, handle: &Arc<ClientHandle>) {
        let mut state = self.lock();
        if state
            .routes
            .get(server_id)
            .is_some_and(|r| Arc::ptr_eq(&r.handle, handle))
        {
            state.routes.remove(server_id);
            drop(state);
            self.update_leaf_urls();
        }
    }

    /// Tells every other route about the newly registered peer `peer_id` (its INFO, with its
    /// route URL in `ip`), so that each connects to it: a member given one seed meets all.
    pub fn gossip_new(&self, peer_id: &str) {
        let state = self.lock();
        let Some(new) = state.routes.get(peer_id) else {
            return;
        };
        let Ok(json) = serde_json::to_vec(&new.info) else {
            return;
        };
        let mut out = BytesMut::new();
        proto::write_route_op(&mut out, &proto::RouteOp::Info(&json));
        for (id, route) in &state.routes {
            if id != peer_id {
                route.handle.out.append_bytes(&out);
                route.handle.out.flush();
            }
        }
    }

    /// This server entered lame duck mode: every route is sent an INFO with `ldm: true`, so
    /// the other members stop announcing this one's client and leafnode URLs. The routes stay
    /// up (traffic keeps flowing to the clients and leaves still here).
    pub fn lame_duck(&self, shared: &Shared) {
        let json = link::info_json(self, shared, true);
        let mut out = BytesMut::new();
        proto::write_route_op(&mut out, &proto::RouteOp::Info(&json));
        for route in self.lock().routes.values() {
            route.handle.out.append_bytes(&out);
            route.handle.out.flush();
        }
    }

    /// Route peer `server_id` entered lame duck mode: its client and leafnode URLs are no
    /// longer announced to this server's clients and leaves (nats-server drops the client
    /// URLs only; a leaf sent to a member in lame duck mode would be closed again).
    pub fn peer_in_lame_duck(&self, server_id: &str) {
        {
            let mut state = self.lock();
            let Some(route) = state.routes.get_mut(server_id) else {
                return;
            };
            route.leaf_url = None;
            route.client_urls.clear();
        }
        self.update_leaf_urls();
    }

    /// A peer told us about member `server_id` at `url` (an INFO about another server): dial
    /// it unless it is this server, a route to it is up, one is being dialled, or it is a
    /// configured route (dialled anyway). Tried `connect_retries + 1` times, as nats-server
    /// does with implicit routes.
    pub fn implicit(self: &Arc<Self>, server_id: &str, url: RouteUrl) {
        let Some(rt) = self.runtime.get() else {
            return;
        };
        if server_id == rt.shared.server_id {
            return;
        }
        {
            let mut state = self.lock();
            if state.routes.contains_key(server_id) || state.dialling.contains(server_id) {
                return;
            }
            if self.settings.routes.iter().any(|r| r.addr() == url.addr()) {
                return;
            }
            state.dialling.insert(server_id.to_owned());
        }
        info!(peer_id = server_id, url = %url, "dialling a member learned from a peer");
        let routes = self.clone();
        let shared = rt.shared.clone();
        let stop = rt.stop.clone();
        let Some(done) = rt.done.upgrade() else {
            // The server is stopping.
            self.lock().dialling.remove(server_id);
            return;
        };
        let server_id = server_id.to_owned();
        let attempts = self.settings.connect_retries.saturating_add(1);
        tokio::spawn(async move {
            dial(&routes, &shared, &url, stop, Some(attempts)).await;
            routes.lock().dialling.remove(&server_id);
            drop(done);
        });
    }

    /// Notes that `url` leads back to this server (no more dialling it).
    pub fn note_own_url(&self, url: &RouteUrl) {
        let mut state = self.lock();
        let url = url.addr();
        if !state.own_urls.contains(&url) {
            state.own_urls.push(url);
        }
    }

    /// A dialled connection to `url`, with TLS if the cluster has it (`None`, logged, when
    /// the handshake fails).
    async fn secure(
        &self,
        tcp: tokio::net::TcpStream,
        url: &RouteUrl,
    ) -> Option<link::RouteStream> {
        let Some(tls) = &self.tls else {
            return Some(link::RouteStream::Plain(tcp));
        };
        let name = match (&self.tls_name, url.host.parse::<std::net::IpAddr>()) {
            (Some(name), Ok(_)) => name.as_str(),
            _ => url.host.as_str(),
        };
        match tls.connect(name, tcp, &format!("route {url}")).await {
            Ok(tls) => Some(link::RouteStream::Tls(Box::new(tls))),
            Err(why) => {
                warn!(url = %url, "route not established: {why} (cluster.tls is set here: every member needs it, with a certificate from the same CA)");
                None
            }
        }
    }

    /// Whether routes run over TLS.
    pub fn tls_required(&self) -> bool {
        self.tls.is_some()
    }

    fn is_own_url(&self, url: &RouteUrl) -> bool {
        self.lock().own_urls.contains(&url.addr())
    }

    /// Starts accepting routes and dialling the configured ones.
    pub fn start(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
        done: &mpsc::Sender<()>,
    ) {
        let _ = self.runtime.set(Runtime {
            shared: shared.clone(),
            stop: stop.clone(),
            done: done.downgrade(),
        });
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            info!(addr = %self.listen_addr, cluster = %self.cluster_name, "listening for routes");
            tokio::spawn(accept_loop(
                self.clone(),
                shared.clone(),
                listener,
                stop.clone(),
                done.clone(),
            ));
        }
        for url in self.settings.routes.clone() {
            tokio::spawn(dial_loop(
                self.clone(),
                shared.clone(),
                url,
                stop.clone(),
                done.clone(),
            ));
        }
    }
}

/// Whether a new route connection replaces the existing one to the same peer (see
/// "Duplicates" above; `*_solicited`: dialled by this server; `settled`: the existing one has
/// been up for [`SETTLED`]).
fn keep_new(
    existing_solicited: bool,
    new_solicited: bool,
    settled: bool,
    ours: &str,
    theirs: &str,
) -> bool {
    if existing_solicited == new_solicited {
        return true;
    }
    if settled {
        return false;
    }
    let preferred_is_ours = ours < theirs;
    new_solicited == preferred_is_ours
}

/// Whether `sub` is interest a route announced.
fn from_route(sub: &Subscription) -> bool {
    matches!(&sub.target, SubTarget::Leaf(h) if h.route().is_some())
}

/// `subject` or `subject queue`.
fn interest_key(sub: &Subscription) -> Box<[u8]> {
    let mut key = sub.subject.to_vec();
    if let Some(q) = &sub.queue {
        key.push(b' ');
        key.extend_from_slice(q);
    }
    key.into_boxed_slice()
}

/// Splits a key back into subject and queue.
fn split_key(key: &[u8]) -> (&[u8], Option<&[u8]>) {
    match key.iter().position(|&b| b == b' ') {
        Some(i) => (key.get(..i).unwrap_or_default(), key.get(i + 1..)),
        None => (key, None),
    }
}

/// The `RS+`/`RS-` a change from `old` to `new` members of `sub`'s key needs, if any.
fn write_change(out: &mut BytesMut, account: &str, sub: &Subscription, old: u32, new: u32) {
    let account = account.as_bytes();
    match (&sub.queue, old, new) {
        (None, 0, n) if n > 0 => proto::write_rs_plus(out, account, &sub.subject, None),
        (None, o, 0) if o > 0 => proto::write_rs_minus(out, account, &sub.subject, None),
        (Some(q), o, 0) if o > 0 => proto::write_rs_minus(out, account, &sub.subject, Some(q)),
        (Some(q), o, n) if n > 0 && n != o => {
            proto::write_rs_plus(out, account, &sub.subject, Some((q, n)));
        }
        _ => {}
    }
}

/// The `RS+` of one table entry, for a route that just came up.
fn write_interest(
    out: &mut BytesMut,
    account: &str,
    subject: &[u8],
    queue: Option<&[u8]>,
    members: u32,
) {
    let queue = queue.map(|q| (q, members));
    proto::write_rs_plus(out, account.as_bytes(), subject, queue);
}

/// Accepts routes until the server stops.
async fn accept_loop(
    routes: Arc<Routes>,
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let routes = routes.clone();
                let shared = shared.clone();
                let stop = stop.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let _done = done;
                    let stream = match routes.tls.clone() {
                        None => link::RouteStream::Plain(stream),
                        Some(tls) => {
                            let who = format!("route peer {peer}");
                            match tls.accept(stream, &who).await {
                                Ok(tls) => link::RouteStream::Tls(Box::new(tls)),
                                Err(why) => {
                                    warn!(%peer, "route refused: {why} (cluster.tls is set here: every member needs it, with a certificate from the same CA)");
                                    return;
                                }
                            }
                        }
                    };
                    let ended = link::serve(shared, routes, stream, peer, None, stop).await;
                    info!(%peer, reason = %ended, "route closed");
                });
            }
            Err(e) => {
                warn!(error = %e, "route accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(done);
}

/// Dials the configured route `url` and keeps it up until the server stops.
async fn dial_loop(
    routes: Arc<Routes>,
    shared: Arc<Shared>,
    url: RouteUrl,
    stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    dial(&routes, &shared, &url, stop, None).await;
    drop(done);
}

/// Dials `url` and keeps the route up: again [`RECONNECT_DELAY`] after it ends, not while
/// another connection to the same peer is up, never again once it turned out to lead back to
/// this server; with `attempts`, gives up after that many connections that failed or ended.
async fn dial(
    routes: &Arc<Routes>,
    shared: &Arc<Shared>,
    url: &RouteUrl,
    mut stop: watch::Receiver<bool>,
    attempts: Option<u32>,
) {
    let mut peer_id: Option<String> = None;
    let mut tried = 0u32;
    loop {
        if *stop.borrow() || routes.is_own_url(url) {
            break;
        }
        let busy = peer_id.as_deref().is_some_and(|id| routes.is_connected(id));
        if !busy {
            if attempts.is_some_and(|n| tried >= n) {
                break;
            }
            tried += 1;
            let connect = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(url.addr()),
            );
            let connected = tokio::select! {
                c = connect => c,
                _ = stop.changed() => break,
            };
            match connected {
                Ok(Ok(stream)) => {
                    let peer = stream
                        .peer_addr()
                        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                    if let Some(stream) = routes.secure(stream, url).await {
                        let ended = link::serve(
                            shared.clone(),
                            routes.clone(),
                            stream,
                            peer,
                            Some(url),
                            stop.clone(),
                        )
                        .await;
                        if let Some(id) = ended.peer_id() {
                            peer_id = Some(id.to_owned());
                        }
                        info!(url = %url, reason = %ended, "route closed");
                    }
                }
                Ok(Err(e)) => tracing::debug!(url = %url, error = %e, "route connect failed"),
                Err(_) => tracing::debug!(url = %url, "route connect timed out"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_DELAY + RECONNECT_DELAY.mul_f64(fastrand::f64() / 4.0)) => {}
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keep_new;

    #[test]
    fn duplicate_routes_are_settled_alike_on_both_sides() {
        // Same dialer: the new connection replaces the old.
        assert!(keep_new(true, true, true, "A", "B"));
        assert!(keep_new(false, false, true, "A", "B"));
        // A settled route stays, whoever dialled.
        assert!(!keep_new(true, false, true, "A", "B"));
        assert!(!keep_new(false, true, true, "A", "B"));
        // A simultaneous dial: both sides keep the connection A (the smaller id) dialled.
        // On A: existing dialled by B (false), new dialled by A (true) -> keep new.
        assert!(keep_new(false, true, false, "A", "B"));
        // On B: existing dialled by B (true), new dialled by A (false) -> keep new.
        assert!(keep_new(true, false, false, "B", "A"));
        // And the other order of arrival.
        assert!(!keep_new(true, false, false, "A", "B"));
        assert!(!keep_new(false, true, false, "B", "A"));
    }
}
