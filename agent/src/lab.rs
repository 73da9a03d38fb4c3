//! `xroute lab up|check|status|down`: a lab of network namespaces with real traffic.
//!
//! ```text
//!  P-n1p1   P-n1p2            P-n2p1   P-n2p2          (pods: eth0 10.244.N.x/32,
//!     \       /                   \      /              default via the gateway .1)
//!    vp1    vp2                  vp1    vp2
//!    P-node1 (xroute)            P-node2 (xroute)       (host port xrf0 <-> xrk0)
//!       up0 .11                     up0 .12
//!        \                          /
//!        f1 ---- br0 192.168.100.1 ---- f2      P-fabric (routes pod CIDRs to nodes)
//!       (BIRD, AS 64600: eBGP with both nodes, ECMP into its kernel)
//!                     fc 192.168.200.1
//!                       |
//!                    P-client 192.168.200.10
//! ```
//!
//! Every address lives inside the lab's namespaces; nothing is configured in the root
//! namespace. `up` writes each node's configuration and starts `xroute run` in its
//! namespace, and BIRD in the fabric; the nodes mesh over iBGP (AS 64512) and peer
//! with BIRD, which learns the pod CIDRs and the services' VIPs and announces the
//! client's subnet. `check` verifies BGP converged (sessions, the fabric's routes,
//! ECMP to a service VIP over the nodes that announce it, Local traffic policy), that
//! the fabric spreads the client's flows to the VIPs accordingly, then runs flows F1, F2 (on BGP-learned routes), F7 and F8 of DESIGN.md with ping, a UDP
//! exchange and an iperf3 transfer whose byte count is verified; `down` stops the
//! agents and deletes the namespaces.

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
    /// Check BGP and ECMP, send traffic for flows F1, F2, F7 and F8; one PASS/FAIL line each.
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

const NODES: [u8; 2] = [1, 2];
/// The fabric router's AS (BIRD); the nodes are in kube-router's default 64512.
const FABRIC_ASN: u32 = 64600;
/// The agents' BGP flags: the fabric router as the global external peer, services'
/// ExternalIPs advertised to it.
const AGENT_BGP_FLAGS: [&str; 5] = [
    "--peer-router-ips=192.168.100.1",
    "--peer-router-asns=64600",
    "--advertise-external-ip",
    "--bgp-holdtime=30s",
    "--bgp-graceful-restart=false",
];
/// A service with endpoints on both nodes: both announce it, the fabric spreads it.
const SERVICE_VIP: &str = "198.51.100.10";

/// UDP flows the lab sends to each service VIP to see the fabric spread them.
const ECMP_FLOWS: u32 = 64;
/// A service with `externalTrafficPolicy: Local` and its endpoint on node 1 only.
const LOCAL_VIP: &str = "198.51.100.20";
const PODS: [u8; 2] = [2, 3];
const METRICS_PORT: u16 = crate::DEFAULT_METRICS_PORT;
/// The exact TCP transfer of every flow.
const TCP_BYTES: u64 = 8 << 20;

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

fn node_ip(n: u8) -> String {
    format!("192.168.100.{}", 10 + n)
}

fn pod_ip(n: u8, p: u8) -> String {
    format!("10.244.{n}.{p}")
}

fn pod_mac(n: u8, p: u8) -> String {
    format!("0a:58:0a:f4:{n:02x}:{p:02x}")
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

    /// Waits (at most 5 s) until a server in namespace `ns` listens on `port` (UDP, or
    /// TCP), instead of guessing how long it takes to start.
    fn wait_listening(&self, ns: &str, udp: bool, port: u16) -> Result<(), String> {
        let kind = if udp { "-Hlun" } else { "-Hltn" };
        let sport = format!(":{port}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listening = self
                .exec(ns, &["ss", kind, "sport", "=", &sport])
                .is_ok_and(|out| !out.trim().is_empty());
            if listening {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nothing listens on port {port} in {ns} after 5 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ip(&self, ns: &str, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args.split_whitespace());
        sh(&v)
    }

    fn sysctl(&self, ns: &str, kv: &str) -> Result<(), String> {
        self.exec(ns, &["sysctl", "-qw", kv]).map(drop)
    }

    /// Sending checksums must be complete in frames that reach an XDP port: AF_XDP
    /// copies bytes, and a checksum left for offload would leave wrong.
    fn no_offload(&self, ns: &str, dev: &str) -> Result<(), String> {
        self.exec(
            ns,
            &[
                "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off",
            ],
        )
        .map(drop)
    }

    fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.ns("fabric"), self.ns("client")];
        for n in NODES {
            v.push(self.node(n));
            for p in PODS {
                v.push(self.pod(n, p));
            }
        }
        v
    }

    fn xroute(&self) -> Result<PathBuf, String> {
        std::env::current_exe().map_err(|e| format!("where is this xroute binary? {e}"))
    }

    pub fn up(&self) -> Result<(), String> {
        for tool in ["ip", "ethtool", "iperf3", "ping"] {
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
        let result = self.build();
        if result.is_err() {
            let _ = self.down();
        }
        result
    }

    fn build(&self) -> Result<(), String> {
        for ns in self.namespaces() {
            sh(&["ip", "netns", "add", &ns])?;
            self.ip(&ns, "link set lo up")?;
            self.sysctl(&ns, "net.ipv6.conf.all.disable_ipv6=1")?;
            self.sysctl(&ns, "net.ipv6.conf.default.disable_ipv6=1")?;
        }
        let fabric = self.ns("fabric");
        let client = self.ns("client");
        self.ip(&fabric, "link add br0 type bridge")?;
        self.ip(&fabric, "link set br0 up")?;
        self.ip(&fabric, "addr add 192.168.100.1/24 dev br0")?;
        self.sysctl(&fabric, "net.ipv4.ip_forward=1")?;
        // ECMP by flow (addresses and ports), as a fabric router spreading service
        // traffic would: the lab's checks send many flows from one client.
        self.sysctl(&fabric, "net.ipv4.fib_multipath_hash_policy=1")?;
        self.ip(
            &fabric,
            &format!("link add fc type veth peer name eth0 netns {client}"),
        )?;
        self.ip(&fabric, "addr add 192.168.200.1/24 dev fc")?;
        self.ip(&fabric, "link set fc up")?;
        self.ip(&client, "addr add 192.168.200.10/24 dev eth0")?;
        self.ip(&client, "link set eth0 up")?;
        self.ip(&client, "route add default via 192.168.200.1")?;
        self.no_offload(&fabric, "fc")?;
        self.no_offload(&client, "eth0")?;
        for n in NODES {
            let node = self.node(n);
            self.sysctl(&node, "net.ipv4.ip_forward=1")?;
            self.sysctl(&node, "net.ipv4.conf.all.rp_filter=0")?;
            self.sysctl(&node, "net.ipv4.conf.default.rp_filter=0")?;
            // The uplink.
            self.ip(
                &fabric,
                &format!("link add f{n} type veth peer name up0 netns {node}"),
            )?;
            self.ip(&fabric, &format!("link set f{n} master br0 up"))?;
            self.no_offload(&fabric, &format!("f{n}"))?;
            self.ip(
                &node,
                &format!("link set up0 address 02:00:c0:a8:64:{:02x}", 10 + n),
            )?;
            self.ip(&node, &format!("addr add {}/24 dev up0", node_ip(n)))?;
            self.ip(&node, "link set up0 up")?;
            self.ip(&node, "route add default via 192.168.100.1")?;
            // The host port: xrf0 is the fastpath's end, xrk0 the kernel's.
            self.ip(&node, "link add xrf0 type veth peer name xrk0")?;
            self.ip(&node, "link set xrf0 up")?;
            self.ip(&node, "link set xrk0 up")?;
            self.no_offload(&node, "xrk0")?;
            // The node's own pod CIDR; the other nodes' come from BGP (xroute installs
            // them out of xrk0), and the fabric learns every pod CIDR from BGP too.
            self.ip(
                &node,
                &format!("route add 10.244.{n}.0/24 dev xrk0 src {}", node_ip(n)),
            )?;
            // The pods.
            for p in PODS {
                let pod = self.pod(n, p);
                let host_side = format!("vp{}", p - 1);
                self.ip(
                    &node,
                    &format!("link add {host_side} type veth peer name eth0 netns {pod}"),
                )?;
                self.ip(&node, &format!("link set {host_side} up"))?;
                self.ip(&pod, &format!("link set eth0 address {}", pod_mac(n, p)))?;
                self.ip(&pod, &format!("addr add {}/32 dev eth0", pod_ip(n, p)))?;
                self.ip(&pod, "link set eth0 up")?;
                self.ip(&pod, &format!("route add 10.244.{n}.1 dev eth0 scope link"))?;
                self.ip(
                    &pod,
                    &format!("route add default via 10.244.{n}.1 dev eth0"),
                )?;
                self.no_offload(&pod, "eth0")?;
            }
            let config = self.config(n);
            let path = self.dir.join(format!("node{n}.yaml"));
            std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.start_bird()?;
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        for n in NODES {
            let node = self.node(n);
            let log = std::fs::File::create(self.dir.join(format!("node{n}.log")))
                .map_err(|e| e.to_string())?;
            let config = self.dir.join(format!("node{n}.yaml"));
            let child = Command::new("ip")
                .args(["netns", "exec", &node, &exe, "run", "--config"])
                .arg(&config)
                .args(AGENT_BGP_FLAGS)
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
        for n in NODES {
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

    fn config(&self, n: u8) -> String {
        let other = if n == 1 { 2 } else { 1 };
        let mut pods = String::new();
        for p in PODS {
            pods.push_str(&format!(
                "  - {{name: pod{}, interface: vp{}, ips: [{}], mac: \"{}\"}}\n",
                p - 1,
                p - 1,
                pod_ip(n, p),
                pod_mac(n, p)
            ));
        }
        // Two nodes on two cores: each worker gets its own.
        format!(
            "# xroute lab: node{n}\n\
             node: node{n}\n\
             cores: [{core}]\n\
             idle: poll\n\
             uplink:\n  interface: up0\n  addresses: [{ip}/24]\n\
             host_port:\n  interface: xrf0\n  peer: xrk0\n\
             pod_cidrs: [10.244.{n}.0/24]\n\
             gateway: {{ipv4: 10.244.{n}.1}}\n\
             pods:\n{pods}\
             nodes:\n  - {{name: node{other}, ip: {oip}}}\n\
             services:\n\
             \x20 - {{name: web, cluster_ips: [10.96.0.10], external_ips: [{vip}], endpoints: [{e1}, {e2}]}}\n\
             \x20 - {{name: local, external_ips: [{local_vip}], external_traffic_policy: Local, endpoints: [{e1}]}}\n",
            core = (n as usize - 1) % std::thread::available_parallelism().map_or(1, |c| c.get()),
            ip = node_ip(n),
            oip = node_ip(other),
            vip = SERVICE_VIP,
            local_vip = LOCAL_VIP,
            e1 = pod_ip(1, 2),
            e2 = pod_ip(2, 2),
        )
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

    /// BIRD in the fabric: eBGP with both nodes, the client subnet announced to them,
    /// what they announce installed in the fabric's kernel with ECMP.
    fn start_bird(&self) -> Result<(), String> {
        if sh(&["sh", "-c", "command -v bird"]).is_err() {
            return Err("the lab's fabric router is BIRD: apt-get install bird2".into());
        }
        let mut conf = format!(
            "router id 192.168.100.1;\n\
             log \"{log}\" all;\n\
             protocol device {{ }}\n\
             protocol direct {{ ipv4; interface \"fc\"; }}\n\
             protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; merge paths on; }}\n\
             template bgp node {{\n  local 192.168.100.1 as {FABRIC_ASN};\n  connect retry time 2;\n\
             \x20 ipv4 {{ import all; export where net = 192.168.200.0/24; }};\n}}\n",
            log = self.dir.join("bird.log").display()
        );
        for n in NODES {
            conf.push_str(&format!(
                "protocol bgp node{n} from node {{ neighbor {} as 64512; }}\n",
                node_ip(n)
            ));
        }
        let path = self.dir.join("bird.conf");
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let fabric = self.ns("fabric");
        let ctl = self.dir.join("bird.ctl");
        let pid = self.dir.join("bird.pid");
        self.exec(
            &fabric,
            &[
                "bird",
                "-c",
                &path.to_string_lossy(),
                "-s",
                &ctl.to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ],
        )
        .map(drop)
    }

    fn birdc(&self, command: &str) -> Result<String, String> {
        let ctl = self.dir.join("bird.ctl");
        let mut args = vec!["birdc", "-s"];
        let ctl = ctl.to_string_lossy();
        args.push(&ctl);
        args.extend(command.split_whitespace());
        self.exec(&self.ns("fabric"), &args)
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

    /// Node `n`'s sessions, as `(peer, state)`.
    fn sessions(&self, n: u8) -> Result<Vec<(String, String)>, String> {
        let v = self.bgp_json(n, &["neighbors"])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["address"].as_str().unwrap_or("?").to_string(),
                            p["state"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The fabric kernel's route to `dst`: its next hops.
    fn fabric_next_hops(&self, dst: &str) -> Result<Vec<String>, String> {
        let out = self.ip(&self.ns("fabric"), &format!("-j route show {dst}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("ip -j route: {e}"))?;
        let mut hops = Vec::new();
        for r in v.as_array().into_iter().flatten() {
            if let Some(g) = r["gateway"].as_str() {
                hops.push(g.to_string());
            }
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                if let Some(g) = nh["gateway"].as_str() {
                    hops.push(g.to_string());
                }
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// What BGP must have done for the lab to work; `Err` says what is missing.
    fn bgp_ready(&self) -> Result<String, String> {
        for n in NODES {
            let s = self.sessions(n)?;
            let up = s.iter().filter(|(_, st)| st == "established").count();
            if s.len() != 2 || up != 2 {
                return Err(format!("node{n} sessions: {s:?}"));
            }
        }
        for n in NODES {
            let hops = self.fabric_next_hops(&format!("10.244.{n}.0/24"))?;
            if hops != [node_ip(n)] {
                return Err(format!(
                    "the fabric's route to 10.244.{n}.0/24 goes via {hops:?}"
                ));
            }
        }
        let vip = self.fabric_next_hops(SERVICE_VIP)?;
        if vip != [node_ip(1), node_ip(2)] {
            return Err(format!(
                "the fabric's route to {SERVICE_VIP} goes via {vip:?}, not both nodes"
            ));
        }
        let local = self.fabric_next_hops(LOCAL_VIP)?;
        if local != [node_ip(1)] {
            return Err(format!(
                "the fabric's route to {LOCAL_VIP} (policy Local, endpoint on node1) goes via {local:?}"
            ));
        }
        for n in NODES {
            let other = 3 - n;
            let kernel = self.ip(&self.node(n), &format!("route show 10.244.{other}.0/24"))?;
            if !kernel.contains("xrk0") {
                return Err(format!(
                    "node{n}'s kernel has no route to 10.244.{other}.0/24 out of xrk0: {kernel:?}"
                ));
            }
        }
        Ok(format!(
            "2 sessions per node established; fabric learned both pod CIDRs, {SERVICE_VIP} by ECMP over both nodes, {LOCAL_VIP} (Local) via node1 only; nodes' kernels route the other pod CIDR out of xrk0"
        ))
    }

    fn wait_for_bgp(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.bgp_ready() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "BGP did not converge within 60 s: {e}; logs in {}",
                        self.dir.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
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
        for n in NODES {
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
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("bird.pid")) {
            let _ = sh(&["kill", "-TERM", pid.trim()]);
            let _ = std::fs::remove_file(self.dir.join("bird.pid"));
        }
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
        for n in NODES {
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

    pub fn check(&self) -> Result<(), String> {
        if !Path::new(&format!("/run/netns/{}", self.node(1))).exists() {
            return Err(format!(
                "no lab with prefix {}; run `xroute lab up` first",
                self.prefix
            ));
        }
        let flows: [(&str, &str, String, String, String); 4] = [
            (
                "F1",
                "pod -> pod, same node",
                self.pod(1, 2),
                self.pod(1, 3),
                pod_ip(1, 3),
            ),
            (
                "F2",
                "pod -> pod, other node (BGP-learned route)",
                self.pod(1, 2),
                self.pod(2, 2),
                pod_ip(2, 2),
            ),
            (
                "F7",
                "node (host stack) -> pod",
                self.node(1),
                self.pod(1, 2),
                pod_ip(1, 2),
            ),
            (
                "F7",
                "node (host stack) -> pod on the other node (BGP route in the kernel)",
                self.node(1),
                self.pod(2, 2),
                pod_ip(2, 2),
            ),
        ];
        let mut failed = 0;
        match self.bgp_ready() {
            Ok(detail) => println!("PASS BGP nodes mesh and peer with the fabric's BIRD: {detail}"),
            Err(e) => {
                failed += 1;
                println!("FAIL BGP nodes mesh and peer with the fabric's BIRD: {e}");
            }
        }
        match self.ecmp_spread() {
            Ok(detail) => println!("PASS ECMP client -> service VIPs, spread by the fabric over the nodes that announce them: {detail}"),
            Err(e) => {
                failed += 1;
                println!("FAIL ECMP client -> service VIPs, spread by the fabric over the nodes that announce them: {e}");
            }
        }
        for (id, what, from, to, dst) in &flows {
            match self.flow(from, to, dst) {
                Ok(detail) => println!("PASS {id} {what}: {detail}"),
                Err(e) => {
                    failed += 1;
                    println!("FAIL {id} {what}: {e}");
                }
            }
        }
        match self.f8() {
            Ok(detail) => {
                println!("PASS F8 client -> node IP, passed to the kernel untouched: {detail}")
            }
            Err(e) => {
                failed += 1;
                println!("FAIL F8 client -> node IP, passed to the kernel untouched: {e}");
            }
        }
        if failed > 0 {
            return Err(format!(
                "{failed} flow(s) failed; logs in {}",
                self.dir.display()
            ));
        }
        Ok(())
    }

    /// Ping, a UDP exchange and an iperf3 transfer from namespace `from` to `dst` in `to`.
    fn flow(&self, from: &str, to: &str, dst: &str) -> Result<String, String> {
        let ping = self.ping(from, dst)?;
        let udp = self.udp(from, to, dst)?;
        let tcp = self.iperf(from, to, dst)?;
        Ok(format!("{ping}, {udp}, {tcp}"))
    }

    fn ping(&self, from: &str, dst: &str) -> Result<String, String> {
        let out = self
            .exec(from, &["ping", "-c", "5", "-i", "0.2", "-W", "2", dst])
            .map_err(|e| format!("ping: {e}"))?;
        let line = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("")
            .to_string();
        let received: u32 = line
            .split(", ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if received < 5 {
            return Err(format!("ping: {line}"));
        }
        Ok("ping 5/5".to_string())
    }

    fn udp(&self, from: &str, to: &str, dst: &str) -> Result<String, String> {
        let exe = self.xroute()?;
        let mut server = Command::new("ip")
            .args(["netns", "exec", to])
            .arg(&exe)
            .args([
                "probe",
                "udp-echo",
                "--bind",
                &format!("{dst}:7777"),
                "--count",
                "20",
                "--timeout",
                "15",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("udp server: {e}"))?;
        self.wait_listening(to, true, 7777)?;
        let client = self.exec(
            from,
            &[
                &exe.to_string_lossy(),
                "probe",
                "udp-client",
                "--to",
                &format!("{dst}:7777"),
                "--count",
                "20",
            ],
        );
        let server_ok = server.wait().is_ok_and(|s| s.success());
        let line = client.map_err(|e| format!("udp: {e}"))?;
        if !server_ok {
            return Err("udp: the echo server did not see every datagram".into());
        }
        Ok(line.trim().to_string())
    }

    /// An exact transfer: `TCP_BYTES` of a pattern, counted and checked by the receiver.
    fn tcp_exact(&self, from: &str, to: &str, dst: &str) -> Result<u64, String> {
        let exe = self.xroute()?;
        let server = Command::new("ip")
            .args(["netns", "exec", to])
            .arg(&exe)
            .args(["probe", "tcp-sink", "--bind", &format!("{dst}:7778")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcp sink: {e}"))?;
        self.wait_listening(to, false, 7778)?;
        let sent = self.exec(
            from,
            &[
                &exe.to_string_lossy(),
                "probe",
                "tcp-source",
                "--to",
                &format!("{dst}:7778"),
                "--bytes",
                &TCP_BYTES.to_string(),
            ],
        );
        let out = server.wait_with_output().map_err(|e| e.to_string())?;
        sent.map_err(|e| format!("tcp: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tcp: the receiver says {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let got: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if got != TCP_BYTES {
            return Err(format!("tcp: sent {TCP_BYTES} bytes, {got} arrived"));
        }
        Ok(got)
    }

    fn iperf(&self, from: &str, to: &str, dst: &str) -> Result<String, String> {
        let exact = self.tcp_exact(from, to, dst)?;
        let mut server = Command::new("ip")
            .args([
                "netns", "exec", to, "iperf3", "-s", "-1", "-B", dst, "-p", "5201",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 server: {e}"))?;
        self.wait_listening(to, false, 5201)?;
        let out = self.exec(from, &["iperf3", "-c", dst, "-p", "5201", "-t", "2", "-J"]);
        let _ = server.wait();
        let out = out.map_err(|e| format!("iperf3: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("iperf3 output: {e}"))?;
        let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
        let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        // iperf3's server stops counting when the test ends, with the last segments
        // still in flight: its count is a little short of the sender's even on
        // kernel-only paths. The exact count is `tcp_exact`'s.
        if received == 0 || received * 10 < sent * 9 {
            return Err(format!(
                "iperf3: sent {sent} bytes, the server received {received}"
            ));
        }
        let mbps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6;
        Ok(format!(
            "tcp {exact} bytes verified, iperf3 {received} of {sent} bytes received ({mbps:.0} Mbit/s)"
        ))
    }

    /// F8: traffic from the client to node 1's own address passes to the kernel and
    /// never reaches the fastpath's workers.
    /// Frames node `n`'s uplink took in so far: steered to the fastpath or passed to the
    /// kernel (the VIPs go to the kernel until the fastpath serves services).
    fn uplink_frames(&self, n: u8) -> Result<u64, String> {
        let v = self.stats(n)?;
        let port = v["ports"].as_array().and_then(|p| p.first());
        let count = |key: &str| port.and_then(|p| p[key].as_u64()).unwrap_or(0);
        Ok(count("steered_to_fastpath") + count("passed_to_kernel"))
    }

    /// How many frames each node's uplink took in while the client sent `ECMP_FLOWS`
    /// UDP flows to `vip`, one frame each (BGP keepalives may add a few).
    fn flows_to(&self, vip: &str) -> Result<[u64; 2], String> {
        let exe = self.xroute()?;
        let before = [self.uplink_frames(1)?, self.uplink_frames(2)?];
        self.exec(
            &self.ns("client"),
            &[
                &exe.to_string_lossy(),
                "probe",
                "udp-flows",
                "--to",
                &format!("{vip}:7779"),
                "--flows",
                &ECMP_FLOWS.to_string(),
                // The nodes do not serve the VIPs yet and route them back out to the
                // fabric, which sends them back: with TTL 2 a flow is one frame at the
                // node the fabric chose, then expires there.
                "--ttl",
                "2",
            ],
        )
        .map_err(|e| format!("udp flows to {vip}: {e}"))?;
        // The frames cross the fabric and a node's XDP program within milliseconds:
        // wait until all are counted (at most 2 s).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let got = [
                self.uplink_frames(1)?.saturating_sub(before[0]),
                self.uplink_frames(2)?.saturating_sub(before[1]),
            ];
            if got[0] + got[1] >= u64::from(ECMP_FLOWS) || Instant::now() > deadline {
                return Ok(got);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The fabric spreads flows to the service VIP that both nodes announce over both
    /// (its kernel hashes on ports: `fib_multipath_hash_policy=1`), and sends every flow
    /// to the Local-policy VIP to node1, the only one announcing it. The nodes have no
    /// service NAT yet (F4 is a later step): what is checked is where the flows land.
    fn ecmp_spread(&self) -> Result<String, String> {
        let [a, b] = self.flows_to(SERVICE_VIP)?;
        // With a fair hash, fewer than an eighth of 64 flows on one side has odds of
        // about 1e-11.
        let least = u64::from(ECMP_FLOWS / 8);
        if a < least || b < least {
            return Err(format!(
                "of {ECMP_FLOWS} flows to {SERVICE_VIP}, node1 took {a} and node2 {b}"
            ));
        }
        let [l1, l2] = self.flows_to(LOCAL_VIP)?;
        if l1 < u64::from(ECMP_FLOWS) || l2 >= least {
            return Err(format!(
                "of {ECMP_FLOWS} flows to {LOCAL_VIP} (announced by node1 only), node1 took {l1} and node2 {l2}"
            ));
        }
        Ok(format!(
            "{ECMP_FLOWS} UDP flows to {SERVICE_VIP}: {a} reached node1, {b} node2; {ECMP_FLOWS} to {LOCAL_VIP}: {l1} reached node1"
        ))
    }

    fn f8(&self) -> Result<String, String> {
        let client = self.ns("client");
        let node = self.node(1);
        let before = self.stats(1)?;
        let ping = self.ping(&client, &node_ip(1))?;
        let udp = self.udp(&client, &node, &node_ip(1))?;
        let tcp = self.iperf(&client, &node, &node_ip(1))?;
        let after = self.stats(1)?;
        // The uplink (port 0) is where the client's frames arrive; the node's replies
        // to the client leave through the host port and the fastpath (the client's
        // subnet is a BGP route), which is not what F8 is about.
        let uplink = |v: &serde_json::Value, key: &str| {
            v["ports"]
                .as_array()
                .and_then(|p| p.first())
                .and_then(|p| p[key].as_u64())
                .unwrap_or(0)
        };
        let passed = |v: &serde_json::Value| uplink(v, "passed_to_kernel");
        let touched =
            uplink(&after, "steered_to_fastpath") - uplink(&before, "steered_to_fastpath");
        if touched != 0 {
            return Err(format!(
                "the uplink steered {touched} frames meant for the node to the fastpath"
            ));
        }
        let kernel = passed(&after) - passed(&before);
        Ok(format!(
            "{ping}, {udp}, {tcp}; {kernel} frames passed to the kernel, 0 to the fastpath"
        ))
    }
}
