//! BGP against real peers, as root, in network namespaces these tests create and
//! delete: BIRD, FRR and GoBGP each exchange IPv4 and IPv6 routes with an xroute agent
//! (MD5 on the IPv4 session), and the node's stack reaches the learned prefixes
//! through the fastpath; a wrong MD5 password keeps the session down; xroute reflects
//! routes between two route-reflector clients; a killed peer's routes leave the FIB
//! and the kernel within the hold time; a gracefully restarting peer's routes stay;
//! garbage on the BGP port gets a NOTIFICATION and a closed connection, never a crash.
//!
//! The topology: a switch namespace with a bridge, the node (xroute, 192.168.50.11 and
//! fd00:50::11 on its uplink) and peers at 192.168.50.1.. / fd00:50::1.., AS 64600
//! (external) or 64512 (the cluster's, for reflector clients).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const XROUTE: &str = env!("CARGO_BIN_EXE_xroute");
/// One network at a time: the tests share the machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const NODE4: &str = "192.168.50.11";
const NODE6: &str = "fd00:50::11";
/// base64 of "secret".
const SECRET_B64: &str = "c2VjcmV0";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` every 200 ms until it holds or `secs` pass.
fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bird,
    Frr,
    Gobgp,
}

struct Net {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
}

impl Net {
    fn new(tag: &str) -> Net {
        let prefix = format!("xb{}{tag}", std::process::id() % 10_000);
        let dir = PathBuf::from(format!("/tmp/{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net {
            prefix,
            dir,
            namespaces: Vec::new(),
        };
        let sw = net.add_ns("sw");
        ok(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        net
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        ok(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `ip -n NS ARGS...` (whitespace-separated), which must succeed.
    fn ip(&self, ns: &str, args: &str) {
        let mut v = vec!["ip", "-n", ns];
        v.extend(args.split_whitespace());
        ok(&v);
    }

    /// Checksums complete in software on `dev`: AF_XDP copies frames as they are.
    fn no_offload(&self, ns: &str, dev: &str) {
        ok(&[
            "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso",
            "off",
        ]);
    }

    /// A namespace plugged into the switch as `dev` with the given addresses.
    fn host(&mut self, name: &str, dev: &str, addrs: &[&str]) -> String {
        let ns = self.add_ns(name);
        let sw = self.ns("sw");
        let port = format!("p{}", self.namespaces.len());
        ok(&[
            "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", dev, "netns",
            &ns,
        ]);
        ok(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        for a in addrs {
            let family = if a.contains(':') { "-6" } else { "-4" };
            ok(&[
                "ip", "-n", &ns, family, "addr", "add", a, "dev", dev, "nodad",
            ]);
        }
        ok(&["ip", "-n", &ns, "link", "set", dev, "up"]);
        self.no_offload(&ns, dev);
        ns
    }

    /// The xroute node: uplink up0, host port xrf0/xrk0, pod CIDRs of both families.
    fn node(&mut self, extra_yaml: &str, flags: &[&str]) -> String {
        let ns = self.host(
            "node",
            "up0",
            &[&format!("{NODE4}/24"), &format!("{NODE6}/64")],
        );
        for kv in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            ok(&["ip", "netns", "exec", &ns, "sysctl", "-qw", kv]);
        }
        self.ip(&ns, "link add xrf0 type veth peer name xrk0");
        self.ip(&ns, "link set xrf0 up");
        self.ip(&ns, "link set xrk0 up");
        self.no_offload(&ns, "xrk0");
        let core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let config = format!(
            "node: node1\n\
             cores: [{core}]\n\
             uplink: {{interface: up0, addresses: [{NODE4}/24, {NODE6}/64]}}\n\
             host_port: {{interface: xrf0, peer: xrk0}}\n\
             pod_cidrs: [10.244.1.0/24, fd00:244:1::/64]\n\
             {extra_yaml}"
        );
        let path = self.dir.join("node.yaml");
        std::fs::write(&path, config).unwrap();
        self.start_agent(&ns, flags);
        ns
    }

    /// Starts the agent in namespace `ns` on the `node.yaml` written before, its log
    /// appended to `node.log`, and waits until it answers.
    fn start_agent(&self, ns: &str, flags: &[&str]) {
        let path = self.dir.join("node.yaml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, XROUTE, "run", "--config"])
            .arg(&path)
            .args(flags)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start xroute");
        std::fs::write(self.dir.join("node.pid"), child.id().to_string()).unwrap();
        std::mem::forget(child);
        assert!(
            wait(30, || self
                .exec(ns, &[XROUTE, "bgp", "global"])
                .status
                .success()),
            "the agent did not come up:\n{}",
            self.log()
        );
    }

    /// Waits up to 30 s for the session with `peer` to be established, asserting all
    /// along that the kernel keeps its route to `prefix`.
    fn up_keeping_route(&self, peer: &str, prefix: &str) -> bool {
        wait(30, || {
            assert!(
                !self.kernel_route(prefix).is_empty(),
                "the kernel route to {prefix} left during the restart:\n{}",
                self.log()
            );
            self.state(peer) == "established"
        })
    }

    /// Kills the agent with SIGKILL (no clean-up of its own) and waits for it to go.
    fn kill_agent(&self) {
        let pid = std::fs::read_to_string(self.dir.join("node.pid")).unwrap();
        ok(&["kill", "-9", pid.trim()]);
        assert!(wait(10, || !self.agent_alive()), "the agent did not die");
    }

    /// Stops the agent with SIGTERM, as a DaemonSet's pod is stopped, and waits for it.
    fn stop_agent(&self) {
        let pid = std::fs::read_to_string(self.dir.join("node.pid")).unwrap();
        ok(&["kill", "-TERM", pid.trim()]);
        assert!(
            wait(10, || !self.agent_alive()),
            "the agent did not stop:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// What BIRD in peer namespace `name` logged.
    fn bird_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name).join("bird.log")).unwrap_or_default()
    }

    fn agent_alive(&self) -> bool {
        let pid = std::fs::read_to_string(self.dir.join("node.pid")).unwrap_or_default();
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    }

    fn bgp_json(&self, what: &[&str]) -> serde_json::Value {
        let mut args = vec![XROUTE, "bgp", "--json"];
        args.extend_from_slice(what);
        let o = self.exec(&self.ns("node"), &args);
        assert!(o.status.success(), "xroute bgp {what:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn state(&self, peer: &str) -> String {
        self.bgp_json(&["neighbors"])
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == peer)
            .map(|n| n["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "absent".into())
    }

    /// The agent's Loc-RIB entry for `prefix`, if any.
    fn rib(&self, prefix: &str) -> Option<serde_json::Value> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.bgp_json(&["rib", "--family", family])
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["prefix"] == prefix)
            .cloned()
    }

    fn kernel_route(&self, prefix: &str) -> String {
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        String::from_utf8_lossy(
            &self
                .exec(&self.ns("node"), &["ip", family, "route", "show", prefix])
                .stdout,
        )
        .into_owned()
    }

    fn ping(&self, ns: &str, dst: &str) -> bool {
        self.exec(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst])
            .status
            .success()
    }

    fn start(&self, kind: Kind, name: &str, conf: &PeerConf) {
        let ns = self.ns(name);
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        match kind {
            Kind::Bird => {
                std::fs::write(dir.join("bird.conf"), conf.bird(&dir)).unwrap();
                let mut args = vec![
                    "bird".to_string(),
                    "-c".into(),
                    dir.join("bird.conf").display().to_string(),
                    "-s".into(),
                    dir.join("bird.ctl").display().to_string(),
                    "-P".into(),
                    dir.join("bird.pid").display().to_string(),
                ];
                if conf.restarting {
                    args.push("-R".into());
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let o = self.exec(&ns, &a);
                assert!(o.status.success(), "bird: {}", text(&o));
            }
            Kind::Frr => {
                std::fs::write(dir.join("frr.conf"), conf.frr(&dir)).unwrap();
                ok(&["chown", "-R", "frr:frr", &dir.display().to_string()]);
                let d = dir.display().to_string();
                for daemon in ["zebra", "bgpd"] {
                    let o = self.exec(
                        &ns,
                        &[
                            &format!("/usr/lib/frr/{daemon}"),
                            "-d",
                            "-z",
                            &format!("{d}/zserv.api"),
                            "-i",
                            &format!("{d}/{daemon}.pid"),
                            "--vty_socket",
                            &d,
                            "-f",
                            &format!("{d}/frr.conf"),
                        ],
                    );
                    assert!(o.status.success(), "{daemon}: {}", text(&o));
                    // bgpd talks to zebra: zebra must be up (its pid file written) first.
                    let pid = dir.join(format!("{daemon}.pid"));
                    assert!(wait(10, || pid.exists()), "{daemon} did not start");
                }
            }
            Kind::Gobgp => {
                std::fs::write(dir.join("gobgp.toml"), conf.gobgp()).unwrap();
                let log = std::fs::File::create(dir.join("gobgp.log")).unwrap();
                let child = Command::new("ip")
                    .args(["netns", "exec", &ns, "gobgpd", "-f"])
                    .arg(dir.join("gobgp.toml"))
                    .args([
                        "-t",
                        "toml",
                        "--api-hosts",
                        "127.0.0.1:50051",
                        "--pprof-disable",
                    ])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("gobgpd");
                std::mem::forget(child);
                let gobgp = |args: &[&str]| {
                    let mut v = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
                    v.extend_from_slice(args);
                    self.exec(&ns, &v)
                };
                assert!(
                    wait(10, || gobgp(&["global"]).status.success()),
                    "gobgpd did not start"
                );
                for (p, f) in [(&conf.announce4, "ipv4"), (&conf.announce6, "ipv6")] {
                    if let Some(p) = p {
                        let o = gobgp(&["global", "rib", "add", p, "-a", f]);
                        assert!(o.status.success(), "gobgp rib add: {}", text(&o));
                    }
                }
            }
        }
    }

    /// What peer `name` learned, as its own CLI prints it.
    fn peer_routes(&self, kind: Kind, name: &str) -> String {
        let ns = self.ns(name);
        let dir = self.dir.join(name);
        let outs = match kind {
            Kind::Bird => vec![self.exec(
                &ns,
                &[
                    "birdc",
                    "-s",
                    &dir.join("bird.ctl").display().to_string(),
                    "show",
                    "route",
                    "all",
                ],
            )],
            Kind::Frr => ["show bgp ipv4 unicast", "show bgp ipv6 unicast"]
                .iter()
                .map(|c| {
                    self.exec(
                        &ns,
                        &["vtysh", "--vty_socket", &dir.display().to_string(), "-c", c],
                    )
                })
                .collect(),
            Kind::Gobgp => ["ipv4", "ipv6"]
                .iter()
                .map(|f| {
                    self.exec(
                        &ns,
                        &[
                            "gobgp",
                            "-u",
                            "127.0.0.1",
                            "-p",
                            "50051",
                            "global",
                            "rib",
                            "-a",
                            f,
                        ],
                    )
                })
                .collect(),
        };
        outs.iter().map(text).collect::<Vec<_>>().join("\n")
    }

    /// Kills every process of peer namespace `name` with SIGKILL.
    fn kill(&self, name: &str) {
        let pids = ok(&["ip", "netns", "pids", &self.ns(name)]);
        for pid in pids.split_whitespace() {
            let _ = run(&["kill", "-KILL", pid]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("node.pid")) {
            let _ = run(&["kill", "-TERM", pid.trim()]);
            wait(5, || !self.agent_alive());
        }
        for ns in self.namespaces.iter().rev() {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = run(&["kill", "-KILL", pid]);
                }
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// A peer's settings, rendered for each daemon.
struct PeerConf {
    id: String,
    asn: u32,
    addr4: String,
    addr6: Option<String>,
    password: Option<String>,
    announce4: Option<String>,
    announce6: Option<String>,
    graceful_restart: bool,
    restarting: bool,
    /// The peer is not on the node's link (BIRD's `multihop`).
    multihop: bool,
    /// BIRD only: the IPv4 routes go out with this next hop, and with the peer's ASN
    /// prepended this many more times.
    export_next_hop4: Option<String>,
    export_prepend: usize,
}

impl PeerConf {
    fn external(n: u8) -> PeerConf {
        PeerConf {
            id: format!("192.168.50.{n}"),
            asn: 64600,
            addr4: format!("192.168.50.{n}"),
            addr6: Some(format!("fd00:50::{n}")),
            password: Some("secret".into()),
            announce4: Some(format!("172.16.{n}.0/24")),
            announce6: Some(format!("2001:db8:{n}::/48")),
            graceful_restart: false,
            restarting: false,
            multihop: false,
            export_next_hop4: None,
            export_prepend: 0,
        }
    }

    fn bird(&self, dir: &std::path::Path) -> String {
        let mut c = format!(
            "router id {};\nlog \"{}\" all;\nprotocol device {{ }}\n",
            self.id,
            dir.join("bird.log").display()
        );
        // The announced prefixes: on lo, so pings to their first address get answers.
        if let Some(p) = &self.announce4 {
            c.push_str(&format!(
                "protocol static s4 {{ ipv4; route {p} blackhole; }}\n"
            ));
        }
        if let Some(p) = &self.announce6 {
            c.push_str(&format!(
                "protocol static s6 {{ ipv6; route {p} blackhole; }}\n"
            ));
        }
        let gr = if self.graceful_restart {
            "graceful restart on; graceful restart time 60;"
        } else {
            ""
        };
        let pw = self
            .password
            .as_ref()
            .map(|p| format!("password \"{p}\";"))
            .unwrap_or_default();
        let ibgp_rr = if self.asn == 64512 {
            "direct;"
        } else if self.multihop {
            "multihop 2;"
        } else {
            ""
        };
        // Every route carries an extended (route target) and a large community, to be
        // kept by xroute and shown by `xroute bgp rib`.
        let mut export4 = format!(
            "bgp_ext_community.add((rt, {asn}, 7)); bgp_large_community.add(({asn}, 1, 2)); ",
            asn = self.asn
        );
        if let Some(nh) = &self.export_next_hop4 {
            export4.push_str(&format!("bgp_next_hop = {nh}; "));
        }
        for _ in 0..self.export_prepend {
            export4.push_str(&format!("bgp_path.prepend({}); ", self.asn));
        }
        c.push_str(&format!(
            "protocol bgp x4 {{ local {} as {}; neighbor {NODE4} as 64512; {pw} {gr} {ibgp_rr} hold time 9; connect retry time 2;\n  ipv4 {{ import all; export filter {{ if source != RTS_STATIC then reject; {export4}accept; }}; }};\n}}\n",
            self.addr4, self.asn
        ));
        if let Some(a6) = &self.addr6 {
            c.push_str(&format!(
                "protocol bgp x6 {{ local {a6} as {}; neighbor {NODE6} as 64512; {gr} hold time 9; connect retry time 2;\n  ipv6 {{ import all; export where source = RTS_STATIC; }};\n}}\n",
                self.asn
            ));
        }
        c
    }

    fn frr(&self, dir: &std::path::Path) -> String {
        let mut c = format!(
            "frr defaults traditional\nhostname peer\nlog file {}\nrouter bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n timers bgp 3 9\n",
            dir.join("frr.log").display(),
            self.asn,
            self.id
        );
        if self.graceful_restart {
            c.push_str(" bgp graceful-restart\n");
        }
        c.push_str(&format!(
            " neighbor {NODE4} remote-as 64512\n neighbor {NODE4} timers connect 2\n"
        ));
        if let Some(p) = &self.password {
            c.push_str(&format!(" neighbor {NODE4} password {p}\n"));
        }
        if self.addr6.is_some() {
            c.push_str(&format!(
                " neighbor {NODE6} remote-as 64512\n neighbor {NODE6} timers connect 2\n"
            ));
        }
        c.push_str(" address-family ipv4 unicast\n");
        if let Some(p) = &self.announce4 {
            c.push_str(&format!("  network {p}\n"));
        }
        c.push_str(&format!(
            "  neighbor {NODE4} activate\n exit-address-family\n"
        ));
        if self.addr6.is_some() {
            c.push_str(" address-family ipv6 unicast\n");
            if let Some(p) = &self.announce6 {
                c.push_str(&format!("  network {p}\n"));
            }
            c.push_str(&format!(
                "  neighbor {NODE6} activate\n exit-address-family\n"
            ));
        }
        c
    }

    fn gobgp(&self) -> String {
        let mut local = vec![format!("\"{}\"", self.addr4)];
        if let Some(a6) = &self.addr6 {
            local.push(format!("\"{a6}\""));
        }
        let mut c = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  local-address-list = [{}]\n",
            self.asn,
            self.id,
            local.join(", ")
        );
        let mut neighbor = |addr: &str, family: &str, password: Option<&String>| {
            c.push_str(&format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = 64512\n"
            ));
            if let Some(p) = password {
                c.push_str(&format!("    auth-password = \"{p}\"\n"));
            }
            c.push_str("  [neighbors.timers.config]\n    hold-time = 9\n    connect-retry = 2\n");
            c.push_str(&format!(
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
            ));
        };
        neighbor(NODE4, "ipv4-unicast", self.password.as_ref());
        if self.addr6.is_some() {
            neighbor(NODE6, "ipv6-unicast", None);
        }
        c
    }
}

/// The node's flags for one external peer at `.n` (both families, MD5 on IPv4).
fn external_flags(n: u8, password: &str) -> Vec<String> {
    vec![
        format!("--peer-router-ips=192.168.50.{n},fd00:50::{n}"),
        "--peer-router-asns=64600,64600".into(),
        format!("--peer-router-passwords={password},"),
        "--bgp-holdtime=9s".into(),
    ]
}

/// A network with one BIRD peer at .1, IPv4 only, MD5 "secret"; returns it, the peer's
/// settings and the peer's namespace.
fn one_bird(tag: &str, graceful_restart: bool) -> (Net, PeerConf, String) {
    let mut net = Net::new(tag);
    let mut peer = PeerConf::external(1);
    peer.addr6 = None;
    peer.graceful_restart = graceful_restart;
    let r = net.host("r1", "r0", &["192.168.50.1/24"]);
    net.start(Kind::Bird, "r1", &peer);
    (net, peer, r)
}

/// The node's flags for [`one_bird`]'s peer with MD5 password `password_b64`.
fn one_bird_flags(password_b64: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--peer-router-ips=192.168.50.1".to_string(),
        "--peer-router-asns=64600".to_string(),
        format!("--peer-router-passwords={password_b64}"),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn exchange(kind: Kind, tag: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new(tag);
    let peer = PeerConf::external(1);
    let r = net.host("r1", "r0", &["192.168.50.1/24", "fd00:50::1/64"]);
    // The announced prefixes' first addresses answer pings on the peer.
    ok(&["ip", "-n", &r, "addr", "add", "172.16.1.1/24", "dev", "lo"]);
    ok(&[
        "ip",
        "-n",
        &r,
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/48",
        "dev",
        "lo",
    ]);
    // Replies to the node's pod CIDRs go back to it.
    ok(&[
        "ip",
        "-n",
        &r,
        "route",
        "add",
        "10.244.1.0/24",
        "via",
        NODE4,
    ]);
    net.start(kind, "r1", &peer);
    let flags = external_flags(1, SECRET_B64);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let annotations = "annotations:\n  kube-router.io/path-prepend.as: \"64512\"\n  kube-router.io/path-prepend.repeat-n: \"2\"\n  kube-router.io/node.bgp.communities: \"64512:100\"\n";
    let node = net.node(annotations, &flags);

    for a in ["192.168.50.1", "fd00:50::1"] {
        assert!(
            wait(40, || net.state(a) == "established"),
            "{kind:?}: session with {a} not established: {}\n{}",
            net.state(a),
            net.log()
        );
    }
    // Routes from the peer: in the Loc-RIB, in the kernel toward the host port, and
    // reachable from the node's own stack through the fastpath.
    for (prefix, hop, target) in [
        ("172.16.1.0/24", "192.168.50.1", "172.16.1.1"),
        ("2001:db8:1::/48", "fd00:50::1", "2001:db8:1::1"),
    ] {
        assert!(
            wait(20, || net.rib(prefix).is_some()),
            "{kind:?}: {prefix} not learned:\n{}",
            net.log()
        );
        let e = net.rib(prefix).unwrap();
        assert_eq!(e["paths"][0]["next_hop"], hop, "{e}");
        if kind == Kind::Bird && prefix.contains('.') {
            assert_eq!(e["paths"][0]["ext_communities"][0], "rt:64600:7", "{e}");
            assert_eq!(e["paths"][0]["large_communities"][0], "64600:1:2", "{e}");
        }
        assert!(
            e["paths"][0]["as_path"].as_str().unwrap().contains("64600"),
            "{e}"
        );
        assert!(
            wait(10, || net.kernel_route(prefix).contains("xrk0")),
            "{kind:?}: no kernel route to {prefix} out of xrk0: {:?}",
            net.kernel_route(prefix)
        );
        assert!(
            net.kernel_route(prefix).contains("proto bgp"),
            "{}",
            net.kernel_route(prefix)
        );
        assert!(
            wait(10, || net.ping(&node, target)),
            "{kind:?}: the node's stack cannot reach {target} through the fastpath"
        );
    }
    // Ours at the peer: both pod CIDRs, with the prepends and the community.
    assert!(
        wait(20, || {
            let r = net.peer_routes(kind, "r1");
            r.contains("10.244.1.0/24") && r.contains("fd00:244:1::/64")
        }),
        "{kind:?}: the peer did not learn the pod CIDRs:\n{}",
        net.peer_routes(kind, "r1")
    );
    let routes = net.peer_routes(kind, "r1");
    assert!(
        routes.contains("64512 64512 64512"),
        "{kind:?}: no prepended AS_PATH at the peer:\n{routes}"
    );
    if kind == Kind::Bird {
        assert!(
            routes.contains("(64512,100)"),
            "no community at BIRD:\n{routes}"
        );
    }
    assert!(net.agent_alive());
}

#[test]
fn bird_exchanges_routes_both_ways() {
    exchange(Kind::Bird, "b");
}

#[test]
fn frr_exchanges_routes_both_ways() {
    exchange(Kind::Frr, "f");
}

#[test]
fn gobgp_exchanges_routes_both_ways() {
    exchange(Kind::Gobgp, "g");
}

/// TCP-MD5 segments the peer's kernel refused (its `TCPMD5Failure` counter).
fn md5_failures(net: &Net, peer: &str) -> u64 {
    let out = ok(&[
        "ip",
        "netns",
        "exec",
        &net.ns(peer),
        "cat",
        "/proc/net/netstat",
    ]);
    let mut lines = out.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPMD5Failure")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_wrong_md5_password_keeps_the_session_down() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("m", false);
    // base64 of "wrong": the peer's kernel drops our segments for their bad digest.
    let wrong = one_bird_flags("d3Jvbmc=", &["--bgp-holdtime=9s"]);
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let ns = net.node("", &wrong);
    assert!(
        wait(20, || md5_failures(&net, "r1") > 0),
        "the peer saw no segment with a bad MD5 digest:\n{}",
        net.log()
    );
    assert_ne!(net.state("192.168.50.1"), "established", "{}", net.log());
    assert!(net.rib("172.16.1.0/24").is_none());
    // The positive control: the same agent with the right password comes up.
    net.kill_agent();
    let right = one_bird_flags(SECRET_B64, &["--bgp-holdtime=9s"]);
    let right: Vec<&str> = right.iter().map(String::as_str).collect();
    net.start_agent(&ns, &right);
    assert!(
        wait(40, || net.state("192.168.50.1") == "established"),
        "{}",
        net.log()
    );
}

#[test]
fn a_route_reflector_reflects_between_its_clients() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new("r");
    let mut clients = Vec::new();
    for n in [2u8, 3] {
        let mut c = PeerConf::external(n);
        c.asn = 64512;
        c.addr6 = None;
        c.password = None;
        c.announce6 = None;
        net.host(&format!("c{n}"), "r0", &[&format!("192.168.50.{n}/24")]);
        clients.push((n, c));
    }
    for (n, c) in &clients {
        net.start(Kind::Bird, &format!("c{n}"), c);
    }
    let yaml = "annotations: {kube-router.io/rr.server: \"42\"}\n\
                nodes:\n\
                \x20 - {name: c2, ip: 192.168.50.2, annotations: {kube-router.io/rr.client: \"42\"}}\n\
                \x20 - {name: c3, ip: 192.168.50.3, annotations: {kube-router.io/rr.client: \"42\"}}\n";
    net.node(yaml, &["--bgp-holdtime=9s"]);
    for a in ["192.168.50.2", "192.168.50.3"] {
        assert!(
            wait(40, || net.state(a) == "established"),
            "session with client {a}: {}\n{}",
            net.state(a),
            net.log()
        );
    }
    // c2's route reaches c3 with ORIGINATOR_ID c2 and our cluster in CLUSTER_LIST.
    assert!(
        wait(20, || net
            .peer_routes(Kind::Bird, "c3")
            .contains("172.16.2.0/24")),
        "c3 did not get c2's route:\n{}\n{}",
        net.peer_routes(Kind::Bird, "c3"),
        net.log()
    );
    let r = net.peer_routes(Kind::Bird, "c3");
    assert!(r.contains("BGP.originator_id: 192.168.50.2"), "{r}");
    assert!(r.contains("BGP.cluster_list: 0.0.0.42"), "{r}");
    // The extended and large communities c2 attached are reflected with the route.
    assert!(r.contains("(rt, 64512, 7)"), "{r}");
    assert!(r.contains("(64512, 1, 2)"), "{r}");
    assert!(net.peer_routes(Kind::Bird, "c2").contains("172.16.3.0/24"));
}

/// A peer that stops talking but keeps its connection (its process frozen: the kernel
/// still acknowledges, no KEEPALIVE comes): the hold timer expires, the session goes
/// down and its routes leave the RIB and the kernel.
#[test]
fn a_silent_peer_is_dropped_when_the_hold_timer_expires() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("ht", false);
    let flags = one_bird_flags(SECRET_B64, &["--bgp-holdtime=9s"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.node("", &flags);
    assert!(
        wait(40, || net.kernel_route("172.16.1.0/24").contains("xrk0")),
        "{}",
        net.log()
    );
    let bird = std::fs::read_to_string(net.dir.join("r1").join("bird.pid")).unwrap();
    ok(&["kill", "-STOP", bird.trim()]);
    let withdrawn = wait(30, || {
        net.kernel_route("172.16.1.0/24").is_empty() && net.rib("172.16.1.0/24").is_none()
    });
    ok(&["kill", "-CONT", bird.trim()]);
    assert!(withdrawn, "the silent peer's route stayed:\n{}", net.log());
    assert!(
        net.log().contains("HoldTimer_Expires"),
        "the session did not end by its hold timer:\n{}",
        net.log()
    );
}

#[test]
fn a_killed_peers_routes_leave_the_fib_and_the_kernel() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, r) = one_bird("k", false);
    ok(&["ip", "-n", &r, "addr", "add", "172.16.1.1/24", "dev", "lo"]);
    let flags = one_bird_flags(SECRET_B64, &["--bgp-holdtime=9s"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = net.node("", &flags);
    assert!(
        wait(40, || net.kernel_route("172.16.1.0/24").contains("xrk0")),
        "{}",
        net.log()
    );
    // The uplink next hop resolves within a neighbour poll (500 ms).
    assert!(
        wait(10, || net.ping(&node, "172.16.1.1")),
        "the node cannot reach the peer's prefix"
    );
    net.kill("r1");
    assert!(
        wait(30, || net.kernel_route("172.16.1.0/24").is_empty()
            && net.rib("172.16.1.0/24").is_none()),
        "the dead peer's route stayed:\n{}",
        net.log()
    );
    assert!(
        !net.ping(&node, "172.16.1.1"),
        "the FIB still forwards to the dead peer"
    );
}

#[test]
fn a_gracefully_restarting_peers_routes_stay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, mut peer, _) = one_bird("gr", true);
    let flags = one_bird_flags(SECRET_B64, &["--bgp-holdtime=9s", "--bgp-graceful-restart"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.node("", &flags);
    assert!(
        wait(40, || net.kernel_route("172.16.1.0/24").contains("xrk0")),
        "{}",
        net.log()
    );
    net.kill("r1");
    // Through the restart the route never leaves the kernel.
    let gone = |net: &Net| net.kernel_route("172.16.1.0/24").is_empty();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(!gone(&net), "the stale route was removed:\n{}", net.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    peer.restarting = true;
    net.start(Kind::Bird, "r1", &peer);
    let up = net.up_keeping_route("192.168.50.1", "172.16.1.0/24");
    assert!(up, "the restarted peer did not come back:\n{}", net.log());
    // After its End-of-RIB nothing is stale and the route is still there.
    assert!(
        wait(20, || {
            let n = net.bgp_json(&["neighbors"]);
            n[0]["stale"] == 0
        }),
        "{}",
        net.log()
    );
    assert!(!gone(&net));
    assert!(net.rib("172.16.1.0/24").is_some());
}

/// A minimal BGP speaker in Python, run from a peer namespace: opens a session to the
/// node (AS 64601) and sends one bad message, or sends garbage before any OPEN.
/// Prints the NOTIFICATION's code and subcode, or `closed` / `none`.
const PY_PEER: &str = r#"
import socket, struct, sys, time
case = sys.argv[1]
def msg(t, body):
    return b'\xff' * 16 + struct.pack('!HB', 19 + len(body), t) + body
def read_msg(s):
    hdr = b''
    while len(hdr) < 19:
        c = s.recv(19 - len(hdr))
        if not c:
            return None
        hdr += c
    n = struct.unpack('!H', hdr[16:18])[0]
    body = b''
    while len(body) < n - 19:
        c = s.recv(n - 19 - len(body))
        if not c:
            return None
        body += c
    return hdr[18], body
s = socket.create_connection(('192.168.50.11', 179), timeout=10)
if case == 'marker':
    s.sendall(b'\x00' * 19)
else:
    opn = struct.pack('!BHH4sB', 4, 64601, 90, socket.inet_aton('192.168.50.5'), 0)
    s.sendall(msg(1, opn))
    while True:
        m = read_msg(s)
        if m is None:
            print('closed'); sys.exit(0)
        if m[0] == 1:
            break
    s.sendall(msg(4, b''))
    while True:
        m = read_msg(s)
        if m is None:
            print('closed'); sys.exit(0)
        if m[0] == 4:
            break
    if case == 'length':
        s.sendall(b'\xff' * 16 + struct.pack('!HB', 9000, 2))
    elif case == 'type':
        s.sendall(msg(9, b'\x00' * 4))
    elif case == 'truncated':
        # The attribute list's length runs past the message: the NLRI cannot be found
        # (an attribute that only overruns the list is treat-as-withdraw, RFC 7606 4).
        attrs = bytes([0x40, 1, 1, 0])
        s.sendall(msg(2, struct.pack('!H', 0) + struct.pack('!H', len(attrs) + 10) + attrs))
    elif case in ('hugepath', 'longpath'):
        # 255 ASNs a segment: 8 segments overflow the 4096-byte message, 7 fit.
        seg = bytes([2, 255]) + struct.pack('!H', 64601) * 255
        path = seg * (8 if case == 'hugepath' else 7)
        attrs = bytes([0x40, 1, 1, 0]) + bytes([0x50, 2]) + struct.pack('!H', len(path)) + path
        attrs += bytes([0x40, 3, 4, 192, 168, 50, 5])
        body = struct.pack('!H', 0) + struct.pack('!H', len(attrs)) + attrs + bytes([24, 172, 16, 9])
        s.sendall(msg(2, body))
        if case == 'longpath':
            # Keep the session until the test has looked at the route (it closes our
            # standard input then).
            sys.stdin.read()
            print('kept')
            sys.exit(0)
while True:
    m = read_msg(s)
    if m is None:
        print('closed'); sys.exit(0)
    if m[0] == 3:
        print('notification %d %d' % (m[1][0], m[1][1]))
        m = read_msg(s)
        print('then closed' if m is None else 'then open')
        sys.exit(0)
"#;

#[test]
fn garbage_on_the_bgp_port_gets_a_notification_not_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new("x");
    let g = net.host("g", "r0", &["192.168.50.5/24"]);
    let flags = ["--peer-router-ips=192.168.50.5", "--peer-router-asns=64601"];
    net.node("", &flags);
    // Each bad message is refused with the code of RFC 4271 6 and the connection
    // closed; a message made huge by its AS_PATH is refused by its length alone.
    for (case, expect) in [
        ("marker", "notification 1 1"),
        ("length", "notification 1 2"),
        ("type", "notification 1 3"),
        ("truncated", "notification 3 1"),
        ("hugepath", "notification 1 2"),
    ] {
        let o = net.exec(&g, &["python3", "-c", PY_PEER, case]);
        let out = text(&o);
        assert!(
            out.contains(expect) && out.contains("then closed"),
            "{case}: {out}\n{}",
            net.log()
        );
        assert!(net.agent_alive(), "the agent died on {case}");
    }
    // The longest AS_PATH that fits (1785 ASNs) is taken whole.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &g, "python3", "-c", PY_PEER, "longpath"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let taken = wait(7, || {
        net.rib("172.16.9.0/24").is_some_and(|e| {
            e["paths"][0]["as_path"]
                .as_str()
                .unwrap()
                .split(' ')
                .count()
                == 1785
        })
    });
    // Closing its standard input lets the peer go.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        taken,
        "the long AS_PATH was not taken whole: {}\n{}",
        text(&out),
        net.log()
    );
    assert!(net.agent_alive());
}

#[test]
fn annotation_and_node_changes_apply_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("l", false);
    let flags = one_bird_flags(SECRET_B64, &[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.node("", &flags);
    assert!(
        wait(40, || net
            .peer_routes(Kind::Bird, "r1")
            .contains("BGP.as_path: 64512\n")),
        "{}\n{}",
        net.peer_routes(Kind::Bird, "r1"),
        net.log()
    );
    let pid_before = std::fs::read_to_string(net.dir.join("node.pid")).unwrap();
    // The same file with a prepend annotation and one more node: the agent re-reads it.
    let path = net.dir.join("node.yaml");
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(
        "annotations:\n  kube-router.io/path-prepend.as: \"64512\"\n  kube-router.io/path-prepend.repeat-n: \"2\"\n\
         nodes:\n  - {name: node9, ip: 192.168.50.9}\n",
    );
    std::fs::write(&path, yaml).unwrap();
    assert!(
        wait(20, || net
            .peer_routes(Kind::Bird, "r1")
            .contains("BGP.as_path: 64512 64512 64512")),
        "the prepend did not reach the peer:\n{}\n{}",
        net.peer_routes(Kind::Bird, "r1"),
        net.log()
    );
    assert_ne!(
        net.state("192.168.50.9"),
        "absent",
        "the new node is not a neighbour"
    );
    assert_eq!(
        net.state("192.168.50.1"),
        "established",
        "the session was reset"
    );
    assert!(net.agent_alive());
    assert_eq!(
        std::fs::read_to_string(net.dir.join("node.pid")).unwrap(),
        pid_before
    );
}

#[test]
fn import_reject_and_bad_annotations_apply_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("c", false);
    let flags = one_bird_flags(SECRET_B64, &[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.node("", &flags);
    assert!(
        wait(40, || net.rib("172.16.1.0/24").is_some()),
        "the peer's route never arrived:\n{}",
        net.log()
    );
    assert!(wait(10, || !net.kernel_route("172.16.1.0/24").is_empty()));
    // This node's annotations now reject the peer's prefixes and name two more external
    // peers, the first with an ASN that is not a number.
    let path = net.dir.join("node.yaml");
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(
        "annotations:\n  kube-router.io/node.bgp.customimportreject: \"172.16.0.0/16\"\n\
         \x20 kube-router.io/peer.ips: \"192.168.50.7,192.168.50.6\"\n\
         \x20 kube-router.io/peer.asns: \"abc,64700\"\n",
    );
    std::fs::write(&path, yaml).unwrap();
    assert!(
        wait(20, || net.rib("172.16.1.0/24").is_none()),
        "the rejected route stayed in the RIB:\n{}",
        net.log()
    );
    assert!(
        wait(10, || net.kernel_route("172.16.1.0/24").is_empty()),
        "the rejected route stayed in the kernel"
    );
    let log = net.log();
    assert!(
        log.contains("node node1: kube-router.io/peer.asns") && log.contains("abc"),
        "the bad annotation was not reported with its node and name:\n{log}"
    );
    assert_eq!(
        net.state("192.168.50.7"),
        "absent",
        "the bad peer was added"
    );
    assert_ne!(
        net.state("192.168.50.6"),
        "absent",
        "the good peer of the same annotation was skipped too"
    );
    assert_eq!(
        net.state("192.168.50.1"),
        "established",
        "the session was reset"
    );
    assert!(net.agent_alive());
}

/// SIGTERM without graceful restart: the peer gets a Cease (administrative shutdown,
/// RFC 4486) and the kernel routes the agent installed go. With graceful restart
/// negotiated the session just ends, with no NOTIFICATION (we do not announce RFC 8538's
/// N bit), so that the peer keeps our routes; the kernel keeps the learned ones too.
#[test]
fn a_stopping_xroute_sends_a_cease_and_removes_its_kernel_routes_unless_restarting() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("st", true);
    let shutdowns = |net: &Net| {
        net.bird_log("r1")
            .matches("Received: Administrative shutdown")
            .count()
    };
    for graceful in [false, true] {
        let mut extra = vec!["--bgp-holdtime=9s"];
        if graceful {
            extra.push("--bgp-graceful-restart");
        }
        let flags = one_bird_flags(SECRET_B64, &extra);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        if graceful {
            let ns = net.ns("node");
            net.start_agent(&ns, &flags);
        } else {
            net.node("", &flags);
        }
        assert!(
            wait(40, || net.kernel_route("172.16.1.0/24").contains("xrk0")
                && net.state("192.168.50.1") == "established"
                && net
                    .peer_routes(Kind::Bird, "r1")
                    .contains("10.244.1.0/24")),
            "{}",
            net.log()
        );
        let before = shutdowns(&net);
        net.stop_agent();
        let ctl = net.dir.join("r1").join("bird.ctl").display().to_string();
        let bird_session = || {
            text(&net.exec(
                &net.ns("r1"),
                &["birdc", "-s", &ctl, "show", "protocols", "x4"],
            ))
        };
        assert!(
            wait(10, || !bird_session().contains("Established")),
            "BIRD did not see the session end: {}",
            bird_session()
        );
        let kept = !net.kernel_route("172.16.1.0/24").is_empty();
        assert_eq!(kept, graceful, "kernel route kept: {kept}\n{}", net.log());
        if graceful {
            assert_eq!(shutdowns(&net), before, "a Cease ended a graceful restart");
            assert!(
                net.peer_routes(Kind::Bird, "r1").contains("10.244.1.0/24"),
                "the helper dropped our route:\n{}",
                net.peer_routes(Kind::Bird, "r1")
            );
        } else {
            assert_eq!(
                shutdowns(&net),
                before + 1,
                "BIRD got no Cease:\n{}\n{}",
                net.bird_log("r1"),
                net.log()
            );
        }
    }
}

#[test]
fn a_restarting_xroute_keeps_its_kernel_routes_and_its_peer_keeps_its_routes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut net, _, _) = one_bird("xg", true);
    let flags = one_bird_flags(SECRET_B64, &["--bgp-holdtime=9s", "--bgp-graceful-restart"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ns = net.node("", &flags);
    assert!(
        wait(40, || net.kernel_route("172.16.1.0/24").contains("xrk0")
            && net
                .peer_routes(Kind::Bird, "r1")
                .contains("10.244.1.0/24")),
        "{}",
        net.log()
    );
    net.kill_agent();
    // The peer, a graceful restart helper, keeps our route once it has seen the
    // session go; the kernel keeps the learned one (nobody removes it).
    let bird_state = |net: &Net| {
        let ctl = net.dir.join("r1").join("bird.ctl").display().to_string();
        text(&net.exec(
            &net.ns("r1"),
            &["birdc", "-s", &ctl, "show", "protocols", "x4"],
        ))
    };
    assert!(
        wait(20, || !bird_state(&net).contains("Established")),
        "BIRD did not see the session go:\n{}",
        bird_state(&net)
    );
    assert!(
        net.peer_routes(Kind::Bird, "r1").contains("10.244.1.0/24"),
        "the helper dropped our route:\n{}",
        net.peer_routes(Kind::Bird, "r1")
    );
    assert!(net.kernel_route("172.16.1.0/24").contains("xrk0"));
    net.start_agent(&ns, &flags);
    assert!(
        net.log()
            .contains("graceful restart: keeping the kernel routes of the previous run"),
        "{}",
        net.log()
    );
    let gone = |net: &Net| net.kernel_route("172.16.1.0/24").is_empty();
    let up = net.up_keeping_route("192.168.50.1", "172.16.1.0/24");
    assert!(up, "the session did not come back:\n{}", net.log());
    assert!(
        wait(20, || net.rib("172.16.1.0/24").is_some()
            && net.bgp_json(&["neighbors"])[0]["stale"] == 0),
        "{}",
        net.log()
    );
    assert!(!gone(&net), "{}", net.log());
    assert!(net.peer_routes(Kind::Bird, "r1").contains("10.244.1.0/24"));
    assert!(net.agent_alive());
}

/// Two directly connected eBGP peers announce 172.16.9.0/24. The first one's path is
/// better (a shorter AS_PATH) but names a next hop off the shared subnet, which this
/// node cannot reach: it must not be eligible (RFC 4271 9.1.2), else it would win and
/// blackhole the prefix. The second one's path is the best; the first is shown as
/// unreachable, counted, and is in neither the FIB nor the kernel.
#[test]
fn a_path_whose_next_hop_cannot_be_reached_is_not_eligible() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new("nh");
    let mut bad = PeerConf::external(1);
    bad.addr6 = None;
    bad.announce4 = Some("172.16.9.0/24".into());
    bad.export_next_hop4 = Some("198.51.100.1".into());
    let mut good = PeerConf::external(2);
    good.asn = 64601;
    good.addr6 = None;
    good.announce4 = Some("172.16.9.0/24".into());
    good.export_prepend = 2;
    net.host("r1", "r0", &["192.168.50.1/24"]);
    net.host("r2", "r0", &["192.168.50.2/24"]);
    net.start(Kind::Bird, "r1", &bad);
    net.start(Kind::Bird, "r2", &good);
    let passwords = format!("--peer-router-passwords={SECRET_B64},{SECRET_B64}");
    let flags = [
        "--peer-router-ips=192.168.50.1,192.168.50.2",
        "--peer-router-asns=64600,64601",
        &passwords,
    ];
    net.node("", &flags);
    let paths = |net: &Net| {
        net.rib("172.16.9.0/24")
            .map(|e| e["paths"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    assert!(
        wait(40, || paths(&net).len() == 2),
        "both paths not there: {:?}\n{}",
        paths(&net),
        net.log()
    );
    let all = paths(&net);
    let of = |hop: &str| all.iter().find(|p| p["next_hop"] == hop).unwrap().clone();
    let (unreachable, reachable) = (of("198.51.100.1"), of("192.168.50.2"));
    assert_eq!(unreachable["unreachable"], true, "{unreachable}");
    assert_eq!(unreachable["best"], false, "{unreachable}");
    assert_eq!(reachable["best"], true, "{reachable}");
    assert!(
        wait(10, || net.kernel_route("172.16.9.0/24").contains("xrk0")),
        "{}",
        net.log()
    );
    let neighbours = net.bgp_json(&["neighbors"]);
    let r1 = neighbours
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == "192.168.50.1")
        .unwrap()
        .clone();
    assert_eq!(r1["unreachable_next_hop"], 1, "{r1}");
    assert_eq!(r1["refused"]["next hop unreachable"], 1, "{r1}");
    assert!(
        net.log().contains("route refused") && net.log().contains("next hop unreachable"),
        "{}",
        net.log()
    );
    // The good peer goes: the prefix has no eligible path left and leaves the kernel.
    net.kill("r2");
    assert!(
        wait(15, || net.kernel_route("172.16.9.0/24").is_empty()),
        "the unreachable path was installed once it was alone:\n{}",
        net.log()
    );
}

#[test]
fn a_peer_two_hops_away_needs_the_multihop_ttl() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new("m");
    // node --- switch --- rt (192.168.50.1 | 192.168.60.1) --- far (BIRD, 192.168.60.2)
    let rt = net.host("rt", "r0", &["192.168.50.1/24"]);
    let far = net.add_ns("far");
    ok(&[
        "ip",
        "netns",
        "exec",
        &rt,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    ok(&[
        "ip", "-n", &rt, "link", "add", "r1", "type", "veth", "peer", "name", "f0", "netns", &far,
    ]);
    net.ip(&rt, "addr add 192.168.60.1/24 dev r1");
    net.ip(&rt, "link set r1 up");
    net.ip(&far, "addr add 192.168.60.2/24 dev f0");
    net.ip(&far, "link set f0 up");
    net.ip(&far, "route add default via 192.168.60.1");
    let mut peer = PeerConf::external(1);
    peer.id = "192.168.60.2".into();
    peer.addr4 = "192.168.60.2".into();
    peer.addr6 = None;
    peer.multihop = true;
    net.start(Kind::Bird, "far", &peer);
    let mut flags = vec![
        "--peer-router-ips=192.168.60.2".to_string(),
        "--peer-router-asns=64600".to_string(),
        format!("--peer-router-passwords={SECRET_B64}"),
    ];
    let direct: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The far peer's next hop is reached through this static route (it would not be
    // eligible otherwise, RFC 4271 9.1.2); the kernel's route carries the session.
    let ns = net.node(
        "routes:\n  - {prefix: 192.168.60.0/24, via: 192.168.50.1}\n",
        &direct,
    );
    net.ip(&ns, "route add 192.168.60.0/24 via 192.168.50.1");
    // Without the flag our segments leave with TTL 1 and die at the router, both ways
    // of opening the session.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        assert_ne!(
            net.state("192.168.60.2"),
            "established",
            "a peer two hops away came up with TTL 1:\n{}",
            net.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    net.kill_agent();
    flags.push("--peer-router-multihop-ttl=2".into());
    let multihop: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.start_agent(&ns, &multihop);
    assert!(
        wait(40, || net.state("192.168.60.2") == "established"),
        "the multihop session did not come up:\n{}",
        net.log()
    );
    assert!(
        wait(20, || net.rib("172.16.1.0/24").is_some()
            && net
                .peer_routes(Kind::Bird, "far")
                .contains("10.244.1.0/24")),
        "routes did not cross the multihop session:\n{}\n{}",
        net.peer_routes(Kind::Bird, "far"),
        net.log()
    );
    assert!(net.agent_alive());
}

#[test]
fn without_full_mesh_only_nodes_of_the_same_asn_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::new("m");
    // Two other nodes, played by BIRD: c2 in our node.asn, c3 in another.
    for (n, asn) in [(2u8, 64512), (3, 64513)] {
        let mut c = PeerConf::external(n);
        c.asn = asn;
        c.addr6 = None;
        c.password = None;
        c.announce6 = None;
        net.host(&format!("c{n}"), "r0", &[&format!("192.168.50.{n}/24")]);
        net.start(Kind::Bird, &format!("c{n}"), &c);
    }
    let yaml = "annotations: {kube-router.io/node.asn: \"64512\"}\n\
                nodes:\n\
                \x20 - {name: c2, ip: 192.168.50.2, annotations: {kube-router.io/node.asn: \"64512\"}}\n\
                \x20 - {name: c3, ip: 192.168.50.3, annotations: {kube-router.io/node.asn: \"64513\"}}\n";
    let ns = net.node(yaml, &["--bgp-holdtime=9s", "--nodes-full-mesh=false"]);
    assert!(
        wait(40, || net.state("192.168.50.2") == "established"),
        "session with c2 (same node.asn): {}\n{}",
        net.state("192.168.50.2"),
        net.log()
    );
    assert!(
        wait(20, || net
            .peer_routes(Kind::Bird, "c2")
            .contains("10.244.1.0/24")),
        "c2 did not get our pod CIDR:\n{}",
        net.peer_routes(Kind::Bird, "c2")
    );
    // c3 is in another node.asn: no session at all, for as long as we look.
    assert!(
        !wait(5, || net.state("192.168.50.3") != "absent"),
        "c3 (another node.asn) became a neighbour: {}",
        net.state("192.168.50.3")
    );
    // The same cluster with the full mesh (the default): every node is a neighbour,
    // in the cluster ASN (so c3, in 64513, refuses the OPEN).
    net.kill_agent();
    net.start_agent(&ns, &["--bgp-holdtime=9s"]);
    assert!(
        wait(40, || net.state("192.168.50.2") == "established"),
        "session with c2 in the full mesh: {}\n{}",
        net.state("192.168.50.2"),
        net.log()
    );
    assert_ne!(
        net.state("192.168.50.3"),
        "absent",
        "c3 is not a neighbour in the full mesh"
    );
}
