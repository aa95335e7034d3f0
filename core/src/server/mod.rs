//! The NATS core server: the accept loop, per-server shared state, and graceful shutdown.
//!
//! One task per connection reads and routes (see [`client`]); one task per connection writes
//! (see [`outbound`]). There is no central router task: the task that reads a `PUB` looks the
//! subject up in its account's sublist (through a per-connection cache) and appends the message
//! straight into each subscriber's outbound queue, so a message crosses no channel and is copied
//! at most once per subscriber (large payloads not at all).
//!
//! Every connection belongs to one [`Account`] (see [`account`]): its subject space. Every
//! subscription change goes through [`Account::add_subscription`],
//! [`Account::remove_subscription`] or [`Account::reweigh_subscription`]: with links to other
//! servers configured these also tell them (see [`Peers`]; the leafnode layer implements it,
//! this module knows nothing else of it).

pub mod account;
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
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, Regrant};

pub use account::{Account, Accounts, GLOBAL_ACCOUNT};
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
    /// The accounts besides the global one (`$G`), each its own subject space.
    pub accounts: Vec<String>,
    /// The imports between them: the only ways traffic crosses accounts.
    pub imports: Vec<account::imports::ImportRule>,
    /// TLS on the client port (the `tls` table): every client must use it.
    pub tls: Option<Arc<tls::ListenerTls>>,
    /// The websocket listener (the `websocket` block), bound and run beside the client
    /// listener.
    #[cfg(feature = "websocket")]
    pub websocket: Option<Arc<crate::websocket::WsListener>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            implementation: "leafd",
            implementation_version: env!("CARGO_PKG_VERSION"),
            server_name: None,
            host: crate::config::DEFAULT_HOST.into(),
            port: crate::config::DEFAULT_PORT,
            max_payload: crate::config::DEFAULT_MAX_PAYLOAD,
            max_control_line: crate::config::DEFAULT_MAX_CONTROL_LINE,
            max_pending: crate::config::DEFAULT_MAX_PENDING,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: crate::config::DEFAULT_MAX_SUBSCRIPTIONS,
            ping_interval: crate::config::DEFAULT_PING_INTERVAL,
            ping_max: crate::config::DEFAULT_PING_MAX,
            write_deadline: crate::config::DEFAULT_WRITE_DEADLINE,
            auth_timeout: crate::config::DEFAULT_AUTH_TIMEOUT,
            auth: Authenticator::Open,
            accounts: Vec::new(),
            imports: Vec::new(),
            tls: None,
            #[cfg(feature = "websocket")]
            websocket: None,
        }
    }
}

/// State shared by every connection of one server.
pub struct Shared {
    /// The options the server was started with.
    pub opts: ServerOptions,
    /// This process's server id.
    pub server_id: String,
    /// The accounts: each its own subject space (the global one, `$G`, always there).
    pub accounts: account::Accounts,
    /// The address the listener is bound to.
    pub local_addr: SocketAddr,
    /// Links to other servers (leafnode links), told about every interest change of every
    /// account; `None` when none are configured (then subscription changes take no extra
    /// lock).
    pub peers: Option<Arc<dyn Peers>>,
    pub(crate) next_client_id: AtomicU64,
    /// Set once JetStream serves this server's clients (INFO's `jetstream`).
    pub jetstream: std::sync::atomic::AtomicBool,
    /// The API of JetStream's domain, once JetStream serves one: permissions and deny lists
    /// apply to `$JS.<domain>.API.<rest>` as to `$JS.API.<rest>` too.
    pub js_domain: std::sync::OnceLock<jsdomain::DomainApi>,
    /// What JetStream does with replicated streams (`num_replicas` > 1), set by a clustered
    /// server (hubd in a JetStream cluster); unset, they are refused (see
    /// [`crate::jetstream::replication`]).
    pub js_replication: std::sync::OnceLock<Arc<dyn crate::jetstream::replication::Replication>>,
    /// Connections and traffic, for monitoring.
    pub stats: stats::ServerStats,
    /// Who may connect now: `opts.auth` at the start, then what the last reload set (see
    /// [`Shared::reload_authorization`]). Read-locked by a CONNECT until its login is recorded.
    pub auth: std::sync::RwLock<Arc<Authenticator>>,
    /// The system account's services, while they run (see [`crate::system`]): connections
    /// tell them when they log in and end.
    pub system: crate::system::Slot,
    /// The client URLs of the other servers of this server's cluster (hubd's routes learn
    /// them): announced to clients in INFO `connect_urls`, so that a client fails over.
    pub cluster_urls: std::sync::RwLock<Vec<String>>,
    /// Lame duck mode (SIGUSR2, see [`Shared::enter_lame_duck`]): turns true once; the client
    /// and leafnode listeners close when it does.
    pub lame_duck: watch::Sender<bool>,
    /// The websocket listener's address and settings, when it listens (for `/varz`).
    pub websocket: Option<(SocketAddr, crate::websocket::settings::WebSocket)>,
}

impl Shared {
    /// Whether clients must authenticate (INFO's `auth_required`).
    pub fn auth_required(&self) -> bool {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .required()
    }

    /// Closes, with `-ERR <text>`, every client connection whose CONNECT details match
    /// `doomed` (an account's user revoked, say). Returns how many.
    pub fn close_connections(
        &self,
        doomed: impl Fn(&stats::ConnMeta) -> bool,
        text: &str,
    ) -> usize {
        let mut closed = 0;
        for entry in self.stats.connections() {
            if doomed(&entry.meta()) {
                client::close_with_error(&entry.handle, text);
                closed += 1;
            }
        }
        closed
    }

    /// Applies a reload of `authorization` and the accounts' users: `accounts` (the
    /// configured accounts) are added to the server if new, `auth` replaces the
    /// authenticator. A connection whose user keeps its secret and account but has new
    /// permissions is updated in place, as nats-server does (its task applies them:
    /// subscriptions they no longer allow are removed with a permissions -ERR). Every other
    /// connection that would not log in again with exactly the same rights (its user removed,
    /// its password or account changed, a token changed, authentication newly required) is
    /// closed with `-ERR 'Authorization Violation'`. The others keep running untouched.
    /// Returns how many were closed.
    pub fn reload_authorization(&self, auth: Authenticator, accounts: &[String]) -> usize {
        for name in accounts {
            self.accounts.add(name);
        }
        let mut current = self
            .auth
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(**current, Authenticator::Delegated(_)) {
            // Operator mode: users come from JWTs, never from a reloaded file.
            return 0;
        }
        let old = std::mem::replace(&mut *current, Arc::new(auth));
        let mut closed = 0;
        for entry in self.stats.connections() {
            if entry.own_auth.load(std::sync::atomic::Ordering::Relaxed) {
                // Logged in with the websocket block's credentials, not `authorization`'s.
                continue;
            }
            let Some(login) = entry.meta().login else {
                // Not logged in yet: its CONNECT will be checked against the new settings.
                continue;
            };
            match old.regrant(&current, &login) {
                Regrant::Same => continue,
                Regrant::Permissions(permissions) => {
                    info!(
                        cid = entry.handle.id,
                        ?login,
                        "a reload changed this connection's permissions: updated in place"
                    );
                    entry.regrant(permissions);
                    continue;
                }
                Regrant::Revoked => {}
            }
            warn!(
                cid = entry.handle.id,
                ?login,
                "closing a connection whose rights a reload changed"
            );
            client::close_with_error(&entry.handle, "'Authorization Violation'");
            closed += 1;
        }
        closed
    }

    /// The client URLs a client's INFO lists in `connect_urls`: this server's (unless it
    /// listens on every interface, which is no address to give, or it is in lame duck mode)
    /// and the other members' of its cluster; empty without a cluster.
    pub fn connect_urls(&self) -> Vec<String> {
        let others = self
            .cluster_urls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if others.is_empty() || self.in_lame_duck() {
            return others;
        }
        let own = Some(self.local_addr)
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.to_string());
        own.into_iter().chain(others).collect()
    }

    /// Sets the other cluster members' client URLs; when they changed, every logged-in client
    /// gets an INFO with the new `connect_urls` (its own task sends it), as nats-server sends
    /// when members join or leave.
    pub fn set_cluster_urls(&self, mut urls: Vec<String>) {
        urls.sort();
        urls.dedup();
        {
            let mut current = self
                .cluster_urls
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current == urls {
                return;
            }
            *current = urls;
        }
        for entry in self.stats.connections() {
            entry.announce_info();
        }
    }

    /// The server name announced in INFO: the configured one, else the server id.
    pub fn server_name(&self) -> &str {
        self.opts.server_name.as_deref().unwrap_or(&self.server_id)
    }

    /// Whether the server is in lame duck mode.
    pub fn in_lame_duck(&self) -> bool {
        *self.lame_duck.borrow()
    }

    /// Enters lame duck mode (nats-server's, see `crate::process::signals`): the client and
    /// leafnode listeners close, every client is sent an INFO with `ldm: true` and the other
    /// members' URLs only, and the peers are told ([`Peers::lame_duck`]: leaves and routes).
    /// Returns the connections to close over the lame duck duration (the clients, then the
    /// accepted leaves), or `None` when the server was in lame duck mode already.
    pub fn enter_lame_duck(&self) -> Option<Vec<Arc<ClientHandle>>> {
        let entered = self
            .lame_duck
            .send_if_modified(|ldm| !std::mem::replace(ldm, true));
        if !entered {
            return None;
        }
        let mut doomed = Vec::new();
        for entry in self.stats.connections() {
            entry.announce_lame_duck();
            doomed.push(entry.handle.clone());
        }
        if let Some(peers) = &self.peers {
            doomed.extend(peers.lame_duck(self));
        }
        Some(doomed)
    }

    /// A new connection id (clients, leafnode links and routes draw from one counter).
    pub fn next_connection_id(&self) -> u64 {
        self.next_client_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The global account (`$G`): every client, link and component not bound to an account
    /// of its own.
    pub fn global(&self) -> &Arc<Account> {
        self.accounts.global()
    }
}

/// The next connection on `listener`; never, without one (closed in lame duck mode).
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    /// The websocket listener, when configured.
    #[cfg(feature = "websocket")]
    websocket: Option<crate::websocket::Listener>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An import between accounts could not be set up.
    #[error("{0}")]
    Import(#[from] account::imports::ImportError),
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
        let listener = crate::listen::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        #[cfg(feature = "websocket")]
        let (websocket, ws_info) = match &opts.websocket {
            Some(cfg) => {
                let bound = crate::websocket::Listener::bind(cfg.clone())
                    .await
                    .and_then(|l| l.local_addr().map(|a| (l, a)))
                    .map_err(|source| ServerError::Bind {
                        addr: format!("websocket {}:{}", cfg.host, cfg.port),
                        source,
                    })?;
                (Some(bound.0), Some((bound.1, cfg.settings.clone())))
            }
            None => (None, None),
        };
        #[cfg(not(feature = "websocket"))]
        let ws_info = None;
        let stats = stats::ServerStats::default();
        let accounts = account::Accounts::new(
            opts.accounts.iter().map(String::as_str),
            peers.clone(),
            &stats.replies_refused,
        );
        // The subscriptions of imports live as long as the server (held by their accounts).
        account::imports::wire(&accounts, &opts.imports)?;
        let shared = Arc::new(Shared {
            server_id: info::new_server_id(),
            accounts,
            local_addr,
            peers,
            next_client_id: AtomicU64::new(1),
            jetstream: std::sync::atomic::AtomicBool::new(false),
            js_domain: std::sync::OnceLock::new(),
            js_replication: std::sync::OnceLock::new(),
            stats,
            auth: std::sync::RwLock::new(Arc::new(opts.auth.clone())),
            system: crate::system::Slot::default(),
            cluster_urls: std::sync::RwLock::new(Vec::new()),
            lame_duck: watch::Sender::new(false),
            websocket: ws_info,
            opts,
        });
        Ok(Server {
            shared,
            listener,
            #[cfg(feature = "websocket")]
            websocket,
        })
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
        #[cfg(feature = "websocket")]
        let Server {
            shared,
            listener,
            websocket,
        } = self;
        #[cfg(not(feature = "websocket"))]
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
        // Closed in lame duck mode; the server runs on until `shutdown`.
        let mut listener = Some(listener);
        let mut lame_duck = shared.lame_duck.subscribe();
        info!(
            addr = %shared.local_addr,
            server_id = %shared.server_id,
            "listening for client connections"
        );
        if let Some(tls) = &shared.opts.tls {
            info!(
                verify = tls.verify,
                verify_and_map = tls.map,
                "TLS required for client connections"
            );
        }
        // The websocket listener stops with the others (`stop_rx`) and its connections
        // take the same slots.
        #[cfg(feature = "websocket")]
        if let Some(ws) = websocket {
            tokio::spawn(ws.run(
                shared.clone(),
                slots.clone(),
                stop_rx.clone(),
                done_tx.clone(),
            ));
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = crate::process::signals::entered(&mut lame_duck), if listener.is_some() => {
                    listener = None;
                    info!("lame duck mode: the client listener is closed");
                }
                accepted = accept(listener.as_ref()) => match accepted {
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
    struct Reverser(Weak<Account>);

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

    /// A server with `options`, running until the returned sender fires: its address, its
    /// state, the stop switch and its task.
    async fn running(
        options: ServerOptions,
    ) -> (
        SocketAddr,
        Arc<Shared>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let server = Server::bind(options).await.unwrap();
        let addr = server.local_addr();
        let shared = server.shared().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(1),
        ));
        (addr, shared, stop_tx, running)
    }

    async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .expect("line within 5 s")
            .expect("read");
        line
    }

    /// An authority that admits the JWT `good` into account `ACC1` for 300 ms (the real one,
    /// operator mode, is hubd's; here only what the server does with its answer is tested).
    #[derive(Debug)]
    struct ShortLived;

    impl crate::auth::Authority for ShortLived {
        fn authenticate(
            &self,
            creds: crate::auth::Credentials<'_>,
        ) -> Result<crate::auth::Grant, crate::auth::AuthError> {
            if creds.jwt != Some("good") || creds.nonce.is_empty() {
                return Err(crate::auth::AuthError::Refused("bad JWT".into()));
            }
            Ok(crate::auth::Grant {
                account: Some("ACC1".into()),
                identity: Some("UKEY".into()),
                expires: Some(std::time::SystemTime::now() + Duration::from_millis(300)),
                ..crate::auth::Grant::default()
            })
        }
    }

    #[tokio::test]
    async fn an_authority_creates_accounts_and_its_logins_expire() {
        let (addr, shared, stop_tx, running) = running(ServerOptions {
            port: 0,
            auth: Authenticator::Delegated(Arc::new(ShortLived)),
            ..ServerOptions::default()
        })
        .await;
        let connect = |jwt: &'static str| async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let info = read_line(&mut reader).await;
            assert!(info.contains("\"nonce\":"), "{info}");
            let line = format!("CONNECT {{\"jwt\":\"{jwt}\",\"sig\":\"x\"}}\r\nPING\r\n");
            write.write_all(line.as_bytes()).await.unwrap();
            (reader, write)
        };
        let (mut refused, _w) = connect("bad").await;
        assert_eq!(
            read_line(&mut refused).await,
            "-ERR 'Authorization Violation'\r\n"
        );
        let (mut reader, _w) = connect("good").await;
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");
        assert!(shared.accounts.get("ACC1").is_some(), "made on first login");
        assert_eq!(
            read_line(&mut reader).await,
            "-ERR 'User Authentication Expired'\r\n"
        );
        let mut rest = String::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut rest))
            .await
            .expect("closed within 5 s");
        assert_eq!(closed.unwrap(), 0, "then closed");
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn internal_subscriptions_receive_and_publish() {
        let (addr, shared, stop_tx, running) = running(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await;
        let sink = Arc::new(Reverser(Arc::downgrade(shared.global())));
        let sub = shared
            .global()
            .subscribe_internal(b"svc.reverse", None, sink)
            .unwrap();

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
        shared.global().unsubscribe_internal(&sub);
        write
            .write_all(b"PUB svc.reverse answers 3\r\nabc\r\nPING\r\n")
            .await
            .unwrap();
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");
        assert_eq!(shared.global().sublist.count(), 1);

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn lame_duck_closes_the_listener_and_tells_clients_once() {
        let (addr, shared, stop_tx, running) = running(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        assert!(!read_line(&mut reader).await.contains("ldm"));
        write.write_all(b"CONNECT {}\r\nPING\r\n").await.unwrap();
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");
        assert!(!shared.in_lame_duck());
        let doomed = shared.enter_lame_duck().expect("entered");
        assert_eq!(doomed.len(), 1);
        assert!(shared.in_lame_duck());
        assert!(shared.enter_lame_duck().is_none(), "entered once only");
        let info = read_line(&mut reader).await;
        assert!(
            info.starts_with("INFO ") && info.contains("\"ldm\":true"),
            "{info}"
        );
        // The listener closes; the connection runs on until it is closed.
        tokio::time::timeout(Duration::from_secs(5), async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the listener closes");
        write.write_all(b"PING\r\n").await.unwrap();
        assert_eq!(read_line(&mut reader).await, "PONG\r\n");
        doomed[0].out.close();
        let mut rest = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "closed: {rest}");
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap();
    }
}
