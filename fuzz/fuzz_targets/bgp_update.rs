//! Any bytes a peer may send once the session is up: cut into messages, decoded (with
//! or without four-octet ASNs), and every UPDATE applied to a Loc-RIB as the speaker
//! does. Never a panic; every refusal is a NOTIFICATION that encodes to a valid
//! message; and every announcement that decodes re-encodes to itself.
#![no_main]
use control::bgp::frame::{next_message, MAX_LEN};
use control::bgp::rib::{Rib, Source};
use control::bgp::wire::{decode, encode_announce, Decoding, Family, Message};
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
                for p in &u.withdrawn {
                    rib.update(*p, source, None);
                    assert!(rib.best(p).is_none());
                }
                for (attrs, prefixes) in &u.announced {
                    for p in prefixes {
                        rib.update(*p, source, Some(attrs.clone()));
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
