//! Import and export policy: which paths a peer's UPDATE may bring into the Loc-RIB
//! (AS loops, ORIGINATOR_ID and CLUSTER_LIST loops, `customimportreject`, our own next
//! hop), and what each peer is sent for a prefix (kube-router's export rules, route
//! reflection, prepends, next-hop self, communities).

use super::*;

impl Speaker {
    /// The import policy for an attribute set; `Err` says why its paths are refused.
    pub(super) fn import_attrs(
        &self,
        p: &Peer,
        up: &Negotiated,
        attrs: &PathAttrs,
    ) -> Result<(), &'static str> {
        let ours = self.config.asn;
        if !p.ibgp(ours)
            && attrs.as_path.iter().any(|s| match s {
                AsSegment::Sequence(v) | AsSegment::Set(v) => v.contains(&ours),
            })
        {
            return Err("our ASN in the AS_PATH");
        }
        if attrs.originator_id == Some(self.config.router_id) {
            return Err("our ORIGINATOR_ID");
        }
        if let Some(c) = self.config.rr_cluster_id {
            if attrs.cluster_list.contains(&Ipv4Addr::from(c)) {
                return Err("our cluster in the CLUSTER_LIST");
            }
        }
        if attrs.next_hop.is_unspecified() {
            return Err("next hop is the unspecified address");
        }
        if attrs.next_hop == up.local {
            return Err("next hop is this node");
        }
        Ok(())
    }

    /// The import policy for one prefix.
    pub(super) fn import_prefix(&self, up: &Negotiated, prefix: &Cidr) -> Result<(), &'static str> {
        if !up.families.contains(&Family::of(prefix)) {
            return Err("family not negotiated");
        }
        if self
            .config
            .node
            .import_reject
            .iter()
            .any(|r| covers(r, prefix))
        {
            return Err("customimportreject");
        }
        Ok(())
    }

    /// The path to send `peer` for `prefix`, or `None` to send nothing (withdraw).
    pub(super) fn export(
        &self,
        p: &Peer,
        prefix: &Cidr,
        best: Option<&Best>,
    ) -> Option<Arc<PathAttrs>> {
        let best = best?;
        let up = p.up.as_ref()?;
        let family = Family::of(prefix);
        if !up.families.contains(&family) {
            return None;
        }
        let path = &best.best;
        let src = path.source;
        if src.peer == p.id {
            return None;
        }
        let ibgp = p.ibgp(self.config.asn);
        let mut reflect = false;
        if src.local {
            let l = self.locals.get(prefix)?;
            let allowed = if p.n.internal {
                l.to_cluster
            } else {
                l.to_external
            };
            if !allowed {
                return None;
            }
        } else {
            if !p.n.internal || src.ebgp || !ibgp {
                // kube-router's export policy: learned routes never leave for external
                // peers, and eBGP-learned ones stay on this node.
                return None;
            }
            // iBGP-learned to an iBGP peer: only when reflecting (RFC 4456 6).
            self.config.rr_cluster_id?;
            let from_client = self.peers.get(&src.peer).is_some_and(|s| s.n.rr_client);
            if !(from_client || p.n.rr_client) {
                return None;
            }
            reflect = true;
        }
        let mut a = (*path.attrs).clone();
        let self_hop = self.next_hop_self(up, family)?;
        if ibgp {
            if src.local || self.config.override_nexthop {
                a.next_hop = self_hop;
            }
            if a.local_pref.is_none() {
                a.local_pref = Some(rib::DEFAULT_LOCAL_PREF);
            }
            if reflect {
                a.originator_id = Some(a.originator_id.unwrap_or(src.router_id));
                if let Some(c) = self.config.rr_cluster_id {
                    a.cluster_list.insert(0, Ipv4Addr::from(c));
                }
            }
        } else {
            a.next_hop = self_hop;
            a.local_pref = None;
            a.med = None;
            a.originator_id = None;
            a.cluster_list.clear();
            let mut prepend = Vec::new();
            prepend.push(self.config.asn);
            if let Some(pp) = self.config.node.prepend {
                prepend.extend(std::iter::repeat_n(pp.asn, usize::from(pp.repeat)));
            }
            match a.as_path.first_mut() {
                Some(AsSegment::Sequence(v)) if v.len() + prepend.len() <= 255 => {
                    prepend.append(v);
                    *v = prepend;
                }
                _ => a.as_path.insert(0, AsSegment::Sequence(prepend)),
            }
        }
        Some(Arc::new(a))
    }

    pub(super) fn next_hop_self(&self, up: &Negotiated, family: Family) -> Option<IpAddr> {
        match (family, up.local) {
            (Family::Ipv4, IpAddr::V4(a)) => Some(IpAddr::V4(a)),
            (Family::Ipv6, IpAddr::V6(a)) if !is_link_local(a) => Some(IpAddr::V6(a)),
            (Family::Ipv4, _) => self.config.next_hop4.map(IpAddr::V4),
            (Family::Ipv6, _) => self.config.next_hop6.map(IpAddr::V6),
        }
    }
}
