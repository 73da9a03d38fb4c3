//! Decoding: one message delimited by the framing into a [`Message`], with the UPDATE
//! error handling of RFC 7606. The attribute list is first walked as bare
//! type-length-value records (our own small check): a list whose records overrun it,
//! or a repeated MP_REACH_NLRI or MP_UNREACH_NLRI, resets the session; other repeated
//! attributes keep their first copy. netgauze then parses the message strictly; when it
//! refuses an attribute, [`handling`] decides.

use super::attribute::*;
use super::encode::{net4, net6};
use super::message::*;
use crate::bgp::frame::{code, kind, Notification, HEADER_LEN};
use crate::bgp::rib::{AsSegment, Origin, PathAttrs};
use crate::config::Cidr;
use lpm::{Prefix4, Prefix6};
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::community::Community;
use netgauze_bgp_pkt::nlri::{Ipv4UnicastAddress, Ipv6UnicastAddress};
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_pkt::path_attribute as pa;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::update::BgpUpdateMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::BgpMessageParsingError;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// UPDATE Message Error subcodes (RFC 4271 6.3).
pub(super) mod update_error {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
}

/// Decodes one whole message (as [`super::frame::next_message`] delimited it).
pub fn decode(msg: &[u8], d: Decoding) -> Result<Message, Notification> {
    if msg.len() < HEADER_LEN {
        return Err(notification(code::MESSAGE_HEADER, 2, Vec::new()));
    }
    match msg[18] {
        kind::KEEPALIVE => Ok(Message::Keepalive),
        kind::NOTIFICATION => {
            let body = &msg[HEADER_LEN..];
            Ok(Message::Notification(Notification {
                code: body.first().copied().unwrap_or(0),
                subcode: body.get(1).copied().unwrap_or(0),
                data: body.get(2..).unwrap_or(&[]).to_vec(),
            }))
        }
        kind::UPDATE => decode_update(msg, d).map(Message::Update),
        kind::OPEN | kind::ROUTE_REFRESH => {
            let mut ctx = context(d.asn4);
            let mut reader = SliceReader::new(msg);
            match BgpMessage::parse(&mut reader, &mut ctx) {
                Ok(BgpMessage::Open(o)) => Ok(Message::Open(open_from(&o))),
                Ok(BgpMessage::RouteRefresh(r)) => Family::from_address_type(r.address_type())
                    .map(Message::RouteRefresh)
                    .ok_or_else(|| notification(code::ROUTE_REFRESH, 1, msg.to_vec())),
                Ok(_) => Err(notification(code::MESSAGE_HEADER, 3, vec![msg[18]])),
                Err(e) => Err(parse_notification(msg[18], &e, msg)),
            }
        }
        other => Err(notification(code::MESSAGE_HEADER, 3, vec![other])),
    }
}

/// The NOTIFICATION a refused OPEN or ROUTE-REFRESH deserves.
pub(super) fn parse_notification(
    kind_byte: u8,
    e: &BgpMessageParsingError,
    msg: &[u8],
) -> Notification {
    match e {
        BgpMessageParsingError::BgpOpenMessageParsingError(o) => match o {
            BgpOpenMessageParsingError::UnsupportedVersionNumber { .. } => {
                notification(code::OPEN_MESSAGE, 1, 4u16.to_be_bytes().to_vec())
            }
            BgpOpenMessageParsingError::UnacceptableHoldTime { .. } => {
                notification(code::OPEN_MESSAGE, 6, Vec::new())
            }
            BgpOpenMessageParsingError::InvalidBgpId { .. } => {
                notification(code::OPEN_MESSAGE, 3, Vec::new())
            }
            _ => notification(code::OPEN_MESSAGE, 0, Vec::new()),
        },
        _ if kind_byte == kind::ROUTE_REFRESH => {
            // RFC 7313 5: Invalid Message Length, with the message as data.
            notification(code::ROUTE_REFRESH, 1, msg.to_vec())
        }
        _ => notification(code::OPEN_MESSAGE, 0, Vec::new()),
    }
}

pub(super) fn open_from(o: &BgpOpenMessage) -> Open {
    let mut open = Open {
        asn: o.my_asn4(),
        hold_time: o.hold_time(),
        router_id: o.bgp_id(),
        asn4: false,
        families: Vec::new(),
        route_refresh: false,
        graceful_restart: None,
    };
    for cap in o.capabilities() {
        match cap {
            BgpCapability::FourOctetAs(_) => open.asn4 = true,
            BgpCapability::MultiProtocolExtensions(m) => {
                if let Some(f) = Family::from_address_type(m.address_type()) {
                    if !open.families.contains(&f) {
                        open.families.push(f);
                    }
                }
            }
            BgpCapability::RouteRefresh | BgpCapability::EnhancedRouteRefresh => {
                open.route_refresh = true
            }
            BgpCapability::GracefulRestartCapability(g) => {
                open.graceful_restart = Some(GracefulRestart {
                    restarting: g.restart(),
                    time: g.time(),
                    families: g
                        .address_families()
                        .iter()
                        .filter_map(|af| {
                            Family::from_address_type(af.address_type())
                                .map(|f| (f, af.forwarding_state()))
                        })
                        .collect(),
                })
            }
            _ => {}
        }
    }
    open
}

/// The UPDATE's attribute list as [`walk`] found it.
pub(super) struct Walked {
    /// Where the Total Path Attribute Length is, and where the attributes end by it
    /// (the NLRI field starts there).
    pub(super) attrs_len_at: usize,
    pub(super) attrs_end: usize,
    pub(super) attrs: Vec<RawAttr>,
    /// The last attribute ran past the Total Path Attribute Length, or too few bytes
    /// were left for one: RFC 7606 4 says treat-as-withdraw, the NLRI found by that
    /// length. `attrs` are those before it.
    pub(super) overrun: bool,
}

/// Reads the UPDATE's three fields and its attributes' places; `Err` is a session
/// reset (the fields themselves run past the message, an MP attribute is repeated or
/// cut short, an unrecognised well-known attribute).
pub(super) fn walk(msg: &[u8]) -> Result<Walked, Notification> {
    let malformed = || {
        notification(
            code::UPDATE_MESSAGE,
            update_error::MALFORMED_ATTRIBUTE_LIST,
            Vec::new(),
        )
    };
    let body = HEADER_LEN;
    let wlen = usize::from(u16::from_be_bytes([
        *msg.get(body).ok_or_else(malformed)?,
        *msg.get(body + 1).ok_or_else(malformed)?,
    ]));
    let attrs_len_at = body + 2 + wlen;
    let alen = usize::from(u16::from_be_bytes([
        *msg.get(attrs_len_at).ok_or_else(malformed)?,
        *msg.get(attrs_len_at + 1).ok_or_else(malformed)?,
    ]));
    let attrs_start = attrs_len_at + 2;
    let attrs_end = attrs_start + alen;
    if attrs_end > msg.len() {
        // The NLRI cannot be located: RFC 7606 4 keeps the session reset here.
        return Err(malformed());
    }
    let mut attrs: Vec<RawAttr> = Vec::new();
    let mut at = attrs_start;
    let mut overrun = false;
    while at < attrs_end {
        let flags = msg[at];
        let head = if flags & 0x10 != 0 { 4 } else { 3 };
        if at + head > attrs_end {
            // Fewer bytes left than an attribute's header (RFC 7606 4, second case).
            if at + 1 < attrs_end && matches!(msg[at + 1], MP_REACH | MP_UNREACH) {
                return Err(malformed());
            }
            overrun = true;
            break;
        }
        let kind = msg[at + 1];
        let len = if head == 4 {
            usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]))
        } else {
            usize::from(msg[at + 2])
        };
        let end = at + head + len;
        if end > attrs_end {
            // The attribute runs past the list (RFC 7606 4, first case); an MP
            // attribute cut short leaves prefixes that cannot be trusted (5.3).
            if kind == MP_REACH || kind == MP_UNREACH {
                return Err(malformed());
            }
            overrun = true;
            break;
        }
        if flags & 0x80 == 0 && !RECOGNISED.contains(&kind) {
            // A well-known attribute (optional bit clear) of a type we do not know
            // (RFC 4271 6.3): the data is the attribute.
            return Err(notification(
                code::UPDATE_MESSAGE,
                update_error::UNRECOGNIZED_WELL_KNOWN,
                msg[at..end].to_vec(),
            ));
        }
        if attrs.iter().any(|a| a.kind == kind) {
            if kind == MP_REACH || kind == MP_UNREACH {
                return Err(malformed());
            }
            // RFC 7606 3(g): later copies are discarded.
        } else {
            attrs.push(RawAttr {
                kind,
                start: at,
                end,
            });
        }
        at = end;
    }
    Ok(Walked {
        attrs_len_at,
        attrs_end,
        attrs,
        overrun,
    })
}

/// The message again with only `keep` as its attributes.
pub(super) fn rebuild<'a>(
    msg: &'a [u8],
    attrs_len_at: usize,
    attrs_end: usize,
    keep: &[RawAttr],
) -> std::borrow::Cow<'a, [u8]> {
    let alen: usize = keep.iter().map(|a| a.end - a.start).sum();
    if alen == attrs_end - (attrs_len_at + 2) {
        // Every attribute kept (the usual case): the message as it came.
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len());
    out.extend_from_slice(&msg[..attrs_len_at]);
    out.extend_from_slice(&(alen as u16).to_be_bytes());
    for a in keep {
        out.extend_from_slice(&msg[a.start..a.end]);
    }
    out.extend_from_slice(&msg[attrs_end..]);
    let len = out.len() as u16;
    out[16..18].copy_from_slice(&len.to_be_bytes());
    std::borrow::Cow::Owned(out)
}

pub(super) fn parse_update(
    bytes: &[u8],
    asn4: bool,
) -> Result<BgpUpdateMessage, BgpMessageParsingError> {
    let mut ctx = context(asn4);
    let mut reader = SliceReader::new(bytes);
    match BgpMessage::parse(&mut reader, &mut ctx)? {
        BgpMessage::Update(u) => Ok(u),
        _ => Err(BgpMessageParsingError::UndefinedBgpMessageType {
            offset: 18,
            code: kind::UPDATE,
        }),
    }
}

pub(super) fn nlri_reset(e: &BgpMessageParsingError) -> Notification {
    let sub = match e {
        BgpMessageParsingError::BgpUpdateMessageParsingError(
            BgpUpdateMessageParsingError::Ipv4PrefixError(_)
            | BgpUpdateMessageParsingError::InvalidIpv4UnicastNetwork { .. },
        ) => update_error::INVALID_NETWORK_FIELD,
        _ => update_error::MALFORMED_ATTRIBUTE_LIST,
    };
    notification(code::UPDATE_MESSAGE, sub, Vec::new())
}

pub(super) fn decode_update(msg: &[u8], d: Decoding) -> Result<Update, Notification> {
    let Walked {
        attrs_len_at,
        attrs_end,
        attrs: mut keep,
        overrun,
    } = walk(msg)?;
    let mut problems = Vec::new();
    let withdraw = |mut keep: Vec<RawAttr>, problems| {
        keep.retain(|a| a.kind == MP_REACH || a.kind == MP_UNREACH);
        let bytes = rebuild(msg, attrs_len_at, attrs_end, &keep);
        let u = parse_update(&bytes, d.asn4).map_err(|e| nlri_reset(&e))?;
        Ok(withdraw_all(&u, problems))
    };
    if overrun {
        problems.push(
            "treat-as-withdraw: the attributes overrun the Total Path Attribute Length".into(),
        );
        return withdraw(keep, problems);
    }
    loop {
        let bytes = rebuild(msg, attrs_len_at, attrs_end, &keep);
        let e = match parse_update(&bytes, d.asn4) {
            Ok(u) => return Ok(convert(&u, problems)),
            Err(e) => e,
        };
        let BgpMessageParsingError::BgpUpdateMessageParsingError(
            BgpUpdateMessageParsingError::PathAttributeError(pe),
        ) = &e
        else {
            return Err(nlri_reset(&e));
        };
        match handling(pe) {
            Handling::Discard(t) if keep.iter().any(|a| a.kind == t) => {
                problems.push(format!("attribute {t} discarded: {pe}"));
                keep.retain(|a| a.kind != t);
            }
            Handling::Reset | Handling::Discard(_) => {
                return Err(notification(
                    code::UPDATE_MESSAGE,
                    update_error::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                ))
            }
            Handling::Withdraw => {
                problems.push(format!("treat-as-withdraw: {pe}"));
                return withdraw(keep, problems);
            }
        }
    }
}

pub(super) fn v4(n: &Ipv4UnicastAddress) -> Cidr {
    let net = n.network().address();
    Cidr::V4(Prefix4::new_masked(u32::from(net.addr()), net.prefix_len()))
}

pub(super) fn v6(n: &Ipv6UnicastAddress) -> Cidr {
    let net = n.network().address();
    Cidr::V6(Prefix6::new_masked(
        u128::from(net.addr()),
        net.prefix_len(),
    ))
}

/// Every prefix the message names, announced or withdrawn, as withdrawn.
pub(super) fn withdraw_all(u: &BgpUpdateMessage, problems: Vec<String>) -> Update {
    let mut withdrawn: Vec<Cidr> = u.withdraw_routes().iter().map(v4).collect();
    withdrawn.extend(u.nlri().iter().map(v4));
    for a in u.path_attributes() {
        match a.value() {
            pa::PathAttributeValue::MpReach(pa::MpReach::Ipv6Unicast { nlri, .. })
            | pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv6Unicast { nlri }) => {
                withdrawn.extend(nlri.iter().map(v6))
            }
            pa::PathAttributeValue::MpReach(pa::MpReach::Ipv4Unicast { nlri, .. })
            | pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv4Unicast { nlri }) => {
                withdrawn.extend(nlri.iter().map(v4))
            }
            _ => {}
        }
    }
    Update {
        withdrawn,
        announced: Vec::new(),
        end_of_rib: None,
        problems,
    }
}

pub(super) fn convert(u: &BgpUpdateMessage, mut problems: Vec<String>) -> Update {
    let mut attrs = PathAttrs {
        origin: Origin::Igp,
        as_path: Vec::new(),
        next_hop: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        med: None,
        local_pref: None,
        communities: Vec::new(),
        ext_communities: Vec::new(),
        large_communities: Vec::new(),
        originator_id: None,
        cluster_list: Vec::new(),
    };
    let (mut has_origin, mut has_path, mut has_nh) = (false, false, false);
    let mut as4: Option<Vec<AsSegment>> = None;
    let mut reach6: Option<(Ipv6Addr, Vec<Cidr>)> = None;
    let mut reach4: Option<(IpAddr, Vec<Cidr>)> = None;
    let mut withdrawn: Vec<Cidr> = u.withdraw_routes().iter().map(v4).collect();
    let mut unreach_empty = None;
    for a in u.path_attributes() {
        match a.value() {
            pa::PathAttributeValue::Origin(o) => {
                has_origin = true;
                attrs.origin = match o {
                    pa::Origin::IGP => Origin::Igp,
                    pa::Origin::EGP => Origin::Egp,
                    pa::Origin::Incomplete => Origin::Incomplete,
                };
            }
            pa::PathAttributeValue::AsPath(p) => {
                has_path = true;
                attrs.as_path = match p {
                    pa::AsPath::As4PathSegments(s) => segments4(s),
                    pa::AsPath::As2PathSegments(s) => s
                        .iter()
                        .map(|s| {
                            let v: Vec<u32> =
                                s.as_numbers().iter().map(|&a| u32::from(a)).collect();
                            match s.segment_type() {
                                pa::AsPathSegmentType::AsSet => AsSegment::Set(v),
                                pa::AsPathSegmentType::AsSequence => AsSegment::Sequence(v),
                            }
                        })
                        .collect(),
                };
            }
            pa::PathAttributeValue::As4Path(p) => as4 = Some(segments4(p.segments())),
            pa::PathAttributeValue::NextHop(n) => {
                has_nh = true;
                attrs.next_hop = IpAddr::V4(n.next_hop());
            }
            pa::PathAttributeValue::MultiExitDiscriminator(m) => attrs.med = Some(m.metric()),
            pa::PathAttributeValue::LocalPreference(l) => attrs.local_pref = Some(l.metric()),
            pa::PathAttributeValue::Communities(c) => {
                attrs.communities = c.communities().iter().map(Community::value).collect()
            }
            pa::PathAttributeValue::ExtendedCommunities(c) => {
                attrs.ext_communities = c.communities().iter().filter_map(ext_community).collect()
            }
            pa::PathAttributeValue::LargeCommunities(c) => {
                attrs.large_communities = c
                    .communities()
                    .iter()
                    .map(|l| [l.global_admin(), l.local_data1(), l.local_data2()])
                    .collect()
            }
            pa::PathAttributeValue::Originator(o) => attrs.originator_id = Some(o.id()),
            pa::PathAttributeValue::ClusterList(c) => {
                attrs.cluster_list = c.cluster_list().iter().map(|c| c.id()).collect()
            }
            pa::PathAttributeValue::MpReach(pa::MpReach::Ipv6Unicast {
                next_hop_global,
                nlri,
                ..
            }) => reach6 = Some((*next_hop_global, nlri.iter().map(v6).collect())),
            pa::PathAttributeValue::MpReach(pa::MpReach::Ipv4Unicast {
                next_hop, nlri, ..
            }) => reach4 = Some((*next_hop, nlri.iter().map(v4).collect())),
            pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv6Unicast { nlri }) => {
                if nlri.is_empty() {
                    unreach_empty = Some(Family::Ipv6);
                }
                withdrawn.extend(nlri.iter().map(v6))
            }
            pa::PathAttributeValue::MpUnreach(pa::MpUnreach::Ipv4Unicast { nlri }) => {
                if nlri.is_empty() {
                    unreach_empty = Some(Family::Ipv4);
                }
                withdrawn.extend(nlri.iter().map(v4))
            }
            _ => {}
        }
    }
    if let Some(as4) = as4 {
        attrs.as_path = merge_as4(std::mem::take(&mut attrs.as_path), as4);
    }
    let nlri: Vec<Cidr> = u.nlri().iter().map(v4).collect();
    let attributes = u.path_attributes().len();
    let end_of_rib = if attributes == 0 && withdrawn.is_empty() && nlri.is_empty() {
        Some(Family::Ipv4)
    } else if attributes == 1 && u.nlri().is_empty() && u.withdraw_routes().is_empty() {
        unreach_empty
    } else {
        None
    };
    let mut update = Update {
        withdrawn,
        announced: Vec::new(),
        end_of_rib,
        problems: Vec::new(),
    };
    let announces = !nlri.is_empty() || reach4.is_some() || reach6.is_some();
    if !announces {
        update.problems = problems;
        return update;
    }
    // RFC 7606 3(d): a missing mandatory attribute withdraws what the message announces.
    let classic_nh_missing = !nlri.is_empty() && !has_nh;
    if !has_origin || !has_path || classic_nh_missing {
        problems.push(format!(
            "treat-as-withdraw: mandatory attribute missing (ORIGIN {has_origin}, AS_PATH {has_path}, NEXT_HOP {})",
            has_nh || nlri.is_empty()
        ));
        update.withdrawn.extend(nlri);
        update
            .withdrawn
            .extend(reach4.into_iter().flat_map(|r| r.1));
        update
            .withdrawn
            .extend(reach6.into_iter().flat_map(|r| r.1));
        update.problems = problems;
        return update;
    }
    // Prefixes in multicast space are no unicast routes (and netgauze will not encode
    // them again): they are left out.
    let before = nlri.len()
        + reach4.as_ref().map_or(0, |r| r.1.len())
        + reach6.as_ref().map_or(0, |r| r.1.len());
    let nlri: Vec<Cidr> = nlri.into_iter().filter(|p| net4(p).is_some()).collect();
    let reach4 = reach4.map(|(nh, v)| {
        (
            nh,
            v.into_iter()
                .filter(|p| net4(p).is_some())
                .collect::<Vec<_>>(),
        )
    });
    let reach6 = reach6.map(|(nh, v)| {
        (
            nh,
            v.into_iter()
                .filter(|p| net6(p).is_some())
                .collect::<Vec<_>>(),
        )
    });
    let after = nlri.len()
        + reach4.as_ref().map_or(0, |r| r.1.len())
        + reach6.as_ref().map_or(0, |r| r.1.len());
    if after < before {
        problems.push(format!(
            "{} prefixes in multicast space ignored",
            before - after
        ));
    }
    if !nlri.is_empty() {
        update.announced.push((Arc::new(attrs.clone()), nlri));
    }
    if let Some((nh, prefixes)) = reach4.filter(|r| !r.1.is_empty()) {
        let mut a = attrs.clone();
        a.next_hop = nh;
        update.announced.push((Arc::new(a), prefixes));
    }
    if let Some((nh, prefixes)) = reach6.filter(|r| !r.1.is_empty()) {
        let mut a = attrs;
        a.next_hop = IpAddr::V6(nh);
        update.announced.push((Arc::new(a), prefixes));
    }
    update.problems = problems;
    update
}
