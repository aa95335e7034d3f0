//! The system account: the requests and advisories nats-server 2.9 serves there
//! (its `events.go`), so NATS monitoring tools work against leafd and hubd.
//!
//! * Requests ([`requests`]): `$SYS.REQ.SERVER.PING` (the `statsz` body),
//!   `$SYS.REQ.SERVER.PING.<KIND>` and `$SYS.REQ.SERVER.<server id>.<KIND>` for `KIND` in
//!   STATSZ, VARZ, CONNZ, LEAFZ, SUBSZ, JSZ, ACCOUNTZ, HEALTHZ. The answer is
//!   `{"server": {...}, "data": ...}` (or `"error": {code, description}`), built by the
//!   monitoring port's page builders; the request body may carry the page's options and
//!   nats-server's filters (`server_name`, `host`, `cluster`, `tags`, `domain`: a server
//!   they do not match stays silent). Unknown fields are ignored.
//! * Advisories ([`events`]): `$SYS.ACCOUNT.<acc>.CONNECT` and `.DISCONNECT` for the
//!   clients and accepted leafnode links of every account but the global one (`$G` emits
//!   none, as in nats-server).
//!
//! Everything lives in the system account's subject space (`system_account`, `$SYS` when the
//! configuration names none): only its users see it. As in nats-server, the services run
//! even when the system account has no users (nobody can reach them then).
//!
//! Nothing here can hold a connection: advisories and requests go through bounded queues
//! ([`MAX_QUEUED_BYTES`], [`MAX_QUEUED`]) to one task that publishes; what does not fit is
//! dropped and counted ([`Events::dropped`], `/metrics`' `leafd_system_dropped_total`).

pub mod events;
pub mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{json, Value};

use crate::server::{Account, Shared};

pub use events::{ClientInfo, Events, LinkKind};

/// The system account's name when the configuration names none.
pub const DEFAULT_SYSTEM_ACCOUNT: &str = "$SYS";

/// Most messages (advisories and requests, each queue) waiting for the system task.
pub const MAX_QUEUED: usize = 256;

/// Most bytes of advisories waiting to be published; past it an advisory is dropped.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Where the server finds its system account's services, once they run.
#[derive(Default)]
pub struct Slot(RwLock<Option<Arc<Events>>>);

impl Slot {
    /// The running services' advisories, if the system account is served.
    pub fn events(&self) -> Option<Arc<Events>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The system account's name, if it is served.
    pub fn account_name(&self) -> Option<String> {
        self.events().map(|e| e.account().name().to_owned())
    }

    pub(crate) fn set(&self, events: Option<Arc<Events>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = events;
    }
}

/// The `server` block heading everything the system account's services send, as nats-server's
/// `ServerInfo`: `name`, `host`, `id`, `domain` (JetStream's, when set), `ver`, `seq` (one
/// counter per server), `jetstream`, `time`.
pub fn server_block(shared: &Shared, domain: Option<&str>, seq: &AtomicU64) -> Value {
    let mut block = json!({
        "name": shared.opts.server_name.clone().unwrap_or_else(|| shared.server_id.clone()),
        "host": shared.opts.host,
        "id": shared.server_id,
        "ver": crate::server::info::NATS_FEATURE_LEVEL,
        "seq": seq.fetch_add(1, Ordering::Relaxed) + 1,
        "jetstream": shared.jetstream.load(Ordering::Relaxed),
        "time": leaf_proto::time::rfc3339(leaf_proto::time::now_ns()),
    });
    if let Some(domain) = domain.filter(|d| !d.is_empty()) {
        block["domain"] = json!(domain);
    }
    block
}

/// The running services of the system account: stops them when dropped.
pub struct Service {
    shared: Arc<Shared>,
    account: Arc<Account>,
    subs: Vec<crate::server::SubRef>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Serves the requests and advisories in `account` (created if the server does not have it)
    /// with the pages of `sources`.
    pub fn start(
        sources: crate::monitor::Sources,
        shared: &Arc<Shared>,
        account: &str,
    ) -> Result<Service, String> {
        let account = shared.accounts.add(account);
        let domain = sources
            .jetstream
            .as_ref()
            .and_then(|js| js.domain().map(str::to_owned));
        let (events, publisher) = Events::new(shared, &account, domain);
        let events = Arc::new(events);
        let (subs, worker) = requests::start(sources, shared, &account, &events)
            .map_err(|e| format!("system account {}: {e}", account.name()))?;
        shared.system.set(Some(events));
        Ok(Service {
            shared: shared.clone(),
            account,
            subs,
            tasks: vec![tokio::spawn(publisher), tokio::spawn(worker)],
        })
    }

    /// The system account.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shared.system.set(None);
        for sub in &self.subs {
            self.account.unsubscribe_internal(sub);
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
