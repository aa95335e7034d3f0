//! Republish (`RePublish`, nats-server 2.9): once a stored message whose subject matches the
//! stream's `republish.src` is durable, the stream publishes a copy on the subject the
//! transform to `republish.dest` gives (see [`leaf_proto::transform`]), with headers saying
//! where it came from: `Nats-Stream`, `Nats-Subject`, `Nats-Sequence`, `Nats-Last-Sequence`
//! (the previous sequence on the same subject, 0 if none), and with `headers_only` an empty
//! payload and `Nats-Msg-Size`. The message's own headers come first, as on nats-server. The
//! copy is a plain core publish: whoever is subscribed then receives it, nothing is stored.

use bytes::Bytes;
use leaf_proto::transform::Transform;

use super::config::RePublish;

/// A stream's compiled republish configuration.
#[derive(Debug, Clone)]
pub(crate) struct Republisher {
    config: RePublish,
    transform: Transform,
}

/// One message to republish.
pub(crate) struct Copy {
    /// Where it goes.
    pub(crate) subject: String,
    /// Its header block.
    pub(crate) headers: Vec<u8>,
    /// Its payload (empty with `headers_only`).
    pub(crate) payload: Bytes,
}

/// What [`Republisher::copy`] needs of a stored message.
pub(crate) struct Stored<'a> {
    pub(crate) stream: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) seq: u64,
    pub(crate) prev_in_subject: u64,
    pub(crate) headers: Option<&'a [u8]>,
    pub(crate) payload: &'a Bytes,
}

impl Republisher {
    /// Compiles `config` (checked when the stream was configured; `None` if it does not
    /// compile).
    pub(crate) fn new(config: &RePublish) -> Option<Self> {
        let transform = Transform::new(config.source(), &config.dest).ok()?;
        Some(Republisher {
            config: config.clone(),
            transform,
        })
    }

    /// Whether this is the compiled form of `config`.
    pub(crate) fn is_for(&self, config: &RePublish) -> bool {
        self.config == *config
    }

    /// The copy of `msg` to publish, if its subject matches the source.
    pub(crate) fn copy(&self, msg: &Stored<'_>) -> Option<Copy> {
        let subject = self.transform.apply(msg.subject)?;
        let mut headers = match msg.headers {
            // The stored block ends with the empty line: fields go before it.
            Some(h) if h.ends_with(b"\r\n\r\n") => h[..h.len() - 2].to_vec(),
            _ => b"NATS/1.0\r\n".to_vec(),
        };
        let mut field = |name: &str, value: &str| {
            headers.extend_from_slice(name.as_bytes());
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(value.as_bytes());
            headers.extend_from_slice(b"\r\n");
        };
        field("Nats-Stream", msg.stream);
        field("Nats-Subject", msg.subject);
        field("Nats-Sequence", &msg.seq.to_string());
        field("Nats-Last-Sequence", &msg.prev_in_subject.to_string());
        let payload = if self.config.headers_only {
            field("Nats-Msg-Size", &msg.payload.len().to_string());
            Bytes::new()
        } else {
            msg.payload.clone()
        };
        headers.extend_from_slice(b"\r\n");
        Some(Copy {
            subject,
            headers,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored<'a>(headers: Option<&'a [u8]>, payload: &'a Bytes) -> Stored<'a> {
        Stored {
            stream: "R",
            subject: "r.a.x",
            seq: 3,
            prev_in_subject: 1,
            headers,
            payload,
        }
    }

    #[test]
    fn copies_carry_where_they_came_from() {
        let rp = RePublish {
            src: "r.*.x".into(),
            dest: "out.$1".into(),
            headers_only: false,
        };
        let r = Republisher::new(&rp).unwrap();
        let payload = Bytes::from_static(b"hi2");
        let c = r.copy(&stored(None, &payload)).unwrap();
        assert_eq!(c.subject, "out.a");
        assert_eq!(
            c.headers,
            b"NATS/1.0\r\nNats-Stream: R\r\nNats-Subject: r.a.x\r\nNats-Sequence: 3\r\n\
              Nats-Last-Sequence: 1\r\n\r\n"
        );
        assert_eq!(c.payload, payload);
        let own = b"NATS/1.0\r\nX-Kind: t\r\n\r\n";
        let c = r.copy(&stored(Some(own), &payload)).unwrap();
        assert!(c
            .headers
            .starts_with(b"NATS/1.0\r\nX-Kind: t\r\nNats-Stream: R\r\n"));
        assert!(c.headers.ends_with(b"Nats-Last-Sequence: 1\r\n\r\n"));
        let mut other = stored(None, &payload);
        other.subject = "r.b.y";
        assert!(r.copy(&other).is_none());
    }

    #[test]
    fn headers_only_sends_the_size() {
        let rp = RePublish {
            src: String::new(),
            dest: "rq.>".into(),
            headers_only: true,
        };
        let r = Republisher::new(&rp).unwrap();
        assert!(r.is_for(&rp));
        let payload = Bytes::from_static(b"hello");
        let c = r.copy(&stored(None, &payload)).unwrap();
        assert_eq!(c.subject, "rq.r.a.x");
        assert!(c.payload.is_empty());
        assert!(c.headers.ends_with(b"Nats-Msg-Size: 5\r\n\r\n"));
    }
}
