//! What TCP and UDP share for a forwarder and a NAT: the ports in the first four bytes,
//! and a checksum over a pseudo-header that a rewrite of a port or of an IP address must
//! update (RFC 1624).
//!
//! The two headers differ only in where the checksum sits and in UDP's "no checksum"
//! (zero), so one view serves both; [`super::tcp`] and [`super::udp`] keep the fields
//! that are their own. ECMP hashing reads the ports through it, and so will service NAT.

use super::checksum;
use super::{read_u16, write_u16, Malformed, Result};
use crate::wire::ip_proto;

/// The transport protocols with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The protocol of an IP protocol number, if it has ports.
    #[inline]
    pub fn of(ip_protocol: u8) -> Option<Protocol> {
        match ip_protocol {
            ip_proto::TCP => Some(Protocol::Tcp),
            ip_proto::UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => ip_proto::TCP,
            Protocol::Udp => ip_proto::UDP,
        }
    }

    fn checksum_at(self) -> usize {
        match self {
            Protocol::Tcp => 16,
            Protocol::Udp => 6,
        }
    }

    /// UDP's zero checksum means "none" (RFC 768) and must stay zero; TCP's is always
    /// there.
    fn optional_checksum(self) -> bool {
        self == Protocol::Udp
    }
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
}

/// The ports and checksum of a TCP or UDP header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Transport<T> {
    buffer: T,
    protocol: Protocol,
}

impl<T: AsRef<[u8]>> Transport<T> {
    /// Wraps `buffer` without a check (see the contract in [`crate::wire`]).
    pub fn new_unchecked(buffer: T, protocol: Protocol) -> Self {
        Transport { buffer, protocol }
    }

    /// Wraps `buffer` once it holds the ports and the checksum.
    pub fn new_checked(buffer: T, protocol: Protocol) -> Result<Self> {
        let t = Self::new_unchecked(buffer, protocol);
        t.check_len()?;
        Ok(t)
    }

    /// The ports and the checksum lie within the buffer.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < self.protocol.checksum_at() + 2 {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.protocol.checksum_at())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Transport<T> {
    /// Rewrites the source port, updating the checksum if there is one.
    pub fn set_src_port(&mut self, port: u16) {
        self.rewrite_u16(field::SRC_PORT, port);
    }

    /// Rewrites the destination port, updating the checksum if there is one.
    pub fn set_dst_port(&mut self, port: u16) {
        self.rewrite_u16(field::DST_PORT, port);
    }

    /// Updates the checksum (if there is one) for an IPv4 pseudo-header address that
    /// changed from `old` to `new`.
    pub fn update_for_ipv4_address(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.update_checksum(|c| {
            checksum::update32(c, u32::from_be_bytes(old), u32::from_be_bytes(new))
        });
    }

    /// The same for an IPv6 pseudo-header address.
    pub fn update_for_ipv6_address(&mut self, old: &[u8; 16], new: &[u8; 16]) {
        self.update_checksum(|c| checksum::update128(c, old, new));
    }

    fn rewrite_u16(&mut self, at: usize, value: u16) {
        let old = read_u16(self.buffer.as_ref(), at);
        write_u16(self.buffer.as_mut(), at, value);
        self.update_checksum(|c| checksum::update16(c, old, value));
    }

    fn update_checksum(&mut self, update: impl FnOnce(u16) -> u16) {
        let at = self.protocol.checksum_at();
        let c = read_u16(self.buffer.as_ref(), at);
        let optional = self.protocol.optional_checksum();
        if !(optional && c == 0) {
            let c = update(c);
            // UDP sends a computed zero as all ones (RFC 768; IPv6 receivers drop a zero,
            // RFC 8200 8.1): the update can come out as zero where a full computation
            // would give all ones, the same sum.
            let c = if optional && c == 0 { 0xffff } else { c };
            write_u16(self.buffer.as_mut(), at, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A UDP header 1000 -> 53 with a checksum, and one without (zero).
    const UDP: [u8; 8] = [0x03, 0xe8, 0x00, 0x35, 0x00, 0x08, 0x12, 0x34];

    #[test]
    fn reads_ports_of_either_protocol() {
        let t = Transport::new_checked(&UDP[..], Protocol::Udp).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.checksum()),
            (1000, 53, 0x1234)
        );
        assert!(Transport::new_checked(&UDP[..], Protocol::Tcp).is_err());
        assert!(Transport::new_checked(&UDP[..7], Protocol::Udp).is_err());
        assert_eq!(Protocol::of(6), Some(Protocol::Tcp));
        assert_eq!(Protocol::of(1), None);
    }

    #[test]
    fn a_zero_udp_checksum_stays_zero() {
        let mut b = UDP;
        b[6..8].copy_from_slice(&[0, 0]);
        let mut t = Transport::new_checked(&mut b[..], Protocol::Udp).unwrap();
        t.set_dst_port(5353);
        t.update_for_ipv4_address([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!((t.dst_port(), t.checksum()), (5353, 0));
    }

    #[test]
    fn an_updated_udp_checksum_is_never_zero() {
        // The port that makes the incremental update of 0x1234 come out as zero.
        let port = (0..=u16::MAX)
            .find(|&p| checksum::update16(0x1234, 53, p) == 0)
            .expect("some port zeroes the sum");
        let mut b = UDP;
        let mut t = Transport::new_checked(&mut b[..], Protocol::Udp).unwrap();
        t.set_dst_port(port);
        assert_eq!(t.checksum(), 0xffff, "zero is sent as all ones");
        // TCP has no such rule (its checksum is never optional).
        let mut b = [0u8; 20];
        b[2..4].copy_from_slice(&53u16.to_be_bytes());
        b[16..18].copy_from_slice(&0x1234u16.to_be_bytes());
        let mut t = Transport::new_checked(&mut b[..], Protocol::Tcp).unwrap();
        t.set_dst_port(port);
        assert_eq!(t.checksum(), 0);
    }

    #[test]
    fn ipv6_address_rewrite_matches_a_recomputed_checksum() {
        let src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let (old, new) = ([0xfd; 16], [0xfe; 16]);
        let mut b = [0x9c, 0x40, 0, 80, 0, 8, 0, 0, 0xab, 0xcd];
        let pseudo = |dst: &[u8; 16]| checksum::pseudo_ipv6(&src, dst, 17, 10);
        let c = checksum::checksum(pseudo(&old), &b);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        Transport::new_checked(&mut b[..], Protocol::Udp)
            .unwrap()
            .update_for_ipv6_address(&old, &new);
        assert_eq!(checksum::fold(checksum::sum(pseudo(&new), &b)), 0xffff);
    }
}
