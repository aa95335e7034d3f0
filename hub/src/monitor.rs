//! hubd's own monitoring, served by the shared monitoring port (`leaf_core::monitor`) through
//! [`HubPages`]:
//!
//! * `/routez`: the cluster's routes, in nats-server 2.9's shape (`Routez`: `server_id`,
//!   `now`, `num_routes`, `routes[]` with `rid`, `remote_id`, `did_solicit`, `is_configured`,
//!   `ip`, `port`, `start`, `last_activity`, `rtt`, `uptime`, `idle`, `pending_size`, `in_msgs`, `out_msgs`,
//!   `in_bytes`, `out_bytes`, `subscriptions`), plus `remote_name`;
//! * `/varz`: the `cluster` block (`name`, `addr`, `cluster_port`, `urls`), as nats-server's;
//! * `/metrics`: `hubd_routes` and, per route (labelled by the peer's server name),
//!   traffic, RTT and announced interest;
//! * `/fleetz` and the fleet's metric families: the fleet view (`crate::fleet::pages`);
//! * `/jsz`'s `meta_cluster` and `/healthz`'s readiness (no meta leader: 503) when the hub is a
//!   member of a JetStream cluster (`crate::jsc`), and `hubd_jsc_dropped_total` (Raft
//!   requests dropped over their bounds).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use leaf_core::monitor::{system_rfc3339, Family, Metrics, Pages};
use serde_json::{json, Value};

use crate::fleet::pages::FleetPages;
use crate::jsc::MetaGroup;
use crate::route::{Established, Routes};

/// hubd's pages: its cluster's routes, when it has a cluster, and the fleet view
/// (`crate::fleet::pages`).
pub struct HubPages {
    /// The routes (`None`: no `cluster` block).
    pub routes: Option<Arc<Routes>>,
    /// The fleet view's pages (`/fleetz`, its metrics).
    pub fleet: Option<FleetPages>,
    /// The JetStream cluster's meta group, once it runs (`None` inside: not a member).
    pub meta: Arc<std::sync::OnceLock<Arc<MetaGroup>>>,
}

impl Pages for HubPages {
    fn paths(&self) -> &'static [&'static str] {
        &["/routez", "/fleetz"]
    }

    fn page(&self, path: &str, server_id: &str, now: &str) -> Option<Value> {
        match path {
            "/routez" => Some(routez(self.routes.as_deref(), server_id, now)),
            _ => self
                .fleet
                .as_ref()
                .and_then(|f| f.page(path, server_id, now)),
        }
    }

    fn jsz(&self, jsz: &mut Value) {
        let Some(meta) = self.meta.get() else {
            return;
        };
        meta.annotate_jsz(jsz);
        if let Some(map) = jsz.as_object_mut() {
            map.insert("meta_cluster".into(), meta.meta_cluster());
        }
    }

    fn unready(&self) -> Option<String> {
        self.meta.get().and_then(|m| m.unready())
    }

    fn metrics(&self, out: &mut Metrics) {
        if let Some(fleet) = &self.fleet {
            fleet.metrics(out);
        }
        if let Some(meta) = self.meta.get() {
            out.single(
                "hubd_jsc_dropped_total",
                "counter",
                "Raft requests from other members dropped (over their bounds, or malformed).",
                meta.dropped(),
            );
        }
        let routes = self
            .routes
            .as_deref()
            .map(Routes::established)
            .unwrap_or_default();
        out.single(
            "hubd_routes",
            "gauge",
            "Routes established to other members of the cluster.",
            routes.len() as u64,
        );
        let items: Vec<Established> = routes.into_iter().map(|(_, r)| r).collect();
        out.labelled_families(&items, "peer", |r| r.name.as_str(), ROUTE_FAMILIES);
    }

    fn varz(&self, varz: &mut Value) {
        let Some(routes) = &self.routes else {
            return;
        };
        let urls: Vec<String> = routes.settings.routes.iter().map(|u| u.addr()).collect();
        if let Some(map) = varz.as_object_mut() {
            map.insert(
                "cluster".into(),
                json!({
                    "name": routes.cluster_name,
                    "addr": routes.listen_addr.ip().to_string(),
                    "cluster_port": routes.listen_addr.port(),
                    "auth_timeout": 0,
                    "urls": urls,
                }),
            );
            map.insert("routes".into(), json!(routes.established().len()));
        }
    }
}

/// The routes' metric families, labelled by the peer's server name.
const ROUTE_FAMILIES: &[Family<Established>] = &[
    (
        "hubd_route_in_msgs_total",
        "counter",
        "Messages received over the route.",
        |r| r.status.stats.msgs_in.load(Ordering::Relaxed) as f64,
    ),
    (
        "hubd_route_out_msgs_total",
        "counter",
        "Messages sent over the route.",
        |r| r.status.stats.msgs_out.load(Ordering::Relaxed) as f64,
    ),
    (
        "hubd_route_in_bytes_total",
        "counter",
        "Message bytes received over the route.",
        |r| r.status.stats.bytes_in.load(Ordering::Relaxed) as f64,
    ),
    (
        "hubd_route_out_bytes_total",
        "counter",
        "Message bytes sent over the route.",
        |r| r.status.stats.bytes_out.load(Ordering::Relaxed) as f64,
    ),
    (
        "hubd_route_rtt_seconds",
        "gauge",
        "Round trip of the last PING on the route.",
        |r| r.status.rtt_ns.load(Ordering::Relaxed) as f64 / 1e9,
    ),
    (
        "hubd_route_subscriptions",
        "gauge",
        "Interest the peer announced over the route.",
        |r| r.status.subs.load(Ordering::Relaxed) as f64,
    ),
];

/// `/routez`.
fn routez(routes: Option<&Routes>, server_id: &str, now: &str) -> Value {
    let list: Vec<Value> = routes
        .map(Routes::established)
        .unwrap_or_default()
        .into_iter()
        .map(|(peer_id, r)| route_info(&peer_id, &r))
        .collect();
    json!({
        "server_id": server_id,
        "now": now,
        "num_routes": list.len(),
        "routes": list,
    })
}

fn route_info(peer_id: &str, r: &Established) -> Value {
    let s = &r.status;
    let rtt = s.rtt_ns.load(Ordering::Relaxed);
    let uptime = r.since.elapsed().unwrap_or_default();
    let last = s.last_activity_ns.load(Ordering::Relaxed);
    let now = u64::try_from(leaf_proto::time::now_ns()).unwrap_or(0);
    let idle = Duration::from_nanos(now.saturating_sub(last));
    json!({
        "rid": r.handle.id,
        "remote_id": peer_id,
        "remote_name": r.name,
        "did_solicit": r.solicited,
        "is_configured": r.configured,
        "ip": r.addr.ip().to_string(),
        "port": r.addr.port(),
        "start": system_rfc3339(r.since),
        "last_activity": leaf_proto::time::rfc3339(i64::try_from(last).unwrap_or(0)),
        "idle": format!("{}s", idle.as_secs()),
        "rtt": (rtt > 0).then(|| go_duration(Duration::from_nanos(rtt))),
        "uptime": format!("{}s", uptime.as_secs()),
        "pending_size": r.handle.out.pending(),
        "in_msgs": s.stats.msgs_in.load(Ordering::Relaxed),
        "out_msgs": s.stats.msgs_out.load(Ordering::Relaxed),
        "in_bytes": s.stats.bytes_in.load(Ordering::Relaxed),
        "out_bytes": s.stats.bytes_out.load(Ordering::Relaxed),
        "subscriptions": s.subs.load(Ordering::Relaxed),
    })
}

/// A duration as Go prints one (`412µs`, `1.234ms`, `2.5s`), as nats-server's `rtt`.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(ns as f64 / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(ns as f64 / 1e6))
    } else {
        format!("{}s", trim(ns as f64 / 1e9))
    }
}

/// Up to three decimals, trailing zeros removed.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_nanos(500)), "500ns");
        assert_eq!(go_duration(Duration::from_micros(412)), "412µs");
        assert_eq!(go_duration(Duration::from_micros(1234)), "1.234ms");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
    }
}
