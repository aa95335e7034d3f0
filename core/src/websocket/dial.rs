//! The dialling side of a leafnode link over WebSocket (a `ws://` or `wss://` remote, as
//! nats-server's `leafnodes.remotes[].urls`): on a connected TCP stream, TLS first for
//! `wss://` (the remote's `tls` table, or the system's CA bundle), then the upgrade request
//! to the hub's websocket port on nats-server's path `/leafnode`; the link then runs inside
//! the frames, which this side masks as a WebSocket client must.

use tokio::net::TcpStream;

use super::handshake::LEAF_PATH;
use super::stream::{self, BoxedIo, WsStream};
use super::WsIo;
use crate::leafnode::tls::ClientTls;
use crate::leafnode::RemoteUrl;

/// The upgrade request's URI for `url`: its scheme and address, path `/leafnode`.
pub fn leaf_uri(url: &RemoteUrl) -> String {
    let scheme = if url.tls { "wss" } else { "ws" };
    format!("{scheme}://{}{LEAF_PATH}", url.addr())
}

/// Runs TLS (for `wss://`, with `tls`) and the WebSocket upgrade on `tcp`; `limit` bounds
/// each message the hub sends. The caller bounds the time. The error is a sentence for the
/// log and the link's status.
pub async fn connect(
    url: &RemoteUrl,
    tcp: TcpStream,
    tls: Option<&ClientTls>,
    limit: usize,
) -> Result<WsIo, String> {
    let io: BoxedIo = match (url.tls, tls) {
        (true, Some(tls)) => Box::new(tls.connect(url, tcp).await?),
        (true, None) => return Err("wss:// without TLS settings".into()),
        (false, _) => Box::new(tcp),
    };
    let (config, limits) = stream::settings(limit);
    let builder = tokio_websockets::ClientBuilder::new()
        .uri(&leaf_uri(url))
        .map_err(|e| format!("websocket URL: {e}"))?
        .config(config)
        .limits(limits);
    let (ws, _response) = builder
        .connect_on(io)
        .await
        .map_err(|e| format!("websocket upgrade failed: {e}"))?;
    Ok(WsStream::new(ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leafnode_path() {
        let u = RemoteUrl::parse("wss://u:p@hub.example:8443").unwrap();
        assert_eq!(leaf_uri(&u), "wss://hub.example:8443/leafnode");
        let u = RemoteUrl::parse("ws://[::1]:80").unwrap();
        assert_eq!(leaf_uri(&u), "ws://[::1]:80/leafnode");
    }
}
