//! The messages as the session and the speaker see them: OPEN with our capabilities,
//! UPDATE as the RIB's types, and what decoding depends on.

use crate::bgp::frame::Notification;
use crate::bgp::rib::PathAttrs;
use crate::config::Cidr;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The address families we speak: unicast IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub(super) fn address_type(self) -> AddressType {
        match self {
            Family::Ipv4 => AddressType::Ipv4Unicast,
            Family::Ipv6 => AddressType::Ipv6Unicast,
        }
    }

    pub(super) fn from_address_type(t: AddressType) -> Option<Family> {
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

pub(super) fn context(asn4: bool) -> BgpParsingContext {
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

pub(super) fn notification(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
    Notification {
        code,
        subcode,
        data,
    }
}
