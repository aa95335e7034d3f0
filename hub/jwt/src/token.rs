//! The JWT envelope: `base64url(header).base64url(claims).base64url(signature)`, an Ed25519
//! signature by the claims' `iss` over `header.claims` (jwt v2's decoder.go and claims.go).
//!
//! [`decode`] checks, in this order: the size ([`MAX_JWT_LEN`]), the three parts, the
//! header (`typ` `JWT`; `alg` `ed25519-nkey`, or `ed25519`, which nats-server 2.9 also
//! accepts in the header of a version 2 JWT), the claims' JSON, `nats.type` and
//! `nats.version` (2 only: version 1 JWTs, signed over the claims alone, are refused), the
//! key types of `sub` and `iss`, the signature, then the typed claims, `exp` and `nbf`
//! against the caller's `now`. [`encode`] mints a JWT from claims and a seed.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use nkeys::{KeyPair, KeyPairType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::claims::Claims;
use crate::error::{JwtError, Kind};

/// The longest JWT accepted, in bytes: anything longer is refused before decoding.
pub const MAX_JWT_LEN: usize = 64 * 1024;

/// The header every JWT minted here carries.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// The only claims version accepted and minted.
const VERSION: i64 = 2;

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// The fields read before the signature is checked.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    nats: EnvelopeNats,
    /// Version 1 JWTs carry their type here.
    #[serde(default, rename = "type")]
    v1_type: String,
}

#[derive(Deserialize, Default)]
struct EnvelopeNats {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    version: i64,
}

/// The key type a JWT's `sub` has, by kind.
fn subject_type(kind: Kind) -> (KeyPairType, &'static str) {
    match kind {
        Kind::Operator => (KeyPairType::Operator, "an operator public key"),
        Kind::Account => (KeyPairType::Account, "an account public key"),
        Kind::User => (KeyPairType::User, "a user public key"),
    }
}

/// The key type a JWT's `iss` has, by kind.
fn issuer_type(kind: Kind) -> (KeyPairType, &'static str) {
    match kind {
        Kind::Operator | Kind::Account => (KeyPairType::Operator, "an operator public key"),
        Kind::User => (KeyPairType::Account, "an account public key"),
    }
}

/// Whether `key` is a public nkey of type `want`.
pub(crate) fn is_public_key(key: &str, want: KeyPairType) -> bool {
    // Seeds start with 'S' and are refused by from_public_key.
    KeyPair::from_public_key(key).is_ok_and(|k| k.key_pair_type() == want)
}

/// A subject fit for a log line: a key-like string, else `?`.
pub(crate) fn printable(sub: &str) -> String {
    if !sub.is_empty()
        && !sub.starts_with('S')
        && sub.len() <= 64
        && sub.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        sub.to_string()
    } else {
        "?".to_string()
    }
}

/// base64url without padding, falling back to standard base64 as jwt's decoder does.
fn b64(kind: Kind, part: &'static str, text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| STANDARD.decode(text))
        .map_err(|_| JwtError::BadBase64 { kind, part })
}

/// Decodes and verifies a JWT of `kind` signed by its own `iss`, valid at `now` (unix
/// seconds). Who may be the issuer is the caller's business (see [`crate::chain`]).
pub fn decode<N: DeserializeOwned + Default>(
    jwt: &str,
    kind: Kind,
    now: i64,
) -> Result<Claims<N>, JwtError> {
    if jwt.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLong {
            kind,
            len: jwt.len(),
            max: MAX_JWT_LEN,
        });
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(JwtError::NotThreeParts {
            kind,
            parts: parts.len(),
        });
    };
    let header_bytes = b64(kind, "header", header)?;
    let h: Header = serde_json::from_slice(&header_bytes).map_err(|e| JwtError::BadJson {
        kind,
        part: "header",
        detail: e.to_string(),
    })?;
    let alg = h.alg.to_ascii_lowercase();
    if !h.typ.eq_ignore_ascii_case("JWT") || (alg != "ed25519-nkey" && alg != "ed25519") {
        return Err(JwtError::BadHeader {
            kind,
            typ: printable_field(&h.typ),
            alg: printable_field(&h.alg),
        });
    }
    let claims_bytes = b64(kind, "claims", payload)?;
    let bad_json = |e: serde_json::Error| JwtError::BadJson {
        kind,
        part: "claims",
        detail: e.to_string(),
    };
    let env: Envelope = serde_json::from_slice(&claims_bytes).map_err(bad_json)?;
    let who = printable(&env.sub);
    let found_kind = if env.nats.kind.is_empty() {
        &env.v1_type
    } else {
        &env.nats.kind
    };
    if env.nats.version != VERSION {
        return Err(JwtError::Version {
            kind,
            who,
            version: env.nats.version,
        });
    }
    if found_kind != kind.as_str() {
        return Err(JwtError::WrongType {
            kind,
            who,
            found: printable_field(found_kind),
        });
    }
    let (sub_type, sub_expected) = subject_type(kind);
    if !is_public_key(&env.sub, sub_type) {
        return Err(JwtError::WrongKeyType {
            kind,
            who,
            field: "sub",
            key: shown_key(&env.sub),
            expected: sub_expected,
        });
    }
    let (iss_type, iss_expected) = issuer_type(kind);
    if !is_public_key(&env.iss, iss_type) {
        return Err(JwtError::WrongKeyType {
            kind,
            who,
            field: "iss",
            key: shown_key(&env.iss),
            expected: iss_expected,
        });
    }
    let sig = b64(kind, "signature", signature)?;
    let signed_len = header.len() + 1 + payload.len();
    let verified = KeyPair::from_public_key(&env.iss)
        .and_then(|k| k.verify(&jwt.as_bytes()[..signed_len], &sig))
        .is_ok();
    if !verified {
        return Err(JwtError::BadSignature {
            kind,
            who,
            issuer: env.iss,
        });
    }
    let claims: Claims<N> = serde_json::from_slice(&claims_bytes).map_err(bad_json)?;
    if claims.exp > 0 && now > claims.exp {
        return Err(JwtError::Expired {
            kind,
            who,
            exp: claims.exp,
        });
    }
    if claims.nbf > 0 && claims.nbf > now {
        return Err(JwtError::NotYetValid {
            kind,
            who,
            nbf: claims.nbf,
        });
    }
    Ok(claims)
}

/// A key for an error message; something that looks like a seed is never shown.
fn shown_key(s: &str) -> String {
    if s.starts_with('S') {
        "(a seed, not shown)".to_string()
    } else {
        printable_field(s)
    }
}

/// A short, printable rendering of a hostile string for an error message.
fn printable_field(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// What the `nats` payload of a kind must say about itself before encoding.
pub(crate) trait Payload: Serialize {
    /// Sets `nats.type` and `nats.version`.
    fn stamp(&mut self, kind: Kind);
}

/// Mints a JWT of `kind`: sets `iss` to the seed's public key, `iat` to `now` (unless the
/// claims already carry one), `nats.type` and `nats.version`, and signs with `seed`.
pub(crate) fn encode<N: Payload + Clone>(
    claims: &Claims<N>,
    kind: Kind,
    seed: &str,
    now: i64,
) -> Result<String, JwtError> {
    let mint = |reason: String| JwtError::Mint { kind, reason };
    let pair = KeyPair::from_seed(seed).map_err(|_| mint("the seed is not an nkey seed".into()))?;
    let (iss_type, iss_expected) = issuer_type(kind);
    if pair.key_pair_type() != iss_type {
        return Err(mint(format!("the seed is not {iss_expected}'s seed")));
    }
    let (sub_type, sub_expected) = subject_type(kind);
    if !is_public_key(&claims.sub, sub_type) {
        return Err(mint(format!("sub is not {sub_expected}")));
    }
    let mut claims = claims.clone();
    claims.iss = pair.public_key();
    if claims.iat == 0 {
        claims.iat = now;
    }
    claims.nats.stamp(kind);
    let payload = serde_json::to_vec(&claims).map_err(|e| mint(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(HEADER);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let sig = pair
        .sign(token.as_bytes())
        .map_err(|e| mint(e.to_string()))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(token)
}

/// Stamps a [`crate::claims::Generic`].
pub(crate) fn stamp_generic(g: &mut crate::claims::Generic, kind: Kind) {
    g.kind = kind.as_str().to_string();
    g.version = VERSION;
}

/// The `sub` claim of a JWT, without verifying anything (for matching a `.creds` file's
/// seed to its JWT).
pub(crate) fn unverified_subject(jwt: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        #[serde(default)]
        sub: String,
    }
    if jwt.len() > MAX_JWT_LEN {
        return None;
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| STANDARD.decode(payload))
        .ok()?;
    serde_json::from_slice::<Sub>(&bytes).ok().map(|s| s.sub)
}
