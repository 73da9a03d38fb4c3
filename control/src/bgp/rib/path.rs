//! Paths and their attributes as the RIB keeps them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
}

/// The attributes of a path that the decision process and the export side read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    pub next_hop: IpAddr,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    /// Extended communities (RFC 4360), each as its 8 bytes in network order.
    pub ext_communities: Vec<u64>,
    /// Large communities (RFC 8092): global administrator, local data 1 and 2.
    pub large_communities: Vec<[u32; 3]>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

impl PathAttrs {
    /// AS_PATH length for the decision process: an AS_SET counts as one (RFC 4271
    /// 9.1.2.2 a).
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of the path, if it starts with a sequence.
    pub fn neighbour_as(&self) -> Option<u32> {
        match self.as_path.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub peer: PeerId,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peer's address.
    pub address: IpAddr,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// Originated by this node (its pod CIDR, a service VIP).
    pub local: bool,
}

/// One peer's path to a prefix.
#[derive(Debug, Clone)]
pub struct Path {
    pub source: Source,
    pub attrs: Arc<PathAttrs>,
    /// When it was learned, in seconds of [`clock`] (not part of equality).
    pub since: u32,
}

impl PartialEq for Path {
    fn eq(&self, other: &Path) -> bool {
        self.source == other.source && self.attrs == other.attrs
    }
}

impl Eq for Path {}

/// Seconds since the process's first call: the RIB's timestamps.
pub fn clock() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u32::try_from(epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
}

/// The default LOCAL_PREF of paths that have none (eBGP-learned, local).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

impl Path {
    pub(super) fn local_pref(&self) -> u32 {
        self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    /// The identifier the router-id step compares: ORIGINATOR_ID for reflected paths
    /// (RFC 4456 9).
    pub(super) fn origin_id(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.source.router_id)
    }
}
