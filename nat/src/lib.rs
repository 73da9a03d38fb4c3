//! Services, backend selection (Maglev, ECMP hash), session affinity and connection
//! tracking: pure data structures, no packets, no I/O.
//!
//! - [`maglev`]: consistent hashing of flows onto a service's backends.
#![forbid(unsafe_code)]

pub mod maglev;
