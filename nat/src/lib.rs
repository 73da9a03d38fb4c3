//! Services, backend selection (Maglev, ECMP hash), session affinity and connection
//! tracking: pure data structures, no packets, no I/O.
//!
//! - [`service`]: the service model kube-proxy works from, and its choice of endpoints.
//! - [`maglev`]: consistent hashing of flows onto a service's backends.
//! - [`frontend`]: every VIP, port and protocol (and NodePort) with its backends and
//!   Maglev tables, as the fastpath looks up a new flow.
//! - [`conntrack`]: the flows and their backends, shared by every worker.
//! - [`fragments`]: the translations of fragmented IPv4 datagrams, for their later
//!   fragments.
//! - [`affinity`]: `sessionAffinity: ClientIP`, clients and the backends they keep.
//! - [`stats`]: counters of every service port and backend.
#![forbid(unsafe_code)]

pub mod affinity;
pub mod conntrack;
pub mod fragments;
pub mod frontend;
pub mod maglev;
pub mod service;
pub mod stats;
