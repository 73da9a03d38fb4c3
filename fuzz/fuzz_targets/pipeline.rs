//! Any frame on any port through the whole forwarding pipeline, against a node's real
//! tables (built once from a static configuration): no panic, the frame stays within
//! its UMEM-sized buffer, and a transmitted frame goes to a port that exists.
#![no_main]
use control::config::parse;
use control::model::{build_tables, port_plan, Link, Neighbours};
use fastpath::counters::Tally;
use fastpath::pipeline::ratelimit::RateLimit;
use fastpath::pipeline::{forward, Local, Verdict};
use fastpath::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = "\
node: node1
uplink: {interface: up0, addresses: [192.168.100.11/24]}
host_port: {interface: xrf0, peer: xrk0}
pod_cidrs: [10.244.1.0/24, fd00:1::/64]
pods:
  - {interface: vp1, ips: [10.244.1.2, fd00:1::2], mac: 0a:58:0a:f4:01:02}
  - {interface: vp2, ips: [10.244.1.3], mac: 0a:58:0a:f4:01:03}
nodes:
  - {name: node2, ip: 192.168.100.12, pod_cidrs: [10.244.2.0/24]}
routes:
  - {prefix: 192.168.200.0/24, via: [192.168.100.1, 192.168.100.2]}
";

fn snapshot() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| {
        let c = parse(CONFIG, "fuzz.yaml").unwrap();
        let links: Vec<Link> = port_plan(&c)
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| Link {
                name: name.clone(),
                mac: [2, 0, 0, 0, 0, i as u8],
                mtu: 1500,
            })
            .collect();
        let mut n = Neighbours::new();
        n.insert("192.168.100.1".parse().unwrap(), [2, 1, 1, 1, 1, 1]);
        Snapshot::new(build_tables(&c, &links, [2, 9, 9, 9, 9, 9], &n).unwrap()).unwrap()
    })
}

fuzz_target!(|input: (u8, &[u8])| {
    let (port, bytes) = input;
    let s = snapshot();
    let mut buf = [0u8; 2048];
    let len0 = bytes.len().min(buf.len());
    buf[..len0].copy_from_slice(&bytes[..len0]);
    let mut len = len0;
    let port = u16::from(port % 5);
    let mut local = Local::new(RateLimit::default(), 0);
    let v = forward(
        s,
        &mut local,
        port,
        &mut buf,
        &mut len,
        None,
        &mut Tally::default(),
    );
    assert!(len <= buf.len());
    if let Verdict::Tx(to) = v {
        assert!(usize::from(to) < s.ports.len());
    }
});
