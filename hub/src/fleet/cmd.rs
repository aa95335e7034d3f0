//! `hubd fleet`: every gateway of a running hubd, read from its monitoring port
//! (`/fleetz`), one line each (state, backlog, rate, ETA) and a line per alarm, in the style
//! of `leafd status`; `--json` prints the page itself.

use leaf_core::status_page::{fetch, human_bytes, human_duration, PageError};
use serde_json::Value;

/// Fetches `/fleetz` from `addr` and prints it (as a table, or as JSON with `json`).
pub fn run(addr: &str, json: bool) -> Result<(), PageError> {
    let page = fetch("hubd", addr, "/fleetz")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&page).unwrap_or_default()
        );
    } else {
        for line in render(&page) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The table: a summary line, then per gateway one line and one per alarm.
pub fn render(page: &Value) -> Vec<String> {
    let gateways = page["gateways"].as_array().cloned().unwrap_or_default();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = vec![format!(
        "{} gateways, {} connected",
        n(page, "total"),
        n(page, "connected")
    )];
    let ignored: u64 = page["ignored"]
        .as_object()
        .map(|o| o.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    if ignored > 0 {
        let detail: Vec<String> = page["ignored"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect()
            })
            .unwrap_or_default();
        out.push(format!(
            "ignored status records: {ignored} ({})",
            detail.join(", ")
        ));
    }
    let evicted = n(page, "evicted");
    if evicted > 0 {
        out.push(format!("gateways evicted (table full): {evicted}"));
    }
    for g in &gateways {
        let state = match g["state"].as_str().unwrap_or("?") {
            "connected" => "connected".to_owned(),
            other => format!(
                "{other} since {}",
                g["offline_since"].as_str().unwrap_or("?")
            ),
        };
        let rate = g["rate_msgs_per_sec"].as_f64().unwrap_or(0.0);
        let backlog = n(g, "backlog_msgs");
        let eta = match g["eta_secs"].as_f64() {
            _ if backlog == 0 => "done".to_owned(),
            Some(secs) => format!("ETA {}", human_duration(secs)),
            None => "ETA -".to_owned(),
        };
        let store = g["store_percent"]
            .as_f64()
            .map(|p| format!("  store {} %", p.floor() as u64))
            .unwrap_or_default();
        out.push(format!(
            "{} ({})  {:<40} backlog {} msgs ({})  {} msg/s  {eta}{store}",
            g["server_name"].as_str().unwrap_or("?"),
            g["account"].as_str().unwrap_or("?"),
            state,
            backlog,
            human_bytes(n(g, "backlog_bytes")),
            rate.round() as u64,
        ));
        for alarm in g["alarms"].as_array().into_iter().flatten() {
            out.push(format!("    ALARM {}", alarm.as_str().unwrap_or("?")));
        }
    }
    if gateways.is_empty() {
        out.push("no gateway has sent a status record".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_each_gateway_with_its_alarms() {
        let page = json!({
            "total": 2, "connected": 1, "evicted": 0,
            "ignored": {"invalid": 2, "not_a_leaf": 1, "format": 0},
            "gateways": [
                {"server_name": "gw1", "account": "$G", "state": "connected",
                 "backlog_msgs": 750, "backlog_bytes": 96000, "rate_msgs_per_sec": 50.0,
                 "eta_secs": 15.0, "store_percent": 92.5,
                 "alarms": ["store 92 % full"]},
                {"server_name": "gw3", "account": "$G", "state": "offline",
                 "offline_since": "2026-01-01T00:00:00Z",
                 "backlog_msgs": 21, "backlog_bytes": 2100000000, "rate_msgs_per_sec": 0.0,
                 "eta_secs": null,
                 "alarms": ["offline for 3h02m with 2.1 GB buffered"]}
            ]
        });
        let lines = render(&page);
        assert_eq!(lines[0], "2 gateways, 1 connected");
        assert_eq!(
            lines[1],
            "ignored status records: 3 (invalid 2, not_a_leaf 1)"
        );
        assert!(lines[2].starts_with("gw1 ($G)  connected "), "{}", lines[2]);
        assert!(
            lines[2].contains("backlog 750 msgs (96.0 KB)  50 msg/s  ETA 15s  store 92 %"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "    ALARM store 92 % full");
        assert!(
            lines[4].contains("offline since 2026-01-01T00:00:00Z"),
            "{}",
            lines[4]
        );
        assert!(
            lines[4].contains("(2.1 GB)  0 msg/s  ETA -"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "    ALARM offline for 3h02m with 2.1 GB buffered");
        let empty = render(&json!({"total": 0, "connected": 0, "gateways": []}));
        assert_eq!(
            empty,
            [
                "0 gateways, 0 connected",
                "no gateway has sent a status record"
            ]
        );
    }
}
