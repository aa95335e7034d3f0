//! The JetStream of every account, started at boot (the configuration's accounts) or at run
//! time (an account JWT that enables JetStream, when hubd's resolver loads or updates it).
//!
//! One [`AccountJetStreams`] per server with JetStream. Each account is in one of three
//! states: serving (its engine runs, with its store under `<store_dir>/accounts/<account>`),
//! switched off (its engine is suspended: the API answers 10039, the data stays on disk and
//! comes back when JetStream is enabled again), or without JetStream (its API answers 10039
//! through [`super::disabled`]). [`AccountJetStreams::enable`] and
//! [`AccountJetStreams::disable`] move an account between them; a server without JetStream
//! has no registry, and accounts there get no answer at all (as on nats-server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tracing::info;

use super::{disabled, JetStream, JetStreamError, JetStreamOptions};
use crate::server::{Account, Shared, SubRef};

/// An account's JetStream limits (`None`: the server's, or unlimited for the counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// Most bytes of `storage: memory` streams (set when the engine starts).
    pub max_memory_bytes: Option<u64>,
    /// Most bytes of `storage: file` streams (set when the engine starts).
    pub max_file_bytes: Option<u64>,
    /// Most streams (changed at once).
    pub max_streams: Option<u64>,
    /// Most consumers (changed at once).
    pub max_consumers: Option<u64>,
}

/// Where one account stands.
enum State {
    /// The engine runs (possibly suspended: switched off, the data kept).
    Engine(JetStream),
    /// No JetStream: the subscription answering 10039.
    Refused(SubRef),
}

/// The per-account JetStreams of one server (see the module documentation).
pub struct AccountJetStreams {
    server: Weak<Shared>,
    /// The server's JetStream options: the store directory accounts live under, the domain,
    /// the storage limits an account without its own gets.
    base: JetStreamOptions,
    by_account: Mutex<HashMap<String, State>>,
}

impl AccountJetStreams {
    /// An empty registry for `server`, whose JetStream options are `base`.
    pub fn new(server: &Arc<Shared>, base: JetStreamOptions) -> AccountJetStreams {
        AccountJetStreams {
            server: Arc::downgrade(server),
            base,
            by_account: Mutex::new(HashMap::new()),
        }
    }

    /// Records the engine started at boot for `account`.
    pub fn insert(&self, account: &str, engine: JetStream) {
        self.lock()
            .insert(account.to_string(), State::Engine(engine));
    }

    /// Makes `account` answer 10039 (it has no JetStream), unless it has an engine already.
    pub fn refuse(&self, account: &Arc<Account>) -> Result<(), JetStreamError> {
        let mut all = self.lock();
        if all.contains_key(account.name()) {
            return Ok(());
        }
        let sub = disabled::serve_not_enabled(account)
            .map_err(|e| JetStreamError::Subscribe(e.to_string()))?;
        all.insert(account.name().to_string(), State::Refused(sub));
        Ok(())
    }

    /// The running (or suspended) engine of `account`.
    pub fn get(&self, account: &str) -> Option<JetStream> {
        match self.lock().get(account) {
            Some(State::Engine(js)) => Some(js.clone()),
            _ => None,
        }
    }

    /// Every running (or suspended) engine, by account name in order (`/jsz`).
    pub fn engines(&self) -> Vec<(String, JetStream)> {
        let mut engines: Vec<(String, JetStream)> = self
            .lock()
            .iter()
            .filter_map(|(name, state)| match state {
                State::Engine(js) => Some((name.clone(), js.clone())),
                State::Refused(_) => None,
            })
            .collect();
        engines.sort_by(|a, b| a.0.cmp(&b.0));
        engines
    }

    /// Gives `account` JetStream with `limits`: starts its engine (store under
    /// `<store_dir>/accounts/<account>`), switches a suspended one on again, or applies the
    /// limits to the running one (the stream and consumer counts at once; storage limits are
    /// those the engine started with).
    pub fn enable(
        &self,
        account: &Arc<Account>,
        limits: AccountLimits,
    ) -> Result<JetStream, JetStreamError> {
        let mut all = self.lock();
        let name = account.name();
        if let Some(State::Engine(js)) = all.get(name) {
            js.set_counts(limits.max_streams, limits.max_consumers);
            js.resume()?;
            return Ok(js.clone());
        }
        let Some(server) = self.server.upgrade() else {
            return Err(JetStreamError::Subscribe(
                "the server is shutting down".into(),
            ));
        };
        if let Some(State::Refused(sub)) = all.remove(name) {
            account.unsubscribe_internal(&sub);
        }
        let options = JetStreamOptions {
            store_dir: self.base.store_dir.join("accounts").join(name),
            domain: self.base.domain.clone(),
            max_file_bytes: limits.max_file_bytes.or(self.base.max_file_bytes),
            max_memory_bytes: limits.max_memory_bytes.or(self.base.max_memory_bytes),
            max_streams: limits.max_streams,
            max_consumers: limits.max_consumers,
        };
        match JetStream::start(&server, account, options) {
            Ok(js) => {
                info!(account = name, "JetStream enabled for the account");
                all.insert(name.to_string(), State::Engine(js.clone()));
                Ok(js)
            }
            Err(e) => {
                // Still answered: not enabled.
                if let Ok(sub) = disabled::serve_not_enabled(account) {
                    all.insert(name.to_string(), State::Refused(sub));
                }
                Err(e)
            }
        }
    }

    /// Takes JetStream from `account`: a running engine is suspended (its data stays and
    /// comes back with [`AccountJetStreams::enable`]); an account that never had one answers
    /// 10039.
    pub fn disable(&self, account: &Arc<Account>) -> Result<(), JetStreamError> {
        if let Some(State::Engine(js)) = self.lock().get(account.name()) {
            js.suspend();
            return Ok(());
        }
        self.refuse(account)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.by_account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jetstream::test_support;

    #[tokio::test]
    async fn accounts_get_switch_off_and_resume_their_engines() {
        let server = test_support::server().await;
        let shared = server.shared().clone();
        let dir = tempfile::tempdir().unwrap();
        let base = test_support::options(dir.path());
        let registry = AccountJetStreams::new(&shared, base);
        let account = shared.accounts.add("ACC");

        // Without JetStream: the API is answered (10039), no engine.
        registry.refuse(&account).unwrap();
        assert!(account.has_interest(b"$JS.API.INFO"));
        assert!(registry.get("ACC").is_none());

        // Enabled: its own store, its limits.
        let limits = AccountLimits {
            max_streams: Some(1),
            ..AccountLimits::default()
        };
        let js = registry.enable(&account, limits).unwrap();
        assert!(dir.path().join("accounts").join("ACC").is_dir());
        assert_eq!(js.inner.max_streams(), Some(1));
        assert_eq!(
            account.sublist.matches(b"$JS.API.INFO").plain.len(),
            1,
            "the 10039 answer is gone, the engine's API took its place"
        );

        // New limits apply to the running engine.
        let more = AccountLimits {
            max_streams: Some(5),
            max_consumers: Some(2),
            ..AccountLimits::default()
        };
        registry.enable(&account, more).unwrap();
        assert_eq!(js.inner.max_streams(), Some(5));
        assert_eq!(js.inner.max_consumers(), Some(2));

        // Switched off, then on again: the same engine.
        registry.disable(&account).unwrap();
        assert!(registry.get("ACC").is_some_and(|j| j.is_suspended()));
        registry.enable(&account, more).unwrap();
        assert!(!js.is_suspended());
    }
}
