//! `xroute`: the node agent. It wires the control plane to the fastpath and serves the
//! stats and health endpoint.
//!
//! It has no subcommand yet: `run`, `lab` and `bgp` arrive with the fastpath and BGP
//! issues. Until then it says so instead of pretending to run.
#![forbid(unsafe_code)]

use clap::Parser;

/// xroute: Kubernetes node router and service load balancer on an AF_XDP fastpath.
///
/// No command is available yet in this build: `xroute run`, `xroute lab` and
/// `xroute bgp` are being built. The LPM tables can be benchmarked with `xroute-bench lpm`.
#[derive(Parser, Debug)]
#[command(name = "xroute", version, arg_required_else_help = true)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
