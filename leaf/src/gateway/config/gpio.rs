//! `[[gpio]]`: GPIO lines read and driven by leafd through the Linux GPIO character device
//! (uAPI v2).
//!
//! A group names a set of input and output lines. Each input edge (rising, falling or both,
//! after the kernel's debounce) becomes a message; inputs may also be sampled at an
//! interval; outputs are set and read through request/reply subjects. Only the lines listed
//! under `outputs` can be set: that list is the allow list.
//!
//! ```toml
//! board = "rpi4"                        # resolves line names such as "GPIO17" or "PIN11"
//!
//! [[gpio]]
//! name = "panel"                        # letters, digits, - and _ ({group} in subjects)
//! subject = "gpio.{board}.{line}"       # the default; also {server} and {group}
//! reopen_max = "10s"                    # longest wait between attempts to (re)open the lines
//! event_clock = "realtime"              # realtime (default) | monotonic | hte
//! event_buffer = 0                      # kernel event buffer, in events (0: 16 per line)
//!
//! [[gpio.inputs]]
//! line = "GPIO17"                       # a board line name or header pin ("PIN11"), or
//!                                       # "<chip label or path>:<line name or offset>"
//! name = "door"                         # {line} in subjects and "line" in payloads
//!                                       # (default: `line` as written, without a chip prefix)
//! edge = "both"                         # rising | falling | both | none
//! debounce = "10ms"                     # kernel debounce (0: none)
//! bias = "pull_up"                      # pull_up | pull_down | disabled | as_is (default)
//! active_low = false                    # true: a low level reads as 1 and a fall is "rising"
//! sample_interval = "1s"                # optional: publish the level periodically
//!
//! [[gpio.outputs]]
//! line = "GPIO27"
//! name = "relay"
//! initial = false                       # the value driven when leafd starts
//! active_low = false
//! drive = "push_pull"                   # push_pull | open_drain | open_source
//! ```
//!
//! Subjects, with `S` the group's subject filled in for a line:
//!
//! * `S`: one message per input edge, JSON
//!   `{"line":"door","value":1,"edge":"rising","timestamp_ns":…,"seq":7,"clock":"realtime"}`,
//!   where `timestamp_ns` is the kernel's timestamp of the edge, `seq` the kernel's
//!   per-line sequence number (restarting at 1 whenever the lines are requested again) and
//!   `clock` the clock the timestamp is read from (see `event_clock`). Headers:
//!   `Leaf-Received`, `Leaf-Seq` (the group's message count) and `Leaf-Gpio-Line`.
//! * `S.level`: with `sample_interval`, the input's value, `{"line":"door","value":0}`,
//!   once when the lines are opened and then every interval.
//! * `S.get` (request/reply, every configured line): replies `{"line":…,"value":…}`.
//! * `S.set` (request/reply): on an output, the request body `1`, `0`, `true`, `false`,
//!   `on`, `off`, `high`, `low` (any case), one of those as a JSON string or value, or a
//!   JSON object whose only key is `value` (`{"value":1}`) sets the line; the reply is
//!   `{"line":…,"value":…}`. Nothing else sets a line: not another handler's answer or
//!   message (a `.get` answer, an edge event or a level sample carries `line` too, a JetStream
//!   answer or PubAck has other keys), so a reply routed to a `.set` subject cannot drive an
//!   output. A refused body and a set on an input are answered with `{"error":…}`. Lines that
//!   are not configured are not subscribed at all, so such requests get no reply. The answer
//!   goes only where the requester may publish itself (see `leaf_core::server::reply`).
//!
//! Values are logical: with `active_low = true`, 1 means the line is electrically low.
//!
//! Lines are resolved through the board definition when leafd starts; an unknown line is
//! refused then, naming the key (`gpio[0].inputs[1].line`). A chip that is missing or a
//! line that is busy at run time is waited for, with backoff, without stopping leafd.

use std::time::Duration;

use serde::Deserialize;

use super::value;
use super::ConfigError;
use crate::gateway::template::Template;

/// Default subject template of a GPIO group.
pub const DEFAULT_SUBJECT: &str = "gpio.{board}.{line}";
/// Default longest wait between two attempts to (re)open a group's lines.
pub const DEFAULT_REOPEN_MAX: Duration = Duration::from_secs(10);
/// Shortest accepted `sample_interval`.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// Largest kernel event buffer the kernel accepts (16 events for each of 64 lines).
pub const MAX_EVENT_BUFFER: u32 = 1024;
/// Placeholders a GPIO subject template may use.
pub const SUBJECT_PLACEHOLDERS: &[&str] = &["board", "server", "group", "line"];

/// Which edges of an input produce events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// Inactive to active only.
    Rising,
    /// Active to inactive only.
    Falling,
    /// Both (the default).
    #[default]
    Both,
    /// No edge events (the line is sampled or read on request only).
    None,
}

/// The bias (internal pull resistor) of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    /// Leave the bias as it is (the default).
    #[default]
    AsIs,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
    /// No pull resistor.
    Disabled,
}

/// How an output drives its line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drive {
    /// Drives both levels (the default).
    #[default]
    PushPull,
    /// Drives low only; high is left floating (needs a pull-up).
    OpenDrain,
    /// Drives high only; low is left floating (needs a pull-down).
    OpenSource,
}

/// The clock edge timestamps are taken from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClock {
    /// CLOCK_REALTIME: nanoseconds since the Unix epoch (the default). Kernels older than
    /// 5.11 cannot do this; leafd then falls back to `monotonic` and says so in the
    /// payload's `clock`.
    #[default]
    Realtime,
    /// CLOCK_MONOTONIC: nanoseconds since boot, not counting suspend; good for intervals.
    Monotonic,
    /// The hardware timestamp engine (kernel 5.19 or later with CONFIG_HTE and supporting
    /// hardware); the Raspberry Pi has none.
    Hte,
}

impl EventClock {
    /// The clock's name in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClock::Realtime => "realtime",
            EventClock::Monotonic => "monotonic",
            EventClock::Hte => "hte",
        }
    }
}

/// One `[[gpio.inputs]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioInput {
    /// The line: a board line name (`GPIO17`) or alias (`PIN11`), or
    /// `<chip label or path>:<line name or offset>`.
    pub line: String,
    /// `{line}` in subjects and `line` in payloads (default: `line` as written, without a
    /// chip prefix).
    pub name: Option<String>,
    /// Which edges produce events (default both).
    pub edge: Edge,
    /// Kernel debounce period (default 0: none). A level must hold this long before the
    /// kernel reports the edge; the event's timestamp is when it reports it.
    #[serde(deserialize_with = "value::de_duration")]
    pub debounce: Duration,
    /// Bias (default as is).
    pub bias: Bias,
    /// A low level is the active (1) value.
    pub active_low: bool,
    /// Publish the level on `<subject>.level` this often (default: never).
    #[serde(deserialize_with = "value::de_opt_duration")]
    pub sample_interval: Option<Duration>,
}

/// One `[[gpio.outputs]]` entry: an output that may be set through `<subject>.set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioOutput {
    /// The line, as for inputs.
    pub line: String,
    /// `{line}` in subjects and `line` in payloads (default: `line` as written, without a
    /// chip prefix).
    pub name: Option<String>,
    /// The value driven when leafd starts (after the lines are reopened: the last value
    /// set).
    pub initial: bool,
    /// A low level is the active (1) value.
    pub active_low: bool,
    /// How the line is driven (default push-pull).
    pub drive: Drive,
}

/// One `[[gpio]]` entry: a group of lines with one subject template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioGroup {
    /// The group's name (`{group}` in subjects, monitoring): letters, digits, `-`, `_`.
    pub name: String,
    /// Subject template: `{board}`, `{server}`, `{group}`, `{line}` (default
    /// `gpio.{board}.{line}`). `{line}` is required when the group has several lines.
    pub subject: String,
    /// Input lines.
    #[serde(deserialize_with = "value::de_table_list")]
    pub inputs: Vec<GpioInput>,
    /// Output lines: the allow list of lines that can be set.
    #[serde(deserialize_with = "value::de_table_list")]
    pub outputs: Vec<GpioOutput>,
    /// Longest wait between two attempts to (re)open the lines (default 10 s; the wait
    /// starts at 100 ms and doubles).
    #[serde(deserialize_with = "value::de_duration")]
    pub reopen_max: Duration,
    /// The clock of edge timestamps (default realtime).
    pub event_clock: EventClock,
    /// The kernel's edge event buffer, in events (0: the kernel's default of 16 per line;
    /// at most 1024). Events that overflow it are counted as `dropped`.
    pub event_buffer: u32,
}

impl Default for GpioGroup {
    fn default() -> Self {
        GpioGroup {
            name: String::new(),
            subject: DEFAULT_SUBJECT.to_owned(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            reopen_max: DEFAULT_REOPEN_MAX,
            event_clock: EventClock::Realtime,
            event_buffer: 0,
        }
    }
}

/// What [`GpioGroup::lines`] yields: one configured line.
#[derive(Debug, Clone, Copy)]
pub enum LineConfig<'a> {
    /// An input.
    Input(&'a GpioInput),
    /// An output.
    Output(&'a GpioOutput),
}

impl<'a> LineConfig<'a> {
    /// The `line` setting.
    pub fn line(&self) -> &'a str {
        match self {
            LineConfig::Input(i) => &i.line,
            LineConfig::Output(o) => &o.line,
        }
    }

    /// The line's name in subjects and payloads: `name`, else `line` without a chip
    /// prefix.
    pub fn display_name(&self) -> &'a str {
        let name = match self {
            LineConfig::Input(i) => i.name.as_deref(),
            LineConfig::Output(o) => o.name.as_deref(),
        };
        name.unwrap_or_else(|| line_token(self.line()))
    }
}

/// `line` without a `chip:` prefix.
pub fn line_token(line: &str) -> &str {
    line.rsplit_once(':').map_or(line, |(_, l)| l)
}

impl GpioGroup {
    /// Every line with its config key (`inputs[0]`, `outputs[1]`): inputs first, then
    /// outputs. The pipeline numbers lines in this order.
    pub fn lines(&self) -> impl Iterator<Item = (String, LineConfig<'_>)> + '_ {
        let inputs = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("inputs[{i}]"), LineConfig::Input(l)));
        let outputs = self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("outputs[{i}]"), LineConfig::Output(l)));
        inputs.chain(outputs)
    }

    /// Checks what can be checked without the board (`gpio[index]` in the config): the
    /// name, the subject template, each line's spelling and settings, and duplicates. Line
    /// names are resolved against the board when the gateway starts.
    pub(crate) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |f: &str| format!("gpio[{index}].{f}");
        if !is_group_name(&self.name) {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty: letters, digits, `-` and `_`",
            ));
        }
        if self.inputs.is_empty() && self.outputs.is_empty() {
            return Err(ConfigError::invalid(
                key("inputs"),
                "the group has no inputs and no outputs",
            ));
        }
        let uses_line = Template::parse(&self.subject, SUBJECT_PLACEHOLDERS)
            .map_err(|e| ConfigError::invalid(key("subject"), e.to_string()))?
            .uses("line");
        if !uses_line && self.inputs.len() + self.outputs.len() > 1 {
            return Err(ConfigError::invalid(
                key("subject"),
                "must contain {line}: the group has several lines",
            ));
        }
        if self.reopen_max.is_zero() {
            return Err(ConfigError::invalid(
                key("reopen_max"),
                "must be greater than zero",
            ));
        }
        if self.event_buffer > MAX_EVENT_BUFFER {
            return Err(ConfigError::invalid(
                key("event_buffer"),
                format!("must be at most {MAX_EVENT_BUFFER}"),
            ));
        }
        // (entry, line, display name) of the lines checked so far.
        let mut seen: Vec<(String, &str, &str)> = Vec::new();
        for (entry, line) in self.lines() {
            let line_key = |f: &str| key(&format!("{entry}.{f}"));
            check_line_spelling(line.line())
                .map_err(|m| ConfigError::invalid(line_key("line"), m))?;
            let explicit_name = match line {
                LineConfig::Input(i) => i.name.as_deref(),
                LineConfig::Output(o) => o.name.as_deref(),
            };
            if let Some(name) = explicit_name {
                if !is_subject_token(name) {
                    return Err(ConfigError::invalid(
                        line_key("name"),
                        "must be non-empty, without whitespace, `.`, `*` or `>`",
                    ));
                }
            } else if uses_line && !is_subject_token(line.display_name()) {
                return Err(ConfigError::invalid(
                    line_key("line"),
                    format!(
                        "`{}` cannot be a subject token ({{line}}); set `name`",
                        line.display_name()
                    ),
                ));
            }
            if let Some((other, _, _)) = seen.iter().find(|(_, l, _)| *l == line.line()) {
                return Err(ConfigError::invalid(
                    line_key("line"),
                    format!(
                        "`{}` is already configured as gpio[{index}].{other}",
                        line.line()
                    ),
                ));
            }
            if uses_line {
                if let Some((other, _, _)) = seen.iter().find(|(_, _, n)| *n == line.display_name())
                {
                    return Err(ConfigError::invalid(
                        line_key("name"),
                        format!(
                            "`{}` is also the name of gpio[{index}].{other}: subjects would collide",
                            line.display_name()
                        ),
                    ));
                }
            }
            if let LineConfig::Input(input) = line {
                if input.debounce.as_micros() > u128::from(u32::MAX) {
                    return Err(ConfigError::invalid(
                        line_key("debounce"),
                        "must be at most 4294s (the kernel counts microseconds in 32 bits)",
                    ));
                }
                if input
                    .sample_interval
                    .is_some_and(|d| d < MIN_SAMPLE_INTERVAL)
                {
                    return Err(ConfigError::invalid(
                        line_key("sample_interval"),
                        "must be at least 10ms",
                    ));
                }
            }
            seen.push((entry, line.line(), line.display_name()));
        }
        Ok(())
    }
}

/// Whether `name` may name a group: letters, digits, `-` and `_`.
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `token` can be one subject token: non-empty, no whitespace, `.`, `*` or `>`.
pub fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
}

/// Checks the spelling of a `line` setting (not whether the line exists).
fn check_line_spelling(line: &str) -> Result<(), String> {
    if line.is_empty() {
        return Err(
            "missing: a board line name such as GPIO17, or <chip label or path>:<line name or offset>"
                .to_owned(),
        );
    }
    if line.chars().any(char::is_whitespace) {
        return Err(format!("`{line}` contains whitespace"));
    }
    if let Some((chip, name)) = line.rsplit_once(':') {
        if chip.is_empty() || name.is_empty() {
            return Err(format!(
                "`{line}`: write <chip label or path>:<line name or offset>"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> GpioGroup {
        toml::from_str(text).unwrap()
    }

    fn err(group: &GpioGroup) -> String {
        group.validate(0).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_key() {
        let g = parse(
            r#"
            name = "panel"
            subject = "gpio.{board}.{group}.{line}"
            reopen_max = "2s"
            event_clock = "monotonic"
            event_buffer = 64
            [[inputs]]
            line = "GPIO17"
            name = "door"
            edge = "rising"
            debounce = "10ms"
            bias = "pull_up"
            active_low = true
            sample_interval = "1s"
            [[outputs]]
            line = "pinctrl-bcm2711:GPIO27"
            initial = true
            drive = "open_drain"
            "#,
        );
        assert_eq!(g.reopen_max, Duration::from_secs(2));
        assert_eq!(g.event_clock, EventClock::Monotonic);
        assert_eq!(g.event_buffer, 64);
        let i = &g.inputs[0];
        assert_eq!(i.edge, Edge::Rising);
        assert_eq!(i.debounce, Duration::from_millis(10));
        assert_eq!(i.bias, Bias::PullUp);
        assert!(i.active_low);
        assert_eq!(i.sample_interval, Some(Duration::from_secs(1)));
        let o = &g.outputs[0];
        assert!(o.initial);
        assert_eq!(o.drive, Drive::OpenDrain);
        let names: Vec<_> = g.lines().map(|(k, l)| (k, l.display_name())).collect();
        assert_eq!(
            names,
            vec![
                ("inputs[0]".into(), "door"),
                ("outputs[0]".into(), "GPIO27")
            ]
        );
        g.validate(0).unwrap();
    }

    /// The module documentation's example, through the whole config loader.
    #[test]
    fn the_documented_example_loads() {
        let doc: String = include_str!("gpio.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        let cfg = super::super::parse_str(&doc, super::super::Format::Toml, "doc").unwrap();
        assert_eq!(cfg.board.as_deref(), Some("rpi4"));
        let g = &cfg.gpio[0];
        assert_eq!(g.inputs[0].name.as_deref(), Some("door"));
        assert_eq!(g.outputs[0].drive, Drive::PushPull);
        g.validate(0).unwrap();
        let err = super::super::parse_str(
            "[[gpio]]\nname = \"g\"\n[[gpio.inputs]]\nline = \"GPIO4\"\nedge = \"up\"\n",
            super::super::Format::Toml,
            "leafd.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("leafd.toml:5: gpio[0].inputs[0].edge:"),
            "{err}"
        );
    }

    #[test]
    fn defaults() {
        let g = parse("name = \"g\"\n[[inputs]]\nline = \"GPIO4\"\n");
        assert_eq!(g.subject, DEFAULT_SUBJECT);
        assert_eq!(g.reopen_max, DEFAULT_REOPEN_MAX);
        assert_eq!(g.inputs[0].edge, Edge::Both);
        assert_eq!(g.inputs[0].bias, Bias::AsIs);
        assert_eq!(g.inputs[0].debounce, Duration::ZERO);
        assert_eq!(g.inputs[0].sample_interval, None);
        g.validate(0).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(
            toml::from_str::<GpioGroup>("name = \"g\"\n[[inputs]]\nlin = \"GPIO4\"\n").is_err()
        );
        assert!(toml::from_str::<GpioGroup>("name = \"g\"\n[[inputs]]\nedge = \"up\"\n").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut g = parse("name = \"g\"\n[[inputs]]\nline = \"GPIO4\"\n");
        g.name = "a b".into();
        assert!(err(&g).starts_with("gpio[0].name:"), "{}", err(&g));
        g.name = "g".into();

        g.subject = "gpio.{bord}.{line}".into();
        assert!(
            err(&g).contains("unknown placeholder `{bord}`"),
            "{}",
            err(&g)
        );
        g.subject = "gpio.*.{line}".into();
        assert!(err(&g).starts_with("gpio[0].subject:"), "{}", err(&g));
        g.subject = "gpio.{line".into();
        assert!(err(&g).contains("unbalanced braces"), "{}", err(&g));
        g.subject = "gpio.door".into();
        g.validate(0).unwrap();
        g.outputs.push(GpioOutput {
            line: "GPIO5".into(),
            ..GpioOutput::default()
        });
        assert!(err(&g).contains("must contain {line}"), "{}", err(&g));
        g.subject = DEFAULT_SUBJECT.into();
        g.validate(0).unwrap();

        g.outputs[0].line = "GPIO4".into();
        assert_eq!(
            err(&g),
            "gpio[0].outputs[0].line: `GPIO4` is already configured as gpio[0].inputs[0]"
        );
        g.outputs[0].line = "chip:GPIO4".into();
        assert!(err(&g).contains("subjects would collide"), "{}", err(&g));
        g.outputs[0].name = Some("relay".into());
        g.validate(0).unwrap();

        g.outputs[0].line = "chip:".into();
        assert!(
            err(&g).starts_with("gpio[0].outputs[0].line:"),
            "{}",
            err(&g)
        );
        g.outputs[0].line = "fe200000.gpio:5".into();
        g.validate(0).unwrap();
        g.outputs[0].name = None;
        g.outputs[0].line = "chip:a.b".into();
        assert!(err(&g).contains("set `name`"), "{}", err(&g));
        g.outputs[0].name = Some("x.y".into());
        assert!(
            err(&g).starts_with("gpio[0].outputs[0].name:"),
            "{}",
            err(&g)
        );
        g.outputs.clear();

        g.inputs[0].debounce = Duration::from_secs(5000);
        assert!(
            err(&g).starts_with("gpio[0].inputs[0].debounce:"),
            "{}",
            err(&g)
        );
        g.inputs[0].debounce = Duration::from_millis(5);
        g.inputs[0].sample_interval = Some(Duration::from_millis(1));
        assert!(
            err(&g).starts_with("gpio[0].inputs[0].sample_interval:"),
            "{}",
            err(&g)
        );
        g.inputs[0].sample_interval = None;
        g.event_buffer = 4096;
        assert!(err(&g).starts_with("gpio[0].event_buffer:"), "{}", err(&g));
        g.event_buffer = 0;
        g.inputs.clear();
        assert!(err(&g).contains("no inputs and no outputs"), "{}", err(&g));
    }
}
