//! # leaf: `leafd`, the gateway server
//!
//! What a gateway runs on top of the shared NATS server (`leaf-core`, which `hubd` runs too):
//! everything a gateway needs and a hub does not. The binary is `src/bin/leafd.rs`.
//!
//! ## Layout (one module, one job)
//! * [`uplink`]: store-and-forward uplinks: local subjects buffered durably and forwarded to a
//!   stream on the hub, in order and exactly once.
//! * [`gateway`]: sensor traffic from hardware: serial ports, Modbus RTU, GPIO, board
//!   definitions, and their settings (`gateway::config`); the frame decoders are the
//!   `leaf-frames` crate.
//! * [`config`]: leafd's configuration: the shared keys, the uplinks and the gateways in one
//!   file.
//! * [`fleet`]: the fleet status record leafd publishes over its leafnode links for the hub
//!   (`[fleet]`).
//! * [`reload`]: what a SIGHUP may change of leafd's own keys (uplink limits, the gateways).
//! * [`monitor`]: leafd's monitoring pages (`/uplinkz`, `/sourcesz`) and metrics.
//! * [`systemd`]: sd_notify (READY, STATUS, STOPPING, the watchdog) without libsystemd.
//! * [`status_cmd`]: `leafd status`, which renders `/uplinkz`.
//! * [`app`]: what the `leafd` binary runs.
//!
//! `DESIGN.md` next to this crate's `Cargo.toml` describes the uplinks, `src/gateway/DESIGN.md`
//! the gateways; the shared server is described in `core/DESIGN.md`.

pub mod app;
pub mod config;
pub mod fleet;
pub mod gateway;
pub mod monitor;
pub mod reload;
pub mod status_cmd;
pub mod systemd;
pub mod uplink;
