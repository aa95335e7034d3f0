//! leafd's configuration: the keys both binaries read (`leaf_core::config`: listeners, limits,
//! authorization, JetStream, leafnodes), the store-and-forward uplinks ([`uplink`]) and the
//! gateways (`crate::gateway::config`: `board`, `[[serial]]`, `[[modbus]]`, `[[gpio]]`) and the
//! fleet status records (`[fleet]`, `crate::fleet::Settings`), read from one file in one pass.
//! `leafd.example.toml` at the crate root documents every key; a unit test parses it, so it
//! cannot drift from the code. The file may also be JSON (`*.json`) or nats-server's own format
//! (any other name; see `leaf_core::config::natsconf`): `leafd.example.conf` and the other
//! `*.example.conf` files are the TOML examples in it, checked to give the same configuration.
//!
//! [`Config`] holds the shared configuration as a field: `cfg.server.port`,
//! `cfg.server.jetstream` are the shared keys, `cfg.uplinks` and `cfg.gateways` leafd's own.

pub mod uplink;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use leaf_core::cli::{self, ServerArgs};
pub(crate) use leaf_core::config::value;
use leaf_core::config::Extension;
pub use leaf_core::config::{ConfigError, Format};
use serde::de::MapAccess;

pub use uplink::{Uplink, WhenFull};

/// The whole configuration of a leafd. `Config::default()` is the configuration of a leafd
/// started without a file or flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The keys both binaries read.
    pub server: leaf_core::config::Config,
    /// Store-and-forward uplinks to hub streams (`[[uplinks]]`).
    pub uplinks: Vec<Uplink>,
    /// The gateways: `board`, `boards_dir`, `[[serial]]`, `[[modbus]]`, `[[gpio]]`.
    pub gateways: crate::gateway::config::Settings,
    /// The fleet status records sent to the hub (`[fleet]`).
    pub fleet: crate::fleet::Settings,
}

impl AsRef<leaf_core::config::Config> for Config {
    fn as_ref(&self) -> &leaf_core::config::Config {
        &self.server
    }
}

impl AsMut<leaf_core::config::Config> for Config {
    fn as_mut(&mut self) -> &mut leaf_core::config::Config {
        &mut self.server
    }
}

/// leafd's own top-level keys: `uplinks`, `fleet`, then the gateways'. `server` is filled by the
/// loaders below from the shared part of the file.
impl Extension for Config {
    const KEYS: &'static [&'static str] = &[
        "uplinks",
        "fleet",
        "board",
        "boards_dir",
        "serial",
        "modbus",
        "gpio",
    ];

    fn read_key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "uplinks" => self.uplinks = map.next_value_seed(value::TableList::new())?,
            "fleet" => self.fleet = map.next_value_seed(value::TableSeed::new())?,
            _ => self.gateways.read_key(key, map)?,
        }
        Ok(())
    }
}

impl Config {
    /// The configuration made of the shared part and leafd's own.
    fn assemble((server, own): (leaf_core::config::Config, Config)) -> Config {
        Config { server, ..own }
    }
}

/// Reads and deserializes a config file (TOML for `*.toml`, JSON for `*.json`, nats-server's
/// format otherwise). Does not validate; see [`Config::validate`].
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    leaf_core::config::load_file_with::<Config>(path).map(Config::assemble)
}

/// Deserializes config text; `origin` names it in errors (usually the file name).
pub fn parse_str(text: &str, format: Format, origin: &str) -> Result<Config, ConfigError> {
    leaf_core::config::parse_str_with::<Config>(text, format, origin).map(Config::assemble)
}

/// The effective configuration: the `--config` file if given (else the defaults), overridden
/// by the flags, then validated.
pub fn load(args: &ServerArgs) -> Result<Config, ConfigError> {
    let cfg = cli::load_with::<Config>(args).map(Config::assemble)?;
    cfg.validate()?;
    Ok(cfg)
}
