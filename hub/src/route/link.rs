//! One route connection, either side, until it ends.
//!
//! Handshake, as nats-server 2.9 does it: the accepting server sends its INFO at once; the
//! dialling server reads it, checks it (not itself, the same cluster name), then sends its
//! CONNECT (credentials from the route URL, `name` = its server id, no `lang`) and its own
//! INFO. The accepting server checks the CONNECT (no `lang`, the cluster's credentials, the
//! cluster name: `-ERR 'Rejecting connection, cluster name "X" does not match "Y"'`) and the
//! INFO that follows. Either side is established once it has the peer's INFO: it registers the
//! route (one per peer, see [`super::Routes::register`]) and sends the whole interest table.
//!
//! Established: `RS+`/`RS-` become subscriptions of the named account whose target is this
//! route (a queue group's weight = the peer's member count), `RMSG`/`HMSG` are delivered to
//! the account's local subscriptions and leaves (never to another route), `PING` is answered,
//! and this side pings every `ping_interval`, closing after `ping_max` unanswered. Anything
//! malformed closes this route only. Interest for an account this server does not have is
//! ignored, as nats-server does with accounts from its configuration.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Buf;
use leaf_core::server::account::{js_linked_delivery, split_near_far};
use leaf_core::server::fanout::{
    ClientHandle, ConnKind, Fanout, LinkStats, MatchCache, Msg, RoutePeer, SubRef, SubTarget,
    Subscription,
};
use leaf_core::server::readbuf::ReadBuffer;
use leaf_core::server::reply::Publisher;
use leaf_core::server::{Account, Shared};
use leaf_core::tls::FlushingWriter;
use leaf_proto::subject::{is_valid_queue_name, is_valid_subject};
use leaf_proto::{self as proto, Limits, QueueNames, RouteOp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Established, RegisterError, RouteUrl, Routes};

/// Longest control line on a route (queue lists and INFO can be long).
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// The largest message a route carries.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// The first byte of a TLS handshake record (a ClientHello): what a member with `cluster.tls`
/// sends first.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long the handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// Why a route ended.
#[derive(Debug)]
pub enum Ended {
    /// The peer closed it.
    Eof,
    /// A read failed.
    Read(std::io::Error),
    /// The peer broke the protocol.
    Protocol(String),
    /// The peer was refused (cluster name, credentials, a client on the route port).
    Refused(String),
    /// The peer sent `-ERR`.
    PeerError(String),
    /// The peer is this server.
    ToSelf,
    /// Another connection to the same peer is kept.
    Duplicate,
    /// The handshake took too long.
    HandshakeTimeout,
    /// Pings went unanswered.
    Stale,
    /// The outbound side closed (slow peer, write error, or replaced).
    WriterClosed,
    /// The server is stopping.
    Shutdown,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Eof => f.write_str("closed by the peer"),
            Ended::Read(e) => write!(f, "read error: {e}"),
            Ended::Protocol(why) => write!(f, "protocol error: {why}"),
            Ended::Refused(why) => write!(f, "refused: {why}"),
            Ended::PeerError(text) => write!(f, "the peer said -ERR {text}"),
            Ended::ToSelf => f.write_str("route to self"),
            Ended::Duplicate => f.write_str("duplicate route"),
            Ended::HandshakeTimeout => f.write_str("handshake timeout"),
            Ended::Stale => f.write_str("stale (pings unanswered)"),
            Ended::WriterClosed => f.write_str("write side closed"),
            Ended::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// How a route ended, and the peer's server id if it told it.
#[derive(Debug)]
pub struct Closed {
    /// Why.
    pub reason: Ended,
    /// The peer's server id, once its INFO arrived.
    pub peer_id: Option<String>,
}

impl Closed {
    /// The peer's server id, if known.
    pub fn peer_id(&self) -> Option<&str> {
        self.peer_id.as_deref()
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.reason, f)
    }
}

/// The fields of a peer's route INFO this server reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PeerInfo {
    server_id: String,
    server_name: String,
    cluster: String,
    headers: bool,
    /// Its route URL, when it advertises one or a peer forwards its INFO.
    ip: String,
    /// Its route port.
    port: u16,
    /// Its leafnode URL (one at most on a route).
    leafnode_urls: Vec<String>,
    /// Its client URLs.
    connect_urls: Vec<String>,
    /// It entered lame duck mode: its URLs are no longer announced.
    ldm: bool,
    /// It runs JetStream (nats-server sets it; hubd does not: it takes no part in
    /// nats-server's JetStream groups).
    jetstream: bool,
    /// A hubd member's JetStream cluster identity (absent from nats-server's INFO); read
    /// leniently: a malformed one is ignored (and logged), not a reason to close the route.
    leaf_jsc: Option<serde_json::Value>,
}

/// The fields of a peer's route CONNECT this server reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PeerConnect {
    lang: Option<String>,
    gateway: Option<String>,
    cluster: String,
    user: Option<String>,
    pass: Option<String>,
}

/// Our route INFO.
#[derive(Serialize)]
struct OurInfo<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'a str,
    go: &'a str,
    host: String,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    headers: bool,
    auth_required: bool,
    tls_required: bool,
    tls_verify: bool,
    max_payload: usize,
    proto: u32,
    cluster: &'a str,
    jetstream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    leafnode_urls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    connect_urls: Vec<String>,
    /// Lame duck mode (sent once, on the INFO that announces it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
    /// This hubd's JetStream cluster identity (ignored by nats-server).
    #[serde(skip_serializing_if = "Option::is_none")]
    leaf_jsc: Option<super::JscInfo>,
}

/// Our route CONNECT.
#[derive(Serialize)]
struct OurConnect<'a> {
    echo: bool,
    verbose: bool,
    pedantic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    tls_required: bool,
    headers: bool,
    name: &'a str,
    cluster: &'a str,
}

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Dialled: waiting for the peer's INFO.
    AwaitInfo,
    /// Accepted: waiting for the peer's CONNECT.
    AwaitConnect,
    /// Accepted: CONNECT checked, waiting for the peer's INFO.
    AwaitPeerInfo,
    /// Registered.
    Established,
}

/// One route connection's state.
struct Route<'a> {
    shared: &'a Arc<Shared>,
    routes: &'a Arc<Routes>,
    handle: Arc<ClientHandle>,
    stats: Arc<LinkStats>,
    status: Arc<super::RouteStatus>,
    /// When the PING awaiting its PONG went out (for the RTT).
    ping_sent: Option<std::time::Instant>,
    peer: SocketAddr,
    dialled: Option<&'a RouteUrl>,
    phase: Phase,
    limits: Limits,
    peer_id: Option<String>,
    peer_name: String,
    /// The peer's leafnode URL, from its INFO.
    peer_leaf_url: Option<String>,
    /// The peer's client URLs, from its INFO.
    peer_client_urls: Vec<String>,
    /// The peer's `jetstream` and `leaf_jsc`, from its INFO.
    peer_js: (bool, Option<super::JscInfo>),
    /// Interest the peer announced: (account, `subject[ queue]`) → subscription.
    subs: HashMap<(String, Box<[u8]>), SubRef>,
    /// Accounts by name, with their match caches.
    accounts: HashMap<Box<[u8]>, (Arc<Account>, MatchCache)>,
    fanout: Fanout,
    pings_out: u32,
    registered: bool,
}

/// A route's connection: plain TCP, or TLS when the cluster has `tls` (the handshake is
/// done before it gets here).
pub enum RouteStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<leaf_core::tls::mutual::MutualStream>),
}

/// Runs one route connection until it ends. `dialled`: the URL this server dialled (`None`:
/// accepted).
pub async fn serve(
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    stream: RouteStream,
    peer: SocketAddr,
    dialled: Option<&RouteUrl>,
    mut stop: watch::Receiver<bool>,
) -> Closed {
    let id = shared.next_connection_id();
    let stats = Arc::new(LinkStats::default());
    let handle = Arc::new(ClientHandle::with_kind(
        id,
        shared.opts.max_pending.max(MAX_PAYLOAD),
        ConnKind::Route(RoutePeer {
            server_id: std::sync::OnceLock::new(),
            stats: stats.clone(),
        }),
    ));
    let mut route = Route {
        shared: &shared,
        routes: &routes,
        handle: handle.clone(),
        status: Arc::new(super::RouteStatus {
            stats: stats.clone(),
            ..super::RouteStatus::default()
        }),
        stats,
        ping_sent: None,
        peer,
        dialled,
        phase: if dialled.is_some() {
            Phase::AwaitInfo
        } else {
            Phase::AwaitConnect
        },
        limits: Limits {
            max_control_line: MAX_CONTROL_LINE,
            max_payload: 0,
        },
        peer_id: None,
        peer_name: String::new(),
        peer_leaf_url: None,
        peer_client_urls: Vec::new(),
        peer_js: (false, None),
        subs: HashMap::new(),
        accounts: HashMap::new(),
        fanout: Fanout::new(Publisher::Link(handle.clone())),
        pings_out: 0,
        registered: false,
    };
    let reason = match stream {
        RouteStream::Plain(tcp) => {
            let _ = tcp.set_nodelay(true);
            let (reader, writer) = tcp.into_split();
            route.run(reader, writer, &mut stop).await
        }
        RouteStream::Tls(tls) => {
            let _ = tls.get_ref().0.set_nodelay(true);
            let (reader, writer) = tokio::io::split(*tls);
            route
                .run(reader, FlushingWriter::new(writer), &mut stop)
                .await
        }
    };
    Closed {
        reason,
        peer_id: route.peer_id.clone(),
    }
}

impl Route<'_> {
    async fn run<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let writer_handle = self.handle.clone();
        let write_deadline = self.shared.opts.write_deadline;
        let writer_task = tokio::spawn(async move {
            writer_handle
                .out
                .run_writer(&mut writer, write_deadline)
                .await
        });
        if self.dialled.is_none() {
            self.send_info();
        }
        let ended = self.read_loop(&mut reader, stop).await;
        self.teardown();
        self.handle.out.close();
        match writer_task.await {
            Ok(Err(e)) => debug!(rid = self.handle.id, error = %e, "route write side closed"),
            Err(e) => warn!(rid = self.handle.id, error = %e, "route writer task failed"),
            Ok(Ok(())) => {}
        }
        ended
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let ping_interval = self.shared.opts.ping_interval;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let handshake = tokio::time::sleep(HANDSHAKE_LIMIT);
        tokio::pin!(handshake);
        let handle = self.handle.clone();
        let mut rb = ReadBuffer::default();
        loop {
            if *stop.borrow() {
                return Ended::Shutdown;
            }
            if self.handle.out.is_closed() {
                return Ended::WriterClosed;
            }
            let phase = self.phase;
            tokio::select! {
                read = rb.read_from(reader) => match read {
                    Ok(0) if phase == Phase::AwaitInfo && rb.buf.is_empty() => {
                        return Ended::Refused(
                            "closed by the peer before its INFO (if it has cluster.tls, every \
                             member needs the same)"
                                .into(),
                        );
                    }
                    Ok(0) => return Ended::Eof,
                    Ok(_) => {}
                    Err(e) => return Ended::Read(e),
                },
                _ = ping.tick(), if phase == Phase::Established => {
                    if self.pings_out >= self.shared.opts.ping_max {
                        self.send_err("'Stale Connection'");
                        self.fanout.flush();
                        return Ended::Stale;
                    }
                    self.pings_out += 1;
                    self.ping();
                    continue;
                }
                _ = &mut handshake, if phase != Phase::Established => {
                    return Ended::HandshakeTimeout;
                }
                _ = stop.changed() => return Ended::Shutdown,
                _ = handle.out.closed() => continue,
            }
            self.status.last_activity_ns.store(
                u64::try_from(leaf_proto::time::now_ns()).unwrap_or(0),
                Ordering::Relaxed,
            );
            if phase != Phase::Established && rb.buf.first() == Some(&TLS_HANDSHAKE_RECORD) {
                return Ended::Protocol(
                    "the peer started TLS: its cluster block has tls and this one has none \
                     (every member needs the same)"
                        .into(),
                );
            }
            let (consumed, ended) = self.process(&rb.buf);
            rb.buf.advance(consumed);
            self.fanout.flush();
            if let Some(ended) = ended {
                return ended;
            }
            self.fanout.wait_for_stalled(Some(self.handle.id)).await;
        }
    }

    /// Handles every complete op in `buf`; returns the bytes consumed and, if the route must
    /// close, why.
    fn process(&mut self, buf: &[u8]) -> (usize, Option<Ended>) {
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            match proto::parse_route_op(rest, &self.limits) {
                Ok(Some((op, used))) => {
                    pos += used;
                    if let Err(ended) = self.handle_op(op) {
                        return (pos, Some(ended));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.send_err(e.err_text());
                    return (pos, Some(Ended::Protocol(e.to_string())));
                }
            }
        }
        (pos, None)
    }

    fn handle_op(&mut self, op: RouteOp<'_>) -> Result<(), Ended> {
        match op {
            RouteOp::Ping => {
                self.fanout.send(&self.handle, proto::PONG);
                Ok(())
            }
            RouteOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.ping_sent.take() {
                    let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let first = self.status.rtt_ns.swap(rtt.max(1), Ordering::Relaxed) == 0;
                    if first {
                        info!(
                            rid = self.handle.id,
                            peer = %self.peer_name,
                            rtt_us = rtt / 1_000,
                            routes = self.routes.established().len(),
                            "route round trip measured"
                        );
                    }
                }
                Ok(())
            }
            RouteOp::Ok => Ok(()),
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(text).into_owned();
                warn!(rid = self.handle.id, peer = %self.peer, error = %text, "route peer sent an error");
                Err(Ended::PeerError(text))
            }
            RouteOp::Info(json) => self.on_info(json),
            RouteOp::Connect(json) => self.on_connect(json),
            _ if self.phase != Phase::Established => {
                let why = format!("{} before the handshake was complete", op.name());
                self.send_err(&format!("'Invalid Route Protocol: {why}'"));
                Err(Ended::Protocol(why))
            }
            RouteOp::Sub {
                account,
                subject,
                queue,
                weight,
            } => {
                self.on_sub(account, subject, queue, weight.unwrap_or(1));
                Ok(())
            }
            RouteOp::Unsub {
                account,
                subject,
                queue,
            } => {
                self.on_unsub(account, subject, queue);
                Ok(())
            }
            RouteOp::Msg {
                account,
                subject,
                reply,
                queues,
                headers,
                payload,
            } => {
                self.on_msg(
                    account,
                    Msg {
                        subject,
                        reply,
                        headers,
                        payload,
                    },
                    queues,
                );
                Ok(())
            }
        }
    }

    /// The peer's CONNECT (accepted side).
    fn on_connect(&mut self, json: &[u8]) -> Result<(), Ended> {
        if self.phase != Phase::AwaitConnect {
            return Err(Ended::Protocol("unexpected CONNECT".into()));
        }
        let connect: PeerConnect = serde_json::from_slice(json)
            .map_err(|e| Ended::Protocol(format!("bad CONNECT: {e}")))?;
        if connect.lang.is_some() {
            self.send_err("'Client connected to route port'");
            return Err(Ended::Refused("a client on the route port".into()));
        }
        if let Some(gateway) = &connect.gateway {
            let text = format!("Rejecting connection from gateway \"{gateway}\" on the Route port");
            self.send_err(&format!("'{text}'"));
            return Err(Ended::Refused(text));
        }
        if let Some(auth) = &self.routes.settings.authorization {
            let user_ok = connect.user.as_deref() == Some(auth.user.as_str());
            let pass_ok = connect.pass.as_deref() == Some(auth.password.as_str());
            if !(user_ok && pass_ok) {
                self.send_err("'Authorization Violation'");
                return Err(Ended::Refused("route authentication failed".into()));
            }
        }
        self.check_cluster(&connect.cluster)?;
        self.phase = Phase::AwaitPeerInfo;
        Ok(())
    }

    /// Refuses a peer of another cluster.
    fn check_cluster(&mut self, theirs: &str) -> Result<(), Ended> {
        let ours = &self.routes.cluster_name;
        if theirs.is_empty() || theirs == ours {
            return Ok(());
        }
        let text =
            format!("Rejecting connection, cluster name \"{theirs}\" does not match \"{ours}\"");
        warn!(peer = %self.peer, "{text}");
        self.send_err(&format!("'{text}'"));
        Err(Ended::Refused(text))
    }

    /// The peer's INFO: the handshake's (dialled side: then CONNECT and our INFO go out;
    /// accepted side: after the CONNECT), or a later one (ignored for now: gossip).
    fn on_info(&mut self, json: &[u8]) -> Result<(), Ended> {
        let info: PeerInfo =
            serde_json::from_slice(json).map_err(|e| Ended::Protocol(format!("bad INFO: {e}")))?;
        match self.phase {
            Phase::Established => {
                if info.ldm && Some(&info.server_id) == self.peer_id.as_ref() {
                    info!(
                        rid = self.handle.id,
                        peer = %self.peer_name,
                        "route peer entered lame duck mode: its URLs are no longer announced"
                    );
                    self.routes.peer_in_lame_duck(&info.server_id);
                } else if Some(&info.server_id) != self.peer_id.as_ref()
                    && !info.server_id.is_empty()
                {
                    // Gossip: another member of the cluster.
                    match RouteUrl::parse(&info.ip) {
                        Ok(url) => self.routes.implicit(&info.server_id, url),
                        Err(e) => {
                            debug!(rid = self.handle.id, error = %e, "gossiped INFO without a usable ip")
                        }
                    }
                } else {
                    debug!(rid = self.handle.id, "route INFO update ignored");
                }
                return Ok(());
            }
            Phase::AwaitConnect => return Err(Ended::Protocol("INFO before CONNECT".into())),
            Phase::AwaitInfo | Phase::AwaitPeerInfo => {}
        }
        if info.server_id.is_empty() {
            return Err(Ended::Protocol("INFO without server_id".into()));
        }
        self.peer_id = Some(info.server_id.clone());
        if info.server_id == self.shared.server_id {
            if let Some(url) = self.dialled {
                self.routes.note_own_url(url);
            }
            return Err(Ended::ToSelf);
        }
        self.check_cluster(&info.cluster)?;
        self.handle.set_headers(info.headers);
        if let Some(peer) = self.handle.route() {
            let _ = peer.server_id.set(info.server_id.clone());
        }
        self.peer_name = info.server_name.clone();
        if self.phase == Phase::AwaitInfo {
            self.send_connect();
            self.send_info();
        }
        // The peer's INFO as it will be gossiped: with its route URL.
        let mut gossip: serde_json::Value =
            serde_json::from_slice(json).unwrap_or(serde_json::Value::Null);
        if info.ip.is_empty() {
            let url = match self.dialled {
                Some(url) => format!("nats-route://{}/", url.addr()),
                None => format!(
                    "nats-route://{}/",
                    SocketAddr::new(self.peer.ip(), info.port)
                ),
            };
            if let Some(map) = gossip.as_object_mut() {
                map.insert("ip".into(), url.into());
            }
        }
        if let Some(map) = gossip.as_object_mut() {
            map.remove("nonce");
        }
        self.peer_leaf_url = info.leafnode_urls.first().cloned();
        self.peer_client_urls = info.connect_urls.clone();
        let jsc = info.leaf_jsc.and_then(|v| {
            serde_json::from_value::<super::JscInfo>(v)
                .map_err(|e| {
                    warn!(rid = self.handle.id, peer = %info.server_name, error = %e,
                        "malformed leaf_jsc in the route INFO: the peer is left out of the JetStream cluster");
                })
                .ok()
        });
        self.peer_js = (info.jetstream, jsc);
        self.establish(&info.server_id, gossip)?;
        self.routes.gossip_new(&info.server_id);
        Ok(())
    }

    fn establish(&mut self, peer_id: &str, info: serde_json::Value) -> Result<(), Ended> {
        let remote = match self.dialled {
            Some(url) => url.to_string(),
            None => self.peer.to_string(),
        };
        let entry = Established {
            handle: self.handle.clone(),
            solicited: self.dialled.is_some(),
            name: self.peer_name.clone(),
            since: SystemTime::now(),
            info,
            addr: self.peer,
            configured: self.dialled.is_some_and(|u| {
                self.routes
                    .settings
                    .routes
                    .iter()
                    .any(|r| r.addr() == u.addr())
            }),
            status: self.status.clone(),
            leaf_url: self.peer_leaf_url.clone(),
            client_urls: self.peer_client_urls.clone(),
            jetstream: self.peer_js.0,
            jsc: self.peer_js.1.clone(),
        };
        // Flush what the handshake wrote before the interest table goes out.
        self.fanout.flush();
        match self.routes.register(&self.shared.server_id, peer_id, entry) {
            Ok(()) => {}
            Err(RegisterError::ToSelf) => return Err(Ended::ToSelf),
            Err(RegisterError::Duplicate(_)) => return Err(Ended::Duplicate),
        }
        self.registered = true;
        self.phase = Phase::Established;
        // A first PING at once: the RTT is known from the start.
        self.ping();
        self.limits.max_payload = MAX_PAYLOAD.max(self.shared.opts.max_payload);
        info!(
            rid = self.handle.id,
            peer_id,
            peer = %self.peer_name,
            %remote,
            side = if self.dialled.is_some() { "dialled" } else { "accepted" },
            "route established"
        );
        Ok(())
    }

    fn send_info(&mut self) {
        let json = info_json(self.routes, self.shared, false);
        self.fanout.send_with(&self.handle, |b| {
            proto::write_route_op(b, &RouteOp::Info(&json))
        });
    }

    fn send_connect(&mut self) {
        let auth = self.dialled.and_then(|u| u.auth.as_ref());
        let connect = OurConnect {
            echo: true,
            verbose: false,
            pedantic: false,
            user: auth.map(|(u, _)| u.as_str()),
            pass: auth.map(|(_, p)| p.as_str()),
            tls_required: self.routes.tls_required(),
            headers: true,
            name: &self.shared.server_id,
            cluster: &self.routes.cluster_name,
        };
        let json = serde_json::to_vec(&connect).unwrap_or_default();
        self.fanout.send_with(&self.handle, |b| {
            proto::write_route_op(b, &RouteOp::Connect(&json));
        });
    }

    /// The account named `name` on this server (`$G`: the global one), with its match cache.
    fn account(&mut self, name: &[u8]) -> Option<&mut (Arc<Account>, MatchCache)> {
        if !self.accounts.contains_key(name) {
            let text = std::str::from_utf8(name).ok()?;
            let account = if text == "$G" {
                self.shared.global().clone()
            } else {
                self.shared.accounts.get(text)?
            };
            self.accounts
                .insert(name.into(), (account, MatchCache::default()));
        }
        self.accounts.get_mut(name)
    }

    /// `RS+ account subject [queue weight]`.
    fn on_sub(&mut self, account: &[u8], subject: &[u8], queue: Option<&[u8]>, weight: u32) {
        if !is_valid_subject(subject) || queue.is_some_and(|q| !is_valid_queue_name(q)) {
            debug!(rid = self.handle.id, "invalid RS+ ignored");
            return;
        }
        if leaf_core::leafnode::route_denied(subject) {
            return;
        }
        let Some(name) = std::str::from_utf8(account).ok().map(str::to_owned) else {
            return;
        };
        let Some((acc, _)) = self.account(account).map(|(a, _)| (a.clone(), ())) else {
            debug!(rid = self.handle.id, account = %name, "RS+ for an account this server does not have ignored");
            return;
        };
        let key = (name, key_of(subject, queue));
        if let Some(existing) = self.subs.get(&key) {
            if queue.is_some() {
                acc.reweigh_subscription(existing, weight.max(1));
            }
            return;
        }
        let sub = Subscription::new(
            SubTarget::Leaf(self.handle.clone()),
            subject,
            queue,
            &key.1,
            None,
        )
        .with_weight(weight);
        let sub = SubRef(Arc::new(sub));
        if acc.add_subscription(&sub).is_ok() {
            self.subs.insert(key, sub);
            self.status.subs.store(self.subs.len(), Ordering::Relaxed);
        }
    }

    /// `RS- account subject [queue]`.
    fn on_unsub(&mut self, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
        let Some(name) = std::str::from_utf8(account).ok().map(str::to_owned) else {
            return;
        };
        let key = (name, key_of(subject, queue));
        if let Some(sub) = self.subs.remove(&key) {
            self.status.subs.store(self.subs.len(), Ordering::Relaxed);
            if let Some((acc, _)) = self.account(account) {
                if sub.0.finish() {
                    acc.remove_subscription(&sub);
                }
            }
        }
    }

    /// `RMSG`/`HMSG`: to the account's local subscriptions and leaves, never to a route.
    fn on_msg(&mut self, account: &[u8], msg: Msg<'_>, queues: QueueNames<'_>) {
        let size = msg.headers.map_or(0, <[u8]>::len) + msg.payload.len();
        self.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(size as u64, Ordering::Relaxed);
        let id = self.handle.id;
        let Some((acc, cache)) = self.account(account) else {
            return;
        };
        let acc = acc.clone();
        let Some(result) = cache.lookup(&acc.sublist, msg.subject) else {
            return;
        };
        if result.is_empty() {
            return;
        }
        // A JetStream delivery from a consumer on the peer, in the linked form (sent on the
        // deliver subject, the stored subject after the ack reply's `@`): this server's
        // subscribers get the stored subject and the ack reply, as from a consumer here;
        // leafnode links keep the linked form.
        if let Some((ack, subject)) = msg.reply.and_then(js_linked_delivery) {
            let local = Msg {
                subject,
                reply: Some(ack),
                ..msg
            };
            match split_near_far(&result) {
                None => {
                    self.fanout
                        .fan_out_from_link(&acc, &result, &local, id, queues);
                }
                Some((near, far)) => {
                    self.fanout
                        .fan_out_from_link(&acc, &near, &local, id, queues);
                    self.fanout.fan_out_from_link(&acc, &far, &msg, id, queues);
                }
            }
            return;
        }
        self.fanout
            .fan_out_from_link(&acc, &result, &msg, id, queues);
    }

    /// Forgets the route and removes every subscription the peer announced.
    fn teardown(&mut self) {
        if self.registered {
            if let Some(id) = &self.peer_id {
                self.routes.unregister(id, &self.handle);
            }
        }
        let subs: Vec<_> = self.subs.drain().collect();
        for ((account, _), sub) in subs {
            if let Some((acc, _)) = self.account(account.as_bytes()) {
                if sub.0.finish() {
                    acc.remove_subscription(&sub);
                }
            }
        }
        self.fanout.flush();
    }

    /// Sends a PING, noting when (for the RTT).
    fn ping(&mut self) {
        if self.ping_sent.is_none() {
            self.ping_sent = Some(std::time::Instant::now());
        }
        self.fanout.send(&self.handle, proto::PING);
        self.fanout.flush();
    }

    fn send_err(&mut self, text: &str) {
        self.fanout
            .send_with(&self.handle, |b| proto::write_err(b, text));
    }
}

/// `subject` or `subject queue`.
fn key_of(subject: &[u8], queue: Option<&[u8]>) -> Box<[u8]> {
    let mut key = subject.to_vec();
    if let Some(q) = queue {
        key.push(b' ');
        key.extend_from_slice(q);
    }
    key.into_boxed_slice()
}

/// This server's route INFO (`ldm`: the one that announces lame duck mode).
pub(crate) fn info_json(routes: &Routes, shared: &Shared, ldm: bool) -> Vec<u8> {
    // `cluster.advertise` (host:port): where the other members reach this one (behind
    // NAT, a proxy or a container network), sent as `ip` as nats-server does.
    let advertised = routes.settings.advertise.as_deref().and_then(|a| {
        let (host, port) = a.rsplit_once(':')?;
        Some((host.to_owned(), port.parse::<u16>().ok()?))
    });
    let (host, port) = advertised.clone().unwrap_or_else(|| {
        (
            routes.listen_addr.ip().to_string(),
            routes.listen_addr.port(),
        )
    });
    let ip = advertised.map(|(h, p)| format!("nats-route://{h}:{p}/"));
    let info = OurInfo {
        server_id: &shared.server_id,
        server_name: shared.server_name(),
        version: leaf_core::server::info::NATS_FEATURE_LEVEL,
        go: "rust",
        host,
        port,
        ip,
        headers: true,
        auth_required: routes.settings.authorization.is_some(),
        tls_required: routes.tls_required(),
        tls_verify: routes.tls_required(),
        max_payload: shared.opts.max_payload,
        proto: 1,
        cluster: &routes.cluster_name,
        jetstream: false,
        leafnode_urls: routes.leaf_url().into_iter().collect(),
        connect_urls: if routes.settings.no_advertise {
            Vec::new()
        } else {
            Some(shared.local_addr)
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| a.to_string())
                .into_iter()
                .collect()
        },
        ldm,
        leaf_jsc: routes.jsc(),
    };
    serde_json::to_vec(&info).unwrap_or_default()
}
