//! The `cluster` block of hubd's configuration, as nats-server 2.9 reads it:
//!
//! ```toml
//! [cluster]
//! name = "C"                      # every server of the cluster must say the same
//! listen = "0.0.0.0:6222"         # or host = "...", port = 6222
//! routes = ["nats-route://10.0.0.2:6222", "nats-route://ruser:pw@10.0.0.3:6222"]
//! authorization = { user = "ruser", password = "pw" }   # what peers must present
//! connect_retries = 0             # kept for nats-server configs; explicit routes retry forever
//! no_advertise = false
//! advertise = "gw.example.net:6222"   # the route URL others are told (behind NAT)
//!
//! [cluster.tls]                   # TLS first on every route, both sides verified
//! cert_file = "/etc/hubd/route.pem"   # presented as server and as client certificate
//! key_file = "/etc/hubd/route-key.pem"
//! ca_file = "/etc/hubd/ca.pem"        # every member's certificate chains to it
//! timeout = "2s"
//! ```
//!
//! A route URL may name this server itself (a shared list of every member): that one is
//! dropped once the server sees its own id at the other end.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use leaf_core::config::value;
use leaf_core::tls::mutual::{MutualFiles, MutualTls};
use leaf_core::tls::TlsError;
use serde::{Deserialize, Deserializer};

/// The `cluster` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The cluster's name; every member must have the same (a random one when unset, as
    /// nats-server's dynamic name, adopted from a peer that has one).
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` to listen on for routes.
    #[serde(default)]
    pub listen: Option<String>,
    /// Host to listen on (with `port`, instead of `listen`).
    #[serde(default)]
    pub host: Option<String>,
    /// Port to listen on (with `host`, instead of `listen`; 0 picks a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The other members to connect to.
    #[serde(default, deserialize_with = "de_urls")]
    pub routes: Vec<RouteUrl>,
    /// The credentials peers must present (`user`, `password`).
    #[serde(default)]
    pub authorization: Option<RouteAuth>,
    /// How often an implicit route (learned from a peer) is tried; explicit ones retry forever.
    #[serde(default)]
    pub connect_retries: u32,
    /// Do not tell clients about the other members' client URLs.
    #[serde(default)]
    pub no_advertise: bool,
    /// `tls`: TLS on every route, both sides verified against `ca_file`.
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// `permissions` (what routes may import and export): not supported yet, refused by name.
    #[serde(default)]
    pub permissions: Option<serde_json::Value>,
    /// `advertise` (`host:port`): the route URL the other members are told to use for this
    /// one (gossip), instead of the address they see it connect from.
    #[serde(default, alias = "cluster_advertise")]
    pub advertise: Option<String>,
}

/// `cluster.authorization`: the user and password every route must present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// How long a peer has to send its CONNECT (seconds, as nats-server's; kept, the
    /// handshake's own limit applies).
    #[serde(default, deserialize_with = "de_seconds")]
    pub timeout: Option<std::time::Duration>,
}

/// `cluster.tls`, as nats-server 2.9 reads it. Routes always verify both sides (nats-server
/// forces it too), so `verify` is accepted and changes nothing; the keys of nats-server's
/// TLS table that would weaken or change verification are refused by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// This server's certificate chain (PEM), presented to peers on both sides of a route.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) every member's certificate chains to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accepted for nats-server configs: routes always verify their peer.
    #[serde(default)]
    pub verify: bool,
    /// Time limit of the TLS handshake (seconds, or a string such as `"500ms"`; default 2 s).
    #[serde(
        default = "default_tls_timeout",
        deserialize_with = "value::de_duration"
    )]
    pub timeout: Duration,
    /// Refused: peer certificates are always verified.
    #[serde(default)]
    pub insecure: bool,
    /// Refused: not supported yet (route users from certificates).
    #[serde(default)]
    pub verify_and_map: bool,
    /// Refused: not supported yet.
    #[serde(default)]
    pub verify_cert_and_check_known_urls: bool,
    /// Refused: not supported yet.
    #[serde(default)]
    pub pinned_certs: Option<serde_json::Value>,
    /// Refused: not supported yet (rustls' safe defaults are used).
    #[serde(default)]
    pub cipher_suites: Option<serde_json::Value>,
    /// Refused: not supported yet (rustls' safe defaults are used).
    #[serde(default)]
    pub curve_preferences: Option<serde_json::Value>,
}

fn default_tls_timeout() -> Duration {
    leaf_core::server::tls::DEFAULT_TIMEOUT
}

impl ClusterTls {
    /// The key of the first setting that is refused, and why.
    fn refused(&self) -> Option<(&'static str, String)> {
        let not_yet = "is not supported yet on routes";
        if self.insecure {
            return Some((
                "cluster.tls.insecure",
                "refused: route peers' certificates are always verified (give their CA in \
                 ca_file)"
                    .into(),
            ));
        }
        let set = [
            ("cluster.tls.verify_and_map", self.verify_and_map),
            (
                "cluster.tls.verify_cert_and_check_known_urls",
                self.verify_cert_and_check_known_urls,
            ),
            ("cluster.tls.pinned_certs", self.pinned_certs.is_some()),
            ("cluster.tls.cipher_suites", self.cipher_suites.is_some()),
            (
                "cluster.tls.curve_preferences",
                self.curve_preferences.is_some(),
            ),
        ];
        set.into_iter()
            .find(|(_, on)| *on)
            .map(|(key, _)| (key, not_yet.to_owned()))
    }

    /// Builds both sides of the routes' TLS, reading every file now.
    pub fn build(&self) -> Result<MutualTls, TlsError> {
        let files = MutualFiles {
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            ca_file: self.ca_file.as_deref(),
            timeout: self.timeout,
        };
        MutualTls::from_files(&files, "cluster.tls")
    }
}

impl ClusterSettings {
    /// Refuses, by name (the key and why), the keys nats-server knows that routes do not
    /// implement yet, and a listen address that cannot be used.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.permissions.is_some() {
            return Err((
                "cluster.permissions",
                "route permissions are not supported yet: every route imports and exports \
                 everything"
                    .into(),
            ));
        }
        if let Some(refused) = self.tls.as_ref().and_then(ClusterTls::refused) {
            return Err(refused);
        }
        if let Some(a) = &self.advertise {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(("cluster.advertise", format!("`{a}` is not host:port")));
            }
        }
        self.listen_addr().map(|_| ()).map_err(|e| ("cluster", e))
    }

    /// The address to listen on: `listen`, or `host` (default all interfaces) and `port`
    /// (default 6222, nats-server's).
    pub fn listen_addr(&self) -> Result<String, String> {
        match (&self.listen, &self.host, self.port) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err("cluster.listen: give either `listen` or `host`/`port`, not both".into())
            }
            (Some(listen), None, None) => {
                let (host, port) = listen
                    .rsplit_once(':')
                    .ok_or_else(|| format!("cluster.listen: `{listen}` is not host:port"))?;
                port.parse::<u16>()
                    .map_err(|_| format!("cluster.listen: `{port}` is not a port"))?;
                Ok(format!("{host}:{port}"))
            }
            (None, host, port) => Ok(format!(
                "{}:{}",
                host.as_deref().unwrap_or("0.0.0.0"),
                port.unwrap_or(DEFAULT_PORT)
            )),
        }
    }
}

/// nats-server's default cluster port.
pub const DEFAULT_PORT: u16 = 6222;

/// One route URL: `nats-route://[user:password@]host:port` (`nats://` and `route://` too).
#[derive(Clone, PartialEq, Eq)]
pub struct RouteUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User and password to present, if any.
    pub auth: Option<(String, String)>,
}

impl RouteUrl {
    /// Parses a route URL.
    pub fn parse(text: &str) -> Result<RouteUrl, String> {
        let bad = |why: &str| format!("`{text}`: {why}");
        let rest = ["nats-route://", "route://", "nats://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme))
            .ok_or_else(|| bad("expected nats-route://host:port"))?;
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), password.to_owned())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(RouteUrl {
            host: host.to_owned(),
            port,
            auth,
        })
    }

    /// `host:port`, to connect to.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shown without the password.
impl fmt::Debug for RouteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `nats-route://[user@]host:port`, the password left out.
impl fmt::Display for RouteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.auth {
            Some((user, _)) => write!(f, "nats-route://{user}@{}", self.addr()),
            None => write!(f, "nats-route://{}", self.addr()),
        }
    }
}

fn de_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    std::time::Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{secs}` is not a number of seconds")))
}

fn de_urls<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<RouteUrl>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|t| RouteUrl::parse(t).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_urls() {
        let u = RouteUrl::parse("nats-route://ruser:pw@127.0.0.1:6222").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 6222);
        assert_eq!(u.auth, Some(("ruser".into(), "pw".into())));
        assert_eq!(u.to_string(), "nats-route://ruser@127.0.0.1:6222");
        assert_eq!(
            RouteUrl::parse("nats://h:1/").unwrap().addr(),
            "h:1".to_owned()
        );
        assert!(RouteUrl::parse("http://h:1").is_err());
        assert!(RouteUrl::parse("nats-route://h").is_err());
        assert!(RouteUrl::parse("nats-route://:5").is_err());
    }

    #[test]
    fn keys_not_supported_yet_or_malformed_are_refused_by_name() {
        let tls = |t: serde_json::Value| ClusterSettings {
            tls: Some(serde_json::from_value(t).unwrap()),
            ..ClusterSettings::default()
        };
        assert!(tls(serde_json::json!({ "cert_file": "x", "verify": true }))
            .check()
            .is_ok());
        for key in [
            "insecure",
            "verify_and_map",
            "verify_cert_and_check_known_urls",
        ] {
            let refused = tls(serde_json::json!({ key: true })).check().unwrap_err();
            assert_eq!(refused.0, format!("cluster.tls.{key}"));
        }
        let permissions = ClusterSettings {
            permissions: Some(serde_json::json!({ "import": ["a"] })),
            ..ClusterSettings::default()
        };
        assert_eq!(permissions.check().unwrap_err().0, "cluster.permissions");
        let pinned = tls(serde_json::json!({ "pinned_certs": ["ab"] })).check();
        assert_eq!(pinned.unwrap_err().0, "cluster.tls.pinned_certs");
        assert!(
            serde_json::from_value::<ClusterTls>(serde_json::json!({ "cert": "x" })).is_err(),
            "unknown keys are errors"
        );
        let advertise = |a: &str| ClusterSettings {
            advertise: Some(a.into()),
            ..ClusterSettings::default()
        };
        assert!(advertise("h:1").check().is_ok());
        assert_eq!(advertise("h").check().unwrap_err().0, "cluster.advertise");
        assert!(ClusterSettings::default().check().is_ok());
    }

    #[test]
    fn listen_address() {
        let s = |listen: Option<&str>, host: Option<&str>, port| ClusterSettings {
            listen: listen.map(Into::into),
            host: host.map(Into::into),
            port,
            ..ClusterSettings::default()
        };
        assert_eq!(
            s(Some("127.0.0.1:7000"), None, None).listen_addr().unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(s(None, Some("h"), Some(1)).listen_addr().unwrap(), "h:1");
        assert_eq!(s(None, None, None).listen_addr().unwrap(), "0.0.0.0:6222");
        assert!(s(Some("h:1"), Some("h"), None).listen_addr().is_err());
        assert!(s(Some("nope"), None, None).listen_addr().is_err());
    }
}
