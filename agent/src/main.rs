//! `xroute`: the node agent. It wires the control plane to the fastpath and serves the
//! stats endpoint; `xroute lab` builds a namespace lab and sends real traffic through it.
#![forbid(unsafe_code)]

mod bgp;
mod lab;
mod probe;
mod run;
mod stats;
mod status;

use clap::{Parser, Subcommand};

/// The stats endpoint's default port.
pub const DEFAULT_METRICS_PORT: u16 = 9253;

/// xroute: Kubernetes node router and service load balancer on an AF_XDP fastpath.
#[derive(Parser, Debug)]
#[command(name = "xroute", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent on a static YAML configuration.
    Run(Box<run::RunArgs>),
    /// Print the per-core counters of the agent running in this network namespace.
    Status(status::StatusArgs),
    /// The BGP speaker's view: `global`, `neighbors`, `rib [--family ipv4|ipv6]`.
    Bgp(bgp::BgpArgs),
    /// A lab of network namespaces: two nodes, two pods each, a fabric and a client.
    Lab(lab::LabArgs),
    /// Traffic helpers the lab runs inside its namespaces.
    #[command(hide = true)]
    Probe(probe::ProbeArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(*a),
        Command::Status(a) => status::status(a),
        Command::Bgp(a) => bgp::bgp(a),
        Command::Lab(a) => lab::lab(a),
        Command::Probe(a) => probe::probe(a),
    };
    if let Err(e) = result {
        eprintln!("xroute: {e}");
        std::process::exit(1);
    }
}
