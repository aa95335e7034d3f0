//! The HTTP monitoring port (`http_port`, `-m`): JSON status pages with nats-server's names
//! where nats-server has the page.
//!
//! * `/healthz`: `{"status":"ok"}` while the server runs and its JetStream store answers
//!   (503 with the problem otherwise); `{"status":"degraded","quarantined":[...]}` (still
//!   200: everything else is served) while store records that could not be read are in
//!   quarantine (`/jsz` lists them with the reasons);
//! * `/varz`, `/connz` (`?limit=&offset=`), `/subsz`, `/jsz`: nats-server's pages, with its
//!   field names for what this server has (`/varz`'s `leaf`: the leafnode listener and each
//!   remote's `urls` as `host:port`, as nats-server shows them: never credentials);
//! * `/metrics`: the Prometheus text format (connections, traffic, slow consumers, streams,
//!   leafnode links, and the binary's own families);
//! * `/leafz`: the leafnode links, shaped as nats-server's `/leafz` (each accepted link's
//!   `account`, `subscriptions` and `rtt`, the round trip of the last keepalive ping, shown
//!   from the first one on, `ping_interval` after the link came up; `?subs=1` lists the
//!   subscriptions, `?acc=NAME` keeps one account's links);
//! * `/connz` filters and sorting as nats-server ([`connz`]: `acc`, `sort`, `state`, `subs`,
//!   `cid`, `user`; a bad value is a 400 with the error);
//! * `/accountz` (`?acc=NAME`: one account's details) and `/accstatz` (`?unused=1`: idle
//!   accounts too), in nats-server's shapes ([`accountz`]);
//! * a binary's own pages and metrics, through [`Pages`] (leafd: `/uplinkz` and `/sourcesz`).
//!
//! A deliberately small HTTP/1.1 server: `GET` only, one request per connection. It binds to
//! the client listener's host (loopback by default). Nothing a client does can hold it:
//! at most [`MAX_CONNECTIONS`] connections are served at once (one more is answered
//! `503 Service Unavailable` and closed; past [`MAX_REFUSING`] refusals in progress, closed at
//! once), the request head is at most [`MAX_REQUEST`] bytes and must arrive within
//! [`REQUEST_TIMEOUT`] in all, however it trickles in (a slowloris is answered `408 Request
//! Timeout` and dropped; an oversized or cut-off head `400`), and the whole response must
//! be taken within [`WRITE_TIMEOUT`] (a client that asks for `/connz` and never reads is
//! dropped).
//!
//! With `https_port` instead of `http_port` the same pages are served over TLS with the
//! certificate of the `tls` table (no client certificate asked for, as nats-server); the
//! TLS handshake must complete within [`REQUEST_TIMEOUT`] too (its own deadline) and a
//! connection that does not speak TLS is closed. Monitoring is no hot path: a connection is
//! a boxed stream, plain or TLS.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crate::tls::TlsAcceptor;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::leafnode::{LeafState, LinkStatus};
use crate::server::Shared;

pub mod accountz;
pub mod connz;

/// Longest request head accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its whole request head (a deadline for all its reads, not a
/// timeout per read: a slowloris sending a byte a second does not reset it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client gets to take the whole response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once: monitoring is a few scrapers and an operator, and each page
/// is built whole in memory (`/connz` lists up to 1024 connections).
pub const MAX_CONNECTIONS: usize = 16;
/// Connections being refused at once (answered 503 within a second); more are closed unanswered.
pub const MAX_REFUSING: usize = 64;
/// How long a refused connection gets to read its 503.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the pages read.
#[derive(Clone)]
pub struct Sources {
    /// The server.
    pub shared: Weak<Shared>,
    /// Its leafnode links, if any are configured.
    pub leaf: Option<Arc<LeafState>>,
    /// JetStream of the global account, if it has one.
    pub jetstream: Option<crate::jetstream::JetStream>,
    /// Every account's JetStream (the global one included), when the server has JetStream.
    pub jetstreams: Option<Arc<crate::jetstream::accounts::AccountJetStreams>>,
    /// The binary's own pages, if it has any.
    pub pages: Option<Arc<dyn Pages>>,
    /// The configured accounts that have a JetStream of their own (`/accountz`).
    pub js_accounts: Vec<String>,
}

/// Pages and metrics a binary adds to the shared ones (leafd: its uplinks and gateway
/// sources).
pub trait Pages: Send + Sync {
    /// The paths served (`/uplinkz`), for the log line.
    fn paths(&self) -> &'static [&'static str];

    /// The JSON of page `path` (one of [`Pages::paths`], trailing `/` removed), or `None` when
    /// it is not one of these; `server_id` and `now` (RFC 3339) head every page.
    fn page(&self, path: &str, server_id: &str, now: &str) -> Option<Value>;

    /// Appends the binary's metric families to `/metrics`.
    fn metrics(&self, out: &mut Metrics);

    /// Adds the binary's own blocks to `/varz` (hubd: `cluster`, `routes`); nothing by
    /// default.
    fn varz(&self, _varz: &mut Value) {}

    /// Adds the binary's own blocks to `/jsz` (hubd: `meta_cluster`); nothing by default.
    fn jsz(&self, _jsz: &mut Value) {}

    /// Why the server is not ready (`/healthz` answers 503 with it), when the binary knows
    /// (hubd: a clustered JetStream without a meta leader); `None` by default.
    fn unready(&self) -> Option<String> {
        None
    }
}

/// A bound monitoring listener.
pub struct Monitor {
    listener: TcpListener,
    sources: Sources,
    /// HTTPS (`https_port`): the TLS acceptor with the `tls` table's certificate.
    tls: Option<TlsAcceptor>,
}

/// One monitoring connection: a TCP stream, or a TLS stream on one.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The connection on `stream`: itself, or (HTTPS) the TLS stream once the handshake is
/// done within [`REQUEST_TIMEOUT`].
async fn open(stream: TcpStream, tls: Option<&TlsAcceptor>) -> std::io::Result<Box<dyn Conn>> {
    let Some(acceptor) = tls else {
        return Ok(Box::new(stream));
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(Box::new(tls)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake not done in time",
        )),
    }
}

impl Monitor {
    /// Binds `host:port`; with `tls`, the port serves HTTPS.
    pub async fn bind(
        host: &str,
        port: u16,
        sources: Sources,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Monitor> {
        let listener = crate::listen::bind((host, port)).await?;
        Ok(Monitor {
            listener,
            sources,
            tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        if let Some(addr) = self.local_addr() {
            let own = self.sources.pages.as_ref().map_or(&[][..], |p| p.paths());
            let pages = [
                "/healthz",
                "/varz",
                "/connz",
                "/subsz",
                "/jsz",
                "/leafz",
                "/accountz",
                "/accstatz",
            ]
            .iter()
            .chain(own)
            .chain(&["/metrics"])
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            info!(%addr, scheme, "monitoring listening (GET {pages})");
        }
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let mut reported = false;
        loop {
            let Ok((stream, peer)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if !reported {
                    warn!(%peer, max = MAX_CONNECTIONS, "too many monitoring connections, refusing");
                    reported = true;
                }
                // Unanswered (closed at once) when too many refusals are in progress already.
                if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
                            refuse(open(stream, tls.as_ref()).await?).await
                        })
                        .await;
                        drop(refusal);
                    });
                }
                continue;
            };
            reported = false;
            let sources = self.sources.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let served = match open(stream, tls.as_ref()).await {
                    Ok(stream) => serve(stream, &sources).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    debug!(error = %e, "monitoring request failed");
                }
                drop(slot);
            });
        }
    }
}

/// Answers a connection over [`MAX_CONNECTIONS`] with 503, then waits for the client to
/// close (reading what it sent, so the answer is not lost to a reset).
async fn refuse(mut stream: Box<dyn Conn>) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&json!({ "error": "too many monitoring connections" }))
        .unwrap_or_default();
    write_response(
        &mut stream,
        503,
        "Service Unavailable",
        "application/json",
        &body,
    )
    .await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn serve(mut stream: Box<dyn Conn>, sources: &Sources) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await;
    if read.is_err() {
        return respond_error(
            &mut stream,
            408,
            "Request Timeout",
            "request not received in time",
        )
        .await;
    }
    if !matches!(read, Ok(Ok(true))) {
        return respond_error(&mut stream, 400, "Bad Request", "bad request").await;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond_error(&mut stream, 405, "Method Not Allowed", "only GET is served").await;
    }
    match page(target, sources) {
        Some(Page::Json(200, body)) => respond(&mut stream, 200, "OK", &body).await,
        Some(Page::Json(400, body)) => respond(&mut stream, 400, "Bad Request", &body).await,
        Some(Page::Json(code, body)) => {
            respond(&mut stream, code, "Service Unavailable", &body).await
        }
        Some(Page::Text(text)) => {
            respond_raw(
                &mut stream,
                200,
                "OK",
                "text/plain; version=0.0.4",
                text.as_bytes(),
            )
            .await
        }
        None => respond_error(&mut stream, 404, "Not Found", "no such page").await,
    }
}

/// A page's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    /// JSON with a status code.
    Json(u16, Value),
    /// Prometheus text.
    Text(String),
}

/// The answer for `target` (a path with an optional query), `None` for an unknown page.
pub fn page(target: &str, sources: &Sources) -> Option<Page> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let shared = sources.shared.upgrade();
    let now = leaf_proto::time::rfc3339(leaf_proto::time::now_ns());
    let server_id = shared
        .as_ref()
        .map(|s| s.server_id.clone())
        .unwrap_or_default();
    let json = |v: Value| Some(Page::Json(200, v));
    // A bad option: 400 with the reason, as nats-server.
    let checked = |v: Result<Value, String>| match v {
        Ok(v) => Some(Page::Json(200, v)),
        Err(e) => Some(Page::Json(400, json!({ "error": e }))),
    };
    match path.trim_end_matches('/') {
        "/healthz" => Some(healthz(
            sources,
            query_pairs(query).any(|(k, v)| k == "js-enabled-only" && v != "false" && v != "0"),
        )),
        "/varz" => json(varz(sources, &now)),
        "/connz" => checked(
            connz::ConnzOptions::from_query(query).and_then(|o| connz::connz(sources, &o, &now)),
        ),
        "/subsz" => json(subsz(sources, &now)),
        "/jsz" => json(jsz(sources, &now)),
        "/metrics" => Some(Page::Text(metrics(sources))),
        "/leafz" => checked(LeafzOptions::from_query(query).map(|o| leafz(sources, &o, &now))),
        "/accountz" => {
            let acc = query_pairs(query)
                .find(|(k, _)| k == "acc")
                .map(|(_, v)| v)
                .unwrap_or_default();
            checked(accountz::accountz(sources, &acc, &now))
        }
        "/accstatz" => checked(accountz::accstatz_query(sources, query, &now)),
        other => sources
            .pages
            .as_ref()
            .and_then(|p| p.page(other, &server_id, &now))
            .map(|v| Page::Json(200, v)),
    }
}

/// The status of every leafnode link (none without leafnode links).
fn link_status(sources: &Sources) -> Vec<LinkStatus> {
    sources
        .leaf
        .as_ref()
        .map(|l| l.status())
        .unwrap_or_default()
}

/// The pairs of a URL query, percent-decoded (`+` is a space).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// `%XX` and `+` decoded; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/leafz`'s options (nats-server's `LeafzOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafzOptions {
    /// List each link's subscriptions (`subs=1`).
    pub subscriptions: bool,
    /// Only the links of this account (`acc=NAME`; empty: all).
    pub account: String,
}

impl LeafzOptions {
    /// The options of an HTTP query.
    pub fn from_query(query: &str) -> Result<LeafzOptions, String> {
        let mut o = LeafzOptions::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "subs" => {
                    o.subscriptions = match v.as_str() {
                        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                        other => {
                            return Err(format!("Error decoding boolean for 'subs': {other:?}"))
                        }
                    }
                }
                "acc" => o.account = v,
                _ => {}
            }
        }
        Ok(o)
    }
}

/// `d` as Go prints a `time.Duration` (`168µs`, `1.5ms`, `2s`), as nats-server's `rtt`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let (unit, scale) = match ns {
        0..=999 => return format!("{ns}ns"),
        1_000..=999_999 => ("µs", 1_000),
        1_000_000..=999_999_999 => ("ms", 1_000_000),
        _ => ("s", 1_000_000_000),
    };
    let (whole, frac) = (ns / scale, ns % scale);
    if frac == 0 {
        return format!("{whole}{unit}");
    }
    let digits = scale.to_string().len() - 1;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
}

/// `/subsz`: the subscription count.
pub(crate) fn subsz(sources: &Sources, now: &str) -> Value {
    let shared = sources.shared.upgrade();
    json!({
        "server_id": shared.as_ref().map(|s| s.server_id.clone()).unwrap_or_default(),
        "now": now,
        "num_subscriptions": shared.as_ref().map_or(0, |s| s.accounts.subscription_count()),
    })
}

/// `/leafz`: the leafnode links (connected ones as nats-server lists them, plus the remotes).
pub(crate) fn leafz(sources: &Sources, opts: &LeafzOptions, now: &str) -> Value {
    let server_id = sources
        .shared
        .upgrade()
        .map(|s| s.server_id.clone())
        .unwrap_or_default();
    let links = link_status(sources);
    let leafs: Vec<Value> = links
        .iter()
        .filter(|l| l.connected)
        .filter(|l| opts.account.is_empty() || l.account == opts.account)
        .map(|l| {
            let (ip, port) = split_host_port(&l.url);
            let mut leaf = json!({
                "name": l.remote_server,
                "is_spoke": l.solicited,
                "account": l.account,
                "ip": ip,
                "port": port,
                "in_msgs": l.msgs_in,
                "out_msgs": l.msgs_out,
                "in_bytes": l.bytes_in,
                "out_bytes": l.bytes_out,
                "subscriptions": l.subscriptions.len(),
                "connected_since": l.since.map(system_rfc3339),
                "reconnects": l.reconnects,
                "tls": l.tls,
            });
            if let Some(rtt) = l.rtt {
                leaf["rtt"] = json!(go_duration(rtt));
            }
            if opts.subscriptions {
                leaf["subscriptions_list"] = json!(l.subscriptions);
            }
            leaf
        })
        .collect();
    let remotes: Vec<Value> = links
        .iter()
        .filter(|l| l.solicited)
        .map(|l| {
            json!({
                "url": l.url,
                "connected": l.connected,
                "since": l.since.map(system_rfc3339),
                "reconnects": l.reconnects,
                "tls": l.tls,
                "last_error": l.last_error,
            })
        })
        .collect();
    json!({
        "server_id": server_id,
        "now": now,
        "leafnodes": leafs.len(),
        "leafs": leafs,
        "remotes": remotes,
    })
}

/// `/healthz`: 200 `{"status":"ok"}` while the server runs and its store answers; 503 with
/// the problem otherwise. The binary's readiness ([`Pages::unready`]: hubd's meta leader) is
/// skipped with `js_enabled_only` (`?js-enabled-only=true`, as nats-server, which then only
/// checks that JetStream is enabled).
pub(crate) fn healthz(sources: &Sources, js_enabled_only: bool) -> Page {
    if sources.shared.upgrade().is_none() {
        return Page::Json(
            503,
            json!({"status": "unavailable", "error": "server stopped"}),
        );
    }
    if let Some(why) = sources
        .pages
        .as_ref()
        .filter(|_| !js_enabled_only)
        .and_then(|p| p.unready())
    {
        return Page::Json(503, json!({"status": "unavailable", "error": why}));
    }
    if let Some(js) = &sources.jetstream {
        if let Err(e) = js.check_store() {
            return Page::Json(
                503,
                json!({"status": "unavailable", "error": format!("JetStream store: {e}")}),
            );
        }
        let quarantined = js.quarantined();
        if !quarantined.is_empty() {
            let names: Vec<&str> = quarantined.iter().map(|q| q.what.as_str()).collect();
            return Page::Json(
                200,
                json!({
                    "status": "degraded",
                    "error": format!("store records quarantined (not served): {}", names.join(", ")),
                    "quarantined": names,
                }),
            );
        }
    }
    Page::Json(200, json!({"status": "ok"}))
}

/// Resident memory in bytes (from /proc), 0 where unknown.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `/varz`: the server's settings and counters, with nats-server's field names.
pub(crate) fn varz(sources: &Sources, now: &str) -> Value {
    let Some(shared) = sources.shared.upgrade() else {
        return json!({});
    };
    let o = &shared.opts;
    let st = &shared.stats;
    let totals = st.totals();
    let links = link_status(sources);
    let (mut in_msgs, mut in_bytes, mut out_msgs, mut out_bytes) = (
        totals.in_msgs,
        totals.in_bytes,
        totals.out_msgs,
        totals.out_bytes,
    );
    for l in &links {
        in_msgs += l.msgs_in;
        in_bytes += l.bytes_in;
        out_msgs += l.msgs_out;
        out_bytes += l.bytes_out;
    }
    let uptime = st.start.elapsed().unwrap_or_default();
    let mut varz = json!({
        "server_id": shared.server_id,
        "server_name": o.server_name.clone().unwrap_or_else(|| shared.server_id.clone()),
        "version": crate::server::info::NATS_FEATURE_LEVEL,
        "leaf_version": o.implementation_version,
        "implementation": o.implementation,
        "proto": 1,
        "host": shared.local_addr.ip().to_string(),
        "port": shared.local_addr.port(),
        "max_connections": o.max_connections,
        "ping_interval": o.ping_interval.as_nanos() as u64,
        "ping_max": o.ping_max,
        "auth_required": shared.auth_required(),
        "max_control_line": o.max_control_line,
        "max_payload": o.max_payload,
        "max_pending": o.max_pending,
        "write_deadline": o.write_deadline.as_nanos() as u64,
        "start": system_rfc3339(st.start),
        "now": now,
        "uptime": format!("{}s", uptime.as_secs()),
        "mem": rss_bytes(),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "connections": st.connections().len(),
        "total_connections": st.total_connections.load(Ordering::Relaxed),
        "leafnodes": links.iter().filter(|l| l.connected).count(),
        "in_msgs": in_msgs,
        "out_msgs": out_msgs,
        "in_bytes": in_bytes,
        "out_bytes": out_bytes,
        "slow_consumers": st.slow_consumers.load(Ordering::Relaxed),
        "replies_refused": st.replies_refused.count(),
        "subscriptions": shared.accounts.subscription_count(),
        "jetstream": sources.jetstream.as_ref().map(|js| json!({
            "config": { "domain": js.domain(), "max_storage": js.max_file_bytes() },
        })),
        "leaf": sources.leaf.as_deref().map_or_else(|| json!({}), leaf_varz),
        "websocket": websocket_varz(&shared),
        "system_account": shared.system.account_name(),
    });
    if let Some(pages) = &sources.pages {
        pages.varz(&mut varz);
    }
    varz
}

/// `/varz`'s `websocket`: the websocket listener as nats-server's `WebsocketOptsVarz`
/// (empty without one; `handshake_timeout` in nanoseconds, `auth_timeout` in seconds).
fn websocket_varz(shared: &crate::server::Shared) -> Value {
    let Some((addr, ws)) = &shared.websocket else {
        return json!({});
    };
    let mut varz = json!({
        "host": addr.ip().to_string(),
        "port": addr.port(),
        "handshake_timeout": ws.handshake_timeout.as_nanos() as u64,
    });
    let auth_timeout = ws.authorization.timeout.map(|t| t.as_secs_f64());
    for (key, set, value) in [
        ("no_tls", ws.no_tls, json!(true)),
        ("same_origin", ws.same_origin, json!(true)),
        ("compression", ws.compression, json!(true)),
        (
            "allowed_origins",
            !ws.allowed_origins.is_empty(),
            json!(ws.allowed_origins),
        ),
        ("auth_timeout", auth_timeout.is_some(), json!(auth_timeout)),
    ] {
        if set {
            varz[key] = value;
        }
    }
    varz
}

/// `/varz`'s `leaf`: the listener and the remotes, in nats-server's shape (`LeafNodeOptsVarz`;
/// a remote's `urls` are `host:port`, so no credentials can show).
fn leaf_varz(leaf: &LeafState) -> Value {
    let opts = &leaf.opts;
    let remotes: Vec<Value> = (0..leaf.remote_count())
        .filter_map(|i| leaf.remote_options(i))
        .map(|r| {
            let urls: Vec<String> = r.urls.iter().map(|u| u.addr()).collect();
            let mut remote = json!({ "urls": urls });
            if !r.deny.is_empty() {
                remote["deny"] = json!({
                    "exports": r.deny.exports,
                    "imports": r.deny.imports,
                });
            }
            remote
        })
        .collect();
    let mut varz = json!({ "remotes": remotes });
    if let Some(addr) = leaf.listen_addr {
        varz["host"] = json!(addr.ip().to_string());
        varz["port"] = json!(addr.port());
        varz["auth_timeout"] = json!(opts.auth_timeout.as_secs_f64());
        varz["tls_required"] = json!(opts.tls.is_some());
        varz["tls_verify"] = json!(opts.tls.as_ref().is_some_and(|t| t.verify));
    }
    varz
}

/// `/jsz`: JetStream's totals and streams, over every account that has JetStream (the global
/// one, configured accounts, accounts an operator's JWT enabled), each in `account_details`.
/// `disabled` when none has.
pub(crate) fn jsz(sources: &Sources, now: &str) -> Value {
    let server_id = sources
        .shared
        .upgrade()
        .map(|s| s.server_id.clone())
        .unwrap_or_default();
    let engines: Vec<(String, crate::jetstream::JetStream)> = match &sources.jetstreams {
        Some(all) => all.engines(),
        None => sources
            .jetstream
            .iter()
            .map(|js| {
                (
                    crate::server::account::GLOBAL_ACCOUNT.to_owned(),
                    js.clone(),
                )
            })
            .collect(),
    };
    // The server's settings: the global account's engine, else any (they share them).
    let Some(first) = sources
        .jetstream
        .as_ref()
        .or(engines.first().map(|(_, js)| js))
    else {
        return json!({ "server_id": server_id, "now": now, "disabled": true });
    };
    let (mut streams, mut consumers, mut messages, mut bytes) = (0usize, 0usize, 0u64, 0u64);
    let (mut storage, mut api) = (0u64, 0u64);
    let mut quarantined = Vec::new();
    let mut accounts = Vec::new();
    for (account, js) in &engines {
        let summaries = js.stream_summaries();
        streams += summaries.len();
        consumers += summaries.iter().map(|s| s.consumers).sum::<usize>();
        messages += summaries.iter().map(|s| s.messages).sum::<u64>();
        bytes += summaries.iter().map(|s| s.bytes).sum::<u64>();
        storage += js.store().file_size();
        api += js.api_requests();
        quarantined.extend(js.quarantined().iter().map(|q| {
            json!({
                "account": account,
                "name": q.what,
                "reason": q.reason,
                "bytes": q.bytes,
                "since": leaf_proto::time::rfc3339(q.at_ns),
            })
        }));
        let details: Vec<Value> = summaries
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "state": { "messages": s.messages, "bytes": s.bytes, "consumer_count": s.consumers },
                })
            })
            .collect();
        accounts.push(json!({ "name": account, "stream_detail": details }));
    }
    let mut jsz = json!({
        "server_id": server_id,
        "now": now,
        "quarantined": quarantined,
        "config": { "domain": first.domain(), "max_storage": first.max_file_bytes() },
        "storage": storage,
        "accounts": engines.len(),
        "streams": streams,
        "consumers": consumers,
        "messages": messages,
        "bytes": bytes,
        "api": { "total": api },
        "account_details": accounts,
    });
    if let Some(pages) = &sources.pages {
        pages.jsz(&mut jsz);
    }
    jsz
}

/// Escapes a Prometheus label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text, one metric family at a time.
#[derive(Default)]
pub struct Metrics(String);

impl AsRef<str> for Metrics {
    /// The text written so far.
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Metrics {
    /// Writes one family: its help, type and samples (label set, value).
    pub fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        use std::fmt::Write;
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    /// One family per entry of `families`, each with one sample per item labelled
    /// `key="<label_of(item)>"` (see [`labelled`]), in the order given.
    pub fn labelled_families<T>(
        &mut self,
        items: &[T],
        key: &str,
        label_of: impl Fn(&T) -> &str,
        families: &[Family<T>],
    ) {
        for f in families {
            self.family(f.0, f.1, f.2, &labelled(items, key, &label_of, f.3));
        }
    }

    /// One unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.family(name, kind, help, &[(String::new(), v as f64)]);
    }
}

/// A metric family of [`Metrics::labelled_families`]: name, type (`gauge`, `counter`), help
/// and the value of one item.
pub type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// Samples labelled `key="<label>"`, one per item.
pub fn labelled<T>(
    items: &[T],
    key: &str,
    label_of: impl Fn(&T) -> &str,
    value: impl Fn(&T) -> f64,
) -> Vec<(String, f64)> {
    items
        .iter()
        .map(|i| (format!("{{{key}=\"{}\"}}", label(label_of(i))), value(i)))
        .collect()
}

fn link_url(l: &LinkStatus) -> &str {
    &l.url
}

fn stream_name(s: &crate::jetstream::StreamSummary) -> &str {
    &s.name
}

/// The leafnode links' families, labelled by URL.
const LINK_FAMILIES: &[Family<LinkStatus>] = &[
    (
        "leafd_leafnode_connected",
        "gauge",
        "1 while the leafnode link is up.",
        |l| f64::from(u8::from(l.connected)),
    ),
    (
        "leafd_leafnode_reconnects_total",
        "counter",
        "Leafnode reconnects.",
        |l| l.reconnects as f64,
    ),
    (
        "leafd_leafnode_in_msgs_total",
        "counter",
        "Messages received over the link.",
        |l| l.msgs_in as f64,
    ),
    (
        "leafd_leafnode_out_msgs_total",
        "counter",
        "Messages sent over the link.",
        |l| l.msgs_out as f64,
    ),
];

/// The streams' families, labelled by stream name.
const STREAM_FAMILIES: &[Family<crate::jetstream::StreamSummary>] = &[
    (
        "leafd_stream_messages",
        "gauge",
        "Messages stored in the stream.",
        |s| s.messages as f64,
    ),
    (
        "leafd_stream_bytes",
        "gauge",
        "Bytes stored in the stream.",
        |s| s.bytes as f64,
    ),
];

/// `/metrics`: the Prometheus text format.
fn metrics(sources: &Sources) -> String {
    let mut m = Metrics::default();
    if let Some(shared) = sources.shared.upgrade() {
        let st = &shared.stats;
        let t = st.totals();
        m.single(
            "leafd_connections",
            "gauge",
            "Client connections open.",
            st.connections().len() as u64,
        );
        m.single(
            "leafd_connections_total",
            "counter",
            "Client connections accepted.",
            st.total_connections.load(Ordering::Relaxed),
        );
        m.single(
            "leafd_in_msgs_total",
            "counter",
            "Messages received from clients.",
            t.in_msgs,
        );
        m.single(
            "leafd_in_bytes_total",
            "counter",
            "Message bytes received from clients.",
            t.in_bytes,
        );
        m.single(
            "leafd_out_msgs_total",
            "counter",
            "Messages delivered to clients.",
            t.out_msgs,
        );
        m.single(
            "leafd_out_bytes_total",
            "counter",
            "Message bytes delivered to clients.",
            t.out_bytes,
        );
        m.single(
            "leafd_slow_consumers_total",
            "counter",
            "Clients closed as slow consumers.",
            st.slow_consumers.load(Ordering::Relaxed),
        );
        m.single(
            "leafd_replies_refused_total",
            "counter",
            "Answers dropped: the requester may not publish to the reply subject.",
            st.replies_refused.count(),
        );
        m.single(
            "leafd_subscriptions",
            "gauge",
            "Subscriptions.",
            shared.accounts.subscription_count() as u64,
        );
        m.single(
            "leafd_memory_bytes",
            "gauge",
            "Resident memory.",
            rss_bytes(),
        );
        m.single(
            "leafd_system_dropped_total",
            "counter",
            "System account advisories dropped because their queue was full.",
            shared.system.events().map_or(0, |e| e.dropped()),
        );
        let links = link_status(sources);
        m.labelled_families(&links, "url", link_url, LINK_FAMILIES);
    }
    if let Some(js) = &sources.jetstream {
        let streams = js.stream_summaries();
        m.labelled_families(&streams, "stream", stream_name, STREAM_FAMILIES);
        m.single(
            "leafd_store_file_bytes",
            "gauge",
            "Size of the JetStream store file.",
            js.store().file_size(),
        );
    }
    if let Some(pages) = &sources.pages {
        pages.metrics(&mut m);
    }
    m.0
}

/// `t` in RFC 3339 (UTC, nanoseconds), as the pages show times.
pub fn system_rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    leaf_proto::time::rfc3339(ns)
}

/// `host` and `port` of a URL or `host:port` text (the port 0 when absent).
fn split_host_port(url: &str) -> (String, u16) {
    let rest = url.rsplit("://").next().unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.trim_end_matches('/').parse().unwrap_or(0)),
        None => (rest.to_string(), 0),
    }
}

/// Answers with `{"error": message}` and status `code`.
async fn respond_error(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    code: u16,
    reason: &str,
    message: &str,
) -> std::io::Result<()> {
    respond(stream, code, reason, &json!({ "error": message })).await
}

async fn respond(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    code: u16,
    reason: &str,
    body: &Value,
) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    respond_raw(stream, code, reason, "application/json", &body).await
}

/// Sends the response within [`WRITE_TIMEOUT`]; a client that does not take it in time is
/// dropped (`TimedOut`).
async fn respond_raw(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(
        WRITE_TIMEOUT,
        write_response(stream, code, reason, content_type, body),
    )
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take the response in time",
        )
    })?
}

async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(go_duration(Duration::from_micros(168)), "168µs");
        assert_eq!(go_duration(Duration::from_nanos(168_500)), "168.5µs");
        assert_eq!(go_duration(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn host_and_port_of_link_urls() {
        assert_eq!(
            split_host_port("nats-leaf://u:[REDACTED]@hub.example:7422"),
            ("hub.example".to_string(), 7422)
        );
        assert_eq!(split_host_port("127.0.0.1:5"), ("127.0.0.1".to_string(), 5));
        assert_eq!(split_host_port("nohost"), ("nohost".to_string(), 0));
    }

    #[test]
    fn labelled_families_write_each_family_with_a_sample_per_item() {
        let items = [("a\"b", 1u64), ("c", 2)];
        let families: &[Family<(&str, u64)>] = &[
            ("x_total", "counter", "Xs.", |i| i.1 as f64),
            ("y", "gauge", "Ys.", |i| (i.1 * 10) as f64),
        ];
        let mut m = Metrics::default();
        m.labelled_families(&items, "k", |i| i.0, families);
        assert_eq!(
            m.0,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{k=\"a\\\"b\"} 1\nx_total{k=\"c\"} 2\n\
             # HELP y Ys.\n# TYPE y gauge\ny{k=\"a\\\"b\"} 10\ny{k=\"c\"} 20\n"
        );
    }

    /// A binary's page: `/ownz`, and one metric family.
    struct Own;

    impl Pages for Own {
        fn paths(&self) -> &'static [&'static str] {
            &["/ownz"]
        }

        fn page(&self, path: &str, server_id: &str, _now: &str) -> Option<Value> {
            (path == "/ownz").then(|| json!({ "server_id": server_id, "own": [] }))
        }

        fn metrics(&self, out: &mut Metrics) {
            out.single("own_total", "counter", "Own things.", 3);
        }
    }

    #[test]
    fn unknown_pages_are_none_and_healthz_is_ok() {
        let sources = Sources {
            shared: Weak::new(),
            leaf: None,
            jetstream: None,
            jetstreams: None,
            pages: Some(Arc::new(Own)),
            js_accounts: Vec::new(),
        };
        // No server behind the page: unhealthy.
        assert!(matches!(
            page("/healthz", &sources),
            Some(Page::Json(503, _))
        ));
        assert!(page("/nope", &sources).is_none());
        let Some(Page::Json(200, own)) = page("/ownz/?x=1", &sources) else {
            panic!("ownz")
        };
        assert_eq!(own["own"], json!([]));
        let Some(Page::Text(text)) = page("/metrics", &sources) else {
            panic!("metrics")
        };
        assert!(text.contains("own_total 3"), "{text}");
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
