//! `leafd status`: the uplinks of a running leafd, read from its monitoring port
//! (`/uplinkz`), with a progress bar and an ETA per uplink. In a terminal it refreshes every
//! second until interrupted (or until every backlog is forwarded); otherwise it prints once.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use leaf_core::status_page::{human_bytes, human_duration, PageError};
use serde_json::Value;

/// Why the status could not be shown.
pub type StatusError = PageError;

/// Fetches `/uplinkz` from `addr` (`host:port`).
pub fn fetch(addr: &str) -> Result<Value, StatusError> {
    leaf_core::status_page::fetch("leafd", addr, "/uplinkz")
}

/// One line (plus a detail line) per uplink.
pub fn render(page: &Value, bar_width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let uplinks = page["uplinks"].as_array().cloned().unwrap_or_default();
    if uplinks.is_empty() {
        out.push("no uplinks configured".to_string());
    }
    for u in &uplinks {
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        let backlog = n("backlog_msgs");
        let done = n("acked_msgs");
        let rate = u["rate_msgs_per_sec"].as_f64().unwrap_or(0.0);
        let total = done + backlog;
        let fraction = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let filled = ((fraction * bar_width as f64).round() as usize).min(bar_width);
        let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(bar_width - filled));
        let eta = if backlog == 0 {
            "done".to_string()
        } else if rate >= 1.0 {
            format!("ETA {}", human_duration(backlog as f64 / rate))
        } else {
            "ETA -".to_string()
        };
        let oldest = u["oldest_age_ms"]
            .as_u64()
            .map(|ms| format!(", oldest {}", human_duration(ms as f64 / 1000.0)))
            .unwrap_or_default();
        out.push(format!(
            "{} -> {}  {:<10} {} {:>3}%  backlog {} msgs ({}{oldest})  {} msg/s  {eta}",
            u["name"].as_str().unwrap_or("?"),
            u["hub_stream"].as_str().unwrap_or("?"),
            u["state"].as_str().unwrap_or("?"),
            bar,
            (fraction * 100.0).floor() as u64,
            backlog,
            human_bytes(n("backlog_bytes")),
            rate.round() as u64,
        ));
        let mut detail = format!(
            "    forwarded up to local seq {} (hub seq {}), dropped {}, refused by hub {}, resend rounds {}",
            n("acked"),
            n("last_hub_seq"),
            n("dropped"),
            n("rejected"),
            n("resent_rounds"),
        );
        for (key, what) in [
            ("unproven_msgs", "acknowledged, not yet proven on the hub"),
            ("denied", "kept off the link by deny_exports"),
            (
                "unproven_accepted",
                "accepted unproven (removed by the hub first)",
            ),
            (
                "doubtful_answers",
                "answers the hub cannot have sent, ignored",
            ),
            ("answers_dropped", "answers dropped (queue full)"),
        ] {
            if n(key) > 0 {
                detail.push_str(&format!(", {what} {}", n(key)));
            }
        }
        if let Some(e) = u["last_error"].as_str() {
            detail.push_str(&format!("; last problem: {e}"));
        }
        out.push(detail);
    }
    out
}

/// Whether every uplink has forwarded everything.
fn all_done(page: &Value) -> bool {
    page["uplinks"]
        .as_array()
        .is_some_and(|u| u.iter().all(|u| u["backlog_msgs"].as_u64() == Some(0)))
}

/// Runs `leafd status`: prints once, or refreshes every second in a terminal (unless
/// `once`). Returns the process exit code.
pub fn run(addr: &str, once: bool) -> Result<(), StatusError> {
    let tty = std::io::stdout().is_terminal();
    let mut printed = 0;
    loop {
        let page = fetch(addr)?;
        let lines = render(&page, 30);
        let mut stdout = std::io::stdout().lock();
        if printed > 0 {
            // Back to the first line of the previous frame, and clear below.
            let _ = write!(stdout, "\x1b[{printed}A\x1b[J");
        }
        for l in &lines {
            let _ = writeln!(stdout, "{l}");
        }
        let _ = stdout.flush();
        printed = lines.len();
        if once || !tty || all_done(&page) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_progress_and_eta() {
        let page = json!({"uplinks": [{
            "name": "sensors", "hub_stream": "SENSORS", "state": "forwarding",
            "backlog_msgs": 750, "backlog_bytes": 96000, "acked_msgs": 250,
            "rate_msgs_per_sec": 50.0, "acked": 250, "last_hub_seq": 250,
            "dropped": 0, "rejected": 0, "resent_rounds": 0, "oldest_age_ms": 65000
        }]});
        let lines = render(&page, 20);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("[#####...............]"), "{}", lines[0]);
        assert!(lines[0].contains(" 25%"), "{}", lines[0]);
        assert!(lines[0].contains("ETA 15s"), "{}", lines[0]);
        assert!(lines[0].contains("96.0 KB, oldest 1m05s"), "{}", lines[0]);
        assert!(!lines[1].contains("doubtful"), "{}", lines[1]);
        assert!(!all_done(&page));
        let mut forged = page.clone();
        forged["uplinks"][0]["doubtful_answers"] = json!(3);
        forged["uplinks"][0]["unproven_msgs"] = json!(128);
        let detail = &render(&forged, 20)[1];
        assert!(
            detail.contains("answers the hub cannot have sent, ignored 3"),
            "{detail}"
        );
        assert!(detail.contains("not yet proven on the hub 128"), "{detail}");
        let done = json!({"uplinks": [{"name": "s", "backlog_msgs": 0, "acked_msgs": 9}]});
        assert!(render(&done, 10)[0].contains("100%"));
        assert!(all_done(&done));
        assert_eq!(
            render(&json!({"uplinks": []}), 10),
            vec!["no uplinks configured"]
        );
    }
}
