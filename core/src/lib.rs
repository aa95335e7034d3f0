//! # leaf-core: the NATS server that `leafd` and `hubd` share
//!
//! Everything both binaries run, and nothing only one of them needs: the gateway features
//! (uplinks, serial ports, Modbus, GPIO, systemd) are in the `leaf` crate, hub-only parts in
//! `hub`. Any NATS client works against both.
//!
//! ## Layout (one module, one job)
//! * [`sublist`]: the interest structure: a subject trie with a match cache.
//! * [`auth`]: authentication and per-user publish/subscribe permissions; [`auth::settings`]
//!   the `authorization` tables (clients and the leafnode listener, one type).
//! * [`budget`]: bounds in bytes on the queues that remote input fills.
//! * [`server`]: the accept loop, connections ([`server::client`]), the per-publisher fan-out
//!   ([`server::fanout`]), outbound queues ([`server::outbound`]), the INFO/CONNECT bodies
//!   ([`server::info`]), and the server's narrow API for its own components:
//!   [`server::Shared::publish`], [`server::Shared::subscribe_internal`] /
//!   [`server::Shared::unsubscribe_internal`] and [`server::Shared::sublist`] for interest
//!   queries; links to other servers hear about interest through [`server::Peers`].
//! * [`leafnode`]: leafnode links to hubs and from leaves (the NATS server-to-server
//!   leafnode protocol, both sides); it implements [`server::Peers`] and depends on
//!   [`server`], never the other way round.
//! * [`jetstream`]: streams, consumers, mirrors and sources, and the `$JS.API`, on the
//!   `leaf-store` message store.
//! * [`listen`]: TCP listeners with an accept queue sized for a fleet's reconnections.
//! * [`monitor`]: the HTTP monitoring port (nats-server's pages; a binary adds its own through
//!   [`monitor::Pages`]).
//! * [`system`]: the system account's requests (`$SYS.REQ.SERVER.…`, answered with the
//!   monitor's pages) and advisories (`$SYS.ACCOUNT.<acc>.CONNECT` / `DISCONNECT`).
//! * [`config`]: the configuration file's shared keys (TOML or JSON, nats-server's key names;
//!   a binary adds its own keys through [`config::Extension`]; the subsystems' settings types
//!   live with them, [`auth::settings`], [`jetstream::settings`], [`leafnode::settings`], and
//!   are re-exported), [`cli`]: the
//!   nats-server-compatible command-line flags, [`reload`]: what a SIGHUP may change of the
//!   shared keys.
//! * [`tls`]: what every TLS listener and link shares (PEM files, the server side's rustls
//!   configuration, the names a client certificate carries); the client port's TLS is
//!   [`server::tls`], the leafnode links' [`leafnode::tls`].
//! * [`websocket`]: NATS over WebSocket (feature `websocket`): the `websocket` listener
//!   for clients and leaves, and `ws://`/`wss://` leafnode remotes.
//! * [`redact`]: credentials hidden wherever something is displayed (logs, pages, metrics,
//!   errors, `Debug`).
//! * [`fleet`]: the fleet status record a leafd publishes over its link and hubd keeps
//!   (its format, bounds and parser); [`status_page`]: what the command-line views of a
//!   running server (`leafd status`, `hubd fleet`) share.
//! * [`process`]: process conventions as nats-server's: signals (SIGUSR1 reopens the log
//!   file, SIGUSR2 lame duck mode), `--signal`, the pid file, the log file.
//! * [`app`]: the runtime pieces both binaries' `main` are built from: logging, signals,
//!   starting the server with its links and JetStream, reloading the shared keys.
//!
//! The wire codec and subjects are the `leaf-proto` crate, the message store `leaf-store`.
//! `DESIGN.md` next to this crate's `Cargo.toml` describes how a message flows through them.

pub mod app;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod jetstream;
pub mod leafnode;
pub mod listen;
pub mod monitor;
pub mod process;
pub mod redact;
pub mod reload;
pub mod server;
pub mod status_page;
pub mod sublist;
pub mod system;
pub mod tls;
pub mod websocket;
