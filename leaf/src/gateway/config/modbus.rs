//! `[[modbus]]`: Modbus RTU buses polled by leafd.
//!
//! ```toml
//! [[modbus]]
//! name = "meter"                                   # letters, digits, - and _
//! port = { device = "/dev/ttyUSB0", baud = 9600, parity = "even" }
//! timeout = "500ms"                                # per request (default 1s)
//! frame_gap = "5ms"                                # default: 3.5 characters, at least 1.75 ms
//! subject = "sensors.{board}.{bus}.{register}"     # the default
//! write_subject = "modbus.{bus}.write"             # request/reply writes (off by default)
//!
//! [[modbus.registers]]
//! name = "voltage"
//! slave = 1
//! kind = "holding"          # holding | input | coil | discrete
//! address = 0
//! type = "f32"              # u16 | i16 | u32 | i32 | f32 (coil and discrete: bool)
//! byte_order = "big"        # within each 16-bit word
//! word_order = "big"        # 32-bit types: big = high word first
//! count = 1                 # consecutive values; more than 1 publishes an array
//! scale = 0.1               # published value = raw * scale + offset
//! offset = 0.0
//! unit = "V"
//! interval = "1s"
//! writable = false          # may be written through write_subject
//! ```

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::serial::{Device, PortSettings};
use super::{value, ConfigError};
use crate::gateway::template::Template;

/// Default subject template of a Modbus register.
pub const DEFAULT_SUBJECT: &str = "sensors.{board}.{bus}.{register}";
/// Default time a slave gets to answer one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default poll interval of a register.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest silence between two frames: the specification fixes 1.75 ms above
/// 19200 baud, where 3.5 character times would be shorter.
pub const MIN_FRAME_GAP: Duration = Duration::from_micros(1750);
/// Most registers one read request may ask for (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u32 = 125;
/// Most coils or discrete inputs one read request may ask for (function codes 1 and 2).
pub const MAX_READ_BITS: u32 = 2000;
/// Most registers one write request may carry (function code 16).
pub const MAX_WRITE_REGISTERS: u32 = 123;
/// Most coils one write request may carry (function code 15).
pub const MAX_WRITE_BITS: u32 = 1968;

/// Placeholders a register subject template may use.
pub(crate) const SUBJECT_PLACEHOLDERS: &[&str] = &["board", "server", "bus", "register", "slave"];
/// Placeholders a write subject template may use.
pub(crate) const WRITE_PLACEHOLDERS: &[&str] = &["board", "server", "bus"];

/// Which Modbus table a register lives in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Holding registers (read: function 3; write: 6 and 16).
    #[default]
    Holding,
    /// Input registers (read: function 4; read only).
    Input,
    /// Coils (read: function 1; write: 5 and 15).
    Coil,
    /// Discrete inputs (read: function 2; read only).
    Discrete,
}

impl RegisterKind {
    /// Whether the table holds single bits (coils, discrete inputs) rather than 16-bit
    /// registers.
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// Whether Modbus can write this table at all.
    pub fn is_writable(self) -> bool {
        matches!(self, RegisterKind::Holding | RegisterKind::Coil)
    }
}

/// How the words of a register are read as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Unsigned 16-bit integer (one register).
    U16,
    /// Signed 16-bit integer (one register).
    I16,
    /// Unsigned 32-bit integer (two registers).
    U32,
    /// Signed 32-bit integer (two registers).
    I32,
    /// IEEE 754 single precision (two registers).
    F32,
    /// One bit (coils and discrete inputs).
    Bool,
}

impl ValueType {
    /// The type's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
        }
    }

    /// Registers (or bits, for `Bool`) one value takes.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U16 | ValueType::I16 | ValueType::Bool => 1,
        }
    }
}

/// Byte order within a 16-bit word, or word order within a 32-bit value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Most significant first (Modbus's own order).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// One `[[modbus.registers]]` entry: a run of values read with one request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Register {
    /// The register's name (`{register}` in subjects, `register` in write requests):
    /// letters, digits, `-` and `_`.
    pub name: String,
    /// The slave (unit) id, 1 to 247 (default 1).
    pub slave: u8,
    /// Which table (default holding).
    pub kind: RegisterKind,
    /// The protocol address of the first register or bit (0-based).
    pub address: u16,
    /// The value type (default `u16` for registers, `bool` for coils and discrete inputs);
    /// see [`Register::value_type`].
    #[serde(rename = "type")]
    pub value_type: Option<ValueType>,
    /// Byte order within each word (default big).
    pub byte_order: Order,
    /// Word order of 32-bit types (default big: high word first).
    pub word_order: Order,
    /// Consecutive values read (default 1); more than one publishes a JSON array.
    pub count: u16,
    /// Multiplier applied to the raw value (default 1).
    pub scale: f64,
    /// Added after scaling (default 0).
    pub offset: f64,
    /// The unit published with the value.
    pub unit: Option<String>,
    /// Time between two reads (default 1 s).
    #[serde(deserialize_with = "value::de_duration")]
    pub interval: Duration,
    /// May be written through the bus's `write_subject`.
    pub writable: bool,
}

impl Default for Register {
    fn default() -> Self {
        Register {
            name: String::new(),
            slave: 1,
            kind: RegisterKind::Holding,
            address: 0,
            value_type: None,
            byte_order: Order::Big,
            word_order: Order::Big,
            count: 1,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            interval: DEFAULT_INTERVAL,
            writable: false,
        }
    }
}

impl Register {
    /// The configured type, or the kind's default (`u16` or `bool`).
    pub fn value_type(&self) -> ValueType {
        self.value_type.unwrap_or(if self.kind.is_bits() {
            ValueType::Bool
        } else {
            ValueType::U16
        })
    }

    /// Registers (or bits) one request covers: `count` values of the type's width.
    pub fn quantity(&self) -> u32 {
        u32::from(self.count) * u32::from(self.value_type().width())
    }

    /// Whether values are published unchanged (no scale, no offset).
    pub fn is_unscaled(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }
}

/// One `[[modbus]]` entry: a serial line with its register map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusBus {
    /// The bus's name (`{bus}` in subjects): letters, digits, `-` and `_`.
    pub name: String,
    /// The device and its line settings (Modbus RTU needs 8 data bits).
    #[serde(deserialize_with = "value::de_table")]
    pub port: PortSettings,
    /// Time a slave gets to answer one request (default 1 s).
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
    /// Silence kept between the end of one transaction and the next request (default:
    /// see [`ModbusBus::frame_gap`]).
    #[serde(deserialize_with = "value::de_opt_duration")]
    pub frame_gap: Option<Duration>,
    /// Subject template for values: `{board}`, `{server}`, `{bus}`, `{register}`,
    /// `{slave}`.
    pub subject: String,
    /// Request/reply subject for writes (`{board}`, `{server}`, `{bus}`); none by default.
    pub write_subject: Option<String>,
    /// The register map.
    #[serde(deserialize_with = "value::de_table_list")]
    pub registers: Vec<Register>,
}

impl Default for ModbusBus {
    fn default() -> Self {
        ModbusBus {
            name: String::new(),
            port: PortSettings::default(),
            timeout: DEFAULT_TIMEOUT,
            frame_gap: None,
            subject: DEFAULT_SUBJECT.to_owned(),
            write_subject: None,
            registers: Vec::new(),
        }
    }
}

impl ModbusBus {
    /// The silence kept between transactions: `frame_gap` if set, else 3.5 character
    /// times but at least [`MIN_FRAME_GAP`] (the specification's fixed value above
    /// 19200 baud).
    pub fn frame_gap(&self) -> Duration {
        self.frame_gap
            .unwrap_or_else(|| (self.port.char_time() * 7 / 2).max(MIN_FRAME_GAP))
    }

    /// Checks the bus `modbus[index]`; errors name the key
    /// (`modbus[0].registers[2].type`).
    pub(crate) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("modbus[{index}].{k}");
        if !is_name(&self.name) {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty and contain only letters, digits, `-` and `_`",
            ));
        }
        self.validate_port(index)?;
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                key("timeout"),
                "must be greater than zero",
            ));
        }
        Template::parse(&self.subject, SUBJECT_PLACEHOLDERS)
            .map_err(|e| ConfigError::invalid(key("subject"), e.to_string()))?;
        if let Some(write) = &self.write_subject {
            Template::parse(write, WRITE_PLACEHOLDERS)
                .map_err(|e| ConfigError::invalid(key("write_subject"), e.to_string()))?;
        }
        if self.registers.is_empty() {
            return Err(ConfigError::invalid(
                key("registers"),
                "must list at least one register",
            ));
        }
        let mut names = HashSet::with_capacity(self.registers.len());
        for (i, reg) in self.registers.iter().enumerate() {
            let rkey = |k: &str| format!("modbus[{index}].registers[{i}].{k}");
            if !is_name(&reg.name) {
                return Err(ConfigError::invalid(
                    rkey("name"),
                    "must be non-empty and contain only letters, digits, `-` and `_`",
                ));
            }
            if !names.insert(reg.name.as_str()) {
                return Err(ConfigError::invalid(
                    rkey("name"),
                    format!("`{}` is used by another register of this bus", reg.name),
                ));
            }
            validate_register(reg, &rkey)?;
            if reg.writable && self.write_subject.is_none() {
                return Err(ConfigError::invalid(
                    rkey("writable"),
                    format!("writes need modbus[{index}].write_subject"),
                ));
            }
        }
        Ok(())
    }

    fn validate_port(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("modbus[{index}].port.{k}");
        let port = &self.port;
        if matches!(&port.device, Device::Path(p) if p.is_empty()) {
            return Err(ConfigError::invalid(key("device"), "missing device"));
        }
        if port.baud == 0 {
            return Err(ConfigError::invalid(
                key("baud"),
                "must be greater than zero",
            ));
        }
        if port.data_bits != 8 {
            return Err(ConfigError::invalid(
                key("data_bits"),
                format!("Modbus RTU uses 8 data bits, got {}", port.data_bits),
            ));
        }
        if !matches!(port.stop_bits, 1 | 2) {
            return Err(ConfigError::invalid(
                key("stop_bits"),
                format!("must be 1 or 2, got {}", port.stop_bits),
            ));
        }
        if port.reopen_max.is_zero() {
            return Err(ConfigError::invalid(
                key("reopen_max"),
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// The checks of one register that do not involve its neighbours.
fn validate_register(reg: &Register, rkey: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if !(1..=247).contains(&reg.slave) {
        return Err(ConfigError::invalid(
            rkey("slave"),
            format!("must be between 1 and 247, got {}", reg.slave),
        ));
    }
    let ty = reg.value_type();
    if reg.kind.is_bits() != (ty == ValueType::Bool) {
        let expected = if reg.kind.is_bits() {
            "bool"
        } else {
            "one of u16, i16, u32, i32, f32"
        };
        return Err(ConfigError::invalid(
            rkey("type"),
            format!(
                "`{}` does not fit a {} register: expected {expected}",
                ty.as_str(),
                kind_name(reg.kind)
            ),
        ));
    }
    if reg.count == 0 {
        return Err(ConfigError::invalid(rkey("count"), "must be at least 1"));
    }
    let quantity = reg.quantity();
    let (read_max, write_max, what) = if reg.kind.is_bits() {
        (MAX_READ_BITS, MAX_WRITE_BITS, "bits")
    } else {
        (MAX_READ_REGISTERS, MAX_WRITE_REGISTERS, "registers")
    };
    if quantity > read_max {
        return Err(ConfigError::invalid(
            rkey("count"),
            format!("reads {quantity} {what}; one request reads at most {read_max}"),
        ));
    }
    if u32::from(reg.address) + quantity > 0x1_0000 {
        return Err(ConfigError::invalid(
            rkey("address"),
            format!(
                "{} {what} from address {} run past 65535",
                quantity, reg.address
            ),
        ));
    }
    if !reg.scale.is_finite() || reg.scale == 0.0 {
        return Err(ConfigError::invalid(
            rkey("scale"),
            "must be a finite number other than zero",
        ));
    }
    if !reg.offset.is_finite() {
        return Err(ConfigError::invalid(
            rkey("offset"),
            "must be a finite number",
        ));
    }
    if reg.interval.is_zero() {
        return Err(ConfigError::invalid(
            rkey("interval"),
            "must be greater than zero",
        ));
    }
    if reg.writable {
        if !reg.kind.is_writable() {
            return Err(ConfigError::invalid(
                rkey("writable"),
                format!(
                    "{} registers are read only; only holding registers and coils can be written",
                    kind_name(reg.kind)
                ),
            ));
        }
        if quantity > write_max {
            return Err(ConfigError::invalid(
                rkey("count"),
                format!("writes {quantity} {what}; one request writes at most {write_max}"),
            ));
        }
    }
    Ok(())
}

fn kind_name(kind: RegisterKind) -> &'static str {
    match kind {
        RegisterKind::Holding => "holding",
        RegisterKind::Input => "input",
        RegisterKind::Coil => "coil",
        RegisterKind::Discrete => "discrete",
    }
}

/// Letters, digits, `-` and `_`, non-empty: safe as one subject token.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::super::{parse_str, Format, Settings};
    use super::*;

    const FULL: &str = r#"
        [[modbus]]
        name = "meter"
        port = { device = "/dev/ttyUSB0", baud = 9600, parity = "even" }
        timeout = "500ms"
        frame_gap = "5ms"
        write_subject = "modbus.{bus}.write"

        [[modbus.registers]]
        name = "voltage"
        slave = 2
        kind = "holding"
        address = 10
        type = "f32"
        byte_order = "little"
        word_order = "little"
        count = 3
        scale = 0.1
        offset = -1.5
        unit = "V"
        interval = "250ms"
        writable = true

        [[modbus.registers]]
        name = "relay"
        kind = "coil"
    "#;

    fn parse(text: &str) -> Settings {
        parse_str(text, Format::Toml, "leafd.toml").unwrap()
    }

    fn bus(extra: &str) -> ModbusBus {
        let text =
            format!("[[modbus]]\nname = \"b\"\nport = {{ device = \"/dev/ttyS0\" }}\n{extra}");
        let mut cfg = parse(&text);
        cfg.modbus.remove(0)
    }

    fn invalid(extra: &str) -> String {
        bus(extra).validate(0).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_key() {
        let cfg = parse(FULL);
        let bus = &cfg.modbus[0];
        assert_eq!(bus.name, "meter");
        assert_eq!(bus.port.device, Device::Path("/dev/ttyUSB0".into()));
        assert_eq!(
            bus.port.parity,
            crate::gateway::config::serial::Parity::Even
        );
        assert_eq!(bus.timeout, Duration::from_millis(500));
        assert_eq!(bus.frame_gap(), Duration::from_millis(5));
        assert_eq!(bus.subject, DEFAULT_SUBJECT);
        assert_eq!(bus.write_subject.as_deref(), Some("modbus.{bus}.write"));
        let v = &bus.registers[0];
        assert_eq!(
            (v.slave, v.kind, v.address, v.value_type()),
            (2, RegisterKind::Holding, 10, ValueType::F32)
        );
        assert_eq!((v.byte_order, v.word_order), (Order::Little, Order::Little));
        assert_eq!((v.count, v.quantity()), (3, 6));
        assert_eq!((v.scale, v.offset), (0.1, -1.5));
        assert_eq!(v.unit.as_deref(), Some("V"));
        assert_eq!(v.interval, Duration::from_millis(250));
        assert!(v.writable);
        let r = &bus.registers[1];
        assert_eq!(
            (r.kind, r.value_type(), r.slave),
            (RegisterKind::Coil, ValueType::Bool, 1)
        );
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        bus.validate(0).unwrap();
    }

    #[test]
    fn defaults() {
        let b = bus("[[modbus.registers]]\nname = \"r\"");
        assert_eq!(b.timeout, DEFAULT_TIMEOUT);
        assert_eq!(b.write_subject, None);
        let r = &b.registers[0];
        assert_eq!(r.value_type(), ValueType::U16);
        assert_eq!((r.count, r.scale, r.offset), (1, 1.0, 0.0));
        assert!(r.is_unscaled());
        // 9600 baud, 8N1: 10 bits a character, 3.5 characters = 3.646 ms.
        assert_eq!(
            b.frame_gap(),
            Duration::from_nanos(10 * 1_000_000_000 / 9600 * 7 / 2)
        );
        let fast = ModbusBus {
            port: PortSettings {
                baud: 115_200,
                ..PortSettings::default()
            },
            ..ModbusBus::default()
        };
        assert_eq!(fast.frame_gap(), MIN_FRAME_GAP);
        b.validate(0).unwrap();
    }

    #[test]
    fn parse_errors_name_the_key() {
        let err = parse_str(
            "[[modbus]]\nname = \"b\"\n[[modbus.registers]]\nname = \"r\"\ntype = \"u64\"",
            Format::Toml,
            "leafd.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("modbus[0].registers[0].type"), "{err}");
        let err = parse_str(
            "[[modbus]]\nname = \"b\"\n[[modbus.registers]]\nname = \"r\"\nsacle = 2",
            Format::Toml,
            "leafd.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("modbus[0].registers[0].sacle"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let cases = [
            ("timeout = \"0\"\n[[modbus.registers]]\nname = \"r\"", "modbus[0].timeout"),
            ("subject = \"s.{nope}\"\n[[modbus.registers]]\nname = \"r\"", "modbus[0].subject"),
            ("subject = \"s.>\"\n[[modbus.registers]]\nname = \"r\"", "modbus[0].subject"),
            (
                "write_subject = \"w.{register}\"\n[[modbus.registers]]\nname = \"r\"",
                "modbus[0].write_subject",
            ),
            ("", "modbus[0].registers"),
            ("[[modbus.registers]]\nname = \"r.x\"", "modbus[0].registers[0].name"),
            (
                "[[modbus.registers]]\nname = \"r\"\n[[modbus.registers]]\nname = \"r\"",
                "modbus[0].registers[1].name",
            ),
            ("[[modbus.registers]]\nname = \"r\"\nslave = 0", "modbus[0].registers[0].slave"),
            ("[[modbus.registers]]\nname = \"r\"\nslave = 248", "modbus[0].registers[0].slave"),
            (
                "[[modbus.registers]]\nname = \"r\"\nkind = \"coil\"\ntype = \"u16\"",
                "modbus[0].registers[0].type",
            ),
            ("[[modbus.registers]]\nname = \"r\"\ntype = \"bool\"", "modbus[0].registers[0].type"),
            ("[[modbus.registers]]\nname = \"r\"\ncount = 0", "modbus[0].registers[0].count"),
            (
                "[[modbus.registers]]\nname = \"r\"\ntype = \"u32\"\ncount = 63",
                "modbus[0].registers[0].count",
            ),
            (
                "[[modbus.registers]]\nname = \"r\"\naddress = 65535\ntype = \"f32\"",
                "modbus[0].registers[0].address",
            ),
            ("[[modbus.registers]]\nname = \"r\"\nscale = 0", "modbus[0].registers[0].scale"),
            ("[[modbus.registers]]\nname = \"r\"\ninterval = \"0\"", "modbus[0].registers[0].interval"),
            ("[[modbus.registers]]\nname = \"r\"\nwritable = true", "modbus[0].registers[0].writable"),
            (
                "write_subject = \"w\"\n[[modbus.registers]]\nname = \"r\"\nkind = \"input\"\nwritable = true",
                "modbus[0].registers[0].writable",
            ),
            (
                "write_subject = \"w\"\n[[modbus.registers]]\nname = \"r\"\ncount = 124\nwritable = true",
                "modbus[0].registers[0].count",
            ),
        ];
        for (extra, key) in cases {
            let err = invalid(extra);
            assert!(err.starts_with(&format!("{key}: ")), "{extra:?}: {err}");
        }
        let mut b = bus("[[modbus.registers]]\nname = \"r\"");
        b.name = "a b".into();
        let err = b.validate(0).unwrap_err().to_string();
        assert!(err.starts_with("modbus[0].name: "), "{err}");
        b.name = "b".into();
        b.port.data_bits = 7;
        let err = b.validate(3).unwrap_err().to_string();
        assert!(err.starts_with("modbus[3].port.data_bits: "), "{err}");
        b.port.data_bits = 8;
        b.port.device = Device::Path(String::new());
        let err = b.validate(0).unwrap_err().to_string();
        assert!(err.starts_with("modbus[0].port.device: "), "{err}");
    }

    #[test]
    fn templates() {
        let t = Template::parse("sensors.{board}.{bus}.{register}", SUBJECT_PLACEHOLDERS).unwrap();
        assert_eq!(
            t.fill(&[("board", "pi"), ("bus", "m"), ("register", "v")]),
            "sensors.pi.m.v"
        );
        assert!(Template::parse("a.{bus}", WRITE_PLACEHOLDERS).is_ok());
        assert!(Template::parse("a.{register}", WRITE_PLACEHOLDERS).is_err());
        assert!(Template::parse("a.{bus", WRITE_PLACEHOLDERS).is_err());
        assert!(Template::parse("a.*", WRITE_PLACEHOLDERS).is_err());
        assert!(Template::parse("a..{bus}", WRITE_PLACEHOLDERS).is_err());
    }
}
