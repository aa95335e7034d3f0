//! leaf-jwt: the NATS JWT layer of hubd's operator mode, as a pure library (no tokio, no
//! network; the directory store is the only I/O). See README.md for what it owns.
//!
//! * [`claims`]: typed operator, account and user claims (nats-io/jwt v2 field names);
//! * [`token`]: decoding and verifying one JWT (header, claims, signature, `exp`, `nbf`),
//!   and minting ([`mint_operator`], [`mint_account`], [`mint_user`]);
//! * [`chain`]: operator → account → user ([`decode_operator`], [`verify_account`],
//!   [`verify_user`]) with signing keys, scoped signing keys, revocations and limits;
//! * [`connect`]: CONNECT's `sig` over the nonce, bearer tokens;
//! * [`creds`]: `.creds` files;
//! * [`store`]: the full resolver's directory of account JWTs;
//! * [`error`]: why something is refused.
//!
//! Time is always an argument (`now`, unix seconds): nothing here reads the clock.

pub mod chain;
pub mod claims;
pub mod connect;
pub mod creds;
pub mod error;
pub mod store;
pub mod token;

pub use chain::{decode_operator, verify_account, verify_user, Authorized, EffectiveLimits};
pub use claims::{AccountClaims, OperatorClaims, UserClaims, NO_LIMIT};
pub use connect::{sign_nonce, verify_connect, verify_nonce};
pub use creds::{format_creds, parse_creds, Creds};
pub use error::{CredsError, JwtError, Kind, SigError, StoreError};
pub use store::{DirStore, Saved};
pub use token::MAX_JWT_LEN;

use claims::{Account, Operator, User};
use token::{encode, stamp_generic, Payload};

impl Payload for Operator {
    fn stamp(&mut self, kind: Kind) {
        stamp_generic(&mut self.generic, kind);
    }
}

impl Payload for Account {
    fn stamp(&mut self, kind: Kind) {
        stamp_generic(&mut self.generic, kind);
    }
}

impl Payload for User {
    fn stamp(&mut self, kind: Kind) {
        stamp_generic(&mut self.generic, kind);
    }
}

/// Mints an operator JWT signed by `seed` (the operator's own seed, or one of its signing
/// keys' seeds). `iat` is `now` unless set.
pub fn mint_operator(claims: &OperatorClaims, seed: &str, now: i64) -> Result<String, JwtError> {
    encode(claims, Kind::Operator, seed, now)
}

/// Mints an account JWT signed by `seed` (an operator seed or operator signing key seed).
pub fn mint_account(claims: &AccountClaims, seed: &str, now: i64) -> Result<String, JwtError> {
    encode(claims, Kind::Account, seed, now)
}

/// Mints a user JWT signed by `seed` (the account's seed, or a signing key's: then set
/// `nats.issuer_account` to the account).
pub fn mint_user(claims: &UserClaims, seed: &str, now: i64) -> Result<String, JwtError> {
    encode(claims, Kind::User, seed, now)
}

#[cfg(test)]
mod tests;
