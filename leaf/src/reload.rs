//! What a configuration reload (SIGHUP) may change of leafd's configuration while it runs:
//! the uplinks and the gateways here, the shared keys in `leaf_core::reload`.
//!
//! The file is read again and the command-line flags applied over it, as at startup. Then
//! [`plan`] compares it with the running configuration:
//!
//! * the log level (`log_level`, `debug`, `trace`) and an uplink's limits and pacing
//!   (`max_bytes`, `max_msgs`, `max_age`, `when_full`, `rate_limit`, `max_in_flight`,
//!   `ack_timeout`, `ack_every`, `cursor_interval`) change in place;
//! * the gateways (`board`, `boards_dir`, `[[serial]]`, `[[modbus]]`, `[[gpio]]`) are
//!   restarted with their new settings;
//! * the leafnode remotes (`leafnodes.remotes`): a remote whose settings changed (URLs,
//!   credentials, nkey, TLS, deny lists) has its link closed and connects again with the new
//!   ones; remotes added at the end start, remotes removed from the end stop; the others keep
//!   their connection. Remotes are matched by position, as an uplink's `remote` is an index:
//!   moving a remote to another position (or removing one that is not last) is refused, and
//!   so is removing a remote an uplink uses. The files a remote reads (its `credentials`, its
//!   TLS `ca_file`, `cert_file`, `key_file`) are read again on every reload, unchanged
//!   configuration or not: a remote whose file content changed reconnects with it (see
//!   [`remote_files_digest`]); a file that became unreadable or invalid refuses the reload of
//!   that remote, which keeps running with what it had;
//! * who may connect (`authorization`, the accounts' users; see `leaf_core::reload`);
//! * any other difference (`fleet.interval`, the leafnode listener's `leafnodes.listen`, its
//!   `authorization`, `tls`, the links' `reconnect`, `ping_interval`, `ping_max`, and every
//!   server setting) refuses the whole reload with a message naming the key, and the running
//!   configuration stays as it was.

use leaf_core::reload::{self as shared, Refused, RemoteChange};

use crate::config::{Config, Uplink};

/// What a reload changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The new log level, if it changed.
    pub log_level: Option<leaf_core::config::LogLevel>,
    /// Uplinks (by index) whose settings changed, with their new settings.
    pub uplinks: Vec<(usize, Uplink)>,
    /// Whether the gateway settings changed (the gateways are restarted).
    pub gateways: bool,
    /// The leafnode remotes whose configuration changed, were added or removed, in the
    /// order to apply them (see [`shared::Plan::remotes`]).
    pub remotes: Vec<RemoteChange>,
    /// Who may connect changed (see [`shared::Plan::authorization`]).
    pub authorization: bool,
}

impl Plan {
    /// Whether nothing changes (files a remote reads aside).
    pub fn is_empty(&self) -> bool {
        self.log_level.is_none()
            && self.uplinks.is_empty()
            && !self.gateways
            && self.remotes.is_empty()
            && !self.authorization
    }

    /// The part of the plan that concerns the shared keys.
    pub fn shared(&self) -> shared::Plan {
        shared::Plan {
            log_level: self.log_level,
            remotes: self.remotes.clone(),
            authorization: self.authorization,
        }
    }
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

/// Compares the running configuration with a newly loaded one: the uplinks first (a key
/// other than their limits and pacing refuses the reload, by name), then the shared keys
/// ([`shared::plan`]); the gateways restart on any change of theirs.
pub fn plan(running: &Config, new: &Config) -> Result<Plan, Refused> {
    let mut merged = running.uplinks.clone();
    if running.uplinks.len() == new.uplinks.len() {
        for (m, n) in merged.iter_mut().zip(&new.uplinks) {
            copy_reloadable(m, n);
        }
    }
    if merged != new.uplinks {
        return Err(Refused::cannot_change(uplinks_difference(
            &merged,
            &new.uplinks,
        )));
    }
    if running.fleet != new.fleet {
        return Err(Refused::cannot_change("fleet.interval"));
    }
    let server = shared::plan(&running.server, &new.server)?;
    let mut plan = Plan {
        log_level: server.log_level,
        remotes: server.remotes,
        authorization: server.authorization,
        ..Plan::default()
    };
    for (i, (old, new)) in running.uplinks.iter().zip(&new.uplinks).enumerate() {
        if old != new {
            plan.uplinks.push((i, new.clone()));
        }
    }
    plan.gateways = running.gateways != new.gateways;
    for (k, uplink) in new.uplinks.iter().enumerate() {
        if uplink.remote >= new.server.leafnodes.remotes.len() {
            return Err(Refused {
                key: format!("uplinks[{k}].remote"),
                reason: format!(
                    "uses leafnodes.remotes[{}], which the new configuration removes; a remote \
                     an uplink uses cannot be removed while running",
                    uplink.remote
                ),
            });
        }
    }
    Ok(plan)
}

/// The name of the first uplink key that differs (`uplinks` when their number does).
fn uplinks_difference(a: &[Uplink], b: &[Uplink]) -> String {
    if a.len() != b.len() {
        return "uplinks".into();
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
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
    "uplinks".into()
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
    use leaf_core::config::LogLevel;
    use leaf_core::reload::RemoteChange;

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
    fn the_fleet_interval_needs_a_restart() {
        let running = cfg(BASE);
        let new = cfg(&format!("{BASE}\n[fleet]\ninterval = \"1m\"\n"));
        let err = plan(&running, &new).unwrap_err();
        assert_eq!(err.key, "fleet.interval");
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
        let err = plan(
            &running,
            &cfg(&BASE.replace("[leafnodes]\n", "[leafnodes]\nping_max = 5\n")),
        )
        .unwrap_err();
        assert_eq!(err.key, "leafnodes.ping_max");
        let two =
            format!("{BASE}[[uplinks]]\nname = \"t\"\nsubjects = \"t.>\"\nhub_stream = \"T\"\n");
        assert_eq!(plan(&running, &cfg(&two)).unwrap_err().key, "uplinks");
    }

    /// A configuration with remotes to `hosts` (and the uplink on remote 0).
    fn remotes(hosts: &[&str]) -> Config {
        let list: Vec<String> = hosts
            .iter()
            .map(|h| format!("{{ url = \"nats-leaf://{h}:7422\" }}"))
            .collect();
        cfg(&BASE.replace(
            "remotes = [{ url = \"nats-leaf://h:7422\" }]",
            &format!("remotes = [{}]", list.join(", ")),
        ))
    }

    #[test]
    fn remotes_change_start_and_stop_by_position() {
        let running = remotes(&["a", "b"]);
        assert!(plan(&running, &running).unwrap().is_empty());
        let p = plan(&running, &remotes(&["a", "c"])).unwrap();
        assert_eq!(p.remotes, vec![RemoteChange::Changed(1)]);
        assert!(p.log_level.is_none() && p.uplinks.is_empty() && !p.gateways);
        let p = plan(&running, &remotes(&["a", "b", "c", "d"])).unwrap();
        assert_eq!(
            p.remotes,
            vec![RemoteChange::Added(2), RemoteChange::Added(3)]
        );
        let p = plan(&remotes(&["a", "b", "c"]), &remotes(&["a"])).unwrap();
        assert_eq!(
            p.remotes,
            vec![RemoteChange::Removed(2), RemoteChange::Removed(1)]
        );
        // Credentials and deny lists are settings like the URLs.
        let creds = cfg(&BASE.replace(
            "{ url = \"nats-leaf://h:7422\" }",
            "{ url = \"nats-leaf://h:7422\", deny_imports = \"x.>\" }",
        ));
        let p = plan(&cfg(BASE), &creds).unwrap();
        assert_eq!(p.remotes, vec![RemoteChange::Changed(0)]);
        // The same URLs at another position: a move, refused.
        let err = plan(&running, &remotes(&["b", "a"])).unwrap_err();
        assert_eq!(err.key, "leafnodes.remotes[0]");
        assert!(
            err.to_string().contains("is leafnodes.remotes[1] moved"),
            "{err}"
        );
        let err = plan(&remotes(&["a", "b", "c"]), &remotes(&["a", "c"])).unwrap_err();
        assert_eq!(err.key, "leafnodes.remotes[1]");
        // A second remote to the same hub is no move.
        let p = plan(&remotes(&["a"]), &remotes(&["a", "a"])).unwrap();
        assert_eq!(p.remotes, vec![RemoteChange::Added(1)]);
    }

    #[test]
    fn removing_a_remote_an_uplink_uses_is_refused_by_name() {
        let running = remotes(&["a", "b"]);
        let mut with_uplink = running.clone();
        if let Some(u) = with_uplink.uplinks.first_mut() {
            u.remote = 1;
        }
        // (Loading such a file fails its validation already; the plan refuses it too.)
        let mut new = with_uplink.clone();
        new.server.leafnodes.remotes.truncate(1);
        let err = plan(&with_uplink, &new).unwrap_err();
        assert_eq!(err.key, "uplinks[0].remote");
        assert!(
            err.to_string().contains("uses leafnodes.remotes[1]"),
            "{err}"
        );
        // Without the uplink on it, remote 1 may go.
        assert_eq!(
            plan(&running, &remotes(&["a"])).unwrap().remotes,
            vec![RemoteChange::Removed(1)]
        );
    }
}
