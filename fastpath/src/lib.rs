//! The poll-mode forwarding path: packet views (wire formats), ports on AF_XDP sockets,
//! the XDP steering program, pinned workers, the snapshot types they read, and per-core
//! counters. The only crate that touches packet bytes.
//!
//! Nothing is here yet: the fastpath issue fills it. It already depends on `lpm` and
//! `nat`, the data structures a snapshot is made of.
