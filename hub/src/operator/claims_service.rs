//! The full resolver's subjects in the system account, as nats-server 2.9 serves them:
//!
//! * `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE` and `$SYS.REQ.CLAIMS.UPDATE`: the body is an
//!   account JWT; it is verified, stored and in force at once (see [`Resolver::update`]). The
//!   answer is `{"server": {...}, "data": {"account", "code": 200, "message"}}`, or
//!   `{"server": {...}, "error": {"account", "code", "description"}}`.
//! * `$SYS.REQ.ACCOUNT.<account>.CLAIMS.LOOKUP`: the answer is the account's stored JWT (no
//!   answer for an unknown account).
//!
//! Only users of the system account can publish there: the subscriptions live in its subject
//! space. Work that touches the disk runs on a blocking thread, never on the publisher's.

use std::sync::{Arc, Weak};

use leaf_core::server::{Account, InternalSink, Msg, Publisher, ReplyTo, Shared, SubRef};
use serde_json::json;
use tracing::warn;

use super::Resolver;

/// The subscriptions of the claims service in `system` (held as long as the server runs).
pub fn start(
    resolver: &Arc<Resolver>,
    server: &Arc<Shared>,
    system: &Arc<Account>,
) -> Result<Vec<SubRef>, String> {
    let sink = Arc::new(ClaimsSink {
        resolver: resolver.clone(),
        server: Arc::downgrade(server),
        system: Arc::downgrade(system),
    });
    [
        "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
        "$SYS.REQ.CLAIMS.UPDATE",
        "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
    ]
    .into_iter()
    .map(|subject| {
        system
            .subscribe_internal(subject.as_bytes(), None, sink.clone())
            .map_err(|e| format!("{subject}: {e}"))
    })
    .collect()
}

struct ClaimsSink {
    resolver: Arc<Resolver>,
    server: Weak<Shared>,
    system: Weak<Account>,
}

impl InternalSink for ClaimsSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let subject = String::from_utf8_lossy(msg.subject).into_owned();
        let reply = msg.reply.map(|r| from.reply_to(r));
        let body = String::from_utf8_lossy(msg.payload).into_owned();
        let resolver = self.resolver.clone();
        let server = self.server.clone();
        let system = self.system.clone();
        tokio::task::spawn_blocking(move || {
            let answer = if subject.ends_with(".CLAIMS.LOOKUP") {
                lookup(&resolver, &subject)
            } else {
                Some(update(&resolver, &server, &subject, &body))
            };
            if let (Some(answer), Some(reply), Some(system)) = (answer, reply, system.upgrade()) {
                answer_on(&system, &reply, &answer);
            }
        });
    }
}

fn answer_on(system: &Account, reply: &ReplyTo, body: &[u8]) {
    system.answer(reply, None, body);
}

/// The account named in `$SYS.REQ.ACCOUNT.<account>.…`.
fn account_in(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("$SYS.REQ.ACCOUNT.")
        .and_then(|rest| rest.split('.').next())
}

fn lookup(resolver: &Resolver, subject: &str) -> Option<Vec<u8>> {
    let key = account_in(subject)?;
    resolver.stored_jwt(key).map(String::into_bytes)
}

fn update(resolver: &Resolver, server: &Weak<Shared>, subject: &str, jwt: &str) -> Vec<u8> {
    let server_block = server.upgrade().map_or(json!({}), |s| {
        json!({
            "name": s.opts.server_name.clone().unwrap_or_else(|| s.server_id.clone()),
            "host": s.local_addr.ip().to_string(),
            "id": s.server_id,
            "ver": leaf_core::server::info::NATS_FEATURE_LEVEL,
            "time": leaf_proto::time::rfc3339(leaf_proto::time::now_ns()),
        })
    });
    let named = account_in(subject).map(str::to_owned);
    let body = match resolver.update(jwt, named.as_deref()) {
        Ok(key) => json!({ "server": server_block, "data": {
            "account": key, "code": 200, "message": "jwt updated",
        }}),
        Err(e) => {
            warn!(error = %e, "account JWT update refused");
            json!({ "server": server_block, "error": {
                "account": named.unwrap_or_default(), "code": 400, "description": e.to_string(),
            }})
        }
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
