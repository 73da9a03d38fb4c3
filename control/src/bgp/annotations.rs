//! kube-router's node annotations for BGP (`kube-router.io/…`), read as kube-router
//! reads them, with errors that name the node and the annotation.
//!
//! A bad annotation never stops the others: a per-node peer whose ASN, address or
//! password is wrong is skipped (and reported), lists of unequal length skip the whole
//! list, and the rest of the node's settings still apply.
//!
//! | annotation | value |
//! |---|---|
//! | `node.asn` | the node's ASN |
//! | `rr.server`, `rr.client` | route-reflector cluster ID (a number or an IPv4 address) |
//! | `peer.ips`, `peer.asns`, `peer.passwords`, `peer.ports`, `peer.localips` | comma lists, one item per peer; passwords base64, ports and passwords may be blank |
//! | `peers` | a YAML list of `{remoteip, remoteasn, password, port, localip}` |
//! | `path-prepend.as`, `path-prepend.repeat-n` | prepend this ASN n times (1 to 8) on export |
//! | `node.bgp.communities` | comma list: `65000:100`, a number, or a well-known name |
//! | `node.bgp.customimportreject` | comma list of CIDRs never imported |

use crate::config::Cidr;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// The annotations' common prefix.
pub const PREFIX: &str = "kube-router.io/";
/// The BGP port when a peer gives none (kube-router's `--bgp-port` default too).
pub const BGP_PORT: u16 = 179;

/// A peer outside the cluster, for this node (or for all nodes, from the flags).
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalPeer {
    pub ip: IpAddr,
    pub asn: u32,
    pub port: u16,
    /// The TCP-MD5 key, decoded from base64 (kept byte for byte, as kube-router does:
    /// `echo pw | base64` includes the newline).
    pub password: Option<Vec<u8>>,
    /// The local address to connect from.
    pub local_ip: Option<IpAddr>,
}

impl fmt::Debug for ExternalPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("ExternalPeer")
            .field("ip", &self.ip)
            .field("asn", &self.asn)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("local_ip", &self.local_ip)
            .finish()
    }
}

/// AS_PATH prepending on export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepend {
    pub asn: u32,
    pub repeat: u8,
}

/// The BGP settings a node's annotations give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBgp {
    pub asn: Option<u32>,
    pub rr_server: Option<u32>,
    pub rr_client: Option<u32>,
    pub peers: Vec<ExternalPeer>,
    pub prepend: Option<Prepend>,
    pub communities: Vec<u32>,
    pub import_reject: Vec<Cidr>,
}

/// A bad annotation: the node (or `service NS/NAME`), the annotation, and what is
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// The node's name, or `service NS/NAME`.
    pub node: String,
    pub annotation: String,
    /// The peer of a peer list that is wrong (`peer 2 (10.0.0.2)`): it is skipped and
    /// the others are kept.
    pub peer: Option<String>,
    pub message: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.node.starts_with("service ") {
            ""
        } else {
            "node "
        };
        write!(f, "{kind}{}: {PREFIX}{}: ", self.node, self.annotation)?;
        if let Some(peer) = &self.peer {
            write!(f, "{peer} skipped: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for AnnotationError {}

/// Whether kube-router accepts `asn` for a peer or a node: not 0, 23456 (AS_TRANS),
/// 64000–64511 and 65535–131071 (documentation and reserved), nor 4294967295.
pub fn valid_asn(asn: u32) -> bool {
    matches!(asn, 1..=23455 | 23457..=63999 | 64512..=65534 | 131072..=4294967294)
}

/// Parses an unsigned number the way Go's `strconv.ParseUint(s, 0, 32)` does
/// (decimal, `0x` hexadecimal, `0o`/leading-zero octal, `0b` binary).
fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        (o, 8)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (b, 2)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || digits.starts_with('+') {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

fn parse_asn(s: &str) -> Result<u32, String> {
    let asn = parse_u32(s).ok_or_else(|| format!("`{s}` is not an ASN"))?;
    if !valid_asn(asn) {
        return Err(format!("ASN {asn} is reserved"));
    }
    Ok(asn)
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| format!("`{s}` is not base64 (kube-router takes passwords base64-encoded)"))
}

/// A route-reflector cluster ID: a number or a dotted IPv4 address.
fn parse_cluster_id(s: &str) -> Result<u32, String> {
    parse_u32(s)
        .or_else(|| s.trim().parse::<Ipv4Addr>().ok().map(u32::from))
        .ok_or_else(|| format!("`{s}` is not a cluster ID (a number or an IPv4 address)"))
}

/// Well-known communities (RFC 1997, RFC 7999, RFC 8326).
fn parse_community(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let named = match s.to_ascii_lowercase().as_str() {
        "no-export" => Some(0xFFFF_FF01),
        "no-advertise" => Some(0xFFFF_FF02),
        "no-export-subconfed" | "local-as" => Some(0xFFFF_FF03),
        "no-peer" => Some(0xFFFF_FF04),
        "blackhole" => Some(0xFFFF_029A),
        "graceful-shutdown" => Some(0xFFFF_0000),
        _ => None,
    };
    if let Some(c) = named {
        return Ok(c);
    }
    if let Some((a, b)) = s.split_once(':') {
        let (a, b) = (a.parse::<u16>(), b.parse::<u16>());
        if let (Ok(a), Ok(b)) = (a, b) {
            return Ok((u32::from(a) << 16) | u32::from(b));
        }
    } else if let Some(c) = parse_u32(s) {
        return Ok(c);
    }
    Err(format!(
        "`{s}` is not a community (ASN:value, a number, or a well-known name)"
    ))
}

/// Splits a comma list as kube-router does (`strings.Split`): `"a,"` is `["a", ""]`.
fn items(s: &str) -> Vec<&str> {
    s.split(',').map(str::trim).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerYaml {
    remoteip: String,
    remoteasn: u32,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    localip: Option<String>,
}

/// A `--peer-router-*` flag that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("--peer-router-{0} given without --peer-router-ips")]
    WithoutIps(&'static str),
    /// The flag, the peer (`peer 2 (192.0.2.2): `) and what is wrong.
    #[error("{flag}: {peer}{message}")]
    Bad {
        flag: String,
        peer: String,
        message: String,
    },
}

/// The global external peers of kube-router's `--peer-router-*` flags (comma lists,
/// one item per peer; passwords base64). `Err` names the flag that is wrong.
pub fn global_peers(
    ips: &str,
    asns: &str,
    passwords: &str,
    ports: &str,
) -> Result<Vec<ExternalPeer>, FlagError> {
    if ips.trim().is_empty() {
        for (flag, v) in [("asns", asns), ("passwords", passwords), ("ports", ports)] {
            if !v.trim().is_empty() {
                return Err(FlagError::WithoutIps(flag));
            }
        }
        return Ok(Vec::new());
    }
    let mut map = BTreeMap::new();
    for (name, v) in [
        ("peer.ips", ips),
        ("peer.asns", asns),
        ("peer.passwords", passwords),
        ("peer.ports", ports),
    ] {
        if !v.trim().is_empty() {
            map.insert(format!("{PREFIX}{name}"), v.to_string());
        }
    }
    let (bgp, errors) = parse_node("", &map);
    if let Some(e) = errors.first() {
        // Unlike an annotation, a flag is the operator's own word: a peer it gets wrong
        // is not skipped, the start fails.
        let flag = e.annotation.replace("peer.", "--peer-router-");
        let peer = e
            .peer
            .as_ref()
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        return Err(FlagError::Bad {
            flag,
            peer,
            message: e.message.clone(),
        });
    }
    Ok(bgp.peers)
}

/// Reads node `node`'s BGP annotations. Returns what is usable and an error for each
/// bad annotation or peer.
pub fn parse_node(
    node: &str,
    annotations: &BTreeMap<String, String>,
) -> (NodeBgp, Vec<AnnotationError>) {
    let mut out = NodeBgp::default();
    let mut errors = Vec::new();
    let get = |name: &str| {
        annotations
            .get(&format!("{PREFIX}{name}"))
            .map(String::as_str)
    };
    let mut fail = |annotation: &str, peer: Option<String>, message: String| {
        errors.push(AnnotationError {
            node: node.to_string(),
            annotation: annotation.to_string(),
            peer,
            message,
        })
    };

    if let Some(v) = get("node.asn") {
        match parse_asn(v) {
            Ok(a) => out.asn = Some(a),
            Err(e) => fail("node.asn", None, e),
        }
    }
    for (name, slot) in [
        ("rr.server", &mut out.rr_server),
        ("rr.client", &mut out.rr_client),
    ] {
        if let Some(v) = get(name) {
            match parse_cluster_id(v) {
                Ok(id) => *slot = Some(id),
                Err(e) => fail(name, None, e),
            }
        }
    }

    // Per-node peers from the comma lists.
    if let Some(ips) = get("peer.ips") {
        let ips = items(ips);
        let lists = [
            ("peer.asns", get("peer.asns").map(items)),
            ("peer.passwords", get("peer.passwords").map(items)),
            ("peer.ports", get("peer.ports").map(items)),
            ("peer.localips", get("peer.localips").map(items)),
        ];
        let mut consistent = true;
        match &lists[0].1 {
            None => {
                fail(
                    "peer.asns",
                    None,
                    format!("{} peer IPs but no ASNs", ips.len()),
                );
                consistent = false;
            }
            Some(asns) if asns.len() != ips.len() => {
                fail(
                    "peer.asns",
                    None,
                    format!(
                        "{} ASNs for {} peer IPs: the lists must be equal",
                        asns.len(),
                        ips.len()
                    ),
                );
                consistent = false;
            }
            _ => {}
        }
        for (name, list) in &lists[1..] {
            if let Some(l) = list {
                if l.len() != ips.len() {
                    fail(
                        name,
                        None,
                        format!(
                            "{} items for {} peer IPs: give one per peer (blank for none)",
                            l.len(),
                            ips.len()
                        ),
                    );
                    consistent = false;
                }
            }
        }
        if consistent {
            for (i, ip) in ips.iter().enumerate() {
                let item = |k: usize| lists[k].1.as_ref().map(|l| l[i]).filter(|s| !s.is_empty());
                let peer = (|| -> Result<ExternalPeer, (&str, String)> {
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| ("peer.ips", format!("`{ip}` is not an IP address")))?;
                    let asn = parse_asn(item(0).unwrap_or("")).map_err(|e| ("peer.asns", e))?;
                    let password = item(1)
                        .map(decode_base64)
                        .transpose()
                        .map_err(|e| ("peer.passwords", e))?
                        .filter(|p| !p.is_empty());
                    let port = item(2)
                        .map(|p| p.parse::<u16>().ok().filter(|&p| p != 0))
                        .map(|p| p.ok_or(("peer.ports", format!("item {} is not a port", i + 1))))
                        .transpose()?
                        .unwrap_or(BGP_PORT);
                    let local_ip =
                        item(3)
                            .map(|l| l.parse::<IpAddr>())
                            .transpose()
                            .map_err(|_| {
                                (
                                    "peer.localips",
                                    format!("item {} is not an IP address", i + 1),
                                )
                            })?;
                    Ok(ExternalPeer {
                        ip,
                        asn,
                        port,
                        password,
                        local_ip,
                    })
                })();
                match peer {
                    Ok(p) => out.peers.push(p),
                    Err((name, e)) => fail(name, Some(format!("peer {} ({ip})", i + 1)), e),
                }
            }
        }
    } else {
        for name in ["peer.asns", "peer.passwords", "peer.ports", "peer.localips"] {
            if get(name).is_some() {
                fail(name, None, "given without peer.ips".to_string());
            }
        }
    }

    // Per-node peers from the YAML list.
    if let Some(v) = get("peers") {
        match serde_yaml::from_str::<Vec<PeerYaml>>(v) {
            Err(e) => fail("peers", None, format!("not a list of peers: {e}")),
            Ok(list) => {
                for (i, p) in list.into_iter().enumerate() {
                    let peer = (|| -> Result<ExternalPeer, String> {
                        let ip = p.remoteip.parse().map_err(|_| {
                            format!("remoteip `{}` is not an IP address", p.remoteip)
                        })?;
                        if !valid_asn(p.remoteasn) {
                            return Err(format!("ASN {} is reserved", p.remoteasn));
                        }
                        let password = p
                            .password
                            .as_deref()
                            .map(decode_base64)
                            .transpose()?
                            .filter(|p| !p.is_empty());
                        let local_ip = p
                            .localip
                            .as_deref()
                            .map(|l| {
                                l.parse()
                                    .map_err(|_| format!("localip `{l}` is not an IP address"))
                            })
                            .transpose()?;
                        Ok(ExternalPeer {
                            ip,
                            asn: p.remoteasn,
                            port: p.port.filter(|&p| p != 0).unwrap_or(BGP_PORT),
                            password,
                            local_ip,
                        })
                    })();
                    match peer {
                        Ok(peer) => out.peers.push(peer),
                        Err(e) => fail("peers", Some(format!("peer {}", i + 1)), e),
                    }
                }
            }
        }
    }

    match (get("path-prepend.as"), get("path-prepend.repeat-n")) {
        (Some(a), Some(n)) => {
            let asn = parse_asn(a);
            let repeat = parse_u32(n).filter(|n| (1..=8).contains(n));
            match (asn, repeat) {
                (Ok(asn), Some(repeat)) => {
                    out.prepend = Some(Prepend {
                        asn,
                        repeat: repeat as u8,
                    })
                }
                (Err(e), _) => fail("path-prepend.as", None, e),
                (_, None) => fail(
                    "path-prepend.repeat-n",
                    None,
                    format!("`{n}` is not a count from 1 to 8"),
                ),
            }
        }
        (Some(_), None) => fail(
            "path-prepend.repeat-n",
            None,
            "needed with path-prepend.as".to_string(),
        ),
        (None, Some(_)) => fail(
            "path-prepend.as",
            None,
            "needed with path-prepend.repeat-n".to_string(),
        ),
        (None, None) => {}
    }

    if let Some(v) = get("node.bgp.communities") {
        for c in items(v).into_iter().filter(|c| !c.is_empty()) {
            match parse_community(c) {
                Ok(c) => out.communities.push(c),
                Err(e) => fail("node.bgp.communities", None, e),
            }
        }
    }
    if let Some(v) = get("node.bgp.customimportreject") {
        for c in items(v).into_iter().filter(|c| !c.is_empty()) {
            match c.parse::<Cidr>() {
                Ok(c) => out.import_reject.push(c),
                Err(e) => fail("node.bgp.customimportreject", None, e.to_string()),
            }
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pairs: &[(&str, &str)]) -> (NodeBgp, Vec<String>) {
        let a = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        let (n, e) = parse_node("node1", &a);
        (n, e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_documented_examples_read_as_kube_router_reads_them() {
        let (n, e) = node(&[
            ("node.asn", "64512"),
            ("peer.ips", "192.168.1.99,192.168.1.100"),
            ("peer.asns", "65000,65000"),
            ("peer.passwords", "U2VjdXJlUGFzc3dvcmQK,"),
            ("path-prepend.as", "64512"),
            ("path-prepend.repeat-n", "2"),
            ("rr.server", "42"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(n.asn, Some(64512));
        assert_eq!(n.rr_server, Some(42));
        assert_eq!(n.peers.len(), 2);
        assert_eq!(
            n.peers[0].password.as_deref(),
            Some(&b"SecurePassword\n"[..])
        );
        assert_eq!((n.peers[1].password.clone(), n.peers[1].port), (None, 179));
        assert_eq!(
            n.prepend,
            Some(Prepend {
                asn: 64512,
                repeat: 2
            })
        );
    }

    #[test]
    fn bad_annotations_name_the_node_and_annotation_and_skip_only_that_peer() {
        let (n, e) = node(&[
            ("node.asn", "sixty"),
            ("peer.ips", "10.0.0.1,10.0.0.2,10.0.0.3"),
            ("peer.asns", "65000,64000,65001"),
            ("peer.passwords", ",,not base64!"),
        ]);
        assert_eq!(n.asn, None);
        assert_eq!(n.peers.len(), 1, "{:?}", n.peers);
        assert_eq!(n.peers[0].ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            e,
            [
                "node node1: kube-router.io/node.asn: `sixty` is not an ASN",
                "node node1: kube-router.io/peer.asns: peer 2 (10.0.0.2) skipped: ASN 64000 is reserved",
                "node node1: kube-router.io/peer.passwords: peer 3 (10.0.0.3) skipped: `not base64!` is not base64 (kube-router takes passwords base64-encoded)",
            ]
        );
    }

    #[test]
    fn a_bad_peer_in_the_flags_is_an_error_not_a_skip() {
        let e = global_peers("192.0.2.1,192.0.2.2", "65000,65001", ",not*base64", "")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--peer-router-passwords: peer 2 (192.0.2.2): `not*base64` is not base64 \
             (kube-router takes passwords base64-encoded)"
        );
        assert!(!e.contains("skipped"));
        let e = global_peers("192.0.2.1", "64000", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--peer-router-asns: peer 1 (192.0.2.1): "),
            "{e}"
        );
        // The positive control: the same flags with good values give both peers.
        let good = global_peers("192.0.2.1,192.0.2.2", "65000,65001", ",c2VjcmV0", "").unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].password.as_deref(), Some(&b"secret"[..]));
    }

    #[test]
    fn lists_of_unequal_length_skip_the_list() {
        let (n, e) = node(&[("peer.ips", "10.0.0.1,10.0.0.2"), ("peer.asns", "65000")]);
        assert!(n.peers.is_empty());
        assert_eq!(
            e,
            ["node node1: kube-router.io/peer.asns: 1 ASNs for 2 peer IPs: the lists must be equal"]
        );
    }

    #[test]
    fn the_peers_yaml_list() {
        let (n, e) = node(&[(
            "peers",
            "- remoteip: 10.0.0.1\n  remoteasn: 65000\n  password: cGFzcw==\n  port: 1790\n\
             - remoteip: 10.0.0.2\n  remoteasn: 0\n",
        )]);
        assert_eq!(n.peers.len(), 1);
        assert_eq!(
            (n.peers[0].port, n.peers[0].password.as_deref()),
            (1790, Some(&b"pass"[..]))
        );
        assert_eq!(
            e,
            ["node node1: kube-router.io/peers: peer 2 skipped: ASN 0 is reserved"]
        );
    }

    #[test]
    fn communities_and_import_reject() {
        let (n, e) = node(&[
            ("node.bgp.communities", "65000:100, no-export,42"),
            ("node.bgp.customimportreject", "10.0.0.0/8,fd00::/8"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(n.communities, [(65000 << 16) | 100, 0xFFFF_FF01, 42]);
        assert_eq!(n.import_reject.len(), 2);
        let (_, e) = node(&[("node.bgp.communities", "65536:1")]);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(parse_u32("0x10"), Some(16));
        assert_eq!(parse_u32("010"), Some(8));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("+5"), None);
        assert_eq!(parse_u32(""), None);
        assert!(
            valid_asn(65000) && !valid_asn(23456) && !valid_asn(65535) && valid_asn(4200000000)
        );
    }
}
