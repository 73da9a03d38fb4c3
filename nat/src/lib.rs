//! Services, backend selection (Maglev, ECMP hash), session affinity and connection
//! tracking: pure data structures, no packets, no I/O.
//!
//! Nothing is here yet: this crate is the home the service-proxy issue fills.
#![forbid(unsafe_code)]
