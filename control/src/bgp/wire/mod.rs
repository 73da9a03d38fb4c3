//! BGP messages on the wire, through netgauze-bgp-pkt: OPEN with our capabilities,
//! UPDATE in both directions (IPv4 in the classic fields, IPv6 in MP_REACH and
//! MP_UNREACH), KEEPALIVE, NOTIFICATION and ROUTE-REFRESH, converted to and from the
//! RIB's types.
//!
//! - [`message`]: the messages as the session and the speaker see them.
//! - [`attribute`]: path attributes, and what RFC 7606 says to do with a malformed one:
//!   "attribute discard" for the ones that do not affect route selection
//!   (ATOMIC_AGGREGATE, AGGREGATOR, AIGP, ...); "treat-as-withdraw" for the others
//!   (ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, communities, ORIGINATOR_ID,
//!   CLUSTER_LIST, and a missing mandatory attribute), where every prefix the message
//!   announces is withdrawn instead; and "session reset" for the MP attributes and the
//!   NLRI fields, whose prefixes cannot be trusted.
//! - [`decode`]: a delimited message into a [`Message`], with that handling.
//! - [`encode`]: ours, UPDATEs packed within the message size limit.

pub mod attribute;
pub mod decode;
pub mod encode;
pub mod message;

pub use decode::decode;
pub use encode::{
    encodable, encode_announce, encode_end_of_rib, encode_keepalive, encode_open,
    encode_route_refresh, encode_withdraw,
};
pub use message::*;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bgp::frame::{kind, Notification, MARKER, MAX_LEN};
    use crate::bgp::rib::{AsSegment, Origin, PathAttrs};
    use crate::config::Cidr;

    use lpm::{Prefix4, Prefix6};

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::attribute::*;

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
    fn an_attribute_list_that_overruns_its_length_is_treat_as_withdraw() {
        // RFC 7606 4: the last attribute runs past the Total Path Attribute Length, or
        // fewer bytes than a header are left; the NLRI is found by that length and
        // withdrawn.
        let nlri = [24, 10, 1, 2];
        for tail in [&[0x40, 2, 9, 0][..], &[0x40, 2][..], &[0x50][..]] {
            let attrs = [&ORIGIN[..], tail].concat();
            let Ok(Message::Update(u)) = decode(&raw_update(&[], &attrs, &nlri), D4) else {
                panic!("{tail:02x?}: not an UPDATE")
            };
            assert_eq!(u.withdrawn, vec![p4("10.1.2.0/24")], "{tail:02x?}");
            assert!(u.announced.is_empty());
            assert!(
                u.problems[0].contains("treat-as-withdraw"),
                "{:?}",
                u.problems
            );
        }
        // An MP_REACH_NLRI cut short hides prefixes that cannot be withdrawn: a reset.
        let cut = [&ORIGIN[..], &[0x80, 14, 20, 0, 2, 1]].concat();
        let e = decode(&raw_update(&[], &cut, &[]), D4).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
    }

    #[test]
    fn broken_structure_resets_the_session() {
        // The attribute list runs past the message: the NLRI cannot be located.
        let mut m = raw_update(&[], &ORIGIN, &[]);
        let at = 21;
        m[at..at + 2].copy_from_slice(&200u16.to_be_bytes());
        let e = decode(&m, D4).unwrap_err();
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
