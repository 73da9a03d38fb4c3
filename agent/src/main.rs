//! `xroute`: the node agent. It wires the control plane to the fastpath and serves the
//! stats endpoint; `xroute lab` builds a namespace lab and sends real traffic through it.
#![forbid(unsafe_code)]

mod bgp;
mod healthcheck;
mod lab;
mod proxy;
mod run;
mod services;
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
    /// The services this agent serves: frontends, backends, their state and counters.
    Services(services::ServicesArgs),
    /// The tracked flows through services, with their state, backend and time left.
    Conntrack(services::ConntrackArgs),
    /// A lab of network namespaces: two nodes, two pods each, a fabric and a client.
    Lab(lab::LabArgs),
    /// Traffic helpers the lab runs inside its namespaces.
    #[command(hide = true)]
    Probe(lab::probe::ProbeArgs),
}

/// The exit status after a panic (sysexits' EX_SOFTWARE).
const PANIC_STATUS: i32 = 70;

/// A panic in any thread (a control thread, a FIB build, a session task, a worker) ends
/// the process with [`PANIC_STATUS`] after the usual panic message and one line naming
/// the thread: an agent that goes on with a part of itself dead, or exits 0, hides the
/// failure from whatever supervises it (a DaemonSet restarts a failed pod). Tokio would
/// otherwise catch a task's panic and carry on.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        eprintln!(
            "xroute: thread {} panicked; stopping with status {PANIC_STATUS}",
            thread.name().unwrap_or("(unnamed)")
        );
        std::process::exit(PANIC_STATUS);
    }));
}

fn main() {
    exit_on_panic();
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
        Command::Services(a) => services::services_command(a),
        Command::Conntrack(a) => services::conntrack_command(a),
        Command::Lab(a) => lab::lab(a),
        Command::Probe(a) => lab::probe::probe(a),
    };
    if let Err(e) = result {
        eprintln!("xroute: {e}");
        std::process::exit(1);
    }
}
