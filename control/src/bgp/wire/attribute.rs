//! Path attributes: which types the decoder recognises, what RFC 7606 says to do with
//! one netgauze refused (discard it, treat the UPDATE as withdraw, or reset the
//! session), and the conversions of communities and AS paths (RFC 6793's AS4_PATH).

use crate::bgp::rib::AsSegment;
use netgauze_bgp_pkt::community::ExtendedCommunity;
use netgauze_bgp_pkt::path_attribute as pa;
use netgauze_bgp_pkt::wire::deserializer::path_attribute::PathAttributeParsingError;
use netgauze_parse_utils::WritablePdu;

/// One path attribute's place in the message.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawAttr {
    pub(super) kind: u8,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) const MP_REACH: u8 = 14;
/// The attribute types the decoder recognises (RFC 4271's, communities, route
/// reflection, MP-BGP, AS4, extended and large communities, AIGP, BGP-LS, OTC, prefix
/// SID and the like). One of these with wrong flags is malformed and handled as
/// RFC 7606 says; any other type without the optional bit is an unrecognised
/// well-known attribute (RFC 4271 6.3).
pub(super) const RECOGNISED: [u8; 21] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 25, 26, 29, 32, 35, 40,
];
pub(super) const MP_UNREACH: u8 = 15;

/// What RFC 7606 says to do about an attribute netgauze refused.
pub(super) enum Handling {
    Discard(u8),
    Withdraw,
    Reset,
}

pub(super) fn handling(e: &PathAttributeParsingError) -> Handling {
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

/// An extended community as its 8 bytes, read back through netgauze's own encoding of
/// whatever kind it parsed it as.
pub(super) fn ext_community(c: &ExtendedCommunity) -> Option<u64> {
    let mut b = Vec::with_capacity(8);
    c.write(&mut b).ok()?;
    let b: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

pub(super) fn segments4(segs: &[pa::As4PathSegment]) -> Vec<AsSegment> {
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

pub(super) fn path_len(segs: &[AsSegment]) -> usize {
    segs.iter()
        .map(|s| match s {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
        })
        .sum()
}

/// RFC 6793 4.2.3: a two-octet AS_PATH and the AS4_PATH beside it make one path.
pub(super) fn merge_as4(as_path: Vec<AsSegment>, as4: Vec<AsSegment>) -> Vec<AsSegment> {
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
