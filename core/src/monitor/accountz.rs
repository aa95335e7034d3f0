//! `/accountz` and `/accstatz`: the accounts, in nats-server 2.9's shapes.
//!
//! * `/accountz`: `{server_id, now, system_account, accounts: [names]}`; with `?acc=NAME`
//!   (or a system request's `{"account": NAME}`) `account_detail` instead of the list:
//!   `account_name`, `update_time` (the server's start: accounts come from the configuration
//!   or with their first user), `is_system`, `expired` (false), `complete` (true),
//!   `jetstream_enabled`, `leafnode_connections`, `client_connections`, `subscriptions`,
//!   `sublist_stats.num_subscriptions`. An unknown account is an error (`Account NAME does
//!   not exist`, as nats-server).
//! * `/accstatz`: `{server_id, now, account_statz: [{acc, conns, leafnodes, total_conns,
//!   sent: {msgs, bytes}, received: {msgs, bytes}, slow_consumers}]}` for the accounts with
//!   client connections (`?unused=1`: every account). `sent` is what the account's
//!   connections and links were delivered, `received` what they published: counted over the
//!   connections open now (closed connections' counts are not kept per account).
//!   `slow_consumers` is 0: slow consumers are counted per server (`/varz`).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{link_status, query_pairs, system_rfc3339, Sources};

/// One account's numbers.
#[derive(Debug, Default)]
struct AccountCounts {
    conns: usize,
    leafnodes: usize,
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
}

/// The counts of account `name` over the open connections and links.
fn counts(sources: &Sources, name: &str) -> AccountCounts {
    let mut c = AccountCounts::default();
    if let Some(shared) = sources.shared.upgrade() {
        for conn in shared.stats.connections() {
            if conn.meta().account == name {
                let t = &conn.handle.traffic;
                c.conns += 1;
                c.in_msgs += t.msgs_in.load(Ordering::Relaxed);
                c.in_bytes += t.bytes_in.load(Ordering::Relaxed);
                c.out_msgs += t.msgs_out.load(Ordering::Relaxed);
                c.out_bytes += t.bytes_out.load(Ordering::Relaxed);
            }
        }
    }
    for l in link_status(sources) {
        if l.connected && l.account == name {
            c.leafnodes += 1;
            c.in_msgs += l.msgs_in;
            c.in_bytes += l.bytes_in;
            c.out_msgs += l.msgs_out;
            c.out_bytes += l.bytes_out;
        }
    }
    c
}

/// `/accountz`: the account list, or `account`'s details when it is not empty.
pub fn accountz(sources: &Sources, account: &str, now: &str) -> Result<Value, String> {
    let Some(shared) = sources.shared.upgrade() else {
        return Ok(json!({}));
    };
    let system = shared.system.account_name();
    let mut page = json!({ "server_id": shared.server_id, "now": now });
    if let Some(system) = &system {
        page["system_account"] = json!(system);
    }
    if account.is_empty() {
        let names: Vec<String> = shared
            .accounts
            .all()
            .iter()
            .map(|a| a.name().to_owned())
            .collect();
        page["accounts"] = json!(names);
        return Ok(page);
    }
    let acc = shared
        .accounts
        .get(account)
        .ok_or_else(|| format!("Account {account} does not exist"))?;
    let c = counts(sources, account);
    let jetstream = if acc.is_global() {
        sources.jetstream.is_some()
    } else {
        sources.js_accounts.iter().any(|a| a == account)
    };
    let subs = acc.sublist.count();
    let mut detail = json!({
        "account_name": account,
        "update_time": system_rfc3339(shared.stats.start),
        "expired": false,
        "complete": true,
        "jetstream_enabled": jetstream,
        "leafnode_connections": c.leafnodes,
        "client_connections": c.conns,
        "subscriptions": subs,
        "sublist_stats": { "num_subscriptions": subs },
    });
    if system.as_deref() == Some(account) {
        detail["is_system"] = json!(true);
    }
    page["account_detail"] = detail;
    Ok(page)
}

/// `/accstatz` with the HTTP query's `unused`.
pub fn accstatz_query(sources: &Sources, query: &str, now: &str) -> Result<Value, String> {
    let mut unused = false;
    for (k, v) in query_pairs(query) {
        if k == "unused" {
            unused = match v.as_str() {
                "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                other => return Err(format!("Error decoding boolean for 'unused': {other:?}")),
            };
        }
    }
    Ok(accstatz(sources, unused, now))
}

/// `/accstatz`: each account's connections and traffic (with `unused`, idle accounts too).
pub fn accstatz(sources: &Sources, unused: bool, now: &str) -> Value {
    let Some(shared) = sources.shared.upgrade() else {
        return json!({});
    };
    let stats: Vec<Value> = shared
        .accounts
        .all()
        .iter()
        .filter_map(|a| {
            let c = counts(sources, a.name());
            (unused || c.conns > 0).then(|| {
                json!({
                    "acc": a.name(),
                    "conns": c.conns,
                    "leafnodes": c.leafnodes,
                    "total_conns": c.conns + c.leafnodes,
                    "sent": { "msgs": c.out_msgs, "bytes": c.out_bytes },
                    "received": { "msgs": c.in_msgs, "bytes": c.in_bytes },
                    "slow_consumers": 0,
                })
            })
        })
        .collect();
    json!({ "server_id": shared.server_id, "now": now, "account_statz": stats })
}
