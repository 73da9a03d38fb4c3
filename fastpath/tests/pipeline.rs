//! The forwarding pipeline, frame by frame: built with etherparse, checked with a naive
//! checksum written here, independent of the fastpath's own wire code.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use fastpath::counters::{DropReason, Tally};
use fastpath::ecmp::NextHopGroup;
use fastpath::pipeline::ratelimit::RateLimit;
use fastpath::pipeline::{forward, ipv4_destination, ipv4_flow, Local, Verdict};
use fastpath::snapshot::{
    Adjacency, Gateway, LocalPod, NextHopEntry, PortInfo, PortRole, Services, Snapshot, Tables,
};
use lpm::{LpmBuilder, NextHop, Prefix4, Prefix6};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const UPLINK: u16 = 0;
const HOST: u16 = 1;
const POD_A: u16 = 2;
const POD_B: u16 = 3;
const GW_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const HOSTPORT_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];
const KERNEL_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const POD_A_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 2];
const POD_B_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 3];
const NODE2_MAC: [u8; 6] = [0x02, 0x12, 0, 0, 0, 2];
const NODE3_MAC: [u8; 6] = [0x02, 0x13, 0, 0, 0, 3];
const POD_A_IP: [u8; 4] = [10, 244, 1, 2];
const POD_B_IP: [u8; 4] = [10, 244, 1, 3];
const NODE_IP: [u8; 4] = [192, 168, 100, 11];
const GW_IP: [u8; 4] = [10, 244, 1, 1];
const POD_A_IP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const POD_B_IP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const GW_IP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NODE_IP6: [u8; 16] = [0xfd, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11];

fn nh(i: u16) -> NextHop {
    NextHop::new(i).unwrap()
}

fn resolved(port: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> NextHopEntry {
    NextHopEntry::Resolved(Adjacency {
        port,
        src_mac,
        dst_mac,
    })
}

/// Node 1: pods A and B on ports 2 and 3, node 2's pod CIDR over two uplink neighbours
/// (ECMP), node 3's behind a neighbour not resolved yet, the node's own address.
fn snapshot() -> Snapshot {
    Snapshot::new(tables()).unwrap()
}

fn tables() -> Tables {
    let p4 = |s: &str| s.parse::<Prefix4>().unwrap();
    let p6 = |s: &str| s.parse::<Prefix6>().unwrap();
    let fib4 = LpmBuilder::from_routes([
        (p4("10.244.1.2/32"), nh(0)),
        (p4("10.244.1.3/32"), nh(1)),
        (p4("10.244.2.0/24"), nh(2)),
        (p4("10.244.1.0/24"), nh(3)),
        (p4("192.168.100.11/32"), nh(4)),
        (p4("10.244.3.0/24"), nh(5)),
        (p4("192.168.200.0/24"), nh(2)),
    ])
    .table();
    let fib6 = LpmBuilder::from_routes([
        (p6("fd00:1::2/128"), nh(0)),
        (p6("fd00:1::3/128"), nh(1)),
        (p6("fd00:2::/64"), nh(2)),
        (p6("fd00:1::/64"), nh(3)),
    ])
    .table();
    let group = |members: &[(u32, u32)]| NextHopGroup::new(members).unwrap();
    let port = |mac, role| PortInfo {
        mac,
        mtu: 1500,
        role,
    };
    Tables {
        fib4,
        fib6,
        max_group: Some(nh(5)),
        groups: vec![
            group(&[(0, 1)]),
            group(&[(1, 1)]),
            group(&[(2, 1), (3, 1)]),
            group(&[(4, 1)]),
            group(&[(5, 1)]),
            group(&[(6, 1)]),
        ],
        next_hops: vec![
            resolved(POD_A, GW_MAC, POD_A_MAC),
            resolved(POD_B, GW_MAC, POD_B_MAC),
            resolved(UPLINK, UPLINK_MAC, NODE2_MAC),
            resolved(UPLINK, UPLINK_MAC, NODE3_MAC),
            NextHopEntry::Unreachable,
            NextHopEntry::Host,
            NextHopEntry::Unresolved {
                port: UPLINK,
                addr: "192.168.100.13".parse().unwrap(),
            },
        ],
        pods: vec![
            LocalPod {
                addrs: vec![
                    Ipv4Addr::from(POD_A_IP).into(),
                    Ipv6Addr::from(POD_A_IP6).into(),
                ],
                port: POD_A,
                mac: POD_A_MAC,
            },
            LocalPod {
                addrs: vec![
                    Ipv4Addr::from(POD_B_IP).into(),
                    Ipv6Addr::from(POD_B_IP6).into(),
                ],
                port: POD_B,
                mac: POD_B_MAC,
            },
        ],
        node_addrs: vec![
            Ipv4Addr::from(NODE_IP).into(),
            Ipv6Addr::from(NODE_IP6).into(),
        ],
        gateway: Gateway {
            ipv4: Some(GW_IP.into()),
            ipv6: Some(GW_IP6.into()),
        },
        ports: vec![
            port(UPLINK_MAC, PortRole::Uplink),
            port(HOSTPORT_MAC, PortRole::Host),
            port(GW_MAC, PortRole::Pod),
            port(GW_MAC, PortRole::Pod),
        ],
        host: Some(Adjacency {
            port: HOST,
            src_mac: HOSTPORT_MAC,
            dst_mac: KERNEL_MAC,
        }),
        services: Services::default(),
    }
}

fn udp4(src: [u8; 4], dst: [u8; 4], ttl: u8, sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
        .ipv4(src, dst, ttl)
        .udp(sport, 5001)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
        .ipv6(src, dst, hop_limit)
        .udp(4000, 5001)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Runs one frame through the pipeline in a 2 KiB frame buffer, as a UMEM frame is.
fn run(frame: &[u8], in_port: u16) -> (Verdict, Vec<u8>, Tally) {
    run_with(
        &snapshot(),
        &mut Local::new(RateLimit::default(), 0),
        frame,
        in_port,
    )
}

fn run_with(
    s: &Snapshot,
    local: &mut Local,
    frame: &[u8],
    in_port: u16,
) -> (Verdict, Vec<u8>, Tally) {
    let mut buf = vec![0u8; 2048];
    buf[..frame.len()].copy_from_slice(frame);
    let mut len = frame.len();
    let mut t = Tally::default();
    let v = forward(s, local, in_port, &mut buf, &mut len, None, &mut t);
    buf.truncate(len);
    (v, buf, t)
}

/// The frame as it arrives on `port`: to the port's MAC, from the station on the
/// other end (pod A on its port, node 2 on the uplink, the kernel on the host port).
fn on(port: u16, mut frame: Vec<u8>) -> Vec<u8> {
    let (dst, src) = match port {
        UPLINK => (UPLINK_MAC, NODE2_MAC),
        HOST => (HOSTPORT_MAC, KERNEL_MAC),
        POD_B => (GW_MAC, POD_B_MAC),
        _ => (GW_MAC, POD_A_MAC),
    };
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

/// RFC 1071, the slow way.
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header_ok(ip: &[u8]) -> bool {
    let ihl = usize::from(ip[0] & 0xf) * 4;
    internet_checksum(&[&ip[..ihl]]) == 0
}

fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        frame[6..12].try_into().unwrap(),
        frame[0..6].try_into().unwrap(),
    )
}

#[test]
fn pod_to_pod_on_the_node_is_routed_with_ttl_and_checksum_updated() {
    let frame = udp4(POD_A_IP, POD_B_IP, 64, 4000, b"hello");
    let (v, out, t) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(POD_B));
    assert_eq!(macs(&out), (GW_MAC, POD_B_MAC));
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().ttl(), 63);
    assert!(ipv4_header_ok(&out[14..]));
    let Some(TransportSlice::Udp(udp)) = p.transport else {
        panic!("not UDP")
    };
    assert_eq!(udp.payload(), b"hello");
    assert_eq!(out.len(), frame.len());
    assert_eq!(t, Tally::default(), "a forwarded frame counts nothing here");
}

#[test]
fn batch_lookup_gives_the_same_answer() {
    let frame = udp4(POD_A_IP, POD_B_IP, 64, 4000, b"x");
    let s = snapshot();
    let dst = ipv4_destination(&frame).unwrap();
    assert_eq!(dst, u32::from_be_bytes(POD_B_IP));
    let mut out = [None];
    s.fib4.lookup_batch(&[dst], &mut out);
    let mut buf = frame.clone();
    buf.resize(2048, 0);
    let mut len = frame.len();
    let v = forward(
        &s,
        &mut Local::new(RateLimit::default(), 0),
        POD_A,
        &mut buf,
        &mut len,
        Some(out[0]),
        &mut Tally::default(),
    );
    assert_eq!(v, Verdict::Tx(POD_B));
}

/// The batch's prefetch sees the flow the service stage looks up, and nothing where
/// the frame has no ports.
#[test]
fn the_prefetched_flow_is_the_frames() {
    let frame = udp4(POD_A_IP, POD_B_IP, 64, 4000, b"x");
    let t = ipv4_flow(&frame).unwrap();
    assert_eq!((t.src.octets(), t.dst.octets()), (POD_A_IP, POD_B_IP));
    assert_eq!((t.sport, t.dport, t.protocol), (4000, 5001, 17));
    // With options the ports move.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
        .ipv4(POD_A_IP, POD_B_IP, 64)
        .tcp(4321, 80, 1, 1000)
        .write(&mut v, b"")
        .unwrap();
    let mut opt = v[..34].to_vec();
    opt[14] = 0x46; // IHL 6: one word of options (a NOP run, then the end)
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&v[34..]);
    let t = ipv4_flow(&opt).unwrap();
    assert_eq!((t.sport, t.dport, t.protocol), (4321, 80, 6));
    // A later fragment, ICMP and IPv6: none.
    let mut later = frame.clone();
    later[20] = 0x00;
    later[21] = 0x10;
    assert!(ipv4_flow(&later).is_none());
    let mut icmp = frame.clone();
    icmp[23] = 1;
    assert!(ipv4_flow(&icmp).is_none());
    assert!(ipv4_flow(&udp6(POD_A_IP6, POD_B_IP6, 64, b"x")).is_none());
    assert!(ipv4_flow(&frame[..36]).is_none(), "no room for the ports");
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_on_one_neighbour() {
    let mut seen = std::collections::HashSet::new();
    for sport in 0..64 {
        let frame = udp4(POD_A_IP, [10, 244, 2, 7], 64, 1000 + sport, b"");
        let (v, out, _) = run(&frame, POD_A);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let (src, dst) = macs(&out);
        assert_eq!(src, UPLINK_MAC);
        assert_eq!(macs(&run(&frame, POD_A).1).1, dst, "a flow changed member");
        seen.insert(dst);
    }
    assert_eq!(seen, [NODE2_MAC, NODE3_MAC].into_iter().collect());
}

#[test]
fn expired_ttl_answers_time_exceeded_from_the_gateway() {
    let frame = udp4(POD_A_IP, POD_B_IP, 1, 4000, b"payload");
    let (v, out, t) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(POD_A));
    assert_eq!(macs(&out), (GW_MAC, POD_A_MAC));
    assert_eq!(t.drops[DropReason::TtlExpired as usize], 1);
    assert_eq!(t.icmp_errors, 1);
    let ip = &out[14..];
    assert!(ipv4_header_ok(ip));
    assert_eq!(
        (ip[9], &ip[12..16], &ip[16..20]),
        (1, &GW_IP[..], &POD_A_IP[..])
    );
    let icmp = &ip[20..];
    assert_eq!((icmp[0], icmp[1]), (11, 0));
    assert_eq!(internet_checksum(&[icmp]), 0);
    assert_eq!(&icmp[8..], &frame[14..], "the whole original is quoted");
}

#[test]
fn no_route_and_unused_pod_addresses_answer_unreachable() {
    let (v, out, t) = run(&udp4(POD_A_IP, [203, 0, 113, 1], 64, 1, b""), POD_A);
    assert_eq!(v, Verdict::Tx(POD_A));
    assert_eq!((out[14 + 20], out[14 + 21]), (3, 0), "net unreachable");
    assert_eq!(t.drops[DropReason::NoRoute as usize], 1);
    let (_, out, _) = run(&udp4(POD_A_IP, [10, 244, 1, 99], 64, 1, b""), POD_A);
    assert_eq!((out[14 + 20], out[14 + 21]), (3, 1), "host unreachable");
    // From the uplink, the error comes from the node's address.
    let (v, out, _) = run(
        &on(
            UPLINK,
            udp4([192, 168, 200, 5], [10, 244, 1, 99], 64, 1, b""),
        ),
        UPLINK,
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[14 + 12..14 + 16], &NODE_IP);
}

#[test]
fn no_error_about_an_error() {
    // A time-exceeded message whose own TTL runs out is dropped silently.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
        .ipv4(POD_A_IP, POD_B_IP, 1)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut v, &[0; 28])
        .unwrap();
    let (verdict, _, t) = run(&v, POD_A);
    assert_eq!(verdict, Verdict::Drop(DropReason::TtlExpired));
    assert_eq!(t.icmp_errors, 0);
}

#[test]
fn node_addresses_go_to_the_host_port_untouched_but_for_macs() {
    let frame = udp4(POD_A_IP, NODE_IP, 64, 1, b"to the node");
    let (v, out, t) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(HOST));
    assert_eq!(macs(&out), (HOSTPORT_MAC, KERNEL_MAC));
    assert_eq!(&out[12..], &frame[12..]);
    assert_eq!(t.punts, 0);
}

#[test]
fn unresolved_next_hops_are_punted_to_the_kernel_but_not_back() {
    let frame = udp4(POD_A_IP, [10, 244, 3, 4], 64, 1, b"");
    let (v, out, t) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(HOST));
    assert_eq!(macs(&out), (HOSTPORT_MAC, KERNEL_MAC));
    assert_eq!(&out[12..], &frame[12..]);
    assert_eq!(t.punts, 1);
    let (v, _, _) = run(&on(HOST, frame), HOST);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
}

#[test]
fn too_big_with_dont_fragment_answers_fragmentation_needed() {
    let dont_fragment = |df: bool| {
        let mut frame = udp4(POD_A_IP, [10, 244, 2, 7], 64, 1, &[7; 1600]);
        frame[14 + 6] = if df { 0x40 } else { 0 };
        frame[24..26].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&[&frame[14..34]]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
        frame
    };
    let (v, out, t) = run(&dont_fragment(true), POD_A);
    assert_eq!(v, Verdict::Tx(POD_A));
    assert_eq!(t.drops[DropReason::TooBig as usize], 1);
    let icmp = &out[34..];
    assert_eq!(
        (icmp[0], icmp[1], &icmp[6..8]),
        (3, 4, &1500u16.to_be_bytes()[..])
    );
    assert_eq!(out.len(), 14 + 576, "the error is at most 576 bytes of IP");
    // Without DF the kernel fragments it.
    let (v, _, t) = run(&dont_fragment(false), POD_A);
    assert_eq!((v, t.punts), (Verdict::Tx(HOST), 1));
}

#[test]
fn pods_arp_for_their_gateway_is_answered() {
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&POD_A_MAC);
    req.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&POD_A_MAC);
    req.extend_from_slice(&POD_A_IP);
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&GW_IP);
    let (v, out, t) = run(&req, POD_A);
    assert_eq!(v, Verdict::Tx(POD_A));
    assert_eq!(t.replies, 1);
    assert_eq!(macs(&out), (GW_MAC, POD_A_MAC));
    assert_eq!(&out[20..22], &[0, 2], "a reply");
    assert_eq!((&out[22..28], &out[28..32]), (&GW_MAC[..], &GW_IP[..]));
    assert_eq!(
        (&out[32..38], &out[38..42]),
        (&POD_A_MAC[..], &POD_A_IP[..])
    );
    // A probe for the pod's own address (sender 0.0.0.0) must go unanswered.
    let mut probe = req.clone();
    probe[28..32].copy_from_slice(&[0; 4]);
    probe[38..42].copy_from_slice(&POD_A_IP);
    assert_eq!(run(&probe, POD_A).0, Verdict::Drop(DropReason::LinkScope));
    // ARP is the kernel's on the uplink.
    assert_eq!(run(&req, UPLINK).0, Verdict::Drop(DropReason::LinkScope));
}

#[test]
fn echo_to_the_gateway_is_answered() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
        .ipv4(POD_A_IP, GW_IP, 64)
        .icmpv4_echo_request(0x77, 3)
        .write(&mut v, b"ping")
        .unwrap();
    let (verdict, out, t) = run(&v, POD_A);
    assert_eq!((verdict, t.replies), (Verdict::Tx(POD_A), 1));
    let ip = &out[14..];
    assert!(ipv4_header_ok(ip));
    assert_eq!((&ip[12..16], &ip[16..20]), (&GW_IP[..], &POD_A_IP[..]));
    assert_eq!(ip[20], 0, "echo reply");
    assert_eq!(internet_checksum(&[&ip[20..]]), 0);
    assert_eq!(&ip[24..], &v[14 + 24..], "id, sequence and data kept");
}

fn pseudo6(src: &[u8], dst: &[u8], len: usize) -> Vec<u8> {
    let mut p = src.to_vec();
    p.extend_from_slice(dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 58]);
    p
}

#[test]
fn neighbour_solicitation_for_the_gateway_is_answered() {
    let solicited_node = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&GW_IP6);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&POD_A_MAC);
    let c = internet_checksum(&[&pseudo6(&POD_A_IP6, &solicited_node, body.len()), &body]);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    let mut frame = vec![0x33, 0x33, 0xff, 0, 0, 1];
    frame.extend_from_slice(&POD_A_MAC);
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, body.len() as u8, 58, 255]);
    frame.extend_from_slice(&POD_A_IP6);
    frame.extend_from_slice(&solicited_node);
    frame.extend_from_slice(&body);
    let (v, out, t) = run(&frame, POD_A);
    assert_eq!((v, t.replies), (Verdict::Tx(POD_A), 1));
    assert_eq!(macs(&out), (GW_MAC, POD_A_MAC));
    let ip = &out[14..];
    assert_eq!((ip[6], ip[7]), (58, 255));
    assert_eq!((&ip[8..24], &ip[24..40]), (&GW_IP6[..], &POD_A_IP6[..]));
    let na = &ip[40..];
    assert_eq!(na.len(), 32);
    assert_eq!((na[0], na[4]), (136, 0xe0), "router, solicited, override");
    assert_eq!(&na[8..24], &GW_IP6);
    assert_eq!(&na[24..32], &[2, 1, GW_MAC[0], GW_MAC[1], 0, 0, 0, 1]);
    assert_eq!(
        internet_checksum(&[&pseudo6(&GW_IP6, &POD_A_IP6, 32), na]),
        0
    );
    // Hop limit other than 255: not from the link, ignored (RFC 4861 7.1.1).
    let mut far = frame.clone();
    far[21] = 64;
    assert_eq!(run(&far, POD_A).0, Verdict::Drop(DropReason::LinkScope));
}

#[test]
fn ipv6_is_routed_and_expires_with_an_icmpv6_error() {
    let frame = udp6(POD_A_IP6, POD_B_IP6, 64, b"six");
    let (v, out, _) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(POD_B));
    assert_eq!(out[14 + 7], 63);
    let (v, out, t) = run(&udp6(POD_A_IP6, POD_B_IP6, 1, b"six"), POD_A);
    assert_eq!((v, t.icmp_errors), (Verdict::Tx(POD_A), 1));
    let ip = &out[14..];
    assert_eq!((&ip[8..24], &ip[24..40]), (&GW_IP6[..], &POD_A_IP6[..]));
    let m = &ip[40..];
    assert_eq!((m[0], m[1]), (3, 0));
    assert_eq!(
        internet_checksum(&[&pseudo6(&GW_IP6, &POD_A_IP6, m.len()), m]),
        0
    );
    let (_, out, _) = run(
        &udp6(
            POD_A_IP6,
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
            b"",
        ),
        POD_A,
    );
    assert_eq!(out[14 + 40], 1, "destination unreachable");
}

#[test]
fn malformed_and_unknown_frames_are_named() {
    let frame = udp4(POD_A_IP, POD_B_IP, 64, 4000, b"hello");
    assert_eq!(
        run(&frame[..13], POD_A).0,
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        run(&frame[..30], POD_A).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let mut bad = frame.clone();
    bad[14 + 10] ^= 1; // header checksum
    assert_eq!(run(&bad, POD_A).0, Verdict::Drop(DropReason::Malformed));
    let mut other = frame.clone();
    other[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP
    assert_eq!(
        run(&other, POD_A).0,
        Verdict::Drop(DropReason::UnknownEthertype)
    );
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0, 0, 5]);
    tagged.extend_from_slice(&frame[12..]);
    let (v, _, t) = run(&tagged, POD_A);
    assert_eq!(
        (v, t.punts),
        (Verdict::Drop(DropReason::Tagged), 0),
        "tagged frames are the kernel's: never punted with their tag"
    );
}

/// An IPv4 frame whose header checksum is right after a test changed its bytes.
fn fix_ipv4_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ihl = usize::from(frame[14] & 0xf) * 4;
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

#[test]
fn martian_sources_and_destinations_are_not_forwarded() {
    for src in [[0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 5], [240, 0, 0, 1]] {
        let frame = on(UPLINK, udp4(src, POD_B_IP, 64, 1, b""));
        let (v, _, t) = run(&frame, UPLINK);
        assert_eq!(v, Verdict::Drop(DropReason::MartianSource), "{src:?}");
        assert_eq!(t.icmp_errors, 0);
    }
    let limited_broadcast = on(UPLINK, udp4([255; 4], POD_B_IP, 64, 1, b""));
    assert_eq!(
        run(&limited_broadcast, UPLINK).0,
        Verdict::Drop(DropReason::MartianSource)
    );
    for dst in [[127, 0, 0, 1], [0, 0, 0, 9]] {
        let (v, _, _) = run(&udp4(POD_A_IP, dst, 64, 1, b""), POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::MartianDestination), "{dst:?}");
    }
    // The same from a good source is forwarded (the positive control).
    let good = on(UPLINK, udp4([192, 168, 200, 5], POD_B_IP, 64, 1, b""));
    assert_eq!(run(&good, UPLINK).0, Verdict::Tx(POD_B));

    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    let mut link_local = [0u8; 16];
    link_local[..2].copy_from_slice(&[0xfe, 0x80]);
    link_local[15] = 7;
    let mut multicast = [0u8; 16];
    multicast[..2].copy_from_slice(&[0xff, 0x0e]);
    multicast[15] = 1;
    for src in [[0; 16], loopback, link_local, multicast] {
        let frame = on(UPLINK, udp6(src, POD_B_IP6, 64, b""));
        assert_eq!(
            run(&frame, UPLINK).0,
            Verdict::Drop(DropReason::MartianSource),
            "{src:x?}"
        );
    }
    assert_eq!(
        run(&udp6(POD_A_IP6, loopback, 64, b""), POD_A).0,
        Verdict::Drop(DropReason::MartianDestination)
    );
    assert_eq!(
        run(&on(UPLINK, udp6(NODE_IP6, POD_B_IP6, 64, b"")), UPLINK).0,
        Verdict::Tx(POD_B)
    );
}

#[test]
fn frames_for_another_mac_are_not_routed() {
    let mut frame = udp4(POD_A_IP, POD_B_IP, 64, 1, b"");
    frame[..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 9]);
    assert_eq!(run(&frame, POD_A).0, Verdict::Drop(DropReason::OtherHost));
    let mut frame6 = udp6(POD_A_IP6, POD_B_IP6, 64, b"");
    frame6[..6].copy_from_slice(&UPLINK_MAC);
    assert_eq!(run(&frame6, POD_A).0, Verdict::Drop(DropReason::OtherHost));
}

#[test]
fn unicast_in_a_link_broadcast_is_not_forwarded_and_gets_no_error() {
    for dst_mac in [
        [0xff; 6],
        [0x01, 0x00, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
    ] {
        // TTL 1: were it forwarded it would expire, and were errors allowed one would go.
        let mut frame = udp4(POD_A_IP, POD_B_IP, 1, 1, b"");
        frame[..6].copy_from_slice(&dst_mac);
        let (v, _, t) = run(&frame, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::LinkBroadcast), "{dst_mac:x?}");
        assert_eq!(t.icmp_errors, 0);
        let mut frame6 = udp6(POD_A_IP6, POD_B_IP6, 1, b"");
        frame6[..6].copy_from_slice(&dst_mac);
        assert_eq!(
            run(&frame6, POD_A).0,
            Verdict::Drop(DropReason::LinkBroadcast)
        );
    }
}

#[test]
fn pods_may_send_only_from_their_own_mac_and_addresses() {
    // Pod A claiming pod B's address, or an outside one.
    for src in [POD_B_IP, [10, 244, 1, 77], [8, 8, 8, 8]] {
        let (v, _, _) = run(&udp4(src, POD_B_IP, 64, 1, b""), POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::Spoofed), "{src:?}");
    }
    assert_eq!(
        run(&udp6(POD_B_IP6, POD_A_IP6, 64, b""), POD_A).0,
        Verdict::Drop(DropReason::Spoofed)
    );
    // Pod A's own address from another MAC.
    let mut frame = udp4(POD_A_IP, POD_B_IP, 64, 1, b"");
    frame[6..12].copy_from_slice(&POD_B_MAC);
    assert_eq!(run(&frame, POD_A).0, Verdict::Drop(DropReason::Spoofed));
    // Pod B's own frame on pod B's port is fine; on pod A's port it is not.
    let b = on(POD_B, udp4(POD_B_IP, POD_A_IP, 64, 1, b""));
    assert_eq!(run(&b, POD_B).0, Verdict::Tx(POD_A));
    assert_eq!(run(&b, POD_A).0, Verdict::Drop(DropReason::Spoofed));
    // ARP claiming another pod's address.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&POD_A_MAC);
    arp.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&POD_A_MAC);
    arp.extend_from_slice(&POD_B_IP);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GW_IP);
    assert_eq!(run(&arp, POD_A).0, Verdict::Drop(DropReason::Spoofed));
    arp[28..32].copy_from_slice(&POD_A_IP);
    assert_eq!(run(&arp, POD_A).0, Verdict::Tx(POD_A));
    // The uplink and the host port carry everybody's traffic.
    let routed = on(UPLINK, udp4([198, 51, 100, 1], POD_A_IP, 64, 1, b""));
    assert_eq!(run(&routed, UPLINK).0, Verdict::Tx(POD_A));
}

/// A UDP frame from pod A to pod B with IPv4 options (a multiple of 4 bytes).
fn with_options(options: &[u8]) -> Vec<u8> {
    let plain = udp4(POD_A_IP, POD_B_IP, 64, 1, b"data");
    let mut frame = plain[..34].to_vec();
    frame.extend_from_slice(options);
    frame.extend_from_slice(&plain[34..]);
    frame[14] = 0x45 + (options.len() / 4) as u8;
    let total = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(frame)
}

#[test]
fn record_route_and_timestamp_options_are_processed() {
    let frame = with_options(&[7, 7, 4, 0, 0, 0, 0, 1]);
    let (v, out, _) = run(&frame, POD_A);
    assert_eq!(v, Verdict::Tx(POD_B));
    assert_eq!(
        &out[34..42],
        &[7, 7, 8, 10, 244, 1, 1, 1],
        "the gateway recorded"
    );
    assert!(ipv4_header_ok(&out[14..]));
    assert_eq!(out[14 + 8], 63);
    // To the uplink, the node's address is recorded.
    let mut to_node2 = with_options(&[7, 7, 4, 0, 0, 0, 0, 1]);
    to_node2[30..34].copy_from_slice(&[10, 244, 2, 7]);
    let (v, out, _) = run(&fix_ipv4_checksum(to_node2), POD_A);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[37..41], &NODE_IP);
    // A timestamp of this hop's time: the clock at 1000 ms past midnight.
    let mut local = Local::new(RateLimit::default(), 86_400_000 * 20_000 + 1000);
    local.now = 5_000_000; // 5 ms later
    let (v, out, _) = run_with(
        &snapshot(),
        &mut local,
        &with_options(&[68, 8, 5, 0, 0, 0, 0, 0]),
        POD_A,
    );
    assert_eq!(v, Verdict::Tx(POD_B));
    assert_eq!(&out[34..42], &[68, 8, 9, 0, 0, 0, 0x03, 0xed]);
    assert!(ipv4_header_ok(&out[14..]));
}

#[test]
fn source_routed_and_malformed_options_are_refused() {
    let lsrr = with_options(&[131, 7, 4, 10, 244, 1, 3, 0]);
    let (v, _, t) = run(&lsrr, POD_A);
    assert_eq!((v, t.icmp_errors), (Verdict::Drop(DropReason::Options), 0));
    // A Record Route whose pointer is below its minimum: parameter problem, pointing
    // at the pointer (offset 22 of the header).
    let bad = with_options(&[7, 7, 2, 0, 0, 0, 0, 1]);
    let (v, out, t) = run(&bad, POD_A);
    assert_eq!((v, t.icmp_errors), (Verdict::Tx(POD_A), 1));
    assert_eq!(t.drops[DropReason::Options as usize], 1);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1], icmp[4]), (12, 0, 22));
    assert_eq!(internet_checksum(&[icmp]), 0);
}

#[test]
fn icmp_errors_are_rate_limited_per_worker() {
    let s = snapshot();
    let mut local = Local::new(
        RateLimit {
            per_sec: 1000,
            burst: 50,
        },
        0,
    );
    let expiring = udp4(POD_A_IP, POD_B_IP, 1, 1, b"");
    let (mut sent, mut held) = (0, 0);
    for _ in 0..80 {
        let (v, _, t) = run_with(&s, &mut local, &expiring, POD_A);
        sent += t.icmp_errors;
        held += t.icmp_suppressed;
        // Counted either way: with the error sent, or by the worker for the dropped frame.
        match v {
            Verdict::Tx(POD_A) => assert_eq!(t.drops[DropReason::TtlExpired as usize], 1),
            v => assert_eq!(v, Verdict::Drop(DropReason::TtlExpired)),
        }
    }
    assert_eq!((sent, held), (50, 30), "the burst, then nothing");
    local.now = 2_000_000; // 2 ms: two more
    let more: u64 = (0..5)
        .map(|_| run_with(&s, &mut local, &expiring, POD_A).2.icmp_errors)
        .sum();
    assert_eq!(more, 2);
    // IPv6 shares the budget.
    let expiring6 = udp6(POD_A_IP6, POD_B_IP6, 1, b"");
    let (v, _, t) = run_with(&s, &mut local, &expiring6, POD_A);
    assert_eq!(
        (v, t.icmp_suppressed),
        (Verdict::Drop(DropReason::TtlExpired), 1)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes on any port: no panic; what goes out goes to a port that exists, as a
    /// whole Ethernet frame, and a dropped frame is counted under no other heading.
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), port in 0u16..5) {
        let s = snapshot();
        let mut buf = vec![0u8; 2048];
        buf[..bytes.len()].copy_from_slice(&bytes);
        let mut len = bytes.len();
        let mut local = Local::new(RateLimit::default(), 0);
        let mut t = Tally::default();
        let v = forward(&s, &mut local, port, &mut buf, &mut len, None, &mut t);
        match v {
            Verdict::Tx(to) => {
                prop_assert!(usize::from(to) < s.ports.len());
                prop_assert!(len >= 14);
            }
            Verdict::Drop(_) => {
                prop_assert_eq!(len, bytes.len(), "a dropped frame was rewritten");
                prop_assert_eq!(t.replies + t.icmp_errors + t.punts, 0);
            }
        }
    }

    /// A valid frame with a few bytes changed: the same.
    #[test]
    fn mutated_frames_never_panic(
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 1..6),
        six in any::<bool>(),
        cut in 0usize..100,
    ) {
        let mut frame = if six {
            udp6(POD_A_IP6, [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 2, b"abcdefgh")
        } else {
            udp4(POD_A_IP, [10, 244, 2, 9], 2, 9, b"abcdefgh")
        };
        for (at, b) in edits {
            if let Some(x) = frame.get_mut(at) {
                *x = b;
            }
        }
        frame.truncate(frame.len().saturating_sub(cut % 8));
        let (_, out, _) = run(&frame, POD_A);
        prop_assert!(out.len() <= 2048);
    }
}

// --- Services ------------------------------------------------------------------------

mod services {
    use super::*;
    use nat::conntrack::flow::Conntrack;
    use nat::frontend::Frontends;
    use nat::service::{Endpoint, Protocol, Service, ServicePort, TrafficPolicy};
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::sync::Arc;

    const VIP: [u8; 4] = [10, 96, 0, 10];
    const EMPTY_VIP: [u8; 4] = [10, 96, 0, 12];
    const EXT_IP: [u8; 4] = [198, 51, 100, 10];
    const LB_IP: [u8; 4] = [198, 51, 100, 20];
    const REMOTE: [u8; 4] = [10, 244, 2, 9];
    const CLIENT: [u8; 4] = [192, 168, 200, 10];
    const VIP6: [u8; 16] = [0xfd, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

    fn endpoint(ip: IpAddr, port: u16, local: bool) -> Endpoint {
        Endpoint {
            addr: ip,
            ports: BTreeMap::from([("p".to_string(), port)]),
            local,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn service(
        name: &str,
        ips: [Vec<IpAddr>; 3],
        protocol: Protocol,
        endpoints: Vec<Endpoint>,
    ) -> Service {
        let [cluster_ips, external_ips, load_balancer_ips] = ips;
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips,
            external_ips,
            load_balancer_ips,
            ports: vec![ServicePort {
                name: "p".into(),
                protocol,
                port: if protocol == Protocol::Udp { 53 } else { 80 },
                node_port: None,
            }],
            external_policy: TrafficPolicy::Cluster,
            internal_policy: TrafficPolicy::Cluster,
            affinity: None,
            source_ranges: vec![],
            health_check_node_port: None,
            endpoints,
        }
    }

    fn ip4(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    /// The node of the other tests, with services: a ClusterIP (TCP to pod B, UDP too,
    /// and IPv6), one with no endpoint, an ExternalIP with a backend on node 2, a
    /// LoadBalancer IP with source ranges; conntrack of `entries` slots.
    fn snapshot_with(entries: usize) -> Snapshot {
        let b = ip4(POD_B_IP);
        let mut lb = service(
            "lb",
            [vec![], vec![], vec![ip4(LB_IP)]],
            Protocol::Tcp,
            vec![endpoint(b, 8080, true)],
        );
        lb.source_ranges = vec![(ip4([192, 168, 200, 0]), 25)];
        let services = vec![
            service(
                "web",
                [vec![ip4(VIP), IpAddr::from(VIP6)], vec![], vec![]],
                Protocol::Tcp,
                vec![
                    endpoint(b, 8080, true),
                    endpoint(IpAddr::from(POD_B_IP6), 8080, true),
                ],
            ),
            service(
                "dns",
                [vec![ip4(VIP)], vec![], vec![]],
                Protocol::Udp,
                vec![endpoint(b, 5353, true)],
            ),
            service(
                "empty",
                [vec![ip4(EMPTY_VIP)], vec![], vec![]],
                Protocol::Tcp,
                vec![],
            ),
            service(
                "ext",
                [vec![], vec![ip4(EXT_IP)], vec![]],
                Protocol::Tcp,
                vec![endpoint(ip4(REMOTE), 8080, false)],
            ),
            lb,
        ];
        snapshot_of(&services, Arc::new(Conntrack::new(entries, entries)))
    }

    /// The node of the other tests with `services` only, sharing table `conntrack`
    /// (a snapshot after a change shares its predecessor's).
    fn snapshot_of(services: &[Service], conntrack: Arc<Conntrack>) -> Snapshot {
        snapshot_sharing(
            services,
            conntrack,
            Arc::new(nat::affinity::Affinity::new(1024)),
        )
    }

    /// As [`snapshot_of`], sharing the affinity table too.
    fn snapshot_sharing(
        services: &[Service],
        conntrack: Arc<Conntrack>,
        affinity: Arc<nat::affinity::Affinity>,
    ) -> Snapshot {
        snapshot_tuned(services, conntrack, affinity, |_| {})
    }

    /// As [`snapshot_sharing`], the services' settings changed by `tune`.
    fn snapshot_tuned(
        services: &[Service],
        conntrack: Arc<Conntrack>,
        affinity: Arc<nat::affinity::Affinity>,
        tune: impl FnOnce(&mut Services),
    ) -> Snapshot {
        let mut t = tables();
        t.services = Services {
            frontends: Arc::new(Frontends::build(services, 65537).unwrap()),
            conntrack,
            affinity,
            snat4: Some(NODE_IP.into()),
            snat6: Some(NODE_IP6.into()),
            node_port_addrs: vec![ip4(NODE_IP), IpAddr::from(NODE_IP6)],
            cluster: vec![
                (ip4([10, 244, 0, 0]), 16),
                (
                    IpAddr::from([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                    64,
                ),
            ],
            ..Services::default()
        };
        tune(&mut t.services);
        Snapshot::new(t).unwrap()
    }

    fn tcp4(src: ([u8; 4], u16), dst: ([u8; 4], u16), syn: bool, ack: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, 1000, 64240);
        let b = if syn { b.syn() } else { b };
        let b = if ack { b.ack(5000) } else { b };
        b.write(&mut v, b"").unwrap();
        v
    }

    /// Source, destination, ports of an IPv4 TCP/UDP frame; its checksums checked.
    fn tuple4(frame: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
        let ip = &frame[14..];
        assert!(ipv4_header_ok(ip), "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let seg = &ip[20..total];
        let len = (seg.len() as u16).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&ip[12..20], &[0, ip[9]], &len, seg]),
            0,
            "transport checksum"
        );
        let port = |at: usize| u16::from_be_bytes([seg[at], seg[at + 1]]);
        (
            ip[12..16].try_into().unwrap(),
            port(0),
            ip[16..20].try_into().unwrap(),
            port(2),
        )
    }

    #[test]
    fn a_pod_reaches_a_cluster_ip_and_gets_the_replies_from_it() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let syn = tcp4((POD_A_IP, 40000), (VIP, 80), true, false);
        let (v, out, t) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(
            tuple4(&out),
            (POD_A_IP, 40000, POD_B_IP, 8080),
            "DNAT to the backend, the pod's address kept"
        );
        assert_eq!((t.nat_new_flows, t.nat_packets), (1, 1));
        let synack = on(POD_B, tcp4((POD_B_IP, 8080), (POD_A_IP, 40000), true, true));
        let (v, out, t) = run_with(&s, &mut local, &synack, POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(
            tuple4(&out),
            (VIP, 80, POD_A_IP, 40000),
            "the reply comes from the VIP"
        );
        assert_eq!((t.nat_new_flows, t.nat_packets), (0, 1));
        // The next segment of the flow takes the same backend.
        let (v, out, _) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40000), (VIP, 80), false, true),
            POD_A,
        );
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out).2, POD_B_IP);
    }

    /// One client port to two ClusterIPs whose backend is the same: the second flow's
    /// reply tuple is the first's, so its source port is changed (as Linux's NAT
    /// does), and both flows' replies go back each to its own VIP.
    #[test]
    fn two_flows_that_would_meet_at_the_backend_get_distinct_source_ports() {
        let b = ip4(POD_B_IP);
        let web = |name: &str, vip: [u8; 4]| {
            service(
                name,
                [vec![ip4(vip)], vec![], vec![]],
                Protocol::Tcp,
                vec![endpoint(b, 8080, true)],
            )
        };
        let s = snapshot_of(
            &[web("one", VIP), web("two", VIP2)],
            Arc::new(Conntrack::new(1024, 1024)),
        );
        let mut local = Local::new(RateLimit::default(), 0);
        let (v, first, _) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40000), (VIP, 80), true, false),
            POD_A,
        );
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&first), (POD_A_IP, 40000, POD_B_IP, 8080));
        let (v, second, _) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40000), (VIP2, 80), true, false),
            POD_A,
        );
        assert_eq!(v, Verdict::Tx(POD_B));
        let (src, sport, dst, dport) = tuple4(&second);
        assert_eq!(
            (src, dst, dport),
            (POD_A_IP, POD_B_IP, 8080),
            "the client's address kept"
        );
        assert_ne!(sport, 40000, "another source port");
        for (port, vip) in [(40000, VIP), (sport, VIP2)] {
            let synack = on(POD_B, tcp4((POD_B_IP, 8080), (POD_A_IP, port), true, true));
            let (v, out, _) = run_with(&s, &mut local, &synack, POD_B);
            assert_eq!(v, Verdict::Tx(POD_A));
            assert_eq!(
                tuple4(&out),
                (vip, 80, POD_A_IP, 40000),
                "each flow's replies its own"
            );
        }
        // The first flow's next segment is still the first flow's.
        let (_, out, t) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40000), (VIP, 80), false, true),
            POD_A,
        );
        assert_eq!(tuple4(&out), (POD_A_IP, 40000, POD_B_IP, 8080));
        assert_eq!(t.nat_new_flows, 0);
        // A new connection on the first flow's ports after it closed keeps them.
        let mut rst = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .tcp(40000, 80, 1000, 0)
            .rst()
            .write(&mut rst, b"")
            .unwrap();
        let _ = run_with(&s, &mut local, &rst, POD_A);
        let (_, out, t) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40000), (VIP, 80), true, false),
            POD_A,
        );
        assert_eq!(t.nat_new_flows, 1);
        assert_eq!(
            tuple4(&out),
            (POD_A_IP, 40000, POD_B_IP, 8080),
            "its own old reply tuple is no clash"
        );
        // Once that connection is reset too, a new one on the same client port to the
        // second VIP takes the reply tuple over: the closed flow gives it up.
        let rst_to = |vip: [u8; 4]| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
                .ipv4(POD_A_IP, vip, 64)
                .tcp(40000, 80, 1000, 0)
                .rst()
                .write(&mut f, b"")
                .unwrap();
            f
        };
        let _ = run_with(&s, &mut local, &rst_to(VIP), POD_A);
        let _ = run_with(&s, &mut local, &rst_to(VIP2), POD_A);
        let syn2 = tcp4((POD_A_IP, 40000), (VIP2, 80), true, false);
        let (_, out, t) = run_with(&s, &mut local, &syn2, POD_A);
        assert_eq!(t.nat_new_flows, 1);
        assert_eq!(
            tuple4(&out),
            (POD_A_IP, 40000, POD_B_IP, 8080),
            "a closed flow's reply tuple is taken over, not remapped around"
        );
        let synack = on(POD_B, tcp4((POD_B_IP, 8080), (POD_A_IP, 40000), true, true));
        let (_, out, _) = run_with(&s, &mut local, &synack, POD_B);
        assert_eq!(tuple4(&out), (VIP2, 80, POD_A_IP, 40000));
    }

    /// F7: the node's own stack reaches a ClusterIP through the host port (its kernel
    /// routes the service range there); the replies go back to it the same way.
    #[test]
    fn the_node_reaches_a_cluster_ip_through_the_host_port() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut syn = Vec::new();
        PacketBuilder::ethernet2(KERNEL_MAC, HOSTPORT_MAC)
            .ipv4(NODE_IP, VIP, 64)
            .tcp(45000, 80, 1, 64240)
            .syn()
            .write(&mut syn, b"")
            .unwrap();
        let (v, out, t) = run_with(&s, &mut local, &syn, HOST);
        assert_eq!(v, Verdict::Tx(POD_B));
        let (src, sport, dst, dport) = tuple4(&out);
        assert_eq!((src, dst, dport), (NODE_IP, POD_B_IP, 8080));
        // A port of the SNAT range, which the uplink steers to the fastpath: a backend
        // on another node answers the node's address through it.
        let (lo, hi) = s.services.snat_ports;
        assert!((lo..=hi).contains(&sport), "{sport} outside {lo}-{hi}");
        assert_eq!(t.nat_new_flows, 1);
        let synack = on(POD_B, tcp4((POD_B_IP, 8080), (NODE_IP, sport), true, true));
        let (v, out, _) = run_with(&s, &mut local, &synack, POD_B);
        assert_eq!(v, Verdict::Tx(HOST));
        assert_eq!(tuple4(&out), (VIP, 80, NODE_IP, 45000));
    }

    #[test]
    fn an_outside_client_of_an_external_ip_is_snated_so_replies_come_back_here() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let syn = on(UPLINK, tcp4((CLIENT, 40000), (EXT_IP, 80), true, false));
        let (v, out, _) = run_with(&s, &mut local, &syn, UPLINK);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let (src, sport, dst, dport) = tuple4(&out);
        assert_eq!((src, dst, dport), (NODE_IP, REMOTE, 8080));
        let (lo, hi) = fastpath::snapshot::DEFAULT_SNAT_PORTS;
        assert!(
            (lo..=hi).contains(&sport),
            "SNAT port {sport} outside the range"
        );
        let reply = on(UPLINK, tcp4((REMOTE, 8080), (NODE_IP, sport), true, true));
        let (v, out, _) = run_with(&s, &mut local, &reply, UPLINK);
        assert_eq!(v, Verdict::Tx(UPLINK));
        assert_eq!(tuple4(&out), (EXT_IP, 80, CLIENT, 40000));
    }

    #[test]
    fn in_cluster_clients_from_the_network_are_snated_as_outside_ones_are() {
        // A NodePort and ExternalIP service (Cluster policy) and a ClusterIP, each
        // with its backend on another node.
        let mut ext = service(
            "ext",
            [vec![ip4(VIP)], vec![ip4(EXT_IP)], vec![]],
            Protocol::Tcp,
            vec![endpoint(ip4(REMOTE), 8080, false)],
        );
        ext.ports[0].node_port = Some(30080);
        let s = snapshot_of(&[ext], Arc::new(Conntrack::new(1024, 1024)));
        let mut local = Local::new(RateLimit::default(), 0);
        let (lo, hi) = fastpath::snapshot::DEFAULT_SNAT_PORTS;
        let mut through = |from: [u8; 4], to: ([u8; 4], u16), port: u16, sport: u16| {
            let syn = on(port, tcp4((from, sport), to, true, false));
            let (v, out, _) = run_with(&s, &mut local, &syn, port);
            assert_eq!(v, Verdict::Tx(UPLINK), "{from:?} -> {to:?}");
            tuple4(&out)
        };
        // Another node's pod (inside the cluster's prefixes) at this node's NodePort
        // and at the ExternalIP, from the network: the backend on a third node would
        // answer it directly, so the node's address and a port of the SNAT range.
        let other_pod = [10, 244, 3, 7];
        for (to, from_port) in [((NODE_IP, 30080), 41001), ((EXT_IP, 80), 41002)] {
            let (src, sport, dst, dport) = through(other_pod, to, UPLINK, from_port);
            assert_eq!((src, dst, dport), (NODE_IP, REMOTE, 8080), "{to:?}");
            assert!((lo..=hi).contains(&sport), "SNAT port {sport}");
        }
        // An off-cluster client at the ClusterIP (advertised with
        // --advertise-cluster-ip): masqueraded as kube-proxy masquerades off-cluster
        // traffic to a ClusterIP.
        let (src, sport, dst, _) = through(CLIENT, (VIP, 80), UPLINK, 40001);
        assert_eq!((src, dst), (NODE_IP, REMOTE));
        assert!((lo..=hi).contains(&sport), "SNAT port {sport}");
        // This node's own pod keeps its address, at the ClusterIP and at the
        // ExternalIP (which no node holds: it is served here all the same): the
        // answers to it come back through this node, where its reverse NAT is.
        for (to, sport) in [((EXT_IP, 80), 40002), ((VIP, 80), 40003)] {
            let got = through(POD_A_IP, to, POD_A, sport);
            assert_eq!(got, (POD_A_IP, sport, REMOTE, 8080), "{to:?}");
        }
    }

    #[test]
    fn a_service_without_endpoints_is_refused_with_a_reset_or_port_unreachable() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let syn = tcp4((POD_A_IP, 40000), (EMPTY_VIP, 80), true, false);
        let (v, out, t) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(
            (t.drops[DropReason::NoEndpoints as usize], t.resets),
            (1, 1)
        );
        assert_eq!(tuple4(&out), (EMPTY_VIP, 80, POD_A_IP, 40000));
        let tcp = &out[34..];
        assert_eq!(tcp[13] & 0x14, 0x14, "RST and ACK");
        assert_eq!(
            u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            1001,
            "acknowledges the SYN"
        );
        // A port the VIP has no service on is refused too; UDP with port unreachable.
        let mut udp = udp4(POD_A_IP, VIP, 64, 4000, b"q");
        udp[36..38].copy_from_slice(&99u16.to_be_bytes());
        udp[40..42].copy_from_slice(&[0, 0]); // no UDP checksum
        let (v, out, t) = run_with(&s, &mut local, &udp, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(t.drops[DropReason::NoService as usize], 1);
        let ip = &out[14..];
        assert_eq!(
            (&ip[12..16], ip[20], ip[21]),
            (&VIP[..], 3, 3),
            "port unreachable from the VIP"
        );
    }

    /// A protocol no service has, or an ICMP message other than echo, to a VIP: not
    /// routed on (the fabric, which sent it here, would send it back), counted.
    #[test]
    fn other_protocols_to_a_vip_stop_here() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut sctp = udp4(POD_A_IP, VIP, 64, 4000, &[0u8; 16]);
        sctp[23] = 132;
        let sctp = fix_ipv4_checksum(sctp);
        let (v, _, _) = run_with(&s, &mut local, &sctp, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::NoService));
        let mut ts = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .icmpv4(etherparse::Icmpv4Type::Unknown {
                type_u8: 13,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut ts, &[0u8; 12])
            .unwrap();
        let (v, _, _) = run_with(&s, &mut local, &ts, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::NoService), "an ICMP timestamp");
        // The same to an address no service has is routed as ever.
        let mut other = udp4(POD_A_IP, POD_B_IP, 64, 4000, &[0u8; 16]);
        other[23] = 132;
        let (v, _, _) = run_with(&s, &mut local, &fix_ipv4_checksum(other), POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
    }

    #[test]
    fn load_balancer_source_ranges_drop_other_clients() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let outside = on(
            UPLINK,
            tcp4(([192, 168, 200, 200], 40000), (LB_IP, 80), true, false),
        );
        let (v, _, _) = run_with(&s, &mut local, &outside, UPLINK);
        assert_eq!(v, Verdict::Drop(DropReason::SourceRange));
        let inside = on(UPLINK, tcp4((CLIENT, 40000), (LB_IP, 80), true, false));
        let (v, out, _) = run_with(&s, &mut local, &inside, UPLINK);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out).2, POD_B_IP);
    }

    #[test]
    fn a_pod_reaching_itself_through_its_service_sees_the_vip_as_the_source() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let syn = on(POD_B, tcp4((POD_B_IP, 40000), (VIP, 80), true, false));
        let (v, out, _) = run_with(&s, &mut local, &syn, POD_B);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out), (VIP, 40000, POD_B_IP, 8080));
        let reply = on(POD_B, tcp4((POD_B_IP, 8080), (VIP, 40000), true, true));
        let (v, out, _) = run_with(&s, &mut local, &reply, POD_B);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out), (VIP, 80, POD_B_IP, 40000));
    }

    #[test]
    fn a_syn_ack_out_of_the_blue_is_invalid() {
        let s = snapshot_with(1024);
        let (v, _, _) = run_with(
            &s,
            &mut Local::new(RateLimit::default(), 0),
            &tcp4((POD_A_IP, 40000), (VIP, 80), true, true),
            POD_A,
        );
        assert_eq!(v, Verdict::Drop(DropReason::Invalid));
    }

    // TCP flags as the segment builders below take them.
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;

    /// A TCP segment between `src` and `dst` (address, port) with sequence number
    /// `seq`, `flags` (the constants above) and `payload`; a SYN offers window scale 7,
    /// as Linux's does. Pod A's MAC: [`on`] for another port.
    fn seg4(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(POD_A_MAC, GW_MAC).ipv4(src.0, dst.0, 64);
        segment(b.tcp(src.1, dst.1, seq, 64240), flags, payload)
    }

    /// [`seg4`] for IPv6.
    fn seg6(
        src: ([u8; 16], u16),
        dst: ([u8; 16], u16),
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(POD_A_MAC, GW_MAC).ipv6(src.0, dst.0, 64);
        segment(b.tcp(src.1, dst.1, seq, 64240), flags, payload)
    }

    /// The frame of TCP builder `b` with `flags` (as [`seg4`] has them) and `payload`.
    fn segment(
        mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        if flags & SYN != 0 {
            b = b
                .syn()
                .options(&[etherparse::TcpOptionElement::WindowScale(7)])
                .unwrap();
        }
        if flags & ACK != 0 {
            b = b.ack(1);
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & PSH != 0 {
            b = b.psh();
        }
        if flags & URG != 0 {
            b = b.urg(0);
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// The "INVALID" drops of service port `vip:port` (TCP).
    fn invalid_drops(s: &Snapshot, vip: IpAddr, port: u16) -> u64 {
        let f = s.services.frontends.vip(vip, port, Protocol::Tcp).unwrap();
        s.services.frontends.port_stats(f.id).unwrap().drops[nat::stats::PortDrop::Invalid as usize]
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kubernetes' "should drop INVALID conntrack entries" (issue 74839): a segment
    /// far outside its flow's window (the boom server's, a spurious retransmission
    /// from long ago, a blind RST) is dropped and counted, and the connection goes on
    /// untouched; what TCP sends within the window passes, however far the flow
    /// moves on.
    #[test]
    fn segments_outside_the_window_are_dropped_and_the_connection_goes_on() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut go = |frame: Vec<u8>, port: u16| run_with(&s, &mut local, &on(port, frame), port);
        let (a, vip) = ((POD_A_IP, 40000), (VIP, 80));
        let back = |seq: u32, flags: u8, data: &[u8]| {
            seg4((POD_B_IP, 8080), (POD_A_IP, 40000), seq, flags, data)
        };
        let (c, srv) = (7_000u32, 3_000_000_000u32); // the client's and server's ISNs
        assert_eq!(go(seg4(a, vip, c, SYN, b""), POD_A).0, Verdict::Tx(POD_B));
        assert_eq!(go(back(srv, SYN | ACK, b""), POD_B).0, Verdict::Tx(POD_A));
        assert_eq!(
            go(seg4(a, vip, c + 1, ACK, b"GET"), POD_A).0,
            Verdict::Tx(POD_B)
        );
        assert_eq!(
            go(back(srv + 1, ACK | PSH, &[7; 100]), POD_B).0,
            Verdict::Tx(POD_A)
        );
        // The boom server's segment: half the sequence space away, with data.
        let boom = go(
            back(srv.wrapping_add(1 << 31), ACK | PSH, b"boom!!!"),
            POD_B,
        );
        assert_eq!(boom.0, Verdict::Drop(DropReason::Invalid), "out of window");
        // A retransmission of data acknowledged long ago (more than the largest
        // window, 65,535 << 7, behind).
        let old = go(back(srv.wrapping_sub(9_000_000), ACK, &[1; 10]), POD_B);
        assert_eq!(old.0, Verdict::Drop(DropReason::Invalid), "far behind");
        // A blind RST from the client's side: dropped, the flow stays established.
        let blind = go(seg4(a, vip, c.wrapping_add(3_000_000_000), RST, b""), POD_A);
        assert_eq!(blind.0, Verdict::Drop(DropReason::Invalid), "a blind RST");
        assert_eq!(invalid_drops(&s, ip4(VIP), 80), 3);
        let t = nat::conntrack::flow::Tuple {
            src: Ipv4Addr::from(POD_A_IP),
            dst: Ipv4Addr::from(VIP),
            sport: 40000,
            dport: 80,
            protocol: 6,
        };
        let e = s.services.conntrack.get4(&t, 1).unwrap();
        assert_eq!(e.state, nat::conntrack::tcp::State::Established as u8);
        // The connection goes on both ways, its replies still from the VIP; a
        // retransmission within the window and a keepalive probe pass.
        let (v, out, _) = go(back(srv + 101, ACK, &[8; 50]), POD_B);
        assert_eq!(
            (v, tuple4(&out)),
            (Verdict::Tx(POD_A), (VIP, 80, POD_A_IP, 40000))
        );
        assert_eq!(
            go(back(srv + 1, ACK, &[7; 100]), POD_B).0,
            Verdict::Tx(POD_A)
        );
        assert_eq!(
            go(seg4(a, vip, c + 3, ACK, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        // A server sending 100 MB: its stored end keeps up (written a quarter
        // window at a time), so the flow's segments stay acceptable.
        let mut seq = srv + 151;
        for _ in 0..100 {
            seq = seq.wrapping_add(1_000_000);
            assert_eq!(
                go(back(seq, ACK, &[9; 1000]), POD_B).0,
                Verdict::Tx(POD_A),
                "seq {seq}"
            );
        }
        let stale = go(back(srv + 151, ACK, &[9; 1000]), POD_B);
        assert_eq!(
            stale.0,
            Verdict::Drop(DropReason::Invalid),
            "100 MB behind now"
        );
        // A client's bare SYN with another sequence number (reconnecting on the
        // ports of a connection it lost) passes, unchecked.
        assert_eq!(
            go(seg4(a, vip, 123_456_789, SYN, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        // Closing in the window still closes.
        assert_eq!(
            go(seg4(a, vip, c + 3, FIN | ACK, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        let e = s.services.conntrack.get4(&t, 1).unwrap();
        assert_eq!(e.state, nat::conntrack::tcp::State::FinWait as u8);
    }

    /// A flow whose entry was last written more than ten seconds before a segment
    /// that fails the check may have gone through another node meanwhile (ECMP moved
    /// it and back): it is not cut off, it is no longer checked.
    #[test]
    fn a_stale_window_is_given_up_not_enforced() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        local.seconds = 100;
        let (a, vip) = ((POD_A_IP, 44000), (VIP, 80));
        let back = |seq: u32| {
            on(
                POD_B,
                seg4((POD_B_IP, 8080), (POD_A_IP, 44000), seq, ACK, b"w"),
            )
        };
        assert_eq!(
            run_with(&s, &mut local, &seg4(a, vip, 1, SYN, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        let synack = on(
            POD_B,
            seg4((POD_B_IP, 8080), (POD_A_IP, 44000), 10, SYN | ACK, b""),
        );
        assert_eq!(
            run_with(&s, &mut local, &synack, POD_B).0,
            Verdict::Tx(POD_A)
        );
        let far = 11u32.wrapping_add(1 << 31);
        assert_eq!(
            run_with(&s, &mut local, &back(far), POD_B).0,
            Verdict::Drop(DropReason::Invalid)
        );
        local.seconds = 105;
        assert_eq!(
            run_with(&s, &mut local, &back(far), POD_B).0,
            Verdict::Drop(DropReason::Invalid),
            "5 s: still checked"
        );
        local.seconds = 115;
        assert_eq!(
            run_with(&s, &mut local, &back(far), POD_B).0,
            Verdict::Tx(POD_A),
            "15 s: given up"
        );
        assert_eq!(
            run_with(&s, &mut local, &back(11), POD_B).0,
            Verdict::Tx(POD_A),
            "and not checked after"
        );
    }

    /// Flag combinations TCP never sends (a NULL or XMAS scan, SYN with FIN, FIN
    /// without ACK) neither open a flow nor pass on one.
    #[test]
    fn invalid_flag_combinations_are_dropped() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let (a, vip) = ((POD_A_IP, 41000), (VIP, 80));
        for f in [
            0,
            SYN | FIN,
            FIN,
            FIN | PSH | URG,
            SYN | RST,
            SYN | ACK | URG,
        ] {
            let (v, _, _) = run_with(&s, &mut local, &seg4(a, vip, 1, f, b""), POD_A);
            assert_eq!(
                v,
                Verdict::Drop(DropReason::Invalid),
                "new flow, flags {f:#x}"
            );
        }
        let (v, _, _) = run_with(&s, &mut local, &seg4(a, vip, 1, SYN, b""), POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        for f in [0, SYN | FIN, FIN, FIN | PSH | URG] {
            let (v, _, _) = run_with(&s, &mut local, &seg4(a, vip, 2, f, b""), POD_A);
            assert_eq!(
                v,
                Verdict::Drop(DropReason::Invalid),
                "on the flow, flags {f:#x}"
            );
        }
        assert_eq!(invalid_drops(&s, ip4(VIP), 80), 10);
    }

    /// Windows are checked only once both SYNs were seen: the server's RST to a SYN
    /// passes (its sequence space is not known yet), a flow picked up mid-stream is
    /// not checked (Linux marks those liberal), nor is any with
    /// `--conntrack-tcp-be-liberal`.
    #[test]
    fn windows_are_checked_only_where_known_and_wanted() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let (a, vip) = ((POD_A_IP, 42000), (VIP, 80));
        let back = |flags: u8| {
            on(
                POD_B,
                seg4((POD_B_IP, 8080), (POD_A_IP, 42000), 0, flags, b""),
            )
        };
        assert_eq!(
            run_with(&s, &mut local, &seg4(a, vip, 10, SYN, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        assert_eq!(
            run_with(&s, &mut local, &back(RST | ACK), POD_B).0,
            Verdict::Tx(POD_A),
            "port closed"
        );
        // Picked up by an ACK: any sequence number goes.
        let p = (POD_A_IP, 42001);
        for seq in [5, 5u32.wrapping_add(1 << 31), 5] {
            assert_eq!(
                run_with(&s, &mut local, &seg4(p, vip, seq, ACK, b"x"), POD_A).0,
                Verdict::Tx(POD_B)
            );
        }
        // Liberal: a handshake seen, then anything.
        let liberal = snapshot_tuned(
            &[service(
                "web",
                [vec![ip4(VIP)], vec![], vec![]],
                Protocol::Tcp,
                vec![endpoint(ip4(POD_B_IP), 8080, true)],
            )],
            Arc::new(Conntrack::new(1024, 1024)),
            Arc::new(nat::affinity::Affinity::new(16)),
            |sv| sv.tcp_be_liberal = true,
        );
        let mut go =
            |frame: Vec<u8>, port: u16| run_with(&liberal, &mut local, &on(port, frame), port).0;
        let back =
            |seq: u32, flags: u8| seg4((POD_B_IP, 8080), (POD_A_IP, 42000), seq, flags, b"y");
        assert_eq!(go(seg4(a, vip, 10, SYN, b""), POD_A), Verdict::Tx(POD_B));
        assert_eq!(go(back(99, SYN | ACK), POD_B), Verdict::Tx(POD_A));
        assert_eq!(
            go(back(99u32.wrapping_add(1 << 31), ACK), POD_B),
            Verdict::Tx(POD_A)
        );
    }

    /// The window through an IPv6 ClusterIP.
    #[test]
    fn ipv6_segments_outside_the_window_are_dropped() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let (a, vip) = ((POD_A_IP6, 43000), (VIP6, 80));
        let back = |seq: u32, flags: u8| {
            on(
                POD_B,
                seg6((POD_B_IP6, 8080), (POD_A_IP6, 43000), seq, flags, b"z"),
            )
        };
        assert_eq!(
            run_with(&s, &mut local, &seg6(a, vip, 1, SYN, b""), POD_A).0,
            Verdict::Tx(POD_B)
        );
        assert_eq!(
            run_with(&s, &mut local, &back(100, SYN | ACK), POD_B).0,
            Verdict::Tx(POD_A)
        );
        assert_eq!(
            run_with(&s, &mut local, &back(101, ACK), POD_B).0,
            Verdict::Tx(POD_A)
        );
        let far = back(101u32.wrapping_add(1 << 31), ACK);
        assert_eq!(
            run_with(&s, &mut local, &far, POD_B).0,
            Verdict::Drop(DropReason::Invalid)
        );
        assert_eq!(
            run_with(&s, &mut local, &back(102, ACK), POD_B).0,
            Verdict::Tx(POD_A)
        );
    }

    #[test]
    fn udp_and_echo_through_a_cluster_ip() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut q = udp4(POD_A_IP, VIP, 64, 4000, b"query");
        q[36..38].copy_from_slice(&53u16.to_be_bytes());
        // etherparse computed the checksum for port 5001: recompute it for the test frame.
        q[40..42].copy_from_slice(&[0, 0]);
        let (v, out, _) = run_with(&s, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[30..34], &POD_B_IP);
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 5353);
        assert_eq!(&out[40..42], &[0, 0], "no checksum stays none");
        let mut ping = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .icmpv4_echo_request(77, 1)
            .write(&mut ping, b"ping")
            .unwrap();
        let (v, out, _) = run_with(&s, &mut local, &ping, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[30..34], &POD_B_IP);
        assert_eq!(internet_checksum(&[&out[34..]]), 0, "ICMP checksum");
        let mut pong = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv4(POD_B_IP, POD_A_IP, 64)
            .icmpv4_echo_reply(77, 1)
            .write(&mut pong, b"ping")
            .unwrap();
        let (v, out, _) = run_with(&s, &mut local, &on(POD_B, pong), POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(&out[26..30], &VIP, "the echo reply comes from the VIP");
        assert!(ipv4_header_ok(&out[14..]));
    }

    /// Fragment `[from, from + len)` of the IP payload of `whole` (an IPv4 frame), with
    /// identification `ident`.
    fn fragment4(whole: &[u8], from: usize, len: usize, more: bool, ident: u16) -> Vec<u8> {
        let mut v = whole[..34].to_vec();
        v.extend_from_slice(&whole[34 + from..34 + from + len]);
        let ip = &mut v[14..34];
        ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&ident.to_be_bytes());
        let flags = if more { 0x2000 } else { 0 } | (from / 8) as u16;
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&[ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        v
    }

    #[test]
    fn every_fragment_of_a_datagram_to_a_service_reaches_the_same_backend_translated() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .udp(4000, 53)
            .write(&mut whole, &payload)
            .unwrap();
        // 1008 bytes of UDP: the header and 504 bytes first, the rest later.
        let first = fragment4(&whole, 0, 512, true, 0x1234);
        let later = fragment4(&whole, 512, 496, false, 0x1234);
        // The later fragment first: its backend is not known yet.
        let (v, _, _) = run_with(&s, &mut local, &later, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::FragmentUntracked));
        let (v, out1, _) = run_with(&s, &mut local, &first, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert!(ipv4_header_ok(&out1[14..]));
        assert_eq!(
            (&out1[26..30], &out1[30..34]),
            (&POD_A_IP[..], &POD_B_IP[..])
        );
        assert_eq!(u16::from_be_bytes([out1[36], out1[37]]), 5353);
        let (v, out2, t) = run_with(&s, &mut local, &later, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B), "the same backend");
        assert!(ipv4_header_ok(&out2[14..]));
        assert_eq!(
            (&out2[26..30], &out2[30..34]),
            (&POD_A_IP[..], &POD_B_IP[..])
        );
        assert_eq!(
            &out2[34..],
            &whole[34 + 512..],
            "a later fragment's payload is kept"
        );
        assert_eq!(t.nat_packets, 1);
        // Reassembled, the translated datagram's UDP checksum holds.
        let udp: Vec<u8> = [&out1[34..], &out2[34..]].concat();
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&POD_A_IP, &POD_B_IP, &[0, 17], &len, &udp]),
            0,
            "the UDP checksum of the reassembled datagram"
        );
        // The backend's fragmented answer: both fragments come from the VIP.
        let mut answer = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv4(POD_B_IP, POD_A_IP, 64)
            .udp(5353, 4000)
            .write(&mut answer, &payload)
            .unwrap();
        let first = on(POD_B, fragment4(&answer, 0, 512, true, 0x0777));
        let later = on(POD_B, fragment4(&answer, 512, 496, false, 0x0777));
        let (v, back1, _) = run_with(&s, &mut local, &first, POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        let (v, back2, _) = run_with(&s, &mut local, &later, POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        for f in [&back1, &back2] {
            assert!(ipv4_header_ok(&f[14..]));
            assert_eq!((&f[26..30], &f[30..34]), (&VIP[..], &POD_A_IP[..]));
        }
        let udp: Vec<u8> = [&back1[34..], &back2[34..]].concat();
        assert_eq!(
            u16::from_be_bytes([udp[0], udp[1]]),
            53,
            "from the VIP's port"
        );
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&VIP, &POD_A_IP, &[0, 17], &len, &udp]),
            0,
            "the answer's UDP checksum, reassembled"
        );
        // A first fragment too short for the ports (4 bytes of UDP): not routed on.
        let tiny = fragment4(&whole, 0, 8, true, 0x5555);
        let mut tiny = tiny[..14 + 20 + 4].to_vec();
        tiny[16..18].copy_from_slice(&24u16.to_be_bytes());
        tiny[24..26].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&[&tiny[14..34]]);
        tiny[24..26].copy_from_slice(&c.to_be_bytes());
        let (v, _, _) = run_with(&s, &mut local, &tiny, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::Fragment));
        // Another datagram's later fragment to the VIP: untracked; one to a pod is
        // routed as it is.
        let other = fragment4(&whole, 512, 496, false, 0x4321);
        let (v, _, _) = run_with(&s, &mut local, &other, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::FragmentUntracked));
        let mut direct = fragment4(&whole, 512, 496, false, 0x4321);
        direct[30..34].copy_from_slice(&POD_B_IP);
        let ip = &mut direct[14..34];
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&[ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let (v, out, _) = run_with(&s, &mut local, &direct, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[34..], &direct[34..]);
    }

    /// A NodePort datagram in fragments, from outside: every fragment reaches the same
    /// backend with the same DNAT and SNAT (the later ones are addressed to the node,
    /// which the steering program sends after their first), and so do the fragments
    /// of the backend's answer, back to the client from the node's port.
    #[test]
    fn fragments_of_a_node_port_datagram_and_its_answer_are_translated_alike() {
        let mut dns = service(
            "dns",
            [vec![ip4(VIP)], vec![], vec![]],
            Protocol::Udp,
            vec![endpoint(ip4(POD_B_IP), 5353, true)],
        );
        dns.ports[0].node_port = Some(30053);
        let s = snapshot_of(&[dns], Arc::new(Conntrack::new(1024, 1024)));
        let mut local = Local::new(RateLimit::default(), 0);
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let mut whole = Vec::new();
        PacketBuilder::ethernet2(NODE2_MAC, UPLINK_MAC)
            .ipv4(CLIENT, NODE_IP, 64)
            .udp(4000, 30053)
            .write(&mut whole, &payload)
            .unwrap();
        let first = on(UPLINK, fragment4(&whole, 0, 512, true, 0x2468));
        let later = on(UPLINK, fragment4(&whole, 512, 496, false, 0x2468));
        let (v, out1, _) = run_with(&s, &mut local, &first, UPLINK);
        assert_eq!(v, Verdict::Tx(POD_B));
        let (v, out2, _) = run_with(&s, &mut local, &later, UPLINK);
        assert_eq!(
            v,
            Verdict::Tx(POD_B),
            "the later fragment, to the node, follows"
        );
        // Cluster policy: the node's address for the client's.
        for f in [&out1, &out2] {
            assert!(ipv4_header_ok(&f[14..]));
            assert_eq!((&f[26..30], &f[30..34]), (&NODE_IP[..], &POD_B_IP[..]));
        }
        assert_eq!(&out2[34..], &whole[34 + 512..]);
        let snat_port = u16::from_be_bytes([out1[34], out1[35]]);
        assert_eq!(u16::from_be_bytes([out1[36], out1[37]]), 5353);
        let udp: Vec<u8> = [&out1[34..], &out2[34..]].concat();
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&NODE_IP, &POD_B_IP, &[0, 17], &len, &udp]),
            0,
            "the reassembled datagram's UDP checksum"
        );
        // The answer in fragments, to the node's SNAT port: both back to the client.
        let mut answer = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv4(POD_B_IP, NODE_IP, 64)
            .udp(5353, snat_port)
            .write(&mut answer, &payload)
            .unwrap();
        let first = on(POD_B, fragment4(&answer, 0, 512, true, 0x1357));
        let later = on(POD_B, fragment4(&answer, 512, 496, false, 0x1357));
        let (v, back1, _) = run_with(&s, &mut local, &first, POD_B);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let (v, back2, _) = run_with(&s, &mut local, &later, POD_B);
        assert_eq!(v, Verdict::Tx(UPLINK));
        for f in [&back1, &back2] {
            assert!(ipv4_header_ok(&f[14..]));
            assert_eq!((&f[26..30], &f[30..34]), (&NODE_IP[..], &CLIENT[..]));
        }
        let udp: Vec<u8> = [&back1[34..], &back2[34..]].concat();
        assert_eq!(
            (
                u16::from_be_bytes([udp[0], udp[1]]),
                u16::from_be_bytes([udp[2], udp[3]])
            ),
            (30053, 4000)
        );
        let len = (udp.len() as u16).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&NODE_IP, &CLIENT, &[0, 17], &len, &udp]),
            0
        );
        // A later fragment to the node whose datagram is not tracked goes on to the
        // node's own stack, as it came.
        let stray = on(UPLINK, fragment4(&whole, 512, 496, false, 0x0bad));
        let (v, out, _) = run_with(&s, &mut local, &stray, UPLINK);
        assert_eq!(v, Verdict::Tx(HOST));
        assert_eq!(&out[14..], &stray[14..]);
    }

    /// Fragment `[from, from + len)` of the IP payload of `whole` (an IPv6 frame with
    /// no extension header), behind a Fragment header with identification `ident`.
    fn fragment6(whole: &[u8], from: usize, len: usize, more: bool, ident: u32) -> Vec<u8> {
        let mut v = whole[..54].to_vec();
        let next = v[20];
        v[20] = 44;
        v[18..20].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        v.extend_from_slice(&[next, 0]);
        v.extend_from_slice(&((from as u16) | u16::from(more)).to_be_bytes());
        v.extend_from_slice(&ident.to_be_bytes());
        v.extend_from_slice(&whole[54 + from..54 + from + len]);
        v
    }

    /// IPv6 through a service in fragments: the first fragment (ports behind the
    /// Fragment header) takes the backend, the later ones follow it; so does the
    /// backend's fragmented answer, back from the VIP.
    #[test]
    fn every_fragment_of_an_ipv6_datagram_to_a_service_reaches_the_same_backend() {
        let dns6 = service(
            "dns6",
            [vec![IpAddr::from(VIP6)], vec![], vec![]],
            Protocol::Udp,
            vec![endpoint(IpAddr::from(POD_B_IP6), 5353, true)],
        );
        let s = snapshot_of(&[dns6], Arc::new(Conntrack::new(1024, 1024)));
        let mut local = Local::new(RateLimit::default(), 0);
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 11) as u8).collect();
        let mut whole = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv6(POD_A_IP6, VIP6, 64)
            .udp(4000, 53)
            .write(&mut whole, &payload)
            .unwrap();
        let first = fragment6(&whole, 0, 512, true, 0xdead_beef);
        let later = fragment6(&whole, 512, 496, false, 0xdead_beef);
        let (v, _, _) = run_with(&s, &mut local, &later, POD_A);
        assert_eq!(
            v,
            Verdict::Drop(DropReason::FragmentUntracked),
            "before its first"
        );
        let (v, out1, _) = run_with(&s, &mut local, &first, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        let (v, out2, t) = run_with(&s, &mut local, &later, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B), "the same backend");
        assert_eq!(t.nat_packets, 1);
        for f in [&out1, &out2] {
            assert_eq!((&f[22..38], &f[38..54]), (&POD_A_IP6[..], &POD_B_IP6[..]));
            assert_eq!(f[20], 44, "the Fragment header stays");
        }
        assert_eq!(
            &out2[62..],
            &whole[54 + 512..],
            "a later fragment's payload is kept"
        );
        let udp: Vec<u8> = [&out1[62..], &out2[62..]].concat();
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5353);
        let len = (udp.len() as u32).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&POD_A_IP6, &POD_B_IP6, &len, &[0, 0, 0, 17], &udp]),
            0,
            "the reassembled datagram's UDP checksum"
        );
        // The answer in fragments: both come from the VIP.
        let mut answer = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv6(POD_B_IP6, POD_A_IP6, 64)
            .udp(5353, 4000)
            .write(&mut answer, &payload)
            .unwrap();
        let first = on(POD_B, fragment6(&answer, 0, 512, true, 77));
        let later = on(POD_B, fragment6(&answer, 512, 496, false, 77));
        let (v, back1, _) = run_with(&s, &mut local, &first, POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        let (v, back2, _) = run_with(&s, &mut local, &later, POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        for f in [&back1, &back2] {
            assert_eq!((&f[22..38], &f[38..54]), (&VIP6[..], &POD_A_IP6[..]));
        }
        let udp: Vec<u8> = [&back1[62..], &back2[62..]].concat();
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 53);
        let len = (udp.len() as u32).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&VIP6, &POD_A_IP6, &len, &[0, 0, 0, 17], &udp]),
            0
        );
        // A first fragment without the ports (4 bytes of UDP): not routed on.
        let mut tiny = fragment6(&whole, 0, 8, true, 5);
        tiny.truncate(62 + 4);
        tiny[18..20].copy_from_slice(&12u16.to_be_bytes());
        let (v, _, _) = run_with(&s, &mut local, &tiny, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::Fragment));
        // Another datagram's later fragment to a pod is routed as it is.
        let mut direct = fragment6(&whole, 512, 496, false, 6);
        direct[38..54].copy_from_slice(&POD_B_IP6);
        let (v, out, _) = run_with(&s, &mut local, &direct, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[54..], &direct[54..]);
    }

    const VIP2: [u8; 4] = [10, 96, 0, 20];

    /// A TCP service on `VIP2` port 80 (NodePort 30080) with pod B and three remote
    /// endpoints.
    fn spread(affinity: Option<std::time::Duration>) -> Service {
        let mut endpoints = vec![endpoint(ip4(POD_B_IP), 8080, true)];
        endpoints.extend((20..23).map(|i| endpoint(ip4([10, 244, 2, i]), 8080, false)));
        let mut s = service(
            "spread",
            [vec![ip4(VIP2)], vec![], vec![]],
            Protocol::Tcp,
            endpoints,
        );
        s.ports[0].node_port = Some(30080);
        s.affinity = affinity;
        s
    }

    /// The backends (destination after DNAT) new flows from `client` on `port` with
    /// source ports `sports` reach, at `dst`.
    fn backends_of(
        s: &Snapshot,
        local: &mut Local,
        client: [u8; 4],
        port: u16,
        dst: ([u8; 4], u16),
        sports: std::ops::Range<u16>,
    ) -> std::collections::BTreeSet<[u8; 4]> {
        sports
            .map(|sport| {
                let syn = on(port, tcp4((client, sport), dst, true, false));
                let (v, out, _) = run_with(s, local, &syn, port);
                assert!(matches!(v, Verdict::Tx(_)), "{v:?}");
                tuple4(&out).2
            })
            .collect()
    }

    #[test]
    fn session_affinity_keeps_a_client_on_one_backend_until_its_timeout() {
        let ten = std::time::Duration::from_secs(10);
        let ct = || Arc::new(Conntrack::new(4096, 4096));
        let mut local = Local::new(RateLimit::default(), 0);
        local.seconds = 100;
        // Without affinity, a client's connections spread over the backends.
        let off = snapshot_of(&[spread(None)], ct());
        let seen = backends_of(&off, &mut local, POD_A_IP, POD_A, (VIP2, 80), 1000..1040);
        assert!(seen.len() > 1, "no affinity: {seen:?}");
        // With it, every connection of the client goes to one (ClusterIP) ...
        let on_ = snapshot_of(&[spread(Some(ten))], ct());
        let sticky = backends_of(&on_, &mut local, POD_A_IP, POD_A, (VIP2, 80), 2000..2040);
        assert_eq!(sticky.len(), 1, "ClientIP affinity: {sticky:?}");
        // ... and through the NodePort, for a client outside (SNATed, Cluster policy).
        let seen = backends_of(
            &on_,
            &mut local,
            CLIENT,
            UPLINK,
            (NODE_IP, 30080),
            3000..3040,
        );
        assert_eq!(seen.len(), 1, "NodePort affinity: {seen:?}");
        // Another node (its own tables) sends the client to the same backend.
        let other_node = snapshot_of(&[spread(Some(ten))], ct());
        let there = backends_of(
            &other_node,
            &mut local,
            POD_A_IP,
            POD_A,
            (VIP2, 80),
            2000..2010,
        );
        assert_eq!(there, sticky, "the same backend on every node");
        // More backends: the client's first choice would now be another one (found
        // with a node that has not seen the client) ...
        let mut more = spread(Some(ten));
        let mut fresh = sticky.clone();
        for i in 30..60u8 {
            more.endpoints
                .push(endpoint(ip4([10, 244, 2, i]), 8080, false));
            let probe = snapshot_of(std::slice::from_ref(&more), ct());
            fresh = backends_of(&probe, &mut local, POD_A_IP, POD_A, (VIP2, 80), 2000..2001);
            if fresh != sticky {
                break;
            }
        }
        assert_ne!(fresh, sticky, "no backend set moves the client");
        // ... but this node's affinity keeps the client where it was, renewed by each
        // new connection: 9 s later it still sticks ...
        let changed = snapshot_sharing(
            &[more],
            Arc::clone(&on_.services.conntrack),
            Arc::clone(&on_.services.affinity),
        );
        local.seconds += 9;
        let again = backends_of(
            &changed,
            &mut local,
            POD_A_IP,
            POD_A,
            (VIP2, 80),
            4000..4010,
        );
        assert_eq!(again, sticky);
        // ... and once 10 s pass without one, the client takes its new first choice.
        local.seconds += 11;
        let after = backends_of(
            &changed,
            &mut local,
            POD_A_IP,
            POD_A,
            (VIP2, 80),
            5000..5010,
        );
        assert_eq!(after, fresh, "after the timeout");
        // Switching affinity off (a new snapshot, the same tables) spreads at once.
        let off = snapshot_of(&[spread(None)], Arc::clone(&on_.services.conntrack));
        let seen = backends_of(&off, &mut local, POD_A_IP, POD_A, (VIP2, 80), 6000..6040);
        assert!(seen.len() > 1, "affinity switched off: {seen:?}");
        // ... and back on (the affinity table as it was left): sticky again.
        let on_again = snapshot_sharing(
            &[spread(Some(ten))],
            Arc::clone(&on_.services.conntrack),
            Arc::clone(&on_.services.affinity),
        );
        let sticky = backends_of(
            &on_again,
            &mut local,
            POD_A_IP,
            POD_A,
            (VIP2, 80),
            7000..7040,
        );
        assert_eq!(sticky.len(), 1, "affinity switched on again: {sticky:?}");
    }

    #[test]
    fn session_affinity_over_a_node_port_times_out_too() {
        let ten = std::time::Duration::from_secs(10);
        let ct = || Arc::new(Conntrack::new(4096, 4096));
        let mut local = Local::new(RateLimit::default(), 0);
        local.seconds = 100;
        let np = |s: &Snapshot, local: &mut Local, sports| {
            backends_of(s, local, CLIENT, UPLINK, (NODE_IP, 30080), sports)
        };
        let on_ = snapshot_of(&[spread(Some(ten))], ct());
        let sticky = np(&on_, &mut local, 1000..1040);
        assert_eq!(sticky.len(), 1, "NodePort affinity: {sticky:?}");
        // A backend set in which the client's first choice is another backend.
        let mut more = spread(Some(ten));
        let mut fresh = sticky.clone();
        for i in 30..90u8 {
            more.endpoints
                .push(endpoint(ip4([10, 244, 2, i]), 8080, false));
            let probe = snapshot_of(std::slice::from_ref(&more), ct());
            fresh = np(&probe, &mut local, 2000..2001);
            if fresh != sticky {
                break;
            }
        }
        assert_ne!(fresh, sticky, "no backend set moves the client");
        let changed = snapshot_sharing(
            &[more],
            Arc::clone(&on_.services.conntrack),
            Arc::clone(&on_.services.affinity),
        );
        // Within the timeout of its last connection the client sticks ...
        local.seconds += 9;
        assert_eq!(np(&changed, &mut local, 3000..3010), sticky);
        // ... and after 10 s without one it takes its new first choice.
        local.seconds += 11;
        assert_eq!(
            np(&changed, &mut local, 4000..4010),
            fresh,
            "after the timeout"
        );
    }

    #[test]
    fn the_same_port_with_two_protocols_reaches_each_its_own_target_port() {
        let mut s = service(
            "dual",
            [vec![ip4(VIP2)], vec![], vec![]],
            Protocol::Tcp,
            vec![],
        );
        s.ports = vec![
            ServicePort {
                name: "dns-tcp".into(),
                protocol: Protocol::Tcp,
                port: 53,
                node_port: None,
            },
            ServicePort {
                name: "dns-udp".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
            },
        ];
        let mut e = endpoint(ip4(POD_B_IP), 0, true);
        e.ports = BTreeMap::from([("dns-tcp".to_string(), 8053), ("dns-udp".to_string(), 5353)]);
        s.endpoints = vec![e];
        let snap = snapshot_of(&[s], Arc::new(Conntrack::new(64, 64)));
        let mut local = Local::new(RateLimit::default(), 0);
        let (v, out, _) = run_with(
            &snap,
            &mut local,
            &tcp4((POD_A_IP, 4000), (VIP2, 53), true, false),
            POD_A,
        );
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out).3, 8053);
        let mut q = udp4(POD_A_IP, VIP2, 64, 4000, b"query");
        q[36..38].copy_from_slice(&53u16.to_be_bytes());
        q[40..42].copy_from_slice(&[0, 0]);
        let (v, out, _) = run_with(&snap, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 5353);
    }

    #[test]
    fn internal_traffic_policy_local_reaches_only_this_nodes_endpoints() {
        let mut s = spread(None);
        s.internal_policy = TrafficPolicy::Local;
        let snap = snapshot_of(&[s.clone()], Arc::new(Conntrack::new(4096, 4096)));
        let mut local = Local::new(RateLimit::default(), 0);
        let seen = backends_of(&snap, &mut local, POD_A_IP, POD_A, (VIP2, 80), 1000..1040);
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [POD_B_IP]);
        // With no endpoint on this node, pods' connections are dropped (not rejected:
        // the service has endpoints), as kube-proxy drops them.
        s.endpoints.retain(|e| !e.local);
        let snap = snapshot_of(&[s], Arc::new(Conntrack::new(64, 64)));
        let syn = tcp4((POD_A_IP, 1000), (VIP2, 80), true, false);
        let (v, _, _) = run_with(&snap, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::NoLocalEndpoint));
    }

    #[test]
    fn a_local_policy_falls_back_to_local_terminating_endpoints() {
        let mut s = spread(None);
        s.external_policy = TrafficPolicy::Local;
        // Pod B is terminating but still serving; the remote ones are ready.
        s.endpoints[0].ready = false;
        s.endpoints[0].terminating = true;
        let snap = snapshot_of(&[s], Arc::new(Conntrack::new(4096, 4096)));
        let mut local = Local::new(RateLimit::default(), 0);
        // Outside clients (Local): no local ready endpoint, so the local serving
        // terminating one (KEP-1669), with the client's address kept.
        let syn = on(UPLINK, tcp4((CLIENT, 1000), (NODE_IP, 30080), true, false));
        let (v, out, _) = run_with(&snap, &mut local, &syn, UPLINK);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(tuple4(&out), (CLIENT, 1000, POD_B_IP, 8080));
        // Pods (internal policy Cluster): only the ready endpoints while there are any.
        let seen = backends_of(&snap, &mut local, POD_A_IP, POD_A, (VIP2, 80), 1000..1040);
        assert!(!seen.contains(&POD_B_IP) && !seen.is_empty(), "{seen:?}");
        // internalTrafficPolicy Local: pods too fall back to the local serving
        // terminating endpoint, never to the remote ready ones.
        let mut s = spread(None);
        s.internal_policy = TrafficPolicy::Local;
        s.endpoints[0].ready = false;
        s.endpoints[0].terminating = true;
        let snap = snapshot_of(&[s.clone()], Arc::new(Conntrack::new(4096, 4096)));
        let seen = backends_of(&snap, &mut local, POD_A_IP, POD_A, (VIP2, 80), 2000..2040);
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [POD_B_IP]);
        // Terminating and no longer serving: nothing here to fall back to (dropped).
        s.endpoints[0].serving = false;
        let snap = snapshot_of(&[s], Arc::new(Conntrack::new(64, 64)));
        let syn = tcp4((POD_A_IP, 3000), (VIP2, 80), true, false);
        let (v, _, _) = run_with(&snap, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Drop(DropReason::NoLocalEndpoint));
    }

    #[test]
    fn udp_gets_through_as_soon_as_an_endpoint_is_ready_and_after_a_service_is_recreated() {
        let mut s = service(
            "udp",
            [vec![ip4(VIP2)], vec![], vec![]],
            Protocol::Udp,
            vec![endpoint(ip4(POD_B_IP), 5353, true)],
        );
        s.endpoints[0].ready = false;
        s.endpoints[0].serving = false;
        let ct = Arc::new(Conntrack::new(64, 64));
        let mut local = Local::new(RateLimit::default(), 0);
        let mut q = udp4(POD_A_IP, VIP2, 64, 4000, b"query");
        q[36..38].copy_from_slice(&53u16.to_be_bytes());
        q[40..42].copy_from_slice(&[0, 0]);
        // Unready: refused (port unreachable), and nothing is left in conntrack ...
        let unready = snapshot_of(&[s.clone()], Arc::clone(&ct));
        let (v, out, _) = run_with(&unready, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!((out[34], out[35]), (3, 3), "ICMP port unreachable");
        // ... so the same flow gets through as soon as the endpoint is ready.
        s.endpoints[0].ready = true;
        s.endpoints[0].serving = true;
        let ready = snapshot_of(&[s.clone()], Arc::clone(&ct));
        let (v, out, _) = run_with(&ready, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[30..34], &POD_B_IP);
        // The service deleted: a new flow to its VIP is not served ...
        let gone = snapshot_of(&[], Arc::clone(&ct));
        let mut q2 = q.clone();
        q2[34..36].copy_from_slice(&4001u16.to_be_bytes());
        let (v, out, _) = run_with(&gone, &mut local, &q2, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A), "answered to the client, not sent on");
        assert_eq!(
            out[34], 3,
            "ICMP destination unreachable: nothing has the VIP now"
        );
        assert_eq!(&out[26..30], &GW_IP, "from the gateway");
        // ... and recreated, it is again.
        let back = snapshot_of(&[s], ct);
        let (v, out, _) = run_with(&back, &mut local, &q2, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        assert_eq!(&out[30..34], &POD_B_IP);
    }

    #[test]
    fn ipv6_through_a_cluster_ip() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut syn = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv6(POD_A_IP6, VIP6, 64)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(&mut syn, b"")
            .unwrap();
        let (v, out, _) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        let ip = &out[14..];
        assert_eq!(&ip[24..40], &POD_B_IP6);
        let seg = &ip[40..];
        let len = (seg.len() as u32).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&ip[8..40], &len, &[0, 0, 0, 6], seg]),
            0
        );
        assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 8080);
    }

    /// ICMPv6 errors about a translated flow are translated too, the quoted packet
    /// included: a Packet Too Big from the backend's side reaches the client about the
    /// packet it sent to the VIP, with the MTU kept (path MTU discovery through a
    /// service, RFC 8201).
    #[test]
    fn icmpv6_errors_about_a_translated_flow_are_translated_inner_header_included() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut syn = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv6(POD_A_IP6, VIP6, 64)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(&mut syn, &[0u8; 32])
            .unwrap();
        let (v, sent, _) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        let mut err = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv6(POD_B_IP6, POD_A_IP6, 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut err, &sent[14..])
            .unwrap();
        let (v, out, t) = run_with(&s, &mut local, &on(POD_B, err), POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(t.nat_packets, 1);
        let ip = &out[14..];
        assert_eq!(
            (&ip[8..24], &ip[24..40]),
            (&VIP6[..], &POD_A_IP6[..]),
            "from the VIP to the client"
        );
        let icmp = &ip[40..];
        assert_eq!(
            (
                icmp[0],
                u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])
            ),
            (2, 1280)
        );
        let len = (icmp.len() as u32).to_be_bytes();
        assert_eq!(
            internet_checksum(&[&ip[8..40], &len, &[0, 0, 0, 58], icmp]),
            0,
            "ICMPv6 checksum"
        );
        let inner = &icmp[8..];
        assert_eq!((&inner[8..24], &inner[24..40]), (&POD_A_IP6[..], &VIP6[..]));
        assert_eq!(
            (
                u16::from_be_bytes([inner[40], inner[41]]),
                u16::from_be_bytes([inner[42], inner[43]])
            ),
            (40000, 80),
            "the quoted segment as the client sent it"
        );
    }

    /// Flows expire after their state's timeout without traffic (kube-proxy's and
    /// Linux's defaults): UDP 30 s until answered, 120 s once answered; TCP 24 h
    /// established. An expired flow's next packet is a new flow.
    #[test]
    fn flows_expire_after_their_states_timeouts() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut at = |seconds: u32, frame: &[u8], port: u16| {
            local.seconds = seconds;
            let (v, _, t) = run_with(&s, &mut local, frame, port);
            (v, t.nat_new_flows)
        };
        let mut q = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .udp(4000, 53)
            .write(&mut q, b"query")
            .unwrap();
        // Unanswered: 30 s.
        assert_eq!(at(1000, &q, POD_A), (Verdict::Tx(POD_B), 1));
        assert_eq!(at(1029, &q, POD_A).1, 0, "within 30 s of the last");
        assert_eq!(at(1060, &q, POD_A).1, 1, "31 s later: expired, new");
        // Answered: 120 s.
        let mut answer = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv4(POD_B_IP, POD_A_IP, 64)
            .udp(5353, 4000)
            .write(&mut answer, b"answer")
            .unwrap();
        assert_eq!(at(1061, &on(POD_B, answer), POD_B), (Verdict::Tx(POD_A), 0));
        assert_eq!(at(1180, &q, POD_A).1, 0, "119 s later: still the flow");
        assert_eq!(at(1301, &q, POD_A).1, 1, "121 s later: expired, new");
        // TCP, established: 24 h.
        let t0 = 10_000;
        let syn = tcp4((POD_A_IP, 40000), (VIP, 80), true, false);
        let synack = on(POD_B, tcp4((POD_B_IP, 8080), (POD_A_IP, 40000), true, true));
        let ack = tcp4((POD_A_IP, 40000), (VIP, 80), false, true);
        assert_eq!(at(t0, &syn, POD_A).1, 1);
        assert_eq!(at(t0, &synack, POD_B).1, 0);
        assert_eq!(at(t0, &ack, POD_A).1, 0);
        assert_eq!(at(t0 + 23 * 3600, &ack, POD_A).1, 0, "23 h idle: kept");
        assert_eq!(
            at(t0 + 23 * 3600 + 24 * 3600 + 1, &ack, POD_A).1,
            1,
            "24 h idle: expired; the ACK picks the flow up again"
        );
        // Picked up by that ACK and not answered: no longer than an unanswered SYN
        // (120 s), however many more ACKs the client sends ...
        let t1 = t0 + 23 * 3600 + 24 * 3600 + 1;
        assert_eq!(at(t1 + 100, &ack, POD_A).1, 0, "100 s: kept");
        assert_eq!(at(t1 + 221, &ack, POD_A).1, 1, "121 s after the last: gone");
        // ... and once the backend answers, a connection: 24 h.
        let data = on(
            POD_B,
            tcp4((POD_B_IP, 8080), (POD_A_IP, 40000), false, true),
        );
        assert_eq!(at(t1 + 222, &data, POD_B), (Verdict::Tx(POD_A), 0));
        assert_eq!(
            at(t1 + 222 + 23 * 3600, &ack, POD_A).1,
            0,
            "answered: 23 h kept"
        );
    }

    #[test]
    fn two_workers_opening_the_same_flows_at_once_make_one_flow_each() {
        // Two workers take the same new flows at the same time (as when a client's
        // SYN is retransmitted while the first is handled, or the fabric moves a flow
        // between queues): every flow ends as one flow, both directions, one SNAT
        // port, whichever worker won, and both workers' packets were translated alike.
        let mut ext = service(
            "ext",
            [vec![], vec![ip4(EXT_IP)], vec![]],
            Protocol::Tcp,
            (20..24)
                .map(|i| endpoint(ip4([10, 244, 2, i]), 8080, false))
                .collect(),
        );
        ext.ports[0].node_port = Some(30080);
        let s = snapshot_of(&[ext], Arc::new(Conntrack::new(1 << 15, 64)));
        const FLOWS: u16 = 3000;
        let start = std::sync::Barrier::new(2);
        let run = |s: &Snapshot| {
            start.wait();
            let mut local = Local::new(RateLimit::default(), 0);
            local.seconds = 5;
            (0..FLOWS)
                .map(|i| {
                    let syn = on(
                        UPLINK,
                        tcp4((CLIENT, 10_000 + i), (EXT_IP, 80), true, false),
                    );
                    let (v, out, _) = run_with(s, &mut local, &syn, UPLINK);
                    assert_eq!(v, Verdict::Tx(UPLINK));
                    tuple4(&out)
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = std::thread::scope(|sc| {
            let a = sc.spawn(|| run(&s));
            let b = sc.spawn(|| run(&s));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, b, "both workers translated each flow alike");
        let ct = &s.services.conntrack;
        let mut entries = Vec::new();
        ct.sweep4(0, ct.v4.capacity(), 5, |t, n| {
            entries.push((*t, *n));
            nat::conntrack::flow::Fate::Keep
        });
        assert_eq!(
            entries.len(),
            2 * usize::from(FLOWS),
            "two entries a flow, no more"
        );
        for (t, n) in &entries {
            let (k, v) = nat::conntrack::flow::counterpart(t, n);
            assert_eq!(ct.get4(&k, 5), Some(v), "{t:?} is half a flow");
        }
    }

    #[test]
    fn a_full_conntrack_table_evicts_and_counts_and_forwarding_goes_on() {
        let s = snapshot_with(16);
        let mut local = Local::new(RateLimit::default(), 0);
        for sport in 0..500u16 {
            let (v, _, _) = run_with(
                &s,
                &mut local,
                &tcp4((POD_A_IP, 10000 + sport), (VIP, 80), true, false),
                POD_A,
            );
            assert_eq!(v, Verdict::Tx(POD_B));
        }
        let c = &s.services.conntrack.v4.counters;
        assert!(
            c.evictions.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{c:?}"
        );
        assert_eq!(
            s.services.conntrack.v4.capacity(),
            16,
            "the table never grows"
        );
    }

    #[test]
    fn this_routers_own_errors_about_a_translated_packet_quote_it_as_sent() {
        // Pod B's port takes 1400 bytes: a 1450-byte DF datagram to the ClusterIP,
        // translated to pod B, is too big there.
        let mut t = tables();
        t.ports[usize::from(POD_B)].mtu = 1400;
        t.services = snapshot_with(1024).services.clone();
        let s = Snapshot::new(t).unwrap();
        let mut local = Local::new(RateLimit::default(), 0);
        let mut q = udp4(POD_A_IP, VIP, 64, 4000, &[7u8; 1422]);
        q[36..38].copy_from_slice(&53u16.to_be_bytes());
        q[40..42].copy_from_slice(&[0, 0]);
        q[20] |= 0x40; // don't fragment
        q[24..26].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&[&q[14..34]]);
        q[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(q.len() - 14, 1450);
        let (v, out, _) = run_with(&s, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A));
        let ip = &out[14..];
        assert!(ipv4_header_ok(ip));
        assert_eq!((&ip[12..16], &ip[16..20]), (&GW_IP[..], &POD_A_IP[..]));
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400);
        assert_eq!(internet_checksum(&[icmp]), 0, "ICMP checksum");
        let inner = &icmp[8..];
        assert!(ipv4_header_ok(&inner[..20]), "the quoted header's checksum");
        assert_eq!(
            (&inner[12..16], &inner[16..20]),
            (&POD_A_IP[..], &VIP[..]),
            "the quote is the datagram as the pod sent it"
        );
        assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), 53);
    }

    #[test]
    fn icmp_errors_about_a_translated_flow_are_translated_inner_header_included() {
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let mut q = udp4(POD_A_IP, VIP, 64, 4000, b"query");
        q[36..38].copy_from_slice(&53u16.to_be_bytes());
        q[40..42].copy_from_slice(&[0, 0]);
        let (v, sent, _) = run_with(&s, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B));
        // Pod B has nothing on 5353: its kernel answers port unreachable, quoting the
        // datagram as it arrived (to 10.244.1.3:5353).
        let mut err = Vec::new();
        PacketBuilder::ethernet2(POD_B_MAC, GW_MAC)
            .ipv4(POD_B_IP, POD_A_IP, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut err, &sent[14..])
            .unwrap();
        let (v, out, t) = run_with(&s, &mut local, &on(POD_B, err), POD_B);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(t.nat_packets, 1);
        let ip = &out[14..];
        assert!(ipv4_header_ok(ip));
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&VIP[..], &POD_A_IP[..]),
            "from the VIP to the client"
        );
        let icmp = &ip[20..];
        assert_eq!(internet_checksum(&[icmp]), 0, "ICMP checksum");
        let inner = &icmp[8..];
        assert!(ipv4_header_ok(inner), "the quoted header's checksum");
        assert_eq!((&inner[12..16], &inner[16..20]), (&POD_A_IP[..], &VIP[..]));
        assert_eq!(
            u16::from_be_bytes([inner[22], inner[23]]),
            53,
            "the service's port"
        );
        // A path's fragmentation needed about an outside client's SNATed flow, to the
        // node's address, reaches the client about the packet it sent.
        let syn = on(UPLINK, tcp4((CLIENT, 40000), (EXT_IP, 80), true, false));
        let (_, fwd, _) = run_with(&s, &mut local, &syn, UPLINK);
        let router = [192, 168, 100, 1];
        let mut err = Vec::new();
        PacketBuilder::ethernet2(NODE2_MAC, UPLINK_MAC)
            .ipv4(router, NODE_IP, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400,
                },
            ))
            .write(&mut err, &fwd[14..14 + 28])
            .unwrap();
        let (v, out, _) = run_with(&s, &mut local, &on(UPLINK, err), UPLINK);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let ip = &out[14..];
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&router[..], &CLIENT[..]),
            "the router's own address is kept"
        );
        let inner = &ip[28..];
        assert_eq!((&inner[12..16], &inner[16..20]), (&CLIENT[..], &EXT_IP[..]));
        assert_eq!(
            (
                u16::from_be_bytes([inner[20], inner[21]]),
                u16::from_be_bytes([inner[22], inner[23]])
            ),
            (40000, 80)
        );
        assert_eq!(
            u16::from_be_bytes([ip[26], ip[27]]),
            1400,
            "the MTU is kept"
        );
        assert_eq!(internet_checksum(&[&ip[20..]]), 0);
    }

    #[test]
    fn a_flow_whose_backend_is_gone_is_reset_and_forgotten() {
        use nat::conntrack::flow::{flags, Fate};
        let s = snapshot_with(1024);
        let mut local = Local::new(RateLimit::default(), 0);
        let syn = tcp4((POD_A_IP, 40000), (VIP, 80), true, false);
        assert_eq!(run_with(&s, &mut local, &syn, POD_A).0, Verdict::Tx(POD_B));
        // The control side marks the flow (its backend left the endpoints).
        let ct = &s.services.conntrack;
        ct.sweep4(0, ct.v4.capacity(), 1, |_, n| {
            Fate::Replace(nat::conntrack::flow::Nat {
                flags: n.flags | flags::BACKEND_GONE,
                ..*n
            })
        });
        let ack = tcp4((POD_A_IP, 40000), (VIP, 80), false, true);
        let (v, out, t) = run_with(&s, &mut local, &ack, POD_A);
        assert_eq!(v, Verdict::Tx(POD_A), "a RST back to the client");
        assert_eq!(
            (t.drops[DropReason::BackendGone as usize], t.resets),
            (1, 1)
        );
        assert_eq!(tuple4(&out), (VIP, 80, POD_A_IP, 40000));
        assert_eq!(out[34 + 13] & 0x04, 0x04, "RST");
        assert_eq!(
            u32::from_be_bytes(out[38..42].try_into().unwrap()),
            5000,
            "seq = the segment's ack"
        );
        // Forgotten: the next segment picks the flow up again (loose pickup).
        let (v, _, t) = run_with(&s, &mut local, &ack, POD_A);
        assert_eq!((v, t.nat_new_flows), (Verdict::Tx(POD_B), 1));
        // Marked again, then a new connection on the same ports (a reused source
        // port): the SYN is a new flow, not reset.
        ct.sweep4(0, ct.v4.capacity(), 1, |_, n| {
            Fate::Replace(nat::conntrack::flow::Nat {
                flags: n.flags | flags::BACKEND_GONE,
                ..*n
            })
        });
        let (v, out, t) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(POD_B), "the SYN reaches a backend");
        assert_eq!((t.resets, t.nat_new_flows), (0, 1));
        assert_eq!(tuple4(&out).2, POD_B_IP);
    }

    /// The stale-UDP-conntrack problem: a UDP flow whose backend went picks a live
    /// backend with its next datagram, rather than keep sending to the gone one.
    #[test]
    fn a_udp_flow_whose_backend_is_gone_moves_to_a_live_one() {
        use nat::conntrack::flow::{flags, Fate};
        let dns = |backend: IpAddr| {
            service(
                "dns",
                [vec![ip4(VIP)], vec![], vec![]],
                Protocol::Udp,
                vec![endpoint(backend, 5353, false)],
            )
        };
        let ct = Arc::new(Conntrack::new(1024, 1024));
        let before = snapshot_of(&[dns(ip4(POD_B_IP))], Arc::clone(&ct));
        let mut local = Local::new(RateLimit::default(), 0);
        let mut q = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC, GW_MAC)
            .ipv4(POD_A_IP, VIP, 64)
            .udp(4000, 53)
            .write(&mut q, b"query")
            .unwrap();
        let (v, out, _) = run_with(&before, &mut local, &q, POD_A);
        assert_eq!((v, tuple4(&out).2), (Verdict::Tx(POD_B), POD_B_IP));
        // Pod B leaves the endpoints; the control side marks its flows and publishes
        // the service with its new endpoint.
        ct.sweep4(0, ct.v4.capacity(), 1, |_, n| {
            Fate::Replace(nat::conntrack::flow::Nat {
                flags: n.flags | flags::BACKEND_GONE,
                ..*n
            })
        });
        let after = snapshot_of(&[dns(ip4(REMOTE))], Arc::clone(&ct));
        let (v, out, t) = run_with(&after, &mut local, &q, POD_A);
        assert_eq!(v, Verdict::Tx(UPLINK));
        assert_eq!(
            tuple4(&out),
            (POD_A_IP, 4000, REMOTE, 5353),
            "the live backend"
        );
        assert_eq!((t.nat_new_flows, t.resets), (1, 0));
        // And stays there.
        let (_, out, t) = run_with(&after, &mut local, &q, POD_A);
        assert_eq!((tuple4(&out).2, t.nat_new_flows), (REMOTE, 0));
    }

    #[test]
    fn pod_egress_is_snated_to_the_node_and_flows_from_outside_are_not() {
        let mut t = tables();
        t.services = Services {
            pod_egress: true,
            ..snapshot_with(1024).services.clone()
        };
        let s = Snapshot::new(t).unwrap();
        let mut local = Local::new(RateLimit::default(), 0);
        let outside = [192, 168, 200, 77];
        let syn = tcp4((POD_A_IP, 40000), (outside, 443), true, false);
        let (v, out, _) = run_with(&s, &mut local, &syn, POD_A);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let (src, sport, dst, dport) = tuple4(&out);
        assert_eq!((src, dst, dport), (NODE_IP, outside, 443));
        let reply = on(UPLINK, tcp4((outside, 443), (NODE_IP, sport), true, true));
        let (v, out, _) = run_with(&s, &mut local, &reply, UPLINK);
        assert_eq!(v, Verdict::Tx(POD_A));
        assert_eq!(tuple4(&out), (outside, 443, POD_A_IP, 40000));
        // Inside the cluster: untouched.
        let (v, out, t) = run_with(
            &s,
            &mut local,
            &tcp4((POD_A_IP, 40001), (REMOTE, 80), true, false),
            POD_A,
        );
        assert_eq!((v, t.nat_packets), (Verdict::Tx(UPLINK), 0));
        assert_eq!(tuple4(&out).0, POD_A_IP);
        // The outside reaching a pod directly (its CIDR announced): the pod's answers
        // keep its address.
        let mut q = udp4(outside, POD_A_IP, 64, 5353, b"q");
        q[40..42].copy_from_slice(&[0, 0]);
        let (v, _, _) = run_with(&s, &mut local, &on(UPLINK, q), UPLINK);
        assert_eq!(v, Verdict::Tx(POD_A));
        let mut a = udp4(POD_A_IP, outside, 64, 5001, b"a");
        a[36..38].copy_from_slice(&5353u16.to_be_bytes());
        a[40..42].copy_from_slice(&[0, 0]);
        let (v, out, _) = run_with(&s, &mut local, &a, POD_A);
        assert_eq!(v, Verdict::Tx(UPLINK));
        assert_eq!(&out[26..30], &POD_A_IP, "an answer is not egress");
    }
}
