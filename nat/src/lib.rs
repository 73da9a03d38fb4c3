//! Services, backend selection (Maglev, ECMP hash), session affinity and connection
//! tracking: pure data structures, no packets, no I/O.
//!
//! - [`service`]: the service model kube-proxy works from, and its choice of endpoints.
//! - [`maglev`]: consistent hashing of flows onto a service's backends.
#![forbid(unsafe_code)]

pub mod maglev;
pub mod service;
