//! Ethernet II frames, with one optional 802.1Q tag.

use super::{read_u16, write_u16, Malformed, Result};

/// EtherType values the fastpath looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad (QinQ) service tag.
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    /// With an 802.1Q tag: the tag control information, then the inner EtherType.
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
    pub const HEADER: usize = 14;
    pub const TAGGED_HEADER: usize = 18;
}

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC address.
pub const BROADCAST: Mac = [0xff; 6];

view!(
    /// A view of an Ethernet frame.
    Frame
);

impl<T: AsRef<[u8]>> Frame<T> {
    /// The buffer holds the header, and the tag when the outer EtherType says 802.1Q.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER {
            return Err(Malformed);
        }
        if read_u16(b, field::ETHERTYPE) == ethertype::VLAN && b.len() < field::TAGGED_HEADER {
            return Err(Malformed);
        }
        Ok(())
    }

    pub fn dst(&self) -> Mac {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or_default()
    }

    pub fn src(&self) -> Mac {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or_default()
    }

    fn tagged(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE) == ethertype::VLAN
    }

    /// The 802.1Q VLAN id, if the frame is tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.tagged()
            .then(|| read_u16(self.buffer.as_ref(), field::TCI) & 0x0fff)
    }

    /// The EtherType of the payload (inside the tag, if any).
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        if self.tagged() {
            read_u16(b, field::INNER_ETHERTYPE)
        } else {
            read_u16(b, field::ETHERTYPE)
        }
    }

    /// Length of the Ethernet header, tag included.
    pub fn header_len(&self) -> usize {
        if self.tagged() {
            field::TAGGED_HEADER
        } else {
            field::HEADER
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Sets the payload's EtherType (inside the tag, if any).
    pub fn set_ethertype(&mut self, value: u16) {
        let at = if self.tagged() {
            field::INNER_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        write_u16(self.buffer.as_mut(), at, value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An untagged IPv4 frame header and a tagged (VLAN 100) IPv6 one, then 2 payload bytes.
    const PLAIN: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, 0xaa, 0xbb,
    ];
    const TAGGED: [u8; 20] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x81, 0x00, 0x20, 0x64, 0x86, 0xdd, 0xaa,
        0xbb,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&PLAIN[..]).unwrap();
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(
            (f.ethertype(), f.vlan(), f.header_len()),
            (ethertype::IPV4, None, 14)
        );
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(
            (f.ethertype(), f.vlan(), f.header_len()),
            (ethertype::IPV6, Some(100), 18)
        );
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut buf = TAGGED;
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.set_dst([1, 2, 3, 4, 5, 6]);
        f.set_src(BROADCAST);
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut()[0] = 0x11;
        assert_eq!(
            &buf[..12],
            &[1, 2, 3, 4, 5, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(&buf[16..19], &[0x08, 0x00, 0x11]);
    }

    #[test]
    fn impossible_lengths() {
        assert_eq!(Frame::new_checked(&PLAIN[..13]).err(), Some(Malformed));
        assert_eq!(Frame::new_checked(&TAGGED[..17]).err(), Some(Malformed));
        assert!(Frame::new_checked(&TAGGED[..18])
            .unwrap()
            .payload()
            .is_empty());
    }
}
