//! One client connection: reading and parsing its protocol, routing what it publishes, keeping
//! its subscriptions, and pinging it.
//!
//! The read loop processes everything buffered by one `read` before it wakes the writers of the
//! connections it delivered to (see [`Fanout`]), so a burst of N messages to one subscriber wakes
//! that subscriber's writer once. When a subscriber's queue is above its stall mark, the
//! publisher waits for it (bounded) before reading more: the publisher is throttled through TCP
//! instead of the subscriber being dropped, as nats-server does.
//!
//! Until its `CONNECT`, a connection may publish payloads of at most
//! [`PRE_CONNECT_MAX_PAYLOAD`] bytes (so a socket that never introduces itself cannot make the
//! server buffer `max_payload` for it), and when authentication is required anything but
//! `CONNECT` is refused with `-ERR 'Authorization Violation'`, as nats-server does, without
//! waiting for a payload. A connection holds at most `max_subscriptions` subscriptions; past
//! it a `SUB` gets nats-server's `-ERR 'maximum subscriptions exceeded'` and the connection
//! stays. A connection of an account with limits of its own (an account JWT's `conn`,
//! `subs`, `payload`: see [`super::account::limits`]) is refused at its CONNECT past the
//! account's `conn` with `-ERR 'maximum account active connections exceeded'`, and takes the
//! account's `subs` and `payload` where they are smaller than the server's (a smaller
//! `payload` is announced in an INFO right after the CONNECT, as nats-server does).
//!
//! A login and the end of a logged-in connection are told to the system account's services
//! ([`crate::system`]), which publish nats-server's connect / disconnect advisories when
//! someone listens; its subscriptions are also recorded in its monitoring entry
//! (`/connz?subs=1`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::account::limits::{ConnKind, MAX_ACCOUNT_CONNECTIONS_ERR};
use super::fanout::{ClientHandle, Fanout, MatchCache, Msg, SubRef, SubTarget, Subscription};
use super::info::{ConnectInfo, ServerInfo, NATS_FEATURE_LEVEL};
use super::readbuf::ReadBuffer;
use super::reply::Publisher;
use super::stats::{ConnEntry, ConnMeta};
use super::{Account, Shared};
use crate::auth::{Authenticator, Credentials, Login, Permissions};
use crate::tls::names::CertNames;
use leaf_proto::printable::printable;
use leaf_proto::subject::{is_valid_queue_name, is_valid_subject};
use leaf_proto::{self as proto, ClientOp, Limits};

/// How many subjects a connection caches publish permission results for.
const LOCAL_CACHE_SIZE: usize = 512;
/// The largest payload a connection may publish before its `CONNECT` (nats-server allows
/// `max_payload`; clients always send `CONNECT` first, a telnet session's messages are short).
pub const PRE_CONNECT_MAX_PAYLOAD: usize = 4096;
/// nats-server's error for a `SUB` past `max_subscriptions`.
const MAX_SUBS_ERR: &str = "'maximum subscriptions exceeded'";
/// The status message sent to a requester when nobody is subscribed to the request subject.
const NO_RESPONDERS_HDR: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client closed its side.
    Eof,
    /// Reading failed.
    Read(std::io::Error),
    /// A protocol error was reported with -ERR.
    Protocol(&'static str),
    /// Authentication failed.
    Auth,
    /// No PONG came back.
    Stale,
    /// The outbound queue overflowed or a write stalled.
    SlowConsumer,
    /// The outbound side closed (write error).
    WriterClosed,
    /// The server is shutting down.
    Shutdown,
}

impl Close {
    /// nats-server's words for the reason (its `ClosedState`), as advisories give it.
    fn nats_reason(&self) -> &'static str {
        match self {
            Close::Eof => "Client Closed",
            Close::Read(_) => "Read Error",
            Close::Protocol(_) => "Protocol Violation",
            Close::Auth => "Authentication Failure",
            Close::Stale => "Stale Connection",
            Close::SlowConsumer => "Slow Consumer (Pending Bytes)",
            Close::WriterClosed => "Write Error",
            Close::Shutdown => "Server Shutdown",
        }
    }
}

/// How a client reached the server, when not through the client port: the websocket
/// listener (see [`crate::websocket`]), with the credentials of its `authorization` block.
#[derive(Debug, Clone, Default)]
pub(crate) struct Via {
    /// The client came through the websocket listener: its INFO says nothing of TLS (that
    /// is the WebSocket's, `wss://`), and monitoring marks it `websocket`.
    pub websocket: bool,
    /// The websocket block's own user or token, replacing the server's `authorization` for
    /// this client (a reload does not touch such a connection).
    pub auth: Option<Arc<Authenticator>>,
    /// The websocket block's `authorization.timeout`, replacing the server's.
    pub auth_timeout: Option<Duration>,
}

/// The read side of one connection.
struct Connection {
    shared: Arc<Shared>,
    /// The account the connection belongs to (the global one until CONNECT says otherwise).
    account: Arc<Account>,
    handle: Arc<ClientHandle>,
    peer: SocketAddr,
    limits: Limits,
    connected: bool,
    connect: ConnectInfo,
    permissions: Option<Arc<Permissions>>,
    subs: HashMap<Box<[u8]>, Arc<Subscription>>,
    /// `subs.len()` at which ended subscriptions are next swept out of `subs`.
    sweep_at: usize,
    /// Match results by subject.
    cache: MatchCache,
    /// Publish permission results by subject.
    publish_allowed: HashMap<Box<[u8]>, bool>,
    fanout: Fanout,
    pings_out: u32,
    /// This connection in the server's monitoring registry.
    entry: Arc<ConnEntry>,
    /// The nonce of the INFO sent (empty without one).
    nonce: String,
    /// Closes the connection when its login expires (a user JWT's `exp`).
    expiry: Option<AbortOnDrop>,
    /// The names of the client's certificate, in the order they are tried as user names
    /// (`verify_and_map`; empty otherwise).
    identities: CertNames,
    /// This connection's place in its account's `conn` count (from its first CONNECT).
    slot: Option<super::account::limits::Slot>,
    /// The most subscriptions this connection may hold: the server's `max_subscriptions`,
    /// or its account's `subs` if smaller (0: unlimited).
    max_subs: usize,
    /// How the client came (the websocket listener, with its own credentials).
    via: Via,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Closes `handle`'s connection with `-ERR 'User Authentication Expired'` at `expires`, as
/// nats-server does when a user JWT expires.
fn expire_at(handle: &Arc<ClientHandle>, expires: std::time::SystemTime) -> AbortOnDrop {
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let handle = handle.clone();
    AbortOnDrop(tokio::spawn(async move {
        tokio::time::sleep(left).await;
        debug!(cid = handle.id, "user authentication expired");
        close_with_error(&handle, "'User Authentication Expired'");
    }))
}

/// Whether `reply` is reserved for the servers' own replies (service imports `_R_.`,
/// JetStream acks `$JS.ACK.`, gateway replies `_GR_.`): nats-server refuses a client's
/// publish with such a reply, so no responder can be made to acknowledge or answer on a
/// subject of that kind on a client's behalf.
fn is_reserved_reply(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'_') => {
            reply.starts_with(b"_R_.") || (reply.len() > 5 && reply.starts_with(b"_GR_."))
        }
        Some(b'$') => reply.len() > 8 && reply.starts_with(b"$JS.ACK."),
        _ => false,
    }
}

/// Closes a running connection from outside its task (a reload took its rights): `-ERR text`
/// is queued, then the outbound queue is closed, so the writer sends what is queued and the
/// connection ends.
pub(crate) fn close_with_error(handle: &ClientHandle, text: &str) {
    let mut line = BytesMut::new();
    proto::encode::write_err(&mut line, text);
    handle.out.append_bytes(&line);
    handle.out.close();
}

/// Sends `-ERR text` to a client that cannot be served and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, text: &'static str) {
    let mut line = BytesMut::new();
    proto::encode::write_err(&mut line, text);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
}

/// Serves one client connection until it closes or the server stops.
///
/// With TLS on the client port, INFO goes out in plain text first (nats-server 2.9's order),
/// then the TLS handshake runs within its time limit; a failed handshake is logged and the
/// connection closed. The connection then runs on the TLS stream's halves; without TLS it
/// runs on the TCP stream's owned halves as before (the connection is generic over its
/// halves: no dynamic dispatch, no extra copy on the plain path).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = shared.opts.tls.clone() else {
        let (reader, writer) = stream.into_split();
        return serve_via(shared, reader, writer, peer, Via::default(), stop).await;
    };
    let id = shared.next_connection_id();
    let (nonce, line) = first_info(&shared, id, peer, &Via::default());
    match tokio::time::timeout(tls.timeout, stream.write_all(&line)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return debug!(cid = id, %peer, error = %e, "writing INFO failed"),
        Err(_) => return debug!(cid = id, %peer, "writing INFO timed out"),
    }
    let stream = match tls.accept(stream).await {
        Ok(stream) => stream,
        Err(e) => return warn!(cid = id, %peer, error = %e, "client refused"),
    };
    let identities = if tls.map {
        super::tls::peer_identities(&stream)
    } else {
        CertNames::default()
    };
    let stream: crate::tls::BoxedIo = Box::new(stream);
    let (reader, writer) = tokio::io::split(stream);
    let writer = crate::tls::FlushingWriter::new(writer);
    run(
        shared,
        id,
        peer,
        BytesMut::new(),
        reader,
        writer,
        (nonce, identities, Via::default()),
        stop,
    )
    .await;
}

/// Serves one client on its read and write halves, INFO first: a plain TCP client
/// (`Via::default()`), or one that came through the websocket listener on the halves of its
/// WebSocket stream (see [`crate::websocket`]), whose INFO goes out inside the WebSocket
/// without `tls_required`.
pub(crate) async fn serve_via<R, W>(
    shared: Arc<Shared>,
    reader: R,
    writer: W,
    peer: SocketAddr,
    via: Via,
    stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_connection_id();
    let (nonce, line) = first_info(&shared, id, peer, &via);
    run(
        shared,
        id,
        peer,
        line,
        reader,
        writer,
        (nonce, CertNames::default(), via),
        stop,
    )
    .await;
}

/// The first INFO of client `id` (encoded), and its nonce when some user of the
/// authenticator it logs in with (the server's, or the websocket block's) signs one.
fn first_info(shared: &Shared, id: u64, peer: SocketAddr, via: &Via) -> (Option<String>, BytesMut) {
    let needs_nonce = match via.auth.as_deref() {
        Some(auth) => auth.needs_nonce(),
        None => shared
            .auth
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .needs_nonce(),
    };
    // A nonce for nkey users to sign, when some user logs in with one.
    let nonce = needs_nonce.then(crate::auth::nkey::new_nonce).flatten();
    let info = server_info(
        shared,
        id,
        peer,
        nonce.clone(),
        (shared.opts.max_payload, false),
        via,
    );
    let mut line = BytesMut::with_capacity(info.len() + 8);
    proto::encode::write_info(&mut line, &info);
    (nonce, line)
}

/// Runs connection `id` on its read and write halves until it closes: `first` is queued
/// before anything else (the INFO, unless it went out before TLS); `login` is what the client
/// logs in with besides its CONNECT: the INFO's nonce (for nkey users), and the names of its
/// certificate when it maps to a user (`verify_and_map`).
#[allow(clippy::too_many_arguments)]
async fn run<R, W>(
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    first: BytesMut,
    mut reader: R,
    mut writer: W,
    (nonce, identities, via): (Option<String>, CertNames, Via),
    mut stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let handle = Arc::new(ClientHandle::new(id, shared.opts.max_pending));
    if !first.is_empty() {
        handle.out.append_bytes(&first);
    }
    let writer_handle = handle.clone();
    let write_deadline = shared.opts.write_deadline;
    let writer_task = tokio::spawn(async move {
        writer_handle
            .out
            .run_writer(&mut writer, write_deadline)
            .await
    });
    debug!(cid = id, %peer, "client connected");

    let entry = shared.stats.register(handle.clone(), peer);
    entry.websocket.store(via.websocket, Ordering::Relaxed);
    entry.own_auth.store(via.auth.is_some(), Ordering::Relaxed);
    let mut conn = Connection::new(shared.clone(), handle.clone(), peer, entry);
    conn.nonce = nonce.unwrap_or_default();
    conn.identities = identities;
    conn.via = via;
    let reason = conn.read_loop(&mut reader, &mut stop).await;
    conn.remove_all_subscriptions();
    shared.stats.unregister(id);
    if conn.connected {
        conn.advise_disconnect(&reason);
    }
    if matches!(reason, Close::SlowConsumer) {
        shared
            .stats
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The client does not read: what is queued for it is dropped, not flushed (which
        // would hold it until the write deadline).
        writer_task.abort();
    }
    handle.out.close();
    match writer_task.await {
        Err(e) if e.is_cancelled() => {}
        Ok(Err(e)) => debug!(cid = id, error = %e, "write side closed"),
        Err(e) => warn!(cid = id, error = %e, "writer task failed"),
        Ok(Ok(())) => {}
    }
    match reason {
        Close::SlowConsumer => warn!(cid = id, %peer, "slow consumer detected, connection closed"),
        Close::Stale => debug!(cid = id, %peer, "stale connection closed"),
        Close::Auth => debug!(cid = id, %peer, "authorization violation"),
        Close::Read(e) => debug!(cid = id, %peer, error = %e, "read failed"),
        Close::Protocol(text) => debug!(cid = id, %peer, error = text, "protocol error"),
        ref other => debug!(cid = id, %peer, reason = ?other, "client closed"),
    }
}

/// The INFO JSON for connection `client_id`: `max_payload` as it applies to the connection
/// now, `ldm` set on the one INFO that announces lame duck mode.
fn server_info(
    shared: &Shared,
    client_id: u64,
    peer: SocketAddr,
    nonce: Option<String>,
    (max_payload, ldm): (usize, bool),
    via: &Via,
) -> Vec<u8> {
    let opts = &shared.opts;
    // TLS of a websocket client is the WebSocket's (`wss://`), never inside it.
    let tls = opts.tls.as_ref().filter(|_| !via.websocket);
    let info = ServerInfo {
        server_id: shared.server_id.clone(),
        server_name: opts
            .server_name
            .clone()
            .unwrap_or_else(|| shared.server_id.clone()),
        version: NATS_FEATURE_LEVEL,
        leaf_version: opts.implementation_version,
        implementation: opts.implementation,
        go: "none",
        host: shared.local_addr.ip().to_string(),
        port: shared.local_addr.port(),
        headers: true,
        max_payload,
        proto: 1,
        client_id,
        client_ip: peer.ip().to_string(),
        auth_required: via
            .auth
            .as_ref()
            .map_or_else(|| shared.auth_required(), |a| a.required()),
        tls_required: tls.is_some(),
        tls_verify: tls.is_some_and(|t| t.verify),
        jetstream: shared.jetstream.load(std::sync::atomic::Ordering::Relaxed),
        nonce,
        connect_urls: shared.connect_urls(),
        ldm,
    };
    serde_json::to_vec(&info).unwrap_or_default()
}

impl Connection {
    fn new(
        shared: Arc<Shared>,
        handle: Arc<ClientHandle>,
        peer: SocketAddr,
        entry: Arc<ConnEntry>,
    ) -> Self {
        let limits = Limits {
            max_control_line: shared.opts.max_control_line,
            max_payload: shared.opts.max_payload.min(PRE_CONNECT_MAX_PAYLOAD),
        };
        let fanout = Fanout::new(Publisher::Client {
            id: handle.id,
            permissions: None,
        });
        let max_subs = shared.opts.max_subscriptions;
        Connection {
            account: shared.global().clone(),
            shared,
            handle,
            peer,
            limits,
            connected: false,
            connect: ConnectInfo::default(),
            permissions: None,
            subs: HashMap::new(),
            sweep_at: 64,
            cache: MatchCache::default(),
            publish_allowed: HashMap::new(),
            fanout,
            pings_out: 0,
            entry,
            nonce: String::new(),
            expiry: None,
            identities: CertNames::default(),
            slot: None,
            max_subs,
            via: Via::default(),
        }
    }

    /// Whether this client must authenticate: the websocket block's credentials when it
    /// came that way with some, the server's otherwise.
    fn auth_required(&self) -> bool {
        match &self.via.auth {
            Some(auth) => auth.required(),
            None => self.shared.auth_required(),
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        stop: &mut watch::Receiver<bool>,
    ) -> Close {
        let opts = &self.shared.opts;
        let ping_interval = opts.ping_interval;
        let auth_required = self.auth_required();
        let auth_deadline = tokio::time::sleep(self.via.auth_timeout.unwrap_or(opts.auth_timeout));
        tokio::pin!(auth_deadline);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rb = ReadBuffer::default();
        self.handle.out.flush();
        // A subscriber cut off by a publisher (past max_pending) is torn down at once, even
        // while it sends nothing: its subscriptions and queued bytes go with it.
        let handle = self.handle.clone();
        let closed = handle.out.closed();
        tokio::pin!(closed);
        // A reload that changes only this user's permissions applies them here, in place.
        let entry = self.entry.clone();
        loop {
            if *stop.borrow() {
                return Close::Shutdown;
            }
            if self.handle.out.is_closed() {
                return self.outbound_closed();
            }
            tokio::select! {
                read = rb.read_from(reader) => match read {
                    Ok(0) => return Close::Eof,
                    Ok(_) => {}
                    Err(e) => return Close::Read(e),
                },
                _ = ping.tick() => {
                    if let Some(close) = self.on_ping_timer() {
                        return close;
                    }
                    continue;
                }
                _ = &mut auth_deadline, if auth_required && !self.connected => {
                    self.send_err("'Authentication Timeout'");
                    return Close::Auth;
                }
                _ = stop.changed() => return Close::Shutdown,
                () = &mut closed => continue,
                () = entry.regrant_wake.notified() => {
                    if let Some(permissions) = entry.take_regrant() {
                        if let Some(close) = self.apply_permissions(permissions) {
                            return close;
                        }
                    }
                    if entry.take_info_changed() && self.connected {
                        // The cluster changed, or lame duck mode: a new INFO with its
                        // connect_urls (and `ldm`).
                        let info = server_info(
                            &self.shared,
                            self.handle.id,
                            self.peer,
                            None,
                            (self.limits.max_payload, entry.take_lame_duck()),
                            &self.via,
                        );
                        self.fanout
                            .send_with(&self.handle, |b| proto::write_info(b, &info));
                        self.fanout.flush();
                    }
                    continue;
                }
            }
            let (consumed, close) = self.process(&rb.buf);
            rb.buf.advance(consumed);
            self.fanout.flush();
            if let Some(close) = close {
                return close;
            }
            self.fanout.wait_for_stalled(Some(self.handle.id)).await;
        }
    }

    fn outbound_closed(&self) -> Close {
        if self.handle.out.is_slow_consumer() {
            Close::SlowConsumer
        } else {
            Close::WriterClosed
        }
    }

    /// Handles every complete op in `buf`; returns the bytes consumed and, if the connection
    /// must close, why.
    fn process(&mut self, buf: &[u8]) -> (usize, Option<Close>) {
        let mut pos = 0;
        while pos < buf.len() {
            match proto::parse_client_op(&buf[pos..], &self.limits) {
                Ok(Some((op, used))) => {
                    pos += used;
                    if let Err(close) = self.handle_op(op) {
                        return (pos, Some(close));
                    }
                }
                Ok(None) => break,
                Err(proto::ParseError::MaxPayload) if !self.connected && self.auth_required() => {
                    // nats-server refuses anything but CONNECT at its first byte.
                    self.send_err("'Authorization Violation'");
                    return (pos, Some(Close::Auth));
                }
                Err(e) => {
                    debug!(cid = self.handle.id, error = %e, "protocol error");
                    self.send_err(e.err_text());
                    return (pos, Some(Close::Protocol(e.err_text())));
                }
            }
        }
        (pos, None)
    }

    fn handle_op(&mut self, op: ClientOp<'_>) -> Result<(), Close> {
        if !self.connected && !matches!(op, ClientOp::Connect(_)) && self.auth_required() {
            self.send_err("'Authorization Violation'");
            return Err(Close::Auth);
        }
        match op {
            ClientOp::Connect(json) => self.on_connect(json)?,
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => {
                self.publish(Msg {
                    subject,
                    reply,
                    headers: None,
                    payload,
                });
                self.ok();
            }
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            } => {
                self.publish(Msg {
                    subject,
                    reply,
                    headers: Some(headers),
                    payload,
                });
                self.ok();
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => self.subscribe(subject, queue, sid),
            ClientOp::Unsub { sid, max } => {
                self.unsubscribe(sid, max);
                self.ok();
            }
            ClientOp::Ping => self.send(proto::encode::PONG),
            ClientOp::Pong => self.pings_out = 0,
        }
        Ok(())
    }

    fn on_connect(&mut self, json: &[u8]) -> Result<(), Close> {
        let connect: ConnectInfo = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                debug!(cid = self.handle.id, error = %e, "bad CONNECT");
                self.send_err("'Invalid CONNECT Arguments'");
                return Err(Close::Protocol("invalid CONNECT"));
            }
        };
        let creds = Credentials {
            user: connect.user.as_deref(),
            pass: connect.pass.as_deref(),
            token: connect.auth_token.as_deref(),
            nkey: connect.nkey.as_deref(),
            sig: connect.sig.as_deref(),
            nonce: self.nonce.as_bytes(),
            jwt: connect.jwt.as_deref(),
            leaf: false,
        };
        // The authenticator stays read-locked until the login is recorded: a reload swapping
        // it in between would not see this connection (see `Shared::reload_authorization`).
        let auth = self
            .shared
            .auth
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        // A websocket client with the block's own credentials logs in with those.
        let own = self.via.auth.clone();
        let authn: &Authenticator = own.as_deref().unwrap_or(&auth);
        // With `verify_and_map` the client's certificate says who it is, not its CONNECT.
        let mapped = match self.shared.opts.tls.as_deref() {
            Some(tls) if tls.map && !self.via.websocket => {
                authn.authenticate_mapped(&self.identities)
            }
            _ => None,
        };
        let (result, mut login) = match mapped {
            Some(Ok((grant, login))) => (Ok(grant), login),
            Some(Err(e)) => (Err(e), authn.login_of(creds)),
            None => (authn.authenticate(creds), authn.login_of(creds)),
        };
        let login_at;
        match result {
            Ok(grant) => {
                let account = match &grant.account {
                    None => Some(self.shared.global().clone()),
                    // An authority's accounts come into being with their first user.
                    Some(name) if matches!(authn, Authenticator::Delegated(_)) => {
                        Some(self.shared.accounts.add(name))
                    }
                    // The configuration names only accounts the server has.
                    Some(name) => self.shared.accounts.get(name),
                };
                if let Some(identity) = &grant.identity {
                    login = crate::auth::Login::User(identity.clone());
                }
                if let Some(expires) = grant.expires {
                    self.expiry = Some(expire_at(&self.handle, expires));
                }
                login_at = grant.issued_at.unwrap_or_else(std::time::SystemTime::now);
                // A connection stays in the account of its first CONNECT: its subscriptions
                // live there.
                let Some(account) =
                    account.filter(|a| !self.connected || Arc::ptr_eq(a, &self.account))
                else {
                    drop(auth);
                    warn!(cid = self.handle.id, peer = %self.peer, "CONNECT into another account refused");
                    self.send_err("'Authorization Violation'");
                    return Err(Close::Auth);
                };
                if self.slot.is_none() {
                    match account.limits.admit(ConnKind::Client) {
                        Ok(slot) => self.slot = Some(slot),
                        Err(e) => {
                            drop(auth);
                            warn!(cid = self.handle.id, peer = %self.peer, account = %printable(account.name()), error = %e, "client refused");
                            self.send_err(MAX_ACCOUNT_CONNECTIONS_ERR);
                            return Err(Close::Protocol(
                                "maximum account active connections exceeded",
                            ));
                        }
                    }
                }
                self.account = account;
                let perms = grant.permissions;
                self.fanout.set_publisher(Publisher::Client {
                    id: self.handle.id,
                    permissions: perms.clone(),
                });
                self.permissions = perms;
            }
            Err(e) => {
                drop(auth);
                warn!(cid = self.handle.id, peer = %self.peer, error = %e, "authentication failed");
                self.send_err("'Authorization Violation'");
                return Err(Close::Auth);
            }
        }
        if let Ok(mut meta) = self.entry.meta.lock() {
            *meta = ConnMeta {
                name: connect.name.clone().unwrap_or_default(),
                lang: connect.lang.clone().unwrap_or_default(),
                version: connect.version.clone().unwrap_or_default(),
                user: match &login {
                    Login::User(name) => name.clone(),
                    _ => connect.user.clone().unwrap_or_default(),
                },
                account: self.account.name().to_owned(),
                login: Some(login),
                login_at: Some(login_at),
            };
        }
        drop(auth);
        self.handle
            .headers
            .store(connect.headers, Ordering::Relaxed);
        debug!(
            cid = self.handle.id,
            name = %printable(connect.name.as_deref().unwrap_or("")),
            lang = %printable(connect.lang.as_deref().unwrap_or("")),
            version = %printable(connect.version.as_deref().unwrap_or("")),
            account = %printable(self.account.name()),
            "client CONNECT"
        );
        self.connect = connect;
        self.connected = true;
        // The account's `payload` and `subs` when smaller than the server's (nats-server's
        // `applyAccountLimits`).
        let account_limits = &self.account.limits;
        self.limits.max_payload = account_limits.max_payload(self.shared.opts.max_payload);
        self.max_subs = account_limits.max_subscriptions(self.shared.opts.max_subscriptions);
        if self.limits.max_payload < self.shared.opts.max_payload {
            // The client learns its smaller limit as from nats-server: an INFO with it.
            let info = server_info(
                &self.shared,
                self.handle.id,
                self.peer,
                None,
                (self.limits.max_payload, false),
                &self.via,
            );
            let mut line = BytesMut::with_capacity(info.len() + 8);
            proto::encode::write_info(&mut line, &info);
            self.send(&line);
        }
        self.ok();
        if let Some(events) = self.shared.system.events() {
            events.connected(&self.advisory_info(&self.entry.meta()));
        }
        Ok(())
    }

    /// The connection as the system account's advisories describe it.
    fn advisory_info<'m>(&'m self, meta: &'m ConnMeta) -> crate::system::ClientInfo<'m> {
        crate::system::ClientInfo {
            start: self.entry.start,
            host: self.peer.ip(),
            id: self.handle.id,
            account: self.account.name(),
            user: &meta.user,
            name: &meta.name,
            lang: &meta.lang,
            version: &meta.version,
            kind: crate::system::LinkKind::Client,
        }
    }

    /// Tells the system account that the connection ended (see [`crate::system`]).
    fn advise_disconnect(&self, reason: &Close) {
        let Some(events) = self.shared.system.events() else {
            return;
        };
        let t = &self.handle.traffic;
        let data = |msgs: &std::sync::atomic::AtomicU64, bytes: &std::sync::atomic::AtomicU64| {
            crate::system::events::DataStats {
                msgs: msgs.load(Ordering::Relaxed),
                bytes: bytes.load(Ordering::Relaxed),
            }
        };
        let meta = self.entry.meta();
        events.disconnected(
            &self.advisory_info(&meta),
            data(&t.msgs_in, &t.bytes_in),
            data(&t.msgs_out, &t.bytes_out),
            reason.nats_reason(),
        );
    }

    /// Routes one published message to every interested subscription.
    fn publish(&mut self, msg: Msg<'_>) {
        let traffic = &self.handle.traffic;
        traffic.msgs_in.fetch_add(1, Ordering::Relaxed);
        traffic.bytes_in.fetch_add(
            (msg.headers.map_or(0, <[u8]>::len) + msg.payload.len()) as u64,
            Ordering::Relaxed,
        );
        if self.permissions.is_some() && !self.may_publish(msg.subject) {
            let text = format!(
                "'Permissions Violation for Publish to \"{}\"'",
                String::from_utf8_lossy(&self.denied_subject(msg.subject))
            );
            self.send_err(&text);
            return;
        }
        if let Some(reply) = msg.reply.filter(|r| is_reserved_reply(r)) {
            let text = format!(
                "'Permissions Violation for Publish with Reply of \"{}\"'",
                String::from_utf8_lossy(reply)
            );
            self.send_err(&text);
            return;
        }
        let Some(result) = self.cache.lookup(&self.account.sublist, msg.subject) else {
            self.send_err("'Invalid Publish Subject'");
            return;
        };
        if result.is_empty() {
            if let Some(reply) = msg.reply {
                if self.connect.no_responders && self.connect.headers {
                    self.send_no_responders(reply);
                }
            }
            return;
        }
        let no_echo = (!self.connect.echo).then_some(self.handle.id);
        self.fanout.fan_out(&self.account, &result, &msg, no_echo);
    }

    /// Whether the client may publish on `subject` (cached). A request to this server's
    /// JetStream domain API must be allowed for the `$JS.API.` subject it calls too (see
    /// [`super::jsdomain`]).
    fn may_publish(&mut self, subject: &[u8]) -> bool {
        if let Some(&allowed) = self.publish_allowed.get(subject) {
            return allowed;
        }
        let allowed = self.permissions.as_ref().is_none_or(|p| {
            p.publish.allows_publish(subject)
                && self
                    .shared
                    .js_domain
                    .get()
                    .and_then(|d| d.resolve(subject))
                    .is_none_or(|api| p.publish.allows_publish(&api))
        });
        if self.publish_allowed.len() >= LOCAL_CACHE_SIZE {
            self.publish_allowed.clear();
        }
        self.publish_allowed.insert(subject.into(), allowed);
        allowed
    }

    /// The subject to name in the violation for a denied publish on `subject`: itself, or
    /// the `$JS.API.` subject a domain API request calls when only that one is denied (as
    /// nats-server names it).
    fn denied_subject<'a>(&self, subject: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let api = self.shared.js_domain.get().and_then(|d| d.resolve(subject));
        match (api, &self.permissions) {
            (Some(api), Some(p)) if p.publish.allows_publish(subject) => api.into(),
            _ => subject.into(),
        }
    }

    fn send_no_responders(&mut self, reply: &[u8]) {
        let Some(sid) = self
            .subs
            .values()
            .find(|s| !s.is_done() && leaf_proto::subject::subject_matches(&s.subject, reply))
            .map(|s| s.sid.clone())
        else {
            return;
        };
        let len = NO_RESPONDERS_HDR.len();
        self.fanout.send_with(&self.handle, |b| {
            proto::encode::write_hmsg_head(b, reply, &sid, None, len, len);
            b.extend_from_slice(NO_RESPONDERS_HDR);
            b.extend_from_slice(b"\r\n");
        });
    }

    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        if !is_valid_subject(subject) {
            self.send_err("'Invalid Subject'");
            return;
        }
        if let Some(q) = queue {
            if !is_valid_queue_name(q) {
                self.send_err("'Invalid Queue Name'");
                return;
            }
        }
        let mut deny_check = None;
        if let Some(perms) = &self.permissions {
            if !perms.subscribe.allows_subscribe(subject) {
                let subject = String::from_utf8_lossy(subject);
                let text = match queue {
                    Some(q) => format!(
                        "'Permissions Violation for Subscription to \"{subject}\" using queue \"{}\"'",
                        String::from_utf8_lossy(q)
                    ),
                    None => format!("'Permissions Violation for Subscription to \"{subject}\"'"),
                };
                self.send_err(&text);
                return;
            }
            if perms.needs_delivery_check(subject) {
                deny_check = Some(perms.clone());
            }
        }
        if self.subs.contains_key(sid) {
            // nats-server ignores a SUB that reuses a live sid.
            self.ok();
            return;
        }
        let limit = self.max_subs;
        if limit > 0 && self.subs.len() >= limit {
            // Subscriptions that ended at their max still have their sid here.
            self.subs.retain(|_, s| !s.is_done());
            self.entry.sweep_subscriptions(false);
            self.entry.subs.store(self.subs.len(), Ordering::Relaxed);
            if self.subs.len() >= limit {
                debug!(
                    cid = self.handle.id,
                    limit, "maximum subscriptions exceeded"
                );
                self.send_err(MAX_SUBS_ERR);
                return;
            }
        }
        let sub = Arc::new(Subscription::new(
            SubTarget::Client(self.handle.clone()),
            subject,
            queue,
            sid,
            deny_check,
        ));
        if let Err(e) = self.account.add_subscription(&SubRef(sub.clone())) {
            debug!(cid = self.handle.id, error = %e, "subscription refused");
            self.send_err("'Invalid Subject'");
            return;
        }
        self.entry.note_subscription(sid, Some(&sub));
        self.subs.insert(sid.into(), sub);
        self.sweep_ended_subscriptions();
        self.entry.subs.store(self.subs.len(), Ordering::Relaxed);
        self.ok();
    }

    /// Drops subscriptions that ended by reaching their max from the sid map, amortised so the
    /// map cannot grow without bound under the old request pattern (SUB + UNSUB 1 per request).
    fn sweep_ended_subscriptions(&mut self) {
        if self.subs.len() >= self.sweep_at {
            self.subs.retain(|_, s| !s.is_done());
            self.entry.sweep_subscriptions(false);
            self.sweep_at = (self.subs.len() * 2).max(64);
        }
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        let Some(sub) = self.subs.get(sid).cloned() else {
            return;
        };
        if let Some(max) = max {
            // As in nats-server, `max` counts every delivery since the SUB.
            if max > sub.delivered.load(Ordering::Relaxed) {
                sub.max.store(max, Ordering::Relaxed);
                return;
            }
        }
        self.subs.remove(sid);
        self.entry.note_subscription(sid, None);
        self.entry.subs.store(self.subs.len(), Ordering::Relaxed);
        self.remove_subscription(&sub);
    }

    fn remove_subscription(&self, sub: &Arc<Subscription>) {
        if sub.finish() {
            self.account.remove_subscription(&SubRef(sub.clone()));
        }
    }

    /// New permissions from a reload (same user, secret and account), applied in place as
    /// nats-server does: later publishes and subscriptions are checked against them, and every
    /// subscription they no longer allow is removed with
    /// `-ERR 'Permissions Violation for Subscription to "<subject>" (sid "<sid>")'`. A
    /// subscription whose deliveries are checked one by one against a deny list (under the old
    /// or the new permissions) cannot switch lists atomically: then the connection is closed
    /// with `'Authorization Violation'` instead, so nothing is ever delivered under stale rights.
    fn apply_permissions(&mut self, permissions: Option<Arc<Permissions>>) -> Option<Close> {
        let rechecked = self.subs.values().any(|sub| {
            sub.deny_check.is_some()
                || permissions
                    .as_ref()
                    .is_some_and(|p| p.needs_delivery_check(&sub.subject))
        });
        if rechecked {
            warn!(
                cid = self.handle.id,
                "closing a connection whose subscriptions' deny checks a reload changed"
            );
            self.send_err("'Authorization Violation'");
            self.fanout.flush();
            return Some(Close::Auth);
        }
        let refused: Vec<Box<[u8]>> = self
            .subs
            .iter()
            .filter(|(_, sub)| {
                !sub.is_done()
                    && permissions
                        .as_ref()
                        .is_some_and(|p| !p.subscribe.allows_subscribe(&sub.subject))
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        self.fanout.set_publisher(Publisher::Client {
            id: self.handle.id,
            permissions: permissions.clone(),
        });
        self.permissions = permissions;
        self.publish_allowed.clear();
        for sid in refused {
            let Some(sub) = self.subs.remove(&sid) else {
                continue;
            };
            self.entry.note_subscription(&sid, None);
            self.remove_subscription(&sub);
            warn!(
                cid = self.handle.id,
                subject = %printable(&sub.subject),
                "subscription removed: a reload no longer allows it"
            );
            let text = format!(
                "'Permissions Violation for Subscription to \"{}\" (sid \"{}\")'",
                String::from_utf8_lossy(&sub.subject),
                String::from_utf8_lossy(&sid)
            );
            self.send_err(&text);
        }
        self.entry.subs.store(self.subs.len(), Ordering::Relaxed);
        self.fanout.flush();
        debug!(cid = self.handle.id, "permissions updated by a reload");
        None
    }

    fn remove_all_subscriptions(&mut self) {
        let subs: Vec<_> = self.subs.drain().map(|(_, s)| s).collect();
        self.entry.sweep_subscriptions(true);
        for sub in &subs {
            self.remove_subscription(sub);
        }
    }

    fn on_ping_timer(&mut self) -> Option<Close> {
        if self.pings_out >= self.shared.opts.ping_max {
            self.send_err("'Stale Connection'");
            self.fanout.flush();
            return Some(Close::Stale);
        }
        self.pings_out += 1;
        self.send(proto::encode::PING);
        self.fanout.flush();
        None
    }

    fn ok(&mut self) {
        if self.connect.verbose {
            self.send(proto::encode::OK);
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.fanout.send(&self.handle, bytes);
    }

    fn send_err(&mut self, text: &str) {
        let mut line = BytesMut::with_capacity(text.len() + 8);
        proto::encode::write_err(&mut line, text);
        self.send(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::is_reserved_reply;

    #[test]
    fn reserved_replies_are_nats_servers() {
        for reserved in [
            &b"_R_.abc"[..],
            b"_R_.",
            b"$JS.ACK.S.C.1.2.3.4.0",
            b"_GR_.x.y",
        ] {
            assert!(is_reserved_reply(reserved), "{reserved:?}");
        }
        for ordinary in [
            &b"_INBOX.x"[..],
            b"_R_",
            b"$JS.ACK.",
            b"_GR_.",
            b"$GNR.x",
            b"$JS.API.INFO",
            b"$JS.FC.S.C.1",
            b"reply",
        ] {
            assert!(!is_reserved_reply(ordinary), "{ordinary:?}");
        }
    }
}
