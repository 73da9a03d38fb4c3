//! The forwarding decision for one frame, against one snapshot.
//!
//! [`forward`] takes a received frame in its UMEM buffer and either rewrites it in place
//! for transmission on some port ([`Verdict::Tx`]) or drops it with a named reason. It
//! never allocates, locks or panics: every header is read through a checked view, and
//! what cannot be read is a [`DropReason::Malformed`].
//!
//! What it does, in order (VPP's ip4-input / ip4-lookup / ip4-rewrite graph, folded into
//! one function because every node of it runs for every frame here):
//! - ARP requests and IPv6 neighbour solicitations from pods (and the host port) are
//!   answered with the port's MAC: the pods' gateway is the fastpath. Echo requests to
//!   the gateway address are answered too.
//! - IPv4/IPv6: the FIB names a next-hop group, a flow hash picks its member (every
//!   packet of a flow takes the same one), the TTL/hop limit is decremented (RFC 1624
//!   checksum update) and the MACs rewritten.
//! - Expired TTL, no route and too big answer an ICMP error where RFC 1812 / RFC 4443
//!   allow one, built in place in the same buffer.
//! - What the fastpath does not handle (802.1Q-tagged frames, next hops whose MAC is
//!   not known yet) is punted to the kernel through the host port; traffic for the
//!   node's own addresses goes there too.

use crate::counters::{DropReason, Tally};
use crate::ecmp::{flow_hash_v4, flow_hash_v6};
use crate::snapshot::{NextHopEntry, PortId, PortInfo, PortRole, Snapshot};
use crate::wire::ethernet::{ethertype, Frame, Mac};
use crate::wire::{arp, checksum, icmp, ip_proto, ipv4, ipv6};
use lpm::NextHop;
use std::net::IpAddr;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the frame, rewritten in place (its length may have changed), on a port.
    Tx(PortId),
    /// Drop it, counting the reason.
    Drop(DropReason),
}

/// The largest IPv4 datagram an ICMP error may make (RFC 1812 4.3.2.3).
const ICMP4_ERROR_MAX: usize = 576;
/// The largest IPv6 packet an ICMPv6 error may make (RFC 4443 2.4(c)).
const ICMP6_ERROR_MAX: usize = 1280;
/// TTL / hop limit of the packets the fastpath originates.
const OWN_TTL: u8 = 64;
const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const ICMP_HEADER: usize = 8;

/// The destination of an untagged IPv4 frame (host order), read ahead of [`forward`] so
/// that a whole batch can be looked up at once ([`lpm::Lpm::lookup_batch`]). `None` for
/// anything else; [`forward`] then looks up itself.
#[inline]
pub fn ipv4_destination(frame: &[u8]) -> Option<u32> {
    let b = frame.get(..ETH + IP4)?;
    if b[12..14] != ethertype::IPV4.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes([b[30], b[31], b[32], b[33]]))
}

/// Decides what happens to the frame of `*len` bytes at the start of `buf` (the whole
/// UMEM frame, so that replies may be longer than the request), received on `in_port`.
/// `route4` is the FIB answer for [`ipv4_destination`] if the caller looked it up in a
/// batch. Updates `*len` when the frame is rewritten to another length.
pub fn forward(
    s: &Snapshot,
    in_port: PortId,
    buf: &mut [u8],
    len: &mut usize,
    route4: Option<Option<NextHop>>,
    t: &mut Tally,
) -> Verdict {
    let Some(&port) = s.ports.get(usize::from(in_port)) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let n = (*len).min(buf.len());
    let mut cx = Cx {
        s,
        in_port,
        port,
        buf,
        len,
        n,
        t,
    };
    let Ok(eth) = Frame::new_checked(&cx.buf[..n]) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    if eth.vlan().is_some() {
        // Which VLAN a routed frame leaves on is not modelled yet: the kernel decides.
        return cx.punt(DropReason::NoHostPort);
    }
    match eth.ethertype() {
        ethertype::IPV4 => cx.ipv4(route4),
        ethertype::IPV6 => cx.ipv6(),
        ethertype::ARP => cx.arp(),
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// One frame being decided.
struct Cx<'a, 'b> {
    s: &'a Snapshot,
    in_port: PortId,
    port: PortInfo,
    buf: &'b mut [u8],
    len: &'b mut usize,
    /// The frame's length, within `buf`.
    n: usize,
    t: &'b mut Tally,
}

impl Cx<'_, '_> {
    fn frame(&mut self) -> &mut [u8] {
        &mut self.buf[..self.n]
    }

    fn set_macs(&mut self, src: Mac, dst: Mac) {
        let mut eth = Frame::new_unchecked(self.frame());
        eth.set_src(src);
        eth.set_dst(dst);
    }

    /// Sends the frame back out of the port it came in on, to its sender.
    fn reply(&mut self, new_len: usize) -> Verdict {
        let sender = Frame::new_unchecked(&self.buf[..]).src();
        self.n = new_len;
        *self.len = new_len;
        self.set_macs(self.port.mac, sender);
        Verdict::Tx(self.in_port)
    }

    /// Hands the frame unchanged (but for its MACs) to the node's stack.
    fn host_bound(&mut self) -> Option<Verdict> {
        let host = self.s.host?;
        if host.port == self.in_port {
            // From the kernel, and the kernel is where it would go: a loop.
            return None;
        }
        self.set_macs(host.src_mac, host.dst_mac);
        Some(Verdict::Tx(host.port))
    }

    /// Punts the frame to the kernel; `looped` is the reason to drop it if it came from
    /// the kernel in the first place.
    fn punt(&mut self, looped: DropReason) -> Verdict {
        match self.host_bound() {
            Some(v) => {
                self.t.punts += 1;
                v
            }
            None if self.s.host.is_none() => Verdict::Drop(DropReason::NoHostPort),
            None => Verdict::Drop(looped),
        }
    }

    fn deliver_to_host(&mut self) -> Verdict {
        match self.host_bound() {
            Some(v) => v,
            None if self.s.host.is_none() => Verdict::Drop(DropReason::NoHostPort),
            None => Verdict::Drop(DropReason::LinkScope),
        }
    }

    // --- ARP -------------------------------------------------------------------------

    fn arp(&mut self) -> Verdict {
        if self.port.role == PortRole::Uplink {
            // The uplink's ARP belongs to the kernel (the XDP program passes it there).
            return Verdict::Drop(DropReason::LinkScope);
        }
        let Ok(a) = arp::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (sender, target) = (a.sender_ip(), a.target_ip());
        let for_gateway = self.s.gateway.ipv4.map(|g| g.octets()) == Some(target);
        // Proxy for every address but the sender's own: probes (sender 0.0.0.0, RFC
        // 5227) and gratuitous ARP must go unanswered, or the pod sees a conflict.
        let proxied = sender != [0; 4] && sender != target;
        if a.operation() != arp::op::REQUEST || !(for_gateway || proxied) {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let mac = self.port.mac;
        arp::Packet::new_unchecked(&mut self.buf[ETH..self.n]).make_reply(mac, target);
        self.t.replies += 1;
        self.reply(self.n)
    }

    // --- IPv4 ------------------------------------------------------------------------

    fn ipv4(&mut self, route4: Option<Option<NextHop>>) -> Verdict {
        let Ok(ip) = ipv4::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if !ip.verify_checksum() {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (src, dst) = (ip.src(), ip.dst());
        let (ttl, protocol, total) = (ip.ttl(), ip.protocol(), usize::from(ip.total_len()));
        let fragment = ip.is_fragment();
        let header = ip.header_len();
        if dst[0] >= 224 {
            return Verdict::Drop(DropReason::LinkScope); // multicast, broadcast, class E
        }
        if self.s.gateway.ipv4.map(|g| g.octets()) == Some(dst) {
            return self.echo4(header, total);
        }
        let dst32 = u32::from_be_bytes(dst);
        let route = route4.unwrap_or_else(|| self.s.fib4.lookup(dst32));
        let Some(group) = route else {
            return self.icmp4_error(DropReason::NoRoute, icmp::v4::DEST_UNREACHABLE, 0, [0; 4]);
        };
        let l4 = ETH + header;
        let entry = self.s.next_hop(group, || {
            let (sport, dport) = if fragment {
                (0, 0)
            } else {
                ports_at(&self.buf[..self.n], l4, protocol)
            };
            flow_hash_v4(u32::from_be_bytes(src), dst32, protocol, sport, dport)
        });
        match entry {
            None => Verdict::Drop(DropReason::NoRoute),
            Some(NextHopEntry::Host) => self.deliver_to_host(),
            Some(NextHopEntry::Unreachable) => {
                self.icmp4_error(DropReason::NoRoute, icmp::v4::DEST_UNREACHABLE, 1, [0; 4])
            }
            Some(NextHopEntry::Unresolved { .. }) => {
                if ttl <= 1 {
                    return self.icmp4_error(
                        DropReason::TtlExpired,
                        icmp::v4::TIME_EXCEEDED,
                        0,
                        [0; 4],
                    );
                }
                self.punt(DropReason::NoNeighbour)
            }
            Some(&NextHopEntry::Resolved(adj)) => {
                if ttl <= 1 {
                    return self.icmp4_error(
                        DropReason::TtlExpired,
                        icmp::v4::TIME_EXCEEDED,
                        0,
                        [0; 4],
                    );
                }
                let mtu = self
                    .s
                    .ports
                    .get(usize::from(adj.port))
                    .map_or(0, |p| usize::from(p.mtu));
                if total > mtu {
                    let df = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]).dont_frag();
                    if df {
                        let m = (mtu as u16).to_be_bytes();
                        return self.icmp4_error(
                            DropReason::TooBig,
                            icmp::v4::DEST_UNREACHABLE,
                            4, // fragmentation needed (RFC 1191)
                            [0, 0, m[0], m[1]],
                        );
                    }
                    // The kernel fragments.
                    return self.punt(DropReason::TooBig);
                }
                ipv4::Packet::new_unchecked(&mut self.buf[ETH..self.n]).decrement_ttl();
                self.set_macs(adj.src_mac, adj.dst_mac);
                Verdict::Tx(adj.port)
            }
        }
    }

    /// Answers an echo request to the gateway address; other traffic to it is dropped.
    fn echo4(&mut self, header: usize, total: usize) -> Verdict {
        let l4 = ETH + header;
        let end = ETH + total;
        let is_echo = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]).protocol()
            == ip_proto::ICMP
            && icmp::Packet::new_checked(&self.buf[l4..end])
                .is_ok_and(|m| m.msg_type() == icmp::v4::ECHO_REQUEST && m.code() == 0);
        if !is_echo {
            return Verdict::Drop(DropReason::LinkScope);
        }
        {
            let mut m = icmp::Packet::new_unchecked(&mut self.buf[l4..end]);
            m.set_msg_type(icmp::v4::ECHO_REPLY);
            m.fill_checksum(0);
        }
        let b = &mut self.buf[ETH..self.n];
        let src: [u8; 4] = b[12..16].try_into().unwrap_or_default();
        b.copy_within(16..20, 12);
        b[16..20].copy_from_slice(&src);
        b[8] = OWN_TTL;
        ipv4::Packet::new_unchecked(&mut b[..header]).fill_checksum();
        self.t.replies += 1;
        self.reply(self.n)
    }

    /// Turns the frame into an ICMP error about it, sent back to its sender, if RFC 1812
    /// 4.3.2.7 allows one; counts `reason` either way.
    fn icmp4_error(&mut self, reason: DropReason, kind: u8, code: u8, rest: [u8; 4]) -> Verdict {
        let Some(source) = self.own_ipv4() else {
            return Verdict::Drop(reason);
        };
        let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, header) = (ip.src(), ip.header_len());
        let total = usize::from(ip.total_len());
        let about_an_error = ip.protocol() == ip_proto::ICMP
            && !ip.is_fragment()
            && self.buf.get(ETH + header).is_some_and(|&t| {
                !matches!(t, icmp::v4::ECHO_REQUEST | icmp::v4::ECHO_REPLY | 13..=18)
            });
        let bad_source = src[0] == 0 || src[0] == 127 || src[0] >= 224;
        if ip.frag_offset() != 0 || about_an_error || bad_source {
            return Verdict::Drop(reason);
        }
        let quote = total.min(ICMP4_ERROR_MAX - IP4 - ICMP_HEADER);
        let new_len = ETH + IP4 + ICMP_HEADER + quote;
        if new_len > self.buf.len() {
            return Verdict::Drop(reason);
        }
        self.buf
            .copy_within(ETH..ETH + quote, ETH + IP4 + ICMP_HEADER);
        let ip_len = ((IP4 + ICMP_HEADER + quote) as u16).to_be_bytes();
        let h = &mut self.buf[ETH..ETH + IP4];
        h[..12].copy_from_slice(&[
            0x45,
            0xc0,
            ip_len[0],
            ip_len[1],
            0,
            0,
            0,
            0,
            OWN_TTL,
            ip_proto::ICMP,
            0,
            0,
        ]);
        h[12..16].copy_from_slice(&source);
        h[16..20].copy_from_slice(&src);
        ipv4::Packet::new_unchecked(&mut self.buf[ETH..ETH + IP4]).fill_checksum();
        self.finish_icmp_error(ETH + IP4, new_len, (kind, code, rest), 0, reason)
    }

    /// Writes the ICMP/ICMPv6 header of an error at `at` (its checksum covering up to
    /// `new_len`, from pseudo-header sum `pseudo`), counts it and sends it back.
    fn finish_icmp_error(
        &mut self,
        at: usize,
        new_len: usize,
        (kind, code, rest): (u8, u8, [u8; 4]),
        pseudo: u32,
        reason: DropReason,
    ) -> Verdict {
        let mut m = icmp::Packet::new_unchecked(&mut self.buf[at..new_len]);
        m.set_msg_type(kind);
        m.set_code(code);
        m.set_rest(rest);
        m.fill_checksum(pseudo);
        self.t.drop(reason);
        self.t.icmp_errors += 1;
        self.reply(new_len)
    }

    /// The address ICMP errors come from: the gateway towards pods, else the node's.
    fn own_ipv4(&self) -> Option<[u8; 4]> {
        let gateway = self.s.gateway.ipv4.map(IpAddr::V4);
        match self.own_address(gateway, IpAddr::is_ipv4)? {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        }
    }

    fn own_ipv6(&self) -> Option<[u8; 16]> {
        let gateway = self.s.gateway.ipv6.map(IpAddr::V6);
        match self.own_address(gateway, IpAddr::is_ipv6)? {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        }
    }

    fn own_address(&self, gateway: Option<IpAddr>, family: fn(&IpAddr) -> bool) -> Option<IpAddr> {
        gateway
            .filter(|_| self.port.role == PortRole::Pod)
            .or_else(|| self.s.node_addrs.iter().copied().find(family))
    }

    // --- IPv6 ------------------------------------------------------------------------

    fn ipv6(&mut self) -> Verdict {
        let Ok(ip) = ipv6::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (src, dst) = (ip.src(), ip.dst());
        let hop_limit = ip.hop_limit();
        let Ok(upper) = ip.upper_layer() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let gateway = self.s.gateway.ipv6.map(|g| g.octets());
        let link_scoped = dst[0] == 0xff || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80);
        if link_scoped || gateway == Some(dst) {
            return self.local6(upper, gateway == Some(dst));
        }
        let route = self.s.fib6.lookup(u128::from_be_bytes(dst));
        let Some(group) = route else {
            return self.icmp6_error(DropReason::NoRoute, icmp::v6::DEST_UNREACHABLE, 0, [0; 4]);
        };
        let l4 = ETH + upper.offset;
        let entry = self.s.next_hop(group, || {
            let (sport, dport) = if upper.later_fragment {
                (0, 0)
            } else {
                ports_at(&self.buf[..self.n], l4, upper.protocol)
            };
            flow_hash_v6(
                u128::from_be_bytes(src),
                u128::from_be_bytes(dst),
                upper.protocol,
                sport,
                dport,
            )
        });
        let expired = |cx: &mut Self| {
            cx.icmp6_error(DropReason::TtlExpired, icmp::v6::TIME_EXCEEDED, 0, [0; 4])
        };
        match entry {
            None => Verdict::Drop(DropReason::NoRoute),
            Some(NextHopEntry::Host) => self.deliver_to_host(),
            Some(NextHopEntry::Unreachable) => {
                self.icmp6_error(DropReason::NoRoute, icmp::v6::DEST_UNREACHABLE, 3, [0; 4])
            }
            Some(NextHopEntry::Unresolved { .. }) => {
                if hop_limit <= 1 {
                    return expired(self);
                }
                self.punt(DropReason::NoNeighbour)
            }
            Some(&NextHopEntry::Resolved(adj)) => {
                if hop_limit <= 1 {
                    return expired(self);
                }
                let mtu = self
                    .s
                    .ports
                    .get(usize::from(adj.port))
                    .map_or(0, |p| u32::from(p.mtu));
                if (self.n - ETH) as u32 > mtu {
                    return self.icmp6_error(
                        DropReason::TooBig,
                        icmp::v6::PACKET_TOO_BIG,
                        0,
                        mtu.to_be_bytes(),
                    );
                }
                ipv6::Packet::new_unchecked(&mut self.buf[ETH..self.n]).decrement_hop_limit();
                self.set_macs(adj.src_mac, adj.dst_mac);
                Verdict::Tx(adj.port)
            }
        }
    }

    /// Link-scoped IPv6 and traffic to the gateway: neighbour solicitations and echo
    /// requests are answered, the rest dropped.
    fn local6(&mut self, upper: ipv6::UpperLayer, to_gateway: bool) -> Verdict {
        if upper.protocol != ip_proto::ICMPV6 || upper.fragment {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let l4 = ETH + upper.offset;
        let end =
            ETH + IP6 + usize::from(ipv6::Packet::new_unchecked(&self.buf[ETH..]).payload_len());
        let Ok(m) = icmp::Packet::new_checked(&self.buf[l4..end]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match m.msg_type() {
            icmp::v6::NEIGHBOR_SOLICIT if upper.offset == IP6 => self.solicitation(),
            icmp::v6::ECHO_REQUEST if to_gateway => self.echo6(l4, end),
            _ => Verdict::Drop(DropReason::LinkScope),
        }
    }

    /// Answers a neighbour solicitation for the gateway (or, from pods and the node's
    /// stack on the host port, for any other address: the kernel's routes out of the
    /// host port are on-link) with an advertisement of this port's MAC (RFC 4861
    /// 7.2.4), as ARP is answered.
    fn solicitation(&mut self) -> Verdict {
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, hop_limit) = (ip.src(), ip.hop_limit());
        let Some(target) = icmp::Packet::new_unchecked(&self.buf[ETH + IP6..self.n]).nd_target()
        else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let unspecified = src == [0; 16];
        let for_gateway = self.s.gateway.ipv6.map(|g| g.octets()) == Some(target);
        let link_local_target = target[0] == 0xfe && target[1] & 0xc0 == 0x80;
        let proxied = self.port.role != PortRole::Uplink
            && !unspecified
            && target != src
            && !link_local_target
            && target[0] != 0xff;
        if hop_limit != 255 || self.port.role == PortRole::Uplink || !(for_gateway || proxied) {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let new_len = ETH + IP6 + 32;
        if new_len > self.buf.len() {
            return Verdict::Drop(DropReason::Malformed);
        }
        // A solicitation from the unspecified address (duplicate address detection) is
        // answered to all nodes, unsolicited (RFC 4861 7.2.4).
        let dst = if unspecified {
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        } else {
            src
        };
        let mac = self.port.mac;
        let flags = 0x80 | 0x20 | if unspecified { 0 } else { 0x40 }; // router, override, solicited
        let b = &mut self.buf[ETH..new_len];
        b[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, ip_proto::ICMPV6, 255]);
        b[8..24].copy_from_slice(&target);
        b[24..40].copy_from_slice(&dst);
        let m = &mut b[IP6..];
        m[..8].copy_from_slice(&[icmp::v6::NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
        m[8..24].copy_from_slice(&target);
        m[24..26].copy_from_slice(&[2, 1]); // target link-layer address, 8 bytes
        m[26..32].copy_from_slice(&mac);
        icmp::Packet::new_unchecked(m).fill_checksum(checksum::pseudo_ipv6(
            &target,
            &dst,
            ip_proto::ICMPV6,
            32,
        ));
        self.t.replies += 1;
        let v = self.reply(new_len);
        if unspecified {
            self.set_macs(mac, [0x33, 0x33, 0, 0, 0, 1]);
        }
        v
    }

    fn echo6(&mut self, l4: usize, end: usize) -> Verdict {
        let b = &mut self.buf[ETH..end];
        let src: [u8; 16] = b[8..24].try_into().unwrap_or_default();
        b.copy_within(24..40, 8);
        b[24..40].copy_from_slice(&src);
        b[7] = OWN_TTL;
        let (s, d): ([u8; 16], [u8; 16]) = (
            b[8..24].try_into().unwrap_or_default(),
            b[24..40].try_into().unwrap_or_default(),
        );
        let len = (end - l4) as u32;
        let mut m = icmp::Packet::new_unchecked(&mut self.buf[l4..end]);
        m.set_msg_type(icmp::v6::ECHO_REPLY);
        m.fill_checksum(checksum::pseudo_ipv6(&s, &d, ip_proto::ICMPV6, len));
        self.t.replies += 1;
        self.reply(self.n)
    }

    /// As [`Cx::icmp4_error`], for IPv6 (RFC 4443 2.4).
    fn icmp6_error(&mut self, reason: DropReason, kind: u8, code: u8, rest: [u8; 4]) -> Verdict {
        let Some(source) = self.own_ipv6() else {
            return Verdict::Drop(reason);
        };
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst) = (ip.src(), ip.dst());
        let total = IP6 + usize::from(ip.payload_len());
        let about_an_error = ip.upper_layer().is_ok_and(|u| {
            u.protocol == ip_proto::ICMPV6 && self.buf.get(ETH + u.offset).is_some_and(|&t| t < 128)
        });
        let bad_source = src == [0; 16] || src[0] == 0xff;
        let multicast = dst[0] == 0xff && kind != icmp::v6::PACKET_TOO_BIG;
        if about_an_error || bad_source || multicast {
            return Verdict::Drop(reason);
        }
        let quote = total.min(ICMP6_ERROR_MAX - IP6 - ICMP_HEADER);
        let new_len = ETH + IP6 + ICMP_HEADER + quote;
        if new_len > self.buf.len() {
            return Verdict::Drop(reason);
        }
        self.buf
            .copy_within(ETH..ETH + quote, ETH + IP6 + ICMP_HEADER);
        let payload = (ICMP_HEADER + quote) as u16;
        let b = &mut self.buf[ETH..ETH + IP6];
        let p = payload.to_be_bytes();
        b[..8].copy_from_slice(&[0x60, 0, 0, 0, p[0], p[1], ip_proto::ICMPV6, OWN_TTL]);
        b[8..24].copy_from_slice(&source);
        b[24..40].copy_from_slice(&src);
        let pseudo = checksum::pseudo_ipv6(&source, &src, ip_proto::ICMPV6, u32::from(payload));
        self.finish_icmp_error(ETH + IP6, new_len, (kind, code, rest), pseudo, reason)
    }
}

/// The source and destination ports of a TCP or UDP header at `at`, else zeros.
#[inline]
fn ports_at(frame: &[u8], at: usize, protocol: u8) -> (u16, u16) {
    if protocol != ip_proto::TCP && protocol != ip_proto::UDP {
        return (0, 0);
    }
    match frame.get(at..at + 4) {
        Some(p) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        None => (0, 0),
    }
}
