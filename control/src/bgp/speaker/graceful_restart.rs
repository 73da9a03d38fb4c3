//! Graceful restart (RFC 4724) as helper: a peer whose session dropped without a
//! NOTIFICATION keeps its routes, marked stale, until it comes back and sends
//! End-of-RIB (then the stale ones still unrefreshed go) or its restart time ends.

use super::*;

impl Speaker {
    /// Removes a peer's stale routes (of `family`, or all).
    pub(super) fn sweep_stale(&mut self, id: PeerId, family: Option<Family>) {
        self.sweep_stale_paths(id, family);
        // Routes that resolved other paths' next hops may have gone.
        self.recheck_next_hops();
    }

    pub(super) fn sweep_stale_paths(&mut self, id: PeerId, family: Option<Family>) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let (gone, keep): (Vec<Cidr>, Vec<Cidr>) = p
            .stale
            .drain()
            .partition(|c| family.is_none_or(|f| Family::of(c) == f));
        p.stale = keep.into_iter().collect();
        if p.stale.is_empty() {
            p.stale_until = None;
        }
        let src = p.source;
        if !gone.is_empty() {
            tracing::info!(peer = %p.n.address, routes = gone.len(), "stale routes removed");
        }
        let changes: Vec<Change<Cidr>> = gone
            .into_iter()
            .filter_map(|prefix| self.rib.update(prefix, src, None))
            .collect();
        self.changed(changes);
    }

    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.stale_until.is_some_and(|t| t <= now))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.sweep_stale(id, None);
        }
        if self.deferring.is_some_and(|t| t <= now) {
            tracing::info!("graceful restart: deferral time over; installing routes");
            self.deferring = None;
        }
    }
}
