//! Services, backend selection (Maglev, ECMP hash), session affinity and connection
//! tracking: pure data structures, no packets, no I/O.
//!
//! - [`service`]: the service model kube-proxy works from, and its choice of endpoints.
//! - [`maglev`]: consistent hashing of flows onto a service's backends.
//! - [`conntrack`]: the flows and their backends, shared by every worker.
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod maglev;
pub mod service;
