//! TCP listeners with an accept queue sized for a fleet.
//!
//! `tokio::net::TcpListener::bind` (mio) asks the kernel for a backlog of 128, the standard
//! library's value. A hub that restarts has every gateway reconnect at once; with 128 the
//! accept queue overflows, the kernel drops handshakes it cannot queue, and clients wait for
//! retransmissions (1 s, 3 s, 7 s…) or, when their final ACK was dropped, sit on a connection
//! the server never sees until their own handshake timeout. Every listener of leafd and hubd
//! (clients, leafnodes, routes, WebSocket, monitoring) is bound here with [`BACKLOG`], which
//! the kernel caps at `net.core.somaxconn` (4096 by default since Linux 5.4), as Go's
//! listeners, and so nats-server's, use `somaxconn`. A queued connection costs the kernel a
//! socket only while it waits, so a small gateway pays nothing for the larger queue.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: u32 = 4096;

/// Binds a listener on the first address `addr` resolves to that can be bound, with
/// `SO_REUSEADDR` (as tokio's `bind`) and a backlog of [`BACKLOG`].
pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match bind_one(a) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 300 connections to a listener that accepts none of them all complete at once: with
    /// the standard backlog of 128 the kernel drops the handshakes beyond the queue and those
    /// connects wait for a SYN retransmission (1 s and more), past this test's bound.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_queue() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if somaxconn.is_some_and(|m| m < 300) {
            eprintln!("skipped: net.core.somaxconn {somaxconn:?} caps the backlog below 300");
            return;
        }
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut conns = Vec::new();
        for i in 0..300 {
            let c = tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            match c {
                Ok(Ok(stream)) => conns.push(stream),
                Ok(Err(e)) => panic!("connection {i}: {e}"),
                Err(_) => panic!("connection {i} not queued within 700 ms"),
            }
        }
        assert_eq!(conns.len(), 300);
    }

    #[tokio::test]
    async fn names_resolve_and_bad_ones_fail() {
        let l = bind(("localhost", 0)).await.expect("localhost");
        assert!(l.local_addr().expect("addr").ip().is_loopback());
        assert!(bind("256.1.1.1:0").await.is_err());
    }
}
