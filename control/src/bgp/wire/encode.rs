//! Encoding: our OPEN, KEEPALIVE, ROUTE-REFRESH, End-of-RIB, and UPDATEs that announce
//! or withdraw prefixes, packed into as few messages as the 4096-byte limit allows.

use super::message::*;
use crate::bgp::frame::{kind, HEADER_LEN, MARKER, MAX_LEN};
use crate::bgp::rib::{AsSegment, Origin, PathAttrs};
use crate::config::Cidr;
use ipnet::{Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{
    Community, ExtendedCommunity, LargeCommunity, UnknownExtendedCommunity,
};
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute as pa;
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::WritablePdu;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) fn write(msg: &BgpMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    // Writing to a Vec fails only on values the types cannot hold; ours are built
    // within their limits.
    if let Err(e) = msg.write(&mut out) {
        tracing::error!(error = ?e, "encoding a BGP message");
        out.clear();
    }
    out
}

/// Our OPEN.
pub fn encode_open(o: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    for f in &o.families {
        caps.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(f.address_type()),
        ));
    }
    if o.route_refresh {
        caps.push(BgpCapability::RouteRefresh);
    }
    if let Some(g) = &o.graceful_restart {
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                g.restarting,
                false,
                g.time.min(4095),
                g.families
                    .iter()
                    .map(|&(f, fwd)| GracefulRestartAddressFamily::new(fwd, f.address_type()))
                    .collect::<Vec<_>>(),
            ),
        ));
    }
    if o.asn4 {
        caps.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
            o.asn,
        )));
    }
    let my_as = u16::try_from(o.asn).unwrap_or(AS_TRANS);
    write(&BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        o.hold_time,
        o.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    )))
}

pub fn encode_keepalive() -> Vec<u8> {
    let mut v = MARKER.to_vec();
    v.extend_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    v.push(kind::KEEPALIVE);
    v
}

pub fn encode_route_refresh(f: Family) -> Vec<u8> {
    write(&BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
        f.address_type(),
        RouteRefreshSubcode::NormalRequest,
    )))
}

/// The End-of-RIB marker of a family (RFC 4724 2).
pub fn encode_end_of_rib(f: Family) -> Vec<u8> {
    match f {
        Family::Ipv4 => write(&BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![],
            vec![],
        ))),
        Family::Ipv6 => write(&BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            attribute(
                pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv6Unicast {
                    nlri: Box::new([]),
                }),
                0,
            )
            .into_iter()
            .collect::<Vec<_>>(),
            vec![],
        ))),
    }
}

/// A path attribute with the flags its kind requires (netgauze's own table of
/// well-known, optional and transitive), the extended length when `len` needs it.
/// `None` only if netgauze refused its own flags, which is logged.
pub(super) fn attribute(v: pa::PathAttributeValue, len: usize) -> Option<pa::PathAttribute> {
    let optional = v.can_be_optional().unwrap_or(true);
    let transitive = v.can_be_transitive().unwrap_or(true);
    let partial = v.can_be_partial().unwrap_or(false);
    match pa::PathAttribute::from(optional, transitive, partial, len > 255, v) {
        Ok(a) => Some(a),
        Err((_, e)) => {
            tracing::error!(error = %e, "path attribute flags");
            None
        }
    }
}

/// Whether a prefix can be announced: unicast space (netgauze refuses to encode
/// networks in multicast space, and such prefixes are ignored when received).
pub fn encodable(p: &Cidr) -> bool {
    match p {
        Cidr::V4(_) => net4(p).is_some(),
        Cidr::V6(_) => net6(p).is_some(),
    }
}

pub(super) fn net4(p: &Cidr) -> Option<Ipv4UnicastAddress> {
    let Cidr::V4(p) = p else { return None };
    let net = Ipv4Net::new(Ipv4Addr::from(p.addr()), p.len()).ok()?;
    Some(Ipv4UnicastAddress::new_no_path_id(
        Ipv4Unicast::from_net(net).ok()?,
    ))
}

pub(super) fn net6(p: &Cidr) -> Option<Ipv6UnicastAddress> {
    let Cidr::V6(p) = p else { return None };
    let net = Ipv6Net::new(Ipv6Addr::from(p.addr()), p.len()).ok()?;
    Some(Ipv6UnicastAddress::new(
        None,
        Ipv6Unicast::from_net(net).ok()?,
    ))
}

/// The attributes of `attrs` (without the NLRI) in netgauze's form, for a peer that
/// does or does not take four-octet ASNs.
pub(super) fn attributes(attrs: &PathAttrs, asn4: bool) -> Vec<pa::PathAttribute> {
    let mut out = Vec::new();
    let origin = match attrs.origin {
        Origin::Igp => pa::Origin::IGP,
        Origin::Egp => pa::Origin::EGP,
        Origin::Incomplete => pa::Origin::Incomplete,
    };
    out.extend(attribute(pa::PathAttributeValue::Origin(origin), 1));
    let seg_type = |s: &AsSegment| match s {
        AsSegment::Sequence(_) => pa::AsPathSegmentType::AsSequence,
        AsSegment::Set(_) => pa::AsPathSegmentType::AsSet,
    };
    let seg_asns = |s: &AsSegment| match s {
        AsSegment::Sequence(v) | AsSegment::Set(v) => v.clone(),
    };
    let path_bytes: usize = attrs
        .as_path
        .iter()
        .map(|s| 2 + 4 * seg_asns(s).len())
        .sum();
    let four: Vec<pa::As4PathSegment> = attrs
        .as_path
        .iter()
        .map(|s| pa::As4PathSegment::new(seg_type(s), seg_asns(s)))
        .collect();
    if asn4 {
        out.extend(attribute(
            pa::PathAttributeValue::AsPath(pa::AsPath::As4PathSegments(four.into())),
            path_bytes,
        ));
    } else {
        let two: Vec<pa::As2PathSegment> = attrs
            .as_path
            .iter()
            .map(|s| {
                let v: Vec<u16> = seg_asns(s)
                    .iter()
                    .map(|&a| u16::try_from(a).unwrap_or(AS_TRANS))
                    .collect();
                pa::As2PathSegment::new(seg_type(s), v)
            })
            .collect();
        out.extend(attribute(
            pa::PathAttributeValue::AsPath(pa::AsPath::As2PathSegments(two.into())),
            path_bytes / 2,
        ));
        let wide = attrs
            .as_path
            .iter()
            .any(|s| seg_asns(s).iter().any(|&a| a > u32::from(u16::MAX)));
        if wide {
            out.extend(attribute(
                pa::PathAttributeValue::As4Path(pa::As4Path::new(four)),
                path_bytes,
            ));
        }
    }
    if let IpAddr::V4(nh) = attrs.next_hop {
        out.extend(attribute(
            pa::PathAttributeValue::NextHop(pa::NextHop::new(nh)),
            4,
        ));
    }
    if let Some(med) = attrs.med {
        out.extend(attribute(
            pa::PathAttributeValue::MultiExitDiscriminator(pa::MultiExitDiscriminator::new(med)),
            4,
        ));
    }
    if let Some(lp) = attrs.local_pref {
        out.extend(attribute(
            pa::PathAttributeValue::LocalPreference(pa::LocalPreference::new(lp)),
            4,
        ));
    }
    if !attrs.communities.is_empty() {
        let c: Vec<Community> = attrs
            .communities
            .iter()
            .map(|&c| Community::new(c))
            .collect();
        out.extend(attribute(
            pa::PathAttributeValue::Communities(pa::Communities::new(c)),
            4 * attrs.communities.len(),
        ));
    }
    if !attrs.ext_communities.is_empty() {
        // Written back byte for byte, whatever their kind: type, sub-type, value.
        let c: Vec<ExtendedCommunity> = attrs
            .ext_communities
            .iter()
            .map(|&v| {
                let b = v.to_be_bytes();
                let value = [b[2], b[3], b[4], b[5], b[6], b[7]];
                ExtendedCommunity::Unknown(UnknownExtendedCommunity::new(b[0], b[1], value))
            })
            .collect();
        out.extend(attribute(
            pa::PathAttributeValue::ExtendedCommunities(pa::ExtendedCommunities::new(c)),
            8 * attrs.ext_communities.len(),
        ));
    }
    if !attrs.large_communities.is_empty() {
        let c: Vec<LargeCommunity> = attrs
            .large_communities
            .iter()
            .map(|&[g, a, b]| LargeCommunity::new(g, a, b))
            .collect();
        out.extend(attribute(
            pa::PathAttributeValue::LargeCommunities(pa::LargeCommunities::new(c)),
            12 * attrs.large_communities.len(),
        ));
    }
    if let Some(id) = attrs.originator_id {
        out.extend(attribute(
            pa::PathAttributeValue::Originator(pa::Originator::new(id)),
            4,
        ));
    }
    if !attrs.cluster_list.is_empty() {
        let c: Vec<pa::ClusterId> = attrs
            .cluster_list
            .iter()
            .map(|&c| pa::ClusterId::new(c))
            .collect();
        out.extend(attribute(
            pa::PathAttributeValue::ClusterList(pa::ClusterList::new(c)),
            4 * attrs.cluster_list.len(),
        ));
    }
    out
}

/// The wire size of a prefix in NLRI.
pub(super) fn nlri_size(p: &Cidr) -> usize {
    let len = match p {
        Cidr::V4(p) => p.len(),
        Cidr::V6(p) => p.len(),
    };
    1 + usize::from(len).div_ceil(8)
}

/// Cuts `prefixes` into runs whose NLRI fits in `budget` bytes each.
pub(super) fn runs(prefixes: &[Cidr], budget: usize) -> Vec<&[Cidr]> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, p) in prefixes.iter().enumerate() {
        let s = nlri_size(p);
        if used + s > budget && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += s;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

/// UPDATEs announcing `prefixes` (all of `family`) with `attrs`, each within the
/// 4096-byte limit. `attrs.next_hop` must be of the family (an IPv6 next hop for
/// IPv6). Empty if the attributes alone do not fit in a message.
pub fn encode_announce(
    family: Family,
    prefixes: &[Cidr],
    attrs: &PathAttrs,
    asn4: bool,
) -> Vec<Vec<u8>> {
    let base = attributes(attrs, asn4);
    let base_len: usize = base.iter().map(|a| a.len()).sum();
    let mp_overhead = match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 4 + 5 + 16,
    };
    let Some(budget) = MAX_LEN.checked_sub(HEADER_LEN + 4 + base_len + mp_overhead) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for run in runs(prefixes, budget) {
        let msg = match family {
            Family::Ipv4 => BgpUpdateMessage::new(
                vec![],
                base.clone(),
                run.iter().filter_map(net4).collect::<Vec<_>>(),
            ),
            Family::Ipv6 => {
                let IpAddr::V6(nh) = attrs.next_hop else {
                    return Vec::new();
                };
                let nlri: Vec<Ipv6UnicastAddress> = run.iter().filter_map(net6).collect();
                let size: usize = run.iter().map(nlri_size).sum::<usize>() + 5 + 16;
                let mut a: Vec<pa::PathAttribute> = attribute(
                    pa::PathAttributeValue::MpReach(pa::MpReach::Ipv6Unicast {
                        next_hop_global: nh,
                        next_hop_local: None,
                        nlri: nlri.into(),
                    }),
                    size,
                )
                .into_iter()
                .collect::<Vec<_>>();
                a.extend(base.iter().cloned());
                BgpUpdateMessage::new(vec![], a, vec![])
            }
        };
        out.push(write(&BgpMessage::Update(msg)));
    }
    out
}

/// UPDATEs withdrawing `prefixes` (all of `family`).
pub fn encode_withdraw(family: Family, prefixes: &[Cidr]) -> Vec<Vec<u8>> {
    let budget = MAX_LEN - HEADER_LEN - 4 - 8;
    runs(prefixes, budget)
        .into_iter()
        .map(|run| {
            let msg = match family {
                Family::Ipv4 => BgpUpdateMessage::new(
                    run.iter().filter_map(net4).collect::<Vec<_>>(),
                    vec![],
                    vec![],
                ),
                Family::Ipv6 => {
                    let nlri: Vec<Ipv6UnicastAddress> = run.iter().filter_map(net6).collect();
                    let size = run.iter().map(nlri_size).sum::<usize>() + 3;
                    BgpUpdateMessage::new(
                        vec![],
                        attribute(
                            pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv6Unicast {
                                nlri: nlri.into(),
                            }),
                            size,
                        )
                        .into_iter()
                        .collect::<Vec<_>>(),
                        vec![],
                    )
                }
            };
            write(&BgpMessage::Update(msg))
        })
        .collect()
}
