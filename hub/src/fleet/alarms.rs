//! The alarm rules of the fleet view: what `/fleetz` and `hubd fleet` flag about a gateway.
//! Pure functions of a [`Gateway`] and the time, documented in `hub/FLEET.md`:
//!
//! * offline: its leaf link is down: `offline for 3h02m with 2.1 GB buffered` (the
//!   backlog of its last record; without one, `offline for 3h02m`);
//! * silent: its link is up but no record came for [`SILENT_INTERVALS`] of its intervals
//!   (at least [`MIN_SILENCE`]): `no status record for 2m10s`;
//! * store: its JetStream store is at least [`STORE_PERCENT`] full: `store 92 % full`;
//! * an uplink `stalled` (the hub does not store its messages): `uplink sensors stalled:
//!   <its last problem>`;
//! * an uplink whose oldest waiting message is older than [`OLDEST_AGE`]: `uplink sensors:
//!   oldest message waiting for 1h05m`;
//! * a gateway source that is not open (`waiting`, `stopped`): `source serial0 (serial)
//!   waiting: <its latest error>`.

use std::time::{Duration, SystemTime};

use leaf_core::status_page::{human_bytes, human_duration};

use super::table::Gateway;

/// Store usage, in percent of its limit, from which a gateway is flagged.
pub const STORE_PERCENT: f64 = 90.0;
/// How many of its intervals a connected gateway may stay silent.
pub const SILENT_INTERVALS: u32 = 3;
/// The shortest silence flagged.
pub const MIN_SILENCE: Duration = Duration::from_secs(30);
/// Age of an uplink's oldest waiting message from which it is flagged.
pub const OLDEST_AGE: Duration = Duration::from_secs(3600);

/// Seconds from `from` to `to` (0 when `to` is earlier).
fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// The alarms of `g` at `now`, most important first.
pub fn alarms(g: &Gateway, now: SystemTime) -> Vec<String> {
    let mut out = Vec::new();
    let r = &g.record;
    if g.connected {
        let silence = (Duration::from_secs(r.interval_secs) * SILENT_INTERVALS).max(MIN_SILENCE);
        let quiet = secs_between(g.received, now);
        if quiet >= silence.as_secs_f64() {
            out.push(format!("no status record for {}", human_duration(quiet)));
        }
    } else {
        let offline = human_duration(secs_between(g.last_seen, now));
        let bytes = r.backlog_bytes();
        if bytes > 0 || r.backlog_msgs() > 0 {
            out.push(format!(
                "offline for {offline} with {} buffered",
                human_bytes(bytes)
            ));
        } else {
            out.push(format!("offline for {offline}"));
        }
    }
    if let Some(p) = r.store.as_ref().and_then(|s| s.percent) {
        if p >= STORE_PERCENT {
            out.push(format!("store {} % full", p.floor() as u64));
        }
    }
    for u in &r.uplinks {
        if u.state == "stalled" {
            match &u.last_error {
                Some(e) => out.push(format!("uplink {} stalled: {e}", u.name)),
                None => out.push(format!("uplink {} stalled", u.name)),
            }
        }
        if let Some(ms) = u.oldest_age_ms {
            let age = Duration::from_millis(ms);
            if age >= OLDEST_AGE {
                out.push(format!(
                    "uplink {}: oldest message waiting for {}",
                    u.name,
                    human_duration(age.as_secs_f64())
                ));
            }
        }
    }
    for s in &r.sources {
        if s.state != "open" && s.state != "starting" {
            let mut text = format!("source {} ({}) {}", s.name, s.kind, s.state);
            if let Some(e) = &s.last_error {
                text.push_str(&format!(": {e}"));
            }
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::table::tests::record;
    use leaf_core::fleet::{SourceRecord, StoreRecord};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn gateway(backlog: u64) -> Gateway {
        Gateway {
            account: "$G".into(),
            name: "gw1".into(),
            record: record("gw1", backlog),
            size: 1,
            received: at(0),
            link: 1,
            connected: true,
            last_seen: at(0),
        }
    }

    #[test]
    fn a_healthy_gateway_has_none() {
        assert!(alarms(&gateway(0), at(5)).is_empty());
        assert!(alarms(&gateway(1000), at(29)).is_empty());
    }

    #[test]
    fn offline_with_what_is_buffered() {
        let mut g = gateway(21_000_000);
        g.connected = false;
        assert_eq!(
            alarms(&g, at(3 * 3600 + 120)),
            ["offline for 3h02m with 2.1 GB buffered"]
        );
        let mut g = gateway(0);
        g.connected = false;
        assert_eq!(alarms(&g, at(65)), ["offline for 1m05s"]);
    }

    #[test]
    fn silence_store_uplinks_and_sources() {
        let mut g = gateway(0);
        // Interval 10 s: silent from 30 s on; interval 60 s: from 180 s on.
        assert_eq!(alarms(&g, at(30)), ["no status record for 30s"]);
        g.record.interval_secs = 60;
        assert!(alarms(&g, at(179)).is_empty());
        assert_eq!(alarms(&g, at(180)), ["no status record for 3m00s"]);
        let mut g = gateway(0);
        g.record.store = Some(StoreRecord {
            used_bytes: 92,
            limit_bytes: Some(100),
            percent: Some(92.4),
        });
        g.record.uplinks[0].state = "stalled".into();
        g.record.uplinks[0].last_error = Some("no stream".into());
        g.record.uplinks[0].oldest_age_ms = Some(3_900_000);
        g.record.sources = vec![
            SourceRecord {
                name: "serial0".into(),
                kind: "serial".into(),
                state: "waiting".into(),
                last_error: Some("unplugged".into()),
                last_error_time: None,
            },
            SourceRecord {
                name: "gpio".into(),
                kind: "gpio".into(),
                state: "open".into(),
                last_error: None,
                last_error_time: None,
            },
        ];
        assert_eq!(
            alarms(&g, at(1)),
            [
                "store 92 % full",
                "uplink sensors stalled: no stream",
                "uplink sensors: oldest message waiting for 1h05m",
                "source serial0 (serial) waiting: unplugged",
            ]
        );
        g.record.store = Some(StoreRecord {
            used_bytes: 89,
            limit_bytes: Some(100),
            percent: Some(89.9),
        });
        assert!(!alarms(&g, at(1)).iter().any(|a| a.starts_with("store")));
    }
}
