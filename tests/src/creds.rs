//! NATS credentials for the authentication tests: JWTs signed with nkeys, `.creds` files as
//! `nsc` writes them, and a hubd that accepts given user nkeys on its leafnode listener.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};

use crate::{unique, ServerKind, TestServer};

/// base64url without padding, as JWTs (and nonce signatures) use.
pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A JWT of `claims` issued and signed by `issuer` (`iss`, `iat` and `jti` filled in).
pub fn encode_jwt(mut claims: Value, issuer: &KeyPair) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] = json!(iat);
    claims["jti"] = json!(unique("jti").to_uppercase());
    let header = B64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = B64.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", B64.encode(sig))
}

/// A user JWT for `user`, issued by `account`.
pub fn user_jwt(user: &KeyPair, account: &KeyPair) -> String {
    encode_jwt(
        json!({
            "name": "e2e-user",
            "sub": user.public_key(),
            "nats": {
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2,
            },
        }),
        account,
    )
}

/// A `.creds` file's text, as `nsc` writes it.
pub fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A `.creds` file's text for `user`, issued by `account`.
pub fn creds_for(user: &KeyPair, account: &KeyPair) -> String {
    creds_text(&user_jwt(user, account), &user.seed().unwrap())
}

/// hubd accepting the user nkeys `keys` on its leafnode listener at `port`.
pub async fn hubd_with_nkeys(keys: &[String], port: u16) -> TestServer {
    let users: Vec<Value> = keys.iter().map(|k| json!({ "nkey": k })).collect();
    TestServer::with_config(
        ServerKind::Hubd,
        json!({ "leafnodes": {
            "listen": format!("127.0.0.1:{port}"),
            "authorization": { "users": users },
        }}),
    )
    .await
}
