//! The server's requests in the system account, as nats-server 2.9 answers them (its
//! `events.go`: `statszReq`, `zReq`):
//!
//! * `$SYS.REQ.SERVER.PING` and `.PING.STATSZ` / `.<id>.STATSZ`:
//!   `{"server": {...}, "statsz": {start, mem, cores, cpu, connections, total_connections,
//!   active_accounts, subscriptions, sent, received, slow_consumers, active_servers}}`;
//! * `$SYS.REQ.SERVER.PING.<KIND>` and `$SYS.REQ.SERVER.<id>.<KIND>`, `KIND` one of
//!   [`KINDS`]: `{"server": {...}, "data": <the monitoring page>}`, or, when the options are
//!   not JSON (code 400) or the page refuses them (500, as nats-server: `/connz`'s `sort`),
//!   `{"server": {...}, "error": {"code", "description"}}`.
//!
//! The body (empty, or a JSON object) carries the page's options under nats-server's names
//! (`/connz`: `sort`, `acc`, `state`, `subscriptions`, `subscriptions_detail`, `offset`,
//! `limit`, `cid`, `user`; `/leafz`: `subscriptions`, `account`; `/accountz`: `account`) and
//! the filters of `EventFilterOptions`: a server whose name or host does not contain
//! `server_name` / `host`, or whose JetStream domain is not `domain`, or that is asked for a
//! `cluster` or `tags` (we have neither), does not answer. Unknown fields are ignored.
//!
//! A request is handed from the publisher's task to a bounded queue ([`super::MAX_QUEUED`]
//! requests of at most [`MAX_BODY`] bytes); one task builds the answers. A request that does
//! not fit is dropped (the requester times out), as is one without a reply subject.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::debug;

use super::events::Events;
use crate::monitor::{self, Sources};
use crate::server::{Account, InternalSink, Msg, Publisher, ReplyTo, Shared, SubRef};
use crate::sublist::SublistError;

/// The pages served by `$SYS.REQ.SERVER.PING.<KIND>` and `$SYS.REQ.SERVER.<id>.<KIND>`.
pub const KINDS: [&str; 8] = [
    "STATSZ", "VARZ", "CONNZ", "LEAFZ", "SUBSZ", "JSZ", "ACCOUNTZ", "HEALTHZ",
];

/// The largest request body read (options are a few fields); a larger one is answered
/// with an error.
pub const MAX_BODY: usize = 16 * 1024;

/// One request for the worker.
struct Request {
    kind: &'static str,
    reply: ReplyTo,
    body: Vec<u8>,
    too_large: bool,
}

/// Hands requests to the worker.
struct RequestSink {
    kind: &'static str,
    queue: mpsc::Sender<Request>,
    /// Counts what the queue drops.
    events: Weak<Events>,
}

impl InternalSink for RequestSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let Some(reply) = msg.reply else {
            return;
        };
        let too_large = msg.payload.len() > MAX_BODY;
        let body = if too_large {
            Vec::new()
        } else {
            msg.payload.to_vec()
        };
        let request = Request {
            kind: self.kind,
            reply: from.reply_to(reply),
            body,
            too_large,
        };
        if self.queue.try_send(request).is_err() {
            if let Some(events) = self.events.upgrade() {
                events.count_dropped();
            }
            debug!("system account request dropped: queue full");
        }
    }
}

/// Subscribes the requests in `account`; returns the subscriptions and the worker that
/// answers them (to be spawned).
pub(crate) fn start(
    sources: Sources,
    shared: &Arc<Shared>,
    account: &Arc<Account>,
    events: &Arc<Events>,
) -> Result<(Vec<SubRef>, impl Future<Output = ()> + Send + 'static), SublistError> {
    let (tx, mut rx) = mpsc::channel::<Request>(super::MAX_QUEUED);
    let sink = |kind: &'static str| {
        Arc::new(RequestSink {
            kind,
            queue: tx.clone(),
            events: Arc::downgrade(events),
        })
    };
    let mut subs =
        vec![account.subscribe_internal(b"$SYS.REQ.SERVER.PING", None, sink("STATSZ"))?];
    for kind in KINDS {
        for subject in [
            format!("$SYS.REQ.SERVER.PING.{kind}"),
            format!("$SYS.REQ.SERVER.{}.{kind}", shared.server_id),
        ] {
            subs.push(account.subscribe_internal(subject.as_bytes(), None, sink(kind))?);
        }
    }
    let worker = {
        let account = Arc::downgrade(account);
        let events = Arc::downgrade(events);
        let shared = Arc::downgrade(shared);
        async move {
            while let Some(request) = rx.recv().await {
                let (Some(account), Some(events), Some(shared)) =
                    (account.upgrade(), events.upgrade(), shared.upgrade())
                else {
                    return;
                };
                if let Some(answer) = answer(&sources, &shared, &events, &request) {
                    account.answer(&request.reply, None, &answer);
                }
            }
        }
    };
    Ok((subs, worker))
}

/// The answer to `request`, `None` when this server is filtered out.
fn answer(
    sources: &Sources,
    shared: &Shared,
    events: &Events,
    request: &Request,
) -> Option<Vec<u8>> {
    let options = if request.too_large {
        Err((400, format!("request body over {MAX_BODY} bytes")))
    } else if request.body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Object(serde_json::Map::new()))
    } else {
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err((400, "the request body is not a JSON object".to_string())),
            Err(e) => Err((400, e.to_string())),
        }
    };
    let mut body = serde_json::Map::new();
    match options {
        Ok(options) => {
            if filtered_out(shared, events, &options) {
                return None;
            }
            body.insert("server".into(), events.server_block(shared));
            if request.kind == "STATSZ" {
                body.insert("statsz".into(), statsz(sources, shared));
            } else {
                match page(request.kind, sources, &options) {
                    Ok(data) => {
                        body.insert("data".into(), data);
                    }
                    Err(e) => {
                        body.insert("data".into(), Value::Null);
                        body.insert("error".into(), json!({ "code": 500, "description": e }));
                    }
                }
            }
        }
        Err((code, e)) => {
            body.insert("server".into(), events.server_block(shared));
            body.insert("data".into(), Value::Null);
            body.insert("error".into(), json!({ "code": code, "description": e }));
        }
    }
    serde_json::to_vec(&Value::Object(body)).ok()
}

/// Whether `EventFilterOptions` in `options` leave this server out.
fn filtered_out(shared: &Shared, events: &Events, options: &Value) -> bool {
    let text = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = shared
        .opts
        .server_name
        .clone()
        .unwrap_or_else(|| shared.server_id.clone());
    if text("server_name").is_some_and(|n| !name.contains(n)) {
        return true;
    }
    if text("host").is_some_and(|h| !shared.opts.host.contains(h)) {
        return true;
    }
    // No cluster, no tags: a request for either is not for us.
    if text("cluster").is_some() {
        return true;
    }
    if options
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        return true;
    }
    text("domain").is_some_and(|d| events.domain() != Some(d))
}

/// The `data` of page `kind` with `options`.
fn page(kind: &str, sources: &Sources, options: &Value) -> Result<Value, String> {
    let now = leaf_proto::time::rfc3339(leaf_proto::time::now_ns());
    let flag = |key: &str| options.get(key).and_then(Value::as_bool).unwrap_or(false);
    let text = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match kind {
        "VARZ" => Ok(monitor::varz(sources, &now)),
        "CONNZ" => {
            let opts = monitor::connz::ConnzOptions::from_json(options)?;
            monitor::connz::connz(sources, &opts, &now)
        }
        "LEAFZ" => Ok(monitor::leafz(
            sources,
            &monitor::LeafzOptions {
                subscriptions: flag("subscriptions"),
                account: text("account"),
            },
            &now,
        )),
        "SUBSZ" => Ok(monitor::subsz(sources, &now)),
        "JSZ" => Ok(monitor::jsz(sources, &now)),
        "ACCOUNTZ" => monitor::accountz::accountz(sources, &text("account"), &now),
        "HEALTHZ" => Ok(match monitor::healthz(sources, flag("js-enabled-only")) {
            monitor::Page::Json(_, v) => v,
            monitor::Page::Text(t) => json!(t),
        }),
        other => Err(format!("unknown request {other}")),
    }
}

/// The `statsz` body: the server's counters, as nats-server's `ServerStats`.
fn statsz(sources: &Sources, shared: &Shared) -> Value {
    let st = &shared.stats;
    let t = st.totals();
    let conns = st.connections();
    let mut accounts: Vec<String> = conns.iter().map(|c| c.meta().account).collect();
    accounts.sort();
    accounts.dedup();
    let mut stats = json!({
        "start": monitor::system_rfc3339(st.start),
        "mem": monitor::rss_bytes(),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": 0,
        "connections": conns.len(),
        "total_connections": st.total_connections.load(Ordering::Relaxed),
        "active_accounts": accounts.len(),
        "subscriptions": shared.accounts.subscription_count(),
        "sent": { "msgs": t.out_msgs, "bytes": t.out_bytes },
        "received": { "msgs": t.in_msgs, "bytes": t.in_bytes },
        "slow_consumers": st.slow_consumers.load(Ordering::Relaxed),
        "active_servers": 1,
    });
    if let Some(js) = &sources.jetstream {
        stats["jetstream"] = json!({
            "config": { "domain": js.domain(), "max_storage": js.max_file_bytes() },
        });
    }
    stats
}
