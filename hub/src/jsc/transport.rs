//! Raft over the routes: requests between members as NATS messages in the system account.
//!
//! A request to member `T` of group `G` is published on `$HRG.<G>.<T>.<rpc>` with the reply
//! subject `$HRG.R.<own id>.<seq>`; each member subscribes to `$HRG.*.<own id>.*` (requests)
//! and `$HRG.R.<own id>.*` (answers), internal subscriptions that the routes announce like any
//! other interest, so a request crosses one route to its target and only there. nats-server
//! members never subscribe to these subjects and so never receive them. Bodies are postcard.
//!
//! Bounds: at most [`MAX_IN_FLIGHT_BYTES`] of requests waiting for answers per target (past
//! it a request fails at once, and openraft backs off; one larger request may go alone); every request has a deadline; requests
//! received wait for their handler in a queue bounded in bytes ([`MAX_QUEUED_BYTES`]) and
//! count ([`MAX_QUEUED`]): past it they are dropped and counted ([`Transport::dropped`]), and
//! the sender's deadline makes it retry.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use leaf_core::server::fanout::{InternalSink, Msg};
use leaf_core::server::{Account, Publisher, SubRef};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Most bytes of requests to one target waiting for their answers.
pub const MAX_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of received requests waiting for their handler.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Most received requests waiting for their handler.
pub const MAX_QUEUED: usize = 1024;

/// The subject prefix of Raft traffic.
pub const PREFIX: &str = "$HRG";

/// The RPCs accepted only when they arrive over a route (another member's server sent them:
/// a `$HRG.` message goes out on a route only when a server published it, see
/// `leaf_core::server::fanout`), never from a connection to this member: an API request
/// forwarded to the member holding an R1 stream acts in any account (`jsc::r1`).
pub const ROUTE_ONLY: &[&str] = &[super::r1::API_RPC];

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nobody subscribes to the target's subject: no route to it is up.
    #[error("no route to member {0}")]
    NoRoute(u64),
    /// Too many bytes are already waiting for the target's answers.
    #[error("too much in flight to member {0}")]
    Busy(u64),
    /// No answer before the deadline.
    #[error("member {0} did not answer in time")]
    Timeout(u64),
}

/// What serves the requests a member receives: `(group, rpc, body)` to the answer's body
/// (`None`: not served here or malformed: no answer, counted as dropped).
pub trait Handler: Send + Sync {
    /// Handles one request from member `from`.
    fn handle(
        &self,
        from: u64,
        group: String,
        rpc: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;
}

/// One received request.
struct Incoming {
    from: u64,
    group: String,
    rpc: String,
    reply: String,
    body: Vec<u8>,
}

/// The transport of one member (every group shares it).
pub struct Transport {
    account: Arc<Account>,
    own: u64,
    seq: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    in_flight: Mutex<HashMap<u64, usize>>,
    queued_bytes: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    dropped: AtomicU64,
    subs: Mutex<Vec<SubRef>>,
    handler: OnceLock<Arc<dyn Handler>>,
    /// When each member last answered or sent a request.
    contact: Mutex<HashMap<u64, Instant>>,
}

/// The subscription of answers.
struct Answers(std::sync::Weak<Transport>);

impl InternalSink for Answers {
    fn deliver(&self, msg: &Msg<'_>, _from: &Publisher) {
        let Some(t) = self.0.upgrade() else {
            return;
        };
        let seq = std::str::from_utf8(msg.subject)
            .ok()
            .and_then(|s| s.rsplit('.').next())
            .and_then(|s| s.parse::<u64>().ok());
        let Some(seq) = seq else {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let waiter = t
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&seq);
        if let Some(w) = waiter {
            let _ = w.send(msg.payload.to_vec());
        }
    }
}

/// The subscription of requests: queued for the handler task, within bounds.
struct Requests {
    transport: std::sync::Weak<Transport>,
    tx: mpsc::UnboundedSender<Incoming>,
}

impl InternalSink for Requests {
    fn deliver(&self, msg: &Msg<'_>, from_publisher: &Publisher) {
        let Some(t) = self.transport.upgrade() else {
            return;
        };
        let from_route = matches!(from_publisher, Publisher::Link(h) if h.route().is_some());
        let parsed = std::str::from_utf8(msg.subject).ok().and_then(|s| {
            let mut parts = s.split('.');
            let (_, group, _, rpc) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some((group.to_owned(), rpc.to_owned()))
        });
        let reply = msg
            .reply
            .and_then(|r| std::str::from_utf8(r).ok())
            .map(str::to_owned);
        // The sender's id is in its reply subject: `$HRG.R.<id>.<seq>`.
        let from = reply
            .as_deref()
            .and_then(|r| r.split('.').nth(2))
            .and_then(|id| id.parse::<u64>().ok());
        let (Some((group, rpc)), Some(reply), Some(from)) = (parsed, reply, from) else {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !from_route && ROUTE_ONLY.contains(&rpc.as_str()) {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let size = msg.payload.len();
        if t.queued.load(Ordering::Relaxed) >= MAX_QUEUED
            || t.queued_bytes.load(Ordering::Relaxed) + size > MAX_QUEUED_BYTES
        {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.queued.fetch_add(1, Ordering::Relaxed);
        t.queued_bytes.fetch_add(size, Ordering::Relaxed);
        t.touch(from);
        let incoming = Incoming {
            from,
            group,
            rpc,
            reply,
            body: msg.payload.to_vec(),
        };
        if self.tx.send(incoming).is_err() {
            t.queued.fetch_sub(1, Ordering::Relaxed);
            t.queued_bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

/// Releases a request's in-flight bytes when it is answered, fails or times out.
struct InFlight<'a> {
    transport: &'a Transport,
    target: u64,
    bytes: usize,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.transport
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.seq);
        let mut in_flight = self
            .transport
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = in_flight.get_mut(&self.target) {
            *n = n.saturating_sub(self.bytes);
        }
    }
}

impl Transport {
    /// Subscribes member `own`'s subjects in the system account `account` and starts the task
    /// that hands received requests to the handler (set with [`Transport::serve`]).
    pub fn start(account: Arc<Account>, own: u64) -> Result<Arc<Transport>, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
        let transport = Arc::new(Transport {
            account: account.clone(),
            own,
            seq: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
            subs: Mutex::new(Vec::new()),
            handler: OnceLock::new(),
            contact: Mutex::new(HashMap::new()),
        });
        let answers = account
            .subscribe_internal(
                format!("{PREFIX}.R.{own}.*").as_bytes(),
                None,
                Arc::new(Answers(Arc::downgrade(&transport))),
            )
            .map_err(|e| format!("JetStream cluster: cannot subscribe to answers: {e}"))?;
        let requests = account
            .subscribe_internal(
                format!("{PREFIX}.*.{own}.*").as_bytes(),
                None,
                Arc::new(Requests {
                    transport: Arc::downgrade(&transport),
                    tx,
                }),
            )
            .map_err(|e| format!("JetStream cluster: cannot subscribe to requests: {e}"))?;
        transport
            .subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([answers, requests]);
        let weak = Arc::downgrade(&transport);
        tokio::spawn(async move {
            while let Some(incoming) = rx.recv().await {
                let Some(t) = weak.upgrade() else {
                    break;
                };
                let handler = t.handler.get().cloned();
                tokio::spawn(async move {
                    let size = incoming.body.len();
                    let answer = match handler {
                        Some(h) => {
                            h.handle(incoming.from, incoming.group, incoming.rpc, incoming.body)
                                .await
                        }
                        None => None,
                    };
                    match answer {
                        Some(answer) => {
                            t.account.publish(&Msg {
                                subject: incoming.reply.as_bytes(),
                                reply: None,
                                headers: None,
                                payload: &answer,
                            });
                        }
                        // Not for a group here, or a body that does not decode.
                        None => {
                            t.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    t.queued.fetch_sub(1, Ordering::Relaxed);
                    t.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                });
            }
        });
        Ok(transport)
    }

    /// Sets what serves received requests.
    pub fn serve(&self, handler: Arc<dyn Handler>) {
        let _ = self.handler.set(handler);
    }

    fn touch(&self, id: u64) {
        self.contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Instant::now());
    }

    /// When member `id` last answered a request or sent one.
    pub fn last_contact(&self, id: u64) -> Option<Instant> {
        self.contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Requests received and dropped (over the bounds, or malformed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends `body` to member `target`'s `rpc` of `group` and waits up to `ttl` for the answer.
    pub async fn request(
        &self,
        target: u64,
        group: &str,
        rpc: &str,
        body: &[u8],
        ttl: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let bytes = body.len();
        {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = in_flight.entry(target).or_insert(0);
            if *n > 0 && *n + bytes > MAX_IN_FLIGHT_BYTES {
                return Err(RequestError::Busy(target));
            }
            *n += bytes;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight {
            transport: self,
            target,
            bytes,
            seq,
        };
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq, tx);
        let subject = format!("{PREFIX}.{group}.{target}.{rpc}");
        let reply = format!("{PREFIX}.R.{}.{seq}", self.own);
        let delivered = self.account.publish(&Msg {
            subject: subject.as_bytes(),
            reply: Some(reply.as_bytes()),
            headers: None,
            payload: body,
        });
        if delivered == 0 {
            return Err(RequestError::NoRoute(target));
        }
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(answer)) => {
                self.touch(target);
                Ok(answer)
            }
            _ => {
                debug!(target, group, rpc, "Raft request timed out");
                Err(RequestError::Timeout(target))
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        let subs = std::mem::take(&mut *self.subs.lock().unwrap_or_else(PoisonError::into_inner));
        for s in subs {
            self.account.unsubscribe_internal(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use leaf_core::server::reply::Refusals;
    use leaf_core::server::Account;

    use super::{Handler, RequestError, Transport, MAX_IN_FLIGHT_BYTES};

    /// Answers every request with its body reversed, or never (`silent`).
    struct Echo {
        silent: bool,
    }

    impl Handler for Echo {
        fn handle(
            &self,
            _from: u64,
            _group: String,
            _rpc: String,
            mut body: Vec<u8>,
        ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>> {
            let silent = self.silent;
            Box::pin(async move {
                if silent {
                    return None;
                }
                body.reverse();
                Some(body)
            })
        }
    }

    fn account() -> Arc<Account> {
        Arc::new(Account::new("SYS", None, Arc::new(Refusals::default())))
    }

    /// A request reaches its target's handler and comes back with the answer; a target nobody
    /// serves fails at once; one that does not answer times out; past the in-flight bound a
    /// request fails at once without being sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_answered_bounded_and_timed_out() {
        let account = account();
        let a = Transport::start(account.clone(), 1).unwrap();
        let b = Transport::start(account.clone(), 2).unwrap();
        b.serve(Arc::new(Echo { silent: false }));
        let answer = a
            .request(2, "meta", "vote", b"abc", Duration::from_secs(5))
            .await;
        assert_eq!(answer, Ok(b"cba".to_vec()));
        assert!(a.last_contact(2).is_some(), "the answer counts as contact");
        assert!(b.last_contact(1).is_some(), "so does the request");

        let nobody = a
            .request(3, "meta", "vote", b"abc", Duration::from_secs(5))
            .await;
        assert_eq!(nobody, Err(RequestError::NoRoute(3)));

        let c = Transport::start(account.clone(), 4).unwrap();
        c.serve(Arc::new(Echo { silent: true }));
        let silent = a
            .request(4, "meta", "vote", b"abc", Duration::from_millis(200))
            .await;
        assert_eq!(silent, Err(RequestError::Timeout(4)));

        // One large request waits for its answer; the next one past the bound fails at once.
        let big = vec![0u8; MAX_IN_FLIGHT_BYTES];
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move {
                a.request(4, "meta", "append", &big, Duration::from_secs(2))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let busy = a
            .request(4, "meta", "append", b"x", Duration::from_secs(2))
            .await;
        assert_eq!(busy, Err(RequestError::Busy(4)));
        assert_eq!(
            waiting.await.unwrap(),
            Err(RequestError::Timeout(4)),
            "the silent member never answers"
        );
        // The bytes are released: a small request goes out again (and times out).
        let again = a
            .request(4, "meta", "append", b"x", Duration::from_millis(100))
            .await;
        assert_eq!(again, Err(RequestError::Timeout(4)));
    }

    /// Requests with a malformed subject or reply, or that the handler does not serve, are
    /// dropped and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_requests_are_dropped_and_counted() {
        let account = account();
        let t = Transport::start(account.clone(), 7).unwrap();
        t.serve(Arc::new(Echo { silent: false }));
        // No reply subject.
        account.publish(&leaf_core::server::Msg {
            subject: b"$HRG.meta.7.vote",
            reply: None,
            headers: None,
            payload: b"x",
        });
        // A reply subject that names no member.
        account.publish(&leaf_core::server::Msg {
            subject: b"$HRG.meta.7.vote",
            reply: Some(b"_INBOX.nobody"),
            headers: None,
            payload: b"x",
        });
        assert_eq!(t.dropped(), 2);
        // Well formed, but nothing serves it (the handler answers nothing).
        let s = Transport::start(account.clone(), 8).unwrap();
        s.serve(Arc::new(Echo { silent: true }));
        account.publish(&leaf_core::server::Msg {
            subject: b"$HRG.nope.8.vote",
            reply: Some(b"$HRG.R.7.1"),
            headers: None,
            payload: b"x",
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.dropped() == 0 {
            assert!(std::time::Instant::now() < deadline, "not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
