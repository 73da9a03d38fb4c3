//! The packets the fastpath answers itself, built in place in the received frame's
//! buffer from the wire representations ([`crate::wire`]'s `Repr`s): ARP replies,
//! neighbour advertisements, echo replies from the gateway, and ICMP/ICMPv6 errors
//! (RFC 1812 4.3.2, RFC 4443 2.4), whose rate each worker limits.

use super::{link_local6, martian_source4, martian_source6, Cx, Verdict, ETH};
use crate::counters::DropReason;
use crate::snapshot::PortRole;
use crate::wire::ethernet::Frame;
use crate::wire::icmp::v6::na_flags;
use crate::wire::{arp, checksum, icmp, ip_proto, ipv4, ipv6};
use std::net::IpAddr;

/// The largest IPv4 datagram an ICMP error may make (RFC 1812 4.3.2.3).
const ICMP4_ERROR_MAX: usize = 576;
/// The largest IPv6 packet an ICMPv6 error may make (RFC 4443 2.4(c)).
const ICMP6_ERROR_MAX: usize = 1280;
/// TTL / hop limit of the packets the fastpath originates.
pub(super) const OWN_TTL: u8 = 64;
/// Internetwork control precedence, as Linux sends its ICMP errors.
const ICMP_TOS: u8 = 0xc0;
const IP4: usize = ipv4::Repr::HEADER_LEN;
const IP6: usize = ipv6::Repr::HEADER_LEN;
const ICMP_HEADER: usize = 8;
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

impl Cx<'_, '_> {
    /// Sends the frame back out of the port it came in on, to its sender.
    pub(super) fn reply(&mut self, new_len: usize) -> Verdict {
        let sender = Frame::new_unchecked(&self.buf[..]).src();
        self.n = new_len;
        *self.len = new_len;
        self.set_macs(self.port.mac, sender);
        Verdict::Tx(self.in_port)
    }

    // --- ARP -------------------------------------------------------------------------

    pub(super) fn arp(&mut self) -> Verdict {
        if self.port.role == PortRole::Uplink {
            // The uplink's ARP belongs to the kernel (the XDP program passes it there).
            return Verdict::Drop(DropReason::LinkScope);
        }
        let Ok(p) = arp::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let request = arp::Repr::parse(&p);
        let (sender, target) = (request.sender_ip, request.target_ip);
        // A pod claims only its own MAC and addresses (0.0.0.0 in probes, RFC 5227).
        let spoofed = self.pod.is_some_and(|pod| pod.mac != request.sender_mac)
            || (sender != [0; 4] && !self.source_is_the_pods(IpAddr::from(sender)));
        if spoofed {
            return Verdict::Drop(DropReason::Spoofed);
        }
        let for_gateway = self.s.gateway.ipv4.map(|g| g.octets()) == Some(target);
        // Proxy for every address but the sender's own: probes (sender 0.0.0.0, RFC
        // 5227) and gratuitous ARP must go unanswered, or the pod sees a conflict.
        let proxied = sender != [0; 4] && sender != target;
        if request.operation != arp::op::REQUEST || !(for_gateway || proxied) {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let mac = self.port.mac;
        request
            .reply(mac, target)
            .emit(&mut arp::Packet::new_unchecked(&mut self.buf[ETH..self.n]));
        self.t.replies += 1;
        self.reply(self.n)
    }

    // --- Echo ------------------------------------------------------------------------

    /// Answers an echo request to the gateway address; other traffic to it is dropped.
    pub(super) fn echo4(&mut self, header: usize, total: usize) -> Verdict {
        let (l4, end) = (ETH + header, ETH + total);
        let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst) = (ip.src(), ip.dst());
        let request = (ip.protocol() == ip_proto::ICMP)
            .then(|| icmp::Packet::new_checked(&self.buf[l4..end]).ok())
            .flatten()
            .map(|m| icmp::v4::Repr::parse(&m));
        let Some(icmp::v4::Repr::EchoRequest { ident, seq }) = request else {
            return Verdict::Drop(DropReason::LinkScope);
        };
        icmp::v4::Repr::EchoReply { ident, seq }
            .emit(&mut icmp::Packet::new_unchecked(&mut self.buf[l4..end]));
        // The reply leaves without the request's options.
        let payload = end - l4;
        self.buf.copy_within(l4..end, ETH + IP4);
        ipv4::Repr {
            src: dst,
            dst: src,
            protocol: ip_proto::ICMP,
            ttl: OWN_TTL,
            tos: 0,
            payload_len: payload as u16,
        }
        .emit(&mut ipv4::Packet::new_unchecked(
            &mut self.buf[ETH..ETH + IP4],
        ));
        self.t.replies += 1;
        self.reply(ETH + IP4 + payload)
    }

    fn echo6(&mut self, l4: usize, end: usize, ident: u16, seq: u16) -> Verdict {
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst) = (ip.src(), ip.dst());
        // The reply leaves without the request's extension headers.
        let payload = end - l4;
        self.buf.copy_within(l4..end, ETH + IP6);
        let end = ETH + IP6 + payload;
        self.emit_ipv6(dst, src, payload);
        let pseudo = checksum::pseudo_ipv6(&dst, &src, ip_proto::ICMPV6, payload as u32);
        icmp::v6::Repr::EchoReply { ident, seq }.emit(
            &mut icmp::Packet::new_unchecked(&mut self.buf[ETH + IP6..end]),
            pseudo,
        );
        self.t.replies += 1;
        self.reply(end)
    }

    fn emit_ipv6(&mut self, src: [u8; 16], dst: [u8; 16], payload: usize) {
        ipv6::Repr {
            src,
            dst,
            next_header: ip_proto::ICMPV6,
            hop_limit: OWN_TTL,
            payload_len: payload as u16,
        }
        .emit(&mut ipv6::Packet::new_unchecked(
            &mut self.buf[ETH..ETH + IP6],
        ));
    }

    // --- Neighbour discovery -----------------------------------------------------------

    /// Link-scoped IPv6 and traffic to the gateway: neighbour solicitations and echo
    /// requests are answered, the rest dropped.
    pub(super) fn local6(&mut self, upper: ipv6::UpperLayer, to_gateway: bool) -> Verdict {
        if upper.protocol != ip_proto::ICMPV6 || upper.fragment {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let l4 = ETH + upper.offset;
        let end =
            ETH + IP6 + usize::from(ipv6::Packet::new_unchecked(&self.buf[ETH..]).payload_len());
        let Ok(m) = icmp::Packet::new_checked(&self.buf[l4..end]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match icmp::v6::Repr::parse(&m) {
            Ok(icmp::v6::Repr::NeighborSolicit { target }) if upper.offset == IP6 => {
                self.solicitation(target)
            }
            Ok(icmp::v6::Repr::EchoRequest { ident, seq }) if to_gateway => {
                self.echo6(l4, end, ident, seq)
            }
            Ok(_) => Verdict::Drop(DropReason::LinkScope),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    /// Answers a neighbour solicitation for the gateway (or, from pods and the node's
    /// stack on the host port, for any other address: the kernel's routes out of the
    /// host port are on-link) with an advertisement of this port's MAC (RFC 4861
    /// 7.2.4), as ARP is answered.
    fn solicitation(&mut self, target: [u8; 16]) -> Verdict {
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, hop_limit) = (ip.src(), ip.hop_limit());
        let unspecified = src == [0; 16];
        let for_gateway = self.s.gateway.ipv6.map(|g| g.octets()) == Some(target);
        let proxied = self.port.role != PortRole::Uplink
            && !unspecified
            && target != src
            && !link_local6(target)
            && target[0] != 0xff;
        if hop_limit != 255 || self.port.role == PortRole::Uplink || !(for_gateway || proxied) {
            return Verdict::Drop(DropReason::LinkScope);
        }
        let mac = self.port.mac;
        let advert = icmp::v6::Repr::NeighborAdvert {
            // A solicitation from the unspecified address (duplicate address detection)
            // is answered to all nodes, unsolicited (RFC 4861 7.2.4).
            flags: na_flags::ROUTER
                | na_flags::OVERRIDE
                | if unspecified { 0 } else { na_flags::SOLICITED },
            target,
            lladdr: Some(mac),
        };
        let body = advert.header_len();
        let new_len = ETH + IP6 + body;
        if new_len > self.buf.len() {
            return Verdict::Drop(DropReason::Malformed);
        }
        let dst = if unspecified { ALL_NODES } else { src };
        self.emit_ipv6(target, dst, body);
        // Neighbour discovery is sent with hop limit 255 (RFC 4861 7.1.2).
        self.buf[ETH + 7] = 255;
        let pseudo = checksum::pseudo_ipv6(&target, &dst, ip_proto::ICMPV6, body as u32);
        advert.emit(
            &mut icmp::Packet::new_unchecked(&mut self.buf[ETH + IP6..new_len]),
            pseudo,
        );
        self.t.replies += 1;
        let v = self.reply(new_len);
        if unspecified {
            self.set_macs(mac, ALL_NODES_MAC);
        }
        v
    }

    // --- ICMP errors -----------------------------------------------------------------

    /// Whether the worker may send one more ICMP error now; counts it if not.
    fn error_allowed(&mut self) -> bool {
        let ok = self.local.icmp_errors.take(self.local.now);
        if !ok {
            self.t.icmp_suppressed += 1;
        }
        ok
    }

    /// Turns the frame into an ICMP error about it, sent back to its sender, if RFC 1812
    /// 4.3.2.7 allows one and the rate limit has room; counts `reason` either way.
    pub(super) fn icmp4_error(&mut self, reason: DropReason, message: icmp::v4::Repr) -> Verdict {
        self.icmp4_error_from(reason, message, None)
    }

    /// As [`Cx::icmp4_error`], from `source` rather than this router's address (a
    /// service's VIP refusing a port).
    pub(super) fn icmp4_error_from(
        &mut self,
        reason: DropReason,
        message: icmp::v4::Repr,
        source: Option<[u8; 4]>,
    ) -> Verdict {
        let source = match source {
            Some(a) => std::net::Ipv4Addr::from(a),
            None => match self.own_address(IpAddr::is_ipv4) {
                Some(IpAddr::V4(a)) => a,
                _ => return Verdict::Drop(reason),
            },
        };
        let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, header) = (ip.src(), ip.header_len());
        let total = usize::from(ip.total_len());
        // The first fragment carries the ICMP header; later ones are refused below.
        let about_an_error = ip.protocol() == ip_proto::ICMP
            && ip.frag_offset() == 0
            && self
                .buf
                .get(ETH + header)
                .is_some_and(|&t| icmp::v4::is_error(t));
        if ip.frag_offset() != 0 || about_an_error || martian_source4(src) {
            return Verdict::Drop(reason);
        }
        if !self.error_allowed() {
            return Verdict::Drop(reason);
        }
        let quote = total.min(ICMP4_ERROR_MAX - IP4 - ICMP_HEADER);
        let at = ETH + IP4;
        let new_len = at + ICMP_HEADER + quote;
        if new_len > self.buf.len() {
            return Verdict::Drop(reason);
        }
        self.buf.copy_within(ETH..ETH + quote, at + ICMP_HEADER);
        ipv4::Repr {
            src: source.octets(),
            dst: src,
            protocol: ip_proto::ICMP,
            ttl: OWN_TTL,
            tos: ICMP_TOS,
            payload_len: (ICMP_HEADER + quote) as u16,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut self.buf[ETH..at]));
        message.emit(&mut icmp::Packet::new_unchecked(&mut self.buf[at..new_len]));
        if self.translated {
            // About a packet the service stage translated: translated back like any
            // error about the flow (RFC 5508 4.2), so the sender finds its connection
            // in the quote (path MTU discovery through a service).
            self.n = new_len;
            let _ = self.icmp_error4(at, new_len);
        }
        self.error_sent(reason, new_len)
    }

    /// As [`Cx::icmp4_error`], for IPv6 (RFC 4443 2.4).
    pub(super) fn icmp6_error(&mut self, reason: DropReason, message: icmp::v6::Repr) -> Verdict {
        self.icmp6_error_from(reason, message, None)
    }

    /// As [`Cx::icmp6_error`], from `source`.
    pub(super) fn icmp6_error_from(
        &mut self,
        reason: DropReason,
        message: icmp::v6::Repr,
        source: Option<[u8; 16]>,
    ) -> Verdict {
        let source = match source {
            Some(a) => a,
            None => match self.own_address(IpAddr::is_ipv6) {
                Some(IpAddr::V6(a)) => a.octets(),
                _ => return Verdict::Drop(reason),
            },
        };
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst) = (ip.src(), ip.dst());
        let total = IP6 + usize::from(ip.payload_len());
        let about_an_error = ip.upper_layer().is_ok_and(|u| {
            u.protocol == ip_proto::ICMPV6
                && self
                    .buf
                    .get(ETH + u.offset)
                    .is_some_and(|&t| icmp::v6::is_error(t))
        });
        let too_big = matches!(message, icmp::v6::Repr::PacketTooBig { .. });
        let multicast = dst[0] == 0xff && !too_big;
        if about_an_error || martian_source6(src) || multicast {
            return Verdict::Drop(reason);
        }
        if !self.error_allowed() {
            return Verdict::Drop(reason);
        }
        let quote = total.min(ICMP6_ERROR_MAX - IP6 - ICMP_HEADER);
        let at = ETH + IP6;
        let new_len = at + ICMP_HEADER + quote;
        if new_len > self.buf.len() {
            return Verdict::Drop(reason);
        }
        self.buf.copy_within(ETH..ETH + quote, at + ICMP_HEADER);
        let payload = ICMP_HEADER + quote;
        self.emit_ipv6(source, src, payload);
        let pseudo = checksum::pseudo_ipv6(&source, &src, ip_proto::ICMPV6, payload as u32);
        message.emit(
            &mut icmp::Packet::new_unchecked(&mut self.buf[at..new_len]),
            pseudo,
        );
        if self.translated {
            // As for IPv4: the quote as the sender sent it.
            self.n = new_len;
            let _ = self.icmp_error6(at, new_len);
        }
        self.error_sent(reason, new_len)
    }

    fn error_sent(&mut self, reason: DropReason, new_len: usize) -> Verdict {
        self.t.drop(reason);
        self.t.icmp_errors += 1;
        self.reply(new_len)
    }

    /// The address ICMP errors come from: the gateway towards pods, else the node's.
    fn own_address(&self, family: fn(&IpAddr) -> bool) -> Option<IpAddr> {
        self.address_towards(Some(self.port.role), family)
    }

    /// This router's address on a port of `role`: the pods' gateway on pod ports, the
    /// node's address elsewhere.
    pub(super) fn address_towards(
        &self,
        role: Option<PortRole>,
        family: fn(&IpAddr) -> bool,
    ) -> Option<IpAddr> {
        let gateway = [
            self.s.gateway.ipv4.map(IpAddr::V4),
            self.s.gateway.ipv6.map(IpAddr::V6),
        ];
        gateway
            .into_iter()
            .flatten()
            .find(family)
            .filter(|_| role == Some(PortRole::Pod))
            .or_else(|| self.s.node_addrs.iter().copied().find(family))
    }
}
