//! Operator mode: who may connect is decided by JWTs, as in nats-server 2.9, not by users in
//! the configuration.
//!
//! * `operator`: the operator's JWT (a file, or the JWT itself); every account JWT must be
//!   signed by it (or one of its signing keys), every user JWT by its account (or one of the
//!   account's signing keys). [`settings`] reads the keys; `leaf_jwt` verifies the chain.
//! * `resolver`: where account JWTs come from. `MEMORY` with `resolver_preload` (account key
//!   → JWT) holds what the file gives; `{ type: full, dir }` also stores them in `dir` (one
//!   file per account, as nats-server's full resolver) and takes new ones at run time on
//!   `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE` / `$SYS.REQ.CLAIMS.UPDATE` in the system
//!   account ([`claims_service`]), so a plant or gateway is onboarded without a restart.
//! * [`Resolver`] is the core's `auth::Authority`: a CONNECT's user JWT is verified against
//!   its account (revocations, expiry, `bearer_token`, scoped signing keys), its `sig` over
//!   the INFO's nonce checked, and the user logs into its account (made on first use) with
//!   the JWT's permissions; the connection ends at the JWT's `exp`
//!   (`-ERR 'User Authentication Expired'`). An account update that revokes users closes
//!   their connections with `-ERR 'User Authentication Revoked'`.
//!
//! A user JWT's `allowed_connection_types` is enforced (STANDARD for clients, LEAFNODE for
//! leaves); one with `src` or `times` restrictions is refused (not checked yet, so never
//! ignored).
//!
//! An account JWT's limits (`conn`, `leaf`, `subs`, `payload`), JetStream (its own engine
//! and limits, or 10039) and public exports/imports are applied when the account is loaded
//! (at start, every preloaded or stored account) and again on every claims update
//! ([`apply`]).
//!
//! Not yet: exports that require activation tokens (such imports are refused with a log
//! line), an account's `data`, `imports`/`exports` counts and `wildcards` limits, `subs` for
//! leaf connections, closing connections past a lowered `conn`, `mappings`,
//! service latency, storage limit changes at run time (they apply when the account's
//! JetStream starts), `URL(...)` and `cache` resolvers, and
//! `$SYS.REQ.CLAIMS.LIST`/`DELETE`/`PACK`.

pub mod apply;
pub mod claims_service;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leaf_core::auth::{AuthError, Authority, Credentials, Grant, Permissions, Rules};
use leaf_core::server::Shared;
use leaf_jwt::claims::{self, AccountClaims, OperatorClaims};
use leaf_jwt::{DirStore, JwtError, Kind};
use tracing::{info, warn};

pub use settings::{OperatorSettings, ResolverKind};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The account JWTs a hub trusts, and the users they let in.
#[derive(Debug)]
pub struct Resolver {
    operator: OperatorClaims,
    /// Account public key → its verified claims.
    accounts: RwLock<HashMap<String, AccountClaims>>,
    /// The full resolver's directory (`None`: `MEMORY`).
    store: Option<DirStore>,
    /// The server, once it runs (to close the connections of revoked users).
    server: OnceLock<Weak<Shared>>,
    /// Applies the accounts' limits, JetStream and imports to the server, once it runs.
    applier: OnceLock<apply::Applier>,
}

/// Why operator mode cannot start (the message names the key).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct OperatorError {
    key: String,
    reason: String,
}

impl OperatorError {
    fn new(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        OperatorError {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

impl Resolver {
    /// Reads the operator, opens the resolver and loads its accounts (the preloaded ones
    /// verified against the operator and, with a full resolver, stored in its directory).
    pub fn start(settings: &OperatorSettings) -> Result<Arc<Resolver>, OperatorError> {
        let now = now();
        let operator = leaf_jwt::decode_operator(&settings.operator_jwt()?, now)
            .map_err(|e| OperatorError::new("operator", e))?;
        let store = match &settings.resolver {
            ResolverKind::Memory => None,
            ResolverKind::Full { dir } => Some(
                DirStore::open(dir, operator.clone())
                    .map_err(|e| OperatorError::new("resolver.dir", e))?,
            ),
        };
        let mut accounts = HashMap::new();
        if let Some(store) = &store {
            for key in store
                .list()
                .map_err(|e| OperatorError::new("resolver.dir", e))?
            {
                match store.load(&key, now) {
                    Ok(Some(claims)) => {
                        accounts.insert(key, claims);
                    }
                    Ok(None) => {}
                    // One bad file does not stop the hub: that account cannot log in.
                    Err(e) => warn!(account = %key, error = %e, "stored account JWT skipped"),
                }
            }
        }
        for (key, jwt) in &settings.preload {
            let at = || format!("resolver_preload.{key}");
            let claims = leaf_jwt::verify_account(jwt, &operator, now)
                .map_err(|e| OperatorError::new(at(), e))?;
            if &claims.sub != key {
                return Err(OperatorError::new(
                    at(),
                    format!("the JWT is about account {}", claims.sub),
                ));
            }
            if let Some(store) = &store {
                if let Err(e) = store.save(jwt, now) {
                    if !matches!(e, leaf_jwt::StoreError::NotNewer { .. }) {
                        return Err(OperatorError::new(at(), e));
                    }
                }
            }
            let newer = accounts.get(key).is_none_or(|old| old.iat < claims.iat);
            if newer {
                accounts.insert(key.clone(), claims);
            }
        }
        info!(
            operator = %operator.sub,
            accounts = accounts.len(),
            resolver = if store.is_some() { "full" } else { "memory" },
            "operator mode"
        );
        Ok(Arc::new(Resolver {
            operator,
            accounts: RwLock::new(accounts),
            store,
            server: OnceLock::new(),
            applier: OnceLock::new(),
        }))
    }

    /// The operator's claims.
    pub fn operator(&self) -> &OperatorClaims {
        &self.operator
    }

    /// Tells the resolver the server it decides for (to close revoked users' connections),
    /// and applies every account it knows to it: limits, JetStream (through `jetstreams`,
    /// `None` when the server has none; never for `system`), imports (see [`apply`]).
    pub fn attach(
        &self,
        server: &Arc<Shared>,
        jetstreams: Option<Arc<leaf_core::jetstream::accounts::AccountJetStreams>>,
        system: Option<String>,
    ) {
        let _ = self.server.set(Arc::downgrade(server));
        let _ = self
            .applier
            .set(apply::Applier::new(server, jetstreams, system));
        let all = self.all_accounts();
        if let Some(applier) = self.applier.get() {
            for claims in all.values() {
                applier.apply(claims);
            }
            applier.wire_imports(&all);
        }
    }

    /// Every account's claims.
    fn all_accounts(&self) -> HashMap<String, AccountClaims> {
        self.accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The account's verified claims, if the resolver has them.
    pub fn account(&self, key: &str) -> Option<AccountClaims> {
        self.accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The stored JWT of an account (full resolver), for lookups.
    pub fn stored_jwt(&self, key: &str) -> Option<String> {
        self.store.as_ref()?.read(key).ok().flatten()
    }

    /// Takes a new account JWT (a claims update): verified against the operator (and about
    /// `expected` when the subject named an account), stored (full resolver) if newer than
    /// the stored one, then in force; users it revokes are disconnected. Returns the
    /// account's key.
    pub fn update(&self, jwt: &str, expected: Option<&str>) -> Result<String, UpdateError> {
        let now = now();
        let Some(store) = &self.store else {
            return Err(UpdateError::ReadOnly);
        };
        let claims = leaf_jwt::verify_account(jwt.trim(), &self.operator, now)?;
        if let Some(expected) = expected.filter(|e| *e != claims.sub) {
            return Err(UpdateError::WrongAccount {
                named: expected.to_owned(),
                found: claims.sub,
            });
        }
        store.save(jwt, now).map_err(UpdateError::Store)?;
        let key = claims.sub.clone();
        let revocations = claims.nats.revocations.clone();
        self.accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), claims.clone());
        if !revocations.is_empty() {
            self.disconnect_revoked(&key, &revocations);
        }
        if let Some(applier) = self.applier.get() {
            applier.apply(&claims);
            applier.wire_imports(&self.all_accounts());
        }
        info!(account = %key, "account JWT updated");
        Ok(key)
    }

    /// Closes the connections of `account`'s users its revocations cover.
    fn disconnect_revoked(
        &self,
        account: &str,
        revocations: &std::collections::BTreeMap<String, i64>,
    ) {
        let Some(server) = self.server.get().and_then(Weak::upgrade) else {
            return;
        };
        let all = revocations.get("*").copied();
        let closed = server.close_connections(
            |meta| {
                if meta.account != account {
                    return false;
                }
                let Some(leaf_core::auth::Login::User(key)) = &meta.login else {
                    return false;
                };
                // Revoked: a JWT issued at or before the key's (or `*`'s) revocation time.
                let at = revocations.get(key.as_str()).copied().or(all);
                at.is_some_and(|at| at >= issued_at_unix(meta))
            },
            "'User Authentication Revoked'",
        );
        if closed > 0 {
            warn!(account, closed, "connections of revoked users closed");
        }
    }
}

/// When a connection's credentials were issued, unix seconds (0 when unknown: any
/// revocation covers it).
fn issued_at_unix(meta: &leaf_core::server::stats::ConnMeta) -> i64 {
    meta.login_at
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Why a claims update was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The `MEMORY` resolver takes no updates.
    #[error("this resolver takes no updates (resolver: MEMORY)")]
    ReadOnly,
    /// The JWT is not a valid account JWT of this operator.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// The store refused it (not newer, or a write failed).
    #[error(transparent)]
    Store(leaf_jwt::StoreError),
    /// The subject named another account than the JWT is about.
    #[error("the subject names account {named}, the JWT is about {found}")]
    WrongAccount {
        /// The account of the subject.
        named: String,
        /// The account of the JWT.
        found: String,
    },
}

/// The core's permissions from a JWT's (`None`: unrestricted).
fn permissions_of(p: &claims::Permissions) -> Option<Arc<Permissions>> {
    if p.publish.is_empty() && p.subscribe.is_empty() {
        return None;
    }
    let rules = |x: &claims::Permission| {
        Rules::new((!x.allow.is_empty()).then_some(x.allow.as_slice()), &x.deny)
    };
    Some(Arc::new(Permissions {
        publish: rules(&p.publish),
        subscribe: rules(&p.subscribe),
    }))
}

impl Authority for Resolver {
    fn authenticate(&self, creds: Credentials<'_>) -> Result<Grant, AuthError> {
        let refuse = |e: &dyn std::fmt::Display| AuthError::Refused(e.to_string());
        let Some(jwt) = creds.jwt else {
            return Err(AuthError::Refused(
                "no user JWT (operator mode: log in with a .creds file)".into(),
            ));
        };
        let now = now();
        // Who signed it says which account to check it against.
        let user: claims::UserClaims =
            leaf_jwt::token::decode(jwt, Kind::User, now).map_err(|e| refuse(&e))?;
        let account_key = if user.nats.issuer_account.is_empty() {
            user.iss.clone()
        } else {
            user.nats.issuer_account.clone()
        };
        let account = self.account(&account_key).ok_or_else(|| {
            AuthError::Refused(format!(
                "user {}: account {account_key} is unknown to the resolver",
                user.sub
            ))
        })?;
        let authorized = leaf_jwt::verify_user(jwt, &account, now).map_err(|e| refuse(&e))?;
        // Restrictions this hub cannot check yet refuse the login rather than being ignored.
        if !authorized.src.is_empty() || !authorized.times.is_empty() {
            return Err(AuthError::Refused(format!(
                "user {}: `src` and `times` restrictions are not supported yet",
                authorized.user.sub
            )));
        }
        let kind = if creds.leaf { "LEAFNODE" } else { "STANDARD" };
        let types = &authorized.allowed_connection_types;
        if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case(kind)) {
            return Err(AuthError::Refused(format!(
                "user {}: connection type {kind} not allowed ({})",
                authorized.user.sub,
                types.join(", ")
            )));
        }
        let nonce = String::from_utf8_lossy(creds.nonce);
        leaf_jwt::verify_connect(&authorized, &nonce, creds.sig).map_err(|e| refuse(&e))?;
        let at = |secs: i64| {
            u64::try_from(secs)
                .ok()
                .filter(|&s| s > 0)
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        };
        Ok(Grant {
            permissions: permissions_of(&authorized.permissions),
            account: Some(account_key.into()),
            expires: at(authorized.expires),
            identity: Some(authorized.user.sub.clone()),
            issued_at: at(authorized.user.iat),
        })
    }
}
