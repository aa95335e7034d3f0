//! The trust chain operator → account → user, as nats-server 2.9 checks it (server/jwt.go,
//! auth.go `processClientOrLeafAuthentication`, accounts.go `isRevoked`).
//!
//! * [`decode_operator`]: the operator JWT is signed by its own identity key or one of its
//!   signing keys; its signing keys are operator keys and its system account an account key.
//! * [`verify_account`]: an account JWT is signed by the operator's identity key (unless
//!   `strict_signing_key_usage`) or one of its signing keys; its signing keys are account keys.
//! * [`verify_user`]: a user JWT is signed by the account's key, or by one of its signing
//!   keys with `issuer_account` naming the account; a scoped signing key's user carries no
//!   permissions of its own and gets the key's template; bearer tokens are refused when the
//!   account disallows them; the user is not revoked (revoked when `iat` ≤ the revocation
//!   time of its key or of `*`). It returns the effective permissions and limits.
//!
//! Connection-time conditions that need the connection (`src`, `times`,
//! `allowed_connection_types`) are returned in [`Authorized`] for the server to apply.

use nkeys::KeyPairType;

use crate::claims::{
    AccountClaims, OperatorClaims, Permission, Permissions, SigningKey, UserClaims,
    UserPermissionLimits, NO_LIMIT,
};
use crate::error::{JwtError, Kind};
use crate::token::{decode, is_public_key, printable};

/// The most subjects one template subject may expand to (tags multiply).
pub const MAX_TEMPLATE_EXPANSION: usize = 1024;

/// Decodes an operator JWT (as read from the `operator` file) valid at `now`.
pub fn decode_operator(jwt: &str, now: i64) -> Result<OperatorClaims, JwtError> {
    let op: OperatorClaims = decode(jwt, Kind::Operator, now)?;
    let who = printable(&op.sub);
    let bad = |field, reason: String| JwtError::BadClaim {
        kind: Kind::Operator,
        who: who.clone(),
        field,
        reason,
    };
    if let Some(k) = op
        .nats
        .signing_keys
        .iter()
        .find(|k| !is_public_key(k, KeyPairType::Operator))
    {
        return Err(bad(
            "signing_keys",
            format!("{:?} is not an operator public key", printable(k)),
        ));
    }
    if !op.nats.system_account.is_empty()
        && !is_public_key(&op.nats.system_account, KeyPairType::Account)
    {
        return Err(bad(
            "system_account",
            "not an account public key".to_string(),
        ));
    }
    if op.iss != op.sub && !op.nats.signing_keys.contains(&op.iss) {
        return Err(JwtError::UntrustedIssuer {
            kind: Kind::Operator,
            who: who.clone(),
            issuer: op.iss.clone(),
            expected: "the operator itself or one of its signing keys".to_string(),
        });
    }
    Ok(op)
}

/// Verifies an account JWT against its operator at `now`.
pub fn verify_account(
    jwt: &str,
    operator: &OperatorClaims,
    now: i64,
) -> Result<AccountClaims, JwtError> {
    let acc: AccountClaims = decode(jwt, Kind::Account, now)?;
    let who = printable(&acc.sub);
    let by_identity = acc.iss == operator.sub && !operator.nats.strict_signing_key_usage;
    if !by_identity && !operator.nats.signing_keys.contains(&acc.iss) {
        let expected = if operator.nats.strict_signing_key_usage {
            format!(
                "one of the signing keys of the operator {} (strict_signing_key_usage)",
                operator.sub
            )
        } else {
            format!("the operator {} or one of its signing keys", operator.sub)
        };
        return Err(JwtError::UntrustedIssuer {
            kind: Kind::Account,
            who,
            issuer: acc.iss,
            expected,
        });
    }
    for sk in &acc.nats.signing_keys {
        let reason = match sk {
            SigningKey::Scoped(s) if s.kind != "user_scope" => {
                Some(format!("unknown scope kind {:?}", printable(&s.kind)))
            }
            _ if !is_public_key(sk.key(), KeyPairType::Account) => Some(format!(
                "{:?} is not an account public key",
                printable(sk.key())
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(JwtError::BadClaim {
                kind: Kind::Account,
                who,
                field: "signing_keys",
                reason,
            });
        }
    }
    Ok(acc)
}

/// What a verified user may do: its claims, and the permissions and limits in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorized {
    /// The user JWT's claims as signed.
    pub user: UserClaims,
    /// The account's public key.
    pub account: String,
    /// The signing key that signed the user, if not the account's identity key.
    pub signing_key: Option<String>,
    /// Effective permissions: the user's, a scoped key's expanded template, or the
    /// account's `default_permissions` when the user sets none.
    pub permissions: Permissions,
    /// Effective limits, `-1` unlimited: the user's (or the template's) bounded by the
    /// account's.
    pub limits: EffectiveLimits,
    /// CONNECT needs no nonce signature.
    pub bearer: bool,
    /// `src`: CIDRs the user may connect from (empty: any).
    pub src: Vec<String>,
    /// `times`: when the user may connect (empty: any time).
    pub times: Vec<crate::claims::TimeRange>,
    /// `times_location`.
    pub locale: String,
    /// `allowed_connection_types` (empty: all).
    pub allowed_connection_types: Vec<String>,
    /// When the connection must end (the user's `exp`, else the account's; 0: never).
    pub expires: i64,
}

/// A user's limits after the account's are applied; `-1` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Subscriptions.
    pub subs: i64,
    /// Payload bytes.
    pub payload: i64,
    /// Data bytes.
    pub data: i64,
}

/// The smaller of two limits where `-1` (any negative) is unlimited (nats-server's
/// `minLimit`).
fn min_limit(a: i64, b: i64) -> i64 {
    match (a < 0, b < 0) {
        (true, true) => NO_LIMIT,
        (true, false) => b,
        (false, true) => a,
        (false, false) => a.min(b),
    }
}

/// Verifies a user JWT against its (already verified) account at `now`.
pub fn verify_user(jwt: &str, account: &AccountClaims, now: i64) -> Result<Authorized, JwtError> {
    let user: UserClaims = decode(jwt, Kind::User, now)?;
    let who = printable(&user.sub);
    if account.exp > 0 && now > account.exp {
        return Err(JwtError::Expired {
            kind: Kind::Account,
            who: printable(&account.sub),
            exp: account.exp,
        });
    }
    let claimed = if user.nats.issuer_account.is_empty() {
        &user.iss
    } else {
        &user.nats.issuer_account
    };
    if *claimed != account.sub {
        return Err(JwtError::WrongAccount {
            who,
            found: printable(claimed),
            account: account.sub.clone(),
        });
    }
    let signing_key = if user.iss == account.sub {
        None
    } else {
        Some(
            account
                .nats
                .signing_keys
                .iter()
                .find(|k| k.key() == user.iss)
                .ok_or_else(|| JwtError::UntrustedIssuer {
                    kind: Kind::User,
                    who: who.clone(),
                    issuer: user.iss.clone(),
                    expected: format!("the account {} or one of its signing keys", account.sub),
                })?,
        )
    };
    let limits: UserPermissionLimits = match signing_key {
        Some(SigningKey::Scoped(scope)) => {
            if user.nats.limits != UserPermissionLimits::default() {
                return Err(JwtError::ScopedUserNotEmpty {
                    who,
                    key: scope.key.clone(),
                });
            }
            expand_template(&scope.template, &user, account)?
        }
        _ => user.nats.limits.clone(),
    };
    if limits.bearer_token && account.nats.limits.disallow_bearer {
        return Err(JwtError::BearerDisallowed {
            who,
            account: account.sub.clone(),
        });
    }
    if let Some(revoked_at) = revoked_at(account, &user) {
        return Err(JwtError::Revoked {
            who,
            iat: user.iat,
            revoked_at,
        });
    }
    let permissions = if limits.permissions.is_empty() {
        account.nats.default_permissions.clone()
    } else {
        limits.permissions.clone()
    };
    let acc_limits = &account.nats.limits;
    let expires = match (user.exp, account.exp) {
        (0, a) => a,
        (u, 0) => u,
        (u, a) => u.min(a),
    };
    Ok(Authorized {
        account: account.sub.clone(),
        signing_key: signing_key.map(|k| k.key().to_string()),
        permissions,
        limits: EffectiveLimits {
            subs: min_limit(limits.subs, acc_limits.subs),
            payload: min_limit(limits.payload, acc_limits.payload),
            data: min_limit(limits.data, acc_limits.data),
        },
        bearer: limits.bearer_token,
        src: limits.src,
        times: limits.times,
        locale: limits.locale,
        allowed_connection_types: limits.allowed_connection_types,
        expires,
        user,
    })
}

/// The revocation time that revokes `user`, if any: its key's or `*`'s, when the user JWT
/// was issued at or before it. A user JWT without `iat` is revoked by any entry.
pub fn revoked_at(account: &AccountClaims, user: &UserClaims) -> Option<i64> {
    let revs = &account.nats.revocations;
    [revs.get(&user.sub), revs.get("*")]
        .into_iter()
        .flatten()
        .copied()
        .filter(|&t| user.iat <= t)
        .max()
}

/// Expands a scoped signing key's template for `user` (nats-server's
/// `processUserPermissionsTemplate`): tokens `{{name()}}`, `{{subject()}}`,
/// `{{account-name()}}`, `{{account-subject()}}`, `{{tag(x)}}` and `{{account-tag(x)}}` (every
/// value of the tags `x:value`; several values multiply the subject). An allow subject that
/// does not expand to a valid subject is dropped; a deny subject that does not is an error
/// (a deny must never silently vanish).
pub fn expand_template(
    template: &UserPermissionLimits,
    user: &UserClaims,
    account: &AccountClaims,
) -> Result<UserPermissionLimits, JwtError> {
    let mut out = template.clone();
    let expand_perm = |p: &Permission| -> Result<Permission, JwtError> {
        Ok(Permission {
            allow: expand_list(&p.allow, false, user, account)?,
            deny: expand_list(&p.deny, true, user, account)?,
        })
    };
    out.permissions.publish = expand_perm(&template.permissions.publish)?;
    out.permissions.subscribe = expand_perm(&template.permissions.subscribe)?;
    Ok(out)
}

fn expand_list(
    list: &[String],
    strict: bool,
    user: &UserClaims,
    account: &AccountClaims,
) -> Result<Vec<String>, JwtError> {
    let mut out = Vec::with_capacity(list.len());
    for subject in list {
        let fail = |reason: String| JwtError::Template {
            who: printable(&user.sub),
            template: subject.chars().take(128).collect(),
            reason,
        };
        let mut alternatives: Vec<Vec<String>> = Vec::new();
        for token in subject.split('.') {
            alternatives.push(expand_token(token, user, account));
        }
        let total = alternatives
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.len()))
            .filter(|&n| n <= MAX_TEMPLATE_EXPANSION)
            .ok_or_else(|| {
                fail(format!(
                    "expands to more than {MAX_TEMPLATE_EXPANSION} subjects"
                ))
            })?;
        if total == 0 {
            if strict {
                return Err(fail("a tag it names is not set".to_string()));
            }
            continue;
        }
        for mut n in 0..total {
            let mut tokens = Vec::with_capacity(alternatives.len());
            for alt in &alternatives {
                tokens.push(alt[n % alt.len()].as_str());
                n /= alt.len();
            }
            let expanded = tokens.join(".");
            if valid_subject(&expanded) {
                out.push(expanded);
            } else if strict {
                return Err(fail(format!("gives the invalid subject {expanded:?}")));
            }
        }
    }
    Ok(out)
}

/// The values one subject token stands for.
fn expand_token(token: &str, user: &UserClaims, account: &AccountClaims) -> Vec<String> {
    let Some(op) = token
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map(|t| t.trim().to_ascii_lowercase())
    else {
        return vec![token.to_string()];
    };
    let tags = |tags: &[String], name: &str| -> Vec<String> {
        let prefix = format!("{name}:");
        tags.iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    };
    match op.as_str() {
        "name()" => vec![user.name.clone()],
        "subject()" => vec![user.sub.clone()],
        "account-name()" => vec![account.name.clone()],
        "account-subject()" => vec![account.sub.clone()],
        _ => {
            if let Some(name) = op.strip_prefix("tag(").and_then(|o| o.strip_suffix(')')) {
                tags(&user.nats.generic.tags, name)
            } else if let Some(name) = op
                .strip_prefix("account-tag(")
                .and_then(|o| o.strip_suffix(')'))
            {
                tags(&account.nats.generic.tags, name)
            } else {
                // An unknown function: an invalid token on purpose.
                vec![" ".to_string()]
            }
        }
    }
}

/// A subject as NATS accepts it: non-empty tokens, no whitespace.
fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|t| !t.is_empty()) && !s.chars().any(char::is_whitespace)
}
