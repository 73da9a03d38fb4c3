//! The poll-mode forwarding path: packet views (wire formats), ports on AF_XDP sockets,
//! the XDP steering program, pinned workers, the snapshot types they read, and per-core
//! counters. The only crate that touches packet bytes.
//!
//! So far: the packet views ([`wire`]), per-core counters ([`counters`]), ECMP
//! next-hop groups ([`ecmp`]) and the snapshots workers forward with ([`snapshot`]). `unsafe` is allowed only in the AF_XDP and BPF modules,
//! which are not here yet; everything else forbids it.

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
