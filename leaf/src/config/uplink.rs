//! `[[uplinks]]`: store-and-forward uplinks from local subjects to a stream on the hub.
//!
//! ```toml
//! [[uplinks]]
//! name = "sensors"              # names the uplink in logs, status and the local stream
//! subjects = ["sensors.>"]      # local subjects captured (durably) into the local buffer
//! hub_stream = "SENSORS"        # the stream on the hub the messages are stored in
//! hub_domain = "hub"            # only if the hub's JetStream has a domain
//! subject_prefix = "gw1"        # on the hub, sensors.x becomes gw1.sensors.x
//! create_hub_stream = true      # create hub_stream when it is missing
//! max_bytes = "512MB"           # buffer limits on the gateway
//! max_age = "7d"
//! when_full = "drop_oldest"     # or "reject"
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::value;

/// Default most messages sent to the hub and not yet acknowledged (the send window is sized
/// below it from the path's rate and round trip: `uplink::window`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32_768;
/// Default number of messages per hub PubAck when acknowledgements are chained.
pub const DEFAULT_ACK_EVERY: u32 = 128;
/// Default time the hub gets to acknowledge a message before it is sent again.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default shortest interval between two writes of the uplink's cursor.
pub const DEFAULT_CURSOR_INTERVAL: Duration = Duration::from_millis(50);
/// The prefix of the subjects the hub answers an uplink on (`_UPLINK.<token>.`): the link
/// must carry them back.
pub const REPLY_PREFIX: &str = "_UPLINK.";

/// What happens when a publish would exceed the buffer limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The oldest buffered messages are dropped (counted and logged) to make room.
    #[default]
    DropOldest,
    /// The new message is refused: a publisher asking for an ack gets an error.
    Reject,
}

/// One `[[uplinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Uplink {
    /// The uplink's name: letters, digits, `-` and `_`.
    pub name: String,
    /// Local subjects captured into the buffer (wildcards allowed).
    #[serde(deserialize_with = "value::de_string_list")]
    pub subjects: Vec<String>,
    /// Name of the local buffer stream (default `UPLINK_<name>`).
    pub stream: Option<String>,
    /// Which `leafnodes.remotes` entry carries the uplink (0-based, default 0).
    pub remote: usize,
    /// The stream on the hub.
    pub hub_stream: String,
    /// The hub's JetStream domain, to address its API as `$JS.<domain>.API` (default:
    /// `$JS.API`).
    pub hub_domain: Option<String>,
    /// Create `hub_stream` on the hub when it does not exist.
    pub create_hub_stream: bool,
    /// Subjects of a created hub stream (default: the uplink's subjects after the prefix).
    #[serde(deserialize_with = "value::de_string_list")]
    pub hub_subjects: Vec<String>,
    /// A token (or dotted tokens) put in front of every subject on the hub.
    pub subject_prefix: Option<String>,
    /// Most bytes buffered on the gateway.
    #[serde(deserialize_with = "value::de_opt_size")]
    pub max_bytes: Option<u64>,
    /// Most messages buffered on the gateway.
    pub max_msgs: Option<u64>,
    /// Oldest buffered message kept on the gateway.
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_age: Option<Duration>,
    /// What a full buffer does.
    pub when_full: WhenFull,
    /// Most messages in flight to the hub (sent, not yet acknowledged): the cap of the send
    /// window, which is sized below it from the path's rate and round trip.
    pub max_in_flight: usize,
    /// Cap on the replay rate in bytes per second (none by default).
    #[serde(deserialize_with = "value::de_opt_size")]
    pub rate_limit: Option<u64>,
    /// Time the hub gets to acknowledge a message before it is sent again.
    #[serde(deserialize_with = "value::de_duration")]
    pub ack_timeout: Duration,
    /// Ask the hub for a PubAck on only one message in this many, chaining the others
    /// (`Nats-Expected-Last-Msg-Id`) so that one PubAck proves them all stored; 1 asks for a
    /// PubAck on every message. Chaining stops by itself on a hub stream with other writers.
    pub ack_every: u32,
    /// Shortest interval between two writes of the cursor (and frees of forwarded
    /// messages). Longer means fewer writes to the flash; exactness does not depend on it
    /// (after a crash, leafd reads back from the hub what it already holds).
    #[serde(deserialize_with = "value::de_duration")]
    pub cursor_interval: Duration,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            name: String::new(),
            subjects: Vec::new(),
            stream: None,
            remote: 0,
            hub_stream: String::new(),
            hub_domain: None,
            create_hub_stream: false,
            hub_subjects: Vec::new(),
            subject_prefix: None,
            max_bytes: None,
            max_msgs: None,
            max_age: None,
            when_full: WhenFull::DropOldest,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rate_limit: None,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            ack_every: DEFAULT_ACK_EVERY,
            cursor_interval: DEFAULT_CURSOR_INTERVAL,
        }
    }
}

impl Uplink {
    /// The local buffer stream's name.
    pub fn stream_name(&self) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| format!("UPLINK_{}", self.name))
    }
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    value::de_duration(deserializer).map(Some)
}
