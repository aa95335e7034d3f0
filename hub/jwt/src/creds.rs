//! `.creds` files: a user JWT block and a user seed block, as nsc writes them:
//!
//! ```text
//! -----BEGIN NATS USER JWT-----
//! eyJ0eXAi...
//! ------END NATS USER JWT------
//!
//! -----BEGIN USER NKEY SEED-----
//! SUAM...
//! ------END USER NKEY SEED------
//! ```
//!
//! The JWT is not verified here (that needs its account: [`crate::verify_user`]); the
//! parser checks the seed is a user seed whose public key is the JWT's subject.

use std::fmt;

use nkeys::{KeyPair, KeyPairType};

use crate::error::CredsError;
use crate::token::MAX_JWT_LEN;

/// The largest `.creds` file accepted, in bytes.
pub const MAX_CREDS_LEN: usize = MAX_JWT_LEN + 4096;

/// A parsed `.creds` file. `Debug` does not print the seed.
pub struct Creds {
    /// The user JWT.
    pub jwt: String,
    /// The user seed (`SU...`).
    pub seed: String,
    /// The seed's public key, the JWT's subject.
    pub public_key: String,
}

impl fmt::Debug for Creds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Creds")
            .field("jwt", &self.jwt)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The text of the block whose begin marker contains `name`, or `None` if absent.
fn block<'a>(
    lines: &[&'a str],
    name: &str,
    what: &'static str,
) -> Result<Option<Vec<&'a str>>, CredsError> {
    let is_marker = |l: &str| l.len() >= 6 && l.starts_with("---") && l.ends_with("---");
    let Some(start) = lines
        .iter()
        .position(|l| is_marker(l) && l.contains("BEGIN") && l.contains(name))
    else {
        return Ok(None);
    };
    let body = &lines[start + 1..];
    let end = body
        .iter()
        .position(|l| is_marker(l))
        .ok_or(CredsError::Unterminated { block: what })?;
    Ok(Some(
        body[..end]
            .iter()
            .copied()
            .filter(|l| !l.is_empty())
            .collect(),
    ))
}

/// Parses a `.creds` file's text.
pub fn parse_creds(text: &str) -> Result<Creds, CredsError> {
    if text.len() > MAX_CREDS_LEN {
        return Err(CredsError::TooLong {
            len: text.len(),
            max: MAX_CREDS_LEN,
        });
    }
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let jwt = block(&lines, "NATS USER JWT", "JWT")?
        .ok_or(CredsError::NoJwt)?
        .concat();
    let seed = block(&lines, "USER NKEY SEED", "seed")?
        .ok_or(CredsError::NoSeed)?
        .concat();
    if jwt.is_empty() {
        return Err(CredsError::NoJwt);
    }
    let pair = KeyPair::from_seed(&seed).map_err(|_| CredsError::BadSeed)?;
    if pair.key_pair_type() != KeyPairType::User {
        return Err(CredsError::BadSeed);
    }
    let public_key = pair.public_key();
    let subject = crate::token::unverified_subject(&jwt).unwrap_or_default();
    if subject != public_key {
        return Err(CredsError::Mismatch {
            subject: crate::token::printable(&subject),
            public: public_key,
        });
    }
    Ok(Creds {
        jwt,
        seed,
        public_key,
    })
}

/// Formats a `.creds` file from a user JWT and its seed, as nsc does.
pub fn format_creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}
