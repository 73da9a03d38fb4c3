//! Longest-prefix-match tables for IPv4 and IPv6.
//!
//! A pure data structure: it maps prefixes to a [`NextHop`] (a next-hop group id) and
//! knows nothing of packets or I/O. [`LpmBuilder`] owns the routes and builds an
//! immutable [`Lpm`], which any number of threads share (`Send + Sync`) and look up
//! without locks; [`LpmBuilder::apply`] turns a batch of changes into the next table
//! while the current one keeps answering.
//!
//! ```
//! use lpm::{LpmBuilder, NextHop, Prefix4, RouteChange};
//!
//! let nh = |id| NextHop::new(id).unwrap();
//! let mut fib = LpmBuilder::from_routes([
//!     ("0.0.0.0/0".parse::<Prefix4>().unwrap(), nh(0)),
//!     ("10.0.0.0/8".parse().unwrap(), nh(1)),
//! ]);
//! let before = fib.table();
//! let after = fib.apply(&[RouteChange::Insert("10.1.0.0/16".parse().unwrap(), nh(2))]);
//! let addr = u32::from(std::net::Ipv4Addr::new(10, 1, 2, 3));
//! assert_eq!(before.lookup(addr), Some(nh(1)));
//! assert_eq!(after.lookup(addr), Some(nh(2)));
//! ```
#![forbid(unsafe_code)]

mod builder;
pub mod prefix;
mod table;
pub mod text;

pub use builder::{LpmBuilder, RouteChange};
pub use prefix::{Address, Prefix, Prefix4, Prefix6, PrefixError};
pub use table::{Lpm, Lpm4, Lpm6, NextHop, BATCH};

/// An IPv4 route set and its tables.
pub type LpmBuilder4 = LpmBuilder<u32>;
/// An IPv6 route set and its tables.
pub type LpmBuilder6 = LpmBuilder<u128>;

#[cfg(test)]
mod tests {
    use super::*;

    fn _tables_are_shared_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<Lpm4>();
        check::<Lpm6>();
    }
}
