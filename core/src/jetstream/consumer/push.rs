//! Push delivery: the consumer's task sends its messages to `deliver_subject` on its own,
//! as soon as they are stored, instead of waiting for pull requests.
//!
//! * **Interest.** Messages are sent only while something subscribes to `deliver_subject`
//!   (looked up in the server's sublist before every delivery round, and polled while
//!   nobody listens). An ephemeral push consumer nobody listens to for its
//!   `inactive_threshold` (5 s by default) deletes itself. With `deliver_group`, the server's
//!   queue-group routing picks one member per message.
//! * **Flow control.** With `flow_control`, the bytes sent since the last answered request
//!   are counted against a window (starting at [`FC_START_WINDOW`], doubling on every answer
//!   up to [`FC_MAX_WINDOW`]). Past half the window a `100 FlowControl Request` goes out with
//!   the reply subject `$JS.FC.<stream>.<consumer>.<n>`; past the whole window delivery stops
//!   until the client publishes to that subject.
//! * **Heartbeats.** With `idle_heartbeat`, a `100 Idle Heartbeat` (with `Nats-Last-Consumer`,
//!   `Nats-Last-Stream`, and `Nats-Consumer-Stalled` while a flow control request is
//!   unanswered) goes out whenever nothing was sent for that long and someone listens.
//! * **Fairness.** One round sends at most [`ROUND`] messages; the task then serves its queue
//!   before the next round, so acks and info requests are not starved by a long backlog.
//!
//! `rate_limit_bps` is accepted but not applied.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Task;
use crate::server::ReplyTo;
use leaf_proto::headers;

/// First flow control window, in bytes.
pub(crate) const FC_START_WINDOW: u64 = 1024 * 1024;
/// Largest flow control window, in bytes.
pub(crate) const FC_MAX_WINDOW: u64 = 8 * 1024 * 1024;
/// Most messages sent in one delivery round.
const ROUND: usize = 256;
/// How often interest is looked up while nobody listens.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How often interest is looked up while someone listens and nothing happens.
const ACTIVE_POLL: Duration = Duration::from_secs(1);

/// A push consumer's delivery state (not persisted).
pub(crate) struct PushState {
    /// Where messages go (set by whoever created the consumer: anyone subscribed receives).
    to: ReplyTo,
    /// Someone subscribes to `subject`.
    active: bool,
    /// When interest is looked up next.
    next_poll: Instant,
    /// Bytes sent and not yet covered by an answered flow control request.
    pending_bytes: u64,
    /// The current flow control window.
    window: u64,
    /// The unanswered flow control request: its reply subject and the bytes it covers.
    fc: Option<(String, u64)>,
    /// Counter for flow control reply subjects.
    fc_seq: u64,
    /// When the next idle heartbeat is due.
    next_heartbeat: Option<Instant>,
    /// The last round stopped at [`ROUND`] messages: another one is due at once.
    more: bool,
}

impl PushState {
    /// A push state delivering to `subject`.
    pub(crate) fn new(subject: String) -> PushState {
        PushState {
            to: ReplyTo::anyone(subject),
            active: false,
            next_poll: Instant::now(),
            pending_bytes: 0,
            window: FC_START_WINDOW,
            fc: None,
            fc_seq: 0,
            next_heartbeat: None,
            more: false,
        }
    }

    /// The deliver subject.
    pub(crate) fn subject(&self) -> &str {
        self.to.subject()
    }

    /// Whether messages are being sent (someone listens).
    pub(crate) fn active(&self) -> bool {
        self.active
    }
}

impl Task {
    fn heartbeat_interval(&self) -> Option<Duration> {
        (self.config.idle_heartbeat > 0)
            .then(|| Duration::from_nanos(self.config.idle_heartbeat as u64))
    }

    /// Looks up interest in the deliver subject; returns whether someone listens.
    fn check_interest(&mut self) -> bool {
        let Some(subject) = self.push.as_ref().map(|p| p.subject().to_owned()) else {
            return false;
        };
        let active = self.has_interest(&subject);
        let now = Instant::now();
        let hb = self.heartbeat_interval();
        if let Some(p) = &mut self.push {
            if active && !p.active {
                p.next_heartbeat = hb.map(|h| now + h);
            }
            p.active = active;
            p.next_poll = now + if active { ACTIVE_POLL } else { IDLE_POLL };
        }
        if active {
            self.last_request = now;
        }
        active
    }

    /// Sends what is available to the deliver subject, within the flow control window.
    pub(super) fn deliver_push(&mut self) {
        if let Some(p) = &mut self.push {
            p.more = false;
        }
        if !self.check_interest() {
            return;
        }
        let fc = self.config.flow_control;
        for _ in 0..ROUND {
            let Some(p) = &self.push else {
                return;
            };
            if fc && p.pending_bytes > p.window {
                return; // stalled until the flow control request is answered
            }
            let to = p.to.clone();
            let Some((msg, dc, redelivery)) = self.next_message() else {
                return;
            };
            let size = (msg.subject.len()
                + msg.headers.as_ref().map_or(0, Bytes::len)
                + msg.payload.len()) as u64;
            self.send_message(&to, &msg, dc, redelivery);
            let hb = self.heartbeat_interval();
            let mut request = None;
            if let Some(p) = &mut self.push {
                p.next_heartbeat = hb.map(|h| Instant::now() + h);
                if fc {
                    p.pending_bytes += size;
                    if p.fc.is_none() && p.pending_bytes > p.window / 2 {
                        p.fc_seq += 1;
                        let reply =
                            format!("$JS.FC.{}.{}.{}", self.stream_name, self.name, p.fc_seq);
                        p.fc = Some((reply.clone(), p.pending_bytes));
                        request = Some((p.subject().to_owned(), reply));
                    }
                }
            }
            if let Some((subject, reply)) = request {
                let hdr = headers::Builder::new(Some((100, "FlowControl Request"))).finish();
                self.publish(&subject, Some(&reply), Some(&hdr), b"");
            }
        }
        if let Some(p) = &mut self.push {
            p.more = true;
        }
    }

    /// The client answered the flow control request `subject`.
    pub(super) fn flow_control_answer(&mut self, subject: &str) {
        let Some(p) = &mut self.push else {
            return;
        };
        let covered = match &p.fc {
            Some((reply, covered)) if reply == subject => *covered,
            _ => return, // not the latest request
        };
        p.fc = None;
        p.pending_bytes = p.pending_bytes.saturating_sub(covered);
        p.window = (p.window * 2).min(FC_MAX_WINDOW);
        self.deliver();
    }

    /// The earliest push deadline: the next round, interest poll or heartbeat.
    pub(super) fn push_deadline(&self) -> Option<Instant> {
        let p = self.push.as_ref()?;
        if p.more {
            return Some(Instant::now());
        }
        let mut d = p.next_poll;
        if let Some(h) = p.next_heartbeat.filter(|_| p.active) {
            d = d.min(h);
        }
        Some(d)
    }

    /// Runs the push timers: interest poll and idle heartbeat.
    pub(super) fn push_timers(&mut self, now: Instant) {
        let Some(p) = &self.push else {
            return;
        };
        if p.next_poll <= now {
            self.check_interest();
        }
        let Some(p) = &self.push else {
            return;
        };
        let due = p.active && p.next_heartbeat.is_some_and(|t| t <= now);
        if !due {
            return;
        }
        let subject = p.subject().to_owned();
        let stalled = p.fc.as_ref().map(|(reply, _)| reply.clone());
        let hb = self.heartbeat_interval();
        if let Some(p) = &mut self.push {
            p.next_heartbeat = hb.map(|h| now + h);
        }
        let mut b = headers::Builder::new(Some((100, "Idle Heartbeat")))
            .add("Nats-Last-Consumer", &self.state.ack.dseq().to_string())
            .add(
                "Nats-Last-Stream",
                &self.state.next_sseq.saturating_sub(1).to_string(),
            );
        if let Some(reply) = &stalled {
            b = b.add("Nats-Consumer-Stalled", reply);
        }
        let hdr = b.finish();
        self.publish(&subject, None, Some(&hdr), b"");
    }

    /// Whether the push consumer has someone listening (for its info's `push_bound`).
    pub(super) fn push_bound(&self) -> Option<bool> {
        self.push.as_ref().map(PushState::active)
    }
}
