//! Views over packet bytes, in smoltcp's shape (`smoltcp/src/wire`).
//!
//! A view is `Packet<T: AsRef<[u8]>> { buffer: T }`: it owns nothing and copies nothing,
//! so a worker wraps a frame in its UMEM, reads and rewrites fields in place, and sends
//! the same bytes on. Setters need `T: AsMut<[u8]>`. Field offsets are `Range<usize>`
//! constants in each file's private `mod field`.
//!
//! **The contract.** `new_unchecked` wraps any buffer; `check_len` verifies that every
//! offset the accessors and setters use lies inside it (and that length fields inside the
//! packet agree with the buffer); `new_checked` is both. Once `check_len` has passed, no
//! accessor or setter of that view panics, whatever the bytes say. Without it, accessors
//! may panic on short buffers: use `new_unchecked` only on bytes already checked.
//! Failure is [`Malformed`], a unit type: nothing allocates or formats on the hot path;
//! the worker counts the drop under a named reason.

/// What every view shares: the struct over a buffer, and its constructors.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps `buffer` unchecked (see the contract in [`crate::wire`]).
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps `buffer` once `check_len` passes.
            pub fn new_checked(buffer: T) -> Result<Self> {
                let v = Self::new_unchecked(buffer);
                v.check_len()?;
                Ok(v)
            }

            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod transport;
pub mod udp;

/// A buffer too short for the view, or a length field that disagrees with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed packet")
    }
}

impl std::error::Error for Malformed {}

/// Result of a length check.
pub type Result<T> = std::result::Result<T, Malformed>;

/// IP protocol numbers the fastpath looks at (IANA "Assigned Internet Protocol Numbers").
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
