//! Any values for kube-router's BGP node annotations: parsed or reported, never a
//! panic; every peer that comes out is usable (a valid ASN, a port).
#![no_main]
use control::bgp::annotations::{parse_node, valid_asn, PREFIX};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const NAMES: [&str; 13] = [
    "node.asn",
    "rr.server",
    "rr.client",
    "peers",
    "peer.ips",
    "peer.asns",
    "peer.passwords",
    "peer.ports",
    "peer.localips",
    "path-prepend.as",
    "path-prepend.repeat-n",
    "node.bgp.communities",
    "node.bgp.customimportreject",
];

fuzz_target!(|input: Vec<(u8, String)>| {
    let annotations: BTreeMap<String, String> = input
        .into_iter()
        .map(|(k, v)| {
            (
                format!("{PREFIX}{}", NAMES[usize::from(k) % NAMES.len()]),
                v,
            )
        })
        .collect();
    let (node, errors) = parse_node("fuzz", &annotations);
    for p in &node.peers {
        assert!(valid_asn(p.asn) && p.port != 0);
    }
    for e in errors {
        assert!(e.to_string().starts_with("node fuzz: kube-router.io/"));
    }
});
