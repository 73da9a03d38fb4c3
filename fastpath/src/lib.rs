//! The poll-mode forwarding path: packet views (wire formats), ports on AF_XDP sockets,
//! the XDP steering program, pinned workers, the snapshot types they read, and per-core
//! counters. The only crate that touches packet bytes.
//!
//! The packet views ([`wire`], smoltcp's shape: views and representations), the
//! forwarding decision ([`pipeline`]), ECMP next-hop groups ([`ecmp`]), the snapshots
//! workers forward with ([`snapshot`]), per-core counters ([`counters`]), the XDP
//! steering program ([`steer`]) and the poll-mode workers on AF_XDP ([`worker`]).
//! `unsafe` is allowed only in [`worker`] (UMEM frames shared with the kernel, socket
//! options); everything else forbids it. The steering program loads through aya's
//! safe API.

#[forbid(unsafe_code)]
pub mod clock;
#[forbid(unsafe_code)]
pub mod counters;
#[forbid(unsafe_code)]
pub mod ecmp;
#[forbid(unsafe_code)]
pub mod pipeline;
#[forbid(unsafe_code)]
pub mod snapshot;
#[forbid(unsafe_code)]
pub mod steer;
#[forbid(unsafe_code)]
pub mod wire;
pub mod worker;
