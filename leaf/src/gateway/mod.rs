//! Gateways: sensor traffic that enters leafd through hardware rather than a NATS client.
//!
//! * [`config`]: the settings (`board`, `[[serial]]`, `[[modbus]]`, `[[gpio]]`), read with
//!   the rest of leafd's configuration file and checked before anything starts.
//! * [`serial`]: serial ports cut into frames (lines, silence gaps, fixed length, COBS
//!   records; the decoders live in the `leaf-frames` crate so device firmware can share them).
//! * [`modbus`]: Modbus RTU buses polled from a register map.
//! * [`gpio`]: GPIO lines through the Linux GPIO character device.
//! * [`board`]: board definitions that name serial devices and GPIO lines.
//!
//! Every source publishes through an [`Outlet`] into the server's subject space, exactly as
//! a client's publish would go: local subscribers, streams (an uplink's buffer captures it
//! durably) and leaf links. Each source runs on its own task, reports to monitoring through
//! a [`SourceStats`], and never stops the server: errors are counted, logged at a bounded
//! rate, and the source reopens its device with backoff.
//!
//! Cargo features `serial`, `modbus` (needs `serial`) and `gpio`, all in the default build
//! (`gateway` = the three, what `leaf/gateway.example.toml` uses): a leafd built without one
//! has no code for it and refuses its key at `check-config` and at start
//! (`modbus: built without Modbus support (cargo feature `modbus`)`, [`config::NotBuilt`]).

pub mod board;
pub mod config;
#[cfg(feature = "gpio")]
pub mod gpio;
#[cfg(feature = "modbus")]
pub mod modbus;
pub mod outlet;
#[cfg(feature = "serial")]
pub mod serial;
pub mod stats;
pub mod template;

use std::sync::Arc;

use tokio::task::JoinHandle;

pub use board::{Board, BoardError};
pub use outlet::{Outlet, Request, Requests};
pub use stats::{Registry, SourceState, SourceStats};

use crate::gateway::config::Settings;

/// An error starting a gateway source, or publishing from one.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A subject (a filled template, a served subject) is not valid.
    #[error("invalid subject `{0}`")]
    Subject(String),
    /// The server has stopped.
    #[error("the server has stopped")]
    Stopped,
    /// The configured board could not be loaded.
    #[error("board: {0}")]
    Board(#[from] BoardError),
    /// A setting refers to something that does not exist (a device alias, a GPIO line):
    /// `key` names the setting.
    #[error("{key}: {message}")]
    Config {
        /// The config key, e.g. `serial[0].port.device`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// What every source may use besides its own settings.
#[derive(Debug, Clone)]
pub struct Context {
    /// `{board}` in subject templates: the configured board's name, or `board`.
    pub board_name: String,
    /// `{server}` in subject templates: the server's name.
    pub server_name: String,
    /// The configured board, if any.
    pub board: Option<Arc<Board>>,
}

/// The running gateway sources of one leafd.
pub struct Gateways {
    registry: Registry,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateways {
    /// Starts every serial port, Modbus bus and GPIO group `cfg` configures. Errors in the
    /// configuration (an unknown board, device alias or line) stop the start; a device that
    /// is missing or fails at run time does not (its source waits and retries).
    ///
    /// # Errors
    /// [`GatewayError`] naming the setting at fault.
    pub fn start(
        outlet: &Outlet,
        cfg: &Settings,
        server_name: &str,
    ) -> Result<Gateways, GatewayError> {
        if let Some(kind) = cfg.not_built() {
            return Err(GatewayError::Config {
                key: kind.key.to_owned(),
                message: kind.message(),
            });
        }
        let board = match &cfg.board {
            Some(name) => Some(Arc::new(Board::load(name, cfg.boards_dir.as_deref())?)),
            None => None,
        };
        let ctx = Context {
            board_name: board
                .as_ref()
                .map_or_else(|| "board".to_owned(), |b| b.name.clone()),
            server_name: server_name.to_owned(),
            board,
        };
        let registry = Registry::default();
        #[allow(unused_mut)] // no source kind may be built in
        let mut tasks = Vec::new();
        #[cfg(feature = "serial")]
        for (index, source) in cfg.serial.iter().enumerate() {
            tasks.push(serial::start(outlet, &registry, &ctx, index, source)?);
        }
        #[cfg(feature = "modbus")]
        for (index, bus) in cfg.modbus.iter().enumerate() {
            tasks.push(modbus::start(outlet, &registry, &ctx, index, bus)?);
        }
        #[cfg(feature = "gpio")]
        for (index, group) in cfg.gpio.iter().enumerate() {
            tasks.push(gpio::start(outlet, &registry, &ctx, index, group)?);
        }
        #[cfg(not(any(feature = "serial", feature = "modbus", feature = "gpio")))]
        let _ = (outlet, &ctx);
        Ok(Gateways { registry, tasks })
    }

    /// Stops every source and starts the ones `cfg` configures: a reload. The new
    /// configuration is checked first; when it is refused, the running sources go on.
    /// The registry handed out by [`Gateways::registry`] lists the new sources afterwards.
    ///
    /// # Errors
    /// As [`Gateways::start`]; the running sources are then untouched.
    pub fn restart(
        &mut self,
        outlet: &Outlet,
        cfg: &Settings,
        server_name: &str,
    ) -> Result<(), GatewayError> {
        let mut new = Gateways::start(outlet, cfg, server_name)?;
        self.stop();
        self.registry.replace_with(&new.registry);
        self.tasks = std::mem::take(&mut new.tasks);
        // `new` is dropped empty: its drop must not mark the adopted sources stopped.
        new.registry = Registry::default();
        Ok(())
    }

    /// The sources' monitoring records.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether any source is configured.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Gateways {
    /// Stops every source (their devices are closed as their tasks end).
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for source in self.registry.sources() {
            source.set_state(SourceState::Stopped);
        }
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        self.stop();
    }
}
