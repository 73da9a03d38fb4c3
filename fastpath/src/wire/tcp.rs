//! TCP headers (RFC 9293): the fields a forwarder and a NAT read and rewrite.

use super::checksum;
use super::transport::{Protocol, Transport};
use super::{read_u16, read_u32, write_u16, Malformed, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const HEADER: usize = 20;
}

/// TCP flag bits.
pub mod flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
}

view!(
    /// A view of a TCP segment; the buffer ends where the IP payload ends.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The fixed header fits, and the data offset is at least 20 and within the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER {
            return Err(Malformed);
        }
        let h = self.header_len();
        if h < field::HEADER || h > b.len() {
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

    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OFF_FLAGS) & 0x01ff
    }

    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The window scale option's shift (RFC 7323 2.2), if the options carry one; a
    /// malformed option list ends the search (what came before it stands).
    pub fn window_scale(&self) -> Option<u8> {
        let mut o = self.options();
        loop {
            match *o {
                [] | [0, ..] => return None,    // end of options
                [1, ref rest @ ..] => o = rest, // no-operation
                [3, 3, shift, ..] => return Some(shift),
                [_, len, ..] if usize::from(len) >= 2 && usize::from(len) <= o.len() => {
                    o = &o[usize::from(len)..];
                }
                _ => return None,
            }
        }
    }

    /// The sequence space the segment takes: its data, and one each for SYN and FIN.
    pub fn sequence_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32
            + u32::from(f & flags::SYN != 0)
            + u32::from(f & flags::FIN != 0)
    }

    /// Whether the checksum is right given the pseudo-header sum.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(checksum::sum(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the pseudo-header sum and the segment.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::checksum(pseudo, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// The ports and checksum, as TCP and UDP share them ([`Transport`]).
    pub fn transport(&mut self) -> Transport<&mut [u8]> {
        Transport::new_unchecked(self.buffer.as_mut(), Protocol::Tcp)
    }

    /// Rewrites the source port, updating the checksum.
    pub fn set_src_port(&mut self, port: u16) {
        self.transport().set_src_port(port);
    }

    /// Rewrites the destination port, updating the checksum.
    pub fn set_dst_port(&mut self, port: u16) {
        self.transport().set_dst_port(port);
    }

    /// Updates the checksum for an IPv4 pseudo-header address that
    /// changed from `old` to `new`.
    pub fn update_for_address(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.transport().update_for_ipv4_address(old, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 40000 -> 80, SYN, seq 1, data offset 6 (one MSS option: 1460), no payload.
    const SYN: [u8; 24] = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 2, 4,
        0x05, 0xb4,
    ];

    #[test]
    fn deconstruct_and_construct() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq(), p.ack()),
            (40000, 80, 1, 0)
        );
        assert_eq!(
            (p.header_len(), p.flags(), p.window()),
            (24, flags::SYN, 0xfaf0)
        );
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert!(p.payload().is_empty());
        let pseudo = checksum::pseudo_ipv4([10, 0, 0, 2], [10, 96, 0, 10], 6, 24);
        p.fill_checksum(pseudo);
        assert!(p.verify_checksum(pseudo));
        // DNAT to a backend: new destination address and port.
        p.set_dst_port(8080);
        p.update_for_address([10, 96, 0, 10], [10, 244, 1, 5]);
        let pseudo = checksum::pseudo_ipv4([10, 0, 0, 2], [10, 244, 1, 5], 6, 24);
        assert!(p.verify_checksum(pseudo));
    }

    /// A header with these option bytes (padded to a word).
    fn with_options(opts: &[u8], flags: u8, payload: usize) -> Vec<u8> {
        let words = opts.len().div_ceil(4);
        let mut b = vec![0u8; 20 + words * 4 + payload];
        b[12] = ((5 + words) as u8) << 4;
        b[13] = flags;
        b[20..20 + opts.len()].copy_from_slice(opts);
        b
    }

    #[test]
    fn window_scale_among_other_options() {
        let scale = |opts: &[u8]| {
            let b = with_options(opts, 0x02, 0);
            Packet::new_checked(&b[..]).unwrap().window_scale()
        };
        // Linux's SYN: MSS, SACK permitted, timestamps, NOP, window scale 7.
        let linux = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(scale(&linux), Some(7));
        assert_eq!(scale(&[2, 4, 5, 0xb4]), None);
        assert_eq!(scale(&[0, 3, 3, 7]), None, "after the end of options");
        assert_eq!(
            scale(&[2, 0, 3, 3, 7]),
            None,
            "a zero length ends the search"
        );
        assert_eq!(scale(&[2, 40, 3, 3, 7]), None, "a length past the header");
        assert_eq!(scale(&[1, 1, 1, 3]), None, "cut short");
        assert_eq!(
            scale(&[3, 4, 9, 0]),
            None,
            "a window scale of the wrong length"
        );
    }

    #[test]
    fn sequence_length_counts_syn_and_fin() {
        for (flags, payload, len) in [
            (0x02, 0, 1),
            (0x12, 0, 1),
            (0x10, 100, 100),
            (0x11, 5, 6),
            (0x04, 0, 0),
        ] {
            let b = with_options(&[], flags, payload);
            assert_eq!(Packet::new_checked(&b[..]).unwrap().sequence_len(), len);
        }
    }

    #[test]
    fn impossible_lengths() {
        assert!(Packet::new_checked(&SYN[..19]).is_err());
        assert!(Packet::new_checked(&SYN[..23]).is_err()); // data offset says 24
        let mut b = SYN;
        b[12] = 0x40; // data offset 16
        assert!(Packet::new_checked(&b[..]).is_err());
    }
}
