//! leafd's own monitoring pages and metrics, served by the shared monitoring port
//! (`leaf_core::monitor`) through [`LeafPages`]:
//!
//! * `/uplinkz`: every store-and-forward uplink: state, backlog, rate, counters (`leafd
//!   status` renders it);
//! * `/sourcesz`: every gateway source (serial port, Modbus bus, GPIO group): state, device,
//!   counters (frames, bad input by kind, reopens), latest error;
//! * in `/metrics`: the uplinks' backlogs and rates, the sources' state and counters.

use std::sync::Arc;

use crate::gateway::{Registry, SourceState, SourceStats};
use leaf_core::monitor::{label, system_rfc3339, Family, Metrics, Pages};
use serde_json::{json, Value};

use crate::uplink::{State, UplinkStatus, Uplinks};

/// The pages of one leafd: its uplinks (if any) and its gateway sources.
pub struct LeafPages {
    /// The uplinks, if any.
    pub uplinks: Option<Arc<Uplinks>>,
    /// The gateway sources (serial ports, Modbus buses, GPIO groups).
    pub sources: Registry,
}

impl Pages for LeafPages {
    fn paths(&self) -> &'static [&'static str] {
        &["/uplinkz", "/sourcesz"]
    }

    fn page(&self, path: &str, server_id: &str, now: &str) -> Option<Value> {
        match path {
            "/uplinkz" => Some(uplinkz(self.uplinks.as_deref(), server_id, now)),
            "/sourcesz" => Some(sourcesz(&self.sources, server_id, now)),
            _ => None,
        }
    }

    fn metrics(&self, out: &mut Metrics) {
        metrics(self.uplinks.as_deref(), &self.sources, out);
    }
}

/// `/uplinkz`: every uplink's status (durations in milliseconds, times in RFC 3339).
fn uplinkz(uplinks: Option<&Uplinks>, server_id: &str, now: &str) -> Value {
    let uplinks: Vec<Value> = uplinks
        .map(Uplinks::status)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["last_ack"] = json!(s.last_ack.map(system_rfc3339));
            v["oldest_age_ms"] = json!(s.oldest_age.map(|d| d.as_millis() as u64));
            v["hub_duplicate_window_ms"] = json!(s.hub_duplicate_window.as_millis() as u64);
            if let Some(o) = v.as_object_mut() {
                o.remove("oldest_age");
                o.remove("hub_duplicate_window");
            }
            v
        })
        .collect();
    json!({ "server_id": server_id, "now": now, "uplinks": uplinks })
}

/// `/sourcesz`: every gateway source (serial port, Modbus bus, GPIO group): its state and
/// since when, what it reads, its counters and its latest error.
fn sourcesz(registry: &Registry, server_id: &str, now: &str) -> Value {
    let list: Vec<Value> = registry
        .sources()
        .iter()
        .map(|s| {
            let counters: serde_json::Map<String, Value> = s
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            let last_error = s.last_error().map(|(at, message)| {
                json!({ "time": leaf_proto::time::rfc3339(at), "message": message })
            });
            json!({
                "kind": s.kind(),
                "name": s.name(),
                "target": s.target(),
                "state": s.state().as_str(),
                "since": leaf_proto::time::rfc3339(s.since_ns()),
                "counters": counters,
                "last_error": last_error,
            })
        })
        .collect();
    json!({ "server_id": server_id, "now": now, "sources": list })
}

fn uplink_name(u: &UplinkStatus) -> &str {
    &u.name
}

/// The uplinks' families, labelled by uplink name.
const UPLINK_FAMILIES: &[Family<UplinkStatus>] = &[
    (
        "leafd_uplink_backlog_messages",
        "gauge",
        "Messages waiting to be forwarded.",
        |u| u.backlog_msgs as f64,
    ),
    (
        "leafd_uplink_backlog_bytes",
        "gauge",
        "Bytes waiting to be forwarded.",
        |u| u.backlog_bytes as f64,
    ),
    (
        "leafd_uplink_oldest_seconds",
        "gauge",
        "Age of the oldest waiting message.",
        |u| u.oldest_age.map_or(0.0, |d| d.as_secs_f64()),
    ),
    (
        "leafd_uplink_rate_msgs_per_second",
        "gauge",
        "Messages acknowledged by the hub per second.",
        |u| u.rate_msgs_per_sec,
    ),
    (
        "leafd_uplink_acked_msgs_total",
        "counter",
        "Messages the hub acknowledged.",
        |u| u.acked_msgs as f64,
    ),
    (
        "leafd_uplink_dropped_total",
        "counter",
        "Messages the buffer limits dropped before forwarding.",
        |u| u.dropped as f64,
    ),
    (
        "leafd_uplink_rejected_total",
        "counter",
        "Messages the hub refused for good.",
        |u| u.rejected as f64,
    ),
    (
        "leafd_uplink_live",
        "gauge",
        "1 while the uplink is caught up.",
        |u| f64::from(u8::from(u.state == State::Live)),
    ),
];

/// The uplinks' and the sources' metric families.
fn metrics(uplinks: Option<&Uplinks>, registry: &Registry, out: &mut Metrics) {
    if let Some(uplinks) = uplinks {
        out.labelled_families(&uplinks.status(), "uplink", uplink_name, UPLINK_FAMILIES);
    }
    let gateways = registry.sources();
    if !gateways.is_empty() {
        let id =
            |s: &SourceStats| format!("kind=\"{}\",name=\"{}\"", label(s.kind()), label(s.name()));
        let up: Vec<(String, f64)> = gateways
            .iter()
            .map(|s| {
                let open = s.state() == SourceState::Open;
                (format!("{{{}}}", id(s)), f64::from(u8::from(open)))
            })
            .collect();
        out.family(
            "leafd_gateway_up",
            "gauge",
            "1 while the gateway source (serial port, Modbus bus, GPIO group) is open.",
            &up,
        );
        let samples: Vec<(String, f64)> = gateways
            .iter()
            .flat_map(|s| {
                s.counters().into_iter().map(move |(counter, v)| {
                    (format!("{{{},counter=\"{counter}\"}}", id(s)), v as f64)
                })
            })
            .collect();
        out.family(
            "leafd_gateway_events_total",
            "counter",
            "Gateway source counters: frames, messages, bytes, and bad input by kind.",
            &samples,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_without_uplinks_or_sources_are_empty_lists() {
        let pages = LeafPages {
            uplinks: None,
            sources: Registry::default(),
        };
        let up = pages.page("/uplinkz", "id", "now").unwrap();
        assert_eq!(up["uplinks"], json!([]));
        let sources = pages.page("/sourcesz", "id", "now").unwrap();
        assert_eq!(sources["sources"], json!([]));
        assert!(pages.page("/gatewayz", "id", "now").is_none());
        let mut m = Metrics::default();
        pages.metrics(&mut m);
    }
}
