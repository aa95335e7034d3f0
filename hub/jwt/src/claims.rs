//! Typed claims of operator, account and user JWTs, with the JSON field names of
//! nats-io/jwt v2 (`jwt/v2`: claims.go, operator_claims.go, account_claims.go,
//! user_claims.go, types.go, exports.go, imports.go, signingkeys.go).
//!
//! Decoding ignores unknown fields. Absent numbers are 0, as Go decodes them; `-1` is
//! "unlimited" ([`NO_LIMIT`]). Encoding omits empty values, as Go's `omitempty` does, so a
//! JWT minted here decodes the same in nats-server.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The value of a limit that means "no limit".
pub const NO_LIMIT: i64 = -1;

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The registered claims every NATS JWT carries, around its `nats` payload `N`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims<N> {
    /// `aud`: the audience.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// `exp`: expiry, unix seconds (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exp: i64,
    /// `jti`: the JWT's id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// `iat`: issued at, unix seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: i64,
    /// `iss`: the public key that signed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// `name`: a display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `nbf`: not valid before, unix seconds (0: always).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nbf: i64,
    /// `sub`: the public key the JWT is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// `nats`: the NATS-specific payload.
    #[serde(default)]
    pub nats: N,
}

/// An operator JWT's claims.
pub type OperatorClaims = Claims<Operator>;
/// An account JWT's claims.
pub type AccountClaims = Claims<Account>;
/// A user JWT's claims.
pub type UserClaims = Claims<User>;

/// The fields every `nats` payload has (jwt's `GenericFields`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generic {
    /// `tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `type`: `operator`, `account` or `user`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `version`: 2 for every JWT this crate accepts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: i64,
}

/// An operator's `nats` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    /// `signing_keys`: operator keys that may sign account JWTs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// `account_server_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account_server_url: String,
    /// `operator_service_urls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_service_urls: Vec<String>,
    /// `system_account`: the system account's public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    /// `assert_server_version`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub assert_server_version: String,
    /// `strict_signing_key_usage`: account JWTs must be signed by a signing key, not by the
    /// operator's identity key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_signing_key_usage: bool,
    /// `tags`, `type`, `version`.
    #[serde(flatten)]
    pub generic: Generic,
}

/// An account's `nats` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// `imports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<Import>,
    /// `exports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<Export>,
    /// `limits`.
    #[serde(default)]
    pub limits: AccountLimits,
    /// `signing_keys`: plain keys, or scoped keys with a permission template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<SigningKey>,
    /// `revocations`: user public key (or `*` for all) → unix seconds; user JWTs issued at
    /// or before that time are revoked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    /// `default_permissions`: for users whose JWT sets no permissions.
    #[serde(default, skip_serializing_if = "Permissions::is_empty")]
    pub default_permissions: Permissions,
    /// `mappings`: subject → weighted destinations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mappings: BTreeMap<String, Vec<WeightedMapping>>,
    /// `description`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `info_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
    /// `tags`, `type`, `version`.
    #[serde(flatten)]
    pub generic: Generic,
}

/// One destination of a subject mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightedMapping {
    /// `subject`.
    #[serde(default)]
    pub subject: String,
    /// `weight`, percent.
    #[serde(default)]
    pub weight: u8,
    /// `cluster`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// An account's limits (jwt's `OperatorLimits`: NATS, account and JetStream limits in one
/// object). `-1` is unlimited; for JetStream, `mem_storage` and `disk_storage` both 0 means
/// JetStream is disabled for the account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountLimits {
    /// `subs`: subscriptions per connection... of the account.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// `data`: bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// `payload`: the largest message payload.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// `imports`: how many imports.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub imports: i64,
    /// `exports`: how many exports.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exports: i64,
    /// `wildcards`: exports may use wildcards.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wildcards: bool,
    /// `disallow_bearer`: bearer-token users are refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disallow_bearer: bool,
    /// `conn`: client connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conn: i64,
    /// `leaf`: leafnode connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leaf: i64,
    /// JetStream limits (the untiered ones).
    #[serde(flatten)]
    pub jetstream: JetStreamLimits,
    /// `tiered_limits`: JetStream limits per replica tier (`R1`, `R3`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiered_limits: BTreeMap<String, JetStreamLimits>,
}

impl AccountLimits {
    /// Everything unlimited and JetStream disabled, as jwt's `NewAccountClaims`.
    pub fn unlimited() -> AccountLimits {
        AccountLimits {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            imports: NO_LIMIT,
            exports: NO_LIMIT,
            wildcards: true,
            conn: NO_LIMIT,
            leaf: NO_LIMIT,
            ..AccountLimits::default()
        }
    }
}

/// An account's JetStream limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JetStreamLimits {
    /// `mem_storage`: bytes in memory streams (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_storage: i64,
    /// `disk_storage`: bytes in file streams (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_storage: i64,
    /// `streams`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streams: i64,
    /// `consumer`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consumer: i64,
    /// `max_ack_pending`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    /// `mem_max_stream_bytes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_max_stream_bytes: i64,
    /// `disk_max_stream_bytes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_max_stream_bytes: i64,
    /// `max_bytes_required`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub max_bytes_required: bool,
}

/// The kind of an export or import (`type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// `stream`.
    #[default]
    Stream,
    /// `service`.
    Service,
}

/// A service export's `response_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseType {
    /// `Singleton`: one reply.
    #[default]
    Singleton,
    /// `Stream`: several replies.
    Stream,
    /// `Chunked`: one reply in chunks.
    Chunked,
}

/// An export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// `name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `subject`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// `type`.
    #[serde(default, rename = "type")]
    pub kind: ExportKind,
    /// `token_req`: importers need an activation token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub token_req: bool,
    /// `revocations` of activations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    /// `response_type` (services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<ResponseType>,
    /// `response_threshold`, nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_threshold: i64,
    /// `service_latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_latency: Option<ServiceLatency>,
    /// `account_token_position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_token_position: Option<u32>,
    /// `advertise`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub advertise: bool,
    /// `description`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `info_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
}

/// A service export's latency tracking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceLatency {
    /// `sampling`: a percentage, or `"headers"`.
    #[serde(default)]
    pub sampling: serde_json::Value,
    /// `results`: the subject results go to.
    #[serde(default)]
    pub results: String,
}

/// An import.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Import {
    /// `name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `subject`: the exporter's subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// `account`: the exporting account's public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account: String,
    /// `token`: an activation token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// `to` (deprecated in favour of `local_subject`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// `local_subject`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_subject: String,
    /// `type`.
    #[serde(default, rename = "type")]
    pub kind: ExportKind,
    /// `share`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub share: bool,
}

/// An account signing key: a plain key, or a scoped one whose users get its template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    /// A public account key.
    Plain(String),
    /// A scoped signing key (`{"kind":"user_scope","key":...,"template":{...}}`).
    Scoped(Box<UserScope>),
}

impl SigningKey {
    /// The public key.
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Plain(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }
}

/// A scoped signing key: users it signs carry no permissions of their own and get
/// `template` (with `{{name()}}`, `{{subject()}}`, `{{tag(x)}}`... expanded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserScope {
    /// `kind`: `user_scope` (the only kind).
    #[serde(default)]
    pub kind: String,
    /// `key`: the public account key.
    #[serde(default)]
    pub key: String,
    /// `role`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// `template`: the users' permissions and limits.
    #[serde(default)]
    pub template: UserPermissionLimits,
    /// `description`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Allow and deny lists of subjects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permission {
    /// `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// `deny`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    /// Neither allow nor deny.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Permission to publish to reply subjects of received requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsePermission {
    /// `max`: replies per request.
    #[serde(default)]
    pub max: i64,
    /// `ttl`: how long, nanoseconds.
    #[serde(default)]
    pub ttl: i64,
}

/// Publish and subscribe permissions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permissions {
    /// `pub`.
    #[serde(default, rename = "pub", skip_serializing_if = "Permission::is_empty")]
    pub publish: Permission,
    /// `sub`.
    #[serde(default, rename = "sub", skip_serializing_if = "Permission::is_empty")]
    pub subscribe: Permission,
    /// `resp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
}

impl Permissions {
    /// No permission set at all.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.resp.is_none()
    }
}

/// A daily time window (`"HH:MM:SS"`) in which a user may connect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    /// `start`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start: String,
    /// `end`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub end: String,
}

/// A user's permissions and limits (jwt's `UserPermissionLimits`): the user JWT's own, or
/// a scoped signing key's template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPermissionLimits {
    /// `pub`, `sub`, `resp`.
    #[serde(flatten)]
    pub permissions: Permissions,
    /// `src`: CIDRs the user may connect from (a list, or one comma-separated string).
    #[serde(
        default,
        deserialize_with = "cidr_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub src: Vec<String>,
    /// `times`: when the user may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeRange>,
    /// `times_location`: the time zone of `times`.
    #[serde(
        default,
        rename = "times_location",
        skip_serializing_if = "String::is_empty"
    )]
    pub locale: String,
    /// `subs`: subscriptions (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// `data`: bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// `payload`: largest payload (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// `bearer_token`: CONNECT needs no nonce signature.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    /// `allowed_connection_types` (`STANDARD`, `WEBSOCKET`, `LEAFNODE`...; empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<String>,
}

impl UserPermissionLimits {
    /// Unlimited subs, data and payload, as jwt's `NewUserClaims`.
    pub fn unlimited() -> UserPermissionLimits {
        UserPermissionLimits {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            ..UserPermissionLimits::default()
        }
    }
}

/// A user's `nats` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Permissions and limits.
    #[serde(flatten)]
    pub limits: UserPermissionLimits,
    /// `issuer_account`: the account, when an account signing key signed the JWT.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    /// `tags`, `type`, `version`.
    #[serde(flatten)]
    pub generic: Generic,
}

/// `src` as jwt's `CIDRList` reads it: a list, or one comma-separated string.
fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::List(v)) => v,
        Some(Either::One(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}
