//! A TCP proxy that a test controls: it forwards connections to a target port and can cut
//! every live connection at once, refuse new ones for a while (a WAN outage), and impair the
//! traffic it carries ([`Impairment`]: latency, and the stalls that packet loss causes a TCP
//! stream).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    freeze: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `127.0.0.1:<target>` on a free local port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(target: u16) -> TcpProxy {
        Self::start_on("127.0.0.1", target, Impairment::default()).await
    }

    /// Starts a proxy listening on `host` (a free port) to `127.0.0.1:<target>`, impairing
    /// the traffic as `impairment` says.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start_on(host: &str, target: u16, impairment: Impairment) -> TcpProxy {
        let listener = TcpListener::bind((host, 0))
            .await
            .unwrap_or_else(|e| panic!("proxy cannot bind on {host}: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cut_rx) = watch::channel(0u64);
        let (freeze, freeze_rx) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            up.clone(),
            (cut_rx, freeze_rx),
            connections.clone(),
            impairment,
        ));
        TcpProxy {
            port,
            up,
            cut,
            freeze,
            connections,
            task,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every live connection (both directions, at once). New connections are still
    /// accepted unless the proxy is down.
    pub fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// Freezes every live connection: nothing more is forwarded either way, but both sides
    /// stay open, as when a WAN path dies without a reset (each end notices only by its own
    /// pings). New connections are forwarded as usual.
    pub fn freeze(&self) {
        self.freeze.send_modify(|g| *g += 1);
    }

    /// Down: live connections are cut and new ones are closed right after accept. Up: new
    /// connections are forwarded again.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut();
        }
    }

    /// How many connections were forwarded so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// How a proxy impairs what it carries, each direction on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// One-way latency added to every chunk.
    pub delay: Duration,
    /// Probability that a chunk is held back by `stall` (what a lost packet does to a TCP
    /// stream: everything behind it waits for the retransmission).
    pub loss: f64,
    /// How long a "lost" chunk is held back.
    pub stall: Duration,
}

impl Impairment {
    fn is_none(&self) -> bool {
        self.delay.is_zero() && self.loss == 0.0
    }
}

/// Copies `from` to `to`, chunk by chunk, each chunk no earlier than the impairment says.
async fn relay<R, W>(mut from: R, mut to: W, imp: Impairment)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if imp.is_none() {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut due = tokio::time::Instant::now() + imp.delay;
                    if imp.loss > 0.0 && fastrand::f64() < imp.loss {
                        due += imp.stall;
                    }
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

async fn accept_loop(
    listener: TcpListener,
    target: u16,
    up: Arc<AtomicBool>,
    (cut, freeze): (watch::Receiver<u64>, watch::Receiver<u64>),
    connections: Arc<AtomicU64>,
    impairment: Impairment,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
            drop(client);
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let mut cut = cut.clone();
        cut.borrow_and_update();
        let mut freeze = freeze.clone();
        freeze.borrow_and_update();
        tokio::spawn(async move {
            let (mut client, mut server) = (client, server);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let frozen = {
                let (cr, cw) = client.split();
                let (sr, sw) = server.split();
                tokio::select! {
                    _ = relay(cr, sw, impairment) => false,
                    _ = relay(sr, cw, impairment) => false,
                    _ = cut.changed() => false,
                    _ = freeze.changed() => true,
                }
            };
            if frozen {
                // Silent but open until cut (or the proxy is dropped).
                let _ = cut.changed().await;
            }
            // Dropping both sockets closes them.
        });
    }
}
