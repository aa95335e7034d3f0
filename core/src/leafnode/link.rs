//! One leafnode connection, either side: the handshake state machine, then the established
//! link.
//!
//! TLS, when configured, starts first (see [`super::tls`]): the hub writes its INFO in plain
//! text and runs the server side of the TLS handshake; the leaf reads that INFO, checks the
//! hub asks for TLS, runs the client side, and hands the INFO to the state machine below,
//! which then answers with CONNECT inside TLS. With `handshake_first` TLS comes before the
//! INFO. A plain link runs on the TCP stream's owned halves exactly as before; a TLS link on
//! `tokio::io::split` halves of the TLS stream, boxed as [`crate::tls::BoxedIo`] (as a
//! WebSocket link is: one build of the link code for both).
//!
//! A link over WebSocket ([`Transport::Ws`], feature `websocket`: a `ws://`/`wss://` remote,
//! or a leaf accepted on the websocket port's `/leafnode` path) arrives with its TLS and
//! upgrade done (see [`crate::websocket`]): no TLS inside it, the hub's INFO says no
//! `tls_required`, and a leaf neither checks that nor learns the hub's leafnode URLs (they
//! are not WebSocket URLs), as nats-server.
//!
//! The connection has one read task (this module) and one writer task (the same
//! [`Outbound`](crate::server::outbound::Outbound) writer as clients). The read task parses
//! [`LeafOp`]s and:
//!
//! * during the handshake, plays its side: the accepting side (hub) sends INFO, expects
//!   CONNECT first, authenticates, answers with INFO `connect_info`; the soliciting side
//!   (leaf) waits for INFO, checks it is a leafnode port, sends CONNECT and waits for the
//!   `connect_info` INFO when the hub announced `info_on_connect`;
//! * once established, registers the link with the interest table (which queues the first
//!   `LS+` burst, ending with the link's own fresh `$LDS.` subject), turns `LS+`/`LS-` into
//!   subscriptions of the server (through the central subscription hooks, so other links hear
//!   about them), and routes `LMSG`/`HMSG` locally with [`Fanout::fan_out_from_link`] (never
//!   back into this link); what the link's rules (a remote's deny lists, a leaf's
//!   permissions) refuse is dropped, and an accepted leaf is told with `-ERR 'Permissions
//!   Violation ...'`, the link staying up;
//! * detects loops: an `LS+` of one of this server's own `$LDS.` subjects, or of one another
//!   link announced already, closes this link with `-ERR 'Loop detected ...'` (so a peer
//!   echoing another link's subject closes its own link, not the other);
//! * pings the peer every `ping_interval` and closes the link after `ping_max` unanswered
//!   pings.
//!
//! When the connection ends, the link leaves the interest table and every subscription it
//! announced is removed (again through the hooks, so other links see the `LS-`).
//!
//! An accepted link bound to an account is announced to the system account when it is
//! established and when it ends (connect / disconnect advisories, `kind` `Leafnode`: see
//! [`crate::system::events`]); the peer's interest is mirrored in the link's status entry
//! (`/leafz?subs=1`) and the entry names the account the link is bound to.
//!
//! Limits on what the peer can make us hold: until the handshake is complete no op may carry
//! a payload (an accepting side answers one with `-ERR 'Authorization Violation'`, as
//! nats-server answers anything but `CONNECT`, before the payload is read), and a peer that
//! announces more than `max_subscriptions` subscriptions gets `-ERR 'maximum subscriptions
//! exceeded'` (nats-server's text) and the link is closed; the side that dialled waits
//! [`LOOP_RECONNECT_DELAY`] before trying again, as after a loop. An accepted leaf bound to an
//! account with a `leaf` limit (an account JWT's) past it is refused with
//! `-ERR 'maximum account active connections exceeded'`, as nats-server does.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::server::readbuf::ReadBuffer;
use bytes::{Buf, BytesMut};
use leaf_proto::printable::printable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::info::{new_nonce, HubInfo, LeafConnect, PeerInfo};
use super::interest::FirstBurst;
use super::login::{self, Login};
use super::nkey::RemoteAuth;
use super::tls::{ClientTls, FlushingWriter};
use super::{
    lock_interest, LeafState, LinkDeny, LinkEntry, RemoteUrl, LDS_PREFIX, LOOP_RECONNECT_DELAY,
};
use crate::auth::Permissions;
use crate::config::MAX_PAYLOAD_LIMIT;
use crate::server::account::limits::{ConnKind as Counted, MAX_ACCOUNT_CONNECTIONS_ERR};
use crate::server::fanout::{
    ClientHandle, ConnKind, Fanout, LeafPeer, MatchCache, Msg, SubRef, SubTarget, Subscription,
};
use crate::server::info::NATS_FEATURE_LEVEL;
use crate::server::{Account, Publisher, Shared};
use crate::tls::TlsStream;
use leaf_proto::subject::{is_valid_queue_name, is_valid_subject};
use leaf_proto::{self as proto, LeafOp, Limits, QueueNames};

/// The largest control line accepted on a link (queue lists and INFO can be long).
const MAX_CONTROL_LINE: usize = 64 * 1024;
/// How long a leaf waits for the hub's first INFO, and then for the `connect_info` INFO.
const HANDSHAKE_STEP: Duration = Duration::from_secs(2);
/// The account name nats-server reports in loop errors (we have one account).
const ACCOUNT: &str = "$G";

/// Which side of the link this server is.
pub enum Side {
    /// We accepted the connection: we are the hub.
    Accepted,
    /// We opened it to `url`: we are the leaf.
    Solicited {
        /// The URL dialled (credentials for CONNECT).
        url: RemoteUrl,
        /// Subjects kept off the link (the remote's deny lists).
        deny: Arc<LinkDeny>,
        /// TLS towards the hub; `None` is plain TCP.
        tls: Option<Arc<ClientTls>>,
        /// An nkey seed or creds file to sign the hub's nonce with.
        auth: Option<Arc<RemoteAuth>>,
        /// The local account the link is bound to.
        account: Arc<Account>,
    },
}

/// Why a link ended.
#[derive(Debug)]
pub enum Ended {
    /// The peer closed the connection.
    Eof,
    /// Reading failed.
    Read(std::io::Error),
    /// The peer broke the protocol.
    Protocol(String),
    /// The peer's CONNECT failed authentication (accepting side).
    AuthFailed(String),
    /// The peer sent `-ERR` (e.g. the hub refused our credentials).
    PeerError(String),
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The address is not a leafnode port (no `client_id`/`leafnode_urls` in INFO).
    WrongPort,
    /// The remote authenticates with an nkey or a creds file, but the hub's INFO carried no
    /// nonce to sign.
    NoNonce,
    /// The peer requires something we do not implement.
    Unsupported(String),
    /// TLS failed or the two sides disagree about it (a certificate that does not verify,
    /// TLS required by one side only); the text says which.
    Tls(String),
    /// Our own loop-detection subject came back.
    Loop,
    /// The peer announced a loop-detection subject another link announced already: a loop
    /// through this server, or a peer echoing another link's subject (which must not get
    /// that link closed as a loop, so this one is).
    LoopElsewhere,
    /// The leaf's server name is in use by a link that authenticated as someone else
    /// (accepting side); the text names the link.
    NameTaken(String),
    /// No PONG came back.
    Stale,
    /// The outbound queue overflowed or a write stalled.
    SlowConsumer,
    /// The write side closed.
    WriterClosed,
    /// A newer connection from the same leaf server replaced this one (accepting side).
    Replaced,
    /// The peer announced more subscriptions than `max_subscriptions` allows.
    TooManySubscriptions {
        /// The limit.
        limit: usize,
    },
    /// The server is shutting down.
    Shutdown,
    /// Soliciting side: the hub entered lame duck mode (INFO `ldm`); the leaf closes the link
    /// and moves to another member of the hub's cluster.
    LameDuck,
}

impl Ended {
    /// Whether the link ended because of a routing loop (detected here or by the peer).
    pub fn is_loop(&self) -> bool {
        match self {
            Ended::Loop | Ended::LoopElsewhere => true,
            Ended::PeerError(text) => text.contains("Loop detected"),
            _ => false,
        }
    }

    /// Whether the link ended because one side announced more subscriptions than the
    /// other allows (detected here or by the peer).
    pub fn is_too_many_subscriptions(&self) -> bool {
        match self {
            Ended::TooManySubscriptions { .. } => true,
            Ended::PeerError(text) => text.contains("maximum subscriptions exceeded"),
            _ => false,
        }
    }

    /// How long a soliciting side must wait before reconnecting, if longer than its backoff:
    /// a loop or too many subscriptions would come back at once.
    pub fn reconnect_delay(&self) -> Option<Duration> {
        (self.is_loop() || self.is_too_many_subscriptions()).then_some(LOOP_RECONNECT_DELAY)
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Eof => f.write_str("connection closed by the peer"),
            Ended::Read(e) => write!(f, "read failed: {e}"),
            Ended::Protocol(text) => write!(f, "protocol error: {text}"),
            Ended::AuthFailed(why) => write!(f, "authentication failed: {why}"),
            Ended::PeerError(text) => write!(f, "the peer reported an error: {text}"),
            Ended::HandshakeTimeout => f.write_str("handshake timed out"),
            Ended::WrongPort => f.write_str(
                "attempted to connect to a port that is not a leafnode port (wrong port?)",
            ),
            Ended::NoNonce => f.write_str(
                "the hub sent no nonce in its INFO, but this remote authenticates with an nkey \
                 or a credentials file (which sign the nonce): the hub does not support nkey \
                 authentication on this port",
            ),
            Ended::Unsupported(what) => write!(f, "not supported: {what}"),
            Ended::Tls(what) => f.write_str(what),
            Ended::Loop => write!(
                f,
                "Loop detected for leafnode account=\"{ACCOUNT}\" (our own $LDS subject came back)"
            ),
            Ended::LoopElsewhere => write!(
                f,
                "Loop detected for leafnode account=\"{ACCOUNT}\" (the peer announced the \
                 loop-detection subject of another link: a loop through this server, or an echo)"
            ),
            Ended::NameTaken(what) => write!(f, "refused: {what}"),
            Ended::Stale => f.write_str("stale link (no PONG)"),
            Ended::SlowConsumer => f.write_str("slow consumer"),
            Ended::WriterClosed => f.write_str("write failed"),
            Ended::Replaced => {
                f.write_str("replaced by a newer connection from the same leaf server")
            }
            Ended::TooManySubscriptions { limit } => write!(
                f,
                "maximum subscriptions exceeded: the peer announced more than {limit} \
                 subscriptions (max_subscriptions)"
            ),
            Ended::Shutdown => f.write_str("server shutting down"),
            Ended::LameDuck => f.write_str("the hub entered lame duck mode"),
        }
    }
}

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting side: INFO sent, waiting for CONNECT.
    AwaitConnect,
    /// Soliciting side: waiting for the hub's INFO.
    AwaitInfo,
    /// Soliciting side: CONNECT sent, waiting for the INFO with `connect_info`.
    AwaitConnectInfo,
    /// Interest and messages flow.
    Established,
}

/// Nothing denied (accepted links).
static NO_DENY: LinkDeny = LinkDeny {
    imports: Vec::new(),
    exports: Vec::new(),
    import_allow: None,
    export_allow: None,
};

/// The outcome of [`serve`].
pub struct Outcome {
    /// Why the connection ended.
    pub ended: Ended,
    /// Whether the handshake completed (the link was up).
    pub established: bool,
}

/// The read side of one link.
struct Link<'s> {
    shared: &'s Arc<Shared>,
    /// The account the link is bound to: the global one, an accepted leaf's user's, or the
    /// remote's `account`.
    account: Arc<Account>,
    leaf: &'s LeafState,
    handle: Arc<ClientHandle>,
    entry: Arc<LinkEntry>,
    side: Side,
    peer: SocketAddr,
    /// Our end of the connection (what the peer dialled).
    local: Option<SocketAddr>,
    phase: Phase,
    limits: Limits,
    /// The peer's server name (from CONNECT or INFO).
    remote_name: String,
    /// Subscriptions announced by the peer, by `LS+` key (`subject[ queue]`).
    subs: HashMap<Box<[u8]>, SubRef>,
    cache: MatchCache,
    fanout: Fanout,
    pings_out: u32,
    /// When the oldest unanswered `PING` was sent (its `PONG` measures the round trip).
    ping_sent: Option<std::time::Instant>,
    registered: bool,
    /// The link runs over TLS.
    tls: bool,
    /// The link runs over WebSocket.
    ws: bool,
    /// Accepting side: the first INFO was already written (before the TLS handshake).
    info_sent: bool,
    /// Accepting side: the nonce of our INFO, which nkey leaves sign.
    nonce: String,
    /// Accepting side: the leaf's permissions (for the `connect_info` INFO).
    perms: Option<Arc<Permissions>>,
    /// Soliciting side: what stays off the link, the remote's deny lists joined with the
    /// permissions the hub announced (set on the link's handle when it is established).
    hub_rules: Option<LinkDeny>,
    /// This link's loop-detection subject, while it is established.
    lds: Option<Box<[u8]>>,
    /// Permissions violations seen on this link (refused by us or by the peer).
    violations: u64,
    /// Accepting side: the link's place in its account's `leaf` count.
    slot: Option<crate::server::account::limits::Slot>,
    /// Accepting side: who the leaf logged in as and its version (for the system account's
    /// advisories), and when the link came up.
    login_user: String,
    peer_version: String,
    up_since: std::time::SystemTime,
}

/// The connection after any TLS upgrade.
enum Upgraded {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// A WebSocket (its TLS, if any, below it).
    #[cfg(feature = "websocket")]
    Ws(Box<crate::websocket::WsIo>),
}

/// What a link runs on, as it comes from the listener or the dialler.
pub(crate) enum Transport {
    /// A TCP connection (TLS, if configured, still to start).
    Tcp(TcpStream),
    /// A WebSocket whose handshake is done; `tls`: it runs over TLS (`wss://`).
    #[cfg(feature = "websocket")]
    Ws {
        /// The WebSocket.
        stream: Box<crate::websocket::WsIo>,
        /// Our end of the connection.
        local: Option<SocketAddr>,
        /// Over TLS.
        tls: bool,
    },
}

/// Runs one leafnode connection until it ends. `entry` receives its status; the caller owns
/// reconnecting (solicited) or dropping the entry (accepted).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    leaf: Arc<LeafState>,
    transport: Transport,
    peer: SocketAddr,
    side: Side,
    entry: Arc<LinkEntry>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let leaf = &*leaf;
    let nonce = if matches!(side, Side::Solicited { .. }) {
        String::new()
    } else {
        match new_nonce() {
            Some(n) => n,
            None => {
                tracing::error!(%peer, "no randomness from the OS for a leafnode nonce: link refused");
                return Outcome {
                    ended: Ended::Protocol("no randomness for a nonce".into()),
                    established: false,
                };
            }
        }
    };
    let (local, ws_tls) = match &transport {
        Transport::Tcp(stream) => {
            let _ = stream.set_nodelay(true);
            (stream.local_addr().ok(), None)
        }
        #[cfg(feature = "websocket")]
        Transport::Ws { local, tls, .. } => (*local, Some(*tls)),
    };
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let solicited = matches!(side, Side::Solicited { .. });
    let handle = Arc::new(ClientHandle::with_kind(
        id,
        shared.opts.max_pending,
        ConnKind::Leaf(LeafPeer {
            solicited,
            stats: entry.stats().clone(),
            // Set when the link is established: the leaf's permissions (accepted), or the
            // remote's deny lists joined with what the hub allows (solicited).
            deny: std::sync::OnceLock::new(),
        }),
    ));
    // A solicited link is bound to its remote's account; an accepted one to the global
    // account until its leaf logs in.
    let account = match &side {
        Side::Solicited { account, .. } => account.clone(),
        Side::Accepted => shared.global().clone(),
    };
    let mut link = Link {
        account,
        shared: &shared,
        leaf,
        handle: handle.clone(),
        entry,
        side,
        peer,
        local,
        phase: if solicited {
            Phase::AwaitInfo
        } else {
            Phase::AwaitConnect
        },
        // No payload before the handshake is complete (see `Link::establish`).
        limits: Limits {
            max_control_line: MAX_CONTROL_LINE,
            max_payload: 0,
        },
        remote_name: String::new(),
        login_user: String::new(),
        peer_version: String::new(),
        up_since: std::time::SystemTime::now(),
        subs: HashMap::new(),
        cache: MatchCache::default(),
        fanout: Fanout::new(Publisher::Link(handle.clone())),
        pings_out: 0,
        ping_sent: None,
        registered: false,
        tls: ws_tls.unwrap_or(false),
        ws: ws_tls.is_some(),
        info_sent: false,
        nonce,
        perms: None,
        hub_rules: None,
        lds: None,
        violations: 0,
        slot: None,
    };
    let upgrading = async {
        match transport {
            Transport::Tcp(tcp) => link.upgrade(tcp).await,
            #[cfg(feature = "websocket")]
            Transport::Ws { stream, .. } => Ok((Upgraded::Ws(stream), None)),
        }
    };
    let upgraded = tokio::select! {
        upgraded = upgrading => upgraded,
        _ = stop.changed() => Err(Ended::Shutdown),
    };
    let (stream, prefix) = match upgraded {
        Ok(upgraded) => upgraded,
        Err(ended) => {
            handle.out.close();
            return Outcome {
                ended,
                established: false,
            };
        }
    };
    let ended = match stream {
        Upgraded::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            link.run(reader, writer, prefix, &mut stop).await
        }
        // TLS and WebSocket links run on one boxed stream type: one build of the link code.
        Upgraded::Tls(tls) => {
            let io: crate::tls::BoxedIo = tls;
            let (reader, writer) = tokio::io::split(io);
            link.run(reader, FlushingWriter::new(writer), prefix, &mut stop)
                .await
        }
        #[cfg(feature = "websocket")]
        Upgraded::Ws(ws) => {
            let io: crate::tls::BoxedIo = ws;
            let (reader, writer) = tokio::io::split(io);
            link.run(reader, FlushingWriter::new(writer), prefix, &mut stop)
                .await
        }
    };
    let established = link.registered;
    Outcome { ended, established }
}

/// Why a read failed: a TLS error (an alert from the peer, such as a client certificate the
/// hub requires or refuses, arrives on the first read after the handshake) or an I/O error.
fn read_error(e: std::io::Error) -> Ended {
    #[cfg(not(feature = "tls"))]
    return Ended::Read(e);
    #[cfg(feature = "tls")]
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Ended::Tls(format!("TLS error: {tls}")),
        None => Ended::Read(e),
    }
}

/// Reads the hub's first INFO in plain text, before TLS; returns the bytes read (the INFO
/// line). Fails unless the hub is a leafnode port asking for TLS.
async fn read_plain_info(tcp: &mut TcpStream, limits: &Limits) -> Result<BytesMut, Ended> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        while memchr::memchr(b'\n', &buf).is_none() {
            if buf.len() > MAX_CONTROL_LINE {
                return Err(Ended::Protocol("the hub's INFO is too long".into()));
            }
            match tcp.read_buf(&mut buf).await {
                Ok(0) => return Err(Ended::Eof),
                Ok(_) => {}
                Err(e) => return Err(Ended::Read(e)),
            }
        }
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE_STEP, read)
        .await
        .map_err(|_| Ended::HandshakeTimeout)??;
    let used = match proto::parse_leaf_op(&buf, limits) {
        Ok(Some((LeafOp::Info(json), used))) => {
            let info: PeerInfo = serde_json::from_slice(json)
                .map_err(|e| Ended::Protocol(format!("bad INFO: {e}")))?;
            if info.client_id == 0 || info.leafnode_urls.is_none() {
                return Err(Ended::WrongPort);
            }
            if !info.tls_required {
                return Err(Ended::Tls(
                    "TLS is configured for this remote, but the hub does not offer TLS (no \
                     tls_required in its INFO): enable TLS on the hub's leafnode listener, or \
                     use a nats-leaf:// URL without a tls table"
                        .into(),
                ));
            }
            used
        }
        Ok(Some((LeafOp::Err(text), _))) => {
            let text = String::from_utf8_lossy(text).trim_matches('\'').to_owned();
            return Err(Ended::PeerError(text));
        }
        Ok(Some((op, _))) => {
            return Err(Ended::Protocol(format!(
                "expected INFO first, got {}",
                op.name()
            )))
        }
        Ok(None) => return Err(Ended::Protocol("incomplete INFO".into())),
        Err(e) => return Err(Ended::Protocol(e.to_string())),
    };
    if used != buf.len() {
        return Err(Ended::Protocol(
            "the hub sent more than its INFO before the TLS handshake".into(),
        ));
    }
    Ok(buf)
}

impl Link<'_> {
    /// The subjects kept off this link: the remote's deny lists (solicited), or what the
    /// leaf asked for in its CONNECT (accepted).
    fn deny(&self) -> &LinkDeny {
        self.handle
            .leaf()
            .and_then(|p| p.deny.get())
            .unwrap_or(&NO_DENY)
    }

    fn solicited(&self) -> bool {
        matches!(self.side, Side::Solicited { .. })
    }

    /// Starts TLS where this side's settings want it. Returns the stream to run the link on
    /// and, on a leaf that read the hub's INFO before TLS, that INFO (still to be handled).
    async fn upgrade(&mut self, mut tcp: TcpStream) -> Result<(Upgraded, Option<BytesMut>), Ended> {
        let (url, client) = match &self.side {
            Side::Accepted => {
                let Some(server) = self.leaf.opts.tls.clone() else {
                    return Ok((Upgraded::Plain(tcp), None));
                };
                if !server.handshake_first {
                    // The INFO goes out in plain text, before the TLS handshake.
                    let json = self.hub_info_json(false);
                    let mut out = BytesMut::with_capacity(json.len() + 8);
                    proto::write_info(&mut out, &json);
                    match tokio::time::timeout(server.timeout, tcp.write_all(&out)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return Err(Ended::WriterClosed),
                    }
                    self.info_sent = true;
                }
                let stream = server.accept(tcp).await.map_err(Ended::Tls)?;
                self.tls = true;
                return Ok((Upgraded::Tls(Box::new(stream)), None));
            }
            Side::Solicited { tls: None, .. } => return Ok((Upgraded::Plain(tcp), None)),
            Side::Solicited {
                url,
                tls: Some(client),
                ..
            } => (url.clone(), client.clone()),
        };
        let info = if client.handshake_first {
            None
        } else {
            Some(read_plain_info(&mut tcp, &self.limits).await?)
        };
        let stream = client.connect(&url, tcp).await.map_err(Ended::Tls)?;
        self.tls = true;
        Ok((Upgraded::Tls(Box::new(stream)), info))
    }

    /// Runs the link on `reader`/`writer` (the hub's INFO in `prefix` if it was read before
    /// TLS) until it ends, then tears it down and waits for the writer task.
    async fn run<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        prefix: Option<BytesMut>,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let handle = self.handle.clone();
        let writer_handle = handle.clone();
        let write_deadline = self.shared.opts.write_deadline;
        let writer_task = tokio::spawn(async move {
            writer_handle
                .out
                .run_writer(&mut writer, write_deadline)
                .await
        });
        if !self.solicited() && !self.info_sent {
            self.send_hub_info(false);
        }
        let ended = self.read_loop(&mut reader, stop, prefix).await;
        self.teardown();
        if self.registered && !self.solicited() {
            self.advise_disconnect(&ended);
        }
        handle.out.close();
        match writer_task.await {
            Ok(Err(e)) => debug!(lid = handle.id, error = %e, "leafnode write side closed"),
            Err(e) => warn!(lid = handle.id, error = %e, "leafnode writer task failed"),
            Ok(Ok(())) => {}
        }
        ended
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        stop: &mut watch::Receiver<bool>,
        prefix: Option<BytesMut>,
    ) -> Ended {
        let handshake_limit = if self.solicited() {
            HANDSHAKE_STEP
        } else {
            self.leaf.opts.auth_timeout
        };
        let handshake = tokio::time::sleep(handshake_limit);
        tokio::pin!(handshake);
        let ping_interval = self.leaf.opts.ping_interval;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rb = ReadBuffer::default();
        // Bytes read before TLS started (the hub's INFO) are handled before reading more.
        let mut buffered = false;
        if let Some(prefix) = prefix {
            rb.buf.extend_from_slice(&prefix);
            buffered = !rb.buf.is_empty();
        }
        self.handle.out.flush();
        let handle = self.handle.clone();
        loop {
            if *stop.borrow() {
                return Ended::Shutdown;
            }
            if self.handle.out.is_closed() {
                return if self.handle.out.is_slow_consumer() {
                    Ended::SlowConsumer
                } else if self.entry.is_replaced() {
                    Ended::Replaced
                } else {
                    Ended::WriterClosed
                };
            }
            let phase = self.phase;
            if buffered {
                buffered = false;
            } else {
                tokio::select! {
                read = rb.read_from(reader) => match read {
                    Ok(0) => return Ended::Eof,
                    Ok(_) => {}
                    Err(e) => return read_error(e),
                },
                _ = ping.tick(), if phase == Phase::Established => {
                    if self.pings_out >= self.leaf.opts.ping_max {
                        self.send_err("'Stale Connection'");
                        self.fanout.flush();
                        return Ended::Stale;
                    }
                    self.pings_out += 1;
                    if self.ping_sent.is_none() {
                        self.ping_sent = Some(std::time::Instant::now());
                    }
                    self.fanout.send(&self.handle, proto::PING);
                    self.fanout.flush();
                    continue;
                }
                _ = &mut handshake, if phase != Phase::Established => {
                    if phase == Phase::AwaitConnect {
                        self.send_err("'Authentication Timeout'");
                        self.fanout.flush();
                    }
                    return Ended::HandshakeTimeout;
                }
                _ = stop.changed() => return Ended::Shutdown,
                // Closed from outside (replaced by a newer connection), even while the
                // peer sends nothing.
                _ = handle.out.closed() => continue,
                }
            }
            let before = self.phase;
            let (consumed, ended) = self.process(&rb.buf);
            rb.buf.advance(consumed);
            self.fanout.flush();
            if let Some(ended) = ended {
                return ended;
            }
            if self.phase != before && self.phase == Phase::AwaitConnectInfo {
                // The second handshake step gets its own time limit.
                handshake
                    .as_mut()
                    .reset(tokio::time::Instant::now() + HANDSHAKE_STEP);
            }
            self.fanout.wait_for_stalled(Some(self.handle.id)).await;
        }
    }

    /// Handles every complete op in `buf`; returns the bytes consumed and, if the link must
    /// close, why.
    fn process(&mut self, buf: &[u8]) -> (usize, Option<Ended>) {
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            match proto::parse_leaf_op(rest, &self.limits) {
                Ok(Some((op, used))) => {
                    pos += used;
                    if let Err(ended) = self.handle_op(op) {
                        return (pos, Some(ended));
                    }
                }
                Ok(None) => break,
                Err(proto::ParseError::MaxPayload) if self.phase == Phase::AwaitConnect => {
                    // Anything but CONNECT, refused before its payload is read.
                    self.send_err("'Authorization Violation'");
                    return (pos, Some(Ended::Protocol("expected CONNECT first".into())));
                }
                Err(e) => {
                    self.send_err(e.err_text());
                    return (pos, Some(Ended::Protocol(e.to_string())));
                }
            }
        }
        (pos, None)
    }

    fn handle_op(&mut self, op: LeafOp<'_>) -> Result<(), Ended> {
        match op {
            LeafOp::Ping => {
                // After the first burst of interest, if it is still being written.
                self.handle.out.pong();
                self.fanout.flush_later(&self.handle);
                return Ok(());
            }
            LeafOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.ping_sent.take() {
                    self.entry.set_rtt(sent.elapsed());
                }
                return Ok(());
            }
            LeafOp::Ok => return Ok(()),
            LeafOp::Err(text) => {
                let text = String::from_utf8_lossy(text).trim_matches('\'').to_owned();
                if self.phase == Phase::Established && text.starts_with("Permissions Violation") {
                    // The peer refused one subscription or message and keeps the link, as a
                    // nats-server leaf does (our hub's refusals: see `on_sub` and `on_msg`).
                    self.note_violation(
                        &text,
                        "the leafnode peer refused a subscription or message",
                    );
                    return Ok(());
                }
                return Err(Ended::PeerError(text));
            }
            _ => {}
        }
        match (self.phase, op) {
            (Phase::AwaitConnect, LeafOp::Connect(json)) => self.on_connect(json),
            (Phase::AwaitConnect, _) => {
                self.send_err("'Authorization Violation'");
                Err(Ended::Protocol("expected CONNECT first".into()))
            }
            (Phase::AwaitInfo, LeafOp::Info(json)) => self.on_first_info(json),
            (Phase::AwaitConnectInfo, LeafOp::Info(json)) => {
                let info: PeerInfo = serde_json::from_slice(json)
                    .map_err(|e| Ended::Protocol(format!("bad INFO: {e}")))?;
                if info.connect_info {
                    self.note_hub_rules(&info);
                    self.establish();
                }
                Ok(())
            }
            (Phase::Established, LeafOp::Info(json)) => {
                // A hub announces cluster changes with a new INFO, and lame duck mode (`ldm`:
                // its `leafnode_urls` are the other members', where this leaf goes now).
                if self.solicited() {
                    if let Ok(info) = serde_json::from_slice::<PeerInfo>(json) {
                        if let Some(urls) = &info.leafnode_urls {
                            self.entry.set_discovered(urls);
                        }
                        if info.ldm {
                            return Err(Ended::LameDuck);
                        }
                    }
                }
                Ok(())
            }
            (
                Phase::Established,
                LeafOp::Sub {
                    subject,
                    queue,
                    weight,
                },
            ) => self.on_sub(subject, queue, weight.unwrap_or(1)),
            (Phase::Established, LeafOp::Unsub { subject, queue }) => {
                self.on_unsub(subject, queue);
                Ok(())
            }
            (
                Phase::Established,
                LeafOp::Msg {
                    subject,
                    reply,
                    queues,
                    headers,
                    payload,
                },
            ) => {
                self.on_msg(
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
            (_, op) => {
                self.send_err("'Unknown Protocol Operation'");
                Err(Ended::Protocol(format!(
                    "unexpected {} during the handshake",
                    op.name()
                )))
            }
        }
    }

    /// Accepting side: the INFO we send first (`connect_info == false`) or in answer to
    /// CONNECT (`true`).
    fn send_hub_info(&mut self, connect_info: bool) {
        let json = self.hub_info_json(connect_info);
        self.fanout
            .send_with(&self.handle, |b| proto::write_info(b, &json));
    }

    /// Accepting side: the JSON of our INFO (see [`Link::send_hub_info`]).
    fn hub_info_json(&self, connect_info: bool) -> Vec<u8> {
        let shared = self.shared;
        let opts = &shared.opts;
        // The address the peer dialled: right even when the listener is bound to 0.0.0.0.
        let (host, port) = self
            .local
            .or(self.leaf.listen_addr)
            .map(|a| (a.ip().to_string(), a.port()))
            .unwrap_or_default();
        let info = HubInfo {
            server_id: shared.server_id.clone(),
            server_name: opts
                .server_name
                .clone()
                .unwrap_or_else(|| shared.server_id.clone()),
            version: NATS_FEATURE_LEVEL,
            proto: 1,
            leaf_version: opts.implementation_version,
            implementation: opts.implementation,
            go: "none",
            leafnode_urls: std::iter::once(format!("{host}:{port}"))
                .chain(self.leaf.cluster_urls())
                .collect(),
            host,
            port,
            headers: true,
            max_payload: opts.max_payload,
            client_id: self.handle.id,
            client_ip: self.peer.ip().to_string(),
            nonce: self.nonce.clone(),
            auth_required: self.leaf.opts.auth_required(),
            info_on_connect: true,
            connect_info,
            remote_account: connect_info.then_some(ACCOUNT),
            import: None,
            export: None,
            // Over WebSocket, TLS is the WebSocket's (`wss://`), never inside it.
            tls_required: self.leaf.opts.tls.is_some() && !self.ws,
            tls_verify: self.leaf.opts.tls.as_ref().is_some_and(|t| t.verify) && !self.ws,
        };
        let mut info = info;
        if connect_info {
            (info.import, info.export) = login::info_permissions(self.perms.as_deref());
        }
        serde_json::to_vec(&info).unwrap_or_default()
    }

    /// Accepting side: the leaf's CONNECT.
    fn on_connect(&mut self, json: &[u8]) -> Result<(), Ended> {
        let connect: LeafConnect = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                self.send_err("'Invalid CONNECT Arguments'");
                return Err(Ended::Protocol(format!("bad CONNECT: {e}")));
            }
        };
        if connect.lang.is_some() {
            self.send_err("'Attempted To Connect To Leafnode Port'");
            return Err(Ended::Protocol(
                "a client connected to the leafnode port".into(),
            ));
        }
        if let Some(gw) = &connect.gateway {
            self.send_err("'Rejecting Gateway Connection On Leafnode Port'");
            return Err(Ended::Protocol(format!(
                "gateway {gw:?} on the leafnode port"
            )));
        }
        if connect.is_hub {
            self.send_err("'Hub Mode Remotes Not Supported'");
            return Err(Ended::Protocol("the remote wants to be the hub".into()));
        }
        let login = match login::authenticate(&self.leaf.opts, &connect, &self.nonce) {
            Ok(login) => login,
            Err(why) => {
                self.send_err("'Authorization Violation'");
                return Err(Ended::AuthFailed(why));
            }
        };
        self.handle
            .headers
            .store(connect.headers, Ordering::Relaxed);
        // What stays off the link: the leaf's permissions both ways, and its deny_imports.
        let rules = login::link_rules(&login, &connect.deny_pub);
        if !rules.is_empty() {
            if let Some(peer) = self.handle.leaf() {
                let _ = peer.deny.set(rules);
            }
        }
        let Login {
            identity,
            permissions,
            account,
        } = login;
        if let Some(name) = account {
            // An authority's accounts (operator mode) come into being with their first user;
            // the configuration names only accounts the server has.
            let delegated = matches!(
                self.leaf.opts.auth,
                crate::auth::Authenticator::Delegated(_)
            );
            let found = if delegated {
                Some(self.shared.accounts.add(&name))
            } else {
                self.shared.accounts.get(&name)
            };
            let Some(account) = found else {
                self.send_err("'Authorization Violation'");
                return Err(Ended::AuthFailed(format!(
                    "{identity} is bound to account {name:?}, which this server does not have"
                )));
            };
            // The account's `leaf` limit (an account JWT's), as nats-server counts it.
            match account.limits.admit(Counted::Leaf) {
                Ok(slot) => self.slot = Some(slot),
                Err(e) => {
                    self.send_err(MAX_ACCOUNT_CONNECTIONS_ERR);
                    return Err(Ended::AuthFailed(format!(
                        "{identity}: account {name:?}: {e}"
                    )));
                }
            }
            self.account = account;
        }
        self.perms = permissions;
        self.remote_name = connect.name.or(connect.server_id).unwrap_or_default();
        // A leaf that reconnects before we noticed its old connection died: the old one
        // would hold its interest and fill up with messages until its pings time out. Only
        // the same credentials may take a name over.
        match self
            .leaf
            .replace_stale(&self.remote_name, &identity, &self.handle)
        {
            Ok(0) => {}
            Ok(replaced) => {
                warn!(lid = self.handle.id, remote = %printable(&self.remote_name), replaced, "replacing the connection from the same leaf server");
            }
            Err(taken) => {
                self.send_err("'Leafnode Name In Use With Other Credentials'");
                return Err(Ended::NameTaken(format!(
                    "the leaf server name {:?} is in use by link {} (authenticated as {}), \
                     this connection authenticated as {identity}",
                    self.remote_name, taken.link, taken.held_by
                )));
            }
        }
        // The advisories name the user as nats-server does: the CONNECT's user name.
        self.login_user = connect
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| identity.clone());
        self.peer_version = connect.version.clone().unwrap_or_default();
        self.entry.set_identity(identity);
        self.send_hub_info(true);
        self.establish();
        Ok(())
    }

    /// Soliciting side: the hub's first INFO.
    fn on_first_info(&mut self, json: &[u8]) -> Result<(), Ended> {
        let info: PeerInfo =
            serde_json::from_slice(json).map_err(|e| Ended::Protocol(format!("bad INFO: {e}")))?;
        if info.client_id == 0 || info.leafnode_urls.is_none() {
            return Err(Ended::WrongPort);
        }
        if info.tls_required && !self.tls && !self.ws {
            return Err(Ended::Tls(
                "the hub requires TLS, but this remote is plain TCP: use a tls:// URL or give \
                 the remote a tls table (ca_file, and cert_file/key_file if the hub verifies \
                 leaves)"
                    .into(),
            ));
        }
        self.handle.headers.store(info.headers, Ordering::Relaxed);
        if let Some(urls) = info.leafnode_urls.as_ref().filter(|_| !self.ws) {
            self.entry.set_discovered(urls);
        }
        self.remote_name = if info.server_name.is_empty() {
            info.server_id.clone()
        } else {
            info.server_name.clone()
        };
        let Side::Solicited { url, auth, .. } = &self.side else {
            return Err(Ended::Protocol("INFO on an accepted link".into()));
        };
        let shared = self.shared;
        // A lone URL user name goes as `user` (nats-server's way) and as a token (ours).
        let token = url.user.clone().filter(|_| url.pass.is_none());
        let mut connect = LeafConnect {
            version: Some(NATS_FEATURE_LEVEL.to_owned()),
            user: url.user.clone(),
            pass: url.pass.clone(),
            auth_token: token,
            tls_required: self.tls && !self.ws,
            server_id: Some(shared.server_id.clone()),
            name: Some(
                shared
                    .opts
                    .server_name
                    .clone()
                    .unwrap_or_else(|| shared.server_id.clone()),
            ),
            headers: true,
            // Our deny_imports, so the hub does not send what we would drop anyway.
            deny_pub: match &self.side {
                Side::Solicited { deny, .. } => deny.imports.clone(),
                Side::Accepted => Vec::new(),
            },
            ..LeafConnect::default()
        };
        if let Some(auth) = auth {
            // As nats-server: a seed or creds file replaces the URL's credentials.
            if info.nonce.is_empty() {
                return Err(Ended::NoNonce);
            }
            let signed = auth.sign(info.nonce.as_bytes());
            connect.user = None;
            connect.pass = None;
            connect.auth_token = None;
            connect.nkey = signed.nkey;
            connect.jwt = signed.jwt;
            connect.sig = Some(signed.sig);
        }
        let json = serde_json::to_vec(&connect).unwrap_or_default();
        self.fanout
            .send_with(&self.handle, |b| proto::write_connect(b, &json));
        if info.info_on_connect {
            self.phase = Phase::AwaitConnectInfo;
        } else {
            self.note_hub_rules(&info);
            self.establish();
        }
        Ok(())
    }

    /// Soliciting side: what stays off the link from now on: the remote's deny lists joined
    /// with the permissions the hub announced in `info`.
    fn note_hub_rules(&mut self, info: &PeerInfo) {
        if let Side::Solicited { deny, .. } = &self.side {
            if info.import.is_some() || info.export.is_some() {
                info!(lid = self.handle.id, import = ?info.import, export = ?info.export, "the hub announced this leaf's permissions: what they forbid stays off the link");
            }
            self.hub_rules = Some(login::hub_rules(deny, info));
        }
    }

    /// The handshake is complete: register with the interest table (first `LS+` burst).
    fn establish(&mut self) {
        self.phase = Phase::Established;
        self.limits.max_payload = MAX_PAYLOAD_LIMIT.max(self.shared.opts.max_payload);
        let solicited = self.solicited();
        if let (Some(rules), Some(peer)) = (self.hub_rules.take(), self.handle.leaf()) {
            let _ = peer.deny.set(rules);
        }
        let lds = self.leaf.new_lds();
        let table = self.leaf.interest(self.account.name());
        lock_interest(&table).add_link(self.handle.clone(), solicited, &lds);
        // The first burst is written as the socket takes it (see `Interest::add_link`).
        self.handle.out.set_refill(Arc::new(FirstBurst {
            interest: Arc::downgrade(&table),
            id: self.handle.id,
        }));
        self.lds = Some(lds);
        self.registered = true;
        let url = match &self.side {
            Side::Solicited { url, .. } => url.to_string(),
            Side::Accepted => self.peer.to_string(),
        };
        info!(
            lid = self.handle.id,
            %url,
            remote = %printable(&self.remote_name),
            side = if solicited { "leaf" } else { "hub" },
            tls = self.tls,
            "leafnode link established"
        );
        self.entry.set_account(self.account.name());
        self.entry.up(url, self.remote_name.clone(), self.tls);
        self.entry.set_link(Some(self.handle.clone()));
        self.up_since = std::time::SystemTime::now();
        if !solicited {
            if let Some(events) = self.shared.system.events() {
                events.connected(&self.advisory_info());
            }
        }
    }

    /// The accepted link as the system account's advisories describe it.
    fn advisory_info(&self) -> crate::system::ClientInfo<'_> {
        crate::system::ClientInfo {
            start: self.up_since,
            host: self.peer.ip(),
            id: self.handle.id,
            account: self.account.name(),
            user: &self.login_user,
            name: &self.remote_name,
            lang: "",
            version: &self.peer_version,
            kind: crate::system::LinkKind::Leafnode,
        }
    }

    /// Tells the system account that this accepted link ended (see [`crate::system`]).
    fn advise_disconnect(&self, ended: &Ended) {
        let Some(events) = self.shared.system.events() else {
            return;
        };
        let stats = self.entry.stats();
        let data = |msgs: &std::sync::atomic::AtomicU64, bytes: &std::sync::atomic::AtomicU64| {
            crate::system::events::DataStats {
                msgs: msgs.load(Ordering::Relaxed),
                bytes: bytes.load(Ordering::Relaxed),
            }
        };
        let reason = match ended {
            Ended::Eof => "Client Closed",
            Ended::Read(_) => "Read Error",
            Ended::Stale => "Stale Connection",
            Ended::SlowConsumer => "Slow Consumer (Write Deadline)",
            Ended::WriterClosed => "Write Error",
            Ended::Shutdown => "Server Shutdown",
            Ended::Replaced => "Duplicate Remote LeafNode Connection",
            Ended::TooManySubscriptions { .. } => "Maximum Subscriptions Exceeded",
            Ended::AuthFailed(_) => "Authentication Failure",
            Ended::Loop | Ended::LoopElsewhere => "Leafnode Loop Detected",
            _ => "Protocol Violation",
        };
        events.disconnected(
            &self.advisory_info(),
            data(&stats.msgs_in, &stats.bytes_in),
            data(&stats.msgs_out, &stats.bytes_out),
            reason,
        );
    }

    /// `LS+ subject [queue weight]`.
    fn on_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, weight: u32) -> Result<(), Ended> {
        if subject.starts_with(LDS_PREFIX.as_bytes()) {
            return self.on_lds(subject, queue);
        }
        if !is_valid_subject(subject) || queue.is_some_and(|q| !is_valid_queue_name(q)) {
            debug!(lid = self.handle.id, subject = %printable(subject), "invalid LS+ ignored");
            return Ok(());
        }
        if super::js_denied(subject) {
            debug!(lid = self.handle.id, subject = %printable(subject), "LS+ for a subject kept off the link ignored");
            return Ok(());
        }
        if self.deny().export_interest_denied(subject) {
            let shown = String::from_utf8_lossy(subject);
            if self.solicited() {
                debug!(lid = self.handle.id, subject = ?shown, "LS+ for a subject kept off the link ignored");
            } else {
                // A leaf asking for what its permissions keep from it: refused, the link stays
                // (nats-server closes it for a literal subject).
                let text = format!("Permissions Violation for Subscription to \"{shown}\"");
                self.note_violation(&text, "leaf subscription refused by its permissions");
                self.send_err(&format!("'{text}'"));
            }
            return Ok(());
        }
        self.add_sub(subject, queue, weight)
    }

    /// `LS+ $LDS.<id>`: a loop-detection subject. Our own (one of our links' subjects came
    /// back) is a loop; so is one another link announced already: then this link closes the
    /// loop, and it is this link that is closed, never the other (a peer echoing another
    /// link's subject must not get that link closed). Otherwise it is passed on to the other
    /// links, whatever this link's permissions (as nats-server does).
    fn on_lds(&mut self, subject: &[u8], queue: Option<&[u8]>) -> Result<(), Ended> {
        let ended = if self.leaf.is_own_lds(subject) {
            Ended::Loop
        } else if queue.is_some() || !is_valid_subject(subject) {
            debug!(lid = self.handle.id, subject = %printable(subject), "invalid loop-detection LS+ ignored");
            return Ok(());
        } else if lock_interest(&self.leaf.interest(self.account.name()))
            .lds_elsewhere(subject, self.handle.id)
        {
            warn!(lid = self.handle.id, remote = ?self.remote_name, subject = %printable(subject), "the peer announced another link's loop-detection subject: closing this link as the loop");
            Ended::LoopElsewhere
        } else {
            return self.add_sub(subject, None, 1);
        };
        let text = format!(
            "'Loop detected for leafnode account=\"{ACCOUNT}\". Delaying attempt to reconnect for {}s'",
            LOOP_RECONNECT_DELAY.as_secs()
        );
        self.send_err(&text);
        Err(ended)
    }

    /// Records the peer's interest in `subject`/`queue` (a new subscription of the server, or
    /// a queue weight change); past `max_subscriptions` the link ends.
    fn add_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, weight: u32) -> Result<(), Ended> {
        let mut key = Vec::with_capacity(subject.len() + queue.map_or(0, |q| q.len() + 1));
        key.extend_from_slice(subject);
        if let Some(q) = queue {
            key.push(b' ');
            key.extend_from_slice(q);
        }
        if let Some(existing) = self.subs.get(key.as_slice()) {
            if queue.is_some() {
                self.account.reweigh_subscription(existing, weight.max(1));
            }
            return Ok(());
        }
        let limit = self.leaf.opts.max_subscriptions;
        if limit > 0 && self.subs.len() >= limit {
            self.send_err("'maximum subscriptions exceeded'");
            return Err(Ended::TooManySubscriptions { limit });
        }
        let sub = Subscription::new(
            SubTarget::Leaf(self.handle.clone()),
            subject,
            queue,
            &key,
            None,
        );
        sub.weight.store(weight.max(1), Ordering::Relaxed);
        let sub = SubRef(Arc::new(sub));
        if self.account.add_subscription(&sub).is_ok() {
            self.entry.note_interest(&key, true);
            self.subs.insert(key.into_boxed_slice(), sub);
        }
        Ok(())
    }

    /// `LS- subject [queue]`.
    fn on_unsub(&mut self, subject: &[u8], queue: Option<&[u8]>) {
        let mut key = subject.to_vec();
        if let Some(q) = queue {
            key.push(b' ');
            key.extend_from_slice(q);
        }
        if let Some(sub) = self.subs.remove(key.as_slice()) {
            self.entry.note_interest(&key, false);
            if sub.0.finish() {
                self.account.remove_subscription(&sub);
            }
        }
    }

    /// `LMSG`/`HMSG`: route to local subscriptions and other links, never back to this one.
    fn on_msg(&mut self, msg: Msg<'_>, queues: QueueNames<'_>) {
        if let Some(peer) = self.handle.leaf() {
            let size = msg.headers.map_or(0, <[u8]>::len) + msg.payload.len();
            peer.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
            peer.stats
                .bytes_in
                .fetch_add(size as u64, Ordering::Relaxed);
        }
        if self.import_denied(msg.subject) {
            if !self.solicited() {
                // A leaf publishing where its permissions do not let it: dropped, and told
                // (nats-server takes it; its leaves keep to their permissions by themselves).
                let shown = String::from_utf8_lossy(msg.subject);
                let text = format!("Permissions Violation for Publish to \"{shown}\"");
                self.note_violation(&text, "leaf message refused by its permissions");
                self.send_err(&format!("'{text}'"));
            }
            return;
        }
        let Some(result) = self.cache.lookup(&self.account.sublist, msg.subject) else {
            return;
        };
        if result.is_empty() {
            return;
        }
        self.fanout
            .fan_out_from_link(&self.account, &result, &msg, self.handle.id, queues);
    }

    /// Whether a message on `subject` from the peer is dropped: the link's rules (a remote's
    /// `deny_imports`, an accepted leaf's `publish` permissions) cover it, or, for a request
    /// to this server's JetStream domain API, the `$JS.API.` subject it calls (see
    /// [`crate::server::jsdomain`]).
    fn import_denied(&self, subject: &[u8]) -> bool {
        let deny = self.deny();
        deny.limits_imports()
            && (deny.import_denied(subject)
                || self
                    .shared
                    .js_domain
                    .get()
                    .and_then(|d| d.resolve(subject))
                    .is_some_and(|api| deny.import_denied(&api)))
    }

    /// Logs a permissions violation on this link (`text`, the `-ERR` text): the first one at
    /// warning level, the others at debug level (a peer repeating one must not flood the log).
    fn note_violation(&mut self, text: &str, what: &str) {
        self.violations += 1;
        if self.violations == 1 {
            warn!(lid = self.handle.id, remote = ?self.remote_name, error = ?text, "{what} (further ones on this link are logged at debug level)");
        } else {
            debug!(lid = self.handle.id, remote = ?self.remote_name, error = ?text, "{what}");
        }
    }

    /// Leaves the interest table and removes every subscription the peer announced.
    fn teardown(&mut self) {
        if self.registered {
            self.entry.set_link(None);
            lock_interest(&self.leaf.interest(self.account.name())).remove_link(self.handle.id);
        }
        if let Some(lds) = self.lds.take() {
            self.leaf.drop_lds(&lds);
        }
        for (_, sub) in self.subs.drain() {
            if sub.0.finish() {
                self.account.remove_subscription(&sub);
            }
        }
        self.entry.clear_interest();
        self.fanout.flush();
    }

    fn send_err(&mut self, text: &str) {
        self.fanout
            .send_with(&self.handle, |b| proto::write_err(b, text));
    }
}
