//! The server's links to other servers, as the server sees them: something told about every
//! change of its interest, and run with it.
//!
//! The leafnode layer (`crate::leafnode::LeafState`) implements [`Peers`]; the server holds it
//! as a trait object and knows nothing else of it, so `server` does not depend on `leafnode`
//! (`leafnode` depends on `server`). Components that need more of the links (their status,
//! a remote's connection) get the leafnode handle itself from whoever built the server.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{Account, ClientHandle, Shared, Subscription};

/// Links to other servers: interest announcement and their life with the server.
pub trait Peers: Send + Sync {
    /// Runs `edit`, one change of `account`'s sublist for `sub`, under the peers' interest
    /// lock; when it returns a weight change (the members `sub` adds, `+weight`, or takes
    /// away), the peers of that account that should hear about it are told (`LS+`/`LS-`).
    /// Holding the lock across the sublist change keeps each link's view exact.
    fn announce(
        &self,
        account: &Account,
        sub: &Subscription,
        edit: &mut dyn FnMut() -> Option<i64>,
    );

    /// The server starts serving: the peers start their tasks (listeners, outgoing links).
    /// Each task holds a clone of `done` until it ends and stops when `stop` turns true; the
    /// server's shutdown waits for them.
    fn start(
        self: Arc<Self>,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
        done: &mpsc::Sender<()>,
    );

    /// The server stops accepting: no peer task starts any more, the running ones stop.
    fn stop(&self);

    /// The server enters lame duck mode: the peers tell theirs (leaves and routes, an INFO
    /// with `ldm: true`) and return the connections to close over the lame duck duration
    /// (the accepted leaves). Their listeners watch [`Shared::lame_duck`] themselves.
    fn lame_duck(&self, shared: &Shared) -> Vec<Arc<ClientHandle>> {
        let _ = shared;
        Vec::new()
    }
}
