//! hubd's fleet pages on the shared monitoring port (through `leaf_core::monitor::Pages`):
//!
//! * `/fleetz`: every gateway (account, server name, connected or offline since when it was
//!   last seen, backlog, rate, ETA, store usage, alarms, and its whole latest record), the
//!   table's size and bounds, and the ignored records by reason;
//! * in `/metrics`: per gateway (labels `account`, `gateway`) `hubd_fleet_connected`,
//!   `hubd_fleet_backlog_messages`, `hubd_fleet_backlog_bytes`,
//!   `hubd_fleet_rate_msgs_per_second`, `hubd_fleet_store_percent`, `hubd_fleet_alarms`;
//!   `hubd_fleet_gateways` and `hubd_fleet_records_ignored_total{reason}`.

use std::sync::Arc;
use std::time::SystemTime;

use leaf_core::monitor::{label, system_rfc3339, Metrics, Pages};
use serde_json::{json, Value};

use super::alarms::alarms;
use super::table::{Gateway, Table};
use super::{Fleet, Ignored};

/// The fleet pages of a hub.
pub struct FleetPages(pub Arc<Fleet>);

impl Pages for FleetPages {
    fn paths(&self) -> &'static [&'static str] {
        &["/fleetz"]
    }

    fn page(&self, path: &str, server_id: &str, now: &str) -> Option<Value> {
        if path != "/fleetz" {
            return None;
        }
        self.0.refresh();
        let table = self.0.table();
        Some(fleetz(
            &table,
            self.0.ignored(),
            server_id,
            now,
            SystemTime::now(),
        ))
    }

    fn metrics(&self, out: &mut Metrics) {
        self.0.refresh();
        let table = self.0.table();
        metrics(&table, self.0.ignored(), SystemTime::now(), out);
    }
}

/// Seconds to forward `g`'s backlog at its rate: 0 without a backlog, `None` without a rate.
fn eta_secs(g: &Gateway) -> Option<f64> {
    let backlog = g.record.backlog_msgs();
    let rate = g.record.rate_msgs_per_sec();
    if backlog == 0 {
        Some(0.0)
    } else if rate > 0.0 {
        Some(backlog as f64 / rate)
    } else {
        None
    }
}

/// One gateway in `/fleetz`.
fn gateway_json(g: &Gateway, now: SystemTime) -> Value {
    let r = &g.record;
    let state = match (g.connected, r.stopping) {
        (true, _) => "connected",
        (false, true) => "stopped",
        (false, false) => "offline",
    };
    json!({
        "account": g.account,
        "server_name": g.name,
        "server_id": r.server_id,
        "version": r.version,
        "state": state,
        "connected": g.connected,
        "last_seen": system_rfc3339(g.last_seen),
        "offline_since": (!g.connected).then(|| system_rfc3339(g.last_seen)),
        "last_record": system_rfc3339(g.received),
        "uptime_secs": r.uptime_secs,
        "backlog_msgs": r.backlog_msgs(),
        "backlog_bytes": r.backlog_bytes(),
        "rate_msgs_per_sec": r.rate_msgs_per_sec(),
        "eta_secs": eta_secs(g),
        "store_percent": r.store.as_ref().and_then(|s| s.percent),
        "truncated": r.truncated(),
        "alarms": alarms(g, now),
        "record": r,
    })
}

/// `/fleetz`.
pub fn fleetz(
    table: &Table,
    ignored: &Ignored,
    server_id: &str,
    now: &str,
    at: SystemTime,
) -> Value {
    let gateways: Vec<Value> = table
        .gateways()
        .into_iter()
        .map(|g| gateway_json(g, at))
        .collect();
    let connected = table.gateways().iter().filter(|g| g.connected).count();
    let ignored: serde_json::Map<String, Value> = ignored
        .counts()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let limits = table.limits();
    json!({
        "server_id": server_id,
        "now": now,
        "total": table.count(),
        "connected": connected,
        "bytes": table.bytes(),
        "max_gateways": limits.max_gateways,
        "max_bytes": limits.max_bytes,
        "evicted": table.evicted(),
        "ignored": ignored,
        "gateways": gateways,
    })
}

/// A per-gateway family: name, type, help, and the value (none: no sample for the gateway).
type GatewayFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Gateway) -> Option<f64>,
);

/// The fleet's metric families.
fn metrics(table: &Table, ignored: &Ignored, now: SystemTime, out: &mut Metrics) {
    let all = table.gateways();
    let labels = |g: &Gateway| {
        format!(
            "{{account=\"{}\",gateway=\"{}\"}}",
            label(&g.account),
            label(&g.name)
        )
    };
    let families: [GatewayFamily; 5] = [
        (
            "hubd_fleet_connected",
            "gauge",
            "1 while the gateway's leaf link is up.",
            |g| Some(f64::from(u8::from(g.connected))),
        ),
        (
            "hubd_fleet_backlog_messages",
            "gauge",
            "Messages waiting on the gateway's uplinks (its latest record).",
            |g| Some(g.record.backlog_msgs() as f64),
        ),
        (
            "hubd_fleet_backlog_bytes",
            "gauge",
            "Bytes waiting on the gateway's uplinks (its latest record).",
            |g| Some(g.record.backlog_bytes() as f64),
        ),
        (
            "hubd_fleet_rate_msgs_per_second",
            "gauge",
            "Messages per second the gateway's uplinks forward (its latest record).",
            |g| Some(g.record.rate_msgs_per_sec()),
        ),
        (
            "hubd_fleet_store_percent",
            "gauge",
            "The gateway's JetStream store usage in percent of its limit.",
            |g| g.record.store.as_ref().and_then(|s| s.percent),
        ),
    ];
    for (name, kind, help, value) in families {
        let samples: Vec<(String, f64)> = all
            .iter()
            .filter_map(|g| value(g).map(|v| (labels(g), v)))
            .collect();
        out.family(name, kind, help, &samples);
    }
    let samples: Vec<(String, f64)> = all
        .iter()
        .map(|g| (labels(g), alarms(g, now).len() as f64))
        .collect();
    out.family(
        "hubd_fleet_alarms",
        "gauge",
        "Alarms the fleet view raises for the gateway.",
        &samples,
    );
    out.family(
        "hubd_fleet_gateways",
        "gauge",
        "Gateways in the fleet view.",
        &[(String::new(), table.count() as f64)],
    );
    let samples: Vec<(String, f64)> = ignored
        .counts()
        .into_iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n as f64))
        .collect();
    out.family(
        "hubd_fleet_records_ignored_total",
        "counter",
        "Status records ignored (not from a leaf link, invalid, too large, another format, \
         or naming another server than the link's).",
        &samples,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::table::tests::record;
    use crate::fleet::table::Limits;
    use std::time::Duration;

    #[test]
    fn fleetz_shows_state_backlog_eta_and_alarms() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut table = Table::new(Limits::default());
        let mut r = record("gw1", 100);
        r.uplinks[0].rate_msgs_per_sec = 20.0;
        table.store("$G", 1, r, 500, t0);
        table.store("$G", 2, record("gw2", 50), 500, t0);
        table.refresh(&[(1, "gw1".into())], t0);
        let ignored = Ignored::default();
        ignored.count("name_mismatch");
        let page = fleetz(&table, &ignored, "ID", "now", t0 + Duration::from_secs(65));
        assert_eq!(page["total"], 2);
        assert_eq!(page["connected"], 1);
        assert_eq!(page["ignored"]["name_mismatch"], 1);
        assert_eq!(page["ignored"]["invalid"], 0);
        let gw1 = &page["gateways"][0];
        assert_eq!(gw1["server_name"], "gw1");
        assert_eq!(gw1["state"], "connected");
        assert_eq!(gw1["eta_secs"], 5.0);
        assert_eq!(gw1["offline_since"], Value::Null);
        let gw2 = &page["gateways"][1];
        assert_eq!(gw2["state"], "offline");
        assert_eq!(gw2["backlog_msgs"], 50);
        assert_eq!(gw2["eta_secs"], Value::Null);
        assert_eq!(gw2["offline_since"], gw2["last_seen"]);
        assert_eq!(gw2["alarms"][0], "offline for 1m05s with 5.0 KB buffered");
        assert_eq!(gw2["record"]["server_name"], "gw2");

        let mut m = Metrics::default();
        metrics(&table, &ignored, t0, &mut m);
        let text: &str = m.as_ref();
        assert!(
            text.contains("hubd_fleet_connected{account=\"$G\",gateway=\"gw2\"} 0"),
            "{text}"
        );
        assert!(text.contains("hubd_fleet_backlog_messages{account=\"$G\",gateway=\"gw1\"} 100"));
        assert!(text.contains("hubd_fleet_records_ignored_total{reason=\"name_mismatch\"} 1"));
        assert!(text.contains("hubd_fleet_gateways 2"));
    }
}
