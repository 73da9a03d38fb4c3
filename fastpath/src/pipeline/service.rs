//! The service proxy's stage of the pipeline: connection tracking, the choice of a
//! backend for a new flow, and the rewrite of every packet of a tracked flow (DNAT
//! towards the backend, SNAT where the flow needs its replies back through this node,
//! and the reverse on replies), for TCP, UDP and ICMP echo, IPv4 and IPv6.
//!
//! It runs before the FIB lookup: a packet it rewrites is then routed to its new
//! destination like any other. What it decides on its own (a reject, an invalid
//! segment, a client outside the source ranges) ends the packet here, counted.
//!
//! A flow is two entries in the shared table ([`nat::conntrack`]): the packet's own
//! tuple with the tuple it becomes, and the tuple of its replies after translation with
//! what they become. Each is the other reversed, so whichever worker gets a packet of
//! either direction finds the flow with one lookup and can write both entries back.
//!
//! Checksums are updated incrementally (RFC 1624): the IPv4 header's for an address,
//! TCP's and UDP's (and ICMPv6's, whose pseudo-header covers the addresses too) for an
//! address or port; ICMPv4's only for the echo identifier.

use super::{Cx, Verdict, ETH};
use crate::counters::DropReason;
use crate::ecmp::{flow_hash_v4, flow_hash_v6};
use crate::snapshot::{PortRole, Services};
use crate::wire::{checksum, icmp, ip_proto, ipv4, ipv6, read_u16, write_u16};
use nat::conntrack::flow::{counterpart, flags, Conntrack, Direction, Nat, Tuple};
use nat::conntrack::table::Inserted;
use nat::conntrack::tcp::{self, State};
use nat::conntrack::window::{self, Window};
use nat::fragments::Translation;
use nat::frontend::{Frontend, Kind};
use nat::service::{in_prefix, Backend, Origin, Protocol};
use nat::stats::PortDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Seconds since its entry's last write after which a flow whose segment fails the
/// window check is taken to have gone through another node meanwhile.
const STALE_WINDOW: u32 = 10;
/// Ports of the SNAT range tried for one new flow before it is refused.
const PORT_TRIES: u32 = 16;
/// How a TCP segment or other packet of a flow is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4 {
    Tcp {
        flags: u8,
        /// The segment's place in its sequence space; `None` for a first fragment
        /// (whose length is not all there).
        seg: Option<Segment>,
    },
    Udp,
    /// ICMP echo request or reply: its identifier is both ports of the tuple.
    Echo,
}

/// A TCP segment's sequence number and length (SYN and FIN counted), and a SYN's
/// window scale option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    seq: u32,
    len: u32,
    wscale: Option<u8>,
}

/// What the stage did with a packet.
pub(super) enum Step {
    /// Not a service's: route it as it is.
    Pass,
    /// Rewritten: route it to its new destination.
    Translated,
    /// Decided here.
    Done(Verdict),
}

/// A new flow's entry was found stored by another worker: look the packet up again.
pub(super) struct Raced;

/// An address family as the stage needs it: its addresses in the conntrack table and
/// in the packet.
pub(super) trait Family: Copy + Eq + Into<IpAddr> + std::fmt::Debug {
    fn get(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> Option<Nat<Self>>;
    fn put(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted;
    /// Stores only where `t` has no live entry.
    fn put_new(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted;
    fn remove(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> bool;
    fn snat(sv: &Services) -> Option<Self>;
    fn from_ip(ip: IpAddr) -> Option<Self>;
    /// The same flow hash on every node (Maglev must pick the same backend wherever
    /// the fabric sends a flow), in the high half of the word: Maglev's range
    /// reduction takes the top bits.
    fn hash(t: &Tuple<Self>) -> u64;
    /// Rewrites the packet at `ETH` of `frame` (its transport header at `l4`) from
    /// tuple `old` to `new`.
    fn rewrite(frame: &mut [u8], l4: usize, kind: L4, old: &Tuple<Self>, new: &Tuple<Self>);
    /// A fragmented datagram's identity.
    type Datagram: Copy;
    /// Its addresses as they came: source, destination.
    fn datagram_addrs(d: &Self::Datagram) -> (Self, Self);
    fn keep_fragments(sv: &Services, d: &Self::Datagram, t: &Translation<Self>, now: u32);
    fn kept_fragments(sv: &Services, d: &Self::Datagram, now: u32) -> Option<Translation<Self>>;
    /// Sets the addresses of the packet at `ETH` of `frame` (no transport header to
    /// update: a later fragment's carries none).
    fn set_addrs(frame: &mut [u8], src: Self, dst: Self);
    /// The addresses of the packet at `ETH` of `frame` (its header checked already).
    fn packet_addrs(frame: &[u8]) -> (Self, Self);
}

impl Family for Ipv4Addr {
    fn get(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> Option<Nat<Self>> {
        ct.get4(t, now)
    }
    fn put(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted {
        ct.put4(t, n, now)
    }
    fn put_new(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted {
        ct.put4_new(t, n, now)
    }
    fn remove(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> bool {
        ct.remove4(t, now)
    }
    fn snat(sv: &Services) -> Option<Self> {
        sv.snat4
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn hash(t: &Tuple<Self>) -> u64 {
        u64::from(flow_hash_v4(
            u32::from(t.src),
            u32::from(t.dst),
            t.protocol,
            t.sport,
            t.dport,
        )) << 32
    }
    fn rewrite(frame: &mut [u8], l4: usize, kind: L4, old: &Tuple<Self>, new: &Tuple<Self>) {
        let (os, od, ns, nd) = (
            old.src.octets(),
            old.dst.octets(),
            new.src.octets(),
            new.dst.octets(),
        );
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[ETH..]);
        if os != ns {
            ip.set_src(ns);
        }
        if od != nd {
            ip.set_dst(nd);
        }
        let Some(seg) = frame.get_mut(l4..) else {
            return;
        };
        match kind {
            L4::Tcp { .. } | L4::Udp => {
                let mut t = transport(seg, kind);
                if os != ns {
                    t.update_for_ipv4_address(os, ns);
                }
                if od != nd {
                    t.update_for_ipv4_address(od, nd);
                }
                ports(&mut t, old, new);
            }
            L4::Echo => echo_ident(seg, new.sport),
        }
    }
    type Datagram = nat::fragments::Datagram;
    fn datagram_addrs(d: &Self::Datagram) -> (Self, Self) {
        (d.src, d.dst)
    }
    fn keep_fragments(sv: &Services, d: &Self::Datagram, t: &Translation<Self>, now: u32) {
        sv.fragments.put(d, t, now);
    }
    fn kept_fragments(sv: &Services, d: &Self::Datagram, now: u32) -> Option<Translation<Self>> {
        sv.fragments.get(d, now)
    }
    fn packet_addrs(frame: &[u8]) -> (Self, Self) {
        let ip = ipv4::Packet::new_unchecked(&frame[ETH..]);
        (Ipv4Addr::from(ip.src()), Ipv4Addr::from(ip.dst()))
    }
    fn set_addrs(frame: &mut [u8], src: Self, dst: Self) {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[ETH..]);
        if ip.src() != src.octets() {
            ip.set_src(src.octets());
        }
        if ip.dst() != dst.octets() {
            ip.set_dst(dst.octets());
        }
    }
}

impl Family for Ipv6Addr {
    fn get(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> Option<Nat<Self>> {
        ct.get6(t, now)
    }
    fn put(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted {
        ct.put6(t, n, now)
    }
    fn put_new(ct: &Conntrack, t: &Tuple<Self>, n: &Nat<Self>, now: u32) -> Inserted {
        ct.put6_new(t, n, now)
    }
    fn remove(ct: &Conntrack, t: &Tuple<Self>, now: u32) -> bool {
        ct.remove6(t, now)
    }
    fn snat(sv: &Services) -> Option<Self> {
        sv.snat6
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn hash(t: &Tuple<Self>) -> u64 {
        u64::from(flow_hash_v6(
            u128::from(t.src),
            u128::from(t.dst),
            t.protocol,
            t.sport,
            t.dport,
        )) << 32
    }
    fn rewrite(frame: &mut [u8], l4: usize, kind: L4, old: &Tuple<Self>, new: &Tuple<Self>) {
        let (os, od, ns, nd) = (
            old.src.octets(),
            old.dst.octets(),
            new.src.octets(),
            new.dst.octets(),
        );
        let mut ip = ipv6::Packet::new_unchecked(&mut frame[ETH..]);
        ip.set_src(ns);
        ip.set_dst(nd);
        let Some(seg) = frame.get_mut(l4..) else {
            return;
        };
        match kind {
            L4::Tcp { .. } | L4::Udp => {
                let mut t = transport(seg, kind);
                if os != ns {
                    t.update_for_ipv6_address(&os, &ns);
                }
                if od != nd {
                    t.update_for_ipv6_address(&od, &nd);
                }
                ports(&mut t, old, new);
            }
            L4::Echo if seg.len() < 8 => {}
            L4::Echo => {
                // ICMPv6's checksum covers the pseudo-header's addresses.
                let mut c = read_u16(seg, 2);
                c = checksum::update128(c, &os, &ns);
                c = checksum::update128(c, &od, &nd);
                write_u16(seg, 2, c);
                echo_ident(seg, new.sport);
            }
        }
    }
    type Datagram = nat::fragments::Datagram6;
    fn datagram_addrs(d: &Self::Datagram) -> (Self, Self) {
        (d.src, d.dst)
    }
    fn keep_fragments(sv: &Services, d: &Self::Datagram, t: &Translation<Self>, now: u32) {
        sv.fragments.put6(d, t, now);
    }
    fn kept_fragments(sv: &Services, d: &Self::Datagram, now: u32) -> Option<Translation<Self>> {
        sv.fragments.get6(d, now)
    }
    fn packet_addrs(frame: &[u8]) -> (Self, Self) {
        let ip = ipv6::Packet::new_unchecked(&frame[ETH..]);
        (Ipv6Addr::from(ip.src()), Ipv6Addr::from(ip.dst()))
    }
    fn set_addrs(frame: &mut [u8], src: Self, dst: Self) {
        let mut ip = ipv6::Packet::new_unchecked(&mut frame[ETH..]);
        if ip.src() != src.octets() {
            ip.set_src(src.octets());
        }
        if ip.dst() != dst.octets() {
            ip.set_dst(dst.octets());
        }
    }
}

fn transport(seg: &mut [u8], kind: L4) -> crate::wire::transport::Transport<&mut [u8]> {
    let p = if matches!(kind, L4::Udp) {
        crate::wire::transport::Protocol::Udp
    } else {
        crate::wire::transport::Protocol::Tcp
    };
    crate::wire::transport::Transport::new_unchecked(seg, p)
}

fn ports<A>(t: &mut crate::wire::transport::Transport<&mut [u8]>, old: &Tuple<A>, new: &Tuple<A>) {
    if old.sport != new.sport {
        t.set_src_port(new.sport);
    }
    if old.dport != new.dport {
        t.set_dst_port(new.dport);
    }
}

/// Writes an echo identifier, updating the ICMP checksum for it (an ICMPv6
/// pseudo-header change is the caller's).
fn echo_ident(seg: &mut [u8], ident: u16) {
    if seg.len() < 8 {
        return;
    }
    let old = read_u16(seg, 4);
    if old != ident {
        write_u16(seg, 4, ident);
        let c = checksum::update16(read_u16(seg, 2), old, ident);
        write_u16(seg, 2, c);
    }
}

fn nat_protocol(kind: L4) -> Option<Protocol> {
    match kind {
        L4::Tcp { .. } => Some(Protocol::Tcp),
        L4::Udp => Some(Protocol::Udp),
        L4::Echo => None,
    }
}

/// The tuple a packet of entry `n` becomes.
fn translated<A: Copy>(n: &Nat<A>, protocol: u8) -> Tuple<A> {
    Tuple {
        src: n.src,
        dst: n.dst,
        sport: n.sport,
        dport: n.dport,
        protocol,
    }
}

/// The flags and window of a flow opened in `state` by its first segment: an ACK's
/// picks up a connection under way ([`flags::PICKED_UP`]); a whole SYN's records the
/// client's side of the window ([`flags::SYN_SEEN`]) unless windows are not checked
/// (`liberal`).
fn opening(kind: L4, state: u8, liberal: bool) -> (u8, Window) {
    match kind {
        L4::Tcp { .. } if state == State::Established as u8 => {
            (flags::PICKED_UP, Window::default())
        }
        L4::Tcp { seg: Some(sg), .. } if state == State::SynSent as u8 && !liberal => {
            (flags::SYN_SEEN, window::syn(sg.seq, sg.len, sg.wscale))
        }
        _ => (0, Window::default()),
    }
}

fn seconds(d: std::time::Duration) -> u32 {
    d.as_secs().clamp(1, u64::from(u32::MAX)) as u32
}

/// The transport of a packet (`protocol` at `seg`): its ports and how it is carried,
/// or `None` for what the stage does not translate. ICMP errors are `None` here.
/// `whole`: `seg` is the whole segment (not a first fragment).
fn parse_l4(seg: &[u8], protocol: u8, whole: bool) -> Option<(u16, u16, L4)> {
    match protocol {
        ip_proto::TCP => {
            let t = crate::wire::tcp::Packet::new_checked(seg).ok()?;
            let flags = t.flags() as u8;
            let seg = whole.then(|| Segment {
                seq: t.seq(),
                len: t.sequence_len(),
                wscale: if flags & tcp::flags::SYN != 0 {
                    t.window_scale()
                } else {
                    None
                },
            });
            Some((t.src_port(), t.dst_port(), L4::Tcp { flags, seg }))
        }
        ip_proto::UDP => {
            // The header alone: a first fragment holds only part of the datagram its
            // length field counts.
            let u = crate::wire::transport::Transport::new_checked(
                seg,
                crate::wire::transport::Protocol::Udp,
            )
            .ok()?;
            Some((u.src_port(), u.dst_port(), L4::Udp))
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let m = icmp::Packet::new_checked(seg).ok()?;
            let echo = if protocol == ip_proto::ICMP {
                [icmp::v4::ECHO_REQUEST, icmp::v4::ECHO_REPLY]
            } else {
                [icmp::v6::ECHO_REQUEST, icmp::v6::ECHO_REPLY]
            };
            echo.contains(&m.msg_type())
                .then(|| (m.echo_ident(), m.echo_ident(), L4::Echo))
        }
        _ => None,
    }
}

impl Cx<'_, '_> {
    /// The stage for an IPv4 packet whose header is `header` bytes long.
    pub(super) fn service4(&mut self, header: usize, fragment: bool) -> Step {
        let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst, protocol) = (ip.src(), ip.dst(), ip.protocol());
        let end = ETH + usize::from(ip.total_len());
        let datagram = fragment.then(|| nat::fragments::Datagram {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            protocol,
            ident: ip.ident(),
        });
        if let Some(d) = datagram.filter(|_| ip.frag_offset() != 0) {
            return self.later_fragment::<Ipv4Addr>(&d);
        }
        let l4 = ETH + header;
        if protocol == ip_proto::ICMP && self.buf.get(l4).is_some_and(|&t| icmp::v4::is_error(t)) {
            return self.icmp_error4(l4, end);
        }
        let Some((sport, dport, kind)) = self
            .buf
            .get(l4..end)
            .and_then(|seg| parse_l4(seg, protocol, datagram.is_none()))
        else {
            if self.s.services.frontends.is_vip(IpAddr::from(dst)) {
                // A first fragment to a service too short for its ports (a tiny
                // fragment, RFC 1858), or a protocol no service has (SCTP, ICMP
                // other than echo): not routed on (the fabric would send it back).
                return Step::Done(Verdict::Drop(if datagram.is_some() {
                    DropReason::Fragment
                } else {
                    DropReason::NoService
                }));
            }
            return Step::Pass;
        };
        let t = Tuple {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            sport,
            dport,
            protocol,
        };
        let step = self.service(t, l4, kind);
        if let (Some(d), Step::Translated) = (datagram, &step) {
            self.first_fragment(&d, &t);
        }
        step
    }

    /// The first fragment of datagram `d` (tuple `t`, now translated in the frame) was
    /// translated: its translation is kept for the later fragments.
    fn first_fragment<A: Family>(&mut self, d: &A::Datagram, t: &Tuple<A>) {
        let sv = &self.s.services;
        let now = self.local.seconds;
        let (src, dst) = A::packet_addrs(&self.buf[..self.n]);
        let (service, backend, backend_port) = match A::get(&sv.conntrack, t, now) {
            Some(n) if n.direction == Direction::Original => (n.service, n.dst, n.dport),
            Some(n) => (n.service, t.src, t.sport),
            None => (0, dst, 0),
        };
        let tr = Translation {
            src,
            dst,
            service,
            backend,
            backend_port,
        };
        A::keep_fragments(sv, d, &tr, now);
    }

    /// A later fragment (no ports): translated as its datagram's first fragment was;
    /// one to a VIP whose first fragment was not seen is dropped, counted.
    fn later_fragment<A: Family>(&mut self, d: &A::Datagram) -> Step {
        let sv = &self.s.services;
        let (_, dst) = A::datagram_addrs(d);
        let Some(tr) = A::kept_fragments(sv, d, self.local.seconds) else {
            if sv.frontends.is_vip(dst.into()) {
                return Step::Done(Verdict::Drop(DropReason::FragmentUntracked));
            }
            return Step::Pass;
        };
        if tr.service != 0 {
            let backend = Backend {
                addr: tr.backend.into(),
                port: tr.backend_port,
            };
            sv.frontends.count(tr.service, backend, self.n, false);
        }
        A::set_addrs(&mut self.buf[..self.n], tr.src, tr.dst);
        self.t.nat_packets += 1;
        Step::Translated
    }

    /// The stage for an IPv6 packet whose upper-layer header is `upper`.
    pub(super) fn service6(&mut self, upper: ipv6::UpperLayer) -> Step {
        let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let (src, dst) = (ip.src(), ip.dst());
        let end = ETH + ipv6::Repr::HEADER_LEN + usize::from(ip.payload_len());
        let datagram = upper.fragment.then(|| nat::fragments::Datagram6 {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            ident: upper.fragment_ident,
        });
        if let Some(d) = datagram.filter(|_| upper.later_fragment) {
            return self.later_fragment::<Ipv6Addr>(&d);
        }
        let l4 = ETH + upper.offset;
        if upper.protocol == ip_proto::ICMPV6
            && self.buf.get(l4).is_some_and(|&t| icmp::v6::is_error(t))
        {
            return self.icmp_error6(l4, end);
        }
        let Some((sport, dport, kind)) = self
            .buf
            .get(l4..end)
            .and_then(|seg| parse_l4(seg, upper.protocol, datagram.is_none()))
        else {
            if self.s.services.frontends.is_vip(IpAddr::from(dst)) {
                // A first fragment to a service without its ports (RFC 8200 requires
                // them in it), or a protocol no service has: not routed on.
                return Step::Done(Verdict::Drop(if datagram.is_some() {
                    DropReason::Fragment
                } else {
                    DropReason::NoService
                }));
            }
            return Step::Pass;
        };
        let t = Tuple {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            sport,
            dport,
            protocol: upper.protocol,
        };
        let step = self.service(t, l4, kind);
        // An atomic fragment (offset 0, no more to come) is the whole datagram: nothing
        // to keep for later ones.
        if let (Some(d), Step::Translated, true) = (datagram, &step, upper.more_fragments) {
            self.first_fragment(&d, &t);
        }
        step
    }

    /// An ICMPv4 error (its header at `l4`, the packet ending at `end`) about a
    /// translated flow: the quoted packet is the flow's as it left here, translated;
    /// it is put back as the flow's other end sent it, and the error goes to that end
    /// (RFC 5508 4.2: a NAT translates the embedded header of ICMP errors too), so that
    /// port unreachable and fragmentation needed work through a service.
    pub(super) fn icmp_error4(&mut self, l4: usize, end: usize) -> Step {
        let q_ip = l4 + 8;
        let Some(q) = self.buf.get(q_ip..end) else {
            return Step::Pass;
        };
        if q.len() < 20 || q[0] >> 4 != 4 {
            return Step::Pass;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        let (qproto, qsrc, qdst) = (
            q[9],
            [q[12], q[13], q[14], q[15]],
            [q[16], q[17], q[18], q[19]],
        );
        // A quoted later fragment carries no ports.
        if ihl < 20 || u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
            return Step::Pass;
        }
        let q_l4 = q_ip + ihl;
        let Some((sport, dport)) = self.quoted_ports(q_l4, end, qproto) else {
            return Step::Pass;
        };
        let quoted = Tuple {
            src: Ipv4Addr::from(qsrc),
            dst: Ipv4Addr::from(qdst),
            sport,
            dport,
            protocol: qproto,
        };
        let now = self.local.seconds;
        let Some(e) = Ipv4Addr::get(&self.s.services.conntrack, &quoted.reversed(), now) else {
            return Step::Pass;
        };
        let outer_src = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]).src();
        // The quoted packet as the flow's other end sent it.
        let (new_src, new_dst) = (e.dst.octets(), e.src.octets());
        {
            let mut inner = ipv4::Packet::new_unchecked(&mut self.buf[q_ip..end]);
            inner.set_src(new_src);
            inner.set_dst(new_dst);
        }
        self.rewrite_quoted_ports(q_l4, end, qproto, &quoted, (e.dport, e.sport), |c| {
            let c = checksum::update32(c, u32::from_be_bytes(qsrc), u32::from_be_bytes(new_src));
            checksum::update32(c, u32::from_be_bytes(qdst), u32::from_be_bytes(new_dst))
        });
        let mut outer = ipv4::Packet::new_unchecked(&mut self.buf[ETH..self.n]);
        outer.set_dst(e.dst.octets());
        if outer_src == qdst {
            // From the flow's far end itself (a backend's port unreachable): from what
            // the client reached.
            outer.set_src(e.src.octets());
        }
        icmp::Packet::new_unchecked(&mut self.buf[l4..end]).fill_checksum(0);
        self.t.nat_packets += 1;
        Step::Translated
    }

    /// As [`Cx::icmp_error4`], for ICMPv6 errors (the quoted packet's upper-layer header
    /// right after its fixed header).
    pub(super) fn icmp_error6(&mut self, l4: usize, end: usize) -> Step {
        let q_ip = l4 + 8;
        let Some(q) = self.buf.get(q_ip..end) else {
            return Step::Pass;
        };
        if q.len() < 40 || q[0] >> 4 != 6 {
            return Step::Pass;
        }
        let qproto = q[6];
        let qsrc: [u8; 16] = q[8..24].try_into().unwrap_or_default();
        let qdst: [u8; 16] = q[24..40].try_into().unwrap_or_default();
        let q_l4 = q_ip + 40;
        let Some((sport, dport)) = self.quoted_ports(q_l4, end, qproto) else {
            return Step::Pass;
        };
        let quoted = Tuple {
            src: Ipv6Addr::from(qsrc),
            dst: Ipv6Addr::from(qdst),
            sport,
            dport,
            protocol: qproto,
        };
        let now = self.local.seconds;
        let Some(e) = Ipv6Addr::get(&self.s.services.conntrack, &quoted.reversed(), now) else {
            return Step::Pass;
        };
        let outer = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
        let outer_src = outer.src();
        let (new_src, new_dst) = (e.dst.octets(), e.src.octets());
        {
            let mut inner = ipv6::Packet::new_unchecked(&mut self.buf[q_ip..end]);
            inner.set_src(new_src);
            inner.set_dst(new_dst);
        }
        self.rewrite_quoted_ports(q_l4, end, qproto, &quoted, (e.dport, e.sport), |c| {
            let c = checksum::update128(c, &qsrc, &new_src);
            checksum::update128(c, &qdst, &new_dst)
        });
        let src = if outer_src == qdst {
            e.src.octets()
        } else {
            outer_src
        };
        let dst = e.dst.octets();
        {
            let mut outer = ipv6::Packet::new_unchecked(&mut self.buf[ETH..self.n]);
            outer.set_src(src);
            outer.set_dst(dst);
        }
        let len = (end - l4) as u32;
        let pseudo = checksum::pseudo_ipv6(&src, &dst, ip_proto::ICMPV6, len);
        icmp::Packet::new_unchecked(&mut self.buf[l4..end]).fill_checksum(pseudo);
        self.t.nat_packets += 1;
        Step::Translated
    }

    /// The ports (or echo identifier, as both) of a quoted packet's transport header at
    /// `at`: an ICMP error quotes at least its first 8 bytes.
    fn quoted_ports(&self, at: usize, end: usize, protocol: u8) -> Option<(u16, u16)> {
        let b = self.buf.get(at..end)?;
        if b.len() < 8 {
            return None;
        }
        match protocol {
            ip_proto::TCP | ip_proto::UDP => Some((read_u16(b, 0), read_u16(b, 2))),
            ip_proto::ICMP | ip_proto::ICMPV6 => {
                let echo = [
                    icmp::v4::ECHO_REQUEST,
                    icmp::v4::ECHO_REPLY,
                    icmp::v6::ECHO_REQUEST,
                    icmp::v6::ECHO_REPLY,
                ];
                echo.contains(&b[0])
                    .then(|| (read_u16(b, 4), read_u16(b, 4)))
            }
            _ => None,
        }
    }

    /// Writes the quoted transport header's ports (`(source, destination)`), and its
    /// checksum where the quote holds it (`pseudo` updates it for the addresses).
    fn rewrite_quoted_ports<A>(
        &mut self,
        at: usize,
        end: usize,
        protocol: u8,
        old: &Tuple<A>,
        ports: (u16, u16),
        pseudo: impl Fn(u16) -> u16,
    ) {
        let Some(b) = self.buf.get_mut(at..end) else {
            return;
        };
        if b.len() < 8 {
            return;
        }
        let checksum_at = match protocol {
            ip_proto::TCP => 16,
            ip_proto::UDP => 6,
            _ => 2,
        };
        if matches!(protocol, ip_proto::ICMP | ip_proto::ICMPV6) {
            // The echo identifier; ICMPv6's checksum covers the pseudo-header too.
            let c = checksum::update16(read_u16(b, 2), old.sport, ports.0);
            let c = if protocol == ip_proto::ICMPV6 {
                pseudo(c)
            } else {
                c
            };
            write_u16(b, 4, ports.0);
            write_u16(b, 2, c);
            return;
        }
        write_u16(b, 0, ports.0);
        write_u16(b, 2, ports.1);
        let has_checksum = b.len() >= checksum_at + 2
            && !(protocol == ip_proto::UDP && read_u16(b, checksum_at) == 0);
        if has_checksum {
            let mut c = read_u16(b, checksum_at);
            c = checksum::update16(c, old.sport, ports.0);
            c = checksum::update16(c, old.dport, ports.1);
            let c = pseudo(c);
            // As the sender's own would be: UDP sends a zero sum as all ones.
            let c = if protocol == ip_proto::UDP && c == 0 {
                0xffff
            } else {
                c
            };
            write_u16(b, checksum_at, c);
        }
    }

    /// Whether a packet from `src` comes from inside the cluster: from a pod or the
    /// node's stack here, or from a source in the cluster's prefixes.
    fn origin(&self, src: IpAddr) -> Origin {
        let sv = &self.s.services;
        if self.port.role != PortRole::Uplink
            || sv
                .cluster
                .iter()
                .any(|&(net, len)| in_prefix(src, net, len))
        {
            Origin::Internal
        } else {
            Origin::External
        }
    }

    /// The stage for a packet of family `A` with tuple `t`, its transport header at
    /// `l4` (an offset in the frame).
    pub(super) fn service<A: Family>(&mut self, t: Tuple<A>, l4: usize, kind: L4) -> Step {
        // A flow another worker stored between this one's lookup and its insert (or
        // whose entry the lookup missed while it was being written) is looked up
        // again, once; a second such race, vanishingly rare, is a flow this packet
        // could not be tracked in.
        for _ in 0..2 {
            if let Ok(step) = self.service_once(t, l4, kind, false) {
                return step;
            }
        }
        // Two workers that raced twice may both have given way: the last try stores
        // its flow whatever is there (the last write stands, one flow either way).
        self.service_once(t, l4, kind, true)
            .unwrap_or(Step::Done(Verdict::Drop(DropReason::ConntrackFull)))
    }

    /// One try of [`Self::service`]; `last`: a new flow's entry is stored over one
    /// another worker stored meanwhile, instead of giving way to it.
    fn service_once<A: Family>(
        &mut self,
        t: Tuple<A>,
        l4: usize,
        kind: L4,
        last: bool,
    ) -> Result<Step, Raced> {
        let s = self.s;
        let sv = &s.services;
        let now = self.local.seconds;
        if let Some(e) = A::get(&sv.conntrack, &t, now) {
            match self.tracked(&t, e, kind, now) {
                Ok(Some(n)) if translated(&n, t.protocol) == t => {
                    // Tracked as it is (a flow from outside to a pod).
                    return Ok(Step::Pass);
                }
                Ok(Some(n)) => {
                    let backend = match n.direction {
                        Direction::Original => (n.dst.into(), n.dport),
                        Direction::Reply => (t.src.into(), t.sport),
                    };
                    sv.frontends.count(
                        n.service,
                        Backend {
                            addr: backend.0,
                            port: backend.1,
                        },
                        self.n,
                        false,
                    );
                    A::rewrite(self.frame(), l4, kind, &t, &translated(&n, t.protocol));
                    self.t.nat_packets += 1;
                    return Ok(Step::Translated);
                }
                Ok(None) => {} // forgotten: a new flow, if it is one
                Err(v) => return Ok(Step::Done(v)),
            }
        }
        let dst: IpAddr = t.dst.into();
        let frontend = match nat_protocol(kind) {
            Some(p) => sv.frontends.vip(dst, t.dport, p).or_else(|| {
                sv.node_port_addrs
                    .contains(&dst)
                    .then(|| sv.frontends.node_port(t.dport, p, dst.is_ipv6()))
                    .flatten()
            }),
            None => sv.frontends.any_of_vip(dst),
        };
        let Some(f) = frontend else {
            if sv.frontends.is_vip(dst) {
                // A VIP's port that no service has: refused as a closed port is.
                return Ok(Step::Done(self.reject(kind, DropReason::NoService)));
            }
            if sv.pod_egress {
                return self.egress(t, l4, kind, now, last);
            }
            return Ok(Step::Pass);
        };
        self.new_flow(t, l4, kind, f, now, last)
    }

    /// Whether the FIB sends `dst` out of the uplink (an unroutable destination is
    /// answered as it is, not SNATed first).
    fn leaves_by_uplink(&self, dst: IpAddr) -> bool {
        let s = self.s;
        let group = match dst {
            IpAddr::V4(a) => s.fib4.lookup(u32::from(a)),
            IpAddr::V6(a) => s.fib6.lookup(u128::from(a)),
        };
        let port = match group.and_then(|g| s.next_hop(g, || 0)) {
            Some(crate::snapshot::NextHopEntry::Resolved(adj)) => adj.port,
            Some(crate::snapshot::NextHopEntry::Unresolved { port, .. }) => *port,
            _ => return false,
        };
        s.ports
            .get(usize::from(port))
            .is_some_and(|p| p.role == PortRole::Uplink)
    }

    /// Pod egress (`--enable-pod-egress`): a pod's new flow to outside the cluster is
    /// SNATed to the node, so that the outside answers the node. Flows the outside
    /// opens towards pods (pod CIDRs announced by BGP) are tracked as they are, so that
    /// the pods' answers are not taken for egress.
    fn egress<A: Family>(
        &mut self,
        t: Tuple<A>,
        l4: usize,
        kind: L4,
        now: u32,
        last: bool,
    ) -> Result<Step, Raced> {
        let s = self.s;
        let sv = &s.services;
        let (src, dst): (IpAddr, IpAddr) = (t.src.into(), t.dst.into());
        let inside = |a: IpAddr| {
            sv.cluster.iter().any(|&(net, len)| in_prefix(a, net, len)) || s.node_addrs.contains(&a)
        };
        let in_services = |a: IpAddr| {
            sv.service_ranges
                .iter()
                .any(|&(net, len)| in_prefix(a, net, len))
        };
        let opens = match kind {
            L4::Tcp { flags: f, .. } => tcp::open(f),
            _ => Some(State::Established),
        };
        let echo_reply = kind == L4::Echo
            && self
                .buf
                .get(l4)
                .is_some_and(|&t| t == icmp::v4::ECHO_REPLY || t == icmp::v6::ECHO_REPLY);
        let timeout = |kind: L4, state: u8| {
            seconds(match kind {
                L4::Tcp { .. } => sv.timeouts.tracked(
                    State::from_u8(state).unwrap_or(State::SynSent),
                    state == State::Established as u8,
                ),
                L4::Udp => sv.timeouts.udp,
                L4::Echo => sv.timeouts.icmp,
            })
        };
        if self.pod.is_some()
            && !inside(dst)
            && !in_services(dst)
            && opens.is_some()
            && !echo_reply
            && self.leaves_by_uplink(dst)
        {
            let Some(node) = A::snat(sv) else {
                return Ok(Step::Pass);
            };
            let state = match kind {
                L4::Tcp { .. } => opens.map_or(0, |st| st as u8),
                _ => 0,
            };
            let (opened, window) = opening(kind, state, sv.tcp_be_liberal);
            let mut n = Nat {
                src: node,
                sport: t.sport,
                dst: t.dst,
                dport: t.dport,
                direction: Direction::Original,
                state,
                flags: flags::SNAT | opened,
                service: 0,
                expires: now.saturating_add(timeout(kind, state)),
                window,
            };
            if let Err(v) = self.snat_port(&t, &mut n, kind) {
                return Ok(Step::Done(v));
            }
            let (k, _) = counterpart(&t, &n);
            // The flow's own entry only where none is live (as a service's new flow):
            // another worker's stands and this one's SNAT port is given back.
            let mine = if last {
                A::put(&sv.conntrack, &t, &n, now)
            } else {
                A::put_new(&sv.conntrack, &t, &n, now)
            };
            if mine == Inserted::Exists {
                A::remove(&sv.conntrack, &k, now);
                return Err(Raced);
            }
            if mine == Inserted::Refused {
                A::remove(&sv.conntrack, &k, now);
                A::remove(&sv.conntrack, &t, now);
                return Ok(Step::Done(Verdict::Drop(DropReason::ConntrackFull)));
            }
            A::rewrite(self.frame(), l4, kind, &t, &translated(&n, t.protocol));
            self.t.nat_new_flows += 1;
            self.t.nat_packets += 1;
            return Ok(Step::Translated);
        }
        if self.port.role == PortRole::Uplink && !inside(src) && inside(dst) && opens.is_some() {
            // From outside to a pod: tracked untranslated.
            let state = match kind {
                L4::Tcp { .. } => opens.map_or(0, |st| st as u8),
                _ => 0,
            };
            let (opened, window) = opening(kind, state, sv.tcp_be_liberal);
            let n = Nat {
                src: t.src,
                sport: t.sport,
                dst: t.dst,
                dport: t.dport,
                direction: Direction::Original,
                state,
                flags: opened,
                service: 0,
                expires: now.saturating_add(timeout(kind, state)),
                window,
            };
            let (k, v) = counterpart(&t, &n);
            A::put(&sv.conntrack, &k, &v, now);
            A::put(&sv.conntrack, &t, &n, now);
        }
        Ok(Step::Pass)
    }

    /// A packet of a tracked flow: its state moves on, the entries are written back
    /// when the state changed or their expiry is due for a push; `Ok(None)` when the
    /// flow was forgotten (a new connection on old ports, a gone UDP backend).
    fn tracked<A: Family>(
        &mut self,
        t: &Tuple<A>,
        mut e: Nat<A>,
        kind: L4,
        now: u32,
    ) -> Result<Option<Nat<A>>, Verdict> {
        let sv = &self.s.services;
        let (old_state, old_flags) = (e.state, e.flags);
        let forget = |t: &Tuple<A>, e: &Nat<A>| {
            let (k, _) = counterpart(t, e);
            A::remove(&sv.conntrack, t, now);
            A::remove(&sv.conntrack, &k, now);
        };
        let old_window = e.window;
        let timeout = match kind {
            L4::Tcp { flags: f, seg } => {
                let dir = match e.direction {
                    Direction::Original => tcp::Direction::Original,
                    Direction::Reply => tcp::Direction::Reply,
                };
                let state = State::from_u8(e.state).unwrap_or(State::Established);
                if !tcp::valid_flags(f) && !sv.tcp_be_liberal {
                    sv.frontends.count_drop(e.service, PortDrop::Invalid);
                    return Err(Verdict::Drop(DropReason::Invalid));
                }
                if e.flags & flags::BACKEND_GONE != 0 {
                    forget(t, &e);
                    if dir == tcp::Direction::Original
                        && f & tcp::flags::SYN != 0
                        && f & tcp::flags::ACK == 0
                    {
                        // A new connection on the tuple of a flow whose backend went
                        // (the client's port reused): a new flow, not a reset.
                        return Ok(None);
                    }
                    sv.frontends.count_drop(e.service, PortDrop::BackendGone);
                    if dir == tcp::Direction::Original && f & tcp::flags::RST == 0 {
                        return Err(self.tcp_reset(DropReason::BackendGone));
                    }
                    return Err(Verdict::Drop(DropReason::BackendGone));
                }
                if tcp::reopens(state, f, dir) {
                    forget(t, &e);
                    return Ok(None);
                }
                match seg {
                    Some(sg) => {
                        if !self.in_window(&mut e, state, f, dir, sg, now) {
                            sv.frontends.count_drop(e.service, PortDrop::Invalid);
                            return Err(Verdict::Drop(DropReason::Invalid));
                        }
                    }
                    // A first fragment: its length is not all here, so the side's end
                    // cannot follow; the flow is not checked from now on.
                    None => e.flags &= !(flags::WINDOW | flags::SYN_SEEN),
                }
                let closer = if e.flags & flags::FIN_BY_REPLY != 0 {
                    tcp::Direction::Reply
                } else {
                    tcp::Direction::Original
                };
                let (next, closer) = tcp::next(state, closer, f, dir);
                e.state = next as u8;
                if closer == tcp::Direction::Reply {
                    e.flags |= flags::FIN_BY_REPLY;
                } else {
                    e.flags &= !flags::FIN_BY_REPLY;
                }
                if dir == tcp::Direction::Reply {
                    // Answered: a flow picked up mid-stream is a connection.
                    e.flags &= !flags::PICKED_UP;
                }
                sv.timeouts.tracked(next, e.flags & flags::PICKED_UP != 0)
            }
            L4::Udp | L4::Echo => {
                if e.flags & flags::BACKEND_GONE != 0 {
                    // The stale-UDP-conntrack problem: the flow picks a live backend.
                    forget(t, &e);
                    return Ok(None);
                }
                if e.direction == Direction::Reply {
                    e.state = 1; // replied
                }
                match kind {
                    L4::Echo => sv.timeouts.icmp,
                    _ if e.state == 1 => sv.timeouts.udp_stream,
                    _ => sv.timeouts.udp,
                }
            }
        };
        let timeout = seconds(timeout);
        let expires = now.saturating_add(timeout);
        // Written back on a state change, or once an eighth of the timeout has gone
        // by: a busy flow costs a write now and then, not one per packet.
        let stale = e.expires.saturating_add(timeout / 8) < expires;
        if stale || old_state != e.state || old_flags != e.flags || old_window != e.window {
            e.expires = expires;
            if e.flags & flags::WINDOW != 0 {
                // The other side's end as its own entry has it (it may have moved on
                // since this entry was written): this write must not take it back.
                let (k, _) = counterpart(t, &e);
                if let Some(o) = A::get(&sv.conntrack, &k, now) {
                    window::merge_other(
                        &mut e.window,
                        &o.window,
                        e.direction == Direction::Original,
                    );
                }
            }
            let (k, v) = counterpart(t, &e);
            A::put(&sv.conntrack, t, &e, now);
            A::put(&sv.conntrack, &k, &v, now);
        }
        Ok(Some(e))
    }

    /// Whether TCP segment `sg` (flags `f`, direction `d`) of a flow in state `state`
    /// lies within the flow's window ([`nat::conntrack::window`]), recording the
    /// handshake's side of it as it goes: a client's SYN (again, while unanswered),
    /// the server's SYN-ACK, a side's end moved on.
    fn in_window<A: Copy>(
        &self,
        e: &mut Nat<A>,
        state: State,
        f: u8,
        d: tcp::Direction,
        sg: Segment,
        now: u32,
    ) -> bool {
        use tcp::flags::{ACK, RST, SYN};
        let syn = f & (SYN | ACK | RST);
        if e.flags & flags::WINDOW != 0 {
            match (state, d, syn) {
                // A client's bare SYN on a flow past SYN_SENT (reconnecting on the
                // ports of a connection it lost): passed unchecked, as Linux
                // ignores it; the window is not moved.
                (_, tcp::Direction::Original, SYN) => return true,
                // The server's SYN-ACK again, perhaps with a new sequence number
                // (a recreated request, SYN cookies): its side starts over.
                (State::SynRecv, tcp::Direction::Reply, x) if x == SYN | ACK => {
                    window::syn_ack(&mut e.window, sg.seq, sg.len, sg.wscale);
                    return true;
                }
                // A RST before the handshake completed.
                (State::SynRecv, _, x) if x & RST != 0 => return true,
                _ => {}
            }
        }
        if e.flags & flags::WINDOW == 0 {
            if e.flags & flags::SYN_SEEN == 0 {
                return true; // picked up mid-stream, or liberal
            }
            if state == State::SynSent {
                match (d, syn) {
                    (tcp::Direction::Original, SYN) => {
                        // A SYN again, perhaps with another sequence number.
                        e.window = window::syn(sg.seq, sg.len, sg.wscale);
                    }
                    (tcp::Direction::Reply, x) if x == SYN | ACK => {
                        window::syn_ack(&mut e.window, sg.seq, sg.len, sg.wscale);
                        e.flags |= flags::WINDOW;
                    }
                    // The server's other answers (a RST for a closed port) are
                    // not checked: its sequence space is not known yet.
                    _ => {}
                }
            }
            return true;
        }
        if !window::acceptable(&e.window, d, sg.seq, sg.len) {
            // Written more than a while ago: the flow may have gone through another
            // node meanwhile (ECMP moved it, then back), and the window here is
            // stale. It is not checked from now on rather than cut off.
            let written = e
                .expires
                .saturating_sub(seconds(self.s.services.timeouts.tcp(state)));
            if now.saturating_sub(written) > STALE_WINDOW {
                e.flags &= !(flags::WINDOW | flags::SYN_SEEN);
                return true;
            }
            return false;
        }
        if let Some(end) = window::advanced(&e.window, d, sg.seq, sg.len) {
            window::set_end(&mut e.window, d, end);
        }
        true
    }

    /// The first packet of a flow to frontend `f`.
    fn new_flow<A: Family>(
        &mut self,
        t: Tuple<A>,
        l4: usize,
        kind: L4,
        f: &Frontend,
        now: u32,
        last: bool,
    ) -> Result<Step, Raced> {
        let s = self.s;
        let sv = &s.services;
        let src: IpAddr = t.src.into();
        // Arriving from the network at a frontend other than a ClusterIP, every client
        // counts as from outside, as kube-proxy's external chains have it: another
        // node's pod or host stack reaching this node's NodePort is SNATed with the
        // Cluster policy (else a backend on a third node would answer it directly, past
        // this node's reverse NAT) and served by local endpoints with Local.
        let origin = if self.port.role == PortRole::Uplink && f.kind != Kind::ClusterIp {
            Origin::External
        } else {
            self.origin(src)
        };
        if origin == Origin::External
            && !f.source_ranges.is_empty()
            && !f
                .source_ranges
                .iter()
                .any(|&(net, len)| in_prefix(src, net, len))
        {
            sv.frontends.count_drop(f.id, PortDrop::SourceRange);
            return Ok(Step::Done(Verdict::Drop(DropReason::SourceRange)));
        }
        let state = match kind {
            L4::Tcp { flags: fl, .. } => match tcp::open(fl) {
                Some(st) => st as u8,
                // A SYN-ACK or a RST with no flow: not a connection of ours.
                None => {
                    sv.frontends.count_drop(f.id, PortDrop::Invalid);
                    return Ok(Step::Done(Verdict::Drop(DropReason::Invalid)));
                }
            },
            _ => 0,
        };
        let choice = f.choice(origin);
        let sticky = f.affinity.and_then(|_| {
            sv.affinity
                .get(src, f.id, now)
                .filter(|b| choice.backends.contains(b))
        });
        // With ClientIP affinity the first choice hashes the client alone: every node
        // picks the same backend for the client, so its connections stick together
        // even when the fabric's ECMP spreads them over nodes (whose affinity tables
        // are their own).
        let hash = if f.affinity.is_some() {
            A::hash(&Tuple {
                src: t.src,
                dst: t.src,
                sport: 0,
                dport: 0,
                protocol: 0,
            })
        } else {
            A::hash(&t)
        };
        let Some(backend) = sticky.or_else(|| choice.pick(hash)) else {
            if choice.reject {
                sv.frontends.count_drop(f.id, PortDrop::NoEndpoints);
                return Ok(Step::Done(self.reject(kind, DropReason::NoEndpoints)));
            }
            sv.frontends.count_drop(f.id, PortDrop::NoLocalEndpoint);
            return Ok(Step::Done(Verdict::Drop(DropReason::NoLocalEndpoint)));
        };
        let Some(baddr) = A::from_ip(backend.addr) else {
            // A backend of the other family (a dual-stack service's endpoint list
            // mixed): not reachable with this packet.
            return Ok(Step::Done(Verdict::Drop(DropReason::NoLocalEndpoint)));
        };
        if let Some(timeout) = f.affinity {
            sv.affinity.put(src, f.id, backend, now, seconds(timeout));
        }
        let dport = if kind == L4::Echo {
            t.sport
        } else {
            backend.port
        };
        // Replies must come back through this node when the backend would otherwise
        // answer the client directly and bypass the reverse NAT: a pod reaching
        // itself (hairpin: it would see its own address), and outside clients but
        // those of the Local policy (the backend may be on another node, whose replies
        // would leave from there; for a ClusterIP reached from off the cluster, with
        // --advertise-cluster-ip, kube-proxy's "masquerade off-cluster traffic").
        // The node's own stack too (F7, through the host port): a backend on another
        // node answers the node's address, where only a port of the SNAT range brings
        // the answer to the fastpath rather than to the kernel's socket untranslated.
        let hairpin = baddr == t.src;
        let masquerade = !hairpin
            && (sv.masquerade_all
                || self.port.role == PortRole::Host
                || (origin == Origin::External && !f.outside_local));
        let timeout = seconds(match kind {
            L4::Tcp { .. } => sv.timeouts.tracked(
                State::from_u8(state).unwrap_or(State::SynSent),
                state == State::Established as u8,
            ),
            L4::Udp => sv.timeouts.udp,
            L4::Echo => sv.timeouts.icmp,
        });
        let (opened, window) = opening(kind, state, sv.tcp_be_liberal);
        let mut n = Nat {
            src: t.src,
            sport: t.sport,
            dst: baddr,
            dport,
            direction: Direction::Original,
            state,
            flags: opened,
            service: f.id,
            expires: now.saturating_add(timeout),
            window,
        };
        // Whether `snat_port` claimed a port's reply entry for this flow.
        let mut claimed = false;
        if hairpin {
            // The pod sees its service's address as the source of its own packets.
            n.src = t.dst;
            n.flags |= flags::SNAT;
        } else if masquerade {
            let Some(node) = A::snat(sv) else {
                return Ok(Step::Done(Verdict::Drop(DropReason::NoSnatAddress)));
            };
            n.src = node;
            n.flags |= flags::SNAT;
            match self.snat_port(&t, &mut n, kind) {
                Ok(()) => claimed = true,
                Err(v) => return Ok(Step::Done(v)),
            }
        } else if let Some(other) = A::get(&sv.conntrack, &counterpart(&t, &n).0, now)
            .filter(|o| translated(o, t.protocol) != t.reversed())
        {
            // The addresses are kept, but another flow already holds the reply tuple:
            // the same client port to another frontend whose backend this is. A TCP
            // connection that is over (TIME_WAIT, or reset) gives it up: its entries
            // go, as Linux's NAT evicts a closing connection on a reply tuple clash.
            // A live one keeps it, and the new flow gets another source port from the
            // SNAT range (as Linux's NAT remaps it, the null binding of its other
            // direction), or its replies and the other flow's would be one flow.
            let over = matches!(kind, L4::Tcp { .. })
                && matches!(
                    State::from_u8(other.state),
                    Some(State::TimeWait | State::Close)
                );
            if over {
                A::remove(
                    &sv.conntrack,
                    &translated(&other, t.protocol).reversed(),
                    now,
                );
            } else {
                n.flags |= flags::SNAT;
                match self.snat_port(&t, &mut n, kind) {
                    Ok(()) => claimed = true,
                    Err(v) => return Ok(Step::Done(v)),
                }
            }
        }
        let (k, v) = counterpart(&t, &n);
        // The flow's own entry only where no live one is: another worker may have
        // stored this flow since this one's lookup (or the lookup missed its entry
        // mid-write). Then that flow stands, the SNAT port claimed for this one is
        // given back, and the packet is looked up again.
        let mine = if last {
            A::put(&sv.conntrack, &t, &n, now)
        } else {
            A::put_new(&sv.conntrack, &t, &n, now)
        };
        if mine == Inserted::Exists {
            if claimed {
                A::remove(&sv.conntrack, &k, now);
            }
            return Err(Raced);
        }
        // (A claimed SNAT port's reply entry is stored already.)
        let reply = if claimed {
            Inserted::Stored
        } else {
            A::put(&sv.conntrack, &k, &v, now)
        };
        if mine == Inserted::Refused || reply == Inserted::Refused {
            A::remove(&sv.conntrack, &k, now);
            A::remove(&sv.conntrack, &t, now);
            sv.frontends.count_drop(f.id, PortDrop::ConntrackFull);
            return Ok(Step::Done(Verdict::Drop(DropReason::ConntrackFull)));
        }
        sv.frontends.count(f.id, backend, self.n, true);
        A::rewrite(self.frame(), l4, kind, &t, &translated(&n, t.protocol));
        self.t.nat_new_flows += 1;
        self.t.nat_packets += 1;
        Ok(Step::Translated)
    }

    /// Picks a port of the SNAT range for a flow whose source becomes `n.src`, starting
    /// from the flow's hash: the first whose reply tuple no flow holds, claimed by
    /// storing the flow's reply entry there (only if none is: two workers picking one
    /// port for two flows at once get it once). The caller stores both entries after.
    fn snat_port<A: Family>(
        &mut self,
        t: &Tuple<A>,
        n: &mut Nat<A>,
        kind: L4,
    ) -> Result<(), Verdict> {
        let sv = &self.s.services;
        let now = self.local.seconds;
        let (lo, hi) = sv.snat_ports;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let start = (A::hash(t) >> 39) as u32 % span;
        for i in 0..PORT_TRIES.min(span) {
            let port = lo + ((start + i.wrapping_mul(7919)) % span) as u16;
            n.sport = port;
            if kind == L4::Echo {
                n.dport = port;
            }
            let (reply, back) = counterpart(t, n);
            match A::put_new(&sv.conntrack, &reply, &back, now) {
                Inserted::Stored | Inserted::Evicted => return Ok(()),
                Inserted::Exists => {}
                Inserted::Refused => return Err(Verdict::Drop(DropReason::ConntrackFull)),
            }
        }
        Err(Verdict::Drop(DropReason::SnatPortsExhausted))
    }

    /// Refuses a packet as a closed port is refused: a RST for TCP, ICMP port
    /// unreachable for UDP, nothing for an echo.
    fn reject(&mut self, kind: L4, reason: DropReason) -> Verdict {
        match kind {
            L4::Tcp { flags: f, .. } if f & tcp::flags::RST == 0 => self.tcp_reset(reason),
            L4::Tcp { .. } | L4::Echo => Verdict::Drop(reason),
            L4::Udp => {
                let v4 = self.buf.get(ETH).is_some_and(|b| b >> 4 == 4);
                if v4 {
                    let dst = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]).dst();
                    self.icmp4_error_from(
                        reason,
                        icmp::v4::Repr::DstUnreachable {
                            code: 3,
                            next_hop_mtu: 0,
                        },
                        Some(dst),
                    )
                } else {
                    let dst = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]).dst();
                    self.icmp6_error_from(
                        reason,
                        icmp::v6::Repr::DstUnreachable { code: 4 },
                        Some(dst),
                    )
                }
            }
        }
    }

    /// Answers a TCP segment with a RST from its destination (RFC 9293 3.10.7.1: the
    /// sequence number is the segment's acknowledgment if it had one, else zero with
    /// an acknowledgment of the segment), built in place; counts `reason`.
    pub(super) fn tcp_reset(&mut self, reason: DropReason) -> Verdict {
        const TCP: usize = 20;
        let v4 = self.buf.get(ETH).is_some_and(|b| b >> 4 == 4);
        let (l4, payload_end) = if v4 {
            let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
            (ETH + ip.header_len(), ETH + usize::from(ip.total_len()))
        } else {
            let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
            match ip.upper_layer() {
                Ok(u) if u.protocol == ip_proto::TCP && !u.fragment => (
                    ETH + u.offset,
                    ETH + ipv6::Repr::HEADER_LEN + usize::from(ip.payload_len()),
                ),
                _ => return Verdict::Drop(reason),
            }
        };
        let Ok(seg) = crate::wire::tcp::Packet::new_checked(&self.buf[l4..payload_end]) else {
            return Verdict::Drop(reason);
        };
        let (sport, dport, seq, ack, fl) = (
            seg.src_port(),
            seg.dst_port(),
            seg.seq(),
            seg.ack(),
            seg.flags(),
        );
        let len = payload_end.saturating_sub(l4 + seg.header_len()) as u32
            + u32::from(fl & crate::wire::tcp::flags::SYN != 0)
            + u32::from(fl & crate::wire::tcp::flags::FIN != 0);
        use crate::wire::tcp::flags::{ACK, RST};
        let (rseq, rack, rflags) = if fl & ACK != 0 {
            (ack, 0, RST)
        } else {
            (0, seq.wrapping_add(len), RST | ACK)
        };
        let ip_len = if v4 {
            ipv4::Repr::HEADER_LEN
        } else {
            ipv6::Repr::HEADER_LEN
        };
        let at = ETH + ip_len;
        let new_len = at + TCP;
        if new_len > self.buf.len() {
            return Verdict::Drop(reason);
        }
        let pseudo = if v4 {
            let ip = ipv4::Packet::new_unchecked(&self.buf[ETH..self.n]);
            let (src, dst) = (ip.src(), ip.dst());
            ipv4::Repr {
                src: dst,
                dst: src,
                protocol: ip_proto::TCP,
                ttl: super::reply::OWN_TTL,
                tos: 0,
                payload_len: TCP as u16,
            }
            .emit(&mut ipv4::Packet::new_unchecked(&mut self.buf[ETH..at]));
            checksum::pseudo_ipv4(dst, src, ip_proto::TCP, TCP as u16)
        } else {
            let ip = ipv6::Packet::new_unchecked(&self.buf[ETH..self.n]);
            let (src, dst) = (ip.src(), ip.dst());
            ipv6::Repr {
                src: dst,
                dst: src,
                next_header: ip_proto::TCP,
                hop_limit: super::reply::OWN_TTL,
                payload_len: TCP as u16,
            }
            .emit(&mut ipv6::Packet::new_unchecked(&mut self.buf[ETH..at]));
            checksum::pseudo_ipv6(&dst, &src, ip_proto::TCP, TCP as u32)
        };
        let b = &mut self.buf[at..new_len];
        b.fill(0);
        write_u16(b, 0, dport);
        write_u16(b, 2, sport);
        b[4..8].copy_from_slice(&rseq.to_be_bytes());
        b[8..12].copy_from_slice(&rack.to_be_bytes());
        write_u16(b, 12, (5 << 12) | rflags);
        crate::wire::tcp::Packet::new_unchecked(b).fill_checksum(pseudo);
        self.t.drop(reason);
        self.t.resets += 1;
        self.reply(new_len)
    }
}
