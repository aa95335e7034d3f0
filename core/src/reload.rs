//! What a configuration reload (SIGHUP) may change of the shared keys while the server runs.
//!
//! The file is read again and the command-line flags applied over it, as at startup. Then
//! [`plan`] compares it with the running configuration (a binary compares its own keys
//! first: leafd's uplinks and gateways, see `leaf::reload`):
//!
//! * the log level (`log_level`, `debug`, `trace`) changes in place;
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
//! * who may connect: `authorization` (users, passwords, permissions, the token) and the
//!   accounts' `users`, accounts with users only added or removed; a connection whose user
//!   only got new permissions is updated in place (subscriptions no longer allowed are removed
//!   with a permissions `-ERR`), connections whose login would not hold any more are closed
//!   with `-ERR 'Authorization Violation'`, the others keep running (see
//!   `Shared::reload_authorization`); an account's `jetstream`,
//!   `exports` and `imports` cannot change;
//! * any other difference (the leafnode listener's `leafnodes.listen`, its `authorization`, `tls`,
//!   `max_connections`, the links' `reconnect`, `ping_interval`, `ping_max`, and every server
//!   setting) refuses the whole reload with a message naming the key, and the running
//!   configuration stays as it was.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use std::collections::BTreeMap;

use crate::config::{AccountSettings, Config, LeafNodes, LogLevel, Remote};

/// What a reload does to one leafnode remote (by its index in `leafnodes.remotes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteChange {
    /// Its settings changed: its link is closed and it connects with the new ones.
    Changed(usize),
    /// A remote after the running ones: it starts.
    Added(usize),
    /// A remote at the end that the new configuration no longer has: it stops.
    Removed(usize),
}

/// What a reload changes of the shared keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The new log level, if it changed.
    pub log_level: Option<LogLevel>,
    /// The leafnode remotes whose configuration changed, were added or removed, in the
    /// order to apply them (removals last, from the end). Remotes whose files changed are
    /// not in it: that takes reading them (see [`remote_files_digest`]).
    pub remotes: Vec<RemoteChange>,
    /// Who may connect changed: `authorization`, the accounts' users, accounts added or
    /// removed (see `Shared::reload_authorization`).
    pub authorization: bool,
}

impl Plan {
    /// Whether nothing changes (files a remote reads aside).
    pub fn is_empty(&self) -> bool {
        self.log_level.is_none() && self.remotes.is_empty() && !self.authorization
    }
}

/// What a refused key cannot do, unless another reason is given.
const CANNOT_CHANGE: &str = "cannot change while running (restart to apply it)";

/// Why a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}; the running configuration stays")]
pub struct Refused {
    /// The first key that differs and cannot change.
    pub key: String,
    /// Why it cannot (`cannot change while running ...` for most keys).
    pub reason: String,
}

impl Refused {
    /// `key` cannot change while running.
    pub fn cannot_change(key: impl Into<String>) -> Refused {
        Refused {
            key: key.into(),
            reason: CANNOT_CHANGE.to_owned(),
        }
    }
}

/// Compares the running configuration with a newly loaded one.
pub fn plan(running: &Config, new: &Config) -> Result<Plan, Refused> {
    // Take the new file's reloadable values onto a copy of the running configuration: if
    // that equals the new one, nothing else changed.
    let mut merged = running.clone();
    merged.log_level = new.log_level;
    merged.debug = new.debug;
    merged.trace = new.trace;
    merged.leafnodes.remotes.clone_from(&new.leafnodes.remotes);
    merged.authorization = crate::config::Authorization {
        timeout: running.authorization.timeout,
        ..new.authorization.clone()
    };
    merged.accounts = reloadable_accounts(&running.accounts, &new.accounts)?;
    if running.authorization != new.authorization
        && running.leafnodes.listen.is_some()
        && !leaf_listener_has_own_users(&running.leafnodes)
    {
        // Leaves log in with the client users then, checked by the listener as it started.
        return Err(Refused {
            key: "authorization".to_owned(),
            reason: "the leafnode listener logs leaves in with these users (it has no \
                     leafnodes.authorization of its own): restart to apply it"
                .to_owned(),
        });
    }
    if merged != *new {
        return Err(Refused::cannot_change(first_difference(&merged, new)));
    }
    let mut plan = Plan {
        authorization: running.authorization != new.authorization
            || running.accounts != new.accounts,
        ..Plan::default()
    };
    if running.effective_log_level() != new.effective_log_level() {
        plan.log_level = Some(new.effective_log_level());
    }
    plan.remotes = plan_remotes(&running.leafnodes.remotes, &new.leafnodes.remotes)?;
    Ok(plan)
}

/// Whether the leafnode listener has its own `leafnodes.authorization` (else leaves log in
/// with the client users).
fn leaf_listener_has_own_users(ln: &LeafNodes) -> bool {
    let auth = &ln.authorization;
    auth.user.is_some() || auth.token.is_some() || !auth.users.is_empty()
}

/// The accounts a reload may bring: the running ones with their users changed, new accounts
/// with users only, running accounts with users only removed. An account's JetStream,
/// exports and imports, and an account that has any of them, stay as they run.
fn reloadable_accounts(
    old: &BTreeMap<String, AccountSettings>,
    new: &BTreeMap<String, AccountSettings>,
) -> Result<BTreeMap<String, AccountSettings>, Refused> {
    let users_only =
        |a: &AccountSettings| !a.jetstream.enabled && a.exports.is_empty() && a.imports.is_empty();
    let why = "cannot be added or removed while running with JetStream, exports or imports \
               (restart to apply it)";
    for (name, account) in old {
        if !new.contains_key(name) && !users_only(account) {
            return Err(Refused {
                key: format!("accounts.{name}"),
                reason: why.to_owned(),
            });
        }
    }
    let mut merged = BTreeMap::new();
    for (name, account) in new {
        let kept = match old.get(name) {
            Some(running) => AccountSettings {
                users: account.users.clone(),
                ..running.clone()
            },
            None if users_only(account) => account.clone(),
            None => {
                return Err(Refused {
                    key: format!("accounts.{name}"),
                    reason: why.to_owned(),
                })
            }
        };
        if kept != *account {
            let key = if kept.jetstream != account.jetstream {
                "jetstream"
            } else if kept.exports != account.exports {
                "exports"
            } else {
                "imports"
            };
            return Err(Refused::cannot_change(format!("accounts.{name}.{key}")));
        }
        merged.insert(name.clone(), kept);
    }
    Ok(merged)
}

/// The remotes that changed, were added or removed, matched by position; a remote moved to
/// another position is refused.
fn plan_remotes(old: &[Remote], new: &[Remote]) -> Result<Vec<RemoteChange>, Refused> {
    let mut changes = Vec::new();
    for (j, remote) in new.iter().enumerate() {
        let before = old.get(j);
        if before == Some(remote) {
            continue;
        }
        if let Some(key) = remote.unsupported.first() {
            return Err(Refused {
                key: format!("leafnodes.remotes[{j}].{key}"),
                reason: "not supported yet".to_owned(),
            });
        }
        if before.is_none_or(|b| b.urls != remote.urls) {
            // The URLs of another running remote whose own position now holds something
            // else: it moved.
            let moved = old.iter().enumerate().find(|(i, o)| {
                *i != j && o.urls == remote.urls && new.get(*i).is_none_or(|n| n.urls != o.urls)
            });
            if let Some((i, _)) = moved {
                return Err(Refused {
                    key: format!("leafnodes.remotes[{j}]"),
                    reason: format!(
                        "is leafnodes.remotes[{i}] moved; remotes are matched by position (an \
                         uplink's `remote` is an index), so a remote cannot move, nor can one \
                         other than the last be removed, while running (restart to apply it)"
                    ),
                });
            }
        }
        changes.push(match before {
            Some(_) => RemoteChange::Changed(j),
            None => RemoteChange::Added(j),
        });
    }
    changes.extend((new.len()..old.len()).rev().map(RemoteChange::Removed));
    Ok(changes)
}

/// The files remote `remote` reads, each with its key under the remote
/// (`credentials`, `tls.ca_file`, `tls.cert_file`, `tls.key_file`).
pub fn remote_files(remote: &Remote) -> Vec<(&'static str, &Path)> {
    let mut files = Vec::new();
    if let Some(path) = &remote.credentials {
        files.push(("credentials", path.as_path()));
    }
    if let Some(tls) = &remote.tls {
        for (key, path) in [
            ("tls.ca_file", &tls.ca_file),
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if let Some(path) = path {
                files.push((key, path.as_path()));
            }
        }
    }
    files
}

/// A digest of the content of every file remote number `index` reads ([`remote_files`]), to
/// tell whether one changed since the last time. The error names the key and the file
/// (`leafnodes.remotes[0].credentials: cannot read /etc/leafd/hub.creds: ...`).
pub fn remote_files_digest(remote: &Remote, index: usize) -> Result<u64, String> {
    let mut hasher = DefaultHasher::new();
    for (key, path) in remote_files(remote) {
        let content = std::fs::read(path).map_err(|e| {
            format!(
                "leafnodes.remotes[{index}].{key}: cannot read {}: {e}",
                path.display()
            )
        })?;
        key.hash(&mut hasher);
        content.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// The name of the first top-level key that differs.
fn first_difference(a: &Config, b: &Config) -> String {
    if a.leafnodes != b.leafnodes {
        return leafnodes_difference(&a.leafnodes, &b.leafnodes);
    }
    let checks: [(&str, bool); 18] = [
        ("host", a.host != b.host),
        ("port", a.port != b.port),
        ("http_port", a.http_port != b.http_port),
        ("https_port", a.https_port != b.https_port),
        ("tls", a.tls != b.tls),
        ("server_name", a.server_name != b.server_name),
        ("max_payload", a.max_payload != b.max_payload),
        ("max_control_line", a.max_control_line != b.max_control_line),
        ("max_pending", a.max_pending != b.max_pending),
        ("max_connections", a.max_connections != b.max_connections),
        (
            "max_subscriptions",
            a.max_subscriptions != b.max_subscriptions,
        ),
        ("ping_interval", a.ping_interval != b.ping_interval),
        ("ping_max", a.ping_max != b.ping_max),
        ("write_deadline", a.write_deadline != b.write_deadline),
        (
            "authorization.timeout",
            a.authorization.timeout != b.authorization.timeout,
        ),
        ("jetstream", a.jetstream != b.jetstream),
        ("system_account", a.system_account != b.system_account),
        ("websocket", a.websocket != b.websocket),
    ];
    checks
        .iter()
        .find(|(_, differs)| *differs)
        .map_or("configuration".to_string(), |(k, _)| (*k).to_string())
}

/// The first `leafnodes` key other than `remotes` that differs.
fn leafnodes_difference(a: &LeafNodes, b: &LeafNodes) -> String {
    let listen = match (&a.listen, &b.listen) {
        (Some(x), Some(y)) if x.port != y.port => "leafnodes.port",
        (Some(x), Some(y)) if x.host != y.host => "leafnodes.host",
        (x, y) if x != y => "leafnodes.listen",
        _ => "",
    };
    let checks: [(&str, bool); 7] = [
        (listen, !listen.is_empty()),
        (
            "leafnodes.authorization",
            a.authorization != b.authorization,
        ),
        ("leafnodes.tls", a.tls != b.tls),
        ("leafnodes.reconnect", a.reconnect != b.reconnect),
        (
            "leafnodes.ping_interval",
            a.ping_interval != b.ping_interval,
        ),
        ("leafnodes.ping_max", a.ping_max != b.ping_max),
        (
            "leafnodes.max_connections",
            a.max_connections != b.max_connections,
        ),
    ];
    checks
        .iter()
        .find(|(_, differs)| *differs)
        .map_or("leafnodes".to_string(), |(k, _)| (*k).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Format};

    fn cfg(text: &str) -> Config {
        config::parse_str(text, Format::Toml, "t.toml").unwrap()
    }

    const BASE: &str = "port = 4222\nlog_level = \"info\"\njetstream = true\n\
        [leafnodes]\nremotes = [{ url = \"nats-leaf://h:7422\" }]\n";

    #[test]
    fn users_and_user_only_accounts_reload_the_rest_is_refused_by_name() {
        let running = cfg("[jetstream]\nstore_dir = \"/x\"\n\
             [authorization]\nusers = [{ user = \"g\", password = \"g\" }]\n\
             [accounts.A]\nusers = [{ user = \"a\", password = \"a\" }]\n\
             [accounts.J]\njetstream = true\n");
        let plan = |text: &str| plan(&running, &cfg(text));
        let same = "[jetstream]\nstore_dir = \"/x\"\n[accounts.J]\njetstream = true\n";
        // Users changed, an account with users only added and one removed: planned.
        let p = plan(&format!(
            "{same}[authorization]\nusers = [{{ user = \"g\", password = \"new\" }}]\n\
             [accounts.C]\nusers = [{{ user = \"c\", password = \"c\" }}]\n"
        ))
        .unwrap();
        assert!(p.authorization && !p.is_empty());
        let refused = |text: &str| plan(text).unwrap_err().key;
        assert_eq!(
            refused("[jetstream]\nstore_dir = \"/x\"\n[accounts.J]\njetstream = false\n"),
            "accounts.J.jetstream"
        );
        assert_eq!(refused("[jetstream]\nstore_dir = \"/x\"\n"), "accounts.J");
        assert_eq!(
            refused(&format!(
                "websocket = {{ port = 8080, no_tls = true }}\n{same}"
            )),
            "websocket"
        );
        assert_eq!(
            refused(&format!("{same}[accounts.A]\njetstream = true\n")),
            "accounts.A.jetstream"
        );
        assert_eq!(
            refused(&format!(
                "{same}[accounts.N]\nexports = [{{ stream = \"x\" }}]\n"
            )),
            "accounts.N"
        );
        assert_eq!(
            refused(&format!(
                "{same}[accounts.A]\nusers = [{{ user = \"a\", password = \"a\" }}]\n\
                 [authorization]\ntimeout = \"9s\"\nusers = [{{ user = \"g\", password = \"g\" }}]\n"
            )),
            "authorization.timeout"
        );
        // Leaves log in with the client users: their change waits for a restart.
        let with_listener = cfg(
            "[authorization]\nusers = [{ user = \"g\", password = \"g\" }]\n\
             [leafnodes]\nlisten = \"127.0.0.1:7422\"\n",
        );
        let err = super::plan(
            &with_listener,
            &cfg(
                "[authorization]\nusers = [{ user = \"g\", password = \"h\" }]\n\
                  [leafnodes]\nlisten = \"127.0.0.1:7422\"\n",
            ),
        )
        .unwrap_err();
        assert_eq!(err.key, "authorization");
    }

    #[test]
    fn the_listener_and_unsupported_remote_keys_are_refused_by_name() {
        let hub = "port = 4222\n[leafnodes]\nport = 7422\nauthorization = { token = \"t\" }\n";
        let running = cfg(hub);
        let err = plan(&running, &cfg(&hub.replace("7422", "7433"))).unwrap_err();
        assert_eq!(err.key, "leafnodes.port");
        let err = plan(&running, &cfg(&hub.replace("\"t\"", "\"u\""))).unwrap_err();
        assert_eq!(err.key, "leafnodes.authorization");
        let err = plan(&running, &cfg(&hub.replace("port = 7422\n", ""))).unwrap_err();
        assert_eq!(err.key, "leafnodes.listen");
        let mut new = cfg(BASE);
        if let Some(r) = new.leafnodes.remotes.first_mut() {
            r.unsupported.push("hub".into());
        }
        let err = plan(&cfg(BASE), &new).unwrap_err();
        assert_eq!(err.key, "leafnodes.remotes[0].hub");
    }

    #[test]
    fn remote_files_are_read_for_their_digest() {
        let dir = std::env::temp_dir().join(format!("leaf-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("a.creds");
        std::fs::write(&creds, "one").unwrap();
        let remote = Remote {
            urls: vec!["nats-leaf://h:7422".into()],
            credentials: Some(creds.clone()),
            ..Remote::default()
        };
        assert_eq!(
            remote_files(&remote),
            vec![("credentials", creds.as_path())]
        );
        let first = remote_files_digest(&remote, 0).unwrap();
        assert_eq!(remote_files_digest(&remote, 0).unwrap(), first);
        std::fs::write(&creds, "two").unwrap();
        assert_ne!(remote_files_digest(&remote, 0).unwrap(), first);
        std::fs::remove_file(&creds).unwrap();
        let err = remote_files_digest(&remote, 3).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "leafnodes.remotes[3].credentials: cannot read {}",
                creds.display()
            )),
            "{err}"
        );
        let plain = Remote {
            urls: vec!["nats-leaf://h:7422".into()],
            ..Remote::default()
        };
        assert!(remote_files(&plain).is_empty());
        assert!(remote_files_digest(&plain, 0).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
