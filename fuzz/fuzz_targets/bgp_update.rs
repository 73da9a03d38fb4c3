//! Any bytes a peer may send once the session is up: cut into messages, decoded (with
//! or without four-octet ASNs), and every UPDATE applied to a Loc-RIB as the speaker
//! does (a message's prefixes as one batch per family). Never a panic; every refusal is a NOTIFICATION that encodes to a valid
//! message; and every announcement that decodes re-encodes to itself.
#![no_main]
use control::bgp::frame::{next_message, MAX_LEN};
use control::bgp::rib::{Rib, RibChanges, Source};
use control::bgp::wire::{decode, encode_announce, Decoding, Family, Message};
use control::config::Cidr;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|input: (bool, &[u8])| {
    let (asn4, mut stream) = input;
    let mut rib = Rib::new();
    let source = Source {
        peer: 1,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ebgp: true,
        local: false,
    };
    loop {
        let n = match next_message(stream, MAX_LEN) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(notification) => {
                let b = notification.encode();
                assert_eq!(next_message(&b, MAX_LEN), Ok(Some(b.len())));
                break;
            }
        };
        let (msg, rest) = stream.split_at(n);
        stream = rest;
        match decode(msg, Decoding { asn4 }) {
            Err(notification) => {
                let b = notification.encode();
                assert_eq!(next_message(&b, MAX_LEN), Ok(Some(b.len())));
                break;
            }
            Ok(Message::Update(u)) => {
                let mut changes = RibChanges::default();
                let (v4, v6) = split(&u.withdrawn);
                rib.v4.withdraw(source, &v4, &mut changes.v4);
                rib.v6.withdraw(source, &v6, &mut changes.v6);
                for p in &u.withdrawn {
                    assert!(rib.best(p).is_none());
                }
                for (attrs, prefixes) in &u.announced {
                    let (v4, v6) = split(prefixes);
                    rib.v4.announce(source, attrs, &v4, &mut changes.v4);
                    rib.v6.announce(source, attrs, &v6, &mut changes.v6);
                    for p in prefixes {
                        assert_eq!(rib.best(p).map(|b| b.best.attrs), Some(attrs.clone()));
                    }
                    assert!(rib.peer_len(1) <= rib.len());
                    let family = Family::of(&prefixes[0]);
                    let same_family = matches!(
                        (family, attrs.next_hop),
                        (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_))
                    );
                    if !asn4 || !same_family || prefixes.iter().any(|p| Family::of(p) != family) {
                        continue;
                    }
                    let mut again = Vec::new();
                    for m in encode_announce(family, prefixes, attrs, true) {
                        let Ok(Message::Update(back)) = decode(&m, Decoding { asn4: true }) else {
                            panic!("our own UPDATE does not decode");
                        };
                        for (a, ps) in back.announced {
                            assert_eq!(&a, attrs);
                            again.extend(ps);
                        }
                    }
                    assert!(
                        again.is_empty() || &again == prefixes,
                        "{prefixes:?} came back as {again:?} with {attrs:?}"
                    );
                }
            }
            Ok(_) => {}
        }
    }
});

/// A message's prefixes by family.
fn split(prefixes: &[Cidr]) -> (Vec<lpm::Prefix4>, Vec<lpm::Prefix6>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for c in prefixes {
        match c {
            Cidr::V4(p) => v4.push(*p),
            Cidr::V6(p) => v6.push(*p),
        }
    }
    (v4, v6)
}
