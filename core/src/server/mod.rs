//! The NATS core server: the accept loop, per-server shared state, and graceful shutdown.
//!
//! One task per connection reads and routes (see [`client`]); one task per connection writes
//! (see [`outbound`]). There is no central router task: the task that reads a `PUB` looks the
//! subject up in the shared [`Sublist`] (through a per-connection cache) and appends the message
//! straight into each subscriber's outbound queue, so a message crosses no channel and is copied
//! at most once per subscriber (large payloads not at all).
//!
//! Every subscription change goes through [`Shared::add_subscription`],
//! [`Shared::remove_subscription`] or [`Shared::reweigh_subscription`]: with links to other
//! servers configured these also tell them (see [`Peers`]; the leafnode layer implements it,
//! this module knows nothing else of it).

pub mod client;
pub mod deny;
pub mod fanout;
pub mod info;
pub mod jsdomain;
pub mod outbound;
pub mod peers;
pub mod readbuf;
pub mod reply;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::sublist::{MatchResult, QueueGroup, Sublist, SublistError};

pub use fanout::{
    ClientHandle, ConnKind, Fanout, InternalSink, LeafPeer, LinkStats, Msg, SubRef, SubTarget,
    Subscription,
};
pub use peers::Peers;
pub use reply::{Publisher, ReplyTo};

/// Everything the server needs to know to serve clients.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `leafd` or `hubd`: reported in INFO and logs.
    pub implementation: &'static str,
    /// Our own release version.
    pub implementation_version: &'static str,
    /// The server name reported in INFO (defaults to the server id).
    pub server_name: Option<String>,
    /// Host to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// The largest payload (headers included) a client may publish.
    pub max_payload: usize,
    /// The longest control line accepted.
    pub max_control_line: usize,
    /// Per-connection limit on queued outbound bytes before it is closed as a slow consumer.
    pub max_pending: usize,
    /// How many client connections are served at once.
    pub max_connections: usize,
    /// Most subscriptions one client connection may hold (0: unlimited); past it a `SUB` is
    /// answered with `-ERR 'maximum subscriptions exceeded'`, as nats-server does.
    pub max_subscriptions: usize,
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// Unanswered pings after which the connection is closed as stale.
    pub ping_max: u32,
    /// How long one socket write may block before the client is dropped as a slow consumer.
    pub write_deadline: Duration,
    /// How long a client has to send CONNECT when authentication is required.
    pub auth_timeout: Duration,
    /// Who may connect.
    pub auth: Authenticator,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            implementation: "leafd",
            implementation_version: env!("CARGO_PKG_VERSION"),
            server_name: None,
            host: "127.0.0.1".into(),
            port: 4222,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: crate::config::DEFAULT_MAX_PENDING,
            max_connections: 64 * 1024,
            max_subscriptions: crate::config::DEFAULT_MAX_SUBSCRIPTIONS,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(2),
            auth: Authenticator::Open,
        }
    }
}

/// State shared by every connection of one server.
pub struct Shared {
    /// The options the server was started with.
    pub opts: ServerOptions,
    /// This process's server id.
    pub server_id: String,
    /// All subscriptions of all clients.
    pub sublist: Sublist<SubRef>,
    /// The address the listener is bound to.
    pub local_addr: SocketAddr,
    /// Links to other servers (leafnode links), told about every interest change; `None`
    /// when none are configured (then subscription changes take no extra lock).
    pub peers: Option<Arc<dyn Peers>>,
    pub(crate) next_client_id: AtomicU64,
    /// Set once JetStream serves this server's clients (INFO's `jetstream`).
    pub jetstream: std::sync::atomic::AtomicBool,
    /// The API of JetStream's domain, once JetStream serves one: permissions and deny lists
    /// apply to `$JS.<domain>.API.<rest>` as to `$JS.API.<rest>` too.
    pub js_domain: std::sync::OnceLock<jsdomain::DomainApi>,
    /// Connections and traffic, for monitoring.
    pub stats: stats::ServerStats,
}

impl Shared {
    /// Publishes a message from inside the server (no client connection): JetStream replies,
    /// messages arriving over a leaf link. Returns how many subscriptions it was delivered to.
    /// It never waits for slow subscribers; their own limits bound what they queue.
    ///
    /// An answer to a request goes through [`Shared::answer`] instead.
    pub fn publish(&self, msg: &Msg<'_>) -> usize {
        let result = self.sublist.matches(msg.subject);
        self.deliver(&result, msg)
    }

    /// Answers a request: publishes `headers` and `payload` on `to`'s subject, to whoever
    /// `to` allows (everyone, or only the requester: see [`reply`]). A confined answer that
    /// reaches nobody is counted and logged. Returns how many subscriptions it was delivered
    /// to.
    pub fn answer(&self, to: &ReplyTo, headers: Option<&[u8]>, payload: &[u8]) -> usize {
        let msg = Msg {
            subject: to.subject().as_bytes(),
            reply: None,
            headers,
            payload,
        };
        let result = self.sublist.matches(msg.subject);
        let delivered = match to.narrow(&result) {
            None => self.deliver(&result, &msg),
            Some(mine) => self.deliver(&mine, &msg),
        };
        if delivered == 0 && to.confined_to().is_some() {
            self.stats.replies_refused.record(to);
        }
        delivered
    }

    /// Delivers `msg` to `result` without waiting for anybody.
    fn deliver(&self, result: &MatchResult<SubRef>, msg: &Msg<'_>) -> usize {
        if result.is_empty() {
            return 0;
        }
        let mut fanout = Fanout::default();
        let delivered = fanout.fan_out(self, result, msg, None);
        fanout.flush();
        fanout.clear_stalled();
        delivered
    }

    /// Publishes a message from inside the server whose form depends on who receives it, as
    /// JetStream delivers a stored message to a consumer's deliver subject `to`: subscribers
    /// of this server get `local` (the stored subject, the ack reply); links to other servers
    /// get it under `to` (the subject the other side routes on) with the reply
    /// `linked_reply()` (made only if a link is among the receivers). A queue group with a
    /// local member stays local. Returns how many subscriptions it was delivered to.
    pub fn publish_split(
        &self,
        to: &[u8],
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        let result = self.sublist.matches(to);
        self.deliver_split(&result, to, local, linked_reply)
    }

    /// [`Shared::publish_split`] for an answer to a request (a pull request's messages): only
    /// to whoever `to` allows, as [`Shared::answer`].
    pub fn answer_split(
        &self,
        to: &ReplyTo,
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        let subject = to.subject().as_bytes();
        let result = self.sublist.matches(subject);
        let delivered = match to.narrow(&result) {
            None => self.deliver_split(&result, subject, local, linked_reply),
            Some(mine) => self.deliver_split(&mine, subject, local, linked_reply),
        };
        if delivered == 0 && to.confined_to().is_some() {
            self.stats.replies_refused.record(to);
        }
        delivered
    }

    /// Delivers as [`Shared::publish_split`] to `result` (the subscriptions matching `to`).
    fn deliver_split(
        &self,
        result: &MatchResult<SubRef>,
        to: &[u8],
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        if result.is_empty() {
            return 0;
        }
        let remote = |s: &SubRef| matches!(s.0.target, SubTarget::Leaf(_));
        let mut fanout = Fanout::default();
        let any_remote = result.plain.iter().any(remote)
            || result.queues.iter().any(|g| g.members.iter().any(remote));
        let mut delivered = 0;
        if !any_remote {
            delivered += fanout.fan_out(self, result, local, None);
        } else {
            // Queue groups stay local when they have a local member.
            let mut near = MatchResult::new();
            let mut far = MatchResult::new();
            for sub in &result.plain {
                let side = if remote(sub) { &mut far } else { &mut near };
                side.plain.push(sub.clone());
            }
            for group in &result.queues {
                let (remote_members, local_members): (Vec<SubRef>, Vec<SubRef>) =
                    group.members.iter().cloned().partition(|m| remote(m));
                let (side, members) = if local_members.is_empty() {
                    (&mut far, remote_members)
                } else {
                    (&mut near, local_members)
                };
                side.queues.push(QueueGroup {
                    name: group.name.clone(),
                    members,
                });
            }
            if !near.is_empty() {
                delivered += fanout.fan_out(self, &near, local, None);
            }
            if !far.is_empty() {
                let reply = linked_reply();
                let linked = Msg {
                    subject: to,
                    reply: Some(reply.as_bytes()),
                    headers: local.headers,
                    payload: local.payload,
                };
                delivered += fanout.fan_out(self, &far, &linked, None);
            }
        }
        fanout.flush();
        fanout.clear_stalled();
        delivered
    }

    /// Whether anything (a client, a component, a link) is subscribed to `subject`.
    pub fn has_interest(&self, subject: &[u8]) -> bool {
        !self.sublist.matches(subject).is_empty()
    }

    /// Whether an answer to `to` would reach anybody (see [`Shared::answer`]).
    pub fn has_answer_interest(&self, to: &ReplyTo) -> bool {
        let result = self.sublist.matches(to.subject().as_bytes());
        match to.narrow(&result) {
            None => !result.is_empty(),
            Some(mine) => !mine.is_empty(),
        }
    }

    /// Subscribes a component of the server to `subject` (optionally in a queue group): every
    /// matching message is handed to `sink`.
    pub fn subscribe_internal(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sink: Arc<dyn InternalSink>,
    ) -> Result<SubRef, SublistError> {
        let sub = SubRef(Arc::new(Subscription::new(
            SubTarget::Internal(sink),
            subject,
            queue,
            b"",
            None,
        )));
        self.add_subscription(&sub)?;
        Ok(sub)
    }

    /// Removes a subscription made with [`Shared::subscribe_internal`].
    pub fn unsubscribe_internal(&self, sub: &SubRef) {
        if sub.0.finish() {
            self.remove_subscription(sub);
        }
    }

    /// Adds `sub` to the sublist (the one place subscriptions are added). With peers, under
    /// their interest lock, and every link that should hear about it is told.
    pub fn add_subscription(&self, sub: &SubRef) -> Result<(), SublistError> {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            return self
                .sublist
                .insert(&s.subject, s.queue.as_deref(), sub.clone());
        };
        let mut inserted = Ok(());
        peers.announce(s, &mut || {
            inserted = self
                .sublist
                .insert(&s.subject, s.queue.as_deref(), sub.clone());
            inserted.is_ok().then(|| i64::from(s.weight()))
        });
        inserted
    }

    /// Removes `sub` from the sublist (the one place subscriptions are removed; callers mark
    /// it finished first). Returns false if it was not there.
    pub fn remove_subscription(&self, sub: &SubRef) -> bool {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            return matches!(
                self.sublist.remove(&s.subject, s.queue.as_deref(), sub),
                Ok(true)
            );
        };
        let mut removed = false;
        peers.announce(s, &mut || {
            removed = matches!(
                self.sublist.remove(&s.subject, s.queue.as_deref(), sub),
                Ok(true)
            );
            removed.then(|| -i64::from(s.weight()))
        });
        removed
    }

    /// Changes the queue weight of a link's queue subscription (a repeated `LS+` with a new
    /// weight) and tells the other links.
    pub fn reweigh_subscription(&self, sub: &SubRef, weight: u32) {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            s.weight.store(weight, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        peers.announce(s, &mut || {
            let old = s.weight.swap(weight, std::sync::atomic::Ordering::Relaxed);
            (!s.is_done()).then(|| i64::from(weight) - i64::from(old))
        });
    }
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The client listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Server {
    /// Binds the client listener, for a server without peers.
    pub async fn bind(opts: ServerOptions) -> Result<Server, ServerError> {
        Self::bind_with(opts, None).await
    }

    /// Binds the client listener, for a server linked to other servers through `peers`
    /// (bound already: see [`Peers`]).
    pub async fn bind_with(
        opts: ServerOptions,
        peers: Option<Arc<dyn Peers>>,
    ) -> Result<Server, ServerError> {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            server_id: info::new_server_id(),
            sublist: Sublist::new(),
            local_addr,
            peers,
            next_client_id: AtomicU64::new(1),
            jetstream: std::sync::atomic::AtomicBool::new(false),
            js_domain: std::sync::OnceLock::new(),
            stats: stats::ServerStats::default(),
            opts,
        });
        Ok(Server { shared, listener })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The shared state (for tests and embedding).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves clients until `shutdown` completes, then stops accepting, lets every connection
    /// flush what is queued for it (bounded by `drain_limit`), and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain_limit: Duration) {
        let Server { shared, listener } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection task holds a clone of `done_tx`; `recv` returns `None` once all are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        if let Some(peers) = &shared.peers {
            peers.clone().start(&shared, &stop_rx, &done_tx);
        }
        let slots = Arc::new(Semaphore::new(shared.opts.max_connections));
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        info!(
            addr = %shared.local_addr,
            server_id = %shared.server_id,
            "listening for client connections"
        );
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            warn!(%peer, "maximum connections exceeded, refusing client");
                            tokio::spawn(client::refuse(stream, "'maximum connections exceeded'"));
                            continue;
                        };
                        let shared = shared.clone();
                        let stop = stop_rx.clone();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            client::serve(shared, stream, peer, stop).await;
                            drop(permit);
                            drop(done);
                        });
                    }
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
        drop(listener);
        info!("shutting down: closing client connections");
        let _ = stop_tx.send(true);
        if let Some(peers) = &shared.peers {
            peers.stop();
        }
        drop(done_tx);
        if tokio::time::timeout(drain_limit, done_rx.recv())
            .await
            .is_err()
        {
            warn!("some connections did not finish flushing in time");
        } else {
            debug!("all connections closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    /// Answers every request with its payload reversed, through `Shared::publish`.
    struct Reverser(Weak<Shared>);

    impl InternalSink for Reverser {
        fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
            let (Some(shared), Some(reply)) = (self.0.upgrade(), msg.reply) else {
                return;
            };
            let payload: Vec<u8> = msg.payload.iter().rev().copied().collect();
            shared.publish(&Msg {
                subject: reply,
                reply: None,
                headers: None,
                payload: &payload,
            });
        }
    }

    async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .expect("line within 5 s")
            .expect("read");
        line
    }

    #[tokio::test]
    async fn internal_subscriptions_receive_and_publish() {
        let server = Server::bind(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let addr = server.local_addr();
        let shared = server.shared().clone();
        let sink = Arc::new(Reverser(Arc::downgrade(&shared)));
        let sub = shared
            .subscribe_internal(b"svc.reverse", None, sink)
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(1),
        ));

        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        assert!(read_line(&mut reader).await.starts_with("INFO "));
        write
            .write_all(
                b"CONNECT {}\r\nSUB answers 7\r\nPUB svc.reverse answers 3\r\nabc\r\nPING\r\n",
            )
            .await
            .unwrap();
        assert_eq!(read_line(&mut reader).await, "MSG answers 7 3\r\n");
        assert_eq!(read_line(&mut reader).await, "cba\r\n");
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");

        // Once unsubscribed, the request has no taker.
        shared.unsubscribe_internal(&sub);
        write
            .write_all(b"PUB svc.reverse answers 3\r\nabc\r\nPING\r\n")
            .await
            .unwrap();
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");
        assert_eq!(shared.sublist.count(), 1);

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap();
    }
}
