//! nats-server's key names onto ours: the one table of the keys nats-server 2.9 reads
//! ([`RULES`]: supported, an alias of ours, refused as "not supported yet", or cosmetic and
//! ignored with a warning), and the pass over a parsed file that applies it ([`normalize`])
//! before the file is deserialized like a TOML one.
//!
//! A top-level key that the shared `Config` or the binary's `Extension` reads is supported
//! whatever the table says, so a key another change starts to implement (`log_file`,
//! `lame_duck_duration`, `websocket`, ...) is read as soon as it is a field, and its row
//! here becomes documentation.

use super::tree::{Entry, Map, Node, Value};
use super::Pos;

/// What a nats-server key is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read under this name.
    Supported,
    /// nats-server's other name for our key (the path's last part is renamed to this).
    Alias(&'static str),
    /// Changes what the server promises (auth, limits, storage, clustering) and is not
    /// implemented: refused with "not supported yet" and what it does.
    Refused(&'static str),
    /// Changes nothing a client or a leaf sees (logging, profiling, tuning): accepted and
    /// named in one warning.
    Cosmetic,
}

use Kind::{Alias, Cosmetic, Refused, Supported};

/// The keys of nats-server 2.9's `server/opts.go`, by path (`a.b.c`; array items are
/// transparent; `accounts.*` is any account; a path starting with `*.` matches that ending
/// anywhere except under `cluster`, whose settings the route code owns).
pub const RULES: &[(&str, Kind)] = &[
    // Top level (processConfigFileLine).
    ("listen", Supported),
    ("port", Supported),
    ("host", Supported),
    ("net", Alias("host")),
    ("server_name", Supported),
    (
        "client_advertise",
        Refused("the client URL advertised to clients"),
    ),
    ("debug", Supported),
    ("trace", Supported),
    ("trace_verbose", Cosmetic),
    ("logtime", Cosmetic),
    ("mappings", Refused("subject mappings")),
    ("maps", Refused("subject mappings")),
    ("disable_sublist_cache", Cosmetic),
    ("no_sublist_cache", Cosmetic),
    ("accounts", Supported),
    ("authorization", Supported),
    ("http", Supported),
    ("https", Supported),
    ("http_port", Supported),
    ("monitor_port", Alias("http_port")),
    ("https_port", Supported),
    (
        "http_base_path",
        Refused("a path prefix for the monitoring endpoints"),
    ),
    (
        "cluster",
        Refused("clustering (hubd has clusters; leafd does not)"),
    ),
    (
        "gateway",
        Refused("gateways between clusters (superclusters)"),
    ),
    ("leafnodes", Supported),
    ("leaf", Alias("leafnodes")),
    (
        "store_dir",
        Refused("a top-level store_dir: set `jetstream { store_dir }`"),
    ),
    (
        "storedir",
        Refused("a top-level store_dir: set `jetstream { store_dir }`"),
    ),
    ("jetstream", Supported),
    ("log_file", Supported),
    ("logfile", Alias("log_file")),
    ("logfile_size_limit", Cosmetic),
    ("log_size_limit", Cosmetic),
    // `syslog: true` is refused by the configuration's checks ("not supported yet").
    ("syslog", Supported),
    ("remote_syslog", Cosmetic),
    ("pid_file", Supported),
    ("pidfile", Alias("pid_file")),
    ("ports_file_dir", Cosmetic),
    ("prof_port", Cosmetic),
    ("max_control_line", Supported),
    ("max_payload", Supported),
    ("max_pending", Supported),
    ("max_connections", Supported),
    ("max_conn", Alias("max_connections")),
    ("max_traced_msg_len", Cosmetic),
    ("max_subscriptions", Supported),
    ("max_subs", Supported),
    (
        "max_sub_tokens",
        Refused("a limit on the tokens of a subscription's subject"),
    ),
    (
        "max_subscription_tokens",
        Refused("a limit on the tokens of a subscription's subject"),
    ),
    ("ping_interval", Supported),
    ("ping_max", Supported),
    ("tls", Supported),
    ("ocsp", Refused("OCSP stapling")),
    (
        "allow_non_tls",
        Refused("plain connections next to TLS on the client port"),
    ),
    ("write_deadline", Supported),
    ("lame_duck_duration", Supported),
    ("lame_duck_grace_period", Supported),
    (
        "operator",
        Refused("operator mode (hubd has it; leafd does not)"),
    ),
    ("operators", Alias("operator")),
    ("root", Alias("operator")),
    ("roots", Alias("operator")),
    ("root_operator", Alias("operator")),
    ("root_operators", Alias("operator")),
    (
        "resolver",
        Refused("an account resolver (hubd has it; leafd does not)"),
    ),
    ("account_resolver", Alias("resolver")),
    ("accounts_resolver", Alias("resolver")),
    (
        "resolver_tls",
        Refused("TLS towards a URL account resolver"),
    ),
    (
        "resolver_preload",
        Refused("preloaded account JWTs (hubd has them; leafd does not)"),
    ),
    (
        "resolver_pinned_accounts",
        Refused("pinned resolver accounts"),
    ),
    (
        "no_auth_user",
        Refused("a user for clients that send no credentials"),
    ),
    ("system_account", Supported),
    ("system", Alias("system_account")),
    (
        "no_system_account",
        Refused("running without a system account"),
    ),
    ("no_system", Refused("running without a system account")),
    ("no_sys_acc", Refused("running without a system account")),
    ("no_header_support", Refused("turning message headers off")),
    ("trusted", Refused("trusted operator keys")),
    ("trusted_keys", Refused("trusted operator keys")),
    ("connect_error_reports", Cosmetic),
    ("reconnect_error_reports", Cosmetic),
    ("websocket", Supported),
    ("ws", Alias("websocket")),
    ("mqtt", Refused("MQTT clients")),
    ("server_tags", Cosmetic),
    (
        "default_js_domain",
        Refused("default JetStream domains of accounts"),
    ),
    // jetstream { } (parseJetStream).
    ("jetstream.enabled", Supported),
    ("jetstream.enable", Alias("enabled")),
    (
        "jetstream.disabled",
        Refused("`disabled`: write `enabled: false`"),
    ),
    (
        "jetstream.disable",
        Refused("`disable`: write `enabled: false`"),
    ),
    ("jetstream.store_dir", Supported),
    ("jetstream.store", Alias("store_dir")),
    ("jetstream.storedir", Alias("store_dir")),
    ("jetstream.max_memory_store", Supported),
    ("jetstream.max_mem_store", Supported),
    ("jetstream.max_mem", Supported),
    ("jetstream.max_file_store", Supported),
    ("jetstream.max_file", Supported),
    ("jetstream.domain", Supported),
    ("jetstream.key", Refused("encryption of the store")),
    ("jetstream.ek", Refused("encryption of the store")),
    (
        "jetstream.encryption_key",
        Refused("encryption of the store"),
    ),
    ("jetstream.cipher", Refused("encryption of the store")),
    ("jetstream.extension_hint", Cosmetic),
    (
        "jetstream.limits",
        Refused("server-wide JetStream API limits"),
    ),
    (
        "jetstream.unique_tag",
        Refused("placement of clustered streams"),
    ),
    (
        "jetstream.max_outstanding_catchup",
        Refused("clustered JetStream"),
    ),
    // websocket { } (parseWebsocket): `crate::websocket::settings`, which refuses
    // `compression`, `jwt_cookie`, `no_auth_user` and `advertise` by name.
    ("websocket.listen", Supported),
    ("websocket.port", Supported),
    ("websocket.host", Supported),
    ("websocket.net", Alias("host")),
    ("websocket.advertise", Supported),
    ("websocket.no_tls", Supported),
    ("websocket.tls", Supported),
    ("websocket.same_origin", Supported),
    ("websocket.allowed_origins", Supported),
    ("websocket.allowed_origin", Alias("allowed_origins")),
    ("websocket.allow_origins", Alias("allowed_origins")),
    ("websocket.allow_origin", Alias("allowed_origins")),
    ("websocket.origins", Alias("allowed_origins")),
    ("websocket.origin", Alias("allowed_origins")),
    ("websocket.handshake_timeout", Supported),
    ("websocket.compression", Supported),
    ("websocket.compress", Alias("compression")),
    ("websocket.authorization", Supported),
    ("websocket.authentication", Alias("authorization")),
    ("websocket.jwt_cookie", Supported),
    ("websocket.no_auth_user", Supported),
    // leafnodes { } (parseLeafNodes) and its remotes (parseRemoteLeafNodes).
    ("leafnodes.listen", Supported),
    ("leafnodes.port", Supported),
    ("leafnodes.host", Supported),
    ("leafnodes.net", Alias("host")),
    ("leafnodes.authorization", Supported),
    ("leafnodes.remotes", Supported),
    ("leafnodes.reconnect", Supported),
    ("leafnodes.reconnect_delay", Supported),
    ("leafnodes.reconnect_interval", Supported),
    ("leafnodes.tls", Supported),
    (
        "leafnodes.advertise",
        Refused("the leafnode URL advertised to leaves"),
    ),
    (
        "leafnodes.leafnode_advertise",
        Refused("the leafnode URL advertised to leaves"),
    ),
    // We never advertise other leafnode URLs, which is what `no_advertise: true` asks.
    ("leafnodes.no_advertise", Cosmetic),
    (
        "leafnodes.min_version",
        Refused("a minimum version of connecting leaves"),
    ),
    (
        "leafnodes.minimum_version",
        Refused("a minimum version of connecting leaves"),
    ),
    ("leafnodes.remotes.url", Supported),
    ("leafnodes.remotes.urls", Supported),
    ("leafnodes.remotes.account", Supported),
    ("leafnodes.remotes.local", Supported),
    ("leafnodes.remotes.credentials", Supported),
    ("leafnodes.remotes.creds", Supported),
    ("leafnodes.remotes.tls", Supported),
    ("leafnodes.remotes.hub", Supported),
    ("leafnodes.remotes.deny_imports", Supported),
    ("leafnodes.remotes.deny_import", Alias("deny_imports")),
    ("leafnodes.remotes.deny_exports", Supported),
    ("leafnodes.remotes.deny_export", Alias("deny_exports")),
    ("leafnodes.remotes.ws_compression", Supported),
    ("leafnodes.remotes.ws_compress", Alias("ws_compression")),
    (
        "leafnodes.remotes.websocket_compress",
        Alias("ws_compression"),
    ),
    (
        "leafnodes.remotes.websocket_compression",
        Alias("ws_compression"),
    ),
    (
        "leafnodes.remotes.no_randomize",
        Refused("trying the remote's URLs in order"),
    ),
    (
        "leafnodes.remotes.dont_randomize",
        Refused("trying the remote's URLs in order"),
    ),
    (
        "leafnodes.remotes.ws_no_masking",
        Refused("unmasked WebSocket frames"),
    ),
    (
        "leafnodes.remotes.websocket_no_masking",
        Refused("unmasked WebSocket frames"),
    ),
    (
        "leafnodes.remotes.jetstream_cluster_migrate",
        Refused("clustered JetStream"),
    ),
    (
        "leafnodes.remotes.js_cluster_migrate",
        Refused("clustered JetStream"),
    ),
    // authorization { } (parseAuthorization), users (parseUsers), permissions.
    ("authorization.user", Supported),
    ("authorization.username", Supported),
    ("authorization.password", Supported),
    ("authorization.pass", Supported),
    ("authorization.token", Supported),
    ("authorization.timeout", Supported),
    ("authorization.users", Supported),
    ("authorization.permissions", Refused("default permissions")),
    (
        "authorization.default_permission",
        Refused("default permissions"),
    ),
    (
        "authorization.default_permissions",
        Refused("default permissions"),
    ),
    ("*.users.user", Supported),
    ("*.users.username", Supported),
    ("*.users.password", Supported),
    ("*.users.pass", Supported),
    ("*.users.nkey", Supported),
    ("*.users.permissions", Supported),
    ("*.users.permission", Alias("permissions")),
    ("*.users.authorization", Alias("permissions")),
    (
        "*.users.allowed_connection_types",
        Refused("limiting a user to connection types"),
    ),
    (
        "*.users.connection_types",
        Refused("limiting a user to connection types"),
    ),
    (
        "*.users.clients",
        Refused("limiting a user to connection types"),
    ),
    ("*.permissions.publish", Supported),
    ("*.permissions.pub", Supported),
    ("*.permissions.import", Alias("publish")),
    ("*.permissions.subscribe", Supported),
    ("*.permissions.sub", Supported),
    ("*.permissions.export", Alias("subscribe")),
    (
        "*.permissions.allow_responses",
        Refused("response permissions"),
    ),
    (
        "*.permissions.publish_allow_responses",
        Refused("response permissions"),
    ),
    // accounts { NAME { } } (parseAccounts).
    ("accounts.*.users", Supported),
    ("accounts.*.jetstream", Supported),
    ("accounts.*.imports", Supported),
    ("accounts.*.exports", Supported),
    ("accounts.*.nkey", Refused("account nkeys")),
    (
        "accounts.*.default_permissions",
        Refused("default permissions"),
    ),
    ("accounts.*.mappings", Refused("subject mappings")),
    ("accounts.*.maps", Refused("subject mappings")),
    ("accounts.*.limits", Refused("account limits")),
    // cluster { } (parseCluster): hubd's routes (`hub/src/route/settings.rs`).
    ("cluster.name", Supported),
    ("cluster.listen", Supported),
    ("cluster.port", Supported),
    ("cluster.host", Supported),
    ("cluster.net", Alias("host")),
    ("cluster.authorization", Supported),
    ("cluster.authorization.user", Supported),
    ("cluster.authorization.username", Alias("user")),
    ("cluster.authorization.password", Supported),
    ("cluster.authorization.pass", Alias("password")),
    ("cluster.authorization.timeout", Supported),
    ("cluster.routes", Supported),
    ("cluster.tls", Supported),
    ("cluster.advertise", Supported),
    ("cluster.cluster_advertise", Alias("advertise")),
    ("cluster.no_advertise", Supported),
    ("cluster.connect_retries", Supported),
    ("cluster.permissions", Refused("permissions of routes")),
    // tls { } (parseTLS), wherever it is.
    ("*.tls.cert_file", Supported),
    ("*.tls.key_file", Supported),
    ("*.tls.ca_file", Supported),
    ("*.tls.verify", Supported),
    ("*.tls.verify_and_map", Supported),
    ("*.tls.timeout", Supported),
    ("*.tls.insecure", Supported),
    (
        "*.tls.verify_cert_and_check_known_urls",
        Refused("checking certificates against known URLs"),
    ),
    ("*.tls.cipher_suites", Refused("choosing TLS cipher suites")),
    ("*.tls.curve_preferences", Refused("choosing TLS curves")),
    (
        "*.tls.connection_rate_limit",
        Refused("a TLS connection rate limit"),
    ),
    ("*.tls.pinned_certs", Refused("pinned certificates")),
];

/// The rule of `path`, if the table has one.
pub fn rule(path: &str) -> Option<Kind> {
    if let Some((_, kind)) = RULES.iter().find(|(p, _)| *p == path) {
        return Some(*kind);
    }
    if path.starts_with("cluster.") {
        return None;
    }
    RULES.iter().find_map(|(p, kind)| {
        let tail = p.strip_prefix("*.")?;
        let matches = path == tail || path.ends_with(&format!(".{tail}"));
        matches.then_some(*kind)
    })
}

/// A refused key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key's place.
    pub pos: Pos,
    /// The key path.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Applies [`RULES`] to a file's top-level block: aliases renamed, refused keys an error,
/// cosmetic ones taken out (returned as `path (file:line)` for the warning), keys used only
/// as `$variables` taken out, and nats-server's `listen`/`http`/`https` (`host:port`) split
/// into our `host`, `port`, `http_port`, `https_port`. `known` are the top-level keys the
/// binary reads (shared and its own).
pub fn normalize(map: &mut Map, known: &[&str]) -> Result<Vec<String>, Refusal> {
    let mut ignored = Vec::new();
    walk(map, "", known, &mut ignored)?;
    split_listen(map)?;
    Ok(ignored)
}

fn walk(
    map: &mut Map,
    prefix: &str,
    known: &[&str],
    ignored: &mut Vec<String>,
) -> Result<(), Refusal> {
    let top = prefix.is_empty();
    let mut i = 0;
    while i < map.entries.len() {
        let entry = &map.entries[i];
        let path = join(prefix, &entry.key);
        // A key used as `$key` is a variable definition unless it is a setting we read.
        let is_known = top && known.contains(&entry.key.as_str());
        if entry.used_as_variable && !is_known && rule(&path).is_none() {
            map.entries.remove(i);
            continue;
        }
        let kind = if is_known { None } else { rule(&path) };
        match kind {
            Some(Alias(to)) => {
                if map.get(to).is_some() {
                    return Err(refusal(
                        &map.entries[i],
                        &path,
                        format!("give either `{}` or `{to}`, not both", map.entries[i].key),
                    ));
                }
                map.entries[i].key = to.to_owned();
                // Visit it again under its own name (it may be refused or cosmetic there).
                continue;
            }
            Some(Refused(what)) => {
                return Err(refusal(
                    entry,
                    &path,
                    format!("not supported yet ({what}); remove it"),
                ))
            }
            Some(Cosmetic) => {
                ignored.push(format!("{path} ({})", entry.key_pos));
                map.entries.remove(i);
                continue;
            }
            Some(Supported) | None => {}
        }
        let child = if prefix == "accounts" {
            join(prefix, "*")
        } else {
            path
        };
        listen_to_string(&child, &mut map.entries[i].value);
        walk_value(&mut map.entries[i].value, &child, known, ignored)?;
        i += 1;
    }
    Ok(())
}

fn walk_value(
    node: &mut Node,
    path: &str,
    known: &[&str],
    ignored: &mut Vec<String>,
) -> Result<(), Refusal> {
    match &mut node.value {
        Value::Map(map) => walk(map, path, known, ignored),
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|item| walk_value(item, path, known, ignored)),
        _ => Ok(()),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn refusal(entry: &Entry, path: &str, message: String) -> Refusal {
    Refusal {
        pos: entry.key_pos.clone(),
        key: path.to_owned(),
        message,
    }
}

/// `leafnodes { listen: 7422 }` and `cluster { listen: 6222 }`: a bare port, which our
/// readers take as the string `:7422`.
fn listen_to_string(path: &str, node: &mut Node) {
    if matches!(path, "leafnodes.listen" | "cluster.listen") {
        if let Value::Int(port) = node.value {
            node.value = Value::Str(format!(":{port}"));
        }
    }
}

/// Splits the top-level `listen`, `http` and `https` (`host:port` or a port) into our keys.
fn split_listen(map: &mut Map) -> Result<(), Refusal> {
    if let Some(entry) = map.remove("listen") {
        let (host, port) = host_port(&entry, "listen")?;
        for key in ["host", "port"] {
            if map.get(key).is_some() {
                return Err(refusal(
                    &entry,
                    "listen",
                    format!("give either `listen` or `host`/`port`, not both (`{key}` is set)"),
                ));
            }
        }
        if let Some(host) = host {
            map.set(derived(&entry, "host", Value::Str(host)));
        }
        map.set(derived(&entry, "port", Value::Int(i64::from(port))));
    }
    for (key, port_key) in [("http", "http_port"), ("https", "https_port")] {
        let Some(entry) = map.remove(key) else {
            continue;
        };
        let (host, port) = host_port(&entry, key)?;
        if map.get(port_key).is_some() {
            return Err(refusal(
                &entry,
                key,
                format!("give either `{key}` or `{port_key}`, not both"),
            ));
        }
        if let Some(host) = host {
            let client_host = match map.get("host").map(|e| &e.value.value) {
                Some(Value::Str(h)) => h.clone(),
                _ => crate::config::DEFAULT_HOST.to_owned(),
            };
            if host != client_host {
                return Err(refusal(
                    &entry,
                    key,
                    format!(
                        "not supported yet (monitoring on host `{host}` while clients listen on \
                         `{client_host}`: the monitoring port listens on the client `host`)"
                    ),
                ));
            }
        }
        map.set(derived(&entry, port_key, Value::Int(i64::from(port))));
    }
    Ok(())
}

/// `host:port`, `:port`, `host` alone is not enough: a port is needed.
fn host_port(entry: &Entry, key: &str) -> Result<(Option<String>, u16), Refusal> {
    let bad = |why: String| refusal(entry, key, why);
    match &entry.value.value {
        Value::Int(port) => u16::try_from(*port)
            .map(|port| (None, port))
            .map_err(|_| bad(format!("invalid port {port}"))),
        Value::Str(text) => text
            .parse::<crate::config::Listen>()
            .map(|l| (l.host, l.port))
            .map_err(bad),
        other => Err(bad(format!(
            "expected host:port or a port, found {}",
            other.kind()
        ))),
    }
}

/// An entry made from `from`'s place.
fn derived(from: &Entry, key: &str, value: Value) -> Entry {
    Entry {
        key: key.to_owned(),
        key_pos: from.key_pos.clone(),
        value: Node {
            value,
            pos: from.value.pos.clone(),
        },
        used_as_variable: false,
    }
}
