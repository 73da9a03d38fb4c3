//! Any bytes as an Ethernet frame, through every view the fastpath uses: no accessor or
//! setter panics once a view's check passed, and the fastpath's rewrites (TTL, NAT
//! addresses and ports) keep a valid IPv4 header checksum valid.
#![no_main]
use fastpath::wire::{arp, ethernet, icmp, ip_proto, ipv4, ipv6, tcp, udp};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fn transport(protocol: u8, bytes: &mut [u8]) {
    match protocol {
        ip_proto::TCP => {
            if let Ok(mut t) = tcp::Packet::new_checked(bytes) {
                black_box((
                    t.src_port(),
                    t.dst_port(),
                    t.seq(),
                    t.ack(),
                    t.flags(),
                    t.window(),
                ));
                black_box((t.options().len(), t.payload().len(), t.verify_checksum(0)));
                t.set_dst_port(8080);
                t.update_for_address([10, 96, 0, 1], [10, 244, 0, 5]);
            }
        }
        ip_proto::UDP => {
            if let Ok(mut u) = udp::Packet::new_checked(bytes) {
                black_box((
                    u.src_port(),
                    u.dst_port(),
                    u.len(),
                    u.payload().len(),
                    u.verify_checksum(0),
                ));
                u.set_src_port(40000);
                u.update_for_address([10, 96, 0, 1], [10, 244, 0, 5]);
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let n = bytes.len();
            if let Ok(mut i) = icmp::Packet::new_checked(bytes) {
                black_box((
                    i.msg_type(),
                    i.code(),
                    i.rest(),
                    i.echo_seq(),
                    i.nd_target(),
                    i.body().len(),
                ));
                // Both families' representations: what emit writes parses back the same.
                let v4 = icmp::v4::Repr::parse(&i);
                let v6 = icmp::v6::Repr::parse(&i);
                v4.emit(&mut i);
                assert!(i.verify_checksum(0));
                assert_eq!(icmp::v4::Repr::parse(&i), v4);
                if let Ok(v6) = v6 {
                    if n >= v6.header_len() {
                        v6.emit(&mut i, 0);
                        assert!(i.verify_checksum(0));
                    }
                }
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let Ok(mut eth) = ethernet::Frame::new_checked(&mut buf[..]) else {
        return;
    };
    black_box((eth.dst(), eth.src(), eth.vlan(), eth.header_len()));
    match eth.ethertype() {
        ethernet::ethertype::ARP => {
            if let Ok(mut a) = arp::Packet::new_checked(eth.payload_mut()) {
                black_box((
                    a.operation(),
                    a.sender_mac(),
                    a.sender_ip(),
                    a.target_mac(),
                    a.target_ip(),
                ));
                // parse, reply, emit: the reply reads back as it was built.
                let reply = arp::Repr::parse(&a).reply([2, 0, 0, 0, 0, 1], [10, 0, 0, 1]);
                reply.emit(&mut a);
                assert_eq!(arp::Repr::parse(&a), reply);
            }
        }
        ethernet::ethertype::IPV4 => {
            if let Ok(mut ip) = ipv4::Packet::new_checked(eth.payload_mut()) {
                black_box((
                    ip.dscp_ecn(),
                    ip.ident(),
                    ip.is_fragment(),
                    ip.options().len(),
                    ip.src(),
                ));
                if let Ok(r) = ipv4::Repr::parse(&ip) {
                    // What emit writes reads back as the same representation.
                    let mut out = [0u8; ipv4::Repr::HEADER_LEN];
                    r.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
                    let back = ipv4::Packet::new_unchecked(&out[..]);
                    assert_eq!(
                        ipv4::Repr::parse(&back).map(|b| (b.src, b.dst, b.ttl)),
                        Ok((r.src, r.dst, r.ttl))
                    );
                }
                let valid = ip.verify_checksum();
                ip.decrement_ttl();
                ip.set_dst([10, 244, 0, 5]);
                ip.set_src([192, 168, 0, 1]);
                assert_eq!(
                    ip.verify_checksum(),
                    valid,
                    "an incremental update changed validity"
                );
                let protocol = ip.protocol();
                if !ip.is_fragment() {
                    transport(protocol, ip.payload_mut());
                }
            }
        }
        ethernet::ethertype::IPV6 => {
            if let Ok(mut ip) = ipv6::Packet::new_checked(eth.payload_mut()) {
                black_box((ip.traffic_class(), ip.flow_label(), ip.src(), ip.dst_u128()));
                ip.decrement_hop_limit();
                if let Ok(ul) = ip.upper_layer() {
                    if !ul.later_fragment {
                        transport(ul.protocol, &mut ip.packet_mut()[ul.offset..]);
                    }
                }
            }
        }
        _ => {}
    }
});
