//! Advisories in the system account, in nats-server 2.9's shapes (`ConnectEventMsg`,
//! `DisconnectEventMsg`):
//!
//! * `$SYS.ACCOUNT.<acc>.CONNECT`: `{"type": "io.nats.server.advisory.v1.client_connect",
//!   "id", "timestamp", "server": {...}, "client": {start, host, id, acc, user, name, lang,
//!   ver, kind, client_type}}` when a client logs in, or a leafnode link is accepted, into
//!   account `acc`;
//! * `$SYS.ACCOUNT.<acc>.DISCONNECT`: `client_disconnect`, the same `client` plus `stop`,
//!   and `sent` / `received` (`{msgs, bytes}`, the connection's view: what it sent us) and
//!   `reason` (nats-server's words: `Client Closed`, `Read Error`, `Slow Consumer (Pending
//!   Bytes)`, ...) when it ends.
//!
//! The global account (`$G`) emits none, as in nats-server. Accepted leafnode links send
//! both with `kind` `Leafnode`, as nats-server 2.9 does for a leaf that logged in as a
//! client user; nats-server sends no connect advisory for a leaf of
//! `leafnodes.authorization`, we send them for every accepted link bound to an account.
//!
//! An accepted leafnode link's advisory also goes out on `$SYS.ACCOUNT.<acc>.LEAFNODE.CONNECT`
//! and `.LEAFNODE.DISCONNECT`, the subjects fleet tools ask for, with `acc` at the top level
//! too. nats-server 2.9 publishes `LEAFNODE.CONNECT` only to its gateways (a body of just
//! `server` and `acc`, which ours contains) and has no `LEAFNODE.DISCONNECT`: a tool written
//! against nats-server listens to `CONNECT`/`DISCONNECT` and finds the same there.
//!
//! The connection's task only checks that someone listens, renders the JSON and hands it to
//! a bounded queue ([`super::MAX_QUEUED`] messages, [`super::MAX_QUEUED_BYTES`] bytes); one
//! task publishes. A full queue drops the advisory and counts it ([`Events::dropped`]).

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::debug;

use crate::monitor::system_rfc3339;
use crate::server::{Account, Msg, Shared};

/// nats-server's type of the connect advisory.
pub const CONNECT_TYPE: &str = "io.nats.server.advisory.v1.client_connect";
/// nats-server's type of the disconnect advisory.
pub const DISCONNECT_TYPE: &str = "io.nats.server.advisory.v1.client_disconnect";

/// What kind of connection an advisory is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A client connection.
    Client,
    /// An accepted leafnode link.
    Leafnode,
}

/// The connection an advisory describes (nats-server's `ClientInfo`).
#[derive(Debug, Clone)]
pub struct ClientInfo<'a> {
    /// When it connected.
    pub start: SystemTime,
    /// The peer's address.
    pub host: IpAddr,
    /// The connection (or link) id.
    pub id: u64,
    /// Its account.
    pub account: &'a str,
    /// Who it logged in as.
    pub user: &'a str,
    /// CONNECT's `name` (a leaf: its server name).
    pub name: &'a str,
    /// CONNECT's `lang`.
    pub lang: &'a str,
    /// CONNECT's `version`.
    pub version: &'a str,
    /// Client or leafnode.
    pub kind: LinkKind,
}

impl ClientInfo<'_> {
    /// The `client` object; with `stop`, the disconnect's.
    fn to_json(&self, stop: Option<SystemTime>) -> Value {
        let mut c = serde_json::Map::new();
        c.insert("start".into(), json!(system_rfc3339(self.start)));
        c.insert("host".into(), json!(self.host.to_string()));
        c.insert("id".into(), json!(self.id));
        c.insert("acc".into(), json!(self.account));
        // nats-server leaves empty strings out.
        for (key, v) in [
            ("user", self.user),
            ("name", self.name),
            ("lang", self.lang),
            ("ver", self.version),
        ] {
            if !v.is_empty() {
                c.insert(key.into(), json!(v));
            }
        }
        if let Some(stop) = stop {
            c.insert("stop".into(), json!(system_rfc3339(stop)));
        }
        match self.kind {
            LinkKind::Client => {
                c.insert("kind".into(), json!("Client"));
                c.insert("client_type".into(), json!("nats"));
            }
            LinkKind::Leafnode => {
                c.insert("kind".into(), json!("Leafnode"));
            }
        }
        Value::Object(c)
    }
}

/// Messages and bytes, one direction (nats-server's `DataStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Messages.
    pub msgs: u64,
    /// Bytes.
    pub bytes: u64,
}

impl DataStats {
    fn to_json(self) -> Value {
        json!({ "msgs": self.msgs, "bytes": self.bytes })
    }
}

/// One message for the publishing task.
struct Queued {
    subject: String,
    body: Vec<u8>,
}

/// The advisories of one server: a bounded queue to the task that publishes them in the
/// system account.
pub struct Events {
    shared: Weak<Shared>,
    account: Arc<Account>,
    /// JetStream's domain (the `server` block's `domain`).
    domain: Option<String>,
    /// The `server` block's `seq`, shared with the requests' answers.
    pub(crate) seq: AtomicU64,
    queue: mpsc::Sender<Queued>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: AtomicU64,
    /// Event ids: a random prefix and a counter.
    id_prefix: String,
    next_id: AtomicU64,
}

impl Events {
    /// The advisories of `shared` in `account`, and the task that publishes them (to be
    /// spawned).
    pub(crate) fn new(
        shared: &Arc<Shared>,
        account: &Arc<Account>,
        domain: Option<String>,
    ) -> (Events, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel::<Queued>(super::MAX_QUEUED);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let publisher = {
            let account = account.clone();
            let queued_bytes = queued_bytes.clone();
            async move {
                while let Some(q) = rx.recv().await {
                    queued_bytes.fetch_sub(q.body.len(), Ordering::Relaxed);
                    account.publish(&Msg {
                        subject: q.subject.as_bytes(),
                        reply: None,
                        headers: None,
                        payload: &q.body,
                    });
                }
            }
        };
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let id_prefix = (0..12)
            .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
            .collect();
        let events = Events {
            shared: Arc::downgrade(shared),
            account: account.clone(),
            domain,
            seq: AtomicU64::new(0),
            queue: tx,
            queued_bytes,
            dropped: AtomicU64::new(0),
            id_prefix,
            next_id: AtomicU64::new(0),
        };
        (events, publisher)
    }

    /// The system account.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// JetStream's domain, if it has one.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Advisories and requests dropped because their queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts one dropped message.
    pub(crate) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The `server` block for the next message.
    pub(crate) fn server_block(&self, shared: &Shared) -> Value {
        super::server_block(shared, self.domain.as_deref(), &self.seq)
    }

    /// `client` (a client or an accepted leafnode link) logged in.
    pub fn connected(&self, client: &ClientInfo<'_>) {
        for subject in subjects(client, "CONNECT") {
            self.send(
                client.account,
                subject,
                |ev| {
                    ev.insert("client".into(), client.to_json(None));
                    if matches!(client.kind, LinkKind::Leafnode) {
                        ev.insert("acc".into(), json!(client.account));
                    }
                },
                CONNECT_TYPE,
            );
        }
    }

    /// `client` ended because of `reason`, having sent us `sent` and received `received`.
    pub fn disconnected(
        &self,
        client: &ClientInfo<'_>,
        sent: DataStats,
        received: DataStats,
        reason: &str,
    ) {
        for subject in subjects(client, "DISCONNECT") {
            self.send(
                client.account,
                subject,
                |ev| {
                    ev.insert("client".into(), client.to_json(Some(SystemTime::now())));
                    ev.insert("sent".into(), sent.to_json());
                    ev.insert("received".into(), received.to_json());
                    ev.insert("reason".into(), json!(reason));
                    if matches!(client.kind, LinkKind::Leafnode) {
                        ev.insert("acc".into(), json!(client.account));
                    }
                },
                DISCONNECT_TYPE,
            );
        }
    }

    /// Renders and queues one advisory about account `of`, unless it is the global account
    /// or nobody listens.
    fn send(
        &self,
        of: &str,
        subject: String,
        fill: impl FnOnce(&mut serde_json::Map<String, Value>),
        kind: &str,
    ) {
        if of == crate::server::GLOBAL_ACCOUNT || !self.account.has_interest(subject.as_bytes()) {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut ev = serde_json::Map::new();
        ev.insert("type".into(), json!(kind));
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        ev.insert("id".into(), json!(format!("{}{n:010}", self.id_prefix)));
        ev.insert(
            "timestamp".into(),
            json!(leaf_proto::time::rfc3339(leaf_proto::time::now_ns())),
        );
        ev.insert("server".into(), self.server_block(&shared));
        fill(&mut ev);
        let body = serde_json::to_vec(&Value::Object(ev)).unwrap_or_default();
        self.enqueue(subject, body);
    }

    /// Queues `body` for `subject`, or drops and counts it when the queue is full.
    fn enqueue(&self, subject: String, body: Vec<u8>) {
        let len = body.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > super::MAX_QUEUED_BYTES
            || self.queue.try_send(Queued { subject, body }).is_err()
        {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.count_dropped();
            debug!(
                dropped = self.dropped(),
                "system account advisory dropped: queue full"
            );
        }
    }
}

/// The subjects of an advisory `what` (`CONNECT`, `DISCONNECT`) about `client`: the
/// account's, and for a leafnode link also the account's `LEAFNODE.` one.
fn subjects(client: &ClientInfo<'_>, what: &str) -> Vec<String> {
    let mut subjects = vec![format!("$SYS.ACCOUNT.{}.{what}", client.account)];
    if matches!(client.kind, LinkKind::Leafnode) {
        subjects.push(format!("$SYS.ACCOUNT.{}.LEAFNODE.{what}", client.account));
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{InternalSink, Publisher, Server, ServerOptions};

    /// Counts what it receives.
    #[derive(Default)]
    struct Count(AtomicU64);

    impl InternalSink for Count {
        fn deliver(&self, _: &Msg<'_>, _: &Publisher) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn client(account: &str) -> ClientInfo<'_> {
        ClientInfo {
            start: SystemTime::now(),
            host: "127.0.0.1".parse().unwrap(),
            id: 1,
            account,
            user: "u",
            name: "n",
            lang: "rust",
            version: "1",
            kind: LinkKind::Client,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_the_global_account_is_silent() {
        let server = Server::bind(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let shared = server.shared().clone();
        let system = shared.accounts.add("SYS");
        let (events, publisher) = Events::new(&shared, &system, None);
        // Nobody listens: nothing is rendered or queued.
        events.connected(&client("A"));
        assert_eq!(events.queued_bytes.load(Ordering::Relaxed), 0);
        let seen = Arc::new(Count::default());
        let _sub = system
            .subscribe_internal(b"$SYS.ACCOUNT.>", None, seen.clone())
            .unwrap();
        // The global account emits nothing.
        events.connected(&client(crate::server::GLOBAL_ACCOUNT));
        assert_eq!(events.queued_bytes.load(Ordering::Relaxed), 0);
        // The publisher is not running: past MAX_QUEUED the rest is dropped and counted.
        for _ in 0..super::super::MAX_QUEUED + 5 {
            events.connected(&client("A"));
        }
        assert_eq!(events.dropped(), 5);
        let task = tokio::spawn(publisher);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while seen.0.load(Ordering::Relaxed) < super::super::MAX_QUEUED as u64 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the queued advisories are published");
        assert_eq!(events.queued_bytes.load(Ordering::Relaxed), 0);
        task.abort();
    }

    #[test]
    fn client_json_leaves_empty_fields_out_and_names_the_kind() {
        let info = ClientInfo {
            start: SystemTime::UNIX_EPOCH,
            host: "127.0.0.1".parse().unwrap(),
            id: 7,
            account: "A",
            user: "a",
            name: "",
            lang: "rust",
            version: "0.51",
            kind: LinkKind::Client,
        };
        let c = info.to_json(None);
        assert_eq!(c["acc"], "A");
        assert_eq!(c["kind"], "Client");
        assert_eq!(c["client_type"], "nats");
        assert!(c.get("name").is_none() && c.get("stop").is_none());
        let leaf = ClientInfo {
            kind: LinkKind::Leafnode,
            ..info
        };
        let c = leaf.to_json(Some(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1),
        ));
        assert_eq!(c["kind"], "Leafnode");
        assert!(c.get("client_type").is_none());
        assert_eq!(c["stop"], "1970-01-01T00:00:01Z");
    }
}
