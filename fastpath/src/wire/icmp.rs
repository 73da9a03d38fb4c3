//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: echo, the errors a router sends,
//! and IPv6 neighbour discovery (RFC 4861), which the fastpath answers for its pods.

use super::checksum;
use super::{read_u16, write_u16, Malformed, Result};

/// ICMPv4 types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 types.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// Echo identifier and sequence; the unused/pointer/MTU word of errors; the flags
    /// of a neighbour advertisement.
    pub const REST: Range<usize> = 4..8;
    pub const HEADER: usize = 8;
    /// The target address of a neighbour solicitation or advertisement.
    pub const ND_TARGET: Range<usize> = 8..24;
}

view!(
    /// A view of an ICMPv4 or ICMPv6 message; the buffer ends where the IP payload ends.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The 8-byte header fits.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::HEADER {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The second 32-bit word (echo id and sequence, error fields, ND flags).
    pub fn rest(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::REST]
            .try_into()
            .unwrap_or_default()
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST.start)
    }

    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST.start + 2)
    }

    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER..]
    }

    /// The target address of a neighbour solicitation or advertisement, if the message
    /// is one and is long enough to hold it.
    pub fn nd_target(&self) -> Option<[u8; 16]> {
        let t = self.msg_type();
        if t != v6::NEIGHBOR_SOLICIT && t != v6::NEIGHBOR_ADVERT {
            return None;
        }
        self.buffer.as_ref().get(field::ND_TARGET)?.try_into().ok()
    }

    /// Whether the checksum is right; `pseudo` is 0 for ICMPv4 and the IPv6
    /// pseudo-header sum for ICMPv6.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(checksum::sum(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    pub fn set_rest(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&rest);
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER..]
    }

    /// Computes and stores the checksum (`pseudo` as in [`Packet::verify_checksum`]).
    pub fn fill_checksum(&mut self, pseudo: u32) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let c = checksum::checksum(pseudo, self.buffer.as_ref());
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ICMPv4 echo request, id 0x1234, seq 1, payload "hi", as `ping` sends it.
    const ECHO: [u8; 10] = [8, 0, 0x7d, 0x61, 0x12, 0x34, 0x00, 0x01, b'h', b'i'];

    #[test]
    fn deconstruct_echo() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (v4::ECHO_REQUEST, 0, 0x1234, 1)
        );
        assert_eq!(p.body(), b"hi");
        assert!(p.verify_checksum(0));
        assert_eq!(p.nd_target(), None);
    }

    #[test]
    fn construct_echo_reply() {
        let mut b = ECHO;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(v4::ECHO_REPLY);
        p.fill_checksum(0);
        assert!(p.verify_checksum(0));
        assert_eq!(&b[..4], &[0, 0, 0x85, 0x61]);
    }

    #[test]
    fn neighbour_solicitation() {
        // Who has 2001:db8::1, from 2001:db8::2 (solicited-node multicast).
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
        let target = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut b = vec![v6::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        b.extend(target);
        let pseudo = checksum::pseudo_ipv6(&src, &dst, 58, b.len() as u32);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(pseudo);
        assert!(p.verify_checksum(pseudo));
        assert_eq!(p.nd_target(), Some(target));
        assert_eq!(Packet::new_checked(&b[..20]).unwrap().nd_target(), None);
    }

    #[test]
    fn impossible_lengths() {
        assert!(Packet::new_checked(&ECHO[..7]).is_err());
        assert!(Packet::new_checked(&ECHO[..8]).unwrap().body().is_empty());
    }
}
