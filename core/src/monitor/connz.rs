//! `/connz`: the client connections, with nats-server's options (`ConnzOptions`), from the
//! HTTP query or a system account request's JSON body:
//!
//! * `sort` (JSON `sort`): `cid` (the default) and `start` ascending; `subs`, `pending`,
//!   `msgs_to`, `msgs_from`, `bytes_to`, `bytes_from`, `uptime` descending, as nats-server.
//!   `last`, `idle` and `rtt` are refused (this server tracks neither last activity nor
//!   round trips), `stop` and `reason` too (they need closed connections); anything else is
//!   `invalid sorting option: <value>`, as nats-server;
//! * `acc` (JSON `acc`): one account's connections (an unknown account: none);
//! * `state` (JSON `state`, nats-server's numbers 0 open, 1 closed, 2 all): `open` and `all`
//!   list the open connections; closed connections are not kept, so `closed` is refused;
//! * `subs=1` (JSON `subscriptions`): each connection's `subscriptions_list`; `subs=detail`
//!   (JSON `subscriptions_detail`): `subscriptions_list_detail` (`account`, `subject`,
//!   `qgroup`, `sid`, `msgs`, `cid`);
//! * `offset`, `limit` (1024 by default), `cid` (one connection), `user` (one user's),
//!   `auth` (accepted; the user and account are always shown).
//!
//! A bad value is an error (HTTP 400; in a system request `error` with code 500, as
//! nats-server), never a page built from a guess.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{system_rfc3339, Sources};
use crate::server::stats::ConnEntry;

/// The default (and largest useful) number of connections listed.
pub const DEFAULT_LIMIT: usize = 1024;

/// How the connections are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Connection id, ascending (also `start`).
    #[default]
    Cid,
    /// Subscriptions, most first.
    Subs,
    /// Bytes waiting to be written, most first.
    Pending,
    /// Messages delivered to the client, most first.
    MsgsTo,
    /// Messages the client published, most first.
    MsgsFrom,
    /// Bytes delivered to the client, most first.
    BytesTo,
    /// Bytes the client published, most first.
    BytesFrom,
    /// Connected longest first.
    Uptime,
}

impl SortBy {
    /// Parses nats-server's `sort` value.
    pub fn parse(value: &str) -> Result<SortBy, String> {
        Ok(match value {
            "" | "cid" | "start" => SortBy::Cid,
            "subs" => SortBy::Subs,
            "pending" => SortBy::Pending,
            "msgs_to" => SortBy::MsgsTo,
            "msgs_from" => SortBy::MsgsFrom,
            "bytes_to" => SortBy::BytesTo,
            "bytes_from" => SortBy::BytesFrom,
            "uptime" => SortBy::Uptime,
            "last" | "idle" | "rtt" => {
                return Err(format!(
                    "unsupported sorting option: {value} (this server does not track it)"
                ))
            }
            "stop" | "reason" => {
                return Err(format!("sort by {value} only valid on closed connections"))
            }
            other => return Err(format!("invalid sorting option: {other}")),
        })
    }
}

/// Which subscription lists are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubsList {
    /// None.
    #[default]
    None,
    /// Subjects (`subscriptions_list`).
    Subjects,
    /// Details (`subscriptions_list_detail`).
    Detail,
}

/// `/connz`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnzOptions {
    /// The order.
    pub sort: SortBy,
    /// Subscription lists.
    pub subs: SubsList,
    /// Connections skipped.
    pub offset: usize,
    /// Most connections listed.
    pub limit: usize,
    /// Only this connection.
    pub cid: Option<u64>,
    /// Only this user's connections.
    pub user: Option<String>,
    /// Only this account's connections.
    pub account: Option<String>,
}

impl Default for ConnzOptions {
    fn default() -> Self {
        ConnzOptions {
            sort: SortBy::Cid,
            subs: SubsList::None,
            offset: 0,
            limit: DEFAULT_LIMIT,
            cid: None,
            user: None,
            account: None,
        }
    }
}

/// A boolean query value as nats-server reads it (Go's `ParseBool`).
fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("Error decoding boolean for '{key}': {other:?}")),
    }
}

/// The state asked for: `Err` for closed connections, which are not kept.
fn check_state(value: &str) -> Result<(), String> {
    match value.to_ascii_lowercase().as_str() {
        "" | "open" | "all" | "any" => Ok(()),
        "closed" => Err("state=closed: this server does not keep closed connections".into()),
        other => Err(format!("Error decoding state for {other}")),
    }
}

impl ConnzOptions {
    /// The options of an HTTP query (`sort=subs&acc=A&subs=detail`).
    pub fn from_query(query: &str) -> Result<ConnzOptions, String> {
        let mut o = ConnzOptions::default();
        for (key, value) in super::query_pairs(query) {
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|e| format!("Error decoding int for '{key}': {e}"))
            };
            match key.as_str() {
                "sort" => o.sort = SortBy::parse(&value)?,
                "subs" if value.eq_ignore_ascii_case("detail") => o.subs = SubsList::Detail,
                "subs" => {
                    o.subs = match parse_bool("subs", &value)? {
                        true => SubsList::Subjects,
                        false => SubsList::None,
                    }
                }
                "auth" => {
                    parse_bool("auth", &value)?;
                }
                "offset" => o.offset = usize::try_from(int(&value)?).unwrap_or(0),
                "limit" => o.limit = limit(int(&value)?),
                "cid" => {
                    let cid = value
                        .parse::<u64>()
                        .map_err(|e| format!("Error decoding uint64 for 'cid': {e}"))?;
                    o.cid = (cid > 0).then_some(cid);
                }
                "state" => check_state(&value)?,
                "user" if !value.is_empty() => o.user = Some(value),
                "acc" if !value.is_empty() => o.account = Some(value),
                _ => {}
            }
        }
        Ok(o)
    }

    /// The options of a system request's JSON body (nats-server's `ConnzOptions` names;
    /// unknown fields ignored).
    pub fn from_json(v: &Value) -> Result<ConnzOptions, String> {
        let mut o = ConnzOptions::default();
        let text = |key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
        let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
        if let Some(sort) = text("sort") {
            o.sort = SortBy::parse(sort)?;
        }
        if flag("subscriptions_detail") {
            o.subs = SubsList::Detail;
        } else if flag("subscriptions") {
            o.subs = SubsList::Subjects;
        }
        if let Some(offset) = v.get("offset").and_then(Value::as_i64) {
            o.offset = usize::try_from(offset).unwrap_or(0);
        }
        if let Some(l) = v.get("limit").and_then(Value::as_i64) {
            o.limit = limit(l);
        }
        o.cid = v.get("cid").and_then(Value::as_u64).filter(|c| *c > 0);
        match v.get("state").and_then(Value::as_u64) {
            None | Some(0) | Some(2) => {}
            Some(1) => check_state("closed")?,
            Some(other) => return Err(format!("Error decoding state for {other}")),
        }
        o.user = text("user").map(str::to_owned);
        o.account = text("acc").map(str::to_owned);
        Ok(o)
    }
}

/// nats-server's limit: the default when not positive.
fn limit(v: i64) -> usize {
    usize::try_from(v)
        .ok()
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_LIMIT)
}

/// The key a connection sorts by (ascending; the descending orders use [`Reverse`]).
fn sort_connections(conns: &mut [Arc<ConnEntry>], by: SortBy) {
    let traffic =
        |c: &Arc<ConnEntry>, f: fn(&crate::server::LinkStats) -> u64| f(&c.handle.traffic);
    match by {
        SortBy::Cid => conns.sort_by_key(|c| c.handle.id),
        SortBy::Subs => conns.sort_by_key(|c| Reverse(c.subs.load(Ordering::Relaxed))),
        SortBy::Pending => conns.sort_by_key(|c| Reverse(c.handle.out.pending())),
        SortBy::MsgsTo => {
            conns.sort_by_key(|c| Reverse(traffic(c, |t| t.msgs_out.load(Ordering::Relaxed))))
        }
        SortBy::MsgsFrom => {
            conns.sort_by_key(|c| Reverse(traffic(c, |t| t.msgs_in.load(Ordering::Relaxed))))
        }
        SortBy::BytesTo => {
            conns.sort_by_key(|c| Reverse(traffic(c, |t| t.bytes_out.load(Ordering::Relaxed))))
        }
        SortBy::BytesFrom => {
            conns.sort_by_key(|c| Reverse(traffic(c, |t| t.bytes_in.load(Ordering::Relaxed))))
        }
        SortBy::Uptime => conns.sort_by_key(|c| (c.start, c.handle.id)),
    }
}

/// `/connz` with `opts`.
pub fn connz(sources: &Sources, opts: &ConnzOptions, now: &str) -> Result<Value, String> {
    let Some(shared) = sources.shared.upgrade() else {
        return Ok(json!({}));
    };
    let mut all: Vec<Arc<ConnEntry>> = shared
        .stats
        .connections()
        .into_iter()
        .filter(|c| {
            let meta = c.meta();
            opts.account.as_ref().is_none_or(|a| *a == meta.account)
                && opts.user.as_ref().is_none_or(|u| *u == meta.user)
        })
        .collect();
    let mut limit = opts.limit;
    if let Some(cid) = opts.cid {
        all.retain(|c| c.handle.id == cid);
        limit = 1;
    }
    sort_connections(&mut all, opts.sort);
    let conns: Vec<Value> = all
        .iter()
        .skip(opts.offset)
        .take(limit)
        .map(|c| conn_info(c, opts.subs))
        .collect();
    Ok(json!({
        "server_id": shared.server_id,
        "now": now,
        "num_connections": conns.len(),
        "total": all.len(),
        "offset": opts.offset,
        "limit": limit,
        "connections": conns,
    }))
}

/// One connection, as nats-server's `ConnInfo`.
fn conn_info(c: &ConnEntry, subs: SubsList) -> Value {
    let t = &c.handle.traffic;
    let meta = c.meta();
    let mut info = json!({
        "cid": c.handle.id,
        "kind": "Client",
        "type": if c.websocket.load(Ordering::Relaxed) { "websocket" } else { "nats" },
        "ip": c.peer.ip().to_string(),
        "port": c.peer.port(),
        "start": system_rfc3339(c.start),
        "uptime": format!("{}s", c.start.elapsed().unwrap_or_default().as_secs()),
        "pending_bytes": c.handle.out.pending(),
        "in_msgs": t.msgs_in.load(Ordering::Relaxed),
        "out_msgs": t.msgs_out.load(Ordering::Relaxed),
        "in_bytes": t.bytes_in.load(Ordering::Relaxed),
        "out_bytes": t.bytes_out.load(Ordering::Relaxed),
        "subscriptions": c.subs.load(Ordering::Relaxed),
        "name": meta.name,
        "lang": meta.lang,
        "version": meta.version,
        "authorized_user": meta.user,
        "account": meta.account,
    });
    match subs {
        SubsList::None => {}
        SubsList::Subjects => {
            let list: Vec<String> = c
                .subscriptions()
                .iter()
                .map(|s| String::from_utf8_lossy(&s.subject).into_owned())
                .collect();
            info["subscriptions_list"] = json!(list);
        }
        SubsList::Detail => {
            let list: Vec<Value> = c
                .subscriptions()
                .iter()
                .map(|s| {
                    let mut d = json!({
                        "account": meta.account,
                        "subject": String::from_utf8_lossy(&s.subject),
                        "sid": String::from_utf8_lossy(&s.sid),
                        "msgs": s.delivered.load(Ordering::Relaxed),
                        "cid": c.handle.id,
                    });
                    if let Some(q) = &s.queue {
                        d["qgroup"] = json!(String::from_utf8_lossy(q));
                    }
                    d
                })
                .collect();
            info["subscriptions_list_detail"] = json!(list);
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_values_as_nats_server() {
        assert_eq!(SortBy::parse("").unwrap(), SortBy::Cid);
        assert_eq!(SortBy::parse("bytes_to").unwrap(), SortBy::BytesTo);
        assert_eq!(
            SortBy::parse("bogus").unwrap_err(),
            "invalid sorting option: bogus"
        );
        assert!(SortBy::parse("idle").unwrap_err().contains("unsupported"));
        assert!(SortBy::parse("stop").unwrap_err().contains("closed"));
    }

    #[test]
    fn query_and_json_options() {
        let o =
            ConnzOptions::from_query("sort=subs&acc=A&subs=detail&limit=0&offset=2&cid=3").unwrap();
        assert_eq!(o.sort, SortBy::Subs);
        assert_eq!(o.account.as_deref(), Some("A"));
        assert_eq!(o.subs, SubsList::Detail);
        assert_eq!((o.limit, o.offset, o.cid), (DEFAULT_LIMIT, 2, Some(3)));
        assert_eq!(
            ConnzOptions::from_query("subs=1").unwrap().subs,
            SubsList::Subjects
        );
        assert!(ConnzOptions::from_query("subs=maybe").is_err());
        assert!(ConnzOptions::from_query("limit=x").is_err());
        assert!(ConnzOptions::from_query("state=closed").is_err());
        assert!(ConnzOptions::from_query("state=open").is_ok());
        let o = ConnzOptions::from_json(&json!({"sort": "msgs_from", "acc": "B",
            "subscriptions": true, "unknown": 1}))
        .unwrap();
        assert_eq!((o.sort, o.subs), (SortBy::MsgsFrom, SubsList::Subjects));
        assert_eq!(o.account.as_deref(), Some("B"));
        assert!(ConnzOptions::from_json(&json!({"sort": "x"})).is_err());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs: Vec<(String, String)> =
            super::super::query_pairs("acc=%24SYS&u=a+b&bad=%zz&flag").collect();
        assert_eq!(
            pairs,
            [
                ("acc".to_string(), "$SYS".to_string()),
                ("u".to_string(), "a b".to_string()),
                ("bad".to_string(), "%zz".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        let leafz = super::super::LeafzOptions::from_query("subs=1&acc=A").unwrap();
        assert!(leafz.subscriptions);
        assert_eq!(leafz.account, "A");
        assert!(super::super::LeafzOptions::from_query("subs=x").is_err());
    }
}
