//! What a batch of RIB work changed, compact: per prefix, the index of its new
//! decision; and the FIB's batches built from them.

use super::*;

/// What changed for a prefix: its new decision, or `None` if it has no path left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<P> {
    pub prefix: P,
    pub best: Option<Decision>,
}

/// The changed decisions of one batch (an UPDATE, a peer going away), compact: each
/// change names its decision by index into the batch's distinct decisions, or
/// [`Changes::NONE`] when the prefix has no path left. A full table's worth of changes
/// shares a handful of decisions, so a change costs no reference count and no
/// allocation beyond its 12 bytes (IPv4).
#[derive(Debug)]
pub struct Changes<P> {
    list: Vec<(P, u32)>,
    decisions: Vec<Decision>,
    /// Decision indices by (group, local).
    numbers: Numbering<(usize, bool)>,
}

impl<P> Default for Changes<P> {
    fn default() -> Self {
        Changes {
            list: Vec::new(),
            decisions: Vec::new(),
            numbers: Numbering::default(),
        }
    }
}

/// Numbers for keys in the order they are first seen. The last key asked for is
/// remembered: most consecutive changes share their group.
#[derive(Debug, Clone)]
pub(super) struct Numbering<K> {
    index: HashMap<K, u32, DefaultHashBuilder>,
    last: Option<(K, u32)>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Numbering {
            index: HashMap::default(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Numbering<K> {
    fn clear(&mut self) {
        self.index.clear();
        self.last = None;
    }

    /// The number of `key`, and whether it is new (then it is `next`, the count of
    /// keys so far).
    fn number(&mut self, key: K, next: usize) -> (u32, bool) {
        if let Some((k, i)) = self.last {
            if k == key {
                return (i, false);
            }
        }
        let (i, new) = match self.index.get(&key) {
            Some(&i) => (i, false),
            None => {
                let i = next as u32;
                self.index.insert(key, i);
                (i, true)
            }
        };
        self.last = Some((key, i));
        (i, new)
    }
}

/// A group's key in a batch: its address. A batch holds a reference to every group it
/// names, so no other group can take that address while the batch lives.
pub(super) fn group_key(hops: &Hops) -> usize {
    Arc::as_ptr(hops) as *const IpAddr as usize
}

impl<P: Copy> Changes<P> {
    /// The decision index of a prefix left without a path.
    pub const NONE: u32 = u32::MAX;

    pub(super) fn push(&mut self, prefix: P, best: Option<(&Hops, bool)>) {
        let d = match best {
            Some((hops, local)) => self.decision(hops, local),
            None => Self::NONE,
        };
        self.list.push((prefix, d));
    }

    fn decision(&mut self, hops: &Hops, local: bool) -> u32 {
        let key = (group_key(hops), local);
        let (i, new) = self.numbers.number(key, self.decisions.len());
        if new {
            self.decisions.push(Decision {
                local,
                hops: Arc::clone(hops),
            });
        }
        i
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.decisions.clear();
        self.numbers.clear();
    }

    /// The distinct decisions the changes name.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The decision a change names (`None` for [`Changes::NONE`]).
    pub fn decision_of(&self, d: u32) -> Option<&Decision> {
        self.decisions.get(d as usize)
    }

    /// Every change in order, with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (P, Option<&Decision>)> + '_ {
        self.list.iter().map(|&(p, d)| (p, self.decision_of(d)))
    }

    /// The changes one by one, each with its own copy of its decision.
    pub fn to_vec(&self) -> Vec<Change<P>> {
        self.iter()
            .map(|(prefix, d)| Change {
                prefix,
                best: d.cloned(),
            })
            .collect()
    }
}

/// Best-path changes for the FIB, per family, compact (a change costs 12 bytes for
/// IPv4): each names its ECMP group by its index in `groups`, or [`FibBatch::NONE`]
/// when the prefix has no learned route left. The groups are shared with the RIB, so a
/// batch takes one reference per group, not one per route.
#[derive(Debug, Clone, Default)]
pub struct FibBatch {
    pub v4: Vec<(Prefix<u32>, u32)>,
    pub v6: Vec<(Prefix<u128>, u32)>,
    pub groups: Vec<Hops>,
    /// A peer is still sending its initial table (no End-of-RIB yet): more of the
    /// burst is coming, so the FIB may wait for it.
    pub settling: bool,
    /// Group indices by the group's address, for `push`.
    numbers: Numbering<usize>,
    /// Group indices of a [`Changes`]' decisions, while one is appended.
    remap: Vec<u32>,
}

/// An ECMP group's next hops, shared.
pub type Hops = Arc<[IpAddr]>;

impl FibBatch {
    /// The group index of a change that removes the prefix's route.
    pub const NONE: u32 = u32::MAX;

    fn group(&mut self, hops: &Hops) -> u32 {
        let (i, new) = self.numbers.number(group_key(hops), self.groups.len());
        if new {
            self.groups.push(Arc::clone(hops));
        }
        i
    }

    /// Adds a change; our own paths never go to the FIB (they remove the route there).
    pub fn push(&mut self, c: &Change<Cidr>) {
        let g = match &c.best {
            Some(b) if !b.local => self.group(&b.hops),
            _ => Self::NONE,
        };
        match c.prefix {
            Cidr::V4(p) => self.v4.push((p, g)),
            Cidr::V6(p) => self.v6.push((p, g)),
        }
    }

    /// Appends a family's changes, given its list (`v4` or `v6`) with the change's
    /// prefix in it.
    fn extend_from<P: Copy>(
        &mut self,
        changes: &Changes<P>,
        list: impl Fn(&mut FibBatch) -> &mut Vec<(P, u32)>,
    ) {
        let mut remap = std::mem::take(&mut self.remap);
        remap.clear();
        for d in &changes.decisions {
            // Our own paths never go to the FIB (they remove the route there).
            remap.push(if d.local {
                Self::NONE
            } else {
                self.group(&d.hops)
            });
        }
        list(self).extend(
            changes
                .list
                .iter()
                .map(|&(p, d)| (p, remap.get(d as usize).copied().unwrap_or(Self::NONE))),
        );
        self.remap = remap;
    }

    /// Appends the changes of both families.
    pub fn extend(&mut self, changes: &RibChanges) {
        self.extend_from(&changes.v4, |b| &mut b.v4);
        self.extend_from(&changes.v6, |b| &mut b.v6);
    }

    /// Appends `other`'s changes after this batch's.
    pub fn append(&mut self, other: FibBatch) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.settling = other.settling;
        let map: Vec<u32> = other.groups.iter().map(|g| self.group(g)).collect();
        let re = |g: u32| if g == Self::NONE { g } else { map[g as usize] };
        self.v4
            .extend(other.v4.into_iter().map(|(p, g)| (p, re(g))));
        self.v6
            .extend(other.v6.into_iter().map(|(p, g)| (p, re(g))));
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The next hops of group `g` (`None` for [`FibBatch::NONE`]).
    pub fn hops(&self, g: u32) -> Option<&Hops> {
        self.groups.get(g as usize)
    }

    /// Every change, IPv4 first, each family in order.
    pub fn iter(&self) -> impl Iterator<Item = (Cidr, Option<&Hops>)> + '_ {
        self.v4
            .iter()
            .map(|(p, g)| (Cidr::V4(*p), self.hops(*g)))
            .chain(self.v6.iter().map(|(p, g)| (Cidr::V6(*p), self.hops(*g))))
    }
}
