//! What the command-line views of a running server share (`leafd status`, `hubd fleet`):
//! fetching one JSON page from its monitoring port ([`fetch`]) and the human units their
//! tables print ([`human_bytes`], [`human_duration`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// How long the monitoring port gets to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a `/fleetz` of many gateways is a few MB).
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The monitoring port did not answer.
    #[error("cannot reach {server}'s monitoring port at {addr}: {source} (is {server} running with http_port / -m set?)")]
    Connect {
        /// The server asked (`leafd`, `hubd`).
        server: &'static str,
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The answer was not the expected page.
    #[error("unexpected answer from {addr}: {reason}")]
    BadAnswer {
        /// The address asked.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

/// `host:port` from a `-m` argument: as given, or just a port on 127.0.0.1.
pub fn monitor_addr(monitor: &str) -> String {
    if monitor.contains(':') {
        monitor.to_owned()
    } else {
        format!("127.0.0.1:{monitor}")
    }
}

/// Fetches the JSON page `path` (`/uplinkz`) of `server` from `addr` (`host:port`).
pub fn fetch(server: &'static str, addr: &str, path: &str) -> Result<Value, PageError> {
    let connect_err = |source| PageError::Connect {
        server,
        addr: addr.to_string(),
        source,
    };
    let bad = |reason: String| PageError::BadAnswer {
        addr: addr.to_string(),
        reason,
    };
    let mut stream = TcpStream::connect(addr).map_err(connect_err)?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(connect_err)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect_err)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(connect_err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(bad(head.lines().next().unwrap_or_default().to_string()));
    }
    serde_json::from_str(body).map_err(|e| bad(format!("invalid JSON: {e}")))
}

/// `3700.0` seconds as `1h01m` (`59s`, `1m05s`; negative as `0s`).
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Bytes in decimal units: `999 B`, `1.5 MB`, `2.1 GB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS.get(unit).copied().unwrap_or("B"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_duration(3700.0), "1h01m");
        assert_eq!(human_duration(65.0), "1m05s");
        assert_eq!(human_duration(-3.0), "0s");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(2_100_000_000), "2.1 GB");
        assert_eq!(monitor_addr("8222"), "127.0.0.1:8222");
        assert_eq!(monitor_addr("h:1"), "h:1");
    }

    #[test]
    fn an_unreachable_port_names_the_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let err = fetch("hubd", &format!("127.0.0.1:{port}"), "/fleetz").unwrap_err();
        assert!(err.to_string().contains("hubd's monitoring port"), "{err}");
    }
}
