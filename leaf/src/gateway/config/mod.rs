//! The gateways' settings: the top-level keys `board`, `boards_dir`, `[[serial]]`,
//! `[[modbus]]` and `[[gpio]]` of leafd's configuration file ([`Settings`]).
//!
//! They are read with the rest of the file ([`Settings`] is a `leaf_core::config::Extension`,
//! so errors name the key and the line as everywhere) and checked by [`Settings::validate`] as
//! far as they can be without the board and the devices; [`crate::gateway::Gateways::start`]
//! checks the rest. The settings depend on nothing of the gateways but
//! [`crate::gateway::template`]: the code that runs them depends on them.

pub mod gpio;
pub mod modbus;
pub mod serial;

use std::collections::HashSet;
use std::path::PathBuf;

use serde::de::MapAccess;

pub use gpio::GpioGroup;
pub(crate) use leaf_core::config::{is_valid_token, line_of, value, ConfigError};
pub use modbus::ModbusBus;
pub use serial::SerialSource;

/// Everything the gateways of one leafd are configured with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The board leafd runs on (`rpi4`, `rpi5`, `rpi-zero2w`, `cm4`, `generic-arm64`, or a
    /// file in `boards_dir`): resolves serial device aliases and GPIO line names.
    pub board: Option<String>,
    /// A directory of extra board definitions (`<name>.toml`).
    pub boards_dir: Option<PathBuf>,
    /// Serial ports read by leafd (`[[serial]]`).
    pub serial: Vec<SerialSource>,
    /// Modbus RTU buses polled by leafd (`[[modbus]]`).
    pub modbus: Vec<ModbusBus>,
    /// GPIO lines read and driven by leafd (`[[gpio]]`).
    pub gpio: Vec<GpioGroup>,
}

/// A kind of gateway source this leafd was built without (cargo features `serial`, `modbus`,
/// `gpio`, all on by default), found configured: refused by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBuilt {
    /// The config key (`serial`, `modbus`, `gpio`).
    pub key: &'static str,
    /// The cargo feature that builds it in.
    pub feature: &'static str,
    /// What it is, for the message (`serial port`).
    pub what: &'static str,
}

impl NotBuilt {
    /// The refusal without the key: `built without Modbus support (cargo feature `modbus`)`.
    pub fn message(&self) -> String {
        format!(
            "built without {} support (cargo feature `{}`)",
            self.what, self.feature
        )
    }
}

impl Settings {
    /// The first configured kind of source this build leaves out, if any.
    pub fn not_built(&self) -> Option<NotBuilt> {
        let kinds = [
            (
                !cfg!(feature = "serial") && !self.serial.is_empty(),
                NotBuilt {
                    key: "serial",
                    feature: "serial",
                    what: "serial port",
                },
            ),
            (
                !cfg!(feature = "modbus") && !self.modbus.is_empty(),
                NotBuilt {
                    key: "modbus",
                    feature: "modbus",
                    what: "Modbus",
                },
            ),
            (
                !cfg!(feature = "gpio") && !self.gpio.is_empty(),
                NotBuilt {
                    key: "gpio",
                    feature: "gpio",
                    what: "GPIO",
                },
            ),
        ];
        kinds
            .into_iter()
            .find_map(|(refused, kind)| refused.then_some(kind))
    }

    /// Whether no source is configured (no serial port, Modbus bus or GPIO group).
    pub fn has_no_sources(&self) -> bool {
        self.serial.is_empty() && self.modbus.is_empty() && self.gpio.is_empty()
    }

    /// Serial ports, Modbus buses and GPIO groups: what can be checked without the board
    /// and the devices (those are checked when the gateways start).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(kind) = self.not_built() {
            return Err(ConfigError::invalid(kind.key, kind.message()));
        }
        if let Some(board) = &self.board {
            if !is_valid_token(board) {
                return Err(ConfigError::invalid(
                    "board",
                    "must be a name such as `rpi4`",
                ));
            }
        }
        for (i, source) in self.serial.iter().enumerate() {
            source.validate(i)?;
        }
        unique_names(
            "serial",
            "serial port",
            self.serial.iter().map(|s| s.name.as_str()),
        )?;
        for (i, bus) in self.modbus.iter().enumerate() {
            bus.validate(i)?;
        }
        unique_names(
            "modbus",
            "Modbus bus",
            self.modbus.iter().map(|b| b.name.as_str()),
        )?;
        for (i, group) in self.gpio.iter().enumerate() {
            group.validate(i)?;
        }
        unique_names(
            "gpio",
            "GPIO group",
            self.gpio.iter().map(|g| g.name.as_str()),
        )?;
        Ok(())
    }
}

impl leaf_core::config::Extension for Settings {
    const KEYS: &'static [&'static str] = &["board", "boards_dir", "serial", "modbus", "gpio"];

    fn read_key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "board" => self.board = map.next_value()?,
            "boards_dir" => self.boards_dir = map.next_value()?,
            "serial" => self.serial = map.next_value_seed(value::TableList::new())?,
            "modbus" => self.modbus = map.next_value_seed(value::TableList::new())?,
            _ => self.gpio = map.next_value_seed(value::TableList::new())?,
        }
        Ok(())
    }
}

/// Refuses the second use of a name in the list `section` (`serial[3].name: ...`).
fn unique_names<'a>(
    section: &str,
    what: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                format!("{section}[{i}].name"),
                format!("`{name}` is used by another {what}"),
            ));
        }
    }
    Ok(())
}

/// The gateway settings of a whole configuration text (other keys are read and dropped), for
/// the tests of the settings.
#[cfg(test)]
pub(crate) fn parse_str(
    text: &str,
    format: leaf_core::config::Format,
    origin: &str,
) -> Result<Settings, ConfigError> {
    leaf_core::config::parse_str_with::<Settings>(text, format, origin).map(|(_, s)| s)
}

#[cfg(test)]
pub(crate) use leaf_core::config::Format;
