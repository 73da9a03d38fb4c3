//! xroute's benchmarks and the baselines they measure against. `xroute-bench` is the
//! command; the pieces are here so that tests can check the baselines are right before
//! their figures are trusted.

pub mod bgp_ingest;
pub mod dir24_8;
pub mod fwd;
pub mod hugemem;
pub mod lpm_bench;
pub mod nat_bench;
pub mod tables;
