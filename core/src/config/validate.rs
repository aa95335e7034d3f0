//! Semantic checks on a loaded [`Config`], run after flags are applied.
//!
//! Serde checks types; this module checks what types cannot express: that
//! authentication settings are consistent, that permission subjects are
//! well formed, and that limits are in range. Errors name the key.

use leaf_proto::subject::is_valid_subject;
use std::collections::HashSet;

use super::{Authorization, Config, ConfigError, SubjectPermission, MAX_PAYLOAD_LIMIT};

/// Smallest accepted `max_control_line`: room for a `CONNECT` and a subject.
const MIN_CONTROL_LINE: usize = 256;
/// Largest accepted `max_control_line`.
const MAX_CONTROL_LINE: usize = 1 << 20;

impl Config {
    /// Checks the configuration and returns the first problem found, naming
    /// its key (e.g. `authorization.users[1].password: missing password`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_process()?;
        self.validate_monitoring()?;
        self.validate_authorization()?;
        self.validate_jetstream()?;
        self.validate_accounts()?;
        self.validate_leafnodes()?;
        self.validate_websocket()
    }

    /// The `websocket` block (see [`crate::websocket::settings`]).
    fn validate_websocket(&self) -> Result<(), ConfigError> {
        let Some(ws) = &self.websocket else {
            return Ok(());
        };
        let has_users = !self.authorization.users.is_empty()
            || self.accounts.values().any(|a| !a.users.is_empty());
        ws.validate(&self.host, has_users)
    }

    /// Lame duck timing as nats-server checks it, and `syslog` (not supported yet).
    fn validate_process(&self) -> Result<(), ConfigError> {
        if self.lame_duck_duration < super::MIN_LAME_DUCK_DURATION {
            return Err(ConfigError::invalid(
                "lame_duck_duration",
                format!(
                    "invalid lame_duck_duration of {:?}, minimum is 30 seconds",
                    self.lame_duck_duration
                ),
            ));
        }
        if self.lame_duck_grace_period >= self.lame_duck_duration {
            return Err(ConfigError::invalid(
                "lame_duck_grace_period",
                format!(
                    "must be shorter than lame_duck_duration ({:?}), got {:?}",
                    self.lame_duck_duration, self.lame_duck_grace_period
                ),
            ));
        }
        if self.syslog {
            return Err(ConfigError::invalid(
                "syslog",
                "not supported yet: log to stderr (the systemd journal takes it) or to a file \
                 (log_file)",
            ));
        }
        Ok(())
    }

    /// Whether clients log in by their TLS certificate (`tls.verify_and_map`).
    fn maps_certificates(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.verify_and_map)
    }

    /// `https_port` needs the `tls` table's certificate and excludes `http_port`, as in
    /// nats-server.
    fn validate_monitoring(&self) -> Result<(), ConfigError> {
        if self.https_port.is_none() {
            return Ok(());
        }
        if self.http_port.is_some() {
            return Err(ConfigError::invalid(
                "https_port",
                "cannot be combined with http_port: choose one monitoring port",
            ));
        }
        if self.tls.is_none() {
            return Err(ConfigError::invalid(
                "https_port",
                "needs the `tls` table (its certificate serves HTTPS)",
            ));
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() || has_whitespace(&self.host) {
            return Err(ConfigError::invalid(
                "host",
                "must be a host name or IP address",
            ));
        }
        if let Some(name) = &self.server_name {
            if name.is_empty() || has_whitespace(name) {
                return Err(ConfigError::invalid(
                    "server_name",
                    "must be non-empty and contain no whitespace",
                ));
            }
        }
        if self.max_payload == 0 || self.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(ConfigError::invalid(
                "max_payload",
                format!(
                    "must be between 1 and {MAX_PAYLOAD_LIMIT} (64MB), got {}",
                    self.max_payload
                ),
            ));
        }
        if !(MIN_CONTROL_LINE..=MAX_CONTROL_LINE).contains(&self.max_control_line) {
            return Err(ConfigError::invalid(
                "max_control_line",
                format!(
                    "must be between {MIN_CONTROL_LINE} and {MAX_CONTROL_LINE}, got {}",
                    self.max_control_line
                ),
            ));
        }
        if self.max_pending < self.max_payload {
            return Err(ConfigError::invalid(
                "max_pending",
                format!(
                    "must be at least max_payload ({}), got {}",
                    self.max_payload, self.max_pending
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.leafnodes.max_connections == 0 {
            return Err(ConfigError::invalid(
                "leafnodes.max_connections",
                "must be at least 1",
            ));
        }
        if self.ping_interval.is_zero() {
            return Err(ConfigError::invalid(
                "ping_interval",
                "must be greater than zero",
            ));
        }
        if self.ping_max == 0 {
            return Err(ConfigError::invalid("ping_max", "must be at least 1"));
        }
        if self.write_deadline.is_zero() {
            return Err(ConfigError::invalid(
                "write_deadline",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    fn validate_authorization(&self) -> Result<(), ConfigError> {
        let auth = &self.authorization;
        check_single_user(auth, "authorization")?;
        if let Some(token) = &auth.token {
            if token.is_empty() {
                return Err(ConfigError::invalid(
                    "authorization.token",
                    "must not be empty",
                ));
            }
            if auth.user.is_some() {
                return Err(ConfigError::invalid(
                    "authorization.token",
                    "cannot be combined with authorization.user; use one or the other",
                ));
            }
            if !auth.users.is_empty() {
                return Err(ConfigError::invalid(
                    "authorization.token",
                    "cannot be combined with authorization.users; use one or the other",
                ));
            }
        }
        if auth.user.is_some() && !auth.users.is_empty() {
            return Err(ConfigError::invalid(
                "authorization.user",
                "cannot be combined with authorization.users; add the user to the list instead",
            ));
        }
        if auth.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "authorization.timeout",
                "must be greater than zero",
            ));
        }
        let mut seen = HashSet::with_capacity(auth.users.len());
        for (i, user) in auth.users.iter().enumerate() {
            check_user(
                user,
                &format!("authorization.users[{i}]"),
                &mut seen,
                self.maps_certificates(),
            )?;
        }
        Ok(())
    }

    /// `accounts` and `system_account`: names that can be stores' directory names, users
    /// unique across every account and `authorization`, keys not implemented yet refused by
    /// name, and every account a leafnode user or remote is bound to configured.
    fn validate_accounts(&self) -> Result<(), ConfigError> {
        let mut seen: HashSet<&str> = self
            .authorization
            .users
            .iter()
            .map(|u| u.nkey.as_deref().unwrap_or(&u.user))
            .collect();
        seen.extend(self.authorization.user.as_deref());
        for (name, account) in &self.accounts {
            let key = format!("accounts.{name}");
            if !is_valid_account_name(name) {
                return Err(ConfigError::invalid(
                    key,
                    "an account name is letters, digits, `_`, `-` or `$`, at most 64 of them, and not `$G` (the global account)",
                ));
            }
            if let Some(unsupported) = account.unsupported().first() {
                return Err(ConfigError::invalid(
                    format!("{key}.{unsupported}"),
                    "not supported yet",
                ));
            }
            if account.jetstream.enabled && !self.jetstream.enabled {
                return Err(ConfigError::invalid(
                    format!("{key}.jetstream"),
                    "JetStream is not enabled on this server (set `jetstream`)",
                ));
            }
            if !account.users.is_empty() && self.authorization.token.is_some() {
                return Err(ConfigError::invalid(
                    "authorization.token",
                    format!("cannot be combined with users (accounts.{name}.users)"),
                ));
            }
            for (i, user) in account.users.iter().enumerate() {
                check_user(
                    user,
                    &format!("{key}.users[{i}]"),
                    &mut seen,
                    self.maps_certificates(),
                )?;
            }
            self.check_exports_imports(name)?;
        }
        self.check_import_cycles()?;
        let known = |name: &str| self.accounts.contains_key(name);
        if let Some(system) = &self.system_account {
            // In operator mode (hubd) the system account is an account public key.
            let account_key = system.len() == 56
                && system.starts_with('A')
                && nkeys::KeyPair::from_public_key(system).is_ok();
            if !known(system) && system != "$SYS" && !account_key {
                return Err(ConfigError::invalid(
                    "system_account",
                    format!("no account `{system}` in `accounts`"),
                ));
            }
        }
        for (i, user) in self.leafnodes.authorization.users.iter().enumerate() {
            if let Some(account) = user.account.as_deref().filter(|a| !known(a)) {
                return Err(ConfigError::invalid(
                    format!("leafnodes.authorization.users[{i}].account"),
                    format!("no account `{account}` in `accounts`"),
                ));
            }
        }
        for (i, remote) in self.leafnodes.remotes.iter().enumerate() {
            if let Some(account) = remote.account.as_deref().filter(|a| !known(a)) {
                return Err(ConfigError::invalid(
                    format!("leafnodes.remotes[{i}].account"),
                    format!("no account `{account}` in `accounts`"),
                ));
            }
        }
        Ok(())
    }

    fn validate_jetstream(&self) -> Result<(), ConfigError> {
        let js = &self.jetstream;
        if let Some(dir) = &js.store_dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "jetstream.store_dir",
                    "must not be empty",
                ));
            }
        }
        if let Some(domain) = &js.domain {
            if !is_valid_token(domain) {
                return Err(ConfigError::invalid(
                    "jetstream.domain",
                    format!("`{domain}` must be a single subject token (no dots, wildcards or whitespace)"),
                ));
            }
        }
        Ok(())
    }

    fn validate_leafnodes(&self) -> Result<(), ConfigError> {
        if let Some(listen) = &self.leafnodes.listen {
            if listen
                .host
                .as_deref()
                .is_some_and(|h| h.is_empty() || has_whitespace(h))
            {
                return Err(ConfigError::invalid(
                    "leafnodes.listen",
                    "host must be a host name or IP address",
                ));
            }
        }
        let auth = &self.leafnodes.authorization;
        check_single_user(auth, "leafnodes.authorization")?;
        match (&auth.user, &auth.token) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "leafnodes.authorization.token",
                    "cannot be combined with leafnodes.authorization.user; use one or the other",
                ))
            }
            (_, Some(token)) if token.is_empty() => {
                return Err(ConfigError::invalid(
                    "leafnodes.authorization.token",
                    "must not be empty",
                ))
            }
            _ => {}
        }
        for (i, user) in auth.users.iter().enumerate() {
            let key = format!("leafnodes.authorization.users[{i}].permissions");
            check_subjects(&user.permissions.publish, &format!("{key}.publish"))?;
            check_subjects(&user.permissions.subscribe, &format!("{key}.subscribe"))?;
        }
        if auth.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "leafnodes.authorization.timeout",
                "must be greater than zero",
            ));
        }
        if self.leafnodes.reconnect.is_zero() {
            return Err(ConfigError::invalid(
                "leafnodes.reconnect",
                "must be greater than zero",
            ));
        }
        if self.leafnodes.ping_interval.is_zero() {
            return Err(ConfigError::invalid(
                "leafnodes.ping_interval",
                "must be greater than zero",
            ));
        }
        if self.leafnodes.ping_max == 0 {
            return Err(ConfigError::invalid(
                "leafnodes.ping_max",
                "must be at least 1",
            ));
        }
        for (i, remote) in self.leafnodes.remotes.iter().enumerate() {
            if remote.urls.is_empty() {
                return Err(ConfigError::invalid(
                    format!("leafnodes.remotes[{i}].url"),
                    "missing url (set `url` or `urls`)",
                ));
            }
            for (list, key) in [
                (&remote.deny_imports, "deny_imports"),
                (&remote.deny_exports, "deny_exports"),
            ] {
                for subject in list {
                    if !leaf_proto::subject::is_valid_subject(subject.as_bytes()) {
                        return Err(ConfigError::invalid(
                            format!("leafnodes.remotes[{i}].{key}"),
                            format!("`{subject}` is not a valid subject"),
                        ));
                    }
                }
            }
            for url in &remote.urls {
                if !is_plausible_url(url) {
                    return Err(ConfigError::invalid(
                        format!("leafnodes.remotes[{i}].urls"),
                        format!(
                            "`{}` is not a URL like nats-leaf://host:7422",
                            crate::redact::url(url)
                        ),
                    ));
                }
            }
            let is_ws = |u: &String| {
                let scheme = u
                    .trim()
                    .split_once("://")
                    .map(|(s, _)| s.to_ascii_lowercase());
                matches!(scheme.as_deref(), Some("ws" | "wss"))
            };
            if remote.urls.iter().any(is_ws) && !remote.urls.iter().all(is_ws) {
                return Err(ConfigError::invalid(
                    format!("leafnodes.remotes[{i}].urls"),
                    "cannot mix websocket (ws://, wss://) and other URLs in one remote (as \
                     nats-server)",
                ));
            }
        }
        Ok(())
    }
}

/// Checks every subject of an allow/deny pair.
/// An empty password is refused: it would let anybody who knows the user name in (and
/// nats-server's `--pass ""` means no password at all).
/// A bcrypt hash (nats-server's `$2a$...`) must be one whole hash, 60 characters: anything
/// else would be verified as bcrypt and never match.
impl Config {
    /// The exports and imports of account `name`: valid subjects, every import within an
    /// export of the other account that lets this one in.
    fn check_exports_imports(&self, name: &str) -> Result<(), ConfigError> {
        let Some(account) = self.accounts.get(name) else {
            return Ok(());
        };
        for (i, export) in account.exports.iter().enumerate() {
            let key = format!("accounts.{name}.exports[{i}]");
            if !is_valid_subject(export.subject.as_bytes()) {
                return Err(ConfigError::invalid(
                    format!("{key}.{}", export.kind),
                    format!("invalid subject `{}`", export.subject),
                ));
            }
            for other in export.accounts.iter().flatten() {
                if !self.accounts.contains_key(other) {
                    return Err(ConfigError::invalid(
                        format!("{key}.accounts"),
                        format!("no account `{other}` in `accounts`"),
                    ));
                }
            }
        }
        for (i, import) in account.imports.iter().enumerate() {
            let key = format!("accounts.{name}.imports[{i}]");
            let kind = import.kind;
            let Some(exporter) = self.accounts.get(&import.account) else {
                return Err(ConfigError::invalid(
                    format!("{key}.{kind}.account"),
                    format!("no account `{}` in `accounts`", import.account),
                ));
            };
            if import.account == name {
                return Err(ConfigError::invalid(
                    format!("{key}.{kind}.account"),
                    "an account cannot import from itself",
                ));
            }
            if !is_valid_subject(import.subject.as_bytes()) {
                return Err(ConfigError::invalid(
                    format!("{key}.{kind}.subject"),
                    format!("invalid subject `{}`", import.subject),
                ));
            }
            let (from, to) = match kind {
                super::account_settings::Kind::Stream => (&import.subject, &import.local),
                super::account_settings::Kind::Service => (&import.local, &import.subject),
            };
            if let Err(e) = leaf_proto::transform::Transform::new(from, to) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "cannot map `{}` to `{}` ({e})",
                        import.subject, import.local
                    ),
                ));
            }
            let exported = exporter.exports.iter().any(|e| {
                e.kind == kind
                    && leaf_proto::subject::is_subset(
                        import.subject.as_bytes(),
                        e.subject.as_bytes(),
                    )
                    && e.accounts
                        .as_ref()
                        .is_none_or(|a| a.iter().any(|x| x == name))
            });
            if !exported {
                return Err(ConfigError::invalid(
                    format!("{key}.{kind}"),
                    format!(
                        "account `{}` exports no {kind} covering `{}` to `{name}`",
                        import.account, import.subject
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses imports that would send a message (or a request) round in a circle: A's
    /// stream imported into B arrives on a subject B exports back into A, and so on. Imports
    /// both ways on subjects that do not chain (events one way, commands the other) are fine.
    fn check_import_cycles(&self) -> Result<(), ConfigError> {
        use super::account_settings::Kind;
        use leaf_proto::subject::subjects_overlap;
        /// Traffic one import carries: from (account, subject) to (account, subject).
        struct Flow<'a> {
            from: (&'a str, &'a str),
            to: (&'a str, &'a str),
            key: String,
        }
        for kind in [Kind::Stream, Kind::Service] {
            let mut flows = Vec::new();
            for (name, account) in &self.accounts {
                for (i, import) in account.imports.iter().enumerate() {
                    if import.kind != kind {
                        continue;
                    }
                    let exporter = (import.account.as_str(), import.subject.as_str());
                    let importer = (name.as_str(), import.local.as_str());
                    let (from, to) = match kind {
                        Kind::Stream => (exporter, importer),
                        Kind::Service => (importer, exporter),
                    };
                    flows.push(Flow {
                        from,
                        to,
                        key: format!("accounts.{name}.imports[{i}]"),
                    });
                }
            }
            let follows = |a: &Flow<'_>, b: &Flow<'_>| {
                a.to.0 == b.from.0 && subjects_overlap(a.to.1.as_bytes(), b.from.1.as_bytes())
            };
            for (first, flow) in flows.iter().enumerate() {
                let mut stack = vec![vec![first]];
                let mut visited = HashSet::new();
                while let Some(path) = stack.pop() {
                    let Some(&last) = path.last() else { continue };
                    for (next, candidate) in flows.iter().enumerate() {
                        if !follows(&flows[last], candidate) {
                            continue;
                        }
                        if next == first {
                            let accounts: Vec<&str> = path
                                .iter()
                                .map(|&i| flows[i].from.0)
                                .chain([flow.from.0])
                                .collect();
                            return Err(ConfigError::invalid(
                                flow.key.clone(),
                                format!("{kind} import cycle: {}", accounts.join(" -> ")),
                            ));
                        }
                        if visited.insert(next) {
                            let mut longer = path.clone();
                            longer.push(next);
                            stack.push(longer);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One user of `authorization.users` or of an account (`key` names it): a name unique among
/// all users (`seen`), a password, well-formed permission subjects.
/// Checks one user entry at `key`; `by_certificate` (`tls.verify_and_map`) lets it go without
/// a password (it then logs in only with its certificate).
fn check_user<'a>(
    user: &'a super::User,
    key: &str,
    seen: &mut HashSet<&'a str>,
    by_certificate: bool,
) -> Result<(), ConfigError> {
    if let Some(nkey) = &user.nkey {
        if !user.user.is_empty() || user.password.is_some() {
            return Err(ConfigError::invalid(
                format!("{key}.nkey"),
                "set either `nkey`, or `user` and `password`, not both",
            ));
        }
        if let Err(e) = crate::auth::nkey::user_public_key(nkey) {
            return Err(ConfigError::invalid(format!("{key}.nkey"), e.to_string()));
        }
        if !seen.insert(nkey.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.nkey"),
                format!("duplicate user nkey `{nkey}`"),
            ));
        }
        let perms = &user.permissions;
        check_subjects(&perms.publish, &format!("{key}.permissions.publish"))?;
        return check_subjects(&perms.subscribe, &format!("{key}.permissions.subscribe"));
    }
    if user.user.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.user"),
            "must not be empty",
        ));
    }
    if !seen.insert(user.user.as_str()) {
        return Err(ConfigError::invalid(
            format!("{key}.user"),
            format!("duplicate user `{}`", user.user),
        ));
    }
    if user.password.is_none() && !by_certificate {
        return Err(ConfigError::invalid(
            format!("{key}.password"),
            format!("missing password for user `{}`", user.user),
        ));
    }
    check_password(user.password.as_deref(), &format!("{key}.password"))?;
    let perms = &user.permissions;
    check_subjects(&perms.publish, &format!("{key}.permissions.publish"))?;
    check_subjects(&perms.subscribe, &format!("{key}.permissions.subscribe"))
}

/// Whether `name` may name an account: 1 to 64 letters, digits, `_`, `-` or `$` (it names
/// the account's store directory), and not the global account's `$G`.
pub fn is_valid_account_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != crate::server::GLOBAL_ACCOUNT
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$'))
}

/// The single user of an authorization table (`<table>.user` and `<table>.password`, clients'
/// or the leafnode listener's): a usable password, and both keys or neither.
fn check_single_user<U>(auth: &Authorization<U>, table: &str) -> Result<(), ConfigError> {
    check_password(auth.password.as_deref(), &format!("{table}.password"))?;
    match (&auth.user, &auth.password) {
        (Some(user), Some(_)) if user.is_empty() => Err(ConfigError::invalid(
            format!("{table}.user"),
            "must not be empty",
        )),
        (Some(_), None) => Err(ConfigError::invalid(
            format!("{table}.password"),
            format!("missing password for {table}.user"),
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            format!("{table}.user"),
            format!("missing user for {table}.password"),
        )),
        _ => Ok(()),
    }
}

fn check_password(password: Option<&str>, key: &str) -> Result<(), ConfigError> {
    match password {
        Some("") => Err(ConfigError::invalid(key, "must not be empty")),
        Some(p) if crate::auth::is_bcrypt(p) && p.len() != 60 => Err(ConfigError::invalid(
            key,
            "starts like a bcrypt hash ($2a$NN$) but is not one (60 characters)",
        )),
        _ => Ok(()),
    }
}

fn check_subjects(perm: &SubjectPermission, key: &str) -> Result<(), ConfigError> {
    for (list, name) in [(&perm.allow, "allow"), (&perm.deny, "deny")] {
        for (i, subject) in list.iter().enumerate() {
            if !is_valid_subject(subject.as_bytes()) {
                return Err(ConfigError::invalid(
                    format!("{key}.{name}[{i}]"),
                    format!("invalid subject `{subject}`"),
                ));
            }
        }
    }
    Ok(())
}

/// A single subject token without wildcards (for names such as a JetStream domain).
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .bytes()
            .any(|b| b == b'.' || b == b'*' || b == b'>' || b.is_ascii_whitespace())
}

/// `scheme://rest` with a non-empty scheme and rest and no whitespace.
fn is_plausible_url(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+')
                && !rest.is_empty()
                && !has_whitespace(url)
        }
        None => false,
    }
}

fn has_whitespace(s: &str) -> bool {
    s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, Format, Remote, User};

    fn invalid(cfg: &Config) -> String {
        match cfg.validate() {
            Err(err @ ConfigError::Invalid { .. }) => err.to_string(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn user(name: &str, password: Option<&str>) -> User {
        User {
            user: name.into(),
            password: password.map(Into::into),
            nkey: None,
            permissions: Default::default(),
        }
    }

    #[test]
    fn subjects() {
        for ok in [
            "foo",
            "foo.bar",
            "foo.*",
            "foo.>",
            ">",
            "*",
            "*.bar.>",
            "a-b_c.$JS.API",
        ] {
            assert!(is_valid_subject(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo bar",
            "foo.>.bar",
            "a\tb",
        ] {
            assert!(!is_valid_subject(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn limits() {
        let mut cfg = Config {
            port: 0, // ephemeral port is fine
            ..Config::default()
        };
        cfg.validate().unwrap();
        cfg.max_payload = 0;
        assert!(invalid(&cfg).starts_with("max_payload: must be between 1 and"));
        cfg.max_payload = MAX_PAYLOAD_LIMIT + 1;
        assert!(invalid(&cfg).starts_with("max_payload: "));
        cfg.max_payload = MAX_PAYLOAD_LIMIT;
        assert!(
            invalid(&cfg).starts_with("max_pending: must be at least max_payload"),
            "the default max_pending (8 MiB) is below the largest max_payload"
        );
        cfg.max_pending = MAX_PAYLOAD_LIMIT;
        cfg.validate().unwrap();
        cfg.max_pending = 1024;
        assert!(invalid(&cfg).starts_with("max_pending: must be at least max_payload"));

        let cfg = Config {
            max_control_line: 10,
            ..Config::default()
        };
        assert!(invalid(&cfg).starts_with("max_control_line: "));
        let cfg = Config {
            ping_max: 0,
            ..Config::default()
        };
        assert_eq!(invalid(&cfg), "ping_max: must be at least 1");
        let cfg = Config {
            write_deadline: std::time::Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(invalid(&cfg), "write_deadline: must be greater than zero");
        let mut cfg = Config::default();
        cfg.leafnodes.max_connections = 0;
        assert_eq!(
            invalid(&cfg),
            "leafnodes.max_connections: must be at least 1"
        );
        let cfg = Config {
            server_name: Some("my server".into()),
            ..Config::default()
        };
        assert!(invalid(&cfg).starts_with("server_name: "));
    }

    #[test]
    fn authorization_combinations() {
        let mut cfg = Config::default();
        cfg.authorization.user = Some("a".into());
        assert_eq!(
            invalid(&cfg),
            "authorization.password: missing password for authorization.user"
        );
        cfg.authorization.password = Some("b".into());
        cfg.validate().unwrap();
        cfg.authorization.token = Some("t".into());
        assert!(invalid(&cfg)
            .starts_with("authorization.token: cannot be combined with authorization.user"));

        let mut cfg = Config::default();
        cfg.authorization.token = Some("t".into());
        cfg.validate().unwrap();
        cfg.authorization.users = vec![user("x", Some("y"))];
        assert!(invalid(&cfg)
            .starts_with("authorization.token: cannot be combined with authorization.users"));

        let mut cfg = Config::default();
        cfg.authorization.users = vec![user("x", Some("y")), user("z", None)];
        assert_eq!(
            invalid(&cfg),
            "authorization.users[1].password: missing password for user `z`"
        );
        cfg.authorization.users = vec![user("x", Some("y")), user("x", Some("w"))];
        assert_eq!(
            invalid(&cfg),
            "authorization.users[1].user: duplicate user `x`"
        );
        cfg.authorization.users = vec![user("x", Some("y"))];
        cfg.authorization.user = Some("a".into());
        cfg.authorization.password = Some("b".into());
        assert!(invalid(&cfg).starts_with("authorization.user: cannot be combined"));
    }

    #[test]
    fn permission_subjects_are_checked() {
        let text = r#"
            [authorization]
            users = [
              { user = "x", password = "y", permissions = { publish = ["ok.>"], subscribe = { allow = ["fine"], deny = ["bad..subject"] } } },
            ]
        "#;
        let cfg = parse_str(text, Format::Toml, "t.toml").unwrap();
        assert_eq!(
            invalid(&cfg),
            "authorization.users[0].permissions.subscribe.deny[0]: invalid subject `bad..subject`"
        );
    }

    #[test]
    fn jetstream_and_leafnodes() {
        let mut cfg = Config::default();
        cfg.jetstream.domain = Some("edge.1".into());
        assert!(invalid(&cfg).starts_with("jetstream.domain: "));

        let mut cfg = Config::default();
        cfg.leafnodes.remotes = vec![Remote::default()];
        assert_eq!(
            invalid(&cfg),
            "leafnodes.remotes[0].url: missing url (set `url` or `urls`)"
        );
        cfg.leafnodes.remotes = vec![Remote {
            urls: vec!["hub:7422".into()],
            ..Remote::default()
        }];
        assert!(invalid(&cfg).starts_with("leafnodes.remotes[0].urls: `hub:7422` is not a URL"));
        cfg.leafnodes.remotes = vec![Remote {
            urls: vec!["u:secret@hub:7422".into()],
            ..Remote::default()
        }];
        assert!(invalid(&cfg)
            .starts_with("leafnodes.remotes[0].urls: `u:[REDACTED]@hub:7422` is not a URL"));
        cfg.leafnodes.remotes = vec![Remote {
            urls: vec!["nats-leaf://hub:7422".into()],
            ..Remote::default()
        }];
        cfg.validate().unwrap();

        let mut cfg = Config::default();
        cfg.leafnodes.authorization.user = Some("leaf".into());
        assert_eq!(
            invalid(&cfg),
            "leafnodes.authorization.password: missing password for leafnodes.authorization.user"
        );
        cfg.leafnodes.authorization.password = Some("pw".into());
        cfg.validate().unwrap();
        cfg.leafnodes.authorization.token = Some("t".into());
        assert!(invalid(&cfg).starts_with("leafnodes.authorization.token: cannot be combined"));
        let mut cfg = Config::default();
        cfg.leafnodes.authorization.token = Some(String::new());
        assert_eq!(
            invalid(&cfg),
            "leafnodes.authorization.token: must not be empty"
        );
        let mut cfg = Config::default();
        cfg.leafnodes.ping_max = 0;
        assert_eq!(invalid(&cfg), "leafnodes.ping_max: must be at least 1");
        let mut cfg = Config::default();
        cfg.leafnodes.reconnect = std::time::Duration::ZERO;
        assert_eq!(
            invalid(&cfg),
            "leafnodes.reconnect: must be greater than zero"
        );
    }
}
