//! The forwarding decision for one frame, against one snapshot.
//!
//! [`forward`] takes a received frame in its UMEM buffer and either rewrites it in place
//! for transmission on some port ([`Verdict::Tx`]) or drops it with a named reason. It
//! never allocates, locks or panics: every header is read through a checked view, and
//! what cannot be read is a [`DropReason::Malformed`].
//!
//! What it does, in order (VPP's ethernet-input / ip4-input / ip4-lookup / ip4-rewrite
//! graph, folded into one function because every node of it runs for every frame here):
//! - The link layer: a unicast frame for another MAC is not ours to route; a pod port
//!   takes only its pod's MAC and addresses as sources (BCP 38, as Calico and Cilium
//!   enforce on workload interfaces); 802.1Q-tagged frames are the kernel's (the
//!   steering program passes them) and dropped here if one slips through.
//! - ARP requests and IPv6 neighbour solicitations from pods (and the host port) are
//!   answered with the port's MAC: the pods' gateway is the fastpath. Echo requests to
//!   the gateway address are answered too ([`reply`]).
//! - The router's duties (RFC 1812 5.3, RFC 8200): martian sources and destinations
//!   are not forwarded, nor unicast packets that came in link-layer broadcasts; IPv4
//!   Record Route and Timestamp options are processed ([`options`]).
//! - IPv4/IPv6: the FIB names a next-hop group, a flow hash picks its member (every
//!   packet of a flow takes the same one), the TTL/hop limit is decremented (RFC 1624
//!   checksum update) and the MACs rewritten.
//! - Expired TTL, no route and too big answer an ICMP error where RFC 1812 / RFC 4443
//!   allow one, built in place in the same buffer and limited per worker
//!   ([`ratelimit`]).
//! - What the fastpath does not handle (next hops whose MAC is not known yet, packets
//!   to fragment) is punted to the kernel through the host port; traffic for the node's
//!   own addresses goes there too.

mod options;
pub mod ratelimit;
mod reply;
mod service;

use crate::counters::{DropReason, Tally};
use crate::ecmp::{flow_hash_v4, flow_hash_v6};
use crate::snapshot::{NextHopEntry, PortId, PortInfo, PortRole, Snapshot};
use crate::wire::ethernet::{ethertype, Frame, Mac};
use crate::wire::transport::{Protocol, Transport};
use crate::wire::{icmp, ipv4, ipv6};
use lpm::NextHop;
use ratelimit::{RateLimit, TokenBucket};
use std::net::IpAddr;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the frame, rewritten in place (its length may have changed), on a port.
    Tx(PortId),
    /// Drop it, counting the reason.
    Drop(DropReason),
}

const ETH: usize = 14;
const IP4: usize = 20;
const MS_PER_DAY: u64 = 86_400_000;

/// What a worker's pipeline keeps from one frame to the next: its ICMP error budget
/// and the clock of the batch. One per worker, never shared.
#[derive(Debug, Clone)]
pub struct Local {
    icmp_errors: TokenBucket,
    /// Monotonic nanoseconds at the start of the current batch (the worker sets it).
    pub now: u64,
    /// Milliseconds since the Unix epoch when `now` was 0.
    epoch_ms: u64,
    /// The connection tracking clock: seconds of the system's monotonic clock (the
    /// same for every worker and the control side, [`crate::clock`]), never 0.
    pub seconds: u32,
}

impl Local {
    /// A worker's state, its ICMP errors limited to `limit`, its clock at 0 when the
    /// wall clock read `unix_ms`.
    pub fn new(limit: RateLimit, unix_ms: u64) -> Local {
        Local {
            icmp_errors: TokenBucket::new(limit, 0),
            now: 0,
            epoch_ms: unix_ms,
            seconds: 1,
        }
    }

    /// Milliseconds since midnight UT, as IPv4 timestamps carry them (RFC 791).
    fn ms_since_midnight(&self) -> u32 {
        ((self.epoch_ms + self.now / 1_000_000) % MS_PER_DAY) as u32
    }
}

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

/// The TCP or UDP flow of an untagged IPv4 frame that carries its ports (not a later
/// fragment), at a glance: for the batch's conntrack prefetch, which a wrong guess only
/// wastes. The pipeline parses the frame properly.
pub fn ipv4_flow(frame: &[u8]) -> Option<nat::conntrack::flow::Tuple<std::net::Ipv4Addr>> {
    let b = frame.get(..ETH + IP4)?;
    let protocol = b[ETH + 9];
    let later_fragment = u16::from_be_bytes([b[ETH + 6], b[ETH + 7]]) & 0x1fff != 0;
    if b[12..14] != ethertype::IPV4.to_be_bytes()
        || later_fragment
        || !matches!(
            protocol,
            crate::wire::ip_proto::TCP | crate::wire::ip_proto::UDP
        )
    {
        return None;
    }
    let l4 = ETH + usize::from(b[ETH] & 0x0f) * 4;
    let ports = frame.get(l4..l4 + 4)?;
    Some(nat::conntrack::flow::Tuple {
        src: std::net::Ipv4Addr::new(b[26], b[27], b[28], b[29]),
        dst: std::net::Ipv4Addr::new(b[30], b[31], b[32], b[33]),
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        protocol,
    })
}

/// Decides what happens to the frame of `*len` bytes at the start of `buf` (the whole
/// UMEM frame, so that replies may be longer than the request), received on `in_port`.
/// `route4` is the FIB answer for [`ipv4_destination`] if the caller looked it up in a
/// batch. Updates `*len` when the frame is rewritten to another length.
pub fn forward(
    s: &Snapshot,
    local: &mut Local,
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
    let Ok(eth) = Frame::new_checked(&buf[..n]) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    if eth.vlan().is_some() || eth.ethertype() == ethertype::QINQ {
        // Which VLAN a routed frame leaves on is not modelled: the steering program
        // passes tagged frames to the kernel, and none is punted with its tag.
        return Verdict::Drop(DropReason::Tagged);
    }
    let dst_mac = eth.dst();
    let link_group = dst_mac[0] & 1 != 0;
    if !link_group && dst_mac != port.mac {
        return Verdict::Drop(DropReason::OtherHost);
    }
    let pod = if port.role == PortRole::Pod {
        match s.pod_on(in_port) {
            Some(pod) if pod.mac == eth.src() => Some(pod),
            _ => return Verdict::Drop(DropReason::Spoofed),
        }
    } else {
        None
    };
    let ethertype = eth.ethertype();
    let mut cx = Cx {
        s,
        local,
        in_port,
        port,
        pod,
        link_group,
        buf,
        len,
        n,
        t,
        translated: false,
    };
    match ethertype {
        ethertype::IPV4 => cx.ipv4(route4),
        ethertype::IPV6 => cx.ipv6(),
        ethertype::ARP => cx.arp(),
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// A source address no router forwards (RFC 1812 5.3.7): this network (0/8), loopback,
/// multicast, class E and the limited broadcast.
fn martian_source4(a: [u8; 4]) -> bool {
    a[0] == 0 || a[0] == 127 || a[0] >= 224
}

/// A destination no router forwards (RFC 1812 5.3.7): this network and loopback.
/// Multicast and broadcast destinations are link-scoped here and never reach the FIB.
fn martian_destination4(a: [u8; 4]) -> bool {
    a[0] == 0 || a[0] == 127
}

const UNSPECIFIED6: [u8; 16] = [0; 16];
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn link_local6(a: [u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// A source address no router forwards (RFC 4291 2.5.2, 2.5.3, 2.5.6, 2.7): the
/// unspecified address, loopback, multicast, and link-local (never beyond its link).
fn martian_source6(a: [u8; 16]) -> bool {
    a == UNSPECIFIED6 || a == LOOPBACK6 || a[0] == 0xff || link_local6(a)
}

fn martian_destination6(a: [u8; 16]) -> bool {
    a == UNSPECIFIED6 || a == LOOPBACK6
}

/// One frame being decided.
struct Cx<'a, 'b> {
    s: &'a Snapshot,
    local: &'b mut Local,
    in_port: PortId,
    port: PortInfo,
    /// The pod behind the port the frame came in on, if it is a pod port (its source MAC
    /// already checked).
    pod: Option<&'a crate::snapshot::LocalPod>,
    /// The frame came to a link-layer broadcast or multicast address.
    link_group: bool,
    buf: &'b mut [u8],
    len: &'b mut usize,
    /// The frame's length, within `buf`.
    n: usize,
    t: &'b mut Tally,
    /// The service stage rewrote the packet: an ICMP error this router sends about it
    /// must quote it as its sender sent it.
    translated: bool,
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

    /// Whether a pod port's frame has a source address of its pod. `true` on other
    /// ports.
    fn source_is_the_pods(&self, src: IpAddr) -> bool {
        self.pod.is_none_or(|pod| pod.addrs.contains(&src))
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

    /// The MTU of a port (0 if it does not exist, which [`Snapshot::new`] rules out).
    fn mtu(&self, port: PortId) -> usize {
        self.s
            .ports
            .get(usize::from(port))
            .map_or(0, |p| usize::from(p.mtu))
    }

    // --- IPv4 ------------------------------------------------------------------------

    fn ipv4(&mut self, route4: Option<Option<NextHop>>) -> Verdict {
        let Ok(ip) = ipv4::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Ok(repr) = ipv4::Repr::parse(&ip) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (src, dst) = (repr.src, repr.dst);
        let fragment = ip.is_fragment();
        let header = ip.header_len();
        let (total_len, dont_frag) = (usize::from(ip.total_len()), ip.dont_frag());
        if !self.source_is_the_pods(IpAddr::from(src)) {
            return Verdict::Drop(DropReason::Spoofed);
        }
        if dst[0] >= 224 {
            return Verdict::Drop(DropReason::LinkScope); // multicast, broadcast, class E
        }
        if self.link_group {
            return Verdict::Drop(DropReason::LinkBroadcast);
        }
        if martian_source4(src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if martian_destination4(dst) {
            return Verdict::Drop(DropReason::MartianDestination);
        }
        if self.s.gateway.ipv4.map(|g| g.octets()) == Some(dst) {
            if fragment {
                // The gateway answers whole echo requests only.
                return Verdict::Drop(DropReason::Fragment);
            }
            return self.echo4(header, total_len);
        }
        let (mut dst, mut route4) = (dst, route4);
        let mut src = src;
        if self.s.services.active() {
            match self.service4(header, fragment) {
                service::Step::Pass => {}
                service::Step::Translated => {
                    let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
                    (src, dst) = (ip.src(), ip.dst());
                    route4 = None;
                    self.translated = true;
                }
                service::Step::Done(v) => return v,
            }
        }
        let dst32 = u32::from_be_bytes(dst);
        let route = route4.unwrap_or_else(|| self.s.fib4.lookup(dst32));
        let Some(group) = route else {
            return self.icmp4_error(
                DropReason::NoRoute,
                icmp::v4::Repr::DstUnreachable {
                    code: 0,
                    next_hop_mtu: 0,
                },
            );
        };
        let entry = self.s.next_hop(group, || {
            let (sport, dport) = if fragment {
                (0, 0)
            } else {
                ports_at(&self.buf[..self.n], ETH + header, repr.protocol)
            };
            flow_hash_v4(u32::from_be_bytes(src), dst32, repr.protocol, sport, dport)
        });
        let expired = |cx: &mut Self| {
            cx.icmp4_error(
                DropReason::TtlExpired,
                icmp::v4::Repr::TimeExceeded { code: 0 },
            )
        };
        match entry {
            None => Verdict::Drop(DropReason::NoRoute),
            Some(NextHopEntry::Host) => self.deliver_to_host(),
            Some(NextHopEntry::Unreachable) => self.icmp4_error(
                DropReason::NoRoute,
                icmp::v4::Repr::DstUnreachable {
                    code: 1,
                    next_hop_mtu: 0,
                },
            ),
            Some(NextHopEntry::Unresolved { .. }) => {
                if repr.ttl <= 1 {
                    return expired(self);
                }
                self.punt(DropReason::NoNeighbour)
            }
            Some(&NextHopEntry::Resolved(adj)) => {
                if repr.ttl <= 1 {
                    return expired(self);
                }
                let mtu = self.mtu(adj.port);
                if total_len > mtu {
                    if dont_frag {
                        return self.icmp4_error(
                            DropReason::TooBig,
                            icmp::v4::Repr::DstUnreachable {
                                code: 4, // fragmentation needed (RFC 1191)
                                next_hop_mtu: mtu.min(usize::from(u16::MAX)) as u16,
                            },
                        );
                    }
                    // The kernel fragments.
                    return self.punt(DropReason::TooBig);
                }
                if header > IP4 {
                    if let Err(v) = self.process_options(adj.port, header) {
                        return v;
                    }
                }
                ipv4::Packet::new_unchecked(&mut self.buf[ETH..self.n]).decrement_ttl();
                self.set_macs(adj.src_mac, adj.dst_mac);
                Verdict::Tx(adj.port)
            }
        }
    }

    /// Writes this hop into the Record Route and Timestamp options of a packet leaving
    /// on `out`; refuses source-routed packets and answers malformed options with a
    /// parameter problem.
    fn process_options(&mut self, out: PortId, header: usize) -> Result<(), Verdict> {
        let role = self.s.ports.get(usize::from(out)).map(|p| p.role);
        let addr = match self.address_towards(role, IpAddr::is_ipv4) {
            Some(IpAddr::V4(a)) => a.octets(),
            _ => return Ok(()), // no address of ours to record: leave them
        };
        let now = self.local.ms_since_midnight();
        // Processed on a copy (a header is at most 60 bytes): a packet refused for a
        // later option must be quoted in its ICMP error as it arrived.
        let mut copy = [0u8; 60];
        let Some(copy) = copy.get_mut(..header) else {
            return Err(Verdict::Drop(DropReason::Malformed));
        };
        copy.copy_from_slice(&self.buf[ETH..ETH + header]);
        match options::process(copy, addr, now) {
            Ok(false) => Ok(()),
            Ok(true) => {
                self.buf[ETH..ETH + header].copy_from_slice(copy);
                ipv4::Packet::new_unchecked(&mut self.buf[ETH..self.n]).fill_checksum();
                Ok(())
            }
            Err(options::Refusal::SourceRoute) => Err(Verdict::Drop(DropReason::Options)),
            Err(options::Refusal::Problem(pointer)) => Err(self.icmp4_error(
                DropReason::Options,
                icmp::v4::Repr::ParamProblem { pointer },
            )),
        }
    }

    // --- IPv6 ------------------------------------------------------------------------

    fn ipv6(&mut self) -> Verdict {
        let Ok(ip) = ipv6::Packet::new_checked(&self.buf[ETH..self.n]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let repr = ipv6::Repr::parse(&ip);
        let (src, dst) = (repr.src, repr.dst);
        let Ok(upper) = ip.upper_layer() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // A pod's own addresses, and for neighbour discovery its link-local and the
        // unspecified address; neither of those is ever forwarded (martian below).
        let pods = src == UNSPECIFIED6 || link_local6(src) || self.source_is_the_pods(src.into());
        if !pods {
            return Verdict::Drop(DropReason::Spoofed);
        }
        let multicast = dst[0] == 0xff;
        if self.link_group && !multicast {
            return Verdict::Drop(DropReason::LinkBroadcast);
        }
        // Nothing is answered to a multicast or loopback source; the unspecified and
        // link-local ones are neighbour discovery's and stay on the link.
        if src[0] == 0xff || src == LOOPBACK6 {
            return Verdict::Drop(DropReason::MartianSource);
        }
        let gateway = self.s.gateway.ipv6.map(|g| g.octets());
        if multicast || link_local6(dst) || gateway == Some(dst) {
            return self.local6(upper, gateway == Some(dst));
        }
        if martian_source6(src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if martian_destination6(dst) {
            return Verdict::Drop(DropReason::MartianDestination);
        }
        let (mut src, mut dst) = (src, dst);
        if self.s.services.active() {
            match self.service6(upper) {
                service::Step::Pass => {}
                service::Step::Translated => {
                    let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
                    (src, dst) = (ip.src(), ip.dst());
                    self.translated = true;
                }
                service::Step::Done(v) => return v,
            }
        }
        let route = self.s.fib6.lookup(u128::from_be_bytes(dst));
        let Some(group) = route else {
            return self.icmp6_error(
                DropReason::NoRoute,
                icmp::v6::Repr::DstUnreachable { code: 0 },
            );
        };
        let entry = self.s.next_hop(group, || {
            // Every fragment of a datagram on one next hop: no ports in the hash of
            // any of them (as for IPv4).
            let (sport, dport) = if upper.fragment {
                (0, 0)
            } else {
                ports_at(&self.buf[..self.n], ETH + upper.offset, upper.protocol)
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
            cx.icmp6_error(
                DropReason::TtlExpired,
                icmp::v6::Repr::TimeExceeded { code: 0 },
            )
        };
        match entry {
            None => Verdict::Drop(DropReason::NoRoute),
            Some(NextHopEntry::Host) => self.deliver_to_host(),
            Some(NextHopEntry::Unreachable) => self.icmp6_error(
                DropReason::NoRoute,
                icmp::v6::Repr::DstUnreachable { code: 3 },
            ),
            Some(NextHopEntry::Unresolved { .. }) => {
                if repr.hop_limit <= 1 {
                    return expired(self);
                }
                self.punt(DropReason::NoNeighbour)
            }
            Some(&NextHopEntry::Resolved(adj)) => {
                if repr.hop_limit <= 1 {
                    return expired(self);
                }
                let mtu = self.mtu(adj.port);
                if ipv6::Repr::HEADER_LEN + usize::from(repr.payload_len) > mtu {
                    return self.icmp6_error(
                        DropReason::TooBig,
                        icmp::v6::Repr::PacketTooBig { mtu: mtu as u32 },
                    );
                }
                ipv6::Packet::new_unchecked(&mut self.buf[ETH..self.n]).decrement_hop_limit();
                self.set_macs(adj.src_mac, adj.dst_mac);
                Verdict::Tx(adj.port)
            }
        }
    }
}

/// The source and destination ports of a TCP or UDP header at `at`, else zeros.
#[inline]
fn ports_at(frame: &[u8], at: usize, protocol: u8) -> (u16, u16) {
    let Some(protocol) = Protocol::of(protocol) else {
        return (0, 0);
    };
    match frame
        .get(at..)
        .and_then(|b| Transport::new_checked(b, protocol).ok())
    {
        Some(t) => (t.src_port(), t.dst_port()),
        None => (0, 0),
    }
}
