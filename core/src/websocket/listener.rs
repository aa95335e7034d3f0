//! The websocket listener: accepts TCP connections, runs TLS (unless `no_tls`) and the HTTP
//! upgrade within `handshake_timeout`, then serves each connection as a NATS client, or as
//! a leafnode link when the path is `/leafnode` (see the [module](super) documentation).
//!
//! It runs beside the client listener ([`crate::server::Server::run`]): it stops accepting
//! when the server's stop signal turns (shutdown, and lame duck: the same watch as the
//! other listeners), and its connections hold the server's `done` sender and a slot of
//! `max_connections` like the client port's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use super::handshake::{self, Kind, Request};
use super::origin::{Origin, OriginRules};
use super::settings::WebSocket;
use super::stream::{self, BoxedIo, WsStream};
use crate::auth::{Authenticator, User};
use crate::config::Config;
use crate::leafnode::LeafState;
use crate::server::client::{self, Via};
use crate::server::tls::ListenerTls;
use crate::server::Shared;
use crate::tls::FlushingWriter;

/// The websocket block, ready to accept: TLS loaded, origins parsed, its credentials.
pub struct WsListener {
    /// Host to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// The block as configured (for `/varz`).
    pub settings: WebSocket,
    tls: Option<Arc<ListenerTls>>,
    origins: OriginRules,
    /// The block's own user or token, replacing the server's for its clients.
    auth: Option<Arc<Authenticator>>,
    /// Leaves accepted on `/leafnode` join these links (`None`: leaves are refused).
    leaf: Option<Arc<LeafState>>,
}

impl std::fmt::Debug for WsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsListener")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("origins", &self.origins)
            .field("auth", &self.auth.is_some())
            .field("leaf", &self.leaf.is_some())
            .finish()
    }
}

impl WsListener {
    /// The configuration's websocket block, checked and loaded (its TLS files read now);
    /// `None` without one. `leaf`: the server's leafnode links, which leaves accepted on
    /// `/leafnode` join. The error names the key.
    pub fn from_config(
        cfg: &Config,
        leaf: Option<Arc<LeafState>>,
    ) -> Result<Option<Arc<WsListener>>, String> {
        let Some(ws) = &cfg.websocket else {
            return Ok(None);
        };
        let (host, port) = ws.listen_addr(&cfg.host).map_err(|e| e.to_string())?;
        let tls = match &ws.tls {
            Some(t) => Some(Arc::new(
                ListenerTls::from_settings(t, "websocket.tls").map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let mut allowed = Vec::new();
        for (i, o) in ws.allowed_origins.iter().enumerate() {
            allowed.push(
                Origin::parse(o).map_err(|e| format!("websocket.allowed_origins[{i}]: {e}"))?,
            );
        }
        let a = &ws.authorization;
        let auth = if let Some(token) = &a.token {
            Some(Arc::new(Authenticator::Token(token.clone())))
        } else {
            a.user.as_ref().map(|user| {
                let entry = User {
                    password: a.password.clone().unwrap_or_default(),
                    nkey: false,
                    permissions: None,
                    account: None,
                };
                Arc::new(Authenticator::Users(HashMap::from([(user.clone(), entry)])))
            })
        };
        Ok(Some(Arc::new(WsListener {
            host,
            port,
            settings: ws.clone(),
            tls,
            origins: OriginRules {
                same_origin: ws.same_origin,
                allowed,
            },
            auth,
            leaf,
        })))
    }

    /// How this listener's clients came (for their connections).
    fn via(&self) -> Via {
        Via {
            websocket: true,
            auth: self.auth.clone(),
            auth_timeout: self.settings.authorization.timeout,
        }
    }
}

/// The bound websocket listener.
pub struct Listener {
    tcp: TcpListener,
    cfg: Arc<WsListener>,
}

impl Listener {
    /// Binds the listener of `cfg`.
    pub async fn bind(cfg: Arc<WsListener>) -> std::io::Result<Listener> {
        let addr = if cfg.host.contains(':') {
            format!("[{}]:{}", cfg.host, cfg.port)
        } else {
            format!("{}:{}", cfg.host, cfg.port)
        };
        let tcp = crate::listen::bind(&addr).await?;
        Ok(Listener { tcp, cfg })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `stop` turns true or the server enters lame duck mode; each
    /// takes a slot of `slots` (the server's `max_connections`) and holds a clone of `done`.
    pub(crate) async fn run(
        self,
        shared: Arc<Shared>,
        slots: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) {
        let Listener { tcp, cfg } = self;
        if let Ok(addr) = tcp.local_addr() {
            info!(%addr, tls = cfg.tls.is_some(), "listening for websocket connections");
        }
        let mut backoff = Duration::from_millis(5);
        let mut lame_duck = shared.lame_duck.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = crate::process::signals::entered(&mut lame_duck) => {
                    // As the client and leafnode listeners: clients and leaves move to
                    // another member, not back here.
                    info!("lame duck mode: the websocket listener is closed");
                    break;
                }
                accepted = tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            warn!(%peer, "maximum connections exceeded, refusing websocket client");
                            continue;
                        };
                        let (shared, cfg, stop, done) =
                            (shared.clone(), cfg.clone(), stop.clone(), done.clone());
                        tokio::spawn(async move {
                            serve(shared, cfg, stream, peer, stop).await;
                            drop(permit);
                            drop(done);
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "websocket accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// Serves one accepted connection: handshake, then a client or a leafnode link.
async fn serve(
    shared: Arc<Shared>,
    cfg: Arc<WsListener>,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let upgraded =
        tokio::time::timeout(cfg.settings.handshake_timeout, upgrade(&cfg, tcp, peer)).await;
    let (io, req) = match upgraded {
        Ok(Some(done)) => done,
        Ok(None) => return,
        Err(_) => return debug!(%peer, "websocket handshake timed out"),
    };
    let limit = stream::message_limit(shared.opts.max_payload, shared.opts.max_control_line);
    let (config, limits) = stream::settings(limit);
    let ws = WsStream::new(
        tokio_websockets::ServerBuilder::new()
            .config(config)
            .limits(limits)
            .serve(io),
    );
    match (req.kind, &cfg.leaf) {
        (Kind::Leaf, Some(leaf)) => {
            let transport = crate::leafnode::link::Transport::Ws {
                stream: Box::new(ws),
                local,
                tls: cfg.tls.is_some(),
            };
            crate::leafnode::accept::serve_one(shared, leaf.clone(), transport, peer, stop).await;
        }
        // Refused during the upgrade.
        (Kind::Leaf, None) => {}
        (Kind::Client, _) => {
            // Boxed as a TLS client's stream is: one build of the client code for both.
            let ws: BoxedIo = Box::new(ws);
            let (reader, writer) = tokio::io::split(ws);
            client::serve_via(
                shared,
                reader,
                FlushingWriter::new(writer),
                peer,
                cfg.via(),
                stop,
            )
            .await;
        }
    }
}

/// TLS (if configured) and the HTTP upgrade. `None` when refused or failed (logged).
async fn upgrade(cfg: &WsListener, tcp: TcpStream, peer: SocketAddr) -> Option<(BoxedIo, Request)> {
    let mut io: BoxedIo = match &cfg.tls {
        Some(tls) => match tls.accept(tcp).await {
            Ok(stream) => Box::new(stream),
            Err(e) => {
                warn!(%peer, error = %e, "websocket client refused");
                return None;
            }
        },
        None => Box::new(tcp),
    };
    let checked = match handshake::read_request(&mut io).await {
        Ok(None) => return None,
        Ok(Some(raw)) => handshake::check(&raw, &cfg.origins, cfg.tls.is_some()),
        Err(refusal) => Err(refusal),
    };
    let checked = checked.and_then(|req| {
        if req.kind == Kind::Leaf && cfg.leaf.is_none() {
            Err(handshake::Refusal {
                status: 400,
                reason: "this server accepts no leafnode connections".into(),
            })
        } else {
            Ok(req)
        }
    });
    match checked {
        Ok(req) => {
            io.write_all(&handshake::switching(&req)).await.ok()?;
            io.flush().await.ok()?;
            Some((io, req))
        }
        Err(refusal) => {
            if refusal.status == 403 {
                warn!(%peer, reason = %refusal.reason, "websocket upgrade refused");
            } else {
                debug!(%peer, status = refusal.status, reason = %refusal.reason, "websocket upgrade refused");
            }
            let _ = io.write_all(&handshake::refusal(&refusal)).await;
            let _ = io.flush().await;
            let _ = io.shutdown().await;
            None
        }
    }
}
