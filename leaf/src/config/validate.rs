//! Semantic checks on a loaded [`Config`], run after flags are applied: the shared keys
//! (`leaf_core::config`), the uplinks (here) and the gateways (`crate::gateway::config`).
//!
//! Serde checks types; this module checks what types cannot express: that
//! uplink names, subjects and limits are well formed and that each uplink has its hub.
//! Errors name the key.

use leaf_core::config::{is_valid_token, ConfigError};

use super::{Config, Uplink};

impl Config {
    /// Checks the configuration and returns the first problem found, naming
    /// its key (e.g. `authorization.users[1].password: missing password`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.validate_uplinks()?;
        self.fleet.validate()?;
        self.gateways.validate()
    }

    fn validate_uplinks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, up) in self.uplinks.iter().enumerate() {
            let key = |k: &str| format!("uplinks[{i}].{k}");
            if up.name.is_empty()
                || !up
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::invalid(
                    key("name"),
                    "must be letters, digits, `-` or `_` (it names the local stream)",
                ));
            }
            if !names.insert(up.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("`{}` is used by another uplink", up.name),
                ));
            }
            if !self.server.jetstream.enabled {
                return Err(ConfigError::invalid(
                    key("name"),
                    "uplinks buffer in JetStream: enable `jetstream`",
                ));
            }
            if up.subjects.is_empty() {
                return Err(ConfigError::invalid(key("subjects"), "missing subjects"));
            }
            for subject in &up.subjects {
                if !leaf_proto::subject::is_valid_subject(subject.as_bytes()) {
                    return Err(ConfigError::invalid(
                        key("subjects"),
                        format!("`{subject}` is not a valid subject"),
                    ));
                }
            }
            for subject in &up.hub_subjects {
                if !leaf_proto::subject::is_valid_subject(subject.as_bytes()) {
                    return Err(ConfigError::invalid(
                        key("hub_subjects"),
                        format!("`{subject}` is not a valid subject"),
                    ));
                }
            }
            let stream = up.stream_name();
            if !is_valid_token(&stream) {
                return Err(ConfigError::invalid(
                    key("stream"),
                    format!("`{stream}` is not a valid stream name"),
                ));
            }
            if up.hub_stream.is_empty() || !is_valid_token(&up.hub_stream) {
                return Err(ConfigError::invalid(
                    key("hub_stream"),
                    "must be a stream name (no dots, wildcards or whitespace)",
                ));
            }
            if let Some(domain) = &up.hub_domain {
                if !is_valid_token(domain) {
                    return Err(ConfigError::invalid(
                        key("hub_domain"),
                        format!("`{domain}` must be a single subject token"),
                    ));
                }
            }
            if let Some(prefix) = &up.subject_prefix {
                if prefix.contains(['*', '>'])
                    || !leaf_proto::subject::is_valid_subject(prefix.as_bytes())
                {
                    return Err(ConfigError::invalid(
                        key("subject_prefix"),
                        format!("`{prefix}` must be literal subject tokens"),
                    ));
                }
            }
            if up.remote >= self.server.leafnodes.remotes.len() {
                return Err(ConfigError::invalid(
                    key("remote"),
                    format!(
                        "there is no leafnodes.remotes[{}] (the uplink needs a hub: set leafnodes.remotes or --hub)",
                        up.remote
                    ),
                ));
            }
            self.validate_uplink_deny_lists(i, up)?;
            if up.max_in_flight == 0 || up.max_in_flight > 65_536 {
                return Err(ConfigError::invalid(
                    key("max_in_flight"),
                    "must be between 1 and 65536",
                ));
            }
            if up.ack_every == 0 || up.ack_every > 4096 {
                return Err(ConfigError::invalid(
                    key("ack_every"),
                    "must be between 1 and 4096",
                ));
            }
            if up.ack_timeout.is_zero() {
                return Err(ConfigError::invalid(
                    key("ack_timeout"),
                    "must be greater than zero",
                ));
            }
            if up.rate_limit == Some(0) {
                return Err(ConfigError::invalid(
                    key("rate_limit"),
                    "must be greater than zero (leave it out for no limit)",
                ));
            }
        }
        Ok(())
    }

    /// An uplink writes past the router, so it applies its remote's `deny_exports` itself;
    /// these checks refuse the combinations that could never work: deny lists that keep the
    /// hub's JetStream API (how acknowledgements are proven) or the uplink's answers off the
    /// link, or that cover every subject the uplink forwards.
    fn validate_uplink_deny_lists(&self, i: usize, up: &Uplink) -> Result<(), ConfigError> {
        use leaf_proto::subject::{is_subset, subject_matches};
        let Some(remote) = self.server.leafnodes.remotes.get(up.remote) else {
            return Ok(());
        };
        let r = up.remote;
        let api = match &up.hub_domain {
            Some(d) => format!("$JS.{d}.API.STREAM.MSG.GET.{}", up.hub_stream),
            None => format!("$JS.API.STREAM.MSG.GET.{}", up.hub_stream),
        };
        if let Some(p) = remote
            .deny_exports
            .iter()
            .find(|p| subject_matches(p.as_bytes(), api.as_bytes()))
        {
            return Err(ConfigError::invalid(
                format!("leafnodes.remotes[{r}].deny_exports"),
                format!("`{p}` keeps the hub's JetStream API ({api}) off the link, which uplinks[{i}] needs to confirm what the hub stored"),
            ));
        }
        let answers = format!("{}x.a.1.1", super::uplink::REPLY_PREFIX);
        if let Some(p) = remote
            .deny_imports
            .iter()
            .find(|p| subject_matches(p.as_bytes(), answers.as_bytes()))
        {
            return Err(ConfigError::invalid(
                format!("leafnodes.remotes[{r}].deny_imports"),
                format!("`{p}` keeps the hub's answers to uplinks[{i}] (_UPLINK.>) off the link"),
            ));
        }
        let hub_subject = |s: &str| match &up.subject_prefix {
            Some(prefix) => format!("{prefix}.{s}"),
            None => s.to_string(),
        };
        let all_denied = up.subjects.iter().all(|s| {
            let s = hub_subject(s);
            remote
                .deny_exports
                .iter()
                .any(|p| is_subset(s.as_bytes(), p.as_bytes()))
        });
        if all_denied {
            return Err(ConfigError::invalid(
                format!("uplinks[{i}].subjects"),
                format!(
                    "leafnodes.remotes[{r}].deny_exports cover every subject the uplink forwards"
                ),
            ));
        }
        Ok(())
    }
}
