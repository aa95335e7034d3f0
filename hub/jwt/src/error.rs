//! Why a JWT, a `.creds` file, a CONNECT signature or a resolver file is refused.
//!
//! Every message names what was refused (the kind of JWT and, once known, its subject) so a
//! hub can log it as is: `user JWT for UABC…: expired at 2026-01-02T03:04:05Z`.

use std::fmt;

use leaf_proto::time::rfc3339;

/// Which kind of JWT an error is about (as its `nats.type` claim names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An operator JWT (`"type": "operator"`).
    Operator,
    /// An account JWT (`"type": "account"`).
    Account,
    /// A user JWT (`"type": "user"`).
    User,
}

impl Kind {
    /// The claim type as the JWT spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Operator => "operator",
            Kind::Account => "account",
            Kind::User => "user",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats unix seconds as RFC 3339 (out-of-range values saturate).
pub(crate) struct At(pub i64);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the year within four digits whatever a hostile claim says.
        let secs = self.0.clamp(1, 253_402_300_799);
        f.write_str(&rfc3339(secs.saturating_mul(1_000_000_000)))
    }
}

/// Why a JWT is refused. `who` is the subject of the JWT when it could be read, else
/// `"?"`.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Longer than [`crate::MAX_JWT_LEN`].
    #[error("{kind} JWT: {len} bytes, over the limit of {max} bytes")]
    TooLong {
        /// The kind expected.
        kind: Kind,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three dot-separated parts.
    #[error("{kind} JWT: not a JWT (expected header.claims.signature, found {parts} parts)")]
    NotThreeParts {
        /// The kind expected.
        kind: Kind,
        /// How many parts it has.
        parts: usize,
    },
    /// A part is not base64url.
    #[error("{kind} JWT: the {part} is not base64url")]
    BadBase64 {
        /// The kind expected.
        kind: Kind,
        /// `header`, `claims` or `signature`.
        part: &'static str,
    },
    /// The header or the claims are not the expected JSON.
    #[error("{kind} JWT: the {part} is not valid JSON: {detail}")]
    BadJson {
        /// The kind expected.
        kind: Kind,
        /// `header` or `claims`.
        part: &'static str,
        /// serde_json's message.
        detail: String,
    },
    /// `typ` is not `JWT` or `alg` not `ed25519-nkey` (or `ed25519`).
    #[error("{kind} JWT: unsupported header (typ {typ:?}, alg {alg:?}; expected \"JWT\" and \"ed25519-nkey\")")]
    BadHeader {
        /// The kind expected.
        kind: Kind,
        /// The `typ` found.
        typ: String,
        /// The `alg` found.
        alg: String,
    },
    /// The claims are of another kind (`nats.type`).
    #[error("{kind} JWT for {who}: it is a {found:?} JWT")]
    WrongType {
        /// The kind expected.
        kind: Kind,
        /// The subject.
        who: String,
        /// The `nats.type` found.
        found: String,
    },
    /// `nats.version` is not 2 (version 1 JWTs are not accepted; newer ones are unknown).
    #[error("{kind} JWT for {who}: claims version {version} is not supported (only version 2)")]
    Version {
        /// The kind expected.
        kind: Kind,
        /// The subject.
        who: String,
        /// The version found (0 when absent, a version 1 JWT).
        version: i64,
    },
    /// `iss` or `sub` is not a public nkey of the right type.
    #[error("{kind} JWT for {who}: {field} {key:?} is not {expected}")]
    WrongKeyType {
        /// The kind expected.
        kind: Kind,
        /// The subject.
        who: String,
        /// `iss` or `sub`.
        field: &'static str,
        /// The key found.
        key: String,
        /// What it must be, e.g. "an operator public key".
        expected: &'static str,
    },
    /// The signature does not verify against `iss`.
    #[error("{kind} JWT for {who}: bad signature (not signed by its issuer {issuer})")]
    BadSignature {
        /// The kind expected.
        kind: Kind,
        /// The subject.
        who: String,
        /// The issuer.
        issuer: String,
    },
    /// `exp` is past.
    #[error("{kind} JWT for {who}: expired at {}", At(*exp))]
    Expired {
        /// The kind.
        kind: Kind,
        /// The subject.
        who: String,
        /// Its `exp`, unix seconds.
        exp: i64,
    },
    /// `nbf` is in the future.
    #[error("{kind} JWT for {who}: not valid before {}", At(*nbf))]
    NotYetValid {
        /// The kind.
        kind: Kind,
        /// The subject.
        who: String,
        /// Its `nbf`, unix seconds.
        nbf: i64,
    },
    /// The issuer is not a key allowed to sign this JWT.
    #[error("{kind} JWT for {who}: issuer {issuer} is not {expected}")]
    UntrustedIssuer {
        /// The kind.
        kind: Kind,
        /// The subject.
        who: String,
        /// The issuer.
        issuer: String,
        /// Who may sign it, e.g. "the operator OABC… or one of its signing keys".
        expected: String,
    },
    /// The user's `issuer_account` is not the account verifying it.
    #[error("user JWT for {who}: issuer_account {found} is not the account {account}")]
    WrongAccount {
        /// The user.
        who: String,
        /// The `issuer_account` (or the issuer) found.
        found: String,
        /// The account given.
        account: String,
    },
    /// Signed by a scoped signing key but carries permissions or limits of its own.
    #[error("user JWT for {who}: signed by the scoped signing key {key}, so it must carry no permissions or limits of its own")]
    ScopedUserNotEmpty {
        /// The user.
        who: String,
        /// The scoped key.
        key: String,
    },
    /// A scoped signing key's template does not expand for this user.
    #[error("user JWT for {who}: the permission template {template:?} of the scoped signing key does not expand: {reason}")]
    Template {
        /// The user.
        who: String,
        /// The template subject.
        template: String,
        /// Why.
        reason: String,
    },
    /// Revoked by the account (`revocations`).
    #[error("user JWT for {who}: revoked (issued at {}, revoked up to {})", At(*iat), At(*revoked_at))]
    Revoked {
        /// The user.
        who: String,
        /// Its `iat`.
        iat: i64,
        /// The revocation time that covers it.
        revoked_at: i64,
    },
    /// A bearer token user in an account with `disallow_bearer`.
    #[error(
        "user JWT for {who}: a bearer token, and the account {account} disallows bearer tokens"
    )]
    BearerDisallowed {
        /// The user.
        who: String,
        /// The account.
        account: String,
    },
    /// A claim's value is invalid (e.g. a signing key that is not an account key).
    #[error("{kind} JWT for {who}: {field}: {reason}")]
    BadClaim {
        /// The kind.
        kind: Kind,
        /// The subject.
        who: String,
        /// The claim.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Minting failed (the seed is not of the right type, or signing failed).
    #[error("minting a {kind} JWT: {reason}")]
    Mint {
        /// The kind.
        kind: Kind,
        /// Why.
        reason: String,
    },
}

/// Why a CONNECT's `sig` does not authenticate a user JWT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    /// No `sig`, and the user JWT is not a bearer token.
    #[error("user {who}: CONNECT carries no sig (the user JWT is not a bearer token)")]
    Missing {
        /// The user.
        who: String,
    },
    /// `sig` is neither base64url nor standard base64.
    #[error("user {who}: CONNECT sig is not base64")]
    NotBase64 {
        /// The user.
        who: String,
    },
    /// `sig` does not verify over the nonce with the user's key.
    #[error("user {who}: CONNECT sig does not verify over the nonce")]
    Mismatch {
        /// The user.
        who: String,
    },
}

/// Why a `.creds` file is refused. No variant carries the seed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredsError {
    /// The file is larger than the limit.
    #[error(".creds: {len} bytes, over the limit of {max} bytes")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No `BEGIN NATS USER JWT` block.
    #[error(".creds: no \"-----BEGIN NATS USER JWT-----\" block")]
    NoJwt,
    /// No `BEGIN USER NKEY SEED` block.
    #[error(".creds: no \"-----BEGIN USER NKEY SEED-----\" block")]
    NoSeed,
    /// A block has no end marker.
    #[error(".creds: the {block} block has no end marker")]
    Unterminated {
        /// `JWT` or `seed`.
        block: &'static str,
    },
    /// The seed is not a user seed.
    #[error(".creds: the seed block is not a user nkey seed")]
    BadSeed,
    /// The JWT's subject is not the seed's public key.
    #[error(".creds: the JWT's subject {subject:?} is not the seed's public key {public}")]
    Mismatch {
        /// The JWT's `sub`.
        subject: String,
        /// The seed's public key.
        public: String,
    },
}

/// Why the directory store refuses or fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The JWT does not verify (signature, operator, expiry...).
    #[error("resolver store: {0}")]
    Jwt(#[from] JwtError),
    /// Not an account public key (a lookup or a file name).
    #[error("resolver store: {0:?} is not an account public key")]
    BadKey(String),
    /// An existing JWT for the account is as new or newer.
    #[error("resolver store: account {account}: not replaced: the stored JWT (issued at {}) is not older than this one (issued at {})", At(*stored_iat), At(*iat))]
    NotNewer {
        /// The account.
        account: String,
        /// The stored JWT's `iat`.
        stored_iat: i64,
        /// The refused JWT's `iat`.
        iat: i64,
    },
    /// A file system error, with the path.
    #[error("resolver store: {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}
