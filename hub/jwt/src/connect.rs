//! CONNECT with a user JWT: `sig` is the Ed25519 signature of the INFO `nonce` by the user
//! JWT's subject key, base64url without padding (standard base64 accepted too, as
//! nats-server does); a bearer-token user needs no `sig`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use nkeys::KeyPair;

use crate::chain::Authorized;
use crate::error::SigError;
use crate::token::printable;

/// Checks CONNECT's `sig` over `nonce` for a verified user ([`crate::verify_user`]).
pub fn verify_connect(user: &Authorized, nonce: &str, sig: Option<&str>) -> Result<(), SigError> {
    verify_nonce(&user.user.sub, user.bearer, nonce, sig)
}

/// Checks `sig` over `nonce` with the public user key `subject`; with `bearer`, no
/// signature is needed (and none is checked).
pub fn verify_nonce(
    subject: &str,
    bearer: bool,
    nonce: &str,
    sig: Option<&str>,
) -> Result<(), SigError> {
    if bearer {
        return Ok(());
    }
    let who = printable(subject);
    let sig = sig
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SigError::Missing { who: who.clone() })?;
    let raw = URL_SAFE_NO_PAD
        .decode(sig)
        .or_else(|_| STANDARD.decode(sig))
        .map_err(|_| SigError::NotBase64 { who: who.clone() })?;
    KeyPair::from_public_key(subject)
        .and_then(|k| k.verify(nonce.as_bytes(), &raw))
        .map_err(|_| SigError::Mismatch { who })
}

/// Signs `nonce` with a user seed, as a client puts it in CONNECT's `sig`.
pub fn sign_nonce(seed: &str, nonce: &str) -> Option<String> {
    let pair = KeyPair::from_seed(seed).ok()?;
    pair.sign(nonce.as_bytes())
        .ok()
        .map(|s| URL_SAFE_NO_PAD.encode(s))
}
