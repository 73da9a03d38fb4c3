//! ARP over Ethernet for IPv4 (RFC 826): the only kind the fastpath answers.

use super::ethernet::Mac;
use super::{read_u16, write_u16, Malformed, Result};

/// ARP operations.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

mod field {
    use std::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const LEN: usize = 28;
}

view!(
    /// A view of an ARP packet.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// The buffer holds an Ethernet/IPv4 ARP packet (and says so: hardware type 1,
    /// protocol 0x0800, address lengths 6 and 4); any other kind is refused.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::LEN
            || read_u16(b, field::HTYPE) != 1
            || read_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_mac(&self) -> Mac {
        self.buffer.as_ref()[field::SHA]
            .try_into()
            .unwrap_or_default()
    }

    pub fn sender_ip(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::SPA]
            .try_into()
            .unwrap_or_default()
    }

    pub fn target_mac(&self) -> Mac {
        self.buffer.as_ref()[field::THA]
            .try_into()
            .unwrap_or_default()
    }

    pub fn target_ip(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::TPA]
            .try_into()
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Turns a request in place into the reply that says `ip` is at `mac`: the sender
    /// becomes the target, and `mac`/`ip` the sender.
    pub fn make_reply(&mut self, mac: Mac, ip: [u8; 4]) {
        let b = self.buffer.as_mut();
        write_u16(b, field::OPER, op::REPLY);
        b.copy_within(field::SHA.start..field::SPA.end, field::THA.start);
        b[field::SHA].copy_from_slice(&mac);
        b[field::SPA].copy_from_slice(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.1? Tell 10.0.0.2 (02:00:00:00:00:02).
    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), op::REQUEST);
        assert_eq!(p.sender_mac(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(p.sender_ip(), [10, 0, 0, 2]);
        assert_eq!(p.target_ip(), [10, 0, 0, 1]);
    }

    #[test]
    fn construct_reply() {
        let mut buf = REQUEST;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.make_reply([2, 0, 0, 0, 0, 1], [10, 0, 0, 1]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), op::REPLY);
        assert_eq!(
            (p.sender_mac(), p.sender_ip()),
            ([2, 0, 0, 0, 0, 1], [10, 0, 0, 1])
        );
        assert_eq!(
            (p.target_mac(), p.target_ip()),
            ([2, 0, 0, 0, 0, 2], [10, 0, 0, 2])
        );
    }

    #[test]
    fn impossible_lengths_and_kinds() {
        assert!(Packet::new_checked(&REQUEST[..27]).is_err());
        let mut other = REQUEST;
        other[5] = 16; // an IPv6-length protocol address
        assert!(Packet::new_checked(&other[..]).is_err());
    }
}
