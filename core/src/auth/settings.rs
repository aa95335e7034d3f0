//! The authorization settings, as a file writes them: `authorization` (clients) and
//! `leafnodes.authorization` (the leafnode listener) are one [`Authorization`] type, differing
//! only in their users ([`User`]: name and password; [`LeafUser`]: name and password, or an
//! nkey, and an account), each with [`Permissions`]. Read by `crate::config` (which checks the
//! combinations, naming key and line) and turned into an [`super::Authenticator`] by
//! `crate::app`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::value;
use crate::redact::Redacted;

/// Default time a client (or a leaf, on the leafnode listener) has to authenticate after
/// connecting.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// An `authorization` table: one user, a token, or a list of users, and the time allowed to
/// log in. The same type serves clients (`authorization`, users [`User`]) and the leafnode
/// listener (`leafnodes.authorization`, users [`LeafUser`]: see [`LeafAuthorization`]); only
/// the kind of entry in `users` differs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    bound(deserialize = "U: Deserialize<'de>")
)]
pub struct Authorization<U = User> {
    /// Single-user name (with `password`).
    #[serde(alias = "username")]
    pub user: Option<String>,
    /// Single-user password (with `user`).
    #[serde(alias = "pass")]
    pub password: Option<String>,
    /// Shared token (`auth_token` in `CONNECT`; a leaf may also send it as the URL's user
    /// name); excludes users.
    pub token: Option<String>,
    /// Several users, each with optional permissions.
    #[serde(deserialize_with = "value::de_table_list")]
    pub users: Vec<U>,
    /// Time a client (or leaf) has to send `CONNECT` before it is disconnected.
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
}

/// `leafnodes.authorization`: credentials a leaf must present (one user, a token, or one of
/// `users`: users with a password, or user nkeys, as nats-server's leafnode `users` list).
pub type LeafAuthorization = Authorization<LeafUser>;

impl<U> Default for Authorization<U> {
    fn default() -> Self {
        Authorization {
            user: None,
            password: None,
            token: None,
            users: Vec::new(),
            timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }
}

impl<U> Authorization<U> {
    /// Whether clients must authenticate at all.
    pub fn is_required(&self) -> bool {
        self.user.is_some() || self.token.is_some() || !self.users.is_empty()
    }
}

impl<U: fmt::Debug> fmt::Debug for Authorization<U> {
    /// Secrets are redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("users", &self.users)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One entry of `authorization.users` (or of an account's `users`): a user name with its
/// password, or a user public nkey (`nkey = "U..."`, which the client proves by signing the
/// INFO's nonce).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "UserTable")]
pub struct User {
    /// User name (empty for an nkey user).
    pub user: String,
    /// Password; required with `user` (checked by [`crate::config::Config::validate`]).
    pub password: Option<String>,
    /// A user public nkey (`U...`), instead of `user` and `password`.
    pub nkey: Option<String>,
    /// What the user may publish and subscribe to; unrestricted by default.
    pub permissions: Permissions,
}

/// A user entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserTable {
    #[serde(default, alias = "username")]
    user: Option<String>,
    #[serde(default, alias = "pass")]
    password: Option<String>,
    #[serde(default)]
    nkey: Option<String>,
    #[serde(default, deserialize_with = "value::de_table")]
    permissions: Permissions,
}

impl TryFrom<UserTable> for User {
    type Error = String;

    fn try_from(t: UserTable) -> Result<Self, Self::Error> {
        if t.user.is_none() && t.nkey.is_none() {
            return Err("missing key `user`".to_owned());
        }
        Ok(User {
            user: t.user.unwrap_or_default(),
            password: t.password,
            nkey: t.nkey,
            permissions: t.permissions,
        })
    }
}

impl fmt::Debug for User {
    /// The password is redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("nkey", &self.nkey)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// A user's publish and subscribe permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Subjects the user may publish to (`pub` is accepted too).
    #[serde(alias = "pub")]
    pub publish: SubjectPermission,
    /// Subjects the user may subscribe to (`sub` is accepted too).
    #[serde(alias = "sub")]
    pub subscribe: SubjectPermission,
}

impl Permissions {
    /// Whether neither publish nor subscribe is restricted.
    pub fn is_unrestricted(&self) -> bool {
        self.publish.is_unrestricted() && self.subscribe.is_unrestricted()
    }
}

/// Allow and deny lists of subjects (wildcards allowed).
///
/// An empty `allow` allows every subject that `deny` does not match. In a
/// file this is a table `{ allow = [...], deny = [...] }`, or, as in
/// nats-server, a bare list or a single string meaning `allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPermission {
    /// Subjects allowed; empty means all.
    pub allow: Vec<String>,
    /// Subjects denied, checked after `allow`.
    pub deny: Vec<String>,
}

impl SubjectPermission {
    /// The allow list, or `None` when there is none (everything not denied
    /// is allowed).
    pub fn allow_list(&self) -> Option<&[String]> {
        (!self.allow.is_empty()).then_some(self.allow.as_slice())
    }

    /// Whether every subject is allowed.
    pub fn is_unrestricted(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl<'de> Deserialize<'de> for SubjectPermission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The table form.
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Table {
            #[serde(deserialize_with = "value::de_string_list")]
            allow: Vec<String>,
            #[serde(deserialize_with = "value::de_string_list")]
            deny: Vec<String>,
        }

        struct PermissionVisitor;
        impl<'de> Visitor<'de> for PermissionVisitor {
            type Value = SubjectPermission;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a subject, a list of subjects, or a table with allow and deny")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SubjectPermission, E> {
                Ok(SubjectPermission {
                    allow: vec![v.to_owned()],
                    deny: Vec::new(),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SubjectPermission, A::Error> {
                let allow = value::StringListVisitor.visit_seq(seq)?;
                Ok(SubjectPermission {
                    allow,
                    deny: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SubjectPermission, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SubjectPermission {
                    allow: table.allow,
                    deny: table.deny,
                })
            }
        }
        deserializer.deserialize_any(PermissionVisitor)
    }
}

/// One entry of `leafnodes.authorization.users`: `user` and `password`, or `nkey`, and what
/// the leaf may do (`permissions`, as for client users: `publish` is what the leaf may send
/// into this server, `subscribe` what it may receive). nats-server 2.9 has no permissions on
/// leafnode users (it applies those of a client user a leaf logs in as, when the listener has
/// no `authorization` of its own; so do we): the key is ours.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LeafUserTable")]
pub struct LeafUser {
    /// How the leaf logs in.
    pub login: LeafLogin,
    /// What the leaf may publish and receive; unrestricted by default.
    pub permissions: Permissions,
    /// The account the leaf's traffic lives in on this server (`None`: the global one).
    pub account: Option<String>,
}

/// How a leaf of `leafnodes.authorization.users` logs in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum LeafLogin {
    /// A user name and its password.
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// A user public nkey (`U...`); checked when the server starts.
    Nkey(String),
}

impl fmt::Debug for LeafLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafLogin::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &Redacted)
                .finish(),
            LeafLogin::Nkey(key) => f.debug_tuple("Nkey").field(key).finish(),
        }
    }
}

/// A `leafnodes.authorization.users` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafUserTable {
    #[serde(default, alias = "username")]
    user: Option<String>,
    #[serde(default, alias = "pass")]
    password: Option<String>,
    #[serde(default)]
    nkey: Option<String>,
    #[serde(default, deserialize_with = "value::de_table")]
    permissions: Permissions,
    #[serde(default)]
    account: Option<String>,
}

impl TryFrom<LeafUserTable> for LeafUser {
    type Error = String;

    fn try_from(t: LeafUserTable) -> Result<Self, Self::Error> {
        let login = match (t.user, t.password, t.nkey) {
            (None, None, Some(nkey)) => LeafLogin::Nkey(nkey),
            (Some(_), Some(password), None) if password.is_empty() => {
                return Err("`password` must not be empty".to_owned())
            }
            (Some(user), Some(password), None) => LeafLogin::Password { user, password },
            (Some(_), None, None) => return Err("missing key `password` (with `user`)".to_owned()),
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err("set either `user` and `password`, or `nkey`, not both".to_owned())
            }
            (None, _, None) => return Err("missing key `user` or `nkey`".to_owned()),
        };
        Ok(LeafUser {
            login,
            permissions: t.permissions,
            account: t.account,
        })
    }
}
