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

/// An Ethernet/IPv4 ARP packet's fields (smoltcp's representation layer): parse a
/// request, build its reply with [`Repr::reply`], and [`Repr::emit`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: [u8; 4],
    pub target_mac: Mac,
    pub target_ip: [u8; 4],
}

impl Repr {
    /// The length of what [`Repr::emit`] writes.
    pub const LEN: usize = field::LEN;

    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// The reply to this request saying that `ip` is at `mac`.
    pub fn reply(&self, mac: Mac, ip: [u8; 4]) -> Repr {
        Repr {
            operation: op::REPLY,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Writes the packet into the first [`Repr::LEN`] bytes of `p`'s buffer, which must
    /// hold them.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let b = p.buffer.as_mut();
        write_u16(b, field::HTYPE, 1);
        write_u16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        write_u16(b, field::OPER, self.operation);
        b[field::SHA].copy_from_slice(&self.sender_mac);
        b[field::SPA].copy_from_slice(&self.sender_ip);
        b[field::THA].copy_from_slice(&self.target_mac);
        b[field::TPA].copy_from_slice(&self.target_ip);
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
        let request = Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap());
        let mut buf = [0xaa; 28];
        request
            .reply([2, 0, 0, 0, 0, 1], [10, 0, 0, 1])
            .emit(&mut Packet::new_unchecked(&mut buf[..]));
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
