//! The lab, end to end, as root: real frames through xroute's fastpath on AF_XDP in
//! network namespaces this test creates and deletes. Flows F1, F2, F7 and F8 run
//! through `xroute lab check` (after its BGP check: the nodes learn each other's pod
//! CIDRs and BIRD in the fabric learns theirs and the service VIPs); then TTL expiry, an unroutable destination, a malformed
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
    for flow in ["BGP", "F1", "F2", "F7", "F8"] {
        assert!(
            report.contains(&format!("PASS {flow} ")),
            "{flow} did not pass:\n{report}"
        );
    }
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lab.drops("node1", "malformed") == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
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

    // The Prometheus endpoint has per-worker series.
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
        "xroute_drops_total{worker=\"0\",reason=\"ttl_expired\"} 1",
        "xroute_xsk_rx_dropped_total{worker=\"0\",port=\"vp1\"}",
        "xroute_worker_generation{worker=\"0\"}",
        "bgp_peer_info{peer=\"192.168.100.1\",asn=\"64600\",type=\"external\",state=\"established\"} 1",
        "bgp_peer_up{peer=\"192.168.100.12\",asn=\"64512\",type=\"internal\"} 1",
        "controller_bgp_advertisements_received_total{peer=\"192.168.100.1\"",
    ] {
        assert!(body.contains(series), "no {series} in /metrics:\n{body}");
    }

    let status = lab.xroute(&["lab", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    eprintln!("{}", text(&status));
}
