//! The speaker's answers to the status queries (`xroute bgp`, the stats endpoint),
//! in the northbound types of [`crate::bgp::northbound`].

use super::*;

impl Speaker {
    pub(super) fn query(&self, q: Query) -> Reply {
        match q {
            Query::Global => Reply::Global(GlobalStatus {
                asn: self.config.asn,
                router_id: self.config.router_id,
                listen: self.config.listen.clone(),
                rr_cluster_id: self.config.rr_cluster_id.map(Ipv4Addr::from),
                prefixes: self.rib.len(),
            }),
            Query::Neighbors => Reply::Neighbors(
                self.peers
                    .values()
                    .map(|p| {
                        let accepted = self.rib.peer_len(p.id);
                        NeighborStatus {
                            address: p.n.address,
                            port: p.n.port,
                            asn: p.n.asn,
                            router_id: p.up.as_ref().map(|u| u.theirs.router_id),
                            state: state_name(p.state).to_string(),
                            since: p.since.elapsed().as_secs(),
                            internal: p.n.internal,
                            rr_client: p.n.rr_client,
                            received: accepted + p.rejected.len(),
                            accepted,
                            advertised: p.adj_out.len(),
                            updates_received: p.updates_received,
                            updates_sent: p.updates_sent,
                            stale: p.stale.len(),
                            unreachable_next_hop: self.held.count(p.id),
                            refused: p.refused.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                            last_error: p.last_error.clone(),
                        }
                    })
                    .collect(),
            ),
            Query::Rib(f) => {
                let now = rib::clock();
                let mut rows: BTreeMap<Cidr, RibEntry> = BTreeMap::new();
                for (prefix, best) in self.rib.iter().filter(|(p, _)| Family::of(p) == f) {
                    let paths = self
                        .rib
                        .paths(&prefix)
                        .iter()
                        .map(|path| RibPath {
                            age: now.saturating_sub(path.since),
                            best: *path == best.best,
                            multipath: best.multipath.contains(&path.attrs.next_hop),
                            from: if path.source.local {
                                "local".into()
                            } else {
                                path.source.address.to_string()
                            },
                            ..rib_path(&path.attrs)
                        })
                        .collect();
                    rows.insert(
                        prefix,
                        RibEntry {
                            prefix: prefix.to_string(),
                            paths,
                        },
                    );
                }
                for (peer, prefix, attrs) in self.held.iter().filter(|(_, p, _)| Family::of(p) == f)
                {
                    let from = self
                        .peers
                        .get(&peer)
                        .map_or_else(String::new, |p| p.n.address.to_string());
                    rows.entry(*prefix)
                        .or_insert_with(|| RibEntry {
                            prefix: prefix.to_string(),
                            paths: Vec::new(),
                        })
                        .paths
                        .push(RibPath {
                            unreachable: true,
                            from,
                            ..rib_path(attrs)
                        });
                }
                Reply::Rib(rows.into_values().collect())
            }
        }
    }
}
