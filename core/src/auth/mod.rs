//! Client authentication (user/password, user lists, user nkeys proven by signing the INFO's
//! nonce (see [`nkey`]), token; bcrypt hashes verified as bcrypt), per-user permissions and
//! accounts.
//!
//! The semantics follow nats-server's:
//! * A publish is allowed when the subject matches an `allow` entry (or there is no allow list)
//!   and matches no `deny` entry.
//! * A subscription is allowed when its filter lies inside an `allow` entry (or there is no
//!   allow list) and inside no `deny` entry. A wildcard subscription that merely *overlaps* a
//!   deny entry (`foo.*` with `foo.secret` denied) is accepted, and the denied subjects are
//!   filtered out when messages are delivered ([`Permissions::delivery_denied`]).

pub mod nkey;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;

use leaf_proto::subject::{is_subset, subject_matches, subjects_overlap};

use crate::tls::names::{parse_dn, same_dn, CertNames};

/// An allow list and a deny list of subject filters (wildcards allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `None`: everything not denied is allowed.
    pub allow: Option<Vec<Box<[u8]>>>,
    /// Filters that are refused even when allowed.
    pub deny: Vec<Box<[u8]>>,
}

impl Rules {
    /// Rules from string lists (as they appear in configuration).
    pub fn new(allow: Option<&[String]>, deny: &[String]) -> Self {
        Rules {
            allow: allow.map(|a| a.iter().map(|s| s.as_bytes().into()).collect()),
            deny: deny.iter().map(|s| s.as_bytes().into()).collect(),
        }
    }

    /// May a message be published to the literal `subject`?
    pub fn allows_publish(&self, subject: &[u8]) -> bool {
        let allowed = match &self.allow {
            None => true,
            Some(list) => list.iter().any(|f| subject_matches(f, subject)),
        };
        allowed && !self.deny.iter().any(|f| subject_matches(f, subject))
    }

    /// May a subscription on `filter` be created?
    pub fn allows_subscribe(&self, filter: &[u8]) -> bool {
        let allowed = match &self.allow {
            None => true,
            Some(list) => list.iter().any(|f| is_subset(filter, f)),
        };
        allowed && !self.deny.iter().any(|f| is_subset(filter, f))
    }

    /// Does `filter` overlap some deny entry (so deliveries must be checked one by one)?
    fn overlaps_deny(&self, filter: &[u8]) -> bool {
        self.deny.iter().any(|f| subjects_overlap(f, filter))
    }
}

/// What one user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publish rules.
    pub publish: Rules,
    /// Subscribe rules.
    pub subscribe: Rules,
}

impl Permissions {
    /// Whether deliveries to a subscription on `filter` must be checked against the subscribe
    /// deny list one message at a time.
    pub fn needs_delivery_check(&self, filter: &[u8]) -> bool {
        self.subscribe.overlaps_deny(filter)
    }

    /// Whether a message on the literal `subject` must not be delivered to this user.
    pub fn delivery_denied(&self, subject: &[u8]) -> bool {
        self.subscribe
            .deny
            .iter()
            .any(|f| subject_matches(f, subject))
    }
}

/// One configured user: by name with a password, or by user public nkey (`U...`, the key
/// of the [`Authenticator::Users`] table) proven by signing the INFO's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The password the client must present (empty for an nkey user).
    pub password: String,
    /// The user is an nkey: the table's key is its public key, and it logs in with `nkey`
    /// and `sig` rather than `user` and `pass`.
    pub nkey: bool,
    /// `None`: may do anything.
    pub permissions: Option<Arc<Permissions>>,
    /// The account the user belongs to (`None`: the global account).
    pub account: Option<Arc<str>>,
}

/// How a connection logged in, to tell after a reload whether it still would, with the same
/// rights (see [`Authenticator::grants_the_same`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Nobody asked for credentials.
    Anonymous,
    /// With the token.
    Token,
    /// As this configured user.
    User(String),
}

/// What a reload of the users means for one logged-in connection
/// ([`Authenticator::regrant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regrant {
    /// It would log in with exactly the same rights.
    Same,
    /// The same user, secret and account with these permissions now (`None`: anything).
    Permissions(Option<Arc<Permissions>>),
    /// Its login no longer holds (user removed, secret or account changed, another scheme).
    Revoked,
}

/// What a successful login grants: the user's permissions and account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// What the client may publish and subscribe to (`None`: anything).
    pub permissions: Option<Arc<Permissions>>,
    /// The account it belongs to (`None`: the global account).
    pub account: Option<Arc<str>>,
    /// When the login stops being valid (a user JWT's `exp`): the connection is closed then.
    pub expires: Option<std::time::SystemTime>,
    /// Who logged in, when the authenticator knows better than the CONNECT's `user` (the
    /// user public key of a JWT).
    pub identity: Option<String>,
    /// When the credentials were issued (a user JWT's `iat`), for revocations.
    pub issued_at: Option<std::time::SystemTime>,
}

/// Who decides about users the server does not hold itself: in operator mode, a user
/// presents a JWT signed by its account, whose own JWT the operator signed (hubd's resolver
/// implements it; the core only asks).
pub trait Authority: Send + Sync + std::fmt::Debug {
    /// Checks a CONNECT's credentials (`jwt` and `sig` over the nonce, or a bearer JWT):
    /// on success, the user's account (created on first use), rights and expiry.
    fn authenticate(&self, creds: Credentials<'_>) -> Result<Grant, AuthError>;
}

/// How clients must authenticate.
#[derive(Debug, Clone, Default)]
pub enum Authenticator {
    /// Anybody may connect.
    #[default]
    Open,
    /// Clients present this token as `auth_token`.
    Token(String),
    /// Clients present one of these user names with its password.
    Users(HashMap<String, User>),
    /// Users are decided by an [`Authority`] (operator mode).
    Delegated(Arc<dyn Authority>),
}

/// The credentials a client presented in CONNECT.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// `user`.
    pub user: Option<&'a str>,
    /// `pass`.
    pub pass: Option<&'a str>,
    /// `auth_token`.
    pub token: Option<&'a str>,
    /// `nkey`: a user public key.
    pub nkey: Option<&'a str>,
    /// `sig`: its signature of `nonce`.
    pub sig: Option<&'a str>,
    /// The nonce of the INFO this server sent the client (empty when it sent none).
    pub nonce: &'a [u8],
    /// `jwt`: a user JWT (operator mode).
    pub jwt: Option<&'a str>,
    /// The CONNECT came over a leafnode link (not a client connection).
    pub leaf: bool,
}

/// A failed login. The client is told only `Authorization Violation`, as nats-server does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No or a wrong token.
    #[error("bad or missing token")]
    BadToken,
    /// The user name is not configured.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The password does not match.
    #[error("wrong password for user {0:?}")]
    BadPassword(String),
    /// No user name given.
    #[error("no user name given")]
    MissingUser,
    /// The nkey is not a configured user.
    #[error("unknown user nkey {0}")]
    UnknownNkey(String),
    /// The nonce signature of an nkey user does not verify.
    #[error("nkey {0}: {1}")]
    BadNkeyProof(String, nkey::NonceError),
    /// The authority refused the login (the sentence says why).
    #[error("{0}")]
    Refused(String),
    /// A user without a password: it logs in only through its TLS certificate
    /// (`verify_and_map`).
    #[error("user {0:?} logs in with its certificate only")]
    CertificateOnly(String),
    /// None of a client certificate's names is a configured user (`verify_and_map`).
    #[error("no user for the client certificate's names {0:?}")]
    NoMappedUser(Vec<String>),
}

impl Authenticator {
    /// Whether INFO must say `auth_required`.
    pub fn required(&self) -> bool {
        !matches!(self, Authenticator::Open)
    }

    /// How `creds` log in under this authenticator (after [`Authenticator::authenticate`]
    /// accepted them).
    pub fn login_of(&self, creds: Credentials<'_>) -> Login {
        match self {
            Authenticator::Open => Login::Anonymous,
            Authenticator::Token(_) => Login::Token,
            Authenticator::Users(_) => {
                Login::User(creds.nkey.or(creds.user).unwrap_or_default().to_owned())
            }
            // The grant's identity says who (see `Grant::identity`).
            Authenticator::Delegated(_) => Login::User(String::new()),
        }
    }

    /// Whether INFO must carry a nonce (some user logs in with an nkey).
    pub fn needs_nonce(&self) -> bool {
        match self {
            Authenticator::Users(users) => users.values().any(|u| u.nkey),
            Authenticator::Delegated(_) => true,
            Authenticator::Open | Authenticator::Token(_) => false,
        }
    }

    /// What replacing `self` by `new` means for a connection that logged in with `login`:
    /// nothing, new permissions only (the same user, secret and account: the connection is
    /// updated in place, as nats-server does on a reload), or a login that no longer holds.
    pub fn regrant(&self, new: &Authenticator, login: &Login) -> Regrant {
        if self.grants_the_same(new, login) {
            return Regrant::Same;
        }
        if let (Authenticator::Users(a), Authenticator::Users(b), Login::User(name)) =
            (self, new, login)
        {
            if let (Some(x), Some(y)) = (a.get(name), b.get(name)) {
                if x.password == y.password && x.nkey == y.nkey && x.account == y.account {
                    return Regrant::Permissions(y.permissions.clone());
                }
            }
        }
        Regrant::Revoked
    }

    /// Whether a connection that logged in with `login` under `self` would log in under `new`
    /// with exactly the same rights (the same token; the same user with the same password,
    /// permissions and account; or no authentication on both).
    pub fn grants_the_same(&self, new: &Authenticator, login: &Login) -> bool {
        match (self, new, login) {
            (Authenticator::Open, Authenticator::Open, Login::Anonymous) => true,
            (Authenticator::Token(a), Authenticator::Token(b), Login::Token) => a == b,
            (Authenticator::Users(a), Authenticator::Users(b), Login::User(name)) => {
                matches!((a.get(name), b.get(name)), (Some(x), Some(y)) if x == y)
            }
            (Authenticator::Delegated(a), Authenticator::Delegated(b), _) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Checks credentials; on success returns what the user may do and its account.
    pub fn authenticate(&self, creds: Credentials<'_>) -> Result<Grant, AuthError> {
        match self {
            Authenticator::Delegated(authority) => authority.authenticate(creds),
            Authenticator::Open => Ok(Grant::default()),
            Authenticator::Token(token) => match creds.token {
                Some(t) if secret_matches(t, token) => Ok(Grant::default()),
                _ => Err(AuthError::BadToken),
            },
            Authenticator::Users(users) => {
                if let Some(key) = creds.nkey {
                    let user = users
                        .get(key)
                        .filter(|u| u.nkey)
                        .ok_or_else(|| AuthError::UnknownNkey(key.to_string()))?;
                    nkey::verify_nonce(key, creds.nonce, creds.sig.unwrap_or_default())
                        .map_err(|e| AuthError::BadNkeyProof(key.to_string(), e))?;
                    return Ok(Grant {
                        permissions: user.permissions.clone(),
                        account: user.account.clone(),
                        ..Grant::default()
                    });
                }
                let name = creds.user.ok_or(AuthError::MissingUser)?;
                let user = users
                    .get(name)
                    .filter(|u| !u.nkey)
                    .ok_or_else(|| AuthError::UnknownUser(name.to_string()))?;
                if user.password.is_empty() {
                    // Only users of `verify_and_map` go without a password (the
                    // configuration refuses it otherwise): they log in by certificate.
                    return Err(AuthError::CertificateOnly(name.to_string()));
                }
                let pass = creds.pass.unwrap_or("");
                if secret_matches(pass, &user.password) {
                    Ok(Grant {
                        permissions: user.permissions.clone(),
                        account: user.account.clone(),
                        ..Grant::default()
                    })
                } else {
                    Err(AuthError::BadPassword(name.to_string()))
                }
            }
        }
    }
}

impl Authenticator {
    /// Logs in by a client certificate (`verify_and_map`), in nats-server's order: as the
    /// first of its alternative names (emails, DNS names, URIs) that is a configured user;
    /// else as a user whose name, read as a distinguished name, is the certificate's subject
    /// in any RDN order (the first such name in sorted order); else as the user named as the
    /// subject prints. No password is asked. `None` when there are no users to map to (a
    /// token, or nobody): the CONNECT's credentials decide then.
    pub fn authenticate_mapped(
        &self,
        cert: &CertNames,
    ) -> Option<Result<(Grant, Login), AuthError>> {
        let Authenticator::Users(users) = self else {
            return None;
        };
        // nkey users log in with their nkey only.
        let by_dn = || {
            let mut matching: Vec<&String> = users
                .iter()
                .filter(|(name, user)| {
                    !user.nkey && parse_dn(name).is_some_and(|dn| same_dn(&dn, &cert.dn))
                })
                .map(|(name, _)| name)
                .collect();
            matching.sort();
            matching.first().copied()
        };
        let found = cert
            .alt_names
            .iter()
            .find(|name| users.get(*name).is_some_and(|u| !u.nkey))
            .or_else(by_dn)
            .or_else(|| users.get_key_value(&cert.subject).map(|(name, _)| name));
        let user = found.and_then(|name| users.get(name).filter(|u| !u.nkey).map(|u| (name, u)));
        Some(match user {
            Some((name, user)) => Ok((
                Grant {
                    permissions: user.permissions.clone(),
                    account: user.account.clone(),
                    ..Grant::default()
                },
                Login::User(name.clone()),
            )),
            None => Err(AuthError::NoMappedUser(cert.all())),
        })
    }
}

/// Whether `presented` matches the configured secret: a bcrypt hash (as nats-server accepts
/// them, see [`is_bcrypt`]) is verified as bcrypt, never compared as text; anything else is
/// compared in constant time.
fn secret_matches(presented: &str, configured: &str) -> bool {
    if is_bcrypt(configured) {
        // Tens of milliseconds by design (hundreds on a Pi): on a multi-threaded runtime the
        // worker hands its other tasks to the others while it hashes.
        let verify = || bcrypt::verify(presented, configured).unwrap_or(false);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(verify)
            }
            _ => verify(),
        }
    } else {
        constant_time_eq(presented.as_bytes(), configured.as_bytes())
    }
}

/// Whether a configured password or token is a bcrypt hash: `$2a$`, `$2b$`, `$2x$` or `$2y$`,
/// two cost digits and `$` (nats-server's rule, `^\$2[abxy]\$\d{2}\$`).
pub(crate) fn is_bcrypt(secret: &str) -> bool {
    matches!(
        secret.as_bytes(),
        [b'$', b'2', b'a' | b'b' | b'x' | b'y', b'$', c1, c2, b'$', ..]
            if c1.is_ascii_digit() && c2.is_ascii_digit()
    )
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Rules {
        let allow: Option<Vec<String>> = allow.map(|a| a.iter().map(|s| s.to_string()).collect());
        let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
        Rules::new(allow.as_deref(), &deny)
    }

    #[test]
    fn bcrypt_hashes_are_verified_not_compared() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(is_bcrypt(&hash));
        let b = hash.replacen("$2b$", "$2a$", 1);
        assert!(is_bcrypt(&b));
        for configured in [&hash, &b] {
            assert!(secret_matches("s3cret", configured));
            assert!(!secret_matches("wrong", configured));
            assert!(
                !secret_matches(configured, configured),
                "the hash is no password"
            );
        }
        assert!(!is_bcrypt("$2c$10$x") && !is_bcrypt("$2a$1$") && !is_bcrypt("plain"));
        assert!(secret_matches("plain", "plain") && !secret_matches("plai", "plain"));
        assert!(!secret_matches("x", "$2a$10$not-a-valid-hash"));
    }

    #[test]
    fn certificates_map_to_users_without_passwords() {
        let mapped = User {
            password: String::new(),
            nkey: false,
            permissions: None,
            account: Some(Arc::from("PLANT")),
        };
        let other = User {
            password: "pw".into(),
            nkey: false,
            permissions: None,
            account: None,
        };
        let auth = Authenticator::Users(HashMap::from([
            ("CN=bob".to_owned(), mapped),
            ("carol".to_owned(), other),
        ]));
        // The subject in another order still names bob.
        let names = CertNames {
            alt_names: vec!["bob@example.com".to_owned()],
            subject: "O=Plant A,CN=bob".to_owned(),
            dn: crate::tls::names::parse_dn("CN=bob").unwrap(),
        };
        let (grant, login) = auth.authenticate_mapped(&names).unwrap().unwrap();
        assert_eq!(grant.account.as_deref(), Some("PLANT"));
        assert_eq!(login, Login::User("CN=bob".into()));
        let carol = CertNames {
            alt_names: vec!["carol".to_owned()],
            ..CertNames::default()
        };
        let (_, login) = auth.authenticate_mapped(&carol).unwrap().unwrap();
        assert_eq!(login, Login::User("carol".into()));
        let nobody = CertNames {
            subject: "CN=nobody".to_owned(),
            dn: crate::tls::names::parse_dn("CN=nobody").unwrap(),
            ..CertNames::default()
        };
        assert_eq!(
            auth.authenticate_mapped(&nobody),
            Some(Err(AuthError::NoMappedUser(vec!["CN=nobody".into()])))
        );
        // Without its certificate a passwordless user cannot log in, not even with "".
        let creds = Credentials {
            user: Some("CN=bob"),
            pass: Some(""),
            ..Credentials::default()
        };
        assert_eq!(
            auth.authenticate(creds),
            Err(AuthError::CertificateOnly("CN=bob".into()))
        );
        assert!(Authenticator::Open.authenticate_mapped(&names).is_none());
    }

    #[test]
    fn publish_allow_and_deny() {
        let r = rules(Some(&["foo.>", "bar"]), &["foo.secret"]);
        assert!(r.allows_publish(b"foo.a"));
        assert!(r.allows_publish(b"bar"));
        assert!(!r.allows_publish(b"baz"));
        assert!(!r.allows_publish(b"foo.secret"));
        let open = rules(None, &["x.*"]);
        assert!(open.allows_publish(b"anything"));
        assert!(!open.allows_publish(b"x.y"));
    }

    #[test]
    fn subscribe_subset_semantics() {
        let r = rules(Some(&["foo.>"]), &["foo.secret"]);
        assert!(r.allows_subscribe(b"foo.*"));
        assert!(r.allows_subscribe(b"foo.a.b"));
        assert!(!r.allows_subscribe(b">"));
        assert!(!r.allows_subscribe(b"foo.secret"));
        let p = Permissions {
            publish: Rules::default(),
            subscribe: r,
        };
        assert!(p.needs_delivery_check(b"foo.*"));
        assert!(p.delivery_denied(b"foo.secret"));
        assert!(!p.delivery_denied(b"foo.open"));
    }

    #[test]
    fn a_reload_keeps_only_identical_logins() {
        let user = |password: &str, account: Option<&str>| User {
            password: password.into(),
            nkey: false,
            permissions: None,
            account: account.map(Into::into),
        };
        let users = |entries: &[(&str, User)]| {
            Authenticator::Users(
                entries
                    .iter()
                    .map(|(n, u)| ((*n).to_owned(), u.clone()))
                    .collect(),
            )
        };
        let old = users(&[("a", user("pa", None)), ("b", user("pb", Some("B")))]);
        let new = users(&[("a", user("pa", None)), ("b", user("pb", Some("C")))]);
        let a = Login::User("a".into());
        let b = Login::User("b".into());
        assert!(old.grants_the_same(&new, &a));
        assert!(!old.grants_the_same(&new, &b), "moved to another account");
        let gone = users(&[("b", user("pb", Some("B")))]);
        assert!(!old.grants_the_same(&gone, &a), "user removed");
        let repassed = users(&[("a", user("new", None))]);
        assert!(!old.grants_the_same(&repassed, &a), "password changed");
        assert!(Authenticator::Open.grants_the_same(&Authenticator::Open, &Login::Anonymous));
        assert!(!Authenticator::Open.grants_the_same(&old, &Login::Anonymous));
        let t = Authenticator::Token("t".into());
        assert!(t.grants_the_same(&Authenticator::Token("t".into()), &Login::Token));
        assert!(!t.grants_the_same(&Authenticator::Token("u".into()), &Login::Token));
    }

    #[test]
    fn a_reload_of_permissions_alone_is_a_regrant() {
        let perms = |allow: &[u8]| {
            Some(Arc::new(Permissions {
                publish: Rules {
                    allow: Some(vec![allow.to_vec().into()]),
                    deny: Vec::new(),
                },
                subscribe: Rules::default(),
            }))
        };
        let user = |password: &str, permissions, account: Option<&str>| User {
            password: password.into(),
            nkey: false,
            permissions,
            account: account.map(Into::into),
        };
        let one = |u: User| Authenticator::Users([("u".to_owned(), u)].into_iter().collect());
        let login = Login::User("u".into());
        let old = one(user("p", perms(b"a.>"), Some("A")));
        assert_eq!(old.regrant(&old, &login), Regrant::Same);
        assert_eq!(
            old.regrant(&one(user("p", perms(b"b.>"), Some("A"))), &login),
            Regrant::Permissions(perms(b"b.>"))
        );
        assert_eq!(
            old.regrant(&one(user("p", None, Some("A"))), &login),
            Regrant::Permissions(None)
        );
        let moved = one(user("p", perms(b"b.>"), Some("B")));
        assert_eq!(old.regrant(&moved, &login), Regrant::Revoked);
        let repassed = one(user("q", perms(b"b.>"), Some("A")));
        assert_eq!(old.regrant(&repassed, &login), Regrant::Revoked);
        assert_eq!(
            old.regrant(&Authenticator::Token("t".into()), &login),
            Regrant::Revoked
        );
    }

    #[test]
    fn authenticate_users_and_token() {
        let mut users = HashMap::new();
        users.insert(
            "a".to_string(),
            User {
                password: "pw".into(),
                nkey: false,
                permissions: None,
                account: Some("A".into()),
            },
        );
        let auth = Authenticator::Users(users);
        let ok = Credentials {
            user: Some("a"),
            pass: Some("pw"),
            ..Credentials::default()
        };
        assert_eq!(
            auth.authenticate(ok),
            Ok(Grant {
                permissions: None,
                account: Some("A".into()),
                ..Grant::default()
            })
        );
        let bad = Credentials {
            pass: Some("nope"),
            ..ok
        };
        assert!(matches!(
            auth.authenticate(bad),
            Err(AuthError::BadPassword(_))
        ));
        let token = Authenticator::Token("t".into());
        assert!(token.authenticate(Credentials::default()).is_err());
        assert!(token
            .authenticate(Credentials {
                token: Some("t"),
                ..Credentials::default()
            })
            .is_ok());
    }
}
