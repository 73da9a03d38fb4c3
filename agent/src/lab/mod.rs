//! `xroute lab up|check|status|down`: a lab of network namespaces with real traffic.
//!
//! ```text
//!  P-n1p1   P-n1p2            P-n2p1   P-n2p2          (pods: eth0 10.244.N.x/32 and
//!     \       /                   \      /              fd00:10:244:N::x/128, default
//!    vp1    vp2                  vp1    vp2             via the gateway .1 / ::1)
//!    P-node1 (xroute)            P-node2 (xroute)       (host port xrf0 <-> xrk0)
//!       up0 .11 ::11                up0 .12 ::12
//!        \                          /
//!        f1 ---- br0 192.168.100.1 ---- f2      P-fabric (routes pod CIDRs to nodes)
//!                    fd00:100::1
//!       (BIRD, AS 64600: eBGP with both nodes over each family, ECMP into its kernel)
//!                     fc 192.168.200.1 fd00:200::1
//!                       |
//!                    P-client 192.168.200.10 fd00:200::10
//! ```
//!
//! Every address lives inside the lab's namespaces; nothing is configured in the root
//! namespace. The lab is dual-stack: every node, pod and service has an IPv4 and an
//! IPv6 address, and every check runs over both families.
//!
//! - [`topology`]: the address plan, the namespaces and links, each node's
//!   configuration.
//! - [`fabric`]: BIRD in the fabric, and what BGP must have done (sessions, the
//!   fabric's and the nodes' routes).
//! - [`checks`]: `xroute lab check`: BGP, ECMP to the service VIPs, flows F1 to F4, F7
//!   and F8 of DESIGN.md (F3, F4 through services, with a server on every backend) with
//!   ping, a UDP exchange, an exact TCP transfer and iperf3; every
//!   server is waited for until it listens.
//! - [`removal`]: the last check: a backend removed from a service while TCP and UDP
//!   flows to it and to the other one run.
//! - [`probe`]: the traffic helpers the checks run inside the namespaces (`xroute
//!   probe ...`, hidden from the help).
//!
//! `up` writes each node's configuration and starts `xroute run` in its namespace, and
//! BIRD in the fabric; the nodes mesh over iBGP (AS 64512, both families on one IPv4
//! session) and peer with BIRD over IPv4 and IPv6, which learns the pod CIDRs and the
//! services' VIPs and announces the client's subnets; `down` stops the agents and
//! deletes the namespaces.

mod checks;
mod fabric;
pub mod probe;
mod removal;
mod topology;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: Action,
    /// Prefix of the lab's namespace names (several labs can coexist).
    #[arg(long, default_value = "xrlab", global = true)]
    pub prefix: String,
    /// Where configurations, logs and pid files go (default /tmp/<prefix>).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Build the namespaces and start an agent in each node.
    Up,
    /// Check BGP and ECMP, send traffic for flows F1, F2, F7 and F8 over IPv4 and IPv6;
    /// one PASS/FAIL line each.
    Check,
    /// Print each node's per-core counters.
    Status,
    /// Stop the agents and delete the namespaces.
    Down,
}

pub fn lab(a: LabArgs) -> Result<(), String> {
    let lab = Lab::new(&a.prefix, a.dir);
    match a.action {
        Action::Up => lab.up(),
        Action::Check => lab.check(),
        Action::Status => lab.status(),
        Action::Down => lab.down(),
    }
}

const METRICS_PORT: u16 = crate::DEFAULT_METRICS_PORT;

/// Runs a command, failing with its output if it fails.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Lab {
    prefix: String,
    dir: PathBuf,
}

impl Lab {
    pub fn new(prefix: &str, dir: Option<PathBuf>) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            dir: dir.unwrap_or_else(|| PathBuf::from(format!("/tmp/{prefix}"))),
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn node(&self, n: u8) -> String {
        self.ns(&format!("node{n}"))
    }

    fn pod(&self, n: u8, p: u8) -> String {
        self.ns(&format!("n{n}p{}", p - 1))
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn ip(&self, ns: &str, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args.split_whitespace());
        sh(&v)
    }

    fn xroute(&self) -> Result<PathBuf, String> {
        std::env::current_exe().map_err(|e| format!("where is this xroute binary? {e}"))
    }

    pub fn up(&self) -> Result<(), String> {
        for tool in ["ip", "ethtool", "iperf3", "ping", "ss"] {
            if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
                return Err(format!(
                    "the lab needs `{tool}` (apt-get install iproute2 ethtool iperf3 iputils-ping)"
                ));
            }
        }
        if self
            .namespaces()
            .iter()
            .any(|ns| Path::new(&format!("/run/netns/{ns}")).exists())
        {
            return Err(format!(
                "a lab with prefix {} exists; run `xroute lab down` first",
                self.prefix
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let result = self.build().and_then(|()| self.start());
        if result.is_err() {
            let _ = self.down();
        }
        result
    }

    /// Starts BIRD and the agents, and waits until BGP has converged.
    fn start(&self) -> Result<(), String> {
        self.start_bird()?;
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        for n in topology::NODES {
            let node = self.node(n);
            let log = std::fs::File::create(self.dir.join(format!("node{n}.log")))
                .map_err(|e| e.to_string())?;
            let config = self.dir.join(format!("node{n}.yaml"));
            let child = Command::new("ip")
                .args(["netns", "exec", &node, &exe, "run", "--config"])
                .arg(&config)
                .args(fabric::AGENT_FLAGS)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting the agent in {node}: {e}"))?;
            std::fs::write(
                self.dir.join(format!("node{n}.pid")),
                child.id().to_string(),
            )
            .map_err(|e| e.to_string())?;
        }
        for n in topology::NODES {
            self.wait_for_agent(n)?;
        }
        self.wait_for_bgp()?;
        println!(
            "lab {} is up: {} namespaces, agents in {} and {}",
            self.prefix,
            self.namespaces().len(),
            self.node(1),
            self.node(2)
        );
        Ok(())
    }

    fn wait_for_agent(&self, n: u8) -> Result<(), String> {
        let node = self.node(n);
        let deadline = Instant::now() + Duration::from_secs(30);
        let exe = self.xroute()?;
        loop {
            let ok = Command::new("ip")
                .args(["netns", "exec", &node])
                .arg(&exe)
                .args(["status", "--json"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            let log = self.dir.join(format!("node{n}.log"));
            if !self.agent_alive(n) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("the agent in {node} exited:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent in {node} did not answer within 30 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn agent_pid(&self, n: u8) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("node{n}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn agent_alive(&self, n: u8) -> bool {
        let Some(pid) = self.agent_pid(n) else {
            return false;
        };
        // Gone, or a zombie waiting for a parent that is not us.
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    }

    pub fn down(&self) -> Result<(), String> {
        for n in topology::NODES {
            if let Some(pid) = self.agent_pid(n) {
                // `ip netns exec` execs the agent, so the pid is the agent's.
                let _ = sh(&["kill", "-TERM", &pid.to_string()]);
                let deadline = Instant::now() + Duration::from_secs(5);
                while self.agent_alive(n) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if self.agent_alive(n) {
                    let _ = sh(&["kill", "-KILL", &pid.to_string()]);
                }
                let _ = std::fs::remove_file(self.dir.join(format!("node{n}.pid")));
            }
        }
        self.stop_bird();
        let mut deleted = 0;
        for ns in self.namespaces() {
            if Path::new(&format!("/run/netns/{ns}")).exists() {
                // Anything still running inside (a stray iperf3) goes with it.
                if let Ok(pids) = sh(&["ip", "netns", "pids", &ns]) {
                    for pid in pids.split_whitespace() {
                        let _ = sh(&["kill", "-KILL", pid]);
                    }
                }
                sh(&["ip", "netns", "del", &ns])?;
                deleted += 1;
            }
        }
        println!("lab {} is down: {deleted} namespaces deleted", self.prefix);
        Ok(())
    }

    pub fn status(&self) -> Result<(), String> {
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        for n in topology::NODES {
            let node = self.node(n);
            match self.exec(
                &node,
                &[&exe, "status", "--metrics-port", &METRICS_PORT.to_string()],
            ) {
                Ok(out) => print!("{out}"),
                Err(e) => println!("node{n}: {e}"),
            }
            for what in ["neighbors", "rib"] {
                match self.exec(&node, &[&exe, "bgp", what]) {
                    Ok(out) => print!("node{n} bgp {what}:\n{out}"),
                    Err(e) => println!("node{n} bgp {what}: {e}"),
                }
            }
        }
        match self.birdc("show route") {
            Ok(out) => print!("fabric (BIRD) routes:\n{out}"),
            Err(e) => println!("fabric (BIRD): {e}"),
        }
        Ok(())
    }

    /// The agent's `/stats` in node `n`, as JSON.
    fn stats(&self, n: u8) -> Result<serde_json::Value, String> {
        let exe = self.xroute()?;
        let out = self.exec(&self.node(n), &[&exe.to_string_lossy(), "status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("bad /stats from node{n}: {e}"))
    }

    /// The agent's BGP view in node `n` (`neighbors`, `rib`, ...), as JSON.
    fn bgp_json(&self, n: u8, what: &[&str]) -> Result<serde_json::Value, String> {
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        let mut args = vec![exe.as_ref(), "bgp", "--json"];
        args.extend_from_slice(what);
        let out = self.exec(&self.node(n), &args)?;
        serde_json::from_str(&out).map_err(|e| format!("bad BGP answer from node{n}: {e}"))
    }
}
