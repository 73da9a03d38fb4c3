//! IPv4 headers (RFC 791), options included.

use super::checksum;
use super::{read_u16, write_u16, Malformed, Result};

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const MIN_HEADER: usize = 20;
}

view!(
    /// A view of an IPv4 packet.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Version 4; a header length of at least 20 bytes within the buffer; a total length
    /// at least the header's and within the buffer (bytes past it, Ethernet padding, are
    /// not part of the packet).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::MIN_HEADER || b[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed);
        }
        let header = self.header_len();
        let total = usize::from(self.total_len());
        if header < field::MIN_HEADER || header > total || total > b.len() {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LEN)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x4000 != 0
    }

    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x2000 != 0
    }

    /// The fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x1fff) << 3
    }

    /// Whether this is a fragment (not the whole datagram).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or_default()
    }

    pub fn dst(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or_default()
    }

    /// The destination as an integer in host order, as the LPM tables take it.
    pub fn dst_u32(&self) -> u32 {
        u32::from_be_bytes(self.dst())
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MIN_HEADER..self.header_len()]
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(0, &self.buffer.as_ref()[..self.header_len()])) == 0xffff
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(0, &self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally (RFC 1624). Returns the
    /// new TTL; a packet that arrives with TTL 0 or 1 must not be forwarded, and the
    /// caller checks that before.
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buffer.as_mut();
        let old = read_u16(b, field::TTL);
        let ttl = b[field::TTL].saturating_sub(1);
        b[field::TTL] = ttl;
        let new = read_u16(b, field::TTL);
        let c = checksum::update16(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
        ttl
    }

    /// Rewrites the source address, updating the header checksum; returns the old one
    /// (the caller updates the transport checksum, whose pseudo-header covers it).
    pub fn set_src(&mut self, addr: [u8; 4]) -> [u8; 4] {
        self.rewrite(field::SRC.start, addr)
    }

    /// Rewrites the destination address, updating the header checksum; returns the old one.
    pub fn set_dst(&mut self, addr: [u8; 4]) -> [u8; 4] {
        self.rewrite(field::DST.start, addr)
    }

    fn rewrite(&mut self, at: usize, addr: [u8; 4]) -> [u8; 4] {
        let b = self.buffer.as_mut();
        let old: [u8; 4] = b[at..at + 4].try_into().unwrap_or_default();
        b[at..at + 4].copy_from_slice(&addr);
        let c = checksum::update32(
            read_u16(b, field::CHECKSUM),
            u32::from_be_bytes(old),
            u32::from_be_bytes(addr),
        );
        write_u16(b, field::CHECKSUM, c);
        old
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }
}

/// An IPv4 header without options, as the fastpath writes the headers of the packets it
/// originates (ICMP errors, echo replies): parse one into a `Repr`, or [`Repr::emit`]
/// one into a buffer (smoltcp's representation layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    pub ttl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// The length of what follows the header.
    pub payload_len: u16,
}

impl Repr {
    /// The length of the header [`Repr::emit`] writes.
    pub const HEADER_LEN: usize = field::MIN_HEADER;

    /// Reads a checked packet's header; a wrong header checksum is [`Malformed`].
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if !p.verify_checksum() {
            return Err(Malformed);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.dscp_ecn(),
            payload_len: p.total_len() - p.header_len() as u16,
        })
    }

    /// Writes the header (no options, not a fragment, identification 0) with its
    /// checksum into the first [`Repr::HEADER_LEN`] bytes of `p`'s buffer, which must
    /// hold them.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let total = (Self::HEADER_LEN as u16).saturating_add(self.payload_len);
        let b = p.buffer.as_mut();
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        write_u16(b, field::LEN, total);
        write_u16(b, field::IDENT, 0);
        write_u16(b, field::FLAGS_FRAG, 0);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC].copy_from_slice(&self.src);
        b[field::DST].copy_from_slice(&self.dst);
        p.fill_checksum();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 10.0.0.2 -> 10.0.1.3, UDP, TTL 64, 4 bytes of payload, a 4-byte option (NOP x4),
    /// and 2 bytes of Ethernet padding after it.
    pub(crate) const WITH_OPTIONS: [u8; 30] = [
        0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 2, 10, 0,
        1, 3, 1, 1, 1, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0,
    ];

    fn packet() -> [u8; 30] {
        let mut b = WITH_OPTIONS;
        Packet::new_checked(&mut b[..]).unwrap().fill_checksum();
        b
    }

    #[test]
    fn deconstruct() {
        let b = packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.header_len(), p.total_len(), p.ttl(), p.protocol()),
            (24, 28, 64, 17)
        );
        assert_eq!(
            (p.src(), p.dst(), p.dst_u32()),
            ([10, 0, 0, 2], [10, 0, 1, 3], 0x0a00_0103)
        );
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.options(), &[1, 1, 1, 1]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
        assert_eq!(p.ident(), 0x1234);
    }

    #[test]
    fn rewrites_keep_the_checksum_right() {
        let mut b = packet();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert_eq!(p.set_dst([192, 168, 7, 9]), [10, 0, 1, 3]);
        p.set_src([172, 16, 0, 1]);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn fragments() {
        let mut b = packet();
        b[6] = 0x20; // more fragments, offset 0
        assert!(Packet::new_checked(&b[..]).unwrap().is_fragment());
        b[6] = 0x00;
        b[7] = 0x02; // offset 16 bytes
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.frag_offset(), 16);
        assert!(p.is_fragment());
    }

    #[test]
    fn impossible_lengths() {
        let b = packet();
        assert!(Packet::new_checked(&b[..19]).is_err());
        assert!(Packet::new_checked(&b[..27]).is_err()); // shorter than total length
        let mut bad = b;
        bad[0] = 0x44; // header length 16
        assert!(Packet::new_checked(&bad[..]).is_err());
        bad[0] = 0x4f; // header length 60 > total length 28
        assert!(Packet::new_checked(&bad[..]).is_err());
        bad[0] = 0x65; // version 6
        assert!(Packet::new_checked(&bad[..]).is_err());
        bad = b;
        bad[3] = 20; // total length shorter than the header with options
        assert!(Packet::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn repr_round_trip() {
        let b = packet();
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            Repr {
                src: [10, 0, 0, 2],
                dst: [10, 0, 1, 3],
                protocol: 17,
                ttl: 64,
                tos: 0,
                payload_len: 4,
            }
        );
        let mut out = [0xaa; 24];
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        let golden = [
            0x45, 0, 0, 24, 0, 0, 0, 0, 64, 17, 0x65, 0xd1, 10, 0, 0, 2, 10, 0, 1, 3,
        ];
        assert_eq!(&out[..20], &golden);
        let again = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Repr::parse(&again), Ok(r));
        let mut bad = b;
        bad[10] ^= 1;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bad[..]).unwrap()),
            Err(Malformed)
        );
    }
}
