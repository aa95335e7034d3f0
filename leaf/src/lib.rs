//! # leaf: a small-footprint NATS server for the industrial edge
//!
//! This crate is the core of `leafd` (the gateway server, binary in `src/bin/leafd.rs`) and of
//! `hubd` (the hub server in the sibling `hub` crate, built on this library). Any NATS client
//! works against both.
//!
//! ## Layout (one module, one job)
//! * [`proto`]: the NATS wire codec, parse and encode over byte buffers, no I/O.
//! * [`subject`]: subject validation and wildcard matching.
//! * [`sublist`]: the interest structure: a subject trie with a match cache.
//! * [`auth`]: authentication and per-user publish/subscribe permissions.
//! * [`server`]: the accept loop, connections ([`server::client`]), outbound queues
//!   ([`server::outbound`]) and the INFO/CONNECT bodies ([`server::info`]).
//! * [`leafnode`]: leafnode links to hubs and from leaves (the NATS server-to-server
//!   leafnode protocol, both sides).
//! * [`config`]: the configuration file (TOML or JSON, nats-server's key names) and
//!   [`cli`]: the nats-server-compatible command-line flags.
//! * [`app`]: what the `leafd` and `hubd` binaries run: flags, config, logging, signals.
//!
//! `DESIGN.md` next to this crate's `Cargo.toml` describes how a message flows through them.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod jetstream;
pub mod leafnode;
pub mod monitor;
pub mod reload;
pub mod server;
pub mod status_cmd;
pub mod sublist;
pub mod systemd;
pub mod uplink;
