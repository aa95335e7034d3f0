//! What an uplink writes: the `Nats-Msg-Id` of every message it sends, the headers it sends,
//! and its persisted cursor.

use serde::{Deserialize, Serialize};

/// The key of an uplink's cursor among its local stream's consumer records (consumer names
/// cannot contain dots, so it never collides with a consumer).
pub const CURSOR_KEY: &str = "uplink.cursor";

/// Headers of a local message that are not forwarded: they were meant for the local stream
/// (`Nats-Expected-*`, `Nats-Rollup`) or are replaced (`Nats-Msg-Id`).
const DROPPED_HEADERS: [&str; 2] = ["nats-msg-id", "nats-rollup"];

/// The identity of one uplink's message sequence: the uplink's name and the creation time of
/// its local stream. A stream deleted and created again (sequences restart at 1) gets a new
/// origin, so its messages are never mistaken for older ones on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// The origin of uplink `name` whose local stream was created at `created_ns`.
    pub fn new(name: &str, created_ns: i64) -> Origin {
        Origin(format!("{name}@{created_ns:x}"))
    }

    /// The `Nats-Msg-Id` of local sequence `seq`: `<name>@<epoch>:<seq>`.
    pub fn msg_id(&self, seq: u64) -> String {
        // Once per forwarded message: written out by hand, `format!` costs several times more.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut n = seq;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut id = String::with_capacity(self.0.len() + 1 + digits.len() - start);
        id.push_str(&self.0);
        id.push(':');
        id.extend(digits[start..].iter().map(|&d| char::from(d)));
        id
    }

    /// The local sequence of a `Nats-Msg-Id` made by this origin.
    pub fn parse(&self, msg_id: &str) -> Option<u64> {
        let (origin, seq) = msg_id.rsplit_once(':')?;
        if origin != self.0 {
            return None;
        }
        seq.parse().ok()
    }

    /// The origin as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The header block sent to the hub: the local message's headers without the ones in
/// [`DROPPED_HEADERS`] or starting with `Nats-Expected-`, plus `Nats-Msg-Id` and, for a
/// chained message, `Nats-Expected-Last-Msg-Id` (its predecessor's id).
pub fn hub_headers(local: Option<&[u8]>, msg_id: &str, expect_last: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        local.map_or(0, <[u8]>::len) + msg_id.len() + expect_last.map_or(0, str::len) + 64,
    );
    out.extend_from_slice(b"NATS/1.0\r\n");
    if let Some(block) = local {
        for line in block.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let name = line
                .iter()
                .position(|&b| b == b':')
                .and_then(|i| line.get(..i))
                .unwrap_or(line);
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let name = name.trim();
            if DROPPED_HEADERS.contains(&name) || name.starts_with("nats-expected-") {
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Nats-Msg-Id: ");
    out.extend_from_slice(msg_id.as_bytes());
    if let Some(prev) = expect_last {
        out.extend_from_slice(b"\r\nNats-Expected-Last-Msg-Id: ");
        out.extend_from_slice(prev.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The persisted position of an uplink (postcard-encoded under [`CURSOR_KEY`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Record version ([`Cursor::VERSION`]).
    pub version: u8,
    /// The local stream's creation time the cursor belongs to.
    pub epoch: i64,
    /// Every local sequence up to this one is proven on the hub (or was dropped, rejected or
    /// denied, and counted).
    pub acked: u64,
    /// The hub stream's sequence of the last proven message (0: unknown).
    pub hub_seq: u64,
    /// Sequences up to this one may have been sent one by one (see `ledger`).
    pub pm_hwm: u64,
}

/// Version 1 of the record (before `pm_hwm`).
#[derive(Deserialize)]
struct CursorV1 {
    _version: u8,
    epoch: i64,
    acked: u64,
    hub_seq: u64,
}

impl Cursor {
    /// Current record version.
    pub const VERSION: u8 = 2;

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a record; `None` if it is unreadable or of an unknown version. A version 1
    /// record (written before `pm_hwm` existed) gives `pm_hwm: None`: the caller assumes
    /// everything in the buffer may have been sent one by one.
    pub fn decode(bytes: &[u8]) -> Option<(Cursor, Option<u64>)> {
        match bytes.first()? {
            1 => postcard::from_bytes::<CursorV1>(bytes).ok().map(|c| {
                let cursor = Cursor {
                    version: Self::VERSION,
                    epoch: c.epoch,
                    acked: c.acked,
                    hub_seq: c.hub_seq,
                    pm_hwm: 0,
                };
                (cursor, None)
            }),
            &Self::VERSION => postcard::from_bytes::<Cursor>(bytes)
                .ok()
                .map(|c| (c, Some(c.pm_hwm))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaf_proto::headers;

    #[test]
    fn msg_ids_round_trip_only_for_their_origin() {
        let o = Origin::new("sensors", 0x1234);
        assert_eq!(o.msg_id(7), "sensors@1234:7");
        for seq in [0, 9, 10, 99, 100, 123_456_789, u64::MAX] {
            assert_eq!(o.msg_id(seq), format!("sensors@1234:{seq}"));
            assert_eq!(o.parse(&o.msg_id(seq)), Some(seq));
        }
        assert_eq!(o.parse("sensors@1234:7"), Some(7));
        assert_eq!(o.parse("sensors@1235:7"), None);
        assert_eq!(o.parse("other@1234:7"), None);
        assert_eq!(o.parse("sensors@1234:x"), None);
        assert_eq!(o.parse("garbage"), None);
    }

    #[test]
    fn hub_headers_keep_user_headers_and_replace_the_msg_id() {
        let local = b"NATS/1.0\r\nUnit: C\r\nNats-Msg-Id: mine\r\nNats-Expected-Stream: X\r\nNats-Rollup: sub\r\nB: 2\r\n\r\n";
        let out = hub_headers(Some(local), "u@1:5", None);
        assert_eq!(
            out,
            b"NATS/1.0\r\nUnit: C\r\nB: 2\r\nNats-Msg-Id: u@1:5\r\n\r\n".to_vec()
        );
        let bare = hub_headers(None, "u@1:6", None);
        assert_eq!(headers::get_str(&bare, "nats-msg-id"), Some("u@1:6"));
        let chained = hub_headers(Some(local), "u@1:7", Some("u@1:6"));
        assert_eq!(headers::get_str(&chained, "nats-msg-id"), Some("u@1:7"));
        assert_eq!(
            headers::get_str(&chained, "Nats-Expected-Last-Msg-Id"),
            Some("u@1:6")
        );
        assert_eq!(headers::get_str(&chained, "Nats-Expected-Stream"), None);
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            version: Cursor::VERSION,
            epoch: 42,
            acked: 1_000_000,
            hub_seq: 77,
            pm_hwm: 9,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some((c, Some(9))));
        assert_eq!(Cursor::decode(b"\xff\xff"), None);
        assert_eq!(Cursor::decode(b""), None);
        let other = Cursor { version: 9, ..c };
        assert_eq!(Cursor::decode(&other.encode()), None);
    }

    #[test]
    fn version_1_cursors_are_read_without_pm_hwm() {
        #[derive(Serialize)]
        struct V1 {
            version: u8,
            epoch: i64,
            acked: u64,
            hub_seq: u64,
        }
        let bytes = postcard::to_allocvec(&V1 {
            version: 1,
            epoch: 42,
            acked: 500,
            hub_seq: 7,
        })
        .unwrap();
        let (c, pm_hwm) = Cursor::decode(&bytes).unwrap();
        assert_eq!((c.epoch, c.acked, c.hub_seq, pm_hwm), (42, 500, 7, None));
    }
}
