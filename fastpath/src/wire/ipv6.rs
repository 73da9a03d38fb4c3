//! IPv6 headers (RFC 8200) and the walk over extension headers to the upper layer.

use super::{read_u16, read_u32, Malformed, Result};

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const HEADER: usize = 40;
}

/// Extension headers (RFC 8200 section 4, RFC 7045): the next-header values a forwarder
/// steps over to find the transport header.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// At most this many extension headers are walked; a packet with more is malformed for
/// the fastpath (RFC 8200 recommends each at most once, Destination Options twice).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Where the upper-layer header of a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Its protocol number (ESP and No Next Header end the walk too).
    pub protocol: u8,
    /// Its offset from the start of the IPv6 header.
    pub offset: usize,
    /// The packet carries a Fragment header.
    pub fragment: bool,
    /// The fragment is not the first: no upper-layer header is in this packet.
    pub later_fragment: bool,
    /// The Fragment header's M flag: more fragments follow (a first fragment without
    /// it is an atomic fragment, the whole datagram, RFC 8021).
    pub more_fragments: bool,
    /// The Fragment header's identification (0 without one).
    pub fragment_ident: u32,
}

view!(
    /// A view of an IPv6 packet.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Version 6; the fixed header and the payload length it states fit in the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER || b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Malformed);
        }
        if field::HEADER + usize::from(self.payload_len()) > b.len() {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or_default()
    }

    pub fn dst(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or_default()
    }

    /// The destination as an integer in host order, as the LPM tables take it.
    pub fn dst_u128(&self) -> u128 {
        u128::from_be_bytes(self.dst())
    }

    /// The whole packet: header and payload, without bytes past the payload length.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::HEADER + usize::from(self.payload_len())]
    }

    /// Walks the extension headers to the upper-layer header. Fails if a header runs
    /// past the payload, or there are more than [`MAX_EXTENSION_HEADERS`].
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = self.packet();
        let mut next = self.next_header();
        let mut at = field::HEADER;
        let (mut fragment, mut later_fragment, mut more_fragments) = (false, false, false);
        let mut fragment_ident = 0;
        for _ in 0..=MAX_EXTENSION_HEADERS {
            let len = match next {
                ext::HOP_BY_HOP
                | ext::ROUTING
                | ext::DEST_OPTS
                | ext::MOBILITY
                | ext::HIP
                | ext::SHIM6 => (usize::from(*b.get(at + 1).ok_or(Malformed)?) + 1) * 8,
                ext::FRAGMENT => {
                    fragment = true;
                    let h = b.get(at..at + 8).ok_or(Malformed)?;
                    later_fragment = u16::from_be_bytes([h[2], h[3]]) >> 3 != 0;
                    more_fragments = h[3] & 1 == 1;
                    fragment_ident = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                    if later_fragment {
                        // What follows a later fragment's header is the datagram's
                        // payload from its offset on, headers or not (RFC 8200 4.5).
                        return Ok(UpperLayer {
                            protocol: h[0],
                            offset: at + 8,
                            fragment,
                            later_fragment,
                            more_fragments,
                            fragment_ident,
                        });
                    }
                    8
                }
                ext::AUTH => (usize::from(*b.get(at + 1).ok_or(Malformed)?) + 2) * 4,
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: at,
                        fragment,
                        later_fragment,
                        more_fragments,
                        fragment_ident,
                    })
                }
            };
            if at + len > b.len() {
                return Err(Malformed);
            }
            next = b[at];
            at += len;
        }
        Err(Malformed)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Decrements the hop limit (IPv6 has no header checksum); returns the new value.
    pub fn decrement_hop_limit(&mut self) -> u8 {
        let b = self.buffer.as_mut();
        b[field::HOP_LIMIT] = b[field::HOP_LIMIT].saturating_sub(1);
        b[field::HOP_LIMIT]
    }

    pub fn set_src(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    pub fn set_dst(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    pub fn packet_mut(&mut self) -> &mut [u8] {
        let end = field::HEADER + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[..end]
    }
}

/// An IPv6 header, as the fastpath writes the headers of the packets it originates
/// (ICMPv6 errors, echo replies, neighbour advertisements): smoltcp's representation
/// layer, with traffic class and flow label zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: u16,
}

impl Repr {
    /// The length of the header [`Repr::emit`] writes.
    pub const HEADER_LEN: usize = field::HEADER;

    /// Reads a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: p.payload_len(),
        }
    }

    /// Writes the header into the first [`Repr::HEADER_LEN`] bytes of `p`'s buffer,
    /// which must hold them.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let b = p.buffer.as_mut();
        b[field::VER_TC_FLOW..field::PAYLOAD_LEN].copy_from_slice(&[0x60, 0, 0, 0]);
        super::write_u16(b, field::PAYLOAD_LEN, self.payload_len);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src);
        b[field::DST].copy_from_slice(&self.dst);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2001:db8::2 -> 2001:db8::3, hop limit 64, then a Hop-by-Hop header (8 bytes), a
    /// Fragment header (first fragment), and 8 bytes of UDP.
    pub(crate) fn with_extensions() -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0, 0, 24, ext::HOP_BY_HOP, 64];
        b.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        b.extend([ext::FRAGMENT, 0, 1, 4, 0, 0, 0, 0]); // Hop-by-Hop: PadN
        b.extend([17, 0, 0, 1, 0, 0, 0, 7]); // Fragment: offset 0, M=1, id 7
        b.extend([0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]); // UDP 12345 -> 53
        b
    }

    #[test]
    fn deconstruct() {
        let b = with_extensions();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (24, 0, 64)
        );
        assert_eq!(p.dst_u128(), 0x2001_0db8_0000_0000_0000_0000_0000_0003);
        let ul = p.upper_layer().unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: 17,
                offset: 56,
                fragment: true,
                later_fragment: false,
                more_fragments: true,
                fragment_ident: 7
            }
        );
    }

    #[test]
    fn construct() {
        let mut b = with_extensions();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_hop_limit(), 63);
        p.set_dst([0xfe; 16]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().dst(), [0xfe; 16]);
    }

    #[test]
    fn later_fragments_and_bad_chains() {
        let mut b = with_extensions();
        b[50] = 0x01; // fragment offset 32 bytes
        assert!(
            Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap()
                .later_fragment
        );
        // A later fragment whose Next Header names a Destination Options header: the
        // bytes after it are payload (here not a valid header), not walked into.
        let mut b = with_extensions();
        b[50] = 0x01;
        b[48] = ext::DEST_OPTS;
        b[57] = 200; // as a header's length: far past the packet
        let ul = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            (ul.protocol, ul.offset, ul.later_fragment),
            (ext::DEST_OPTS, 56, true)
        );
        let mut b = with_extensions();
        b[41] = 10; // Hop-by-Hop says 88 bytes
        assert!(Packet::new_checked(&b[..]).unwrap().upper_layer().is_err());
        // A chain of Destination Options headers longer than the cap.
        let mut b = with_extensions()[..40].to_vec();
        b[6] = ext::DEST_OPTS;
        for _ in 0..10 {
            b.extend([ext::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        b[5] = 80;
        assert!(Packet::new_checked(&b[..]).unwrap().upper_layer().is_err());
    }

    #[test]
    fn impossible_lengths() {
        let b = with_extensions();
        assert!(Packet::new_checked(&b[..39]).is_err());
        assert!(Packet::new_checked(&b[..63]).is_err()); // payload length says 24
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert!(Packet::new_checked(&v4[..]).is_err());
    }

    #[test]
    fn repr_round_trip() {
        let b = with_extensions();
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap());
        assert_eq!((r.next_header, r.hop_limit, r.payload_len), (0, 64, 24));
        let mut out = [0xaa; 40];
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &b[..40]);
    }
}
