//! hubd's links to other servers, as the server sees them ([`Peers`]): its leafnode links
//! (the core's `LeafState`) and its cluster's routes ([`Routes`]), told about every interest
//! change under both their locks (the leafnode table's, then the routes'), so that each keeps
//! an exact view.

use std::sync::Arc;

use leaf_core::leafnode::LeafState;
use leaf_core::server::{Account, ClientHandle, Peers, Shared, Subscription};
use tokio::sync::{mpsc, watch};

use crate::route::Routes;

/// The leafnode links and the routes of a hub.
pub struct HubPeers {
    /// The leafnode links (listener and remotes), if configured.
    pub leaf: Option<Arc<LeafState>>,
    /// The cluster's routes, if configured.
    pub routes: Arc<Routes>,
}

impl Peers for HubPeers {
    fn announce(
        &self,
        account: &Account,
        sub: &Subscription,
        edit: &mut dyn FnMut() -> Option<i64>,
    ) {
        let routes = &self.routes;
        match &self.leaf {
            Some(leaf) => {
                leaf.announce(account, sub, &mut || {
                    routes.announce_with(account, sub, edit)
                });
            }
            None => {
                routes.announce_with(account, sub, edit);
            }
        }
    }

    fn start(
        self: Arc<Self>,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
        done: &mpsc::Sender<()>,
    ) {
        if let Some(leaf) = &self.leaf {
            leaf.clone().start(shared, stop, done);
        }
        self.routes.start(shared, stop, done);
    }

    fn stop(&self) {
        if let Some(leaf) = &self.leaf {
            leaf.stop();
        }
    }

    fn lame_duck(&self, shared: &Shared) -> Vec<Arc<ClientHandle>> {
        self.routes.lame_duck(shared);
        match &self.leaf {
            Some(leaf) => leaf.lame_duck(shared),
            None => Vec::new(),
        }
    }
}
