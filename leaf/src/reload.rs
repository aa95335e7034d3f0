//! What a configuration reload (SIGHUP) may change while the server runs.
//!
//! The file is read again and the command-line flags applied over it, as at startup. Then
//! [`plan`] compares it with the running configuration: the log level (`log_level`, `debug`,
//! `trace`) and an uplink's limits and pacing (`max_bytes`, `max_msgs`, `max_age`,
//! `when_full`, `rate_limit`, `max_in_flight`, `ack_timeout`, `ack_every`, `cursor_interval`)
//! change in place; the gateways (`board`, `boards_dir`, `[[serial]]`, `[[modbus]]`,
//! `[[gpio]]`) are restarted with their new settings; any other difference refuses the whole reload with a
//! message naming the key, and the running configuration stays as it was.

use crate::config::{Config, LogLevel, Uplink};

/// What a reload changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The new log level, if it changed.
    pub log_level: Option<LogLevel>,
    /// Uplinks (by index) whose settings changed, with their new settings.
    pub uplinks: Vec<(usize, Uplink)>,
    /// Whether the gateway settings changed (the gateways are restarted).
    pub gateways: bool,
}

impl Plan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.log_level.is_none() && self.uplinks.is_empty() && !self.gateways
    }
}

/// Why a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key}: cannot change while running (restart to apply it); the running configuration stays"
)]
pub struct Refused {
    /// The first key that differs and cannot change.
    pub key: String,
}

/// The uplink settings a reload may change, copied from `from` into `to`.
fn copy_reloadable(to: &mut Uplink, from: &Uplink) {
    to.max_bytes = from.max_bytes;
    to.max_msgs = from.max_msgs;
    to.max_age = from.max_age;
    to.when_full = from.when_full;
    to.rate_limit = from.rate_limit;
    to.max_in_flight = from.max_in_flight;
    to.ack_timeout = from.ack_timeout;
    to.ack_every = from.ack_every;
    to.cursor_interval = from.cursor_interval;
}

/// Compares the running configuration with a newly loaded one.
pub fn plan(running: &Config, new: &Config) -> Result<Plan, Refused> {
    // Take the new file's reloadable values onto a copy of the running configuration: if
    // that equals the new one, nothing else changed.
    let mut merged = running.clone();
    merged.log_level = new.log_level;
    merged.debug = new.debug;
    merged.trace = new.trace;
    merged.board.clone_from(&new.board);
    merged.boards_dir.clone_from(&new.boards_dir);
    merged.serial.clone_from(&new.serial);
    merged.modbus.clone_from(&new.modbus);
    merged.gpio.clone_from(&new.gpio);
    if running.uplinks.len() == new.uplinks.len() {
        for (m, n) in merged.uplinks.iter_mut().zip(&new.uplinks) {
            copy_reloadable(m, n);
        }
    }
    if merged != *new {
        return Err(Refused {
            key: first_difference(&merged, new),
        });
    }
    let mut plan = Plan::default();
    if running.effective_log_level() != new.effective_log_level() {
        plan.log_level = Some(new.effective_log_level());
    }
    for (i, (old, new)) in running.uplinks.iter().zip(&new.uplinks).enumerate() {
        if old != new {
            plan.uplinks.push((i, new.clone()));
        }
    }
    plan.gateways = running.board != new.board
        || running.boards_dir != new.boards_dir
        || running.serial != new.serial
        || running.modbus != new.modbus
        || running.gpio != new.gpio;
    Ok(plan)
}

/// The name of the first top-level key (or uplink key) that differs.
fn first_difference(a: &Config, b: &Config) -> String {
    if a.uplinks != b.uplinks {
        if a.uplinks.len() != b.uplinks.len() {
            return "uplinks".into();
        }
        for (i, (x, y)) in a.uplinks.iter().zip(&b.uplinks).enumerate() {
            if x != y {
                let (x, y) = (serde_json_like(x), serde_json_like(y));
                let key = x
                    .iter()
                    .zip(&y)
                    .find(|(p, q)| p != q)
                    .map_or("?".to_string(), |(p, _)| p.0.to_string());
                return format!("uplinks[{i}].{key}");
            }
        }
    }
    let checks: [(&str, bool); 14] = [
        ("host", a.host != b.host),
        ("port", a.port != b.port),
        ("http_port", a.http_port != b.http_port),
        ("server_name", a.server_name != b.server_name),
        ("max_payload", a.max_payload != b.max_payload),
        ("max_control_line", a.max_control_line != b.max_control_line),
        ("max_pending", a.max_pending != b.max_pending),
        ("max_connections", a.max_connections != b.max_connections),
        ("ping_interval", a.ping_interval != b.ping_interval),
        ("ping_max", a.ping_max != b.ping_max),
        ("write_deadline", a.write_deadline != b.write_deadline),
        ("authorization", a.authorization != b.authorization),
        ("jetstream", a.jetstream != b.jetstream),
        ("leafnodes", a.leafnodes != b.leafnodes),
    ];
    checks
        .iter()
        .find(|(_, differs)| *differs)
        .map_or("configuration".to_string(), |(k, _)| (*k).to_string())
}

/// An uplink's non-reloadable keys with a comparable rendering, in file order.
fn serde_json_like(u: &Uplink) -> Vec<(&'static str, String)> {
    vec![
        ("name", u.name.clone()),
        ("subjects", format!("{:?}", u.subjects)),
        ("stream", format!("{:?}", u.stream)),
        ("remote", u.remote.to_string()),
        ("hub_stream", u.hub_stream.clone()),
        ("hub_domain", format!("{:?}", u.hub_domain)),
        ("create_hub_stream", u.create_hub_stream.to_string()),
        ("hub_subjects", format!("{:?}", u.hub_subjects)),
        ("subject_prefix", format!("{:?}", u.subject_prefix)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Format};

    fn cfg(text: &str) -> Config {
        config::parse_str(text, Format::Toml, "t.toml").unwrap()
    }

    const BASE: &str = "port = 4222\nlog_level = \"info\"\njetstream = true\n\
        [leafnodes]\nremotes = [{ url = \"nats-leaf://h:7422\" }]\n\
        [[uplinks]]\nname = \"s\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\nmax_msgs = 100\n";

    #[test]
    fn log_level_and_uplink_limits_reload() {
        let running = cfg(BASE);
        assert!(plan(&running, &running).unwrap().is_empty());
        let new = cfg(&BASE
            .replace("\"info\"", "\"debug\"")
            .replace("max_msgs = 100", "max_msgs = 50\nrate_limit = \"1MB\""));
        let p = plan(&running, &new).unwrap();
        assert_eq!(p.log_level, Some(LogLevel::Debug));
        assert_eq!(p.uplinks.len(), 1);
        assert_eq!(p.uplinks[0].1.max_msgs, Some(50));
        assert_eq!(p.uplinks[0].1.rate_limit, Some(1 << 20));
        assert!(!p.gateways);
    }

    #[test]
    fn gateway_changes_restart_the_gateways() {
        let running = cfg(BASE);
        let new = cfg(&format!(
            "{BASE}\n[[serial]]\nname = \"p\"\nport = {{ device = \"/dev/ttyUSB0\" }}\n"
        ));
        let p = plan(&running, &new).unwrap();
        assert!(p.gateways && p.uplinks.is_empty() && p.log_level.is_none());
        assert!(!p.is_empty());
        let moved = cfg(&format!(
            "{BASE}\n[[serial]]\nname = \"p\"\nport = {{ device = \"/dev/ttyUSB1\" }}\n"
        ));
        assert!(plan(&new, &moved).unwrap().gateways);
        assert!(!plan(&new, &new).unwrap().gateways);
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        let running = cfg(BASE);
        let err = plan(&running, &cfg(&BASE.replace("port = 4222", "port = 4333"))).unwrap_err();
        assert_eq!(err.key, "port");
        assert!(err
            .to_string()
            .contains("port: cannot change while running"));
        let err = plan(
            &running,
            &cfg(&BASE.replace("hub_stream = \"S\"", "hub_stream = \"T\"")),
        )
        .unwrap_err();
        assert_eq!(err.key, "uplinks[0].hub_stream");
        let err = plan(&running, &cfg(&BASE.replace("h:7422", "other:7422"))).unwrap_err();
        assert_eq!(err.key, "leafnodes");
        let two =
            format!("{BASE}[[uplinks]]\nname = \"t\"\nsubjects = \"t.>\"\nhub_stream = \"T\"\n");
        assert_eq!(plan(&running, &cfg(&two)).unwrap_err().key, "uplinks");
    }
}
