//! Unit tests: every refusal by name, and the chain's accepted cases.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;

use crate::claims::*;
use crate::*;

const NOW: i64 = 1_800_000_000;

struct Keys {
    op: KeyPair,
    op_sk: KeyPair,
    acc: KeyPair,
    acc_sk: KeyPair,
    scoped: KeyPair,
    user: KeyPair,
}

fn keys() -> Keys {
    Keys {
        op: KeyPair::new_operator(),
        op_sk: KeyPair::new_operator(),
        acc: KeyPair::new_account(),
        acc_sk: KeyPair::new_account(),
        scoped: KeyPair::new_account(),
        user: KeyPair::new_user(),
    }
}

fn seed(k: &KeyPair) -> String {
    k.seed().expect("seed")
}

fn operator_claims(k: &Keys) -> OperatorClaims {
    let mut op = OperatorClaims {
        sub: k.op.public_key(),
        name: "OP".into(),
        ..Default::default()
    };
    op.nats.signing_keys = vec![k.op_sk.public_key()];
    op
}

fn operator(k: &Keys) -> OperatorClaims {
    let jwt = mint_operator(&operator_claims(k), &seed(&k.op), NOW).expect("mint");
    decode_operator(&jwt, NOW).expect("operator")
}

fn account_claims(k: &Keys) -> AccountClaims {
    let mut acc = AccountClaims {
        sub: k.acc.public_key(),
        name: "PLANT_A".into(),
        ..Default::default()
    };
    acc.nats.limits = AccountLimits::unlimited();
    acc.nats.limits.payload = 1024;
    acc.nats.signing_keys = vec![
        SigningKey::Plain(k.acc_sk.public_key()),
        SigningKey::Scoped(Box::new(UserScope {
            kind: "user_scope".into(),
            key: k.scoped.public_key(),
            template: UserPermissionLimits {
                permissions: Permissions {
                    publish: Permission {
                        allow: vec![
                            "plant.{{account-name()}}.{{name()}}.>".into(),
                            "line.{{tag(line)}}".into(),
                        ],
                        deny: vec!["admin.{{subject()}}".into()],
                    },
                    ..Default::default()
                },
                ..UserPermissionLimits::unlimited()
            },
            ..Default::default()
        })),
    ];
    acc.nats.generic.tags = vec!["site:north".into()];
    acc
}

fn account(k: &Keys) -> AccountClaims {
    let jwt = mint_account(&account_claims(k), &seed(&k.op), NOW).expect("mint");
    verify_account(&jwt, &operator(k), NOW).expect("account")
}

fn user_claims(k: &Keys) -> UserClaims {
    let mut u = UserClaims {
        sub: k.user.public_key(),
        name: "gw1".into(),
        ..Default::default()
    };
    u.nats.limits = UserPermissionLimits::unlimited();
    u.nats.limits.subs = 10;
    u.nats.limits.permissions.publish.allow = vec!["sensors.>".into()];
    u
}

fn user_jwt(_k: &Keys, claims: &UserClaims, signer: &KeyPair) -> String {
    mint_user(claims, &seed(signer), NOW).expect("mint user")
}

/// A token from raw header and claims JSON, signed by `k` over `header.claims`.
fn raw(header: &str, claims: &str, k: &KeyPair) -> String {
    let mut t = URL_SAFE_NO_PAD.encode(header);
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let sig = k.sign(t.as_bytes()).expect("sign");
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(sig));
    t
}

const HDR: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

fn account_json(k: &Keys, nats: &str) -> String {
    format!(
        r#"{{"iat":{NOW},"iss":"{}","sub":"{}","nats":{nats}}}"#,
        k.op.public_key(),
        k.acc.public_key()
    )
}

fn decode_acc(jwt: &str) -> Result<AccountClaims, JwtError> {
    token::decode(jwt, Kind::Account, NOW)
}

// ---- the envelope ----

#[test]
fn mints_and_verifies_the_whole_chain() {
    let k = keys();
    let acc = account(&k);
    assert_eq!(acc.nats.limits.payload, 1024);
    assert_eq!(acc.nats.generic.version, 2);
    let a = verify_user(&user_jwt(&k, &user_claims(&k), &k.acc), &acc, NOW).expect("user");
    assert_eq!(a.account, k.acc.public_key());
    assert_eq!(a.signing_key, None);
    assert_eq!(a.permissions.publish.allow, vec!["sensors.>".to_string()]);
    assert_eq!(
        a.limits,
        EffectiveLimits {
            subs: 10,
            payload: 1024,
            data: -1
        }
    );
    assert!(!a.bearer);
}

#[test]
fn accepts_unknown_fields() {
    let k = keys();
    let jwt = raw(
        HDR,
        &account_json(&k, r#"{"type":"account","version":2,"future":{"x":1}}"#),
        &k.op,
    );
    let acc = decode_acc(&jwt).expect("unknown fields ignored");
    assert_eq!(acc.sub, k.acc.public_key());
}

#[test]
fn accepts_the_v1_alg_name_in_a_v2_header() {
    let k = keys();
    let jwt = raw(
        r#"{"typ":"jwt","alg":"ED25519"}"#,
        &account_json(&k, r#"{"type":"account","version":2}"#),
        &k.op,
    );
    decode_acc(&jwt).expect("nats-server 2.9 accepts alg ed25519");
}

#[test]
fn refuses_too_long() {
    let long = "a".repeat(MAX_JWT_LEN + 1);
    let e = decode_acc(&long).unwrap_err();
    assert!(matches!(e, JwtError::TooLong { .. }), "{e}");
    assert!(e.to_string().contains("over the limit"), "{e}");
}

#[test]
fn refuses_not_three_parts() {
    let e = decode_acc("a.b").unwrap_err();
    assert!(matches!(e, JwtError::NotThreeParts { parts: 2, .. }), "{e}");
}

#[test]
fn refuses_bad_base64_in_each_part() {
    let k = keys();
    let good = raw(
        HDR,
        &account_json(&k, r#"{"type":"account","version":2}"#),
        &k.op,
    );
    let p: Vec<&str> = good.split('.').collect();
    for (i, part) in ["header", "claims", "signature"].iter().enumerate() {
        let mut q = p.clone();
        q[i] = "!!!";
        let e = decode_acc(&q.join(".")).unwrap_err();
        assert!(
            matches!(e, JwtError::BadBase64 { part: x, .. } if x == *part),
            "{part}: {e}"
        );
    }
}

#[test]
fn refuses_bad_json_header_and_claims() {
    let k = keys();
    let e = decode_acc(&raw("{nope", "{}", &k.op)).unwrap_err();
    assert!(matches!(e, JwtError::BadJson { part: "header", .. }), "{e}");
    let e = decode_acc(&raw(HDR, "[1,2", &k.op)).unwrap_err();
    assert!(matches!(e, JwtError::BadJson { part: "claims", .. }), "{e}");
    // Valid JSON, wrong shape for a typed claim.
    let e = decode_acc(&raw(
        HDR,
        &account_json(
            &k,
            r#"{"type":"account","version":2,"limits":{"subs":"many"}}"#,
        ),
        &k.op,
    ))
    .unwrap_err();
    assert!(matches!(e, JwtError::BadJson { part: "claims", .. }), "{e}");
}

#[test]
fn refuses_wrong_alg_and_typ() {
    let k = keys();
    let claims = account_json(&k, r#"{"type":"account","version":2}"#);
    for h in [
        r#"{"typ":"JWT","alg":"HS256"}"#,
        r#"{"typ":"JWT","alg":"ed25519-nkeyx"}"#,
        r#"{"typ":"JWS","alg":"ed25519-nkey"}"#,
        r#"{"alg":"ed25519-nkey"}"#,
    ] {
        let e = decode_acc(&raw(h, &claims, &k.op)).unwrap_err();
        assert!(matches!(e, JwtError::BadHeader { .. }), "{h}: {e}");
    }
}

#[test]
fn refuses_version_1_and_newer_versions() {
    let k = keys();
    let v1 = format!(
        r#"{{"iat":{NOW},"iss":"{}","sub":"{}","type":"account","nats":{{}}}}"#,
        k.op.public_key(),
        k.acc.public_key()
    );
    let e = decode_acc(&raw(HDR, &v1, &k.op)).unwrap_err();
    assert!(matches!(e, JwtError::Version { version: 0, .. }), "{e}");
    let v3 = account_json(&k, r#"{"type":"account","version":3}"#);
    let e = decode_acc(&raw(HDR, &v3, &k.op)).unwrap_err();
    assert!(matches!(e, JwtError::Version { version: 3, .. }), "{e}");
}

#[test]
fn refuses_a_jwt_of_another_type() {
    let k = keys();
    let u = user_jwt(&k, &user_claims(&k), &k.acc);
    let e = decode_acc(&u).unwrap_err();
    assert!(
        matches!(e, JwtError::WrongType { ref found, .. } if found == "user"),
        "{e}"
    );
}

#[test]
fn refuses_wrong_key_types() {
    let k = keys();
    // An account JWT signed by an account key (iss must be an operator).
    let json = format!(
        r#"{{"iat":{NOW},"iss":"{}","sub":"{}","nats":{{"type":"account","version":2}}}}"#,
        k.acc.public_key(),
        k.acc.public_key()
    );
    let e = decode_acc(&raw(HDR, &json, &k.acc)).unwrap_err();
    assert!(
        matches!(e, JwtError::WrongKeyType { field: "iss", .. }),
        "{e}"
    );
    // An account JWT about a user key.
    let json = format!(
        r#"{{"iat":{NOW},"iss":"{}","sub":"{}","nats":{{"type":"account","version":2}}}}"#,
        k.op.public_key(),
        k.user.public_key()
    );
    let e = decode_acc(&raw(HDR, &json, &k.op)).unwrap_err();
    assert!(
        matches!(e, JwtError::WrongKeyType { field: "sub", .. }),
        "{e}"
    );
    // A seed as the issuer is not a public key.
    let json = format!(
        r#"{{"iat":{NOW},"iss":"{}","sub":"{}","nats":{{"type":"account","version":2}}}}"#,
        seed(&k.op),
        k.acc.public_key()
    );
    let e = decode_acc(&raw(HDR, &json, &k.op)).unwrap_err();
    assert!(
        matches!(e, JwtError::WrongKeyType { field: "iss", .. }),
        "{e}"
    );
    assert!(
        !e.to_string().contains(&seed(&k.op)),
        "no seed in messages: {e}"
    );
}

#[test]
fn refuses_a_bad_signature() {
    let k = keys();
    // Signed by another operator than its iss.
    let other = KeyPair::new_operator();
    let json = account_json(&k, r#"{"type":"account","version":2}"#);
    let e = decode_acc(&raw(HDR, &json, &other)).unwrap_err();
    assert!(matches!(e, JwtError::BadSignature { .. }), "{e}");
    // Claims changed after signing.
    let good = raw(HDR, &json, &k.op);
    let p: Vec<&str> = good.split('.').collect();
    let forged = account_json(&k, r#"{"type":"account","version":2,"limits":{"conn":-1}}"#);
    let tampered = format!("{}.{}.{}", p[0], URL_SAFE_NO_PAD.encode(forged), p[2]);
    let e = decode_acc(&tampered).unwrap_err();
    assert!(matches!(e, JwtError::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains("bad signature"), "{e}");
}

#[test]
fn refuses_expired_and_not_yet_valid() {
    let k = keys();
    let mut u = user_claims(&k);
    u.exp = NOW - 1;
    let acc = account(&k);
    let e = verify_user(&user_jwt(&k, &u, &k.acc), &acc, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::Expired {
                kind: Kind::User,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "user JWT for {}: expired at 2027-01-15T07:59:59Z",
            k.user.public_key()
        )),
        "{msg}"
    );
    // Valid up to and including exp.
    u.exp = NOW;
    verify_user(&user_jwt(&k, &u, &k.acc), &acc, NOW).expect("exp == now is valid");
    u.exp = 0;
    u.nbf = NOW + 60;
    let e = verify_user(&user_jwt(&k, &u, &k.acc), &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::NotYetValid { .. }), "{e}");
    assert!(e.to_string().contains("not valid before"), "{e}");
}

// ---- operator and account ----

#[test]
fn operator_signed_by_its_signing_key_is_accepted_by_another_is_refused() {
    let k = keys();
    let jwt = mint_operator(&operator_claims(&k), &seed(&k.op_sk), NOW).expect("mint");
    decode_operator(&jwt, NOW).expect("signed by its signing key");
    let stranger = KeyPair::new_operator();
    let jwt = mint_operator(&operator_claims(&k), &seed(&stranger), NOW).expect("mint");
    let e = decode_operator(&jwt, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::UntrustedIssuer {
                kind: Kind::Operator,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn operator_with_bad_signing_key_or_system_account_is_refused() {
    let k = keys();
    let mut c = operator_claims(&k);
    c.nats.signing_keys.push(k.acc.public_key());
    let e = decode_operator(&mint_operator(&c, &seed(&k.op), NOW).expect("mint"), NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::BadClaim {
                field: "signing_keys",
                ..
            }
        ),
        "{e}"
    );
    let mut c = operator_claims(&k);
    c.nats.system_account = k.user.public_key();
    let e = decode_operator(&mint_operator(&c, &seed(&k.op), NOW).expect("mint"), NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::BadClaim {
                field: "system_account",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn account_signed_by_an_operator_signing_key_is_accepted() {
    let k = keys();
    let jwt = mint_account(&account_claims(&k), &seed(&k.op_sk), NOW).expect("mint");
    verify_account(&jwt, &operator(&k), NOW).expect("signing key");
}

#[test]
fn account_of_another_operator_is_refused() {
    let k = keys();
    let stranger = KeyPair::new_operator();
    let jwt = mint_account(&account_claims(&k), &seed(&stranger), NOW).expect("mint");
    let e = verify_account(&jwt, &operator(&k), NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::UntrustedIssuer {
                kind: Kind::Account,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&k.op.public_key()), "{e}");
}

#[test]
fn strict_signing_key_usage_refuses_the_identity_key() {
    let k = keys();
    let mut c = operator_claims(&k);
    c.nats.strict_signing_key_usage = true;
    let op =
        decode_operator(&mint_operator(&c, &seed(&k.op), NOW).expect("mint"), NOW).expect("op");
    let by_identity = mint_account(&account_claims(&k), &seed(&k.op), NOW).expect("mint");
    let e = verify_account(&by_identity, &op, NOW).unwrap_err();
    assert!(e.to_string().contains("strict_signing_key_usage"), "{e}");
    let by_sk = mint_account(&account_claims(&k), &seed(&k.op_sk), NOW).expect("mint");
    verify_account(&by_sk, &op, NOW).expect("signing key under strict");
}

#[test]
fn account_with_bad_signing_keys_is_refused() {
    let k = keys();
    let mut c = account_claims(&k);
    c.nats.signing_keys = vec![SigningKey::Plain(k.user.public_key())];
    let jwt = mint_account(&c, &seed(&k.op), NOW).expect("mint");
    let e = verify_account(&jwt, &operator(&k), NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::BadClaim {
                field: "signing_keys",
                ..
            }
        ),
        "{e}"
    );
    let mut c = account_claims(&k);
    c.nats.signing_keys = vec![SigningKey::Scoped(Box::new(UserScope {
        kind: "admin_scope".into(),
        key: k.scoped.public_key(),
        ..Default::default()
    }))];
    let jwt = mint_account(&c, &seed(&k.op), NOW).expect("mint");
    let e = verify_account(&jwt, &operator(&k), NOW).unwrap_err();
    assert!(e.to_string().contains("unknown scope kind"), "{e}");
}

#[test]
fn account_claims_read_the_nats_io_field_names() {
    // As nsc writes them (v2): exports with kinds and response_type, limits with -1,
    // revocations, scoped signing keys, a comma-separated src.
    let k = keys();
    let nats = format!(
        r#"{{"type":"account","version":2,
        "exports":[{{"name":"svc","subject":"svc.>","type":"service","response_type":"Stream","response_threshold":5000000000}},
                   {{"subject":"events.>","type":"stream","token_req":true}}],
        "imports":[{{"name":"i","subject":"x.>","account":"{acc}","type":"stream","local_subject":"y.>"}}],
        "limits":{{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,"wildcards":true,"conn":-1,"leaf":-1,
                   "mem_storage":-1,"disk_storage":1000000,"streams":5,"consumer":-1,"max_ack_pending":100,"disallow_bearer":true}},
        "signing_keys":["{sk}",{{"kind":"user_scope","key":"{sc}","role":"r","template":{{"pub":{{"allow":["a"]}},"src":"10.0.0.0/8, 192.168.0.0/16","subs":-1}}}}],
        "revocations":{{"*":1,"{user}":2}},
        "default_permissions":{{"pub":{{"deny":[">"]}},"sub":{{}}}}}}"#,
        acc = k.acc_sk.public_key(),
        sk = k.acc_sk.public_key(),
        sc = k.scoped.public_key(),
        user = k.user.public_key()
    );
    let a = decode_acc(&raw(HDR, &account_json(&k, &nats), &k.op)).expect("decode");
    assert_eq!(a.nats.exports[0].kind, ExportKind::Service);
    assert_eq!(a.nats.exports[0].response_type, Some(ResponseType::Stream));
    assert_eq!(a.nats.exports[1].kind, ExportKind::Stream);
    assert!(a.nats.exports[1].token_req);
    assert_eq!(a.nats.imports[0].local_subject, "y.>");
    assert_eq!(a.nats.limits.jetstream.disk_storage, 1_000_000);
    assert_eq!(a.nats.limits.jetstream.streams, 5);
    assert_eq!(a.nats.limits.conn, NO_LIMIT);
    assert!(a.nats.limits.disallow_bearer);
    assert_eq!(a.nats.revocations.get("*"), Some(&1));
    let SigningKey::Scoped(s) = &a.nats.signing_keys[1] else {
        panic!("scoped key expected")
    };
    assert_eq!(s.template.src, vec!["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(a.nats.default_permissions.publish.deny, vec![">"]);
    let bad = account_json(
        &k,
        r#"{"type":"account","version":2,"exports":[{"type":"queue"}]}"#,
    );
    let e = decode_acc(&raw(HDR, &bad, &k.op)).unwrap_err();
    assert!(
        matches!(e, JwtError::BadJson { .. }),
        "unknown export kind: {e}"
    );
}

// ---- users ----

#[test]
fn user_signed_by_a_signing_key_needs_issuer_account() {
    let k = keys();
    let acc = account(&k);
    let mut u = user_claims(&k);
    let e = verify_user(&user_jwt(&k, &u, &k.acc_sk), &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::WrongAccount { .. }), "{e}");
    u.nats.issuer_account = k.acc.public_key();
    let a = verify_user(&user_jwt(&k, &u, &k.acc_sk), &acc, NOW).expect("signing key");
    assert_eq!(a.signing_key, Some(k.acc_sk.public_key()));
}

#[test]
fn user_of_another_account_is_refused() {
    let k = keys();
    let acc = account(&k);
    let other = KeyPair::new_account();
    let e = verify_user(&user_jwt(&k, &user_claims(&k), &other), &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::WrongAccount { .. }), "{e}");
    // Claims our account but is signed by a key the account does not list.
    let mut u = user_claims(&k);
    u.nats.issuer_account = k.acc.public_key();
    let e = verify_user(&user_jwt(&k, &u, &other), &acc, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::UntrustedIssuer {
                kind: Kind::User,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn scoped_user_gets_the_expanded_template() {
    let k = keys();
    let acc = account(&k);
    let mut u = UserClaims {
        sub: k.user.public_key(),
        name: "gw7".into(),
        ..Default::default()
    };
    u.nats.issuer_account = k.acc.public_key();
    u.nats.generic.tags = vec!["line:l1".into(), "line:l2".into()];
    let a = verify_user(&user_jwt(&k, &u, &k.scoped), &acc, NOW).expect("scoped");
    assert_eq!(
        a.permissions.publish.allow,
        vec!["plant.PLANT_A.gw7.>", "line.l1", "line.l2"]
    );
    assert_eq!(
        a.permissions.publish.deny,
        vec![format!("admin.{}", k.user.public_key())]
    );
    assert_eq!(a.limits.subs, NO_LIMIT);
    assert_eq!(a.limits.payload, 1024);
    // Without the tag, the allow subject naming it is dropped.
    u.nats.generic.tags.clear();
    let a = verify_user(&user_jwt(&k, &u, &k.scoped), &acc, NOW).expect("scoped");
    assert_eq!(a.permissions.publish.allow, vec!["plant.PLANT_A.gw7.>"]);
}

#[test]
fn scoped_user_with_its_own_permissions_is_refused() {
    let k = keys();
    let acc = account(&k);
    let mut u = user_claims(&k);
    u.nats.issuer_account = k.acc.public_key();
    let e = verify_user(&user_jwt(&k, &u, &k.scoped), &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::ScopedUserNotEmpty { .. }), "{e}");
}

#[test]
fn template_deny_that_does_not_expand_is_refused() {
    let k = keys();
    let mut c = account_claims(&k);
    if let SigningKey::Scoped(s) = &mut c.nats.signing_keys[1] {
        s.template.permissions.subscribe.deny = vec!["secret.{{tag(team)}}".into()];
    }
    let acc = verify_account(
        &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
        &operator(&k),
        NOW,
    )
    .expect("account");
    let mut u = UserClaims {
        sub: k.user.public_key(),
        ..Default::default()
    };
    u.nats.issuer_account = k.acc.public_key();
    let e = verify_user(&user_jwt(&k, &u, &k.scoped), &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::Template { .. }), "{e}");
    // And a template multiplying past the bound.
    u.nats.generic.tags = (0..40).map(|i| format!("team:t{i}")).collect();
    if let SigningKey::Scoped(s) = &mut c.nats.signing_keys[1] {
        s.template.permissions.subscribe.deny = vec!["{{tag(team)}}.{{tag(team)}}".into()];
    }
    let acc = verify_account(
        &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
        &operator(&k),
        NOW,
    )
    .expect("account");
    let e = verify_user(&user_jwt(&k, &u, &k.scoped), &acc, NOW).unwrap_err();
    assert!(e.to_string().contains("more than 1024"), "{e}");
}

#[test]
fn revoked_users_are_refused() {
    let k = keys();
    let mut u = user_claims(&k);
    u.iat = NOW - 100;
    let jwt = user_jwt(&k, &u, &k.acc);
    for (key, at, revoked) in [
        (k.user.public_key(), NOW - 100, true), // iat == revocation time
        (k.user.public_key(), NOW - 101, false),
        ("*".to_string(), NOW, true),
        ("*".to_string(), NOW - 200, false),
        (KeyPair::new_user().public_key(), NOW, false),
    ] {
        let mut c = account_claims(&k);
        c.nats.revocations = BTreeMap::from([(key.clone(), at)]);
        let acc = verify_account(
            &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
            &operator(&k),
            NOW,
        )
        .expect("account");
        let r = verify_user(&jwt, &acc, NOW);
        if revoked {
            let e = r.unwrap_err();
            assert!(matches!(e, JwtError::Revoked { .. }), "{key} {at}: {e}");
            assert!(e.to_string().contains("revoked"), "{e}");
        } else {
            r.unwrap_or_else(|e| panic!("{key} {at}: {e}"));
        }
    }
}

#[test]
fn bearer_user_refused_when_the_account_disallows_bearer() {
    let k = keys();
    let mut u = user_claims(&k);
    u.nats.limits.bearer_token = true;
    let jwt = user_jwt(&k, &u, &k.acc);
    let a = verify_user(&jwt, &account(&k), NOW).expect("bearer allowed");
    assert!(a.bearer);
    let mut c = account_claims(&k);
    c.nats.limits.disallow_bearer = true;
    let acc = verify_account(
        &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
        &operator(&k),
        NOW,
    )
    .expect("account");
    let e = verify_user(&jwt, &acc, NOW).unwrap_err();
    assert!(matches!(e, JwtError::BearerDisallowed { .. }), "{e}");
}

#[test]
fn user_of_an_expired_account_is_refused() {
    let k = keys();
    let mut c = account_claims(&k);
    c.exp = NOW + 10;
    let acc = verify_account(
        &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
        &operator(&k),
        NOW,
    )
    .expect("account");
    let jwt = user_jwt(&k, &user_claims(&k), &k.acc);
    assert_eq!(
        verify_user(&jwt, &acc, NOW).expect("valid").expires,
        NOW + 10
    );
    let e = verify_user(&jwt, &acc, NOW + 11).unwrap_err();
    assert!(
        matches!(
            e,
            JwtError::Expired {
                kind: Kind::Account,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn user_without_permissions_gets_the_account_defaults() {
    let k = keys();
    let mut c = account_claims(&k);
    c.nats.default_permissions.subscribe.allow = vec!["public.>".into()];
    let acc = verify_account(
        &mint_account(&c, &seed(&k.op), NOW).expect("mint"),
        &operator(&k),
        NOW,
    )
    .expect("account");
    let mut u = user_claims(&k);
    u.nats.limits.permissions = Permissions::default();
    let a = verify_user(&user_jwt(&k, &u, &k.acc), &acc, NOW).expect("user");
    assert_eq!(a.permissions.subscribe.allow, vec!["public.>"]);
}

#[test]
fn minting_refuses_wrong_seeds_and_subjects() {
    let k = keys();
    let e = mint_account(&account_claims(&k), &seed(&k.acc), NOW).unwrap_err();
    assert!(matches!(e, JwtError::Mint { .. }), "{e}");
    let e = mint_user(&user_claims(&k), "SUnot-a-seed", NOW).unwrap_err();
    assert!(matches!(e, JwtError::Mint { .. }), "{e}");
    let mut u = user_claims(&k);
    u.sub = k.acc.public_key();
    let e = mint_user(&u, &seed(&k.acc), NOW).unwrap_err();
    assert!(
        e.to_string().contains("sub is not a user public key"),
        "{e}"
    );
}

// ---- CONNECT ----

#[test]
fn connect_signature_checks() {
    let k = keys();
    let acc = account(&k);
    let a = verify_user(&user_jwt(&k, &user_claims(&k), &k.acc), &acc, NOW).expect("user");
    let nonce = "kW0n8kTk3fWbZ_A";
    let sig = sign_nonce(&seed(&k.user), nonce).expect("sign");
    verify_connect(&a, nonce, Some(&sig)).expect("valid sig");
    // Standard base64 with padding is accepted too, as nats-server does.
    let raw_sig = URL_SAFE_NO_PAD.decode(&sig).expect("b64");
    let std_sig = base64::engine::general_purpose::STANDARD.encode(raw_sig);
    verify_connect(&a, nonce, Some(&std_sig)).expect("std base64");
    let who = k.user.public_key();
    assert_eq!(
        verify_connect(&a, nonce, None),
        Err(SigError::Missing { who: who.clone() })
    );
    assert_eq!(
        verify_connect(&a, nonce, Some("***")),
        Err(SigError::NotBase64 { who: who.clone() })
    );
    assert_eq!(
        verify_connect(&a, "another nonce", Some(&sig)),
        Err(SigError::Mismatch { who: who.clone() })
    );
    let other = sign_nonce(&seed(&KeyPair::new_user()), nonce).expect("sign");
    assert_eq!(
        verify_connect(&a, nonce, Some(&other)),
        Err(SigError::Mismatch { who })
    );
}

#[test]
fn bearer_connect_needs_no_signature() {
    let k = keys();
    let mut u = user_claims(&k);
    u.nats.limits.bearer_token = true;
    let a = verify_user(&user_jwt(&k, &u, &k.acc), &account(&k), NOW).expect("user");
    verify_connect(&a, "nonce", None).expect("bearer");
}

// ---- .creds ----

#[test]
fn creds_round_trip() {
    let k = keys();
    let jwt = user_jwt(&k, &user_claims(&k), &k.acc);
    let text = format_creds(&jwt, &seed(&k.user));
    let c = parse_creds(&text).expect("parse");
    assert_eq!(c.jwt, jwt);
    assert_eq!(c.seed, seed(&k.user));
    assert_eq!(c.public_key, k.user.public_key());
    assert!(!format!("{c:?}").contains(&c.seed), "Debug hides the seed");
    // CRLF line ends and indentation are fine.
    let c = parse_creds(&text.replace('\n', "\r\n  ")).expect("crlf");
    assert_eq!(c.jwt, jwt);
}

#[test]
fn creds_refusals() {
    let k = keys();
    let jwt = user_jwt(&k, &user_claims(&k), &k.acc);
    let s = seed(&k.user);
    assert_eq!(
        parse_creds(&format!(
            "-----BEGIN USER NKEY SEED-----\n{s}\n------END USER NKEY SEED------\n"
        ))
        .unwrap_err(),
        CredsError::NoJwt
    );
    assert_eq!(
        parse_creds(&format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n"
        ))
        .unwrap_err(),
        CredsError::NoSeed
    );
    assert_eq!(
        parse_creds(&format!("-----BEGIN NATS USER JWT-----\n{jwt}\n")).unwrap_err(),
        CredsError::Unterminated { block: "JWT" }
    );
    assert_eq!(
        parse_creds(&format_creds(&jwt, &seed(&k.acc))).unwrap_err(),
        CredsError::BadSeed
    );
    assert_eq!(
        parse_creds(&format_creds(&jwt, "SUAgarbage")).unwrap_err(),
        CredsError::BadSeed
    );
    let other = KeyPair::new_user();
    let e = parse_creds(&format_creds(&jwt, &seed(&other))).unwrap_err();
    assert!(matches!(e, CredsError::Mismatch { .. }), "{e}");
    assert!(
        !e.to_string().contains(&seed(&other)),
        "no seed in messages: {e}"
    );
    let big = " ".repeat(creds::MAX_CREDS_LEN + 1);
    assert!(matches!(
        parse_creds(&big).unwrap_err(),
        CredsError::TooLong { .. }
    ));
}

// ---- the directory store ----

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "leaf-jwt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn store_saves_newer_jwts_atomically_with_private_modes() {
    use std::os::unix::fs::PermissionsExt;
    let k = keys();
    let tmp = TempDir::new("store");
    let dir = tmp.0.join("jwts");
    let store = DirStore::open(&dir, operator(&k)).expect("open");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut c = account_claims(&k);
    c.iat = NOW - 10;
    let v1 = mint_account(&c, &seed(&k.op), NOW).expect("mint");
    assert_eq!(store.save(&v1, NOW).expect("save"), Saved::Created);
    let file = dir.join(format!("{}.jwt", k.acc.public_key()));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), v1);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(store.list().expect("list"), vec![k.acc.public_key()]);
    // Same iat: refused, the stored one stays.
    let e = store.save(&v1, NOW).unwrap_err();
    assert!(matches!(e, StoreError::NotNewer { .. }), "{e}");
    c.iat = NOW - 20;
    let older = mint_account(&c, &seed(&k.op), NOW).expect("mint");
    assert!(matches!(
        store.save(&older, NOW).unwrap_err(),
        StoreError::NotNewer { .. }
    ));
    c.iat = NOW;
    c.nats.limits.conn = 5;
    let v2 = mint_account(&c, &seed(&k.op), NOW).expect("mint");
    assert_eq!(store.save(&v2, NOW).expect("save"), Saved::Replaced);
    let loaded = store
        .load(&k.acc.public_key(), NOW)
        .expect("load")
        .expect("some");
    assert_eq!(loaded.nats.limits.conn, 5);
    assert_eq!(mode(&file), 0o600);
    assert!(store
        .load(&KeyPair::new_account().public_key(), NOW)
        .expect("load")
        .is_none());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left");
}

#[test]
fn store_refuses_foreign_and_bad_input() {
    let k = keys();
    let tmp = TempDir::new("refuse");
    let store = DirStore::open(&tmp.0, operator(&k)).expect("open");
    let stranger = KeyPair::new_operator();
    let foreign = mint_account(&account_claims(&k), &seed(&stranger), NOW).expect("mint");
    let e = store.save(&foreign, NOW).unwrap_err();
    assert!(
        matches!(e, StoreError::Jwt(JwtError::UntrustedIssuer { .. })),
        "{e}"
    );
    assert!(store.list().expect("list").is_empty());
    let e = store.save("garbage", NOW).unwrap_err();
    assert!(
        matches!(e, StoreError::Jwt(JwtError::NotThreeParts { .. })),
        "{e}"
    );
    for key in ["../../etc/passwd", "", &k.user.public_key()] {
        let e = store.load(key, NOW).unwrap_err();
        assert!(matches!(e, StoreError::BadKey(_)), "{key}: {e}");
    }
}
