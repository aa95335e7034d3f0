//! A TCP proxy on 127.0.0.1 that a test controls: it forwards connections to a target port
//! and can cut every live connection at once, or refuse new ones for a while (a WAN outage).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `127.0.0.1:<target>` on a free local port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("proxy cannot bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cut_rx) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            up.clone(),
            cut_rx,
            connections.clone(),
        ));
        TcpProxy {
            port,
            up,
            cut,
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

async fn accept_loop(
    listener: TcpListener,
    target: u16,
    up: Arc<AtomicBool>,
    cut: watch::Receiver<u64>,
    connections: Arc<AtomicU64>,
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
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up_dir = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let down_dir = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = up_dir => {}
                _ = down_dir => {}
                _ = cut.changed() => {}
            }
            // Dropping both halves of both sockets closes them.
        });
    }
}
