//! `[[serial]]`: serial ports read by leafd, and the port settings Modbus buses share.
//!
//! ```toml
//! board = "rpi4"                       # resolves device aliases such as "serial0"
//!
//! [[serial]]
//! name = "scale"                       # names the port in subjects, logs and monitoring
//! port = { device = "/dev/serial/by-id/usb-FTDI_FT232R_A1B2-if00-port0", baud = 115200 }
//! framing = "line"                     # line | gap | fixed | cobs
//! delimiter = "\r\n"                   # line framing (default "\n")
//! subject = "sensors.{board}.{port}"   # the default
//! format = "raw"                       # raw | kv | json (kv and json: one message per field)
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{value, ConfigError};

/// Default longest frame, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1024;
/// The largest `max_frame`: the size of each port's frame buffer.
pub const MAX_FRAME_LIMIT: usize = 16 * 1024;
/// Default subject template of a serial port.
pub const DEFAULT_SUBJECT: &str = "sensors.{board}.{port}";
/// Default longest wait between two attempts to (re)open a port.
pub const DEFAULT_REOPEN_MAX: Duration = Duration::from_secs(10);
/// Default silence that ends a frame with `framing = "gap"`.
pub const DEFAULT_GAP: Duration = Duration::from_millis(20);

/// Which device a port opens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Device {
    /// A path (`/dev/serial/by-id/...`, `/dev/ttyUSB0`) or a name the board defines
    /// (`serial0`).
    Path(String),
    /// The USB serial adapter with these ids (hexadecimal vendor and product, and
    /// optionally its serial number).
    Usb(UsbMatch),
}

/// A USB serial adapter, by its ids.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbMatch {
    /// Vendor id, hexadecimal (`"0403"`).
    pub vid: String,
    /// Product id, hexadecimal (`"6001"`).
    pub pid: String,
    /// The adapter's serial number, when several identical adapters are plugged in.
    pub serial: Option<String>,
}

/// Parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Flow control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// RS-485 settings (the kernel's `TIOCSRS485`, where the driver supports it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rs485 {
    /// Turn RS-485 mode on.
    pub enabled: bool,
    /// RTS level while sending is high (the usual wiring); false: low.
    pub rts_on_send: bool,
    /// Delay between raising RTS and sending.
    #[serde(deserialize_with = "value::de_duration")]
    pub delay_before_send: Duration,
    /// Delay between the last byte and dropping RTS.
    #[serde(deserialize_with = "value::de_duration")]
    pub delay_after_send: Duration,
}

/// How a serial device is opened: shared by `[[serial]]` and `[[modbus]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortSettings {
    /// The device.
    pub device: Device,
    /// Baud rate (default 9600).
    pub baud: u32,
    /// Data bits, 5 to 8 (default 8).
    pub data_bits: u8,
    /// Parity (default none).
    pub parity: Parity,
    /// Stop bits, 1 or 2 (default 1).
    pub stop_bits: u8,
    /// Flow control (default none).
    pub flow_control: FlowControl,
    /// RS-485 mode.
    pub rs485: Option<Rs485>,
    /// Longest wait between two attempts to (re)open the device (default 10 s; the wait
    /// starts at 100 ms and doubles).
    #[serde(deserialize_with = "value::de_duration")]
    pub reopen_max: Duration,
}

impl Default for PortSettings {
    fn default() -> Self {
        PortSettings {
            device: Device::Path(String::new()),
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
            rs485: None,
            reopen_max: DEFAULT_REOPEN_MAX,
        }
    }
}

impl PortSettings {
    /// Time one character takes on the wire (start, data, parity and stop bits).
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits);
        let baud = self.baud.max(1);
        Duration::from_nanos(u64::from(bits) * 1_000_000_000 / u64::from(baud))
    }
}

/// How the byte stream is cut into frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Delimited lines (`delimiter`, default `\n`).
    #[default]
    Line,
    /// A frame ends when the line has been silent for `gap`.
    Gap,
    /// Frames of exactly `frame_len` bytes.
    Fixed,
    /// COBS-framed postcard records with a CRC (the `leaf-frames` record format); the
    /// record's channel fills `{channel}` in the subject.
    Cobs,
}

/// How a text frame is split into messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One message per frame, the frame as payload.
    #[default]
    Raw,
    /// `key=value` pairs separated by spaces, commas or semicolons: one message per key,
    /// `{field}` in the subject is the key.
    Kv,
    /// A JSON object per frame: one message per top-level field (the value as JSON),
    /// `{field}` in the subject is the field name.
    Json,
}

/// One `[[serial]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialSource {
    /// The port's name (`{port}` in subjects): letters, digits, `-` and `_`.
    pub name: String,
    /// The device and its line settings.
    #[serde(deserialize_with = "value::de_table")]
    pub port: PortSettings,
    /// How frames are cut.
    pub framing: Framing,
    /// Line delimiter (`framing = "line"`), 1 to 8 bytes; default `"\n"`.
    pub delimiter: String,
    /// Silence that ends a frame (`framing = "gap"`).
    #[serde(deserialize_with = "value::de_duration")]
    pub gap: Duration,
    /// Frame length (`framing = "fixed"`).
    pub frame_len: usize,
    /// Longest frame; longer ones are dropped and counted (default 1024).
    pub max_frame: usize,
    /// Subject template: `{board}`, `{port}`, and `{channel}` (cobs) or `{field}` (kv,
    /// json).
    pub subject: String,
    /// How a frame is split into messages.
    pub format: Format,
}

impl Default for SerialSource {
    fn default() -> Self {
        SerialSource {
            name: String::new(),
            port: PortSettings::default(),
            framing: Framing::Line,
            delimiter: "\n".to_owned(),
            gap: DEFAULT_GAP,
            frame_len: 0,
            max_frame: DEFAULT_MAX_FRAME,
            subject: DEFAULT_SUBJECT.to_owned(),
            format: Format::Raw,
        }
    }
}

/// Whether `name` may name a port, bus or group: letters, digits, `-` and `_`.
pub(crate) fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl PortSettings {
    /// Checks the line settings; `key` is the table's key (`serial[0].port`).
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let k = |f: &str| format!("{key}.{f}");
        match &self.device {
            Device::Path(p) if p.is_empty() => {
                return Err(ConfigError::invalid(
                    k("device"),
                    "missing: a path such as /dev/serial/by-id/..., a board name such as \
                     serial0, or { vid, pid, serial }",
                ))
            }
            Device::Usb(u) => {
                for (f, v) in [("vid", &u.vid), ("pid", &u.pid)] {
                    if v.len() != 4 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(ConfigError::invalid(
                            k(&format!("device.{f}")),
                            "must be 4 hexadecimal digits, as lsusb shows it (e.g. \"0403\")",
                        ));
                    }
                }
            }
            Device::Path(_) => {}
        }
        if self.baud == 0 {
            return Err(ConfigError::invalid(k("baud"), "must be above 0"));
        }
        if !(5..=8).contains(&self.data_bits) {
            return Err(ConfigError::invalid(k("data_bits"), "must be 5, 6, 7 or 8"));
        }
        if !(1..=2).contains(&self.stop_bits) {
            return Err(ConfigError::invalid(k("stop_bits"), "must be 1 or 2"));
        }
        Ok(())
    }
}

impl SerialSource {
    /// Checks the entry `serial[index]`.
    pub(crate) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let k = |f: &str| format!("serial[{index}].{f}");
        if !is_source_name(&self.name) {
            return Err(ConfigError::invalid(
                k("name"),
                "must be letters, digits, `-` or `_` (it names the port in subjects)",
            ));
        }
        self.port.validate(&k("port"))?;
        let limit = MAX_FRAME_LIMIT;
        if self.max_frame == 0 || self.max_frame > limit {
            return Err(ConfigError::invalid(
                k("max_frame"),
                format!("must be 1 to {limit} bytes"),
            ));
        }
        match self.framing {
            Framing::Line if self.delimiter.is_empty() || self.delimiter.len() > 8 => {
                return Err(ConfigError::invalid(k("delimiter"), "must be 1 to 8 bytes"));
            }
            Framing::Gap if self.gap.is_zero() => {
                return Err(ConfigError::invalid(k("gap"), "must be above 0"));
            }
            Framing::Fixed if self.frame_len == 0 || self.frame_len > self.max_frame => {
                return Err(ConfigError::invalid(
                    k("frame_len"),
                    "framing = \"fixed\" needs frame_len, 1 to max_frame bytes",
                ));
            }
            _ => {}
        }
        if self.subject.is_empty() {
            return Err(ConfigError::invalid(k("subject"), "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<crate::gateway::config::Settings, String> {
        let cfg =
            crate::gateway::config::parse_str(text, crate::gateway::config::Format::Toml, "t.toml")
                .map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn serial_entries_parse_and_validate() {
        let cfg = parse(
            "board = \"rpi4\"\n[[serial]]\nname = \"scale\"\n\
             port = { device = \"serial0\", baud = 115200, parity = \"even\" }\n\
             framing = \"line\"\ndelimiter = \"\\r\\n\"\nformat = \"kv\"\n\
             subject = \"s.{port}.{field}\"\n\
             [[serial]]\nname = \"mcu\"\nframing = \"cobs\"\n\
             port = { device = { vid = \"0403\", pid = \"6001\", serial = \"A1\" } }\n",
        )
        .unwrap();
        assert_eq!(cfg.serial.len(), 2);
        assert_eq!(cfg.serial[0].port.baud, 115200);
        assert_eq!(cfg.serial[0].port.parity, Parity::Even);
        assert_eq!(cfg.serial[0].delimiter, "\r\n");
        assert_eq!(cfg.serial[0].format, Format::Kv);
        assert_eq!(cfg.serial[1].framing, Framing::Cobs);
        assert!(
            matches!(&cfg.serial[1].port.device, Device::Usb(u) if u.serial.as_deref() == Some("A1"))
        );
    }

    #[test]
    fn serial_errors_name_the_key() {
        let err = |text: &str| parse(text).unwrap_err();
        let e = err("[[serial]]\nname = \"a\"\nport = { device = \"/dev/x\", baud = 0 }\n");
        assert!(e.contains("serial[0].port.baud"), "{e}");
        let e = err("[[serial]]\nname = \"a\"\nport = { device = \"/dev/x\", data_bits = 9 }\n");
        assert!(e.contains("serial[0].port.data_bits"), "{e}");
        let e =
            err("[[serial]]\nname = \"a\"\nport = { device = \"/dev/x\" }\nframing = \"fixed\"\n");
        assert!(e.contains("serial[0].frame_len"), "{e}");
        let e = err("[[serial]]\nname = \"a b\"\nport = { device = \"/dev/x\" }\n");
        assert!(e.contains("serial[0].name"), "{e}");
        let e = err("[[serial]]\nname = \"a\"\nport = { device = \"/dev/x\", bad = 1 }\n");
        assert!(e.contains("t.toml:3") && e.contains("bad"), "{e}");
        let e =
            err("[[serial]]\nname = \"a\"\nport = { device = { vid = \"x\", pid = \"6001\" } }\n");
        assert!(e.contains("serial[0].port.device"), "{e}");
        let e = err("[[serial]]\nname = \"a\"\nport = { device = \"/dev/x\" }\n[[serial]]\nname = \"a\"\nport = { device = \"/dev/y\" }\n");
        assert!(e.contains("serial[1].name"), "{e}");
    }

    #[test]
    fn char_time_counts_every_bit() {
        let p = PortSettings {
            baud: 9600,
            parity: Parity::Even,
            ..PortSettings::default()
        };
        // 1 start + 8 data + 1 parity + 1 stop = 11 bits at 9600 baud.
        assert_eq!(
            p.char_time(),
            Duration::from_nanos(11 * 1_000_000_000 / 9600)
        );
    }
}
