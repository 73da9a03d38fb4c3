//! BGP messages on the wire, through netgauze-bgp-pkt: OPEN with our capabilities,
//! UPDATE in both directions (IPv4 in the classic fields, IPv6 in MP_REACH and
//! MP_UNREACH), KEEPALIVE, NOTIFICATION and ROUTE-REFRESH, converted to and from the
//! RIB's types.
//!
//! UPDATE errors are handled as RFC 7606 says. The attribute list is first walked as
//! bare type-length-value records (this module's own, small, check): a list whose
//! records overrun it, or a repeated MP_REACH_NLRI or MP_UNREACH_NLRI, resets the
//! session; other repeated attributes keep their first copy. netgauze then parses
//! the message strictly; when it refuses an attribute, that attribute decides:
//! "attribute discard" for the ones that do not affect route selection
//! (ATOMIC_AGGREGATE, AGGREGATOR, AIGP, ...), which are cut out before parsing again;
//! "treat-as-withdraw" for the others (ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF,
//! communities, ORIGINATOR_ID, CLUSTER_LIST, and a missing mandatory attribute), where
//! every prefix the message announces is withdrawn instead; and "session reset" for
//! the MP attributes and the NLRI fields, whose prefixes cannot be trusted.

use super::frame::{code, kind, Notification, HEADER_LEN, MARKER, MAX_LEN};
use super::rib::{AsSegment, Origin, PathAttrs};
use crate::config::Cidr;
use ipnet::{Ipv4Net, Ipv6Net};
use lpm::{Prefix4, Prefix6};
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
use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::path_attribute::PathAttributeParsingError;
use netgauze_bgp_pkt::wire::deserializer::update::BgpUpdateMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::{BgpMessageParsingError, BgpParsingContext};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The address families we speak: unicast IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    fn address_type(self) -> AddressType {
        match self {
            Family::Ipv4 => AddressType::Ipv4Unicast,
            Family::Ipv6 => AddressType::Ipv6Unicast,
        }
    }

    fn from_address_type(t: AddressType) -> Option<Family> {
        match t {
            AddressType::Ipv4Unicast => Some(Family::Ipv4),
            AddressType::Ipv6Unicast => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn of(prefix: &Cidr) -> Family {
        match prefix {
            Cidr::V4(_) => Family::Ipv4,
            Cidr::V6(_) => Family::Ipv6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4-unicast",
            Family::Ipv6 => "ipv6-unicast",
        }
    }
}

/// The graceful restart capability (RFC 4724 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the speaker has restarted.
    pub restarting: bool,
    /// Restart time, seconds (12 bits).
    pub time: u16,
    /// The families it preserves forwarding for, with the F bit.
    pub families: Vec<(Family, bool)>,
}

/// What an OPEN carries that a session uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    /// The four-octet AS capability (RFC 6793).
    pub asn4: bool,
    /// Multiprotocol capabilities (RFC 4760). A speaker that sends none speaks IPv4
    /// unicast only.
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub graceful_restart: Option<GracefulRestart>,
}

impl Open {
    /// The families both sides announced.
    pub fn common_families(&self, theirs: &Open) -> Vec<Family> {
        let their = if theirs.families.is_empty() {
            vec![Family::Ipv4]
        } else {
            theirs.families.clone()
        };
        self.families
            .iter()
            .copied()
            .filter(|f| their.contains(f))
            .collect()
    }
}

/// A decoded UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Prefixes withdrawn (including those of a treated-as-withdraw message).
    pub withdrawn: Vec<Cidr>,
    /// Prefixes announced, grouped by their attributes (IPv4 and IPv6 paths differ in
    /// their next hop).
    pub announced: Vec<(Arc<PathAttrs>, Vec<Cidr>)>,
    /// The message was the End-of-RIB marker of this family (RFC 4724 2).
    pub end_of_rib: Option<Family>,
    /// What RFC 7606 handling did, for the log.
    pub problems: Vec<String>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(Family),
}

/// What decoding depends on, negotiated in the OPENs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    /// Both sides announced four-octet ASNs.
    pub asn4: bool,
}

/// AS_TRANS (RFC 6793), in two-octet fields for ASNs that do not fit.
pub const AS_TRANS: u16 = 23456;

fn context(asn4: bool) -> BgpParsingContext {
    // Strict everywhere: RFC 7606 is applied here, attribute by attribute.
    BgpParsingContext::new(
        asn4,
        HashMap::new(),
        HashMap::new(),
        true,
        true,
        false,
        true,
    )
}

fn notification(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
    Notification {
        code,
        subcode,
        data,
    }
}

/// UPDATE Message Error subcodes (RFC 4271 6.3).
mod update_error {
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
fn parse_notification(kind_byte: u8, e: &BgpMessageParsingError, msg: &[u8]) -> Notification {
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

fn open_from(o: &BgpOpenMessage) -> Open {
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

/// One path attribute's place in the message.
#[derive(Debug, Clone, Copy)]
struct RawAttr {
    kind: u8,
    start: usize,
    end: usize,
}

const MP_REACH: u8 = 14;
/// The attribute types the decoder recognises (RFC 4271's, communities, route
/// reflection, MP-BGP, AS4, extended and large communities, AIGP, BGP-LS, OTC, prefix
/// SID and the like). One of these with wrong flags is malformed and handled as
/// RFC 7606 says; any other type without the optional bit is an unrecognised
/// well-known attribute (RFC 4271 6.3).
const RECOGNISED: [u8; 21] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 25, 26, 29, 32, 35, 40,
];
const MP_UNREACH: u8 = 15;

/// What RFC 7606 says to do about an attribute netgauze refused.
enum Handling {
    Discard(u8),
    Withdraw,
    Reset,
}

fn handling(e: &PathAttributeParsingError) -> Handling {
    use PathAttributeParsingError as P;
    match e {
        P::AtomicAggregateError(_) => Handling::Discard(6),
        P::AggregatorError(_) => Handling::Discard(7),
        P::BgpLsError(_) => Handling::Discard(29),
        P::AigpError(_) => Handling::Discard(26),
        P::OnlyToCustomerError(_) => Handling::Discard(35),
        P::SegmentIdentifierParsingError(_) => Handling::Discard(40),
        P::MpReachErrorError(_) | P::MpUnreachErrorError(_) => Handling::Reset,
        P::InvalidPathAttribute { value, .. } => {
            let t = match value {
                Ok(t) => *t as u8,
                Err(t) => *t,
            };
            match t {
                MP_REACH | MP_UNREACH => Handling::Reset,
                6 | 7 | 26 | 29 | 35 | 40 => Handling::Discard(t),
                _ => Handling::Withdraw,
            }
        }
        _ => Handling::Withdraw,
    }
}

/// Reads the UPDATE's three fields and its attributes' places; `Err` is a session
/// reset.
fn walk(msg: &[u8]) -> Result<(usize, usize, Vec<RawAttr>), Notification> {
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
        return Err(malformed());
    }
    let mut attrs: Vec<RawAttr> = Vec::new();
    let mut at = attrs_start;
    while at < attrs_end {
        let flags = msg[at];
        let kind = *msg
            .get(at + 1)
            .filter(|_| at + 1 < attrs_end)
            .ok_or_else(malformed)?;
        let (len, head) = if flags & 0x10 != 0 {
            if at + 4 > attrs_end {
                return Err(malformed());
            }
            (
                usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]])),
                4,
            )
        } else {
            if at + 3 > attrs_end {
                return Err(malformed());
            }
            (usize::from(msg[at + 2]), 3)
        };
        let end = at + head + len;
        if end > attrs_end {
            return Err(malformed());
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
    Ok((attrs_len_at, attrs_end, attrs))
}

/// The message again with only `keep` as its attributes.
fn rebuild<'a>(
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

fn parse_update(bytes: &[u8], asn4: bool) -> Result<BgpUpdateMessage, BgpMessageParsingError> {
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

fn nlri_reset(e: &BgpMessageParsingError) -> Notification {
    let sub = match e {
        BgpMessageParsingError::BgpUpdateMessageParsingError(
            BgpUpdateMessageParsingError::Ipv4PrefixError(_)
            | BgpUpdateMessageParsingError::InvalidIpv4UnicastNetwork { .. },
        ) => update_error::INVALID_NETWORK_FIELD,
        _ => update_error::MALFORMED_ATTRIBUTE_LIST,
    };
    notification(code::UPDATE_MESSAGE, sub, Vec::new())
}

fn decode_update(msg: &[u8], d: Decoding) -> Result<Update, Notification> {
    let (attrs_len_at, attrs_end, mut keep) = walk(msg)?;
    let mut problems = Vec::new();
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
                keep.retain(|a| a.kind == MP_REACH || a.kind == MP_UNREACH);
                let bytes = rebuild(msg, attrs_len_at, attrs_end, &keep);
                let u = parse_update(&bytes, d.asn4).map_err(|e| nlri_reset(&e))?;
                return Ok(withdraw_all(&u, problems));
            }
        }
    }
}

/// An extended community as its 8 bytes, read back through netgauze's own encoding of
/// whatever kind it parsed it as.
fn ext_community(c: &ExtendedCommunity) -> Option<u64> {
    let mut b = Vec::with_capacity(8);
    c.write(&mut b).ok()?;
    let b: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

fn v4(n: &Ipv4UnicastAddress) -> Cidr {
    let net = n.network().address();
    Cidr::V4(Prefix4::new_masked(u32::from(net.addr()), net.prefix_len()))
}

fn v6(n: &Ipv6UnicastAddress) -> Cidr {
    let net = n.network().address();
    Cidr::V6(Prefix6::new_masked(
        u128::from(net.addr()),
        net.prefix_len(),
    ))
}

/// Every prefix the message names, announced or withdrawn, as withdrawn.
fn withdraw_all(u: &BgpUpdateMessage, problems: Vec<String>) -> Update {
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

fn segments4(segs: &[pa::As4PathSegment]) -> Vec<AsSegment> {
    segs.iter()
        .map(|s| {
            let v = s.as_numbers().to_vec();
            match s.segment_type() {
                pa::AsPathSegmentType::AsSet => AsSegment::Set(v),
                pa::AsPathSegmentType::AsSequence => AsSegment::Sequence(v),
            }
        })
        .collect()
}

fn path_len(segs: &[AsSegment]) -> usize {
    segs.iter()
        .map(|s| match s {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
        })
        .sum()
}

/// RFC 6793 4.2.3: a two-octet AS_PATH and the AS4_PATH beside it make one path.
fn merge_as4(as_path: Vec<AsSegment>, as4: Vec<AsSegment>) -> Vec<AsSegment> {
    let (n, m) = (path_len(&as_path), path_len(&as4));
    if m > n {
        return as_path;
    }
    let mut keep = n - m;
    let mut out = Vec::new();
    for s in as_path {
        if keep == 0 {
            break;
        }
        match s {
            AsSegment::Sequence(v) => {
                let take = v.len().min(keep);
                keep -= take;
                out.push(AsSegment::Sequence(v[..take].to_vec()));
            }
            AsSegment::Set(v) => {
                keep -= 1;
                out.push(AsSegment::Set(v));
            }
        }
    }
    for s in as4 {
        match (out.last_mut(), s) {
            (Some(AsSegment::Sequence(v)), AsSegment::Sequence(w)) => v.extend(w),
            (_, s) => out.push(s),
        }
    }
    out
}

fn convert(u: &BgpUpdateMessage, mut problems: Vec<String>) -> Update {
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

fn write(msg: &BgpMessage) -> Vec<u8> {
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
fn attribute(v: pa::PathAttributeValue, len: usize) -> Option<pa::PathAttribute> {
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

fn net4(p: &Cidr) -> Option<Ipv4UnicastAddress> {
    let Cidr::V4(p) = p else { return None };
    let net = Ipv4Net::new(Ipv4Addr::from(p.addr()), p.len()).ok()?;
    Some(Ipv4UnicastAddress::new_no_path_id(
        Ipv4Unicast::from_net(net).ok()?,
    ))
}

fn net6(p: &Cidr) -> Option<Ipv6UnicastAddress> {
    let Cidr::V6(p) = p else { return None };
    let net = Ipv6Net::new(Ipv6Addr::from(p.addr()), p.len()).ok()?;
    Some(Ipv6UnicastAddress::new(
        None,
        Ipv6Unicast::from_net(net).ok()?,
    ))
}

/// The attributes of `attrs` (without the NLRI) in netgauze's form, for a peer that
/// does or does not take four-octet ASNs.
fn attributes(attrs: &PathAttrs, asn4: bool) -> Vec<pa::PathAttribute> {
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
fn nlri_size(p: &Cidr) -> usize {
    let len = match p {
        Cidr::V4(p) => p.len(),
        Cidr::V6(p) => p.len(),
    };
    1 + usize::from(len).div_ceil(8)
}

/// Cuts `prefixes` into runs whose NLRI fits in `budget` bytes each.
fn runs(prefixes: &[Cidr], budget: usize) -> Vec<&[Cidr]> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::frame::next_message;

    fn p4(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr::V4(Prefix4::new_masked(
            u32::from(a.parse::<Ipv4Addr>().unwrap()),
            l.parse().unwrap(),
        ))
    }

    fn p6(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr::V6(Prefix6::new_masked(
            u128::from(a.parse::<Ipv6Addr>().unwrap()),
            l.parse().unwrap(),
        ))
    }

    fn attrs(nh: IpAddr) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: vec![AsSegment::Sequence(vec![64512, 4200000000])],
            next_hop: nh,
            med: Some(5),
            local_pref: Some(200),
            communities: vec![0xfde8_0001],
            // A route target 65000:100, an opaque non-transitive one, and a kind
            // netgauze does not know (type 0x8f): all come back byte for byte.
            ext_communities: vec![
                0x0002_fde8_0000_0064,
                0x4300_0000_0000_0001,
                0x8f01_0203_0405_0607,
            ],
            large_communities: vec![[4_200_000_000, 1, 2]],
            originator_id: Some(Ipv4Addr::new(1, 2, 3, 4)),
            cluster_list: vec![Ipv4Addr::new(5, 6, 7, 8)],
        }
    }

    const D4: Decoding = Decoding { asn4: true };

    #[test]
    fn open_round_trips_with_its_capabilities() {
        let o = Open {
            asn: 4200000001,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            asn4: true,
            families: vec![Family::Ipv4, Family::Ipv6],
            route_refresh: true,
            graceful_restart: Some(GracefulRestart {
                restarting: true,
                time: 120,
                families: vec![(Family::Ipv4, true), (Family::Ipv6, false)],
            }),
        };
        let b = encode_open(&o);
        assert_eq!(next_message(&b, MAX_LEN), Ok(Some(b.len())));
        assert_eq!(u16::from_be_bytes([b[20], b[21]]), AS_TRANS);
        assert_eq!(decode(&b, D4), Ok(Message::Open(o)));
    }

    #[test]
    fn updates_round_trip_in_both_families_and_both_asn_widths() {
        let v4p: Vec<Cidr> = (0..2000u32)
            .map(|i| p4(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        let v6p: Vec<Cidr> = (0..1000u32)
            .map(|i| p6(&format!("2001:db8:{i:x}::/48")))
            .collect();
        for (family, prefixes, nh) in [
            (Family::Ipv4, &v4p, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            (
                Family::Ipv6,
                &v6p,
                IpAddr::V6("2001:db8::1".parse().unwrap()),
            ),
        ] {
            for asn4 in [true, false] {
                let a = attrs(nh);
                let msgs = encode_announce(family, prefixes, &a, asn4);
                assert!(
                    msgs.len() > 1,
                    "split into several messages: {} {family:?} {asn4}",
                    msgs.len()
                );
                let mut seen = Vec::new();
                for m in &msgs {
                    assert!(m.len() <= MAX_LEN);
                    let Ok(Message::Update(u)) = decode(m, Decoding { asn4 }) else {
                        panic!("decodes")
                    };
                    assert!(u.problems.is_empty(), "{:?}", u.problems);
                    for (got, p) in u.announced {
                        assert_eq!(*got, a, "asn4 {asn4}");
                        seen.extend(p);
                    }
                }
                assert_eq!(&seen, prefixes);
                let w = encode_withdraw(family, prefixes);
                let mut gone = Vec::new();
                for m in &w {
                    let Ok(Message::Update(u)) = decode(m, D4) else {
                        panic!()
                    };
                    gone.extend(u.withdrawn);
                }
                assert_eq!(&gone, prefixes);
            }
        }
    }

    #[test]
    fn end_of_rib_markers_are_recognised() {
        for f in Family::ALL {
            let Ok(Message::Update(u)) = decode(&encode_end_of_rib(f), D4) else {
                panic!()
            };
            assert_eq!(u.end_of_rib, Some(f));
        }
    }

    fn raw_update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.extend_from_slice(&[0, 0, kind::UPDATE]);
        v.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
        v.extend_from_slice(withdrawn);
        v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        v.extend_from_slice(attrs);
        v.extend_from_slice(nlri);
        let len = v.len() as u16;
        v[16..18].copy_from_slice(&len.to_be_bytes());
        v
    }

    const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
    const PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
    const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
    const NLRI: [u8; 4] = [24, 10, 1, 2];

    fn good(extra: &[u8]) -> Vec<u8> {
        let mut a = ORIGIN.to_vec();
        a.extend_from_slice(&PATH);
        a.extend_from_slice(&NH);
        a.extend_from_slice(extra);
        raw_update(&[], &a, &NLRI)
    }

    #[test]
    fn a_bad_origin_is_treated_as_withdraw() {
        let ok = decode(&good(&[]), D4).unwrap();
        let Message::Update(u) = ok else { panic!() };
        assert_eq!(u.announced[0].1, vec![p4("10.1.2.0/24")]);
        let mut a = vec![0x40, 1, 1, 9]; // ORIGIN 9
        a.extend_from_slice(&PATH);
        a.extend_from_slice(&NH);
        let Ok(Message::Update(u)) = decode(&raw_update(&[], &a, &NLRI), D4) else {
            panic!()
        };
        assert!(u.announced.is_empty());
        assert_eq!(u.withdrawn, vec![p4("10.1.2.0/24")]);
        assert_eq!(u.problems.len(), 1);
    }

    #[test]
    fn a_missing_next_hop_is_treated_as_withdraw() {
        let mut a = ORIGIN.to_vec();
        a.extend_from_slice(&PATH);
        let Ok(Message::Update(u)) = decode(&raw_update(&[], &a, &NLRI), D4) else {
            panic!()
        };
        assert!(u.announced.is_empty());
        assert_eq!(u.withdrawn, vec![p4("10.1.2.0/24")]);
    }

    #[test]
    fn a_bad_aggregator_is_discarded_and_the_route_kept() {
        let Ok(Message::Update(u)) = decode(&good(&[0xc0, 7, 3, 1, 2, 3]), D4) else {
            panic!()
        };
        assert_eq!(u.announced.len(), 1);
        assert_eq!(u.problems.len(), 1, "{:?}", u.problems);
    }

    #[test]
    fn repeated_attributes_keep_the_first() {
        let Ok(Message::Update(u)) =
            decode(&good(&[0x80, 4, 4, 0, 0, 0, 7, 0x80, 4, 4, 0, 0, 0, 9]), D4)
        else {
            panic!()
        };
        assert_eq!(u.announced[0].0.med, Some(7));
    }

    #[test]
    fn broken_structure_resets_the_session() {
        // An attribute overrunning the attribute list.
        let e = decode(&raw_update(&[], &[0x40, 1, 9, 0], &[]), D4).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
        // Withdrawn length past the message.
        let mut m = raw_update(&[], &[], &[]);
        m[19..21].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(decode(&m, D4).unwrap_err().code, 3);
        // A prefix longer than 32 bits.
        let e = decode(&raw_update(&[], &ORIGIN, &[33, 1, 1, 1, 1, 1]), D4).unwrap_err();
        assert_eq!(e.code, 3);
        // Two MP_REACH_NLRI.
        let mp = [0x80, 14, 5, 0, 2, 1, 0, 0];
        let twice = raw_update(&[], &[&ORIGIN[..], &PATH, &mp, &mp].concat(), &[]);
        assert_eq!(decode(&twice, D4).unwrap_err().code, 3);
    }

    #[test]
    fn a_recognised_optional_attribute_without_its_optional_bit_is_not_a_reset() {
        // MED (type 4) sent as well-known: malformed (attribute flags), treated as
        // RFC 7606 says for MED (withdraw), not a session reset.
        let med = [0x40, 4, 4, 0, 0, 0, 5];
        assert!(decode(&good(&med), D4).is_ok());
    }

    #[test]
    fn an_unrecognised_well_known_attribute_is_notification_3_2() {
        // Type 99 without the optional bit: well-known, and unknown to us.
        let unknown = [0x40, 99, 2, 0xab, 0xcd];
        let e = decode(&good(&unknown), D4).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 2));
        assert_eq!(e.data, unknown, "the data is the attribute");
        // The same type as an optional transitive attribute is kept and passed on.
        let optional = [0xc0, 99, 2, 0xab, 0xcd];
        let Ok(Message::Update(u)) = decode(&good(&optional), D4) else {
            panic!("an unknown optional attribute refused")
        };
        assert_eq!(u.announced[0].1, vec![p4("10.1.2.0/24")]);
    }

    #[test]
    fn notifications_and_unknown_types() {
        let n = Notification {
            code: 6,
            subcode: 2,
            data: vec![1],
        };
        assert_eq!(decode(&n.encode(), D4), Ok(Message::Notification(n)));
        let mut m = encode_keepalive();
        m[18] = 9;
        assert_eq!(decode(&m, D4).unwrap_err().subcode, 3);
    }

    #[test]
    fn as4_path_merges_with_a_two_octet_path() {
        let two = vec![AsSegment::Sequence(vec![65001, 23456, 23456])];
        let four = vec![AsSegment::Sequence(vec![4200000000, 4200000001])];
        assert_eq!(
            merge_as4(two, four),
            vec![AsSegment::Sequence(vec![65001, 4200000000, 4200000001])]
        );
    }
}
