//! Board definitions: the serial devices and GPIO lines of the board leafd runs on, so a
//! config can say `serial0` or `GPIO17` instead of a device path or a chip and offset.
//!
//! A board is a small TOML file (the format is documented in `boards/README.md` at the
//! repository root). The boards in `boards/` are compiled into the binary (a device install
//! has no checkout); [`Board::load`] reads `<boards_dir>/<name>.toml` first, so a file can
//! override a built-in board or add a new one.
//!
//! GPIO chips are named by their **label** (`pinctrl-bcm2711`, `pinctrl-rp1`), not their
//! number: on the Raspberry Pi 5 the RP1 chip was `gpiochip4` on early OS builds and
//! `gpiochip0` later. A board line has a name (`GPIO17`) and, usually, its offset on the
//! chip. At run time the line is looked up on the chip by that name, and by the offset when
//! the kernel names it differently: device trees have named the same header line `GPIO17`,
//! `PIN11` or nothing over the years.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::gateway::config::line_of;

/// The built-in boards: name and TOML text.
const BUILTIN: &[(&str, &str)] = &[
    ("rpi4", include_str!("../../../boards/rpi4.toml")),
    ("rpi5", include_str!("../../../boards/rpi5.toml")),
    (
        "rpi-zero2w",
        include_str!("../../../boards/rpi-zero2w.toml"),
    ),
    ("cm4", include_str!("../../../boards/cm4.toml")),
    (
        "generic-arm64",
        include_str!("../../../boards/generic-arm64.toml"),
    ),
];

/// Why a board could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// No built-in board and no file with this name.
    #[error(
        "unknown board `{0}` (built-in boards: {list}; others are read from \
         <boards_dir>/<name>.toml)",
        list = Board::builtin_names().join(", ")
    )]
    Unknown(String),
    /// The board file exists but could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The board file is not valid TOML or a value has the wrong type.
    #[error("{file}{}: {key}{}{message}", line.map(|l| format!(":{l}")).unwrap_or_default(), if key.is_empty() { "" } else { ": " })]
    Parse {
        /// The file (or `built-in <name>`).
        file: String,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// The dotted key, e.g. `gpio.chips[0].lines.GPIO17` (empty for syntax errors).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The board file parsed but is inconsistent (an alias to a line it does not define, a
    /// device that is not a path, ...).
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file (or `built-in <name>`).
        file: String,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A GPIO chip, as a line refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChipRef {
    /// The chip's label (`pinctrl-bcm2711`): found by scanning `/dev/gpiochip*`.
    Label(String),
    /// A device path (`/dev/gpiochip0`).
    Path(PathBuf),
}

impl ChipRef {
    /// Parses the chip part of `chip:line`: a path, a `gpiochipN` device name, or a label.
    pub fn parse(chip: &str) -> ChipRef {
        if chip.starts_with('/') {
            ChipRef::Path(PathBuf::from(chip))
        } else if chip
            .strip_prefix("gpiochip")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            ChipRef::Path(Path::new("/dev").join(chip))
        } else {
            ChipRef::Label(chip.to_owned())
        }
    }
}

impl fmt::Display for ChipRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChipRef::Label(l) => f.write_str(l),
            ChipRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where a GPIO line is: its chip, and the kernel line name and/or offset to find it by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpioLine {
    /// The chip.
    pub chip: ChipRef,
    /// The kernel's name for the line, looked up first.
    pub name: Option<String>,
    /// The offset on the chip, used when there is no name or the kernel does not know it.
    pub offset: Option<u32>,
}

impl GpioLine {
    /// Parses `<chip label or path>:<line name or offset>`; `None` when `spec` has no `:`.
    pub fn parse_explicit(spec: &str) -> Option<Result<GpioLine, String>> {
        let (chip, line) = spec.rsplit_once(':')?;
        if chip.is_empty() || line.is_empty() {
            return Some(Err(format!(
                "`{spec}`: write <chip label or path>:<line name or offset>"
            )));
        }
        let (name, offset) = if line.bytes().all(|b| b.is_ascii_digit()) {
            match line.parse::<u32>() {
                Ok(o) => (None, Some(o)),
                Err(_) => return Some(Err(format!("`{spec}`: offset out of range"))),
            }
        } else {
            (Some(line.to_owned()), None)
        };
        Some(Ok(GpioLine {
            chip: ChipRef::parse(chip),
            name,
            offset,
        }))
    }

    /// The line's offset on a chip whose lines are named `names` (by offset): the line
    /// with [`GpioLine::name`] if there is one, else [`GpioLine::offset`] if the chip has
    /// that many lines.
    pub fn offset_in(&self, names: &[String]) -> Option<u32> {
        let by_name = self
            .name
            .as_deref()
            .and_then(|n| names.iter().position(|k| k == n))
            .and_then(|i| u32::try_from(i).ok());
        by_name.or_else(|| {
            self.offset
                .filter(|&o| usize::try_from(o).is_ok_and(|o| o < names.len()))
        })
    }
}

impl fmt::Display for GpioLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, self.offset) {
            (Some(n), Some(o)) => write!(f, "{}:{n} (offset {o})", self.chip),
            (Some(n), None) => write!(f, "{}:{n}", self.chip),
            (None, Some(o)) => write!(f, "{}:{o}", self.chip),
            (None, None) => write!(f, "{}:?", self.chip),
        }
    }
}

/// Resolves a config's `line` setting: `chip:line` as written, else a line or alias of
/// `board`.
///
/// # Errors
/// A message for the config key: the line is not on the board, or there is no board.
pub fn resolve_line(spec: &str, board: Option<&Board>) -> Result<GpioLine, String> {
    if let Some(explicit) = GpioLine::parse_explicit(spec) {
        return explicit;
    }
    match board {
        Some(b) => b.gpio_line(spec).ok_or_else(|| {
            let known = b.line_summary();
            if known.is_empty() {
                format!(
                    "board `{}` names no GPIO lines; write `{spec}` as \
                     <chip label or path>:<line name or offset>",
                    b.name
                )
            } else {
                format!(
                    "board `{}` has no line `{spec}` ({known}); other lines are written \
                     <chip label or path>:<line name or offset>",
                    b.name
                )
            }
        }),
        None => Err(format!(
            "no `board` is configured to resolve `{spec}`; set `board` or write \
             <chip label or path>:<line name or offset>"
        )),
    }
}

/// One line a board names.
#[derive(Debug, Clone)]
struct BoardLine {
    /// The board's name for it (`GPIO17`).
    name: String,
    /// The chip's label.
    chip: String,
    /// The kernel name to look up.
    lookup: String,
    /// The offset, when the board gives one.
    offset: Option<u32>,
}

/// A board definition.
#[derive(Debug, Clone)]
pub struct Board {
    /// The board's name (`rpi4`): `{board}` in subject templates.
    pub name: String,
    /// What the board is.
    pub description: String,
    /// The Rust target triples leafd is built for on this board.
    pub targets: Vec<String>,
    /// Where the definition came from: `built-in` or the file's path.
    pub origin: String,
    serial: BTreeMap<String, String>,
    lines: Vec<BoardLine>,
    aliases: BTreeMap<String, String>,
}

/// A board file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    serial: BTreeMap<String, String>,
    #[serde(default)]
    gpio: GpioFile,
}

/// The `[gpio]` table of a board file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GpioFile {
    #[serde(default)]
    chips: Vec<ChipFile>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

/// One `[[gpio.chips]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChipFile {
    label: String,
    #[serde(default)]
    lines: BTreeMap<String, LineFile>,
}

/// A line of a chip: `GPIO17 = 17` (look the name up, else use offset 17) or
/// `LED = "ACT_LED"` (look the kernel name `ACT_LED` up).
#[derive(Deserialize)]
#[serde(untagged)]
enum LineFile {
    Offset(u32),
    Kernel(String),
}

impl Board {
    /// The names of the built-in boards.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// Loads the board `name`: `<dir>/<name>.toml` when `dir` is given and the file
    /// exists, else the built-in board of that name.
    ///
    /// # Errors
    /// [`BoardError::Unknown`] when neither exists; the other variants when the file cannot
    /// be read or is wrong (naming the file and the key).
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Board, BoardError> {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !plain {
            return Err(BoardError::Unknown(name.to_owned()));
        }
        if let Some(dir) = dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|source| BoardError::Io {
                    path: path.clone(),
                    source,
                })?;
                return Board::parse(&text, name, &path.display().to_string());
            }
        }
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| BoardError::Unknown(name.to_owned()))?;
        let mut board = Board::parse(text, name, &format!("built-in {name}"))?;
        "built-in".clone_into(&mut board.origin);
        Ok(board)
    }

    /// Parses a board definition. `name` is the name it is loaded as (a `name` key in the
    /// file must match it); `file` labels errors.
    ///
    /// # Errors
    /// [`BoardError::Parse`] or [`BoardError::Invalid`], naming `file` and the key.
    pub fn parse(text: &str, name: &str, file: &str) -> Result<Board, BoardError> {
        let raw: BoardFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let inner = e.inner();
                BoardError::Parse {
                    file: file.to_owned(),
                    line: inner.span().map(|s| line_of(text, s.start)),
                    key: e.path().to_string().trim_start_matches('.').to_owned(),
                    message: inner.message().trim_end().replace('\n', "; "),
                }
            })?;
        let invalid = |key: String, message: String| BoardError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        if let Some(n) = &raw.name {
            if n != name {
                return Err(invalid(
                    "name".into(),
                    format!("`{n}` does not match the name it is loaded as (`{name}`)"),
                ));
            }
        }
        for (alias, device) in &raw.serial {
            if !device.starts_with('/') {
                return Err(invalid(
                    format!("serial.{alias}"),
                    format!("`{device}` is not an absolute device path"),
                ));
            }
        }
        let mut lines: Vec<BoardLine> = Vec::new();
        for (i, chip) in raw.gpio.chips.iter().enumerate() {
            if chip.label.is_empty() {
                return Err(invalid(
                    format!("gpio.chips[{i}].label"),
                    "missing: the chip's label, as gpiodetect shows it".into(),
                ));
            }
            for (line, def) in &chip.lines {
                let key = || format!("gpio.chips[{i}].lines.{line}");
                if line.is_empty() || line.contains(':') || line.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        key(),
                        "a line name has no `:` or whitespace".into(),
                    ));
                }
                if lines.iter().any(|l| l.name.eq_ignore_ascii_case(line)) {
                    return Err(invalid(key(), format!("`{line}` is defined twice")));
                }
                let (lookup, offset) = match def {
                    LineFile::Offset(o) => (line.clone(), Some(*o)),
                    LineFile::Kernel(k) if !k.is_empty() => (k.clone(), None),
                    LineFile::Kernel(_) => {
                        return Err(invalid(key(), "an empty kernel line name".into()));
                    }
                };
                lines.push(BoardLine {
                    name: line.clone(),
                    chip: chip.label.clone(),
                    lookup,
                    offset,
                });
            }
        }
        lines.sort_by(|a, b| {
            (a.chip.as_str(), a.offset, a.name.as_str()).cmp(&(
                b.chip.as_str(),
                b.offset,
                b.name.as_str(),
            ))
        });
        for (alias, target) in &raw.gpio.aliases {
            let key = format!("gpio.aliases.{alias}");
            if lines.iter().any(|l| l.name.eq_ignore_ascii_case(alias)) {
                return Err(invalid(key, format!("`{alias}` is also a line name")));
            }
            if !lines.iter().any(|l| l.name == *target) {
                return Err(invalid(key, format!("no line `{target}` on this board")));
            }
        }
        Ok(Board {
            name: name.to_owned(),
            description: raw.description,
            targets: raw.targets,
            origin: file.to_owned(),
            serial: raw.serial,
            lines,
            aliases: raw.gpio.aliases,
        })
    }

    /// The device path of a serial alias (`serial0`), if the board defines it.
    pub fn serial_device(&self, alias: &str) -> Option<&str> {
        self.serial.get(alias).map(String::as_str)
    }

    /// Every serial alias with its device path.
    pub fn serial_aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.serial.iter().map(|(a, d)| (a.as_str(), d.as_str()))
    }

    /// The GPIO line the board calls `name` (a line name such as `GPIO17` or an alias such
    /// as `PIN11`; ASCII case is ignored).
    pub fn gpio_line(&self, name: &str) -> Option<GpioLine> {
        let find = |n: &str| self.lines.iter().find(|l| l.name.eq_ignore_ascii_case(n));
        let line = find(name).or_else(|| {
            self.aliases
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(name))
                .and_then(|(_, target)| find(target))
        })?;
        Some(GpioLine {
            chip: ChipRef::Label(line.chip.clone()),
            name: Some(line.lookup.clone()),
            offset: line.offset,
        })
    }

    /// The board's GPIO line names, by chip and offset.
    pub fn gpio_line_names(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.name.as_str()).collect()
    }

    /// The labels of the board's GPIO chips.
    pub fn gpio_chips(&self) -> Vec<&str> {
        let mut chips: Vec<&str> = self.lines.iter().map(|l| l.chip.as_str()).collect();
        chips.dedup();
        chips
    }

    /// A short list of the line names and aliases, for error messages (empty when the
    /// board names no lines).
    fn line_summary(&self) -> String {
        let lines = self.gpio_line_names();
        if lines.is_empty() {
            return String::new();
        }
        let mut aliases: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
        aliases.sort_by_key(|a| natural_key(a));
        let mut out = format!("lines {}", abridge(&lines));
        if !aliases.is_empty() {
            out.push_str("; aliases ");
            out.push_str(&abridge(&aliases));
        }
        out
    }
}

/// `GPIO0 … GPIO27` for runs of more than four names that differ only in their number;
/// other names as they are.
fn abridge(names: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, parts: &mut Vec<String>| {
        match run.as_slice() {
            [first, .., last] if run.len() > 4 => parts.push(format!("{first} … {last}")),
            _ => parts.extend(run.iter().map(|n| (*n).to_owned())),
        }
        run.clear();
    };
    for &name in names {
        if run
            .last()
            .is_some_and(|prev| natural_key(prev).0 != natural_key(name).0)
        {
            flush(&mut run, &mut parts);
        }
        run.push(name);
    }
    flush(&mut run, &mut parts);
    parts.join(", ")
}

/// Sort key that orders `PIN3` before `PIN11`.
fn natural_key(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (prefix, number) = s.split_at(s.len() - digits);
    (prefix.to_owned(), number.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_board_loads() {
        for name in Board::builtin_names() {
            let board = Board::load(name, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(board.name, name);
            assert_eq!(board.origin, "built-in");
            assert!(!board.description.is_empty(), "{name}: description");
            assert!(
                board
                    .targets
                    .iter()
                    .any(|t| t == "aarch64-unknown-linux-gnu"),
                "{name}: targets"
            );
            assert!(
                board.serial_aliases().count() >= 2,
                "{name}: serial aliases"
            );
        }
    }

    #[test]
    fn raspberry_pi_boards_name_the_header() {
        for (name, label) in [
            ("rpi4", "pinctrl-bcm2711"),
            ("cm4", "pinctrl-bcm2711"),
            ("rpi-zero2w", "pinctrl-bcm2835"),
            ("rpi5", "pinctrl-rp1"),
        ] {
            let board = Board::load(name, None).unwrap();
            assert_eq!(board.gpio_chips(), vec![label], "{name}");
            assert_eq!(board.gpio_line_names().len(), 28, "{name}");
            for n in 0..28u32 {
                let line = board.gpio_line(&format!("GPIO{n}")).unwrap();
                assert_eq!(line.chip, ChipRef::Label(label.into()));
                assert_eq!(line.offset, Some(n));
                assert_eq!(line.name.as_deref(), Some(format!("GPIO{n}").as_str()));
            }
            // Header pins: pin 11 is GPIO17, pin 40 is GPIO21, pin 27 is GPIO0.
            assert_eq!(board.gpio_line("PIN11").unwrap().offset, Some(17), "{name}");
            assert_eq!(board.gpio_line("pin40").unwrap().offset, Some(21), "{name}");
            assert_eq!(board.gpio_line("PIN27").unwrap().offset, Some(0), "{name}");
            assert_eq!(board.gpio_line("gpio4").unwrap().offset, Some(4), "{name}");
            assert!(board.gpio_line("GPIO28").is_none(), "{name}");
            assert!(board.gpio_line("PIN1").is_none(), "{name}");
            assert_eq!(
                board.serial_device("serial0"),
                Some("/dev/serial0"),
                "{name}"
            );
            assert_eq!(board.serial_device("uart0"), Some("/dev/ttyAMA0"), "{name}");
        }
        let pi5 = Board::load("rpi5", None).unwrap();
        assert_eq!(pi5.serial_device("debug"), Some("/dev/ttyAMA10"));
        let zero = Board::load("rpi-zero2w", None).unwrap();
        assert!(zero
            .targets
            .iter()
            .any(|t| t == "armv7-unknown-linux-gnueabihf"));
    }

    #[test]
    fn generic_board_has_serial_but_no_lines() {
        let g = Board::load("generic-arm64", None).unwrap();
        assert_eq!(g.serial_device("ttyUSB0"), Some("/dev/ttyUSB0"));
        assert_eq!(g.serial_device("ttyS0"), Some("/dev/ttyS0"));
        assert_eq!(g.serial_device("ttyAMA0"), Some("/dev/ttyAMA0"));
        assert!(g.gpio_line_names().is_empty());
        let err = resolve_line("GPIO17", Some(&g)).unwrap_err();
        assert!(err.contains("names no GPIO lines"), "{err}");
        let line = resolve_line("fe200000.gpio:17", Some(&g)).unwrap();
        assert_eq!(line.chip, ChipRef::Label("fe200000.gpio".into()));
        assert_eq!(line.offset, Some(17));
    }

    #[test]
    fn explicit_lines() {
        let l = resolve_line("/dev/gpiochip0:17", None).unwrap();
        assert_eq!(l.chip, ChipRef::Path("/dev/gpiochip0".into()));
        assert_eq!((l.name, l.offset), (None, Some(17)));
        let l = resolve_line("gpiochip4:GPIO17", None).unwrap();
        assert_eq!(l.chip, ChipRef::Path("/dev/gpiochip4".into()));
        assert_eq!(l.name.as_deref(), Some("GPIO17"));
        let l = resolve_line("pinctrl-rp1:PIN11", None).unwrap();
        assert_eq!(l.chip, ChipRef::Label("pinctrl-rp1".into()));
        assert_eq!(l.to_string(), "pinctrl-rp1:PIN11");
        assert!(resolve_line("GPIO17", None)
            .unwrap_err()
            .contains("no `board` is configured"));
        assert!(resolve_line("chip:99999999999", None).is_err());
        let pi4 = Board::load("rpi4", None).unwrap();
        let err = resolve_line("GPIO40", Some(&pi4)).unwrap_err();
        assert!(
            err.contains(
                "board `rpi4` has no line `GPIO40` (lines GPIO0 … GPIO27; aliases ID_SCL, \
                 ID_SDA, PIN3 … PIN40); other lines are written"
            ),
            "{err}"
        );
    }

    #[test]
    fn offsets_are_found_by_name_then_offset() {
        let names: Vec<String> = ["ID_SD", "ID_SC", "PIN3", "GPIO3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let line = |name: Option<&str>, offset| GpioLine {
            chip: ChipRef::Label("c".into()),
            name: name.map(str::to_owned),
            offset,
        };
        // The kernel's name wins, the offset is the fallback, and out-of-range misses.
        assert_eq!(line(Some("GPIO3"), Some(3)).offset_in(&names), Some(3));
        assert_eq!(line(Some("GPIO2"), Some(2)).offset_in(&names), Some(2));
        assert_eq!(line(Some("PIN3"), None).offset_in(&names), Some(2));
        assert_eq!(line(Some("GPIO9"), None).offset_in(&names), None);
        assert_eq!(line(None, Some(4)).offset_in(&names), None);
    }

    #[test]
    fn files_override_builtins_and_errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rpi4.toml"),
            "description = \"mine\"\n[serial]\nserial0 = \"/dev/ttyUSB3\"\n",
        )
        .unwrap();
        let b = Board::load("rpi4", Some(dir.path())).unwrap();
        assert_eq!(b.description, "mine");
        assert_eq!(b.serial_device("serial0"), Some("/dev/ttyUSB3"));
        assert!(b.origin.ends_with("rpi4.toml"));
        // No file: the built-in one.
        assert_eq!(
            Board::load("rpi5", Some(dir.path())).unwrap().origin,
            "built-in"
        );

        std::fs::write(
            dir.path().join("bad.toml"),
            "name = \"bad\"\n[[gpio.chips]]\nlabel = \"x\"\nlines = { A = -1 }\n",
        )
        .unwrap();
        let err = Board::load("bad", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml:4: gpio.chips[0].lines.A"), "{err}");

        std::fs::write(dir.path().join("typo.toml"), "descripton = \"x\"\n").unwrap();
        let err = Board::load("typo", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("typo.toml:1"), "{err}");
        assert!(err.contains("descripton"), "{err}");

        std::fs::write(
            dir.path().join("alias.toml"),
            "[[gpio.chips]]\nlabel = \"x\"\nlines = { A = 1 }\n[gpio.aliases]\nB = \"C\"\n",
        )
        .unwrap();
        let err = Board::load("alias", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("alias.toml: gpio.aliases.B: no line `C` on this board"),
            "{err}"
        );

        std::fs::write(dir.path().join("other.toml"), "name = \"x\"\n").unwrap();
        let err = Board::load("other", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("other.toml: name:"), "{err}");

        std::fs::write(dir.path().join("dev.toml"), "[serial]\ns = \"ttyS0\"\n").unwrap();
        let err = Board::load("dev", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("serial.s"), "{err}");
    }

    #[test]
    fn unknown_boards() {
        let err = Board::load("rpi9", None).unwrap_err().to_string();
        assert!(
            err.starts_with("unknown board `rpi9` (built-in boards: rpi4, rpi5"),
            "{err}"
        );
        assert!(matches!(
            Board::load("../etc/passwd", Some(Path::new("/tmp"))),
            Err(BoardError::Unknown(_))
        ));
    }

    #[test]
    fn kernel_named_lines() {
        let b = Board::parse(
            "[[gpio.chips]]\nlabel = \"exp\"\nlines = { LED = \"ACT_LED\", BTN = 3 }\n",
            "x",
            "x.toml",
        )
        .unwrap();
        let led = b.gpio_line("LED").unwrap();
        assert_eq!(led.name.as_deref(), Some("ACT_LED"));
        assert_eq!(led.offset, None);
        assert_eq!(b.gpio_line("BTN").unwrap().offset, Some(3));
    }
}
