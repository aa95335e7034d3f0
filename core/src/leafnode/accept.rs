//! The hub side: accepting leafnode connections on the `leafnodes.listen` address.
//!
//! Each accepted connection runs [`link::serve`](super::link::serve) with
//! [`Side::Accepted`]: INFO first (with a non-zero `client_id`, `leafnode_urls`, a nonce and
//! `info_on_connect`, as a nats-server 2.9 leaf requires), CONNECT required before anything
//! else and authenticated against `leafnodes.authorization` (a user and password, a token, or
//! a user nkey whose signature of the INFO's nonce is checked, see
//! [`nkey`](super::nkey)), then INFO `connect_info` and the `LS+` burst. A failed
//! authentication is answered with `-ERR 'Authorization Violation'` and the connection
//! closes. With `leafnodes.tls` the INFO is followed by the TLS handshake (or preceded
//! by it, with `handshake_first`), and a connection that fails it is closed and logged.
//!
//! [`serve_one`] serves one accepted connection, from this listener or from the websocket
//! listener's `/leafnode` path (a leaf over WebSocket: see [`crate::websocket`]; those count
//! against the client port's `max_connections` instead).
//! In lame duck mode the listener closes (a leaf must move to another member, not come
//! back here); the established links run on until the lame duck schedule closes them.
//!
//! At most `leafnodes.max_connections` connections are served at once, handshakes
//! included; one more is answered `-ERR 'maximum connections exceeded'` (the client port's
//! text) and closed, with a warning at most every 10 s. Until a leaf has authenticated it
//! may send nothing but `CONNECT` and no payload at all (see [`link`](super::link)).
//!
//! A listener without `leafnodes.authorization` checks leaves against the client users (as
//! nats-server does, but refusing a leaf without credentials); without those either it is
//! open: any leaf may read all traffic, publish anywhere and call the JetStream API. Either
//! is logged as a warning at start when the listener is reachable from other hosts (bound to
//! anything but a loopback address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{error, info, warn};

use super::link::{self, Side};
use super::{LeafOptions, LeafState};
use crate::server::client::refuse;
use crate::server::Shared;
use leaf_proto::printable::printable;

/// How often refused connections are reported in the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts leafnode connections until `stop` turns true. Every connection task holds a clone
/// of `done`, so the server can wait for them at shutdown.
pub async fn run(
    shared: Arc<Shared>,
    leaf: Arc<LeafState>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    if let Ok(addr) = listener.local_addr() {
        warn_if_open(&leaf.opts, addr);
        info!(%addr, "listening for leafnode connections");
    }
    let mut backoff = Duration::from_millis(5);
    let slots = Arc::new(Semaphore::new(leaf.opts.max_connections));
    let mut refused = 0u64;
    let mut last_report: Option<Instant> = None;
    let mut lame_duck = shared.lame_duck.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = crate::process::signals::entered(&mut lame_duck) => {
                // No leaf comes back here: it would be closed again within the lame duck
                // duration, and its uplinks would resynchronise twice.
                info!("lame duck mode: the leafnode listener is closed");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        refused += 1;
                        if last_report.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                            warn!(%peer, refused, max = leaf.opts.max_connections,
                                  "maximum leafnode connections exceeded, refusing");
                            last_report = Some(Instant::now());
                        }
                        tokio::spawn(refuse(stream, "'maximum connections exceeded'"));
                        continue;
                    };
                    let shared = shared.clone();
                    let leaf = leaf.clone();
                    let stop = stop.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        serve_one(shared, leaf, link::Transport::Tcp(stream), peer, stop).await;
                        drop(permit);
                        drop(done);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "leafnode accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Serves one accepted leafnode connection (from this listener, or from the websocket
/// listener's `/leafnode` path) until it ends: its status entry while it lives, a log line
/// when it ends.
pub(crate) async fn serve_one(
    shared: Arc<Shared>,
    leaf: Arc<LeafState>,
    transport: link::Transport,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let entry = leaf.add_accepted(peer.to_string());
    let outcome = link::serve(
        shared.clone(),
        leaf.clone(),
        transport,
        peer,
        Side::Accepted,
        entry.clone(),
        stop,
    )
    .await;
    let ended = outcome.ended.to_string();
    let reason = printable(&ended);
    if shared.in_lame_duck() && matches!(outcome.ended, link::Ended::WriterClosed) {
        info!(%peer, "leafnode connection closed: lame duck mode");
    } else if outcome.ended.is_loop() {
        error!(%peer, %reason, "leafnode connection closed");
    } else if outcome.established && !outcome.ended.is_too_many_subscriptions() {
        info!(%peer, %reason, "leafnode connection closed");
    } else {
        warn!(%peer, %reason, "leafnode connection refused");
    }
    leaf.remove_accepted(&entry);
}

/// Warns when the listener at `addr` takes leaves from other hosts without credentials of
/// their own: open (anybody), or checked against the client users only.
fn warn_if_open(opts: &LeafOptions, addr: SocketAddr) {
    if addr.ip().is_loopback() {
        return;
    }
    if !opts.auth_required() {
        warn!(
            %addr,
            "the leafnode listener is open: any leaf that connects can read all traffic, \
             publish to any subject and call the JetStream API; set leafnodes.authorization \
             (users with permissions) or listen on a loopback address"
        );
    } else if opts.clients_auth {
        warn!(
            %addr,
            "the leafnode listener has no leafnodes.authorization: leaves log in with the \
             client users' credentials and get their permissions; give leaves their own users \
             in leafnodes.authorization"
        );
    }
}
