//! The fleet status record: the small JSON document every leafd with a leafnode remote
//! publishes over its link (`leaf`'s `fleet` module) and hubd keeps, one per gateway, for its
//! fleet view (`hub`'s `fleet` module: `/fleetz`, `/metrics`, `hubd fleet`). It is plain
//! NATS: any subscriber on the hub (nats-server's too) can read it. The format is documented
//! for other tools in `hub/FLEET.md`; keep the two in step.
//!
//! * Subject: [`SUBJECT_PREFIX`]`.<server name>` (`$LEAF.STATUS.gw1`), in the account the
//!   leafnode remote is bound to on the leaf. A leaf sends it only while the hub has
//!   interest (a subscriber, or hubd's internal subscription in every account).
//! * Body: a JSON object, [`StatusRecord`], at most [`MAX_RECORD_BYTES`]; `format` is
//!   [`FORMAT`]. Lists are capped ([`MAX_UPLINKS`], [`MAX_SOURCES`]; `uplinks_total` and
//!   `sources_total` give the real counts) and texts cut to [`MAX_TEXT`] characters.
//!
//! [`parse`] is what a consumer runs on a body: it refuses, with a [`RecordError`], whatever
//! is not a well-formed record of this format (a hostile publisher can send anything).

use serde::{Deserialize, Serialize};

/// The subject prefix of status records: a record of server `gw1` goes to `$LEAF.STATUS.gw1`.
pub const SUBJECT_PREFIX: &str = "$LEAF.STATUS";
/// The version of the record format ([`StatusRecord::format`]).
pub const FORMAT: u32 = 1;
/// The largest body a consumer accepts (a producer stays below it by the caps below).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most uplinks listed in one record.
pub const MAX_UPLINKS: usize = 16;
/// Most gateway sources listed in one record.
pub const MAX_SOURCES: usize = 32;
/// Longest text (names, states, errors) in characters; longer ones are cut.
pub const MAX_TEXT: usize = 128;

/// The subject the record of server `server_name` is published on.
pub fn subject(server_name: &str) -> String {
    format!("{SUBJECT_PREFIX}.{server_name}")
}

/// The status of one leafd, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The record format, [`FORMAT`].
    pub format: u32,
    /// The server's name (`server_name`, else its id): the name its leafnode link announces.
    pub server_name: String,
    /// The server's id (changes at every start).
    pub server_id: String,
    /// leafd's version.
    pub version: String,
    /// When the server started (RFC 3339).
    pub start: String,
    /// Seconds since the start.
    pub uptime_secs: u64,
    /// When the record was made (RFC 3339, the leaf's clock).
    pub sent: String,
    /// Seconds between two records (0: only at link up and shutdown).
    #[serde(default)]
    pub interval_secs: u64,
    /// The last record before a clean shutdown.
    #[serde(default)]
    pub stopping: bool,
    /// The uplinks, at most [`MAX_UPLINKS`].
    #[serde(default)]
    pub uplinks: Vec<UplinkRecord>,
    /// How many uplinks the server has (more than listed when the list was cut).
    #[serde(default)]
    pub uplinks_total: u64,
    /// The gateway sources, at most [`MAX_SOURCES`].
    #[serde(default)]
    pub sources: Vec<SourceRecord>,
    /// How many sources the server has (more than listed when the list was cut).
    #[serde(default)]
    pub sources_total: u64,
    /// The JetStream store's usage, when JetStream is on.
    #[serde(default)]
    pub store: Option<StoreRecord>,
}

/// One store-and-forward uplink in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkRecord {
    /// The uplink's name.
    pub name: String,
    /// `offline`, `syncing`, `forwarding`, `live` or `stalled`.
    pub state: String,
    /// The stream on the hub.
    #[serde(default)]
    pub hub_stream: String,
    /// Messages waiting to be forwarded.
    pub backlog_msgs: u64,
    /// Bytes waiting to be forwarded.
    pub backlog_bytes: u64,
    /// Age of the oldest waiting message, in milliseconds.
    #[serde(default)]
    pub oldest_age_ms: Option<u64>,
    /// Messages the hub acknowledged per second (smoothed).
    #[serde(default)]
    pub rate_msgs_per_sec: f64,
    /// When the hub last acknowledged a message (RFC 3339).
    #[serde(default)]
    pub last_ack: Option<String>,
    /// The uplink's last problem.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One gateway source (serial port, Modbus bus, GPIO group) in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name.
    pub name: String,
    /// `serial`, `modbus` or `gpio`.
    pub kind: String,
    /// `open`, `opening`, `closed`, ...
    pub state: String,
    /// Its latest error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the latest error happened (RFC 3339).
    #[serde(default)]
    pub last_error_time: Option<String>,
}

/// The JetStream store's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRecord {
    /// Bytes the store file takes.
    pub used_bytes: u64,
    /// Its limit (`jetstream.max_file_store`), if any.
    #[serde(default)]
    pub limit_bytes: Option<u64>,
    /// `used_bytes` in percent of `limit_bytes`.
    #[serde(default)]
    pub percent: Option<f64>,
}

/// Why a body is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes, more than {max}", max = MAX_RECORD_BYTES)]
    TooLarge(usize),
    /// Not JSON, or not a record's shape.
    #[error("not a status record: {0}")]
    Invalid(String),
    /// Another format version.
    #[error("record format {0}, expected {expected}", expected = FORMAT)]
    Format(u64),
    /// A field out of its bounds (an empty name, a list over its cap, a negative rate...).
    #[error("record field {0} out of bounds")]
    Bounds(&'static str),
}

impl RecordError {
    /// A short name of the reason (a label in metrics, a key in `/fleetz`).
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::TooLarge(_) => "too_large",
            RecordError::Invalid(_) | RecordError::Bounds(_) => "invalid",
            RecordError::Format(_) => "format",
        }
    }
}

/// Parses and checks a record body: size, JSON shape, format version, bounds.
pub fn parse(body: &[u8]) -> Result<StatusRecord, RecordError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge(body.len()));
    }
    // The version first, so that a record of a later format is reported as such even when
    // its shape changed.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RecordError::Invalid(e.to_string()))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => return Err(RecordError::Format(f)),
        None => return Err(RecordError::Invalid("no `format` number".into())),
    }
    let record: StatusRecord =
        serde_json::from_value(value).map_err(|e| RecordError::Invalid(e.to_string()))?;
    record.check()?;
    Ok(record)
}

/// `text` cut to [`MAX_TEXT`] characters.
pub fn cut(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

fn bounded_text(text: &str) -> bool {
    text.chars().count() <= MAX_TEXT
}

impl StatusRecord {
    /// Checks the bounds a consumer relies on.
    pub fn check(&self) -> Result<(), RecordError> {
        let name = &self.server_name;
        if name.is_empty()
            || !bounded_text(name)
            || !leaf_proto::subject::is_valid_literal_subject(subject(name).as_bytes())
        {
            return Err(RecordError::Bounds("server_name"));
        }
        let texts = [&self.server_id, &self.version, &self.start, &self.sent];
        if !texts.iter().all(|t| bounded_text(t)) {
            return Err(RecordError::Bounds("server_id/version/start/sent"));
        }
        if self.uplinks.len() > MAX_UPLINKS || self.uplinks_total < self.uplinks.len() as u64 {
            return Err(RecordError::Bounds("uplinks"));
        }
        if self.sources.len() > MAX_SOURCES || self.sources_total < self.sources.len() as u64 {
            return Err(RecordError::Bounds("sources"));
        }
        for u in &self.uplinks {
            let texts = [&u.name, &u.state, &u.hub_stream];
            let opt = [&u.last_ack, &u.last_error];
            if !texts.iter().all(|t| bounded_text(t))
                || !opt.iter().all(|t| t.as_deref().is_none_or(bounded_text))
            {
                return Err(RecordError::Bounds("uplinks[].text"));
            }
            if !u.rate_msgs_per_sec.is_finite() || u.rate_msgs_per_sec < 0.0 {
                return Err(RecordError::Bounds("uplinks[].rate_msgs_per_sec"));
            }
        }
        for s in &self.sources {
            let texts = [&s.name, &s.kind, &s.state];
            let opt = [&s.last_error, &s.last_error_time];
            if !texts.iter().all(|t| bounded_text(t))
                || !opt.iter().all(|t| t.as_deref().is_none_or(bounded_text))
            {
                return Err(RecordError::Bounds("sources[].text"));
            }
        }
        if let Some(p) = self.store.as_ref().and_then(|s| s.percent) {
            if !p.is_finite() || p < 0.0 {
                return Err(RecordError::Bounds("store.percent"));
            }
        }
        Ok(())
    }

    /// Whether a list was cut to its cap.
    pub fn truncated(&self) -> bool {
        self.uplinks_total > self.uplinks.len() as u64
            || self.sources_total > self.sources.len() as u64
    }

    /// Messages waiting on every uplink together.
    pub fn backlog_msgs(&self) -> u64 {
        self.uplinks.iter().map(|u| u.backlog_msgs).sum()
    }

    /// Bytes waiting on every uplink together.
    pub fn backlog_bytes(&self) -> u64 {
        self.uplinks.iter().map(|u| u.backlog_bytes).sum()
    }

    /// Messages forwarded per second on every uplink together.
    pub fn rate_msgs_per_sec(&self) -> f64 {
        self.uplinks.iter().map(|u| u.rate_msgs_per_sec).sum()
    }

    /// The body to publish: the record as JSON, its lists cut to their caps first (the
    /// totals keep the real counts) and its texts to [`MAX_TEXT`].
    pub fn to_body(mut self) -> Vec<u8> {
        self.uplinks_total = self.uplinks_total.max(self.uplinks.len() as u64);
        self.sources_total = self.sources_total.max(self.sources.len() as u64);
        self.uplinks.truncate(MAX_UPLINKS);
        self.sources.truncate(MAX_SOURCES);
        for t in [
            &mut self.server_name,
            &mut self.server_id,
            &mut self.version,
            &mut self.start,
            &mut self.sent,
        ] {
            *t = cut(t);
        }
        for u in &mut self.uplinks {
            for t in [&mut u.name, &mut u.state, &mut u.hub_stream] {
                *t = cut(t);
            }
            for t in [&mut u.last_ack, &mut u.last_error].into_iter().flatten() {
                *t = cut(t);
            }
            if !u.rate_msgs_per_sec.is_finite() || u.rate_msgs_per_sec < 0.0 {
                u.rate_msgs_per_sec = 0.0;
            }
        }
        for s in &mut self.sources {
            for t in [&mut s.name, &mut s.kind, &mut s.state] {
                *t = cut(t);
            }
            for t in [&mut s.last_error, &mut s.last_error_time]
                .into_iter()
                .flatten()
            {
                *t = cut(t);
            }
        }
        if let Some(store) = &mut self.store {
            store.percent = store.percent.filter(|p| p.is_finite() && *p >= 0.0);
        }
        serde_json::to_vec(&self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StatusRecord {
        StatusRecord {
            format: FORMAT,
            server_name: "gw1".into(),
            server_id: "NABC".into(),
            version: "0.1.0".into(),
            start: "2026-01-01T00:00:00Z".into(),
            uptime_secs: 5,
            sent: "2026-01-01T00:00:05Z".into(),
            interval_secs: 10,
            stopping: false,
            uplinks: vec![UplinkRecord {
                name: "sensors".into(),
                state: "live".into(),
                hub_stream: "SENSORS".into(),
                backlog_msgs: 3,
                backlog_bytes: 300,
                oldest_age_ms: Some(10),
                rate_msgs_per_sec: 1.5,
                last_ack: None,
                last_error: None,
            }],
            uplinks_total: 1,
            sources: Vec::new(),
            sources_total: 0,
            store: Some(StoreRecord {
                used_bytes: 10,
                limit_bytes: Some(100),
                percent: Some(10.0),
            }),
        }
    }

    #[test]
    fn a_published_record_parses_back() {
        let r = record();
        let parsed = parse(&r.clone().to_body()).unwrap();
        assert_eq!(parsed, r);
        assert_eq!(parsed.backlog_msgs(), 3);
        assert_eq!(parsed.backlog_bytes(), 300);
        assert!(!parsed.truncated());
        assert_eq!(subject("gw1"), "$LEAF.STATUS.gw1");
    }

    #[test]
    fn long_lists_and_texts_are_cut_and_say_so() {
        let mut r = record();
        let u = r.uplinks[0].clone();
        r.uplinks = vec![u; MAX_UPLINKS + 5];
        r.uplinks[0].last_error = Some("x".repeat(10 * MAX_TEXT));
        r.sources = (0..MAX_SOURCES + 1)
            .map(|i| SourceRecord {
                name: format!("s{i}"),
                kind: "serial".into(),
                state: "open".into(),
                last_error: Some("é".repeat(MAX_TEXT + 1)),
                last_error_time: None,
            })
            .collect();
        r.uplinks[1].rate_msgs_per_sec = f64::NAN;
        let body = r.to_body();
        assert!(body.len() <= MAX_RECORD_BYTES);
        let parsed = parse(&body).unwrap();
        assert_eq!(parsed.uplinks.len(), MAX_UPLINKS);
        assert_eq!(parsed.uplinks_total, (MAX_UPLINKS + 5) as u64);
        assert_eq!(parsed.sources.len(), MAX_SOURCES);
        assert_eq!(parsed.sources_total, (MAX_SOURCES + 1) as u64);
        assert!(parsed.truncated());
        let err = parsed.uplinks[0].last_error.as_deref().unwrap();
        assert_eq!(err.chars().count(), MAX_TEXT);
        assert_eq!(parsed.uplinks[1].rate_msgs_per_sec, 0.0);
    }

    #[test]
    fn bad_bodies_are_refused_with_their_reason() {
        let err = parse(b"not json").unwrap_err();
        assert_eq!(err.reason(), "invalid");
        let err = parse(&vec![b' '; MAX_RECORD_BYTES + 1]).unwrap_err();
        assert_eq!(err, RecordError::TooLarge(MAX_RECORD_BYTES + 1));
        assert_eq!(err.reason(), "too_large");
        let mut v = serde_json::to_value(record()).unwrap();
        v["format"] = serde_json::json!(2);
        let err = parse(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, RecordError::Format(2));
        assert_eq!(err.reason(), "format");
        assert_eq!(parse(b"{}").unwrap_err().reason(), "invalid");
        assert_eq!(parse(b"[1]").unwrap_err().reason(), "invalid");
        let mut v = serde_json::to_value(record()).unwrap();
        v["uplinks"][0]["backlog_msgs"] = serde_json::json!(-1);
        assert_eq!(
            parse(v.to_string().as_bytes()).unwrap_err().reason(),
            "invalid"
        );
        // Bounds a producer of ours never breaks.
        let mut r = record();
        r.server_name = "a b".into();
        assert_eq!(
            parse(&serde_json::to_vec(&r).unwrap()).unwrap_err(),
            RecordError::Bounds("server_name")
        );
        let mut r = record();
        r.uplinks_total = 0;
        assert_eq!(
            parse(&serde_json::to_vec(&r).unwrap()).unwrap_err(),
            RecordError::Bounds("uplinks")
        );
        let mut r = record();
        r.uplinks = vec![r.uplinks[0].clone(); MAX_UPLINKS + 1];
        r.uplinks_total = 100;
        assert_eq!(
            parse(&serde_json::to_vec(&r).unwrap()).unwrap_err(),
            RecordError::Bounds("uplinks")
        );
        let mut r = record();
        r.uplinks[0].rate_msgs_per_sec = -1.0;
        assert!(parse(&serde_json::to_vec(&r).unwrap()).is_err());
        let mut r = record();
        r.server_id = "x".repeat(MAX_TEXT + 1);
        assert!(parse(&serde_json::to_vec(&r).unwrap()).is_err());
    }

    #[test]
    fn unknown_fields_of_the_same_format_are_ignored() {
        let mut v = serde_json::to_value(record()).unwrap();
        v["added_later"] = serde_json::json!({"x": 1});
        assert_eq!(parse(v.to_string().as_bytes()).unwrap(), record());
    }
}
