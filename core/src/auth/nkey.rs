//! Nkey proofs, as both listeners check them: the server puts a random `nonce` in its INFO,
//! the client (or leaf) signs it with its user seed and sends the signature (`sig`) with its
//! public key (`nkey`) in CONNECT. An nkey is an Ed25519 key written the NATS way: base32
//! with a one-letter type prefix and a CRC-16 checksum; a user's public key starts with `U`.

use base64::Engine;

/// Why a nonce signature is not accepted. No variant carries a seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// The key is not a user public key.
    #[error("{0:?} is not a user public nkey (U...)")]
    BadPublicKey(String),
    /// A seed was given where a public key belongs.
    #[error("a seed was given where a public nkey belongs (never share a seed)")]
    SeedNotKey,
    /// The signature does not verify (or is not base64).
    #[error("the nonce signature does not verify")]
    BadSignature,
}

/// A fresh nonce for an INFO: 16 bytes from the OS's cryptographic random source, base64url
/// without padding. `None` when the random source fails (the caller refuses nkey logins).
pub fn new_nonce() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses a user public key (`U...`).
pub fn user_public_key(text: &str) -> Result<nkeys::KeyPair, NonceError> {
    if text.starts_with('S') {
        return Err(NonceError::SeedNotKey);
    }
    let bad = || NonceError::BadPublicKey(text.to_owned());
    if !text.starts_with('U') {
        return Err(bad());
    }
    nkeys::KeyPair::from_public_key(text).map_err(|_| bad())
}

/// Checks that `sig` (base64url without padding, or standard base64, as nats-server accepts)
/// is `public_key`'s signature of `nonce`.
pub fn verify_nonce(public_key: &str, nonce: &[u8], sig: &str) -> Result<(), NonceError> {
    let pair = user_public_key(public_key)?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(sig))
        .map_err(|_| NonceError::BadSignature)?;
    pair.verify(nonce, &sig)
        .map_err(|_| NonceError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_nonce() {
        let user = nkeys::KeyPair::new_user();
        let other = nkeys::KeyPair::new_user();
        let nonce = new_nonce().unwrap();
        assert_eq!(nonce.len(), 22);
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(user.sign(nonce.as_bytes()).unwrap());
        verify_nonce(&user.public_key(), nonce.as_bytes(), &sig).unwrap();
        assert_eq!(
            verify_nonce(&other.public_key(), nonce.as_bytes(), &sig),
            Err(NonceError::BadSignature)
        );
        assert_eq!(
            verify_nonce(&user.public_key(), b"another", &sig),
            Err(NonceError::BadSignature)
        );
        assert_eq!(
            verify_nonce(&user.seed().unwrap(), nonce.as_bytes(), &sig),
            Err(NonceError::SeedNotKey)
        );
        assert!(matches!(
            verify_nonce("ABC", nonce.as_bytes(), &sig),
            Err(NonceError::BadPublicKey(_))
        ));
    }
}
