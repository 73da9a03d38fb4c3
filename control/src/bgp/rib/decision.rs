//! The decision process of RFC 4271 9.1.2.2, step by step, and what of a decision
//! the FIB needs.

use super::*;

/// The decision for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    pub best: Path,
    /// Next hops of the paths equal to the best up to the router-id tie-break, the
    /// best's first, without repeats: the prefix's ECMP group.
    pub multipath: Vec<IpAddr>,
}

/// Keeps only the candidates for which `key` is smallest.
pub(super) fn keep_min<K: Ord>(c: &mut Vec<&Path>, key: impl Fn(&Path) -> K) {
    if let Some(min) = c.iter().map(|p| key(p)).min() {
        c.retain(|p| key(p) == min);
    }
}

/// The RFC 4271 9.1.2.2 decision among `paths` (with a step for locally originated
/// paths first, as every implementation has). `None` if there are none.
pub fn decide(paths: &[Path]) -> Option<Best> {
    let mut c: Vec<&Path> = paths.iter().collect();
    if c.is_empty() {
        return None;
    }
    keep_min(&mut c, |p| !p.source.local);
    keep_min(&mut c, |p| std::cmp::Reverse(p.local_pref()));
    keep_min(&mut c, |p| p.attrs.as_path_len());
    keep_min(&mut c, |p| p.attrs.origin);
    // c) MED: a path loses to one from the same neighbouring AS with a lower MED
    // (a missing MED is the lowest, 0).
    let med = |p: &Path| p.attrs.med.unwrap_or(0);
    let survivors: Vec<&Path> = c
        .iter()
        .copied()
        .filter(|p| {
            let asn = p.attrs.neighbour_as();
            !c.iter()
                .any(|q| q.attrs.neighbour_as() == asn && med(q) < med(p))
        })
        .collect();
    c = survivors;
    keep_min(&mut c, |p| !p.source.ebgp);
    // (e, interior cost to the next hop: every next hop is one hop away here.)
    let multipath_set = c.clone();
    keep_min(&mut c, |p| p.origin_id());
    keep_min(&mut c, |p| p.attrs.cluster_list.len());
    keep_min(&mut c, |p| p.source.address);
    let best = (*c.first()?).clone();
    let mut multipath = vec![best.attrs.next_hop];
    for p in multipath_set {
        if !multipath.contains(&p.attrs.next_hop) {
            multipath.push(p.attrs.next_hop);
        }
    }
    Some(Best { best, multipath })
}

/// The forwarding side of a prefix's decision: what the FIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The best path is this node's own (it never goes to the FIB).
    pub local: bool,
    /// The ECMP next hops, the best's first. Shared: a change costs no allocation.
    pub hops: Arc<[IpAddr]>,
}
