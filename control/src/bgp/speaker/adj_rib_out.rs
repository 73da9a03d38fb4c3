//! Adj-RIB-Out: what each peer was sent, so that only differences go on the wire;
//! a peer that comes up or asks for a refresh gets everything, then End-of-RIB; the
//! FIB batch of a burst goes out with the messages.

use super::*;

impl Speaker {
    /// Sends a peer that just came up (or asked for a refresh) everything it should
    /// have, then End-of-RIB.
    pub(super) fn advertise_all(&mut self, id: PeerId, only: Option<Family>) {
        let prefixes: Vec<Cidr> = self
            .rib
            .prefixes()
            .filter(|p| only.is_none_or(|f| Family::of(p) == f))
            .collect();
        let Some(p) = self.peers.get(&id) else { return };
        let Some(up) = &p.up else { return };
        let families: Vec<Family> = up
            .families
            .iter()
            .copied()
            .filter(|f| only.is_none_or(|o| o == *f))
            .collect();
        let mut msgs = self.diff(id, &prefixes);
        for f in families {
            msgs.push(wire::encode_end_of_rib(f));
        }
        self.send(id, msgs);
    }

    /// Brings peer `id`'s Adj-RIB-Out up to date for `prefixes`; returns the messages.
    pub(super) fn diff(&mut self, id: PeerId, prefixes: &[Cidr]) -> Vec<Vec<u8>> {
        let Some(p) = self.peers.get(&id) else {
            return Vec::new();
        };
        let Some(up) = &p.up else { return Vec::new() };
        let asn4 = up.asn4;
        let mut announce: HashMap<(Family, Arc<PathAttrs>), Vec<Cidr>> = HashMap::new();
        let mut withdraw: HashMap<Family, Vec<Cidr>> = HashMap::new();
        let mut updates = Vec::new();
        for prefix in prefixes {
            let new = self.export(p, prefix, self.rib.best(prefix).as_ref());
            let old = p.adj_out.get(prefix);
            match (old, new) {
                (Some(o), Some(n)) if *o == n => {}
                (_, Some(n)) => {
                    announce
                        .entry((Family::of(prefix), Arc::clone(&n)))
                        .or_default()
                        .push(*prefix);
                    updates.push((*prefix, Some(n)));
                }
                (Some(_), None) => {
                    withdraw
                        .entry(Family::of(prefix))
                        .or_default()
                        .push(*prefix);
                    updates.push((*prefix, None));
                }
                (None, None) => {}
            }
        }
        let mut msgs = Vec::new();
        for (f, w) in &withdraw {
            msgs.extend(wire::encode_withdraw(*f, w));
        }
        for ((f, attrs), prefixes) in &announce {
            msgs.extend(wire::encode_announce(*f, prefixes, attrs, asn4));
        }
        if let Some(p) = self.peers.get_mut(&id) {
            for (prefix, a) in updates {
                match a {
                    Some(a) => {
                        p.adj_out.insert(prefix, a);
                    }
                    None => {
                        p.adj_out.remove(&prefix);
                    }
                }
            }
        }
        msgs
    }

    pub(super) fn send(&mut self, id: PeerId, msgs: Vec<Vec<u8>>) {
        if msgs.is_empty() {
            return;
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.updates_sent += msgs.len() as u64;
            let _ = p.handle.commands.send(Command::Send(msgs));
        }
    }

    /// After a burst: exports the changed prefixes and hands the FIB its batch.
    /// Sends what changed: UPDATEs to the peers, the batch to the FIB (with whether a
    /// peer's initial table is still coming in).
    pub(super) fn flush(&mut self) {
        if !self.dirty.is_empty() {
            let dirty: Vec<Cidr> = self.dirty.drain().collect();
            let ids: Vec<PeerId> = self
                .peers
                .values()
                .filter(|p| p.up.is_some())
                .map(|p| p.id)
                .collect();
            for id in ids {
                let msgs = self.diff(id, &dirty);
                self.send(id, msgs);
            }
        }
        if self.deferring.is_some() {
            let waiting = self.peers.values().any(|p| match &p.up {
                Some(up) => up.gr && up.families.iter().any(|f| !p.eor.contains(f)),
                None => true,
            });
            if waiting {
                return;
            }
            tracing::info!("graceful restart: End-of-RIB from every peer; installing routes");
            self.deferring = None;
        }
        let now = Instant::now();
        let settling = self.peers.values().any(|p| {
            p.up.as_ref().is_some_and(|up| {
                up.families.iter().any(|f| !p.eor.contains(f))
                    && now.duration_since(p.since) < SETTLE_LIMIT
            })
        });
        if !self.pending_fib.is_empty() || settling != self.settling {
            self.settling = settling;
            let mut batch = std::mem::take(&mut self.pending_fib);
            batch.settling = settling;
            let _ = self.fib.send(batch);
        }
    }
}
