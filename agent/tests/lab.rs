//! The lab, end to end, as root: real frames through xroute's fastpath on AF_XDP in
//! network namespaces this test creates and deletes. Flows F1 to F8, over
//! IPv4 and IPv6 (F3 and F4 through services: DNAT, SNAT to the node, reverse NAT), run
//! through `xroute lab check` (after its BGP check: the nodes learn each other's pod
//! CIDRs and BIRD in the fabric learns theirs and the service VIPs, in both families);
//! then TTL and hop-limit expiry, an unroutable destination, a malformed
//! frame and a pod's ARP exchange with its gateway.

use std::process::{Command, Output};

const XROUTE: &str = env!("CARGO_BIN_EXE_xroute");

struct Lab {
    prefix: String,
    dir: String,
}

impl Lab {
    fn xroute(&self, args: &[&str]) -> Output {
        Command::new(XROUTE)
            .args(args)
            .args(["--prefix", &self.prefix, "--dir", &self.dir])
            .output()
            .expect("run xroute")
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn stats(&self, node: &str) -> serde_json::Value {
        let out = self.exec(node, &[XROUTE, "status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Sends raw Ethernet frames from a pod's `eth0`: `frames` is Python that builds
    /// a list `frames` with the helpers `mac`, `ipv4_udp` and `GW` (the gateway's MAC).
    fn send_frames(&self, pod: &str, gateway_mac: &str, frames: &str) {
        let script = format!(
            "import socket, struct\n\
             def mac(s): return bytes.fromhex(s.replace(':', ''))\n\
             def csum(b):\n\
             \x20   s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n\
             \x20   while s > 0xffff: s = (s & 0xffff) + (s >> 16)\n\
             \x20   return (~s) & 0xffff\n\
             def ipv4_udp(dst_mac, src_mac, src, dst, ttl=64, tag=None):\n\
             \x20   udp = struct.pack('!HHHH', 4000, 5001, 12, 0) + b'spam'\n\
             \x20   h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, ttl, 17, 0,\n\
             \x20       socket.inet_aton(src), socket.inet_aton(dst))\n\
             \x20   h = h[:10] + struct.pack('!H', csum(h)) + h[12:]\n\
             \x20   vlan = b'' if tag is None else struct.pack('!HH', 0x8100, tag)\n\
             \x20   return mac(dst_mac) + mac(src_mac) + vlan + b'\\x08\\x00' + h + udp\n\
             GW = '{gateway_mac}'\n\
             {frames}\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             s.bind(('eth0', 0))\n\
             for f in frames: s.send(f)\n"
        );
        let out = self.exec(pod, &["python3", "-c", &script]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Waits (at most 5 s) for a node's drop counter to reach `want`, and returns it.
    fn wait_drops(&self, node: &str, reason: &str, want: u64) -> u64 {
        wait(5, || self.drops(node, reason) >= want);
        self.drops(node, reason)
    }

    /// Frames the steering program of a node's port passed to the kernel.
    fn passed_to_kernel(&self, node: &str, port: &str) -> u64 {
        let v = self.stats(node);
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .map_or(0, |p| p["passed_to_kernel"].as_u64().unwrap())
    }

    fn drops(&self, node: &str, reason: &str) -> u64 {
        let v = self.stats(node);
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["drops"][reason].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.xroute(&["lab", "down"]);
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Polls `f` every 50 ms for up to `secs` seconds; whether it came true.
fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn icmp_errors(stats: &serde_json::Value) -> u64 {
    stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["icmp_errors"].as_u64().unwrap())
        .sum()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn lab_flows_and_slow_paths() {
    let prefix = format!("xrt{}", std::process::id() % 100_000);
    let lab = Lab {
        dir: format!("/tmp/{prefix}"),
        prefix,
    };
    let up = lab.xroute(&["lab", "up"]);
    assert!(up.status.success(), "lab up: {}", text(&up));

    let check = lab.xroute(&["lab", "check"]);
    let report = text(&check);
    eprintln!("{report}");
    assert!(report.contains("PASS BGP "), "BGP did not pass:\n{report}");
    // Every flow over both families: the lab is dual-stack.
    for family in ["IPv4", "IPv6"] {
        for flow in [
            "ECMP",
            "F1",
            "F2",
            "F3",
            "F4",
            "F5",
            "F6",
            "F7",
            "F8",
            "LoadBalancer",
        ] {
            let passed = report.lines().any(|l| {
                l.starts_with(&format!("PASS {flow} ")) && l.contains(&format!("({family})"))
            });
            assert!(passed, "{flow} over {family} did not pass:\n{report}");
        }
    }
    // The last check: a backend removed while TCP and UDP flows run (both families).
    assert!(
        report.contains("PASS Backend removed from a service while TCP and UDP flows run"),
        "the backend removal did not pass:\n{report}"
    );
    assert!(check.status.success(), "{report}");

    // TTL expiry: the gateway answers time exceeded.
    let before = lab.drops("node1", "ttl_expired");
    let ping = lab.exec(
        "n1p1",
        &["ping", "-c", "1", "-t", "1", "-W", "2", "10.244.1.3"],
    );
    let out = text(&ping);
    assert!(
        out.contains("From 10.244.1.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
    assert_eq!(lab.drops("node1", "ttl_expired"), before + 1);
    // ... and over IPv6, hop limit exceeded in transit (RFC 4443 3.3), from the gateway.
    let ping = lab.exec(
        "n1p1",
        &[
            "ping",
            "-6",
            "-c",
            "1",
            "-t",
            "1",
            "-W",
            "2",
            "fd00:10:244:1::3",
        ],
    );
    let out = text(&ping);
    assert!(
        out.contains("From fd00:10:244:1::1") && out.contains("Time exceeded: Hop limit"),
        "{out}"
    );
    assert_eq!(lab.drops("node1", "ttl_expired"), before + 2);

    // No route: the gateway answers net unreachable; nothing leaves the node.
    let before = lab.drops("node1", "no_route");
    let ping = lab.exec("n1p1", &["ping", "-c", "1", "-W", "2", "203.0.113.9"]);
    let out = text(&ping);
    assert!(
        out.contains("From 10.244.1.1") && out.contains("Destination Net Unreachable"),
        "{out}"
    );
    assert_eq!(lab.drops("node1", "no_route"), before + 1);

    // A malformed frame (IPv4 whose total length runs past the frame) is dropped and
    // counted as such.
    let before = lab.drops("node1", "malformed");
    let send = lab.exec(
        "n1p1",
        &[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             s.bind(('eth0', 0))\n\
             eth = bytes.fromhex('ffffffffffff0a580af40102') + b'\\x08\\x00'\n\
             ip = bytes.fromhex('4500ffff000000004011') + bytes(10)\n\
             s.send(eth + ip)\n",
        ],
    );
    assert!(send.status.success(), "{}", text(&send));
    wait(5, || lab.drops("node1", "malformed") != before);
    assert_eq!(lab.drops("node1", "malformed"), before + 1);

    // The pod's ARP for its gateway is answered with its port's MAC.
    let flush = lab.exec("n1p1", &["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(flush.status.success(), "{}", text(&flush));
    let ping = lab.exec("n1p1", &["ping", "-c", "1", "-W", "2", "10.244.1.1"]);
    assert!(ping.status.success(), "ping the gateway: {}", text(&ping));
    let neigh = text(&lab.exec("n1p1", &["ip", "neigh", "show", "10.244.1.1"]));
    let port_mac = text(&lab.exec("node1", &["cat", "/sys/class/net/vp1/address"]))
        .trim()
        .to_string();
    assert!(
        neigh.contains(&format!("lladdr {port_mac}")),
        "gateway neighbour {neigh:?}, port MAC {port_mac}"
    );

    // What a router refuses, with real frames from pod n1p1 (MAC 0a:58:0a:f4:01:02,
    // 10.244.1.2) towards pod n1p2 (10.244.1.3): a source address of another pod
    // (BCP 38), a frame for another MAC, a unicast packet in a broadcast frame (no
    // error either, though its TTL is 1), each counted by name; and the positive
    // control, the same frame as the pod may send it, forwarded.
    let pod_mac = "0a:58:0a:f4:01:02";
    let refusals = [
        (
            "spoofed",
            format!("frames = [ipv4_udp(GW, '{pod_mac}', '10.244.1.3', '10.244.1.3')]"),
        ),
        (
            "other_host",
            format!("frames = [ipv4_udp('02:99:00:00:00:01', '{pod_mac}', '10.244.1.2', '10.244.1.3')]"),
        ),
        (
            "link_broadcast",
            format!("frames = [ipv4_udp('ff:ff:ff:ff:ff:ff', '{pod_mac}', '10.244.1.2', '10.244.1.3', ttl=1)]"),
        ),
    ];
    for (reason, frames) in &refusals {
        let before = lab.drops("node1", reason);
        let errors = icmp_errors(&lab.stats("node1"));
        lab.send_frames("n1p1", &port_mac, frames);
        assert_eq!(
            lab.wait_drops("node1", reason, before + 1),
            before + 1,
            "{reason}"
        );
        if *reason == "link_broadcast" {
            assert_eq!(
                icmp_errors(&lab.stats("node1")),
                errors,
                "an error about a broadcast"
            );
        }
    }
    let forwarded = |v: &serde_json::Value| -> u64 {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["tx_packets"].as_u64().unwrap())
            .sum()
    };
    let before = forwarded(&lab.stats("node1"));
    lab.send_frames(
        "n1p1",
        &port_mac,
        &format!("frames = [ipv4_udp(GW, '{pod_mac}', '10.244.1.2', '10.244.1.3')]"),
    );
    wait(5, || forwarded(&lab.stats("node1")) != before);
    assert!(
        forwarded(&lab.stats("node1")) > before,
        "the pod's own frame was not forwarded"
    );

    // An 802.1Q-tagged frame: the steering program passes it to the kernel (whose vp1
    // has no VLAN, so it goes no further); the fastpath never sees it.
    let passed = lab.passed_to_kernel("node1", "vp1");
    let tagged = lab.drops("node1", "tagged");
    lab.send_frames(
        "n1p1",
        &port_mac,
        &format!("frames = [ipv4_udp(GW, '{pod_mac}', '10.244.1.2', '10.244.1.3', tag=5)]"),
    );
    wait(5, || lab.passed_to_kernel("node1", "vp1") != passed);
    assert!(
        lab.passed_to_kernel("node1", "vp1") > passed,
        "the tagged frame was not passed"
    );
    assert_eq!(lab.drops("node1", "tagged"), tagged);

    // The Prometheus endpoint has per-worker series, with the counts /stats has.
    let ttl_expired = format!(
        "xroute_drops_total{{worker=\"0\",reason=\"ttl_expired\"}} {}",
        lab.drops("node1", "ttl_expired")
    );
    let metrics = lab.exec(
        "node1",
        &[
            "python3",
            "-c",
            "import urllib.request\n\
             print(urllib.request.urlopen('http://127.0.0.1:9253/metrics').read().decode())",
        ],
    );
    let body = text(&metrics);
    for series in [
        "xroute_rx_packets_total{worker=\"0\"}",
        &ttl_expired,
        "xroute_xsk_rx_dropped_total{worker=\"0\",port=\"vp1\"}",
        "xroute_worker_generation{worker=\"0\"}",
        "bgp_peer_info{peer=\"192.168.100.1\",asn=\"64600\",type=\"external\",state=\"established\"} 1",
        "bgp_peer_info{peer=\"fd00:100::1\",asn=\"64600\",type=\"external\",state=\"established\"} 1",
        "bgp_peer_up{peer=\"192.168.100.12\",asn=\"64512\",type=\"internal\"} 1",
        "controller_bgp_advertisements_received_total{peer=\"192.168.100.1\"",
        "xroute_nat_new_flows_total{worker=\"0\"}",
        "xroute_batch_latency_nanoseconds{worker=\"0\",quantile=\"0.99\"}",
        "xroute_conntrack_capacity{family=\"ipv4\"}",
        "xroute_service_backend_flows_total{service=\"default/web\",port=\"tcp\",protocol=\"TCP\",backend=\"10.244.1.2:7778\"}",
        "xroute_service_drops_total{service=\"default/web\",port=\"udp\",protocol=\"UDP\",reason=\"no_endpoints\"} 0",
    ] {
        assert!(body.contains(series), "no {series} in /metrics:\n{body}");
    }

    // The services as `xroute services` lists them, with the flows the checks ran
    // through them counted on their backends, and their flows in `xroute conntrack`.
    let services = text(&lab.exec("node1", &[XROUTE, "services", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&services).expect(&services);
    let ports = v.as_array().expect("a list of service ports");
    let web_tcp = ports
        .iter()
        .find(|p| p["service"] == "default/web" && p["port_name"] == "tcp")
        .expect(&services);
    let flows: u64 = web_tcp["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["flows"].as_u64().unwrap())
        .sum();
    assert!(flows >= 1, "no flow counted on web's backends:\n{services}");
    // /stats carries the same service ports and counters.
    let stats = lab.stats("node1");
    let in_stats = stats["services"]
        .as_array()
        .expect("services in /stats")
        .iter()
        .find(|p| p["service"] == "default/web" && p["port_name"] == "tcp")
        .map(|p| {
            p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["flows"].as_u64().unwrap())
                .sum::<u64>()
        });
    assert!(
        in_stats.is_some_and(|f| f >= 1),
        "web's flows not in /stats: {stats}"
    );
    let table = text(&lab.exec("node1", &[XROUTE, "services"]));
    eprintln!("{table}");
    assert!(
        table.contains("default/web tcp 7778/TCP -> 10.96.0.10:7778 (ClusterIP)"),
        "{table}"
    );
    // The lab check's last connections (new ones through spread's ClusterIP after the
    // backend removal, all to node1's pod) are listed, each with its translation.
    let ct = text(&lab.exec(
        "node1",
        &[XROUTE, "conntrack", "--service", "10.96.0.11:7779"],
    ));
    let listed = ct
        .lines()
        .filter(|l| {
            l.starts_with("TCP  10.244.1.3:")
                && l.contains(" -> 10.96.0.11:7779 => 10.244.1.3:")
                && l.contains(" -> 10.244.1.2:7779 ")
        })
        .count();
    assert!(listed >= 1, "{ct}");
    assert!(
        ct.trim_end()
            .ends_with(&format!("{} flows", ct.lines().count() - 1)),
        "{ct}"
    );

    // A port's MTU change reaches the fastpath (a netlink link event): a DF packet
    // too big for the new MTU gets "fragmentation needed" with it.
    let ip = |ns: &str, args: &[&str]| {
        let o = lab.exec(ns, &[&["ip"], args].concat());
        assert!(o.status.success(), "ip {args:?}: {}", text(&o));
    };
    ip("node1", &["link", "set", "vp2", "mtu", "1400"]);
    let port_mtu = |lab: &Lab| -> u64 {
        lab.stats("node1")["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == "vp2")
            .map_or(0, |p| p["mtu"].as_u64().unwrap())
    };
    wait(5, || port_mtu(&lab) == 1400);
    assert_eq!(port_mtu(&lab), 1400);
    let ping = text(&lab.exec(
        "n1p1",
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1420",
            "10.244.1.3",
        ],
    ));
    assert!(ping.contains("mtu = 1400"), "{ping}");
    ip("node1", &["link", "set", "vp2", "mtu", "1500"]);

    // A neighbour's new MAC reaches the fastpath from the kernel's neighbour events,
    // not from a table dump: it must arrive while no dump ran (tried again if one did).
    let neighbour = |lab: &Lab| -> String {
        lab.stats("node1")["neighbours"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["addr"] == "192.168.100.12")
            .map_or(String::new(), |n| n["mac"].as_str().unwrap().to_string())
    };
    let counter = |lab: &Lab, name: &str| lab.stats("node1")[name].as_u64().unwrap();
    let mut by_event = false;
    for (attempt, mac) in [
        "02:00:00:00:12:97",
        "02:00:00:00:12:98",
        "02:00:00:00:12:99",
    ]
    .into_iter()
    .enumerate()
    {
        let (events, dumps) = (
            counter(&lab, "kernel_events"),
            counter(&lab, "kernel_dumps"),
        );
        ip(
            "node1",
            &[
                "neigh",
                "replace",
                "192.168.100.12",
                "lladdr",
                mac,
                "dev",
                "up0",
            ],
        );
        assert!(
            wait(5, || neighbour(&lab) == mac),
            "attempt {attempt}: the new MAC did not arrive: {}",
            neighbour(&lab)
        );
        if counter(&lab, "kernel_dumps") == dumps {
            assert!(counter(&lab, "kernel_events") > events);
            by_event = true;
            break;
        }
    }
    assert!(by_event, "every attempt overlapped a table dump");
    ip("node1", &["neigh", "del", "192.168.100.12", "dev", "up0"]);

    live_service_changes(&lab);

    let status = lab.xroute(&["lab", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    eprintln!("{}", text(&status));
}

/// Services changed while the agents run: a new service with an ExternalIP, advertised
/// by BGP and steered by the uplinks at once. (A backend removed while flows run is
/// `xroute lab check`'s last check.)
fn live_service_changes(lab: &Lab) {
    use std::process::Stdio;
    let spawn = |ns: &str, args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns(ns), XROUTE, "probe"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a probe")
    };
    let backends = [("n1p1", "10.244.1.2"), ("n2p1", "10.244.2.2")];
    // Both nodes' files gain the service `late` on 198.51.100.30:7779 with node1's pod
    // as its endpoint.
    for n in [1, 2] {
        let path = format!("{}/node{n}.yaml", lab.dir);
        let yaml = std::fs::read_to_string(&path).unwrap();
        let mut out = yaml.trim_end().to_string();
        out.push_str("\n  - {name: late, external_ips: [198.51.100.30], ports: [{name: ident, port: 7779}], endpoints: [10.244.1.2]}\n");
        // Whole or not at all: the agent must never read a half-written file.
        let tmp = format!("{path}.new");
        std::fs::write(&tmp, out).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let reloaded = |n: &str| {
        let out = text(&lab.exec(n, &[XROUTE, "services", "--json"]));
        out.contains("default/late")
    };
    assert!(
        wait(15, || reloaded("node1") && reloaded("node2")),
        "the agents did not take the new service"
    );
    let idents: Vec<_> = backends
        .iter()
        .map(|(ns, ip)| {
            let bind = format!("{ip}:7779");
            spawn(
                ns,
                &[
                    "tcp-ident",
                    "--bind",
                    &bind,
                    "--timeout",
                    "30",
                    "--name",
                    ip,
                ],
            )
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let connects = |from: &str, to: &str| {
        let out = lab.exec(
            from,
            &[XROUTE, "probe", "tcp-connects", "--to", to, "--count", "50"],
        );
        text(&out).trim().to_string()
    };
    // The new service answers from outside, through the fabric (BGP) and the uplinks'
    // steering.
    let mut late = String::new();
    let served = wait(15, || {
        late = connects("client", "198.51.100.30:7779");
        late == "spread 10.244.1.2=50"
    });
    assert!(served, "the new service's ExternalIP from outside: {late}");
    for mut c in idents {
        let _ = c.kill();
        let _ = c.wait();
    }
}
