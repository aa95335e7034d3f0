//! The leaf side: one task per `leafnodes.remotes` entry, connecting to the hub and
//! reconnecting forever.
//!
//! Each round tries the remote's URLs in a fresh random order. Between attempts the task
//! waits with exponential backoff and jitter: the ceiling starts at 100 ms and doubles up to
//! `reconnect_max` (10 s by default); the wait is drawn uniformly from the upper half of the
//! ceiling, so many leaves restarted together do not reconnect in lockstep. A link that was up
//! resets the backoff. After a loop was detected the wait is 30 s, as nats-server does.
//! Every (re)connection re-sends the whole interest set (the interest table's burst).
//! The leafnode URLs a hub announces (`leafnode_urls`: the other servers of its cluster) are
//! tried after the configured URLs, with the first configured URL's scheme, credentials and
//! TLS settings, so a leaf configured with one server of a hub cluster fails over to the
//! others. They are a fallback only: after a link ends, the next round starts again with
//! the configured URLs.
//! A failed TLS handshake (a certificate that does not verify, TLS on one side only) is a
//! failed attempt like any other: logged, recorded in the link status, retried. So is a
//! refused login (`-ERR 'Authorization Violation'`): a remote with an nkey seed or a creds
//! file signs the nonce of each hub INFO anew (see [`super::nkey`]).
//! A hub that enters lame duck mode (INFO `ldm: true`, see `crate::process::signals`) is left
//! at once: the link closes and the next round tries the other URLs (the configured ones
//! and those the lame duck INFO announced) and leaves that hub's URL out (unless it is the
//! only one), so the leaf is on another member long before the hub would close it. Its
//! uplinks resume on the new link as after any reconnect (exactly once: see the leaf's
//! DESIGN.md).
//! A remote with `ws://`/`wss://` URLs dials the hub's websocket port and upgrades the TCP
//! connection (TLS first for `wss://`) within the dial timeout, at least 2 s, before the
//! link starts (see [`crate::websocket::dial`]); a failed upgrade is a failed attempt too. A
//! WebSocket link learns no other URLs from the hub (see [`super::link`]).
//! Each task has its own stop switch ([`RemoteTask`]): the server's shutdown stops them all,
//! a reload stops one to start it again with new settings (see
//! [`crate::server::Shared::set_remote`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::link::{self, Side};
use super::{
    ClientTls, LeafState, LinkDeny, LinkEntry, RemoteAuth, RemoteOptions, RemoteUrl, RECONNECT_MIN,
};
use crate::server::{Account, Shared};
use leaf_proto::printable::printable;

/// How long a stopped remote task gets to close its link before it is aborted.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// The wait before attempt number `failures` (0-based) with the ceiling capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let ceiling = RECONNECT_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(max.max(RECONNECT_MIN));
    let half = ceiling / 2;
    let extra_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(fastrand::u64(..=extra_ms))
}

/// A running remote task and its stop switch.
pub(crate) struct RemoteTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    entry: Arc<LinkEntry>,
}

impl RemoteTask {
    /// Tells the task to stop (its link, if up, is closed) without waiting for it.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the task and waits until it has ended (aborting it after [`STOP_LIMIT`]).
    pub(crate) async fn stop(mut self) {
        self.signal_stop();
        if tokio::time::timeout(STOP_LIMIT, &mut self.handle)
            .await
            .is_err()
        {
            warn!("a leafnode remote task did not stop in time; aborting it");
            self.handle.abort();
            let _ = (&mut self.handle).await;
            self.entry.set_link(None);
        }
    }
}

/// Starts a task keeping `remote` connected, with its status in `entry`; it holds `done`
/// until it ends.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    leaf: Arc<LeafState>,
    remote: RemoteOptions,
    entry: Arc<LinkEntry>,
    done: mpsc::Sender<()>,
) -> RemoteTask {
    let (stop, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(run(shared, leaf, remote, entry.clone(), stop_rx, done));
    RemoteTask {
        stop,
        handle,
        entry,
    }
}

/// Keeps `remote` connected until `stop` turns true (or its sender is dropped).
async fn run(
    shared: Arc<Shared>,
    leaf: Arc<LeafState>,
    remote: RemoteOptions,
    entry: Arc<LinkEntry>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let RemoteOptions {
        urls: configured,
        deny,
        tls,
        auth,
        account,
    } = remote;
    // The configuration names only accounts the server has; the global one otherwise.
    let account = account
        .as_deref()
        .and_then(|name| shared.accounts.get(name))
        .unwrap_or_else(|| shared.global().clone());
    let max = leaf.opts.reconnect_max;
    let mut failures: u32 = 0;
    // The hub that entered lame duck mode: not tried in the next round.
    let mut lame_duck: Option<RemoteUrl> = None;
    loop {
        let mut urls = configured.clone();
        fastrand::shuffle(&mut urls);
        urls.extend(discovered_urls(&configured, &entry.discovered()));
        if let Some(left) = lame_duck.take() {
            avoid(&mut urls, &left);
        }
        let mut extra_delay = None;
        for url in &urls {
            if *stop.borrow() {
                return;
            }
            let how = How {
                deny: &deny,
                tls: tls.as_ref(),
                auth: auth.as_ref(),
                account: &account,
            };
            match attempt(&shared, &leaf, url, how, &entry, &stop).await {
                Attempt::Established => {
                    // Start again from the configured URLs: an announced one is only a
                    // fallback (it may bypass a proxy or a load balancer the user put there).
                    failures = 0;
                    break;
                }
                Attempt::LameDuck => {
                    failures = 0;
                    lame_duck = Some(url.clone());
                    break;
                }
                Attempt::Failed(delay) => {
                    failures = failures.saturating_add(1);
                    extra_delay = extra_delay.max(delay);
                }
                Attempt::Stopped => {
                    drop(done);
                    return;
                }
            }
        }
        let wait = backoff(failures.saturating_sub(1), max).max(extra_delay.unwrap_or_default());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    drop(done);
}

/// The result of one connection attempt.
/// The announced URLs that are not configured already, as URLs like the first configured one.
fn discovered_urls(configured: &[RemoteUrl], announced: &[String]) -> Vec<RemoteUrl> {
    let Some(template) = configured.first() else {
        return Vec::new();
    };
    let mut out: Vec<RemoteUrl> = Vec::new();
    for a in announced {
        let Some(url) = template.sibling(a) else {
            continue;
        };
        let known = |u: &RemoteUrl| u.host == url.host && u.port == url.port;
        if !configured.iter().any(known) && !out.iter().any(known) {
            out.push(url);
        }
    }
    fastrand::shuffle(&mut out);
    out
}

/// Leaves `left` (a hub in lame duck mode) out of `urls`, unless it is the only one.
fn avoid(urls: &mut Vec<RemoteUrl>, left: &RemoteUrl) {
    let other = |u: &RemoteUrl| u.host != left.host || u.port != left.port;
    if urls.iter().any(other) {
        urls.retain(other);
    }
}

enum Attempt {
    /// The link was up (and has now ended).
    Established,
    /// The link was up and the hub entered lame duck mode.
    LameDuck,
    /// It never came up; wait at least this long if `Some`.
    Failed(Option<Duration>),
    /// The server is stopping.
    Stopped,
}

/// How a remote's links are set up: deny lists, TLS, authentication.
#[derive(Clone, Copy)]
struct How<'a> {
    deny: &'a Arc<LinkDeny>,
    tls: Option<&'a Arc<ClientTls>>,
    auth: Option<&'a Arc<RemoteAuth>>,
    account: &'a Arc<Account>,
}

async fn attempt(
    shared: &Arc<Shared>,
    leaf: &Arc<LeafState>,
    url: &RemoteUrl,
    how: How<'_>,
    entry: &Arc<LinkEntry>,
    stop: &watch::Receiver<bool>,
) -> Attempt {
    let dial = tokio::time::timeout(leaf.opts.dial_timeout, TcpStream::connect(url.addr())).await;
    let stream = match dial {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            warn!(url = %url, error = %e, "cannot connect to leafnode hub");
            entry.down(format!("connect failed: {e}"));
            return Attempt::Failed(None);
        }
        Err(_) => {
            warn!(url = %url, "connecting to leafnode hub timed out");
            entry.down("connect timed out".into());
            return Attempt::Failed(None);
        }
    };
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], url.port)));
    let transport = match transport(shared, leaf, url, how, stream).await {
        Ok(transport) => transport,
        Err(e) => {
            warn!(url = %url, error = %e, "cannot connect to leafnode hub");
            entry.down(e);
            return Attempt::Failed(None);
        }
    };
    let outcome = link::serve(
        shared.clone(),
        leaf.clone(),
        transport,
        peer,
        Side::Solicited {
            url: url.clone(),
            deny: how.deny.clone(),
            tls: how.tls.cloned(),
            auth: how.auth.cloned(),
            account: how.account.clone(),
        },
        entry.clone(),
        stop.clone(),
    )
    .await;
    let reason = outcome.ended.to_string();
    entry.down(reason.clone());
    let reason = printable(&reason);
    if matches!(outcome.ended, link::Ended::Shutdown) {
        return Attempt::Stopped;
    }
    if matches!(outcome.ended, link::Ended::LameDuck) {
        info!(url = %url, "leafnode hub entered lame duck mode; moving to another server of its cluster");
        return Attempt::LameDuck;
    }
    if let Some(delay) = outcome.ended.reconnect_delay() {
        error!(
            url = %url,
            %reason,
            "leafnode link to hub closed; reconnecting in {}s",
            delay.as_secs()
        );
        return Attempt::Failed(Some(delay));
    }
    if outcome.established {
        info!(url = %url, %reason, "leafnode link to hub disconnected; reconnecting");
        Attempt::Established
    } else {
        error!(url = %url, %reason, "leafnode link to hub failed; will retry");
        Attempt::Failed(None)
    }
}

/// What the link runs on: the TCP stream, or for a `ws://`/`wss://` URL a WebSocket
/// upgraded on it (TLS first for `wss://`) within the dial timeout.
async fn transport(
    shared: &Shared,
    leaf: &LeafState,
    url: &RemoteUrl,
    how: How<'_>,
    stream: TcpStream,
) -> Result<link::Transport, String> {
    if !url.ws {
        return Ok(link::Transport::Tcp(stream));
    }
    #[cfg(feature = "websocket")]
    {
        let local = stream.local_addr().ok();
        let _ = stream.set_nodelay(true);
        let limit = crate::websocket::stream::message_limit(
            shared.opts.max_payload,
            shared.opts.max_control_line,
        );
        let upgrade = crate::websocket::dial::connect(url, stream, how.tls.map(|t| &**t), limit);
        let ws = tokio::time::timeout(leaf.opts.dial_timeout.max(HANDSHAKE), upgrade)
            .await
            .map_err(|_| "websocket upgrade timed out".to_owned())??;
        Ok(link::Transport::Ws {
            stream: Box::new(ws),
            local,
            tls: url.tls,
        })
    }
    #[cfg(not(feature = "websocket"))]
    {
        let _ = (shared, leaf, how, stream);
        Err(crate::websocket::settings::NOT_BUILT.to_owned())
    }
}

/// The least time given to a WebSocket upgrade (TLS included), as nats-server's leafnode
/// INFO wait.
#[cfg(feature = "websocket")]
const HANDSHAKE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_urls_extend_the_configured_ones() {
        let configured = vec![RemoteUrl::parse("nats-leaf://u:p@127.0.0.1:7422").unwrap()];
        let announced = vec![
            "127.0.0.1:7422".to_owned(),
            "127.0.0.1:7423".to_owned(),
            "127.0.0.1:7423".to_owned(),
            "garbage".to_owned(),
        ];
        let found = discovered_urls(&configured, &announced);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].port, 7423);
        assert_eq!(found[0].user.as_deref(), Some("u"));
        assert!(discovered_urls(&[], &announced).is_empty());
    }

    #[test]
    fn a_hub_in_lame_duck_mode_is_left_out_unless_it_is_the_only_one() {
        let a = RemoteUrl::parse("nats-leaf://127.0.0.1:7422").unwrap();
        let b = RemoteUrl::parse("nats-leaf://127.0.0.1:7423").unwrap();
        let mut urls = vec![a.clone(), b.clone(), a.clone()];
        avoid(&mut urls, &a);
        assert_eq!(urls.len(), 1);
        assert_eq!(urls[0].port, 7423);
        let mut alone = vec![a.clone()];
        avoid(&mut alone, &a);
        assert_eq!(alone.len(), 1);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            let first = backoff(0, max);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(2, max);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(40, max);
            assert!(late >= Duration::from_secs(5) && late <= max);
        }
        assert!(backoff(3, Duration::from_millis(1)) <= RECONNECT_MIN);
    }
}
