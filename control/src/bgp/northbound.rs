//! The BGP speaker's northbound side: the status types `xroute bgp` and the stats
//! endpoint read (global state, neighbours, the RIB), and how attributes are written
//! for people.

use super::fsm::State;
use super::rib::{AsSegment, Origin, PathAttrs};
use super::wire::Family;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, Clone, Copy)]
pub enum Query {
    Global,
    Neighbors,
    Rib(Family),
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Global(GlobalStatus),
    Neighbors(Vec<NeighborStatus>),
    Rib(Vec<RibEntry>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlobalStatus {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub listen: Vec<SocketAddr>,
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub prefixes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NeighborStatus {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub router_id: Option<Ipv4Addr>,
    pub state: String,
    /// Seconds in the present state.
    pub since: u64,
    pub internal: bool,
    pub rr_client: bool,
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub stale: usize,
    /// Paths held out of the decision because their next hop cannot be reached.
    pub unreachable_next_hop: usize,
    /// Paths refused by import policy or validity, by reason, since the session began.
    pub refused: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RibPath {
    pub next_hop: IpAddr,
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    /// Extended communities: `rt:AS:N`, `soo:AS:N`, `rt:IP:N`, or the 8 bytes in hex.
    #[serde(default)]
    pub ext_communities: Vec<String>,
    /// Large communities: `global:local1:local2`.
    #[serde(default)]
    pub large_communities: Vec<String>,
    /// Seconds since it was learned.
    pub age: u32,
    pub best: bool,
    /// In the prefix's ECMP group.
    pub multipath: bool,
    /// Not eligible: its next hop cannot be reached (RFC 4271 9.1.2).
    #[serde(default)]
    pub unreachable: bool,
    pub from: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RibEntry {
    pub prefix: String,
    pub paths: Vec<RibPath>,
}

/// A path as `xroute bgp rib` shows it, not best, not in a group, not unreachable.
pub fn rib_path(a: &PathAttrs) -> RibPath {
    RibPath {
        next_hop: a.next_hop,
        as_path: as_path_text(&a.as_path),
        origin: match a.origin {
            Origin::Igp => "i",
            Origin::Egp => "e",
            Origin::Incomplete => "?",
        }
        .to_string(),
        local_pref: a.local_pref,
        med: a.med,
        communities: a
            .communities
            .iter()
            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
            .collect(),
        ext_communities: a
            .ext_communities
            .iter()
            .map(|&c| ext_community_text(c))
            .collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(|[g, x, y]| format!("{g}:{x}:{y}"))
            .collect(),
        age: 0,
        best: false,
        multipath: false,
        unreachable: false,
        from: String::new(),
    }
}

/// An extended community as operators write it (RFC 4360, RFC 5668): route targets
/// and route origins of the AS-specific and IPv4-specific kinds by name, others in hex.
pub fn ext_community_text(c: u64) -> String {
    let b = c.to_be_bytes();
    let kind = match b[1] {
        0x02 => "rt",
        0x03 => "soo",
        _ => return format!("0x{c:016x}"),
    };
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    match b[0] {
        0x00 => format!("{kind}:{}:{}", u16_at(2), u32_at(4)),
        0x01 => format!("{kind}:{}:{}", Ipv4Addr::from(u32_at(2)), u16_at(6)),
        0x02 => format!("{kind}:{}:{}", u32_at(2), u16_at(6)),
        _ => format!("0x{c:016x}"),
    }
}

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "idle",
        State::Connect => "connect",
        State::Active => "active",
        State::OpenSent => "opensent",
        State::OpenConfirm => "openconfirm",
        State::Established => "established",
    }
}

pub fn as_path_text(path: &[AsSegment]) -> String {
    let mut parts = Vec::new();
    for s in path {
        match s {
            AsSegment::Sequence(v) => parts.extend(v.iter().map(u32::to_string)),
            AsSegment::Set(v) => parts.push(format!(
                "{{{}}}",
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            )),
        }
    }
    parts.join(" ")
}
