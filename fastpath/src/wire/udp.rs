//! UDP headers (RFC 768).

use super::checksum;
use super::transport::{Protocol, Transport};
use super::{read_u16, write_u16, Malformed, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const HEADER: usize = 8;
}

view!(
    /// A view of a UDP datagram.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The header fits, and the length field covers it and lies within the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER {
            return Err(Malformed);
        }
        let len = usize::from(self.len());
        if len < field::HEADER || len > b.len() {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LEN)
    }

    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= field::HEADER
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER..usize::from(self.len())]
    }

    /// Whether the checksum is right given the pseudo-header sum (zero means "none" over
    /// IPv4).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() == 0
            || checksum::fold(checksum::sum(
                pseudo,
                &self.buffer.as_ref()[..usize::from(self.len())],
            )) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the pseudo-header sum and the datagram.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::checksum(pseudo, &self.buffer.as_ref()[..usize::from(self.len())]);
        // A computed zero is sent as all ones (RFC 768): zero means "no checksum".
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The ports and checksum, as TCP and UDP share them ([`Transport`]).
    pub fn transport(&mut self) -> Transport<&mut [u8]> {
        Transport::new_unchecked(self.buffer.as_mut(), Protocol::Udp)
    }

    /// Rewrites the source port, updating the checksum if there is one.
    pub fn set_src_port(&mut self, port: u16) {
        self.transport().set_src_port(port);
    }

    /// Rewrites the destination port, updating the checksum if there is one.
    pub fn set_dst_port(&mut self, port: u16) {
        self.transport().set_dst_port(port);
    }

    /// Updates the checksum (if there is one) for an IPv4 pseudo-header address that
    /// changed from `old` to `new`.
    pub fn update_for_address(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.transport().update_for_ipv4_address(old, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 12345 -> 53, 4 bytes of payload, then a byte past the datagram.
    const DATAGRAM: [u8; 13] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, 1, 2, 3, 4, 0xff];
    const PSEUDO: fn() -> u32 = || checksum::pseudo_ipv4([10, 0, 0, 2], [10, 0, 1, 3], 17, 12);

    #[test]
    fn deconstruct_and_construct() {
        let mut b = DATAGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (12345, 53, 12));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        p.fill_checksum(PSEUDO());
        assert!(p.verify_checksum(PSEUDO()));
        p.set_dst_port(5353);
        p.update_for_address([10, 0, 1, 3], [192, 168, 0, 1]);
        let pseudo = checksum::pseudo_ipv4([10, 0, 0, 2], [192, 168, 0, 1], 17, 12);
        assert!(p.verify_checksum(pseudo));
        let incremental = p.checksum();
        p.fill_checksum(pseudo);
        assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn impossible_lengths() {
        assert!(Packet::new_checked(&DATAGRAM[..7]).is_err());
        assert!(Packet::new_checked(&DATAGRAM[..11]).is_err()); // length says 12
        let mut b = DATAGRAM;
        b[5] = 4; // shorter than the header
        assert!(Packet::new_checked(&b[..]).is_err());
    }
}
