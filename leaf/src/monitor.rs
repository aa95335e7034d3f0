//! The HTTP monitoring port (`http_port`, `-m`): JSON status pages with nats-server's names
//! where nats-server has the page.
//!
//! * `/healthz`: `{"status":"ok"}` while the server runs;
//! * `/leafz`: the leafnode links, shaped as nats-server's `/leafz`;
//! * `/uplinkz`: every store-and-forward uplink: state, backlog, rate, counters (leafd's own
//!   page; `leafd status` renders it).
//!
//! A deliberately small HTTP/1.1 server: `GET` only, one request per connection, bounded
//! request size and time. It binds to the client listener's host (loopback by default).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::server::Shared;
use crate::uplink::Uplinks;

/// Longest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pages read.
#[derive(Clone)]
pub struct Sources {
    /// The server.
    pub shared: Weak<Shared>,
    /// The uplinks, if any.
    pub uplinks: Option<Arc<Uplinks>>,
}

/// A bound monitoring listener.
pub struct Monitor {
    listener: TcpListener,
    sources: Sources,
}

impl Monitor {
    /// Binds `host:port`.
    pub async fn bind(host: &str, port: u16, sources: Sources) -> std::io::Result<Monitor> {
        let listener = TcpListener::bind((host, port)).await?;
        Ok(Monitor { listener, sources })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        if let Some(addr) = self.local_addr() {
            info!(%addr, "monitoring listening (GET /healthz, /leafz, /uplinkz)");
        }
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let sources = self.sources.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &sources).await {
                    debug!(error = %e, "monitoring request failed");
                }
            });
        }
    }
}

async fn serve(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
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
    if !matches!(read, Ok(Ok(true))) {
        return respond(
            &mut stream,
            400,
            "Bad Request",
            &json!({"error": "bad request"}),
        )
        .await;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(
            &mut stream,
            405,
            "Method Not Allowed",
            &json!({"error": "only GET is served"}),
        )
        .await;
    }
    let path = target.split('?').next().unwrap_or("");
    match page(path, sources) {
        Some(body) => respond(&mut stream, 200, "OK", &body).await,
        None => {
            respond(
                &mut stream,
                404,
                "Not Found",
                &json!({"error": "no such page"}),
            )
            .await
        }
    }
}

/// The body of page `path`, `None` for an unknown page.
pub fn page(path: &str, sources: &Sources) -> Option<Value> {
    let shared = sources.shared.upgrade();
    let now = crate::jetstream::time::rfc3339(crate::jetstream::time::now_ns());
    let server_id = shared
        .as_ref()
        .map(|s| s.server_id.clone())
        .unwrap_or_default();
    match path.trim_end_matches('/') {
        "/healthz" => Some(json!({"status": "ok"})),
        "/leafz" => {
            let links = shared.map(|s| s.leafnode_status()).unwrap_or_default();
            let leafs: Vec<Value> = links
                .iter()
                .filter(|l| l.connected)
                .map(|l| {
                    let (ip, port) = split_host_port(&l.url);
                    json!({
                        "name": l.remote_server,
                        "is_spoke": l.solicited,
                        "account": "$G",
                        "ip": ip,
                        "port": port,
                        "in_msgs": l.msgs_in,
                        "out_msgs": l.msgs_out,
                        "in_bytes": l.bytes_in,
                        "out_bytes": l.bytes_out,
                        "connected_since": l.since.map(system_rfc3339),
                        "reconnects": l.reconnects,
                    })
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
                        "last_error": l.last_error,
                    })
                })
                .collect();
            Some(json!({
                "server_id": server_id,
                "now": now,
                "leafnodes": leafs.len(),
                "leafs": leafs,
                "remotes": remotes,
            }))
        }
        "/uplinkz" => {
            let uplinks: Vec<Value> = sources
                .uplinks
                .as_ref()
                .map(|u| u.status())
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                    v["last_ack"] = json!(s.last_ack.map(system_rfc3339));
                    v["oldest_age_ms"] = json!(s.oldest_age.map(|d| d.as_millis() as u64));
                    v["hub_duplicate_window_ms"] = json!(s.hub_duplicate_window.as_millis() as u64);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("oldest_age");
                        o.remove("hub_duplicate_window");
                    }
                    v
                })
                .collect();
            Some(json!({ "server_id": server_id, "now": now, "uplinks": uplinks }))
        }
        _ => None,
    }
}

fn system_rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    crate::jetstream::time::rfc3339(ns)
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

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    body: &Value,
) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_link_urls() {
        assert_eq!(
            split_host_port("nats-leaf://u:***@hub.example:7422"),
            ("hub.example".to_string(), 7422)
        );
        assert_eq!(split_host_port("127.0.0.1:5"), ("127.0.0.1".to_string(), 5));
        assert_eq!(split_host_port("nohost"), ("nohost".to_string(), 0));
    }

    #[test]
    fn unknown_pages_are_none_and_healthz_is_ok() {
        let sources = Sources {
            shared: Weak::new(),
            uplinks: None,
        };
        assert_eq!(page("/healthz", &sources), Some(json!({"status": "ok"})));
        assert!(page("/nope", &sources).is_none());
        let up = page("/uplinkz", &sources).unwrap();
        assert_eq!(up["uplinks"], json!([]));
    }
}
