//! NATS over WebSocket, as nats-server 2.9 serves it: the `websocket` listener for clients
//! (browsers, HMI panels) and leaves (path `/leafnode`), and leafnode remotes with
//! `ws://`/`wss://` URLs that reach a hub through its websocket port.
//!
//! Data path: a TCP connection accepted by [`listener`] runs the TLS handshake (`wss://`,
//! unless `no_tls`), then the HTTP upgrade ([`handshake`]: method, headers, version, the
//! origin rules of [`origin`]; a refusal is an HTTP status, 403 for an origin, and a log
//! line), both within `handshake_timeout`. The socket then carries WebSocket frames, which
//! [`stream::WsStream`] turns into a byte stream: the NATS protocol code runs over it
//! unchanged, a client through [`crate::server::client`] (the same read loop, outbound
//! queue and limits as on the client port), a leaf through [`crate::leafnode::link`]. The
//! dialling side ([`dial`]) does the same in reverse for a `ws://`/`wss://` remote.
//!
//! Bounds: the upgrade request is at most [`handshake::MAX_REQUEST`] bytes and must come
//! within `handshake_timeout`; a WebSocket message (all its fragments) is at most
//! [`stream::message_limit`] bytes (twice `max_payload` plus `max_control_line`; a larger
//! frame is refused from its header, before its payload is read, and the connection
//! closed), control frames at most 125 bytes (RFC 6455); what is read is then bounded by the
//! protocol's own limits (`max_control_line`, `max_payload`), what is written by the
//! connection's outbound queue (`max_pending`). WebSocket connections count against
//! `max_connections` with the client port's.
//!
//! Why tokio-websockets (and not tokio-tungstenite): it is tokio-native, small, takes its
//! SHA-1 from ring and its masks from fastrand (both already linked), and leaves the
//! upgrade to the caller, so the request is checked (path, origin) before anything is
//! answered; tungstenite would bring the `http` stack's request types, `sha1` and `rand`.
//! Its framing (masking rules, ping/pong/close, UTF-8 of text frames, size limits) is
//! used as is. Compression (permessage-deflate) is not supported yet: the setting is
//! refused by name and the extension never negotiated.

//!
//! Only [`settings`] and [`origin`] are built without the `websocket` feature: the block
//! still parses, and is refused by name ("built without websocket support").

#[cfg(feature = "websocket")]
pub mod dial;
#[cfg(feature = "websocket")]
pub mod handshake;
#[cfg(feature = "websocket")]
pub mod listener;
pub mod origin;
pub mod settings;
#[cfg(feature = "websocket")]
pub mod stream;

#[cfg(feature = "websocket")]
pub use listener::{Listener, WsListener};
#[cfg(feature = "websocket")]
pub use stream::{BoxedIo, WsStream};

/// A WebSocket connection on its (plain or TLS) transport.
#[cfg(feature = "websocket")]
pub type WsIo = WsStream<BoxedIo>;
