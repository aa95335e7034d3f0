//! NKey and `.creds` authentication on leafnode links, both sides.
//!
//! An nkey is an Ed25519 key written the NATS way: base32 with a one-letter type prefix and a
//! CRC-16 checksum. A user's public key starts with `U`, its seed with `SU`. The hub puts a
//! random `nonce` in its INFO; the leaf proves it holds the seed by signing that nonce, and
//! sends the signature (`sig`, base64url without padding) in CONNECT, together with either
//! its public key (`nkey`) or a user JWT (`jwt`, from a `.creds` file) whose subject is that
//! key.
//!
//! * [`UserSeed`]: a user seed (`leafnodes.remotes[i].nkey`), which signs nonces;
//! * [`RemoteAuth`]: how a remote authenticates (a seed, or a creds file's JWT and seed),
//!   loaded once at startup by [`remote_auth`], whose errors name the config key
//!   (`leafnodes.remotes[0].credentials: cannot read ...`);
//! * [`NkeyUsers`]: the hub side: the user public keys allowed on the leafnode listener
//!   (`leafnodes.authorization.users = [{ nkey = "U..." }]`), which check a CONNECT's `sig`
//!   over the nonce the hub sent.
//!
//! A seed never appears in logs or `Debug` output: only its public key does.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::{LeafAuthorization, LeafLogin, Remote};

/// The base64 flavour of nonce signatures: URL-safe, without padding (nats-server's
/// `RawURLEncoding`).
const SIG_ENCODING: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why an nkey, a signature or a creds file cannot be used. No variant carries a seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NkeyError {
    /// The text is not an nkey seed (bad base32, checksum or length).
    #[error("not a valid nkey seed ({0})")]
    BadSeed(String),
    /// A valid seed, but not of a user (it does not start with `SU`).
    #[error("not a user nkey seed: a user seed starts with SU")]
    NotUserSeed,
    /// The text is not a user public key (`U...`, 56 characters).
    #[error("`{0}` is not a user public nkey (U..., 56 characters)")]
    BadPublicKey(String),
    /// A seed where a public key belongs (not shown: it is a secret).
    #[error("this is an nkey seed, a secret: give the user's public key (U...) instead")]
    SeedNotKey,
    /// A valid user key that is not among the allowed ones.
    #[error("user nkey {0} is not allowed")]
    UnknownKey(String),
    /// The leaf presented no user key (neither `nkey` nor a `jwt` with a subject).
    #[error("no user nkey presented")]
    NoKey,
    /// The signature is missing, not base64, or does not verify against the key.
    #[error("the nonce signature does not verify")]
    BadSignature,
    /// The creds file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadCreds {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The creds file is not a user JWT followed by a user seed.
    #[error("{}: not a NATS credentials file ({what})", path.display())]
    BadCreds {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Authentication settings that cannot be used (a remote's seed or creds file, a listener's
/// nkey); names the config key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct AuthConfigError {
    /// The config key (`leafnodes.remotes[0].nkey`).
    pub key: String,
    /// What is wrong.
    #[source]
    pub source: NkeyError,
}

/// A user nkey seed, able to sign nonces. `Debug` shows only the public key.
#[derive(Clone)]
pub struct UserSeed {
    pair: nkeys::KeyPair,
    public: String,
}

impl UserSeed {
    /// Parses a user seed (`SU...`). Surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<UserSeed, NkeyError> {
        let text = text.trim();
        let pair =
            nkeys::KeyPair::from_seed(text).map_err(|e| NkeyError::BadSeed(seed_error(&e)))?;
        if pair.key_pair_type() != nkeys::KeyPairType::User {
            return Err(NkeyError::NotUserSeed);
        }
        let public = pair.public_key();
        Ok(UserSeed { pair, public })
    }

    /// The user's public key (`U...`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Signs `nonce`: the Ed25519 signature, base64url without padding, as CONNECT's `sig`.
    pub fn sign_nonce(&self, nonce: &[u8]) -> String {
        // Signing with a seed cannot fail (the error exists for public-only key pairs).
        let sig = self.pair.sign(nonce).unwrap_or_default();
        SIG_ENCODING.encode(sig)
    }
}

impl fmt::Debug for UserSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSeed")
            .field("public_key", &self.public)
            .finish_non_exhaustive()
    }
}

/// The reason an nkeys error gives, without the key text.
fn seed_error(e: &nkeys::error::Error) -> String {
    use nkeys::error::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidPrefix => "unknown type prefix".into(),
        ErrorKind::InvalidKeyLength => "wrong length".into(),
        ErrorKind::ChecksumFailure => "checksum mismatch".into(),
        ErrorKind::CodecFailure => "not base32".into(),
        _ => "not a seed".into(),
    }
}

/// Checks that `sig` (base64url without padding, or standard base64, as nats-server accepts)
/// is `public_key`'s signature of `nonce` (see [`crate::auth::nkey::verify_nonce`]).
pub fn verify_nonce(public_key: &str, nonce: &[u8], sig: &str) -> Result<(), NkeyError> {
    crate::auth::nkey::verify_nonce(public_key, nonce, sig).map_err(NkeyError::from)
}

/// Parses a user public key (`U...`).
fn user_public_key(text: &str) -> Result<nkeys::KeyPair, NkeyError> {
    crate::auth::nkey::user_public_key(text).map_err(NkeyError::from)
}

impl From<crate::auth::nkey::NonceError> for NkeyError {
    fn from(e: crate::auth::nkey::NonceError) -> Self {
        use crate::auth::nkey::NonceError;
        match e {
            NonceError::BadPublicKey(key) => NkeyError::BadPublicKey(key),
            NonceError::SeedNotKey => NkeyError::SeedNotKey,
            _ => NkeyError::BadSignature,
        }
    }
}

/// What a remote authenticates with, besides a user and password (or token) in its URL.
#[derive(Clone)]
pub enum RemoteAuth {
    /// A user seed (`nkey = "SU..."`): CONNECT carries `nkey` (the public key) and `sig`.
    Nkey(UserSeed),
    /// A `.creds` file: CONNECT carries the user `jwt` and `sig` (signed with the file's seed).
    Creds {
        /// The user JWT (undecorated).
        jwt: String,
        /// The seed of the JWT's subject.
        seed: UserSeed,
    },
}

impl fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAuth::Nkey(seed) => f.debug_tuple("Nkey").field(seed).finish(),
            RemoteAuth::Creds { seed, .. } => f
                .debug_struct("Creds")
                .field("seed", seed)
                .finish_non_exhaustive(),
        }
    }
}

/// The authentication fields of a leaf's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConnect {
    /// `nkey`: the public key (nkey authentication).
    pub nkey: Option<String>,
    /// `jwt`: the user JWT (creds authentication).
    pub jwt: Option<String>,
    /// `sig`: the nonce's signature.
    pub sig: String,
}

impl RemoteAuth {
    /// Reads a `.creds` file: a user JWT block followed by a user seed block (the
    /// `-----BEGIN NATS USER JWT-----` and `-----BEGIN USER NKEY SEED-----` sections).
    pub fn from_creds_file(path: &Path) -> Result<RemoteAuth, NkeyError> {
        let mut text = std::fs::read_to_string(path).map_err(|source| NkeyError::ReadCreds {
            path: path.to_owned(),
            source,
        })?;
        let parsed = parse_creds(&text).map_err(|what| NkeyError::BadCreds {
            path: path.to_owned(),
            what,
        });
        wipe(&mut text);
        parsed
    }

    /// The seed that signs nonces.
    pub fn seed(&self) -> &UserSeed {
        match self {
            RemoteAuth::Nkey(seed) | RemoteAuth::Creds { seed, .. } => seed,
        }
    }

    /// The CONNECT fields answering the hub's `nonce`.
    pub fn sign(&self, nonce: &[u8]) -> SignedConnect {
        match self {
            RemoteAuth::Nkey(seed) => SignedConnect {
                nkey: Some(seed.public_key().to_owned()),
                jwt: None,
                sig: seed.sign_nonce(nonce),
            },
            RemoteAuth::Creds { jwt, seed } => SignedConnect {
                nkey: None,
                jwt: Some(jwt.clone()),
                sig: seed.sign_nonce(nonce),
            },
        }
    }
}

/// Overwrites a buffer that held a seed.
fn wipe(text: &mut String) {
    // Replacing every byte with `x` keeps the string valid UTF-8.
    let len = text.len();
    text.clear();
    text.extend(std::iter::repeat_n('x', len));
}

/// Splits a creds file into its JWT and its seed. The blocks are found by their marker
/// lines (three or more dashes at both ends); the first block is the JWT, the second the
/// seed, as nats-server and the NATS clients read them.
fn parse_creds(text: &str) -> Result<RemoteAuth, String> {
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        let marker = line.len() >= 6 && line.starts_with("---") && line.ends_with("---");
        match (&mut current, marker) {
            (None, true) if line.contains("BEGIN") => current = Some(String::new()),
            (Some(body), true) => {
                blocks.push(std::mem::take(body));
                current = None;
            }
            (Some(body), false) => body.push_str(line),
            (None, _) => {}
        }
    }
    let mut blocks = blocks.into_iter();
    let jwt = blocks
        .next()
        .filter(|j| !j.is_empty())
        .ok_or("no JWT block")?;
    let mut seed_text = blocks
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no seed block after the JWT")?;
    if jwt.split('.').count() != 3 || jwt_subject(&jwt).is_none() {
        wipe(&mut seed_text);
        return Err("the first block is not a JWT".into());
    }
    let seed = UserSeed::parse(&seed_text).map_err(|e| format!("seed block: {e}"));
    wipe(&mut seed_text);
    let seed = seed?;
    if jwt_subject(&jwt).as_deref() != Some(seed.public_key()) {
        return Err(format!(
            "the JWT's subject is not the seed's public key {}",
            seed.public_key()
        ));
    }
    Ok(RemoteAuth::Creds { jwt, seed })
}

/// The `sub` claim of a JWT (its payload is not verified here).
pub fn jwt_subject(jwt: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
    }
    let payload = jwt.split('.').nth(1)?;
    let json = SIG_ENCODING.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&json).ok().map(|c| c.sub)
}

/// The authentication of remote number `index`, read when the server starts: its `nkey`
/// seed, or its `credentials` file; `None` when it has neither (URL credentials only).
pub fn remote_auth(remote: &Remote, index: usize) -> Result<Option<RemoteAuth>, AuthConfigError> {
    let key = |name: &str| format!("leafnodes.remotes[{index}].{name}");
    if let Some(path) = &remote.credentials {
        return RemoteAuth::from_creds_file(path)
            .map(Some)
            .map_err(|source| AuthConfigError {
                key: key("credentials"),
                source,
            });
    }
    if let Some(seed) = &remote.nkey {
        return UserSeed::parse(seed)
            .map(|s| Some(RemoteAuth::Nkey(s)))
            .map_err(|source| AuthConfigError {
                key: key("nkey"),
                source,
            });
    }
    Ok(None)
}

/// The user nkeys of `leafnodes.authorization.users`, checked when the server starts.
pub fn listener_nkeys(auth: &LeafAuthorization) -> Result<NkeyUsers, AuthConfigError> {
    let mut keys = Vec::new();
    for (i, user) in auth.users.iter().enumerate() {
        if let LeafLogin::Nkey(key) = &user.login {
            NkeyUsers::new([key]).map_err(|source| AuthConfigError {
                key: format!("leafnodes.authorization.users[{i}].nkey"),
                source,
            })?;
            keys.push(key.as_str());
        }
    }
    // Every key was checked above.
    NkeyUsers::new(keys).map_err(|source| AuthConfigError {
        key: "leafnodes.authorization.users".into(),
        source,
    })
}

/// The user public keys allowed on the leafnode listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NkeyUsers {
    keys: HashSet<String>,
}

/// What a leaf presented to prove it holds a user key.
#[derive(Debug, Clone, Copy, Default)]
pub struct NkeyProof<'a> {
    /// CONNECT's `nkey`.
    pub nkey: Option<&'a str>,
    /// CONNECT's `jwt` (a nats-server leaf with a creds file): its subject is the key.
    pub jwt: Option<&'a str>,
    /// CONNECT's `sig`.
    pub sig: Option<&'a str>,
}

impl NkeyUsers {
    /// The allowed keys; each must be a user public key (`U...`).
    pub fn new<I, S>(keys: I) -> Result<NkeyUsers, NkeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| {
                let k = k.as_ref().trim();
                user_public_key(k).map(|_| k.to_owned())
            })
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(NkeyUsers { keys })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the leaf presented a key at all (`nkey`, or a `jwt` carrying one).
    pub fn presented(proof: &NkeyProof<'_>) -> bool {
        proof.nkey.is_some() || proof.jwt.is_some()
    }

    /// Checks `proof` against `nonce` (the one this connection's INFO carried): the key must
    /// be one of ours and `sig` its signature of the nonce. Returns the key.
    ///
    /// A JWT is only a carrier of the user's public key here (its `sub`): its issuer chain
    /// is not checked (there is no operator mode); possession of the key is proven by the
    /// signature, and the key must be configured.
    pub fn verify(&self, proof: &NkeyProof<'_>, nonce: &[u8]) -> Result<String, NkeyError> {
        let key = match (proof.nkey, proof.jwt) {
            (Some(k), _) => k.to_owned(),
            (None, Some(jwt)) => jwt_subject(jwt).ok_or(NkeyError::NoKey)?,
            (None, None) => return Err(NkeyError::NoKey),
        };
        if !self.keys.contains(&key) {
            return Err(NkeyError::UnknownKey(key));
        }
        verify_nonce(&key, nonce, proof.sig.unwrap_or_default())?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeafUser;

    /// An unrestricted listener user logging in with `login`.
    fn leaf_user(login: LeafLogin) -> LeafUser {
        LeafUser {
            login,
            permissions: crate::config::Permissions::default(),
            account: None,
        }
    }

    /// A user key pair made for these tests.
    fn user() -> (String, String) {
        let kp = nkeys::KeyPair::new_user();
        (kp.seed().unwrap(), kp.public_key())
    }

    fn jwt_for(sub: &str) -> String {
        let header = SIG_ENCODING.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let claims = SIG_ENCODING.encode(format!(r#"{{"sub":"{sub}","nats":{{"type":"user"}}}}"#));
        format!("{header}.{claims}.c2ln")
    }

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn nkey_seed_signs_and_verifies() {
        let (seed, public) = user();
        let s = UserSeed::parse(&format!(" {seed}\n")).unwrap();
        assert_eq!(s.public_key(), public);
        let sig = s.sign_nonce(b"nonce-1");
        assert!(!sig.contains('=') && !sig.contains('+') && !sig.contains('/'));
        verify_nonce(&public, b"nonce-1", &sig).unwrap();
        assert!(matches!(
            verify_nonce(&public, b"nonce-2", &sig),
            Err(NkeyError::BadSignature)
        ));
        // nats-server also accepts standard base64.
        let raw = SIG_ENCODING.decode(&sig).unwrap();
        let std_sig = base64::engine::general_purpose::STANDARD.encode(raw);
        verify_nonce(&public, b"nonce-1", &std_sig).unwrap();
        assert!(verify_nonce(&public, b"nonce-1", "!!").is_err());
    }

    #[test]
    fn nkey_debug_hides_the_seed() {
        let (seed, public) = user();
        let s = UserSeed::parse(&seed).unwrap();
        let shown = format!("{:?}", RemoteAuth::Nkey(s.clone()));
        assert!(shown.contains(&public) && !shown.contains(&seed), "{shown}");
        let creds = RemoteAuth::Creds {
            jwt: jwt_for(&public),
            seed: s,
        };
        assert!(!format!("{creds:?}").contains(&seed));
    }

    #[test]
    fn nkey_bad_seeds_are_refused_without_echo() {
        let (seed, public) = user();
        let mut garbled = seed.clone();
        garbled.replace_range(10..11, if &seed[10..11] == "A" { "B" } else { "A" });
        let e = UserSeed::parse(&garbled).unwrap_err();
        assert!(matches!(e, NkeyError::BadSeed(_)), "{e}");
        assert!(!e.to_string().contains(&garbled[2..]));
        assert!(matches!(
            UserSeed::parse(&public),
            Err(NkeyError::BadSeed(_))
        ));
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        assert!(matches!(
            UserSeed::parse(&account),
            Err(NkeyError::NotUserSeed)
        ));
        assert!(UserSeed::parse("").is_err());
    }

    #[test]
    fn nkey_creds_file_parses() {
        let (seed, public) = user();
        let jwt = jwt_for(&public);
        let auth = parse_creds(&creds(&jwt, &seed)).unwrap();
        let RemoteAuth::Creds { jwt: got, seed: s } = &auth else {
            panic!("not creds");
        };
        assert_eq!(got, &jwt);
        assert_eq!(s.public_key(), public);
        let signed = auth.sign(b"abc");
        assert_eq!(signed.jwt.as_deref(), Some(jwt.as_str()));
        assert!(signed.nkey.is_none());
        verify_nonce(&public, b"abc", &signed.sig).unwrap();

        assert!(parse_creds("").unwrap_err().contains("no JWT"));
        assert!(parse_creds(&creds(&jwt, ""))
            .unwrap_err()
            .contains("no seed"));
        assert!(parse_creds(&creds("nope", &seed))
            .unwrap_err()
            .contains("not a JWT"));
        let (other, _) = user();
        assert!(parse_creds(&creds(&jwt, &other))
            .unwrap_err()
            .contains("subject"));
        let e = parse_creds(&creds(&jwt, "SUAGARBLED")).unwrap_err();
        assert!(e.contains("seed block"), "{e}");
    }

    #[test]
    fn nkey_remote_auth_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote {
            credentials: Some(dir.path().join("missing.creds")),
            ..Remote::default()
        };
        let e = remote_auth(&remote, 0).unwrap_err().to_string();
        assert!(
            e.starts_with("leafnodes.remotes[0].credentials: cannot read "),
            "{e}"
        );
        let remote = Remote {
            nkey: Some("SUgarbage".into()),
            ..Remote::default()
        };
        let e = remote_auth(&remote, 2).unwrap_err().to_string();
        assert!(
            e.starts_with("leafnodes.remotes[2].nkey: not a valid nkey seed"),
            "{e}"
        );
        assert!(remote_auth(&Remote::default(), 0).unwrap().is_none());

        let (seed, public) = user();
        let path = dir.path().join("u.creds");
        std::fs::write(&path, creds(&jwt_for(&public), &seed)).unwrap();
        let remote = Remote {
            credentials: Some(path),
            ..Remote::default()
        };
        let auth = remote_auth(&remote, 0).unwrap().unwrap();
        assert_eq!(auth.seed().public_key(), public);
    }

    #[test]
    fn nkey_users_check_the_nonce_signature() {
        let (seed, public) = user();
        let users = NkeyUsers::new([public.as_str()]).unwrap();
        assert!(!users.is_empty());
        let s = UserSeed::parse(&seed).unwrap();
        let sig = s.sign_nonce(b"n1");
        let proof = NkeyProof {
            nkey: Some(&public),
            jwt: None,
            sig: Some(&sig),
        };
        assert!(NkeyUsers::presented(&proof));
        assert_eq!(users.verify(&proof, b"n1").unwrap(), public);
        assert!(users.verify(&proof, b"n2").is_err());
        let jwt = jwt_for(&public);
        let by_jwt = NkeyProof {
            nkey: None,
            jwt: Some(&jwt),
            sig: Some(&sig),
        };
        assert!(users.verify(&by_jwt, b"n1").is_ok());
        let (other_seed, other) = user();
        let other_sig = UserSeed::parse(&other_seed).unwrap().sign_nonce(b"n1");
        let stranger = NkeyProof {
            nkey: Some(&other),
            jwt: None,
            sig: Some(&other_sig),
        };
        assert!(users.verify(&stranger, b"n1").is_err());
        let unsigned = NkeyProof { sig: None, ..proof };
        assert!(users.verify(&unsigned, b"n1").is_err());
        assert!(NkeyUsers::new(["SUnot-a-public-key"]).is_err());
        let auth = LeafAuthorization {
            users: vec![
                leaf_user(LeafLogin::Password {
                    user: "a".into(),
                    password: "b".into(),
                }),
                leaf_user(LeafLogin::Nkey(public.clone())),
            ],
            ..LeafAuthorization::default()
        };
        assert_eq!(listener_nkeys(&auth).unwrap(), users);
        let auth = LeafAuthorization {
            users: vec![
                leaf_user(LeafLogin::Nkey(public.clone())),
                leaf_user(LeafLogin::Nkey("UBAD".into())),
            ],
            ..LeafAuthorization::default()
        };
        let e = listener_nkeys(&auth).unwrap_err().to_string();
        assert!(
            e.starts_with("leafnodes.authorization.users[1].nkey: `UBAD` is not"),
            "{e}"
        );
        assert!(matches!(
            NkeyUsers::new([seed.as_str()]),
            Err(NkeyError::SeedNotKey)
        ));
    }
}
