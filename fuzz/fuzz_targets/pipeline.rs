//! Any frame on any port through the whole forwarding pipeline, against a node's real
//! tables (built once from a static configuration, with services of every kind and a
//! populated conntrack table, which the frames go on filling): no panic, the frame
//! stays within its UMEM-sized buffer, and a transmitted frame goes to a port that
//! exists.
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
services:
  - name: web
    cluster_ips: [10.96.0.10, fd00:96::10]
    external_ips: [198.51.100.10]
    load_balancer_ips: [198.51.100.20]
    load_balancer_source_ranges: [192.168.200.0/25]
    session_affinity: ClientIP
    ports:
      - {name: http, port: 80, target_port: 8080, node_port: 30080}
      - {name: dns, protocol: UDP, port: 53, node_port: 30053}
    endpoints: [10.244.1.2, 10.244.2.2, fd00:1::2]
  - name: local
    cluster_ips: [10.96.0.11]
    external_traffic_policy: Local
    ports: [{name: http, port: 80, node_port: 30081}]
    endpoints: [10.244.2.3]
  - name: empty
    cluster_ips: [10.96.0.12]
    ports: [{name: http, port: 80}]
";

/// Flows already tracked, with the service ids the node's frontends have: a TCP flow
/// to the ClusterIP, a UDP flow whose backend is gone, a NodePort flow SNATed to the
/// node, and over IPv6 a pod's flow to the ClusterIP that lands on itself (hairpin).
/// The seeds (`fuzz/pipeline_seeds.py`) hit them.
fn populate(s: &Snapshot) {
    use nat::conntrack::flow::{counterpart, flags, Direction, Nat, Tuple};
    use std::net::{Ipv4Addr, Ipv6Addr};
    let http = nat::frontend::port_id("default/web", "http");
    let dns = nat::frontend::port_id("default/web", "dns");
    let ct = &s.services.conntrack;
    let a = |x: [u8; 4]| Ipv4Addr::from(x);
    let flows = [
        (
            ([10, 244, 1, 3], 40000),
            ([10, 96, 0, 10], 80),
            ([10, 244, 2, 2], 8080),
            6,
            flags::SYN_SEEN | flags::WINDOW,
            None,
            http,
        ),
        (
            ([10, 244, 1, 3], 5353),
            ([10, 96, 0, 10], 53),
            ([10, 244, 1, 2], 53),
            17,
            flags::BACKEND_GONE,
            None,
            dns,
        ),
        (
            ([192, 168, 200, 9], 33000),
            ([192, 168, 100, 11], 30080),
            ([10, 244, 1, 2], 8080),
            6,
            flags::SNAT,
            Some(61001),
            http,
        ),
    ];
    for (client, vip, backend, protocol, fl, snat, service) in flows {
        let t = Tuple {
            src: a(client.0),
            dst: a(vip.0),
            sport: client.1,
            dport: vip.1,
            protocol,
        };
        let (src, sport) = match snat {
            Some(p) => (a([192, 168, 100, 11]), p),
            None => (t.src, t.sport),
        };
        let out = Nat {
            src,
            sport,
            dst: a(backend.0),
            dport: backend.1,
            direction: Direction::Original,
            state: 3,
            flags: fl,
            service,
            expires: u32::MAX,
            // The first flow's window is tracked (both ISNs 1000, both scales 7).
            window: nat::conntrack::window::Window {
                end: [1001, 1001],
                scale: [7, 7],
            },
        };
        let reply = Tuple {
            src: out.dst,
            dst: out.src,
            sport: out.dport,
            dport: out.sport,
            protocol,
        };
        let back = Nat {
            src: t.dst,
            sport: t.dport,
            dst: t.src,
            dport: t.sport,
            direction: Direction::Reply,
            ..out
        };
        ct.put4(&t, &out, 1);
        ct.put4(&reply, &back, 1);
    }
    let pod: Ipv6Addr = "fd00:1::2".parse().unwrap();
    let vip: Ipv6Addr = "fd00:96::10".parse().unwrap();
    let t = Tuple {
        src: pod,
        dst: vip,
        sport: 40000,
        dport: 80,
        protocol: 6,
    };
    let out = Nat {
        src: vip,
        sport: 40000,
        dst: pod,
        dport: 8080,
        direction: Direction::Original,
        state: 3,
        flags: flags::SNAT,
        service: http,
        expires: u32::MAX,
        window: Default::default(),
    };
    let (reply, back) = counterpart(&t, &out);
    ct.put6(&t, &out, 1);
    ct.put6(&reply, &back, 1);
}

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
        let proxy = control::services::Proxy::new(control::services::ProxySettings {
            conntrack_max: 4096,
            ..Default::default()
        });
        let s = Snapshot::new(build_tables(&c, &links, [2, 9, 9, 9, 9, 9], &n, &proxy).unwrap())
            .unwrap();
        populate(&s);
        s
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
    local.seconds = 2;
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
