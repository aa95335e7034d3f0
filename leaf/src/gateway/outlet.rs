//! The gateways' door into the server: publish a message into the subject space (local
//! subscribers, streams such as an uplink's buffer, leaf links) and serve request/reply
//! subjects (Modbus writes, GPIO outputs), without a client connection.
//!
//! Answers go only where the requester may publish itself ([`ReplyTo`], see
//! `leaf_core::server::reply`): a user allowed to ask `gpio.b.door.get` cannot have the
//! answer delivered to `gpio.b.valve.set`.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use leaf_core::server::{InternalSink, Msg, Publisher, ReplyTo, Shared, SubRef};
use leaf_proto::headers::Builder;
use leaf_proto::subject::is_valid_literal_subject;
use leaf_proto::time::rfc3339;

use super::GatewayError;

/// Header carrying the time leafd received the data (RFC 3339, UTC, nanoseconds).
pub const RECEIVED_HEADER: &str = "Leaf-Received";
/// Header carrying the per-source sequence number (1, 2, ... since the source started).
pub const SEQ_HEADER: &str = "Leaf-Seq";

/// Publishes gateway data into the server. Cheap to clone; holds the server weakly, so a
/// gateway task never keeps a stopped server alive.
#[derive(Clone)]
pub struct Outlet {
    shared: Weak<Shared>,
}

impl Outlet {
    /// An outlet into `shared`'s subject space.
    pub fn new(shared: &Arc<Shared>) -> Self {
        Outlet {
            shared: Arc::downgrade(shared),
        }
    }

    /// Publishes one message. `headers` is a complete header block (see [`stamp`]) or
    /// `None`. Returns how many subscriptions received it (streams count as one each).
    ///
    /// # Errors
    /// [`GatewayError::Subject`] when `subject` is not a valid literal subject (a template
    /// filled with a token containing a space, say); [`GatewayError::Stopped`] when the
    /// server is gone.
    pub fn publish(
        &self,
        subject: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<usize, GatewayError> {
        if !is_valid_literal_subject(subject.as_bytes()) {
            return Err(GatewayError::Subject(subject.to_owned()));
        }
        let shared = self.shared.upgrade().ok_or(GatewayError::Stopped)?;
        Ok(shared.global().publish(&Msg {
            subject: subject.as_bytes(),
            reply: None,
            headers,
            payload,
        }))
    }

    /// Subscribes to `subject` (wildcards allowed) for requests: each message arrives on the
    /// returned [`Requests`]. At most `capacity` requests wait; more are dropped (counted in
    /// [`Requests::dropped`]) rather than blocking the publisher. The subscription ends when
    /// the `Requests` is dropped.
    ///
    /// # Errors
    /// [`GatewayError::Subject`] for an invalid subject, [`GatewayError::Stopped`] when the
    /// server is gone.
    pub fn serve(&self, subject: &str, capacity: usize) -> Result<Requests, GatewayError> {
        let shared = self.shared.upgrade().ok_or(GatewayError::Stopped)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = Arc::new(RequestSink {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        let sub = shared
            .global()
            .subscribe_internal(subject.as_bytes(), None, sink.clone())
            .map_err(|_| GatewayError::Subject(subject.to_owned()))?;
        Ok(Requests {
            rx,
            sink,
            sub: Some(sub),
            outlet: self.clone(),
        })
    }

    /// Sends `payload` to a request's reply subject (nothing when it has none), to whoever
    /// the requester may reach there.
    pub fn respond(&self, request: &Request, payload: &[u8]) {
        let (Some(reply), Some(shared)) = (&request.reply, self.shared.upgrade()) else {
            return;
        };
        shared.global().answer(reply, None, payload);
    }
}

/// One request received on a served subject.
#[derive(Debug, Clone)]
pub struct Request {
    /// The subject it was sent to.
    pub subject: String,
    /// Where the answer goes, if the sender wants one.
    pub reply: Option<ReplyTo>,
    /// The request body.
    pub payload: Bytes,
}

/// The requests arriving on one served subject (see [`Outlet::serve`]).
pub struct Requests {
    rx: mpsc::Receiver<Request>,
    sink: Arc<RequestSink>,
    sub: Option<SubRef>,
    outlet: Outlet,
}

impl Requests {
    /// The next request; `None` once the server is gone.
    pub async fn next(&mut self) -> Option<Request> {
        self.rx.recv().await
    }

    /// Requests dropped because too many were waiting.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        if let (Some(sub), Some(shared)) = (self.sub.take(), self.outlet.shared.upgrade()) {
            shared.global().unsubscribe_internal(&sub);
        }
    }
}

/// Copies requests off the publisher's task into a bounded queue.
struct RequestSink {
    tx: mpsc::Sender<Request>,
    dropped: std::sync::atomic::AtomicU64,
}

impl InternalSink for RequestSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let request = Request {
            subject: String::from_utf8_lossy(msg.subject).into_owned(),
            reply: msg.reply.map(|r| from.reply_to(r)),
            payload: Bytes::copy_from_slice(msg.payload),
        };
        if self.tx.try_send(request).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The header block every gateway message carries: [`RECEIVED_HEADER`] (from
/// `received_ns`, nanoseconds since the Unix epoch), [`SEQ_HEADER`] and any `extra`
/// headers.
pub fn stamp(received_ns: i64, seq: u64, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Builder::new(None)
        .add(RECEIVED_HEADER, &rfc3339(received_ns))
        .add(SEQ_HEADER, itoa::Buffer::new().format(seq));
    for (name, value) in extra {
        block = block.add(name, value);
    }
    block.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaf_proto::headers::get_str;

    #[test]
    fn stamp_carries_time_sequence_and_extras() {
        let block = stamp(1_700_000_000_123_456_789, 42, &[("Leaf-Line", "GPIO17")]);
        assert!(block.starts_with(b"NATS/1.0\r\n"));
        assert!(block.ends_with(b"\r\n\r\n"));
        assert_eq!(get_str(&block, SEQ_HEADER), Some("42"));
        assert_eq!(get_str(&block, "Leaf-Line"), Some("GPIO17"));
        let received = get_str(&block, RECEIVED_HEADER).unwrap();
        assert!(
            received.starts_with("2023-11-14T22:13:20.123456789"),
            "{received}"
        );
    }
}
