//! `xroute lab check`: one PASS or FAIL line per check, each flow over IPv4 and IPv6.
//!
//! BGP first (sessions and routes, [`Lab::bgp_ready`]), then ECMP: the fabric spreads
//! the client's flows to the service VIP over both nodes and sends the Local one's to
//! node1. Then flows F1, F2 (on BGP-learned routes), F3 (pod -> ClusterIP), F4 (client ->
//! ExternalIP through the fabric's ECMP), F7 and F8 of DESIGN.md, each with
//! ping, a UDP exchange, an exact TCP transfer and iperf3; LoadBalancer IPs with and
//! without the client in their source ranges, and a service without endpoints
//! refusing TCP and UDP ([`Lab::lb_and_refusals`]). Last, a backend removed
//! from a service while flows run ([`Lab::backend_removed`]). Every server is waited
//! for until it listens (`ss`), never for a fixed time.

use super::topology::Family;
use super::Lab;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// UDP flows the lab sends to each service VIP to see the fabric spread them.
const ECMP_FLOWS: u32 = 64;
/// The exact TCP transfer of every flow.
const TCP_BYTES: u64 = 8 << 20;
/// Connections, one after another, that session affinity must keep on one backend.
const STICKY_CONNECTIONS: u32 = 20;
/// Short TCP connections through a service, to see them spread over its backends.
const SHORT_CONNECTIONS: u32 = 1000;

/// Bytes sent and received and Mbit/s of an iperf3 `-J` report; an error when the
/// server received nothing or less than nine tenths of what was sent. (iperf3's server
/// stops counting when the test ends, with the last segments still in flight: its count
/// is a little short of the sender's even on kernel-only paths. The exact count is
/// `tcp_exact`'s.)
fn iperf_result(out: &str) -> Result<(u64, u64, f64), String> {
    let v: serde_json::Value =
        serde_json::from_str(out).map_err(|e| format!("iperf3 output: {e}"))?;
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    if received == 0 || received * 10 < sent * 9 {
        return Err(format!("sent {sent} bytes, the server received {received}"));
    }
    let mbps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6;
    Ok((sent, received, mbps))
}

impl Lab {
    pub fn check(&self) -> Result<(), String> {
        if !Path::new(&format!("/run/netns/{}", self.node(1))).exists() {
            return Err(format!(
                "no lab with prefix {}; run `xroute lab up` first",
                self.prefix
            ));
        }
        let mut failed = 0;
        let mut report = |what: &str, r: Result<String, String>| match r {
            Ok(detail) => println!("PASS {what}: {detail}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {what}: {e}");
            }
        };
        report(
            "BGP nodes mesh and peer with the fabric's BIRD",
            self.bgp_ready(),
        );
        for f in Family::BOTH {
            let fam = f.name();
            report(
                &format!("ECMP client -> service VIPs ({fam}), spread by the fabric over the nodes that announce them"),
                self.ecmp_spread(f),
            );
            let flows: [(&str, &str, String, String, String); 4] = [
                (
                    "F1",
                    "pod -> pod, same node",
                    self.pod(1, 2),
                    self.pod(1, 3),
                    f.pod_ip(1, 3),
                ),
                (
                    "F2",
                    "pod -> pod, other node (BGP-learned route)",
                    self.pod(1, 2),
                    self.pod(2, 2),
                    f.pod_ip(2, 2),
                ),
                (
                    "F7",
                    "node (host stack) -> pod",
                    self.node(1),
                    self.pod(1, 2),
                    f.pod_ip(1, 2),
                ),
                (
                    "F7",
                    "node (host stack) -> pod on the other node (BGP route in the kernel)",
                    self.node(1),
                    self.pod(2, 2),
                    f.pod_ip(2, 2),
                ),
            ];
            for (id, what, from, to, dst) in &flows {
                // Pods keep their address to other pods, on this node or another one
                // (no pod egress SNAT inside --cluster-cidr).
                let source = id.starts_with("F1") || id.starts_with("F2");
                let want = source.then(|| f.pod_ip(1, 2));
                report(
                    &format!("{id} {what} ({fam})"),
                    self.flow(f, from, to, dst, want.as_deref()),
                );
            }
            let backends = [
                (self.pod(1, 2), f.pod_ip(1, 2)),
                (self.pod(2, 2), f.pod_ip(2, 2)),
            ];
            report(
                &format!("F3 pod -> ClusterIP, backends on both nodes ({fam})"),
                self.service_flow(
                    f,
                    &self.pod(1, 3),
                    [&f.cluster_ip(), &f.spread_cluster_ip()],
                    &backends,
                ),
            );
            report(
                &format!("F7 node (host stack) -> ClusterIP, through the host port ({fam})"),
                self.tcp_through(f, &self.node(1), &f.cluster_ip(), &backends)
                    .map(|served| format!("{TCP_BYTES} bytes to {}", backends[served[0].0].1)),
            );
            report(
                &format!("F4 client -> ExternalIP announced by both nodes (ECMP), SNAT to the node ({fam})"),
                self.service_flow(f, &self.ns("client"), [&f.service_vip(), &f.spread_vip()], &backends),
            );
            report(
                &format!(
                    "F5 client -> NodeIP:NodePort, externalTrafficPolicy Cluster and Local ({fam})"
                ),
                self.f5(f, &backends),
            );
            report(
                &format!("F6 pod -> outside the cluster, SNAT to the node ({fam})"),
                self.f6(f),
            );
            report(
                &format!("F8 client -> node IP, passed to the kernel untouched ({fam})"),
                self.f8(f),
            );
            report(
                &format!("LoadBalancer IPs announced by BGP with loadBalancerSourceRanges, and a service without endpoints refused ({fam})"),
                self.lb_and_refusals(f, &backends),
            );
        }
        report(
            "Backend removed from a service while TCP and UDP flows run (IPv4 and IPv6)",
            self.backend_removed(),
        );
        if failed > 0 {
            return Err(format!(
                "{failed} check(s) failed; logs in {}",
                self.dir.display()
            ));
        }
        Ok(())
    }

    /// Waits (at most 5 s) until a server in namespace `ns` listens on `port` (UDP, or
    /// TCP), instead of guessing how long it takes to start.
    fn wait_listening(&self, ns: &str, udp: bool, port: u16) -> Result<(), String> {
        self.wait_listening_n(ns, udp, port, 1)
    }

    /// Ping, a UDP exchange and an iperf3 transfer from namespace `from` to `dst` in `to`.
    /// Ping, a UDP exchange and iperf3 from `from` to `dst` in `to`; with `source`, the
    /// UDP server must have seen the client as that address.
    fn flow(
        &self,
        f: Family,
        from: &str,
        to: &str,
        dst: &str,
        source: Option<&str>,
    ) -> Result<String, String> {
        let ping = self.ping(from, dst)?;
        let (udp, peer) = self.udp(f, from, to, dst)?;
        if let Some(want) = source {
            if peer != want {
                return Err(format!(
                    "udp: the server saw the client as {peer}, not as its address {want}"
                ));
            }
        }
        let tcp = self.iperf(f, from, to, dst)?;
        let seen = source.map_or(String::new(), |s| format!(" (seen as {s})"));
        Ok(format!("{ping}, {udp}{seen}, {tcp}"))
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

    /// A UDP exchange: the client's line and the address the server saw it as.
    fn udp(&self, f: Family, from: &str, to: &str, dst: &str) -> Result<(String, String), String> {
        let exe = self.xroute()?;
        let at = f.socket(dst, 7777);
        let server = Command::new("ip")
            .args(["netns", "exec", to])
            .arg(&exe)
            .args([
                "probe",
                "udp-echo",
                "--bind",
                &at,
                "--count",
                "20",
                "--timeout",
                "15",
            ])
            .stdout(Stdio::piped())
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
                &at,
                "--count",
                "20",
            ],
        );
        let out = server.wait_with_output();
        let server_ok = out.as_ref().is_ok_and(|o| o.status.success());
        let line = client.map_err(|e| format!("udp: {e}"))?;
        if !server_ok {
            return Err("udp: the echo server did not see every datagram".into());
        }
        let peer = out
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("peer ").map(str::to_string))
            .unwrap_or_default();
        Ok((line.trim().to_string(), peer))
    }

    /// An exact transfer: `TCP_BYTES` of a pattern, counted and checked by the receiver.
    fn tcp_exact(&self, f: Family, from: &str, to: &str, dst: &str) -> Result<u64, String> {
        let exe = self.xroute()?;
        let at = f.socket(dst, 7778);
        let server = Command::new("ip")
            .args(["netns", "exec", to])
            .arg(&exe)
            .args(["probe", "tcp-sink", "--bind", &at])
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
                &at,
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

    fn iperf(&self, f: Family, from: &str, to: &str, dst: &str) -> Result<String, String> {
        let exact = self.tcp_exact(f, from, to, dst)?;
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
        let (sent, received, mbps) = iperf_result(&out).map_err(|e| format!("iperf3: {e}"))?;
        Ok(format!(
            "tcp {exact} bytes verified, iperf3 {received} of {sent} bytes received ({mbps:.0} Mbit/s)"
        ))
    }

    /// Starts a server on each backend (`args` for its address) and waits until each
    /// listens on `port`.
    fn serve_on(
        &self,
        backends: &[(String, String)],
        port: u16,
        udp: bool,
        args: &dyn Fn(&str) -> Vec<String>,
    ) -> Result<Vec<std::process::Child>, String> {
        let mut servers = Vec::new();
        for (ns, ip) in backends {
            let child = Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args(ip))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("server in {ns}: {e}"))?;
            servers.push(child);
            self.wait_listening(ns, udp, port)?;
        }
        Ok(servers)
    }

    /// An exact TCP transfer from `from` to `vip`'s port 7778: one backend must have
    /// received every byte. The backends that served, with what they printed.
    fn tcp_through(
        &self,
        f: Family,
        from: &str,
        vip: &str,
        backends: &[(String, String)],
    ) -> Result<Vec<(usize, String)>, String> {
        let exe = self.xroute()?.to_string_lossy().to_string();
        let servers = self.serve_on(backends, 7778, false, &|ip| {
            vec![
                exe.clone(),
                "probe".into(),
                "tcp-sink".into(),
                "--bind".into(),
                f.socket(ip, 7778),
            ]
        })?;
        let sent = self.exec(
            from,
            &[
                &exe,
                "probe",
                "tcp-source",
                "--to",
                &f.socket(vip, 7778),
                "--bytes",
                &TCP_BYTES.to_string(),
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        let tcp_served = finished(servers);
        sent.map_err(|e| format!("tcp through {vip}: {e}"))?;
        let got: Vec<u64> = tcp_served
            .iter()
            .filter_map(|(_, out)| out.trim().parse().ok())
            .collect();
        if got != [TCP_BYTES] {
            return Err(format!(
                "tcp through {vip}: sent {TCP_BYTES} bytes, the backends received {got:?}"
            ));
        }
        Ok(tcp_served)
    }

    /// The frames both nodes' workers dropped for `reason` (a counter's name).
    fn drops(&self, reason: &str) -> Result<u64, String> {
        let mut n = 0;
        for node in [1, 2] {
            let v = self.stats(node)?;
            for w in v["workers"].as_array().into_iter().flatten() {
                n += w["drops"][reason].as_u64().unwrap_or(0);
            }
        }
        Ok(n)
    }

    /// Ping, a UDP exchange, an exact TCP transfer and iperf3 from namespace `from` to
    /// a service's `vip`, with a server on every backend (`(namespace, address)`):
    /// whichever backend Maglev picks answers, the others' servers are stopped.
    fn service_flow(
        &self,
        f: Family,
        from: &str,
        [vip, spread_vip]: [&str; 2],
        backends: &[(String, String)],
    ) -> Result<String, String> {
        let ping = self.ping(from, vip)?;
        let exe = self.xroute()?;
        let serve = |port: u16, udp: bool, args: &dyn Fn(&str) -> Vec<String>| {
            self.serve_on(backends, port, udp, args)
        };
        let finish = finished;
        let exe_s = exe.to_string_lossy().to_string();
        // UDP: one socket, one flow, one backend.
        let servers = serve(7777, true, &|ip| {
            vec![
                exe_s.clone(),
                "probe".into(),
                "udp-echo".into(),
                "--bind".into(),
                f.socket(ip, 7777),
                "--count".into(),
                "20".into(),
                "--timeout".into(),
                "10".into(),
            ]
        })?;
        let client = self.exec(
            from,
            &[
                &exe_s,
                "probe",
                "udp-client",
                "--to",
                &f.socket(vip, 7777),
                "--count",
                "20",
                "--big",
                "3000",
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        let udp_served = finish(servers);
        let udp = client.map_err(|e| format!("udp through {vip}: {e}"))?;
        if udp_served.len() != 1 {
            return Err(format!(
                "udp through {vip}: {} backends saw the whole flow, not one",
                udp_served.len()
            ));
        }
        // The exact TCP transfer, then iperf3: real TCP stacks (window scaling,
        // retransmissions, closes), none of whose segments may be taken for invalid.
        let invalid_before = self.drops("conntrack_invalid")?;
        let tcp_served = self.tcp_through(f, from, vip, backends)?;
        // iperf3.
        let servers = serve(5201, false, &|ip| {
            ["iperf3", "-s", "-1", "-B", ip, "-p", "5201"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })?;
        let out = self.exec(from, &["iperf3", "-c", vip, "-p", "5201", "-t", "2", "-J"]);
        std::thread::sleep(Duration::from_millis(200));
        let iperf_served = finish(servers);
        let out = out.map_err(|e| format!("iperf3 through {vip}: {e}"))?;
        let (sent, received, mbps) =
            iperf_result(&out).map_err(|e| format!("iperf3 through {vip}: {e}"))?;
        let invalid = self
            .drops("conntrack_invalid")?
            .saturating_sub(invalid_before);
        if invalid != 0 {
            return Err(format!(
                "tcp and iperf3 through {vip}: {invalid} of their segments dropped as invalid (outside the window or bad flags)"
            ));
        }
        let who = |served: &[(usize, String)]| {
            served
                .first()
                .map_or("?".to_string(), |(i, _)| backends[*i].1.clone())
        };
        // The service has ClientIP affinity (per port, as kube-proxy has it): iperf3's
        // control and data connections reached one backend, whichever node the
        // fabric sent each to, or the test would not have run.
        let (u, t, i) = (who(&udp_served), who(&tcp_served), who(&iperf_served));
        // And checked: short connections to the TCP port, one after another (new source
        // ports, over either node), all reach the backend the exact transfer did.
        let servers = serve(7778, false, &|ip| {
            vec![
                exe_s.clone(),
                "probe".into(),
                "tcp-ident".into(),
                "--bind".into(),
                f.socket(ip, 7778),
                "--name".into(),
                ip.to_string(),
            ]
        })?;
        let sticky = self.exec(
            from,
            &[
                &exe_s,
                "probe",
                "tcp-connects",
                "--to",
                &f.socket(vip, 7778),
                "--count",
                &STICKY_CONNECTIONS.to_string(),
            ],
        );
        let _ = finish(servers);
        let sticky = sticky.map_err(|e| format!("connections through {vip}: {e}"))?;
        let on_t = sticky
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{t}=")))
            .and_then(|n| n.parse::<u32>().ok());
        if on_t != Some(STICKY_CONNECTIONS) {
            return Err(format!(
                "session affinity: {STICKY_CONNECTIONS} connections through {vip} did not all reach backend {t}: {}",
                sticky.trim()
            ));
        }
        // Short connections, one after another, through the service without affinity:
        // Maglev spreads them over every backend.
        let servers = serve(7779, false, &|ip| {
            vec![
                exe_s.clone(),
                "probe".into(),
                "tcp-ident".into(),
                "--bind".into(),
                f.socket(ip, 7779),
                "--name".into(),
                ip.to_string(),
            ]
        })?;
        let spread = self.exec(
            from,
            &[
                &exe_s,
                "probe",
                "tcp-connects",
                "--to",
                &f.socket(spread_vip, 7779),
                "--count",
                &SHORT_CONNECTIONS.to_string(),
            ],
        );
        let _ = finish(servers);
        let spread = spread.map_err(|e| format!("short connections through {spread_vip}: {e}"))?;
        let spread = spread.trim();
        for (_, ip) in backends {
            let n = spread
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{ip}=")))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0);
            if n == 0 {
                return Err(format!(
                    "{SHORT_CONNECTIONS} short connections through {spread_vip} never reached backend {ip}: {spread}"
                ));
            }
        }
        Ok(format!(
            "{ping}, {} (backend {u}), tcp {TCP_BYTES} bytes verified (backend {t}), iperf3 {received} of {sent} bytes ({mbps:.0} Mbit/s, no segment invalid; both connections on backend {i}, {STICKY_CONNECTIONS} more on {t}: session affinity); {SHORT_CONNECTIONS} short tcp connections to {spread_vip} {spread}",
            udp.trim(),
        ))
    }

    /// A UDP exchange from `from` to `to` (a VIP or node address and port), with an echo
    /// server on port 7777 of every backend: the client's line, the backend that
    /// answered (its index) and the source address that backend saw.
    fn udp_via(
        &self,
        f: Family,
        from: &str,
        to: &str,
        backends: &[(String, String)],
    ) -> Result<(String, usize, String), String> {
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        let mut servers = Vec::new();
        for (ns, ip) in backends {
            let child = Command::new("ip")
                .args(["netns", "exec", ns, &exe, "probe", "udp-echo", "--bind"])
                .arg(f.socket(ip, 7777))
                .args(["--count", "20", "--timeout", "10"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("udp server in {ns}: {e}"))?;
            servers.push(child);
            self.wait_listening(ns, true, 7777)?;
        }
        let client = self.exec(
            from,
            &[
                &exe,
                "probe",
                "udp-client",
                "--to",
                to,
                "--count",
                "20",
                "--big",
                "3000",
            ],
        );
        let mut answered = Vec::new();
        for (i, mut c) in servers.into_iter().enumerate() {
            // The backend that took the flow ends by itself once it echoed all 20.
            let deadline = Instant::now() + Duration::from_millis(500);
            let done = loop {
                match c.try_wait() {
                    Ok(Some(status)) => break status.success(),
                    Ok(None) if client.is_ok() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break false,
                }
            };
            if done {
                let mut out = String::new();
                if let Some(mut o) = c.stdout.take() {
                    use std::io::Read;
                    let _ = o.read_to_string(&mut out);
                }
                let peer = out
                    .lines()
                    .find_map(|l| l.strip_prefix("peer "))
                    .unwrap_or("")
                    .to_string();
                answered.push((i, peer));
            } else {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let line = client.map_err(|e| format!("udp to {to}: {e}"))?;
        match answered.as_slice() {
            [(i, peer)] => Ok((line.trim().to_string(), *i, peer.clone())),
            _ => Err(format!(
                "udp to {to}: {} backends saw the whole flow, not one",
                answered.len()
            )),
        }
    }

    /// F5: the client reaches node1's address on the Cluster policy's NodePort (any
    /// backend; the backend sees node1's address) and on the Local one's (node1's own
    /// endpoint only; the backend sees the client's address), checked from the
    /// backend's side.
    fn f5(&self, f: Family, backends: &[(String, String)]) -> Result<String, String> {
        use super::topology::{NODE_PORT_CLUSTER, NODE_PORT_LOCAL};
        let client = self.ns("client");
        let node = f.node_ip(1);
        let (line, i, peer) =
            self.udp_via(f, &client, &f.socket(&node, NODE_PORT_CLUSTER), backends)?;
        if peer != node {
            return Err(format!(
                "Cluster policy: backend {} saw the flow from {peer}, not from node1 ({node})",
                backends[i].1
            ));
        }
        let cluster = format!("Cluster: {line}, backend {} saw {peer}", backends[i].1);
        let (line, i, peer) =
            self.udp_via(f, &client, &f.socket(&node, NODE_PORT_LOCAL), backends)?;
        let want = f.client_ip();
        if peer != want || i != 0 {
            return Err(format!(
                "Local policy: backend {} saw the flow from {peer}; want node1's own backend to see the client, {want}",
                backends[i].1
            ));
        }
        let local = format!(
            "Local: {line}, backend {} saw the client {peer}",
            backends[i].1
        );
        // The Local service's healthCheckNodePort: node1 has its endpoint, node2 none.
        let exe = self.xroute()?;
        let exe = exe.to_string_lossy();
        let mut health = Vec::new();
        for (n, want) in [(1, "200 "), (2, "503 ")] {
            let at = f.socket(&f.node_ip(n), super::topology::HEALTH_CHECK_PORT);
            let got = self
                .exec(&client, &[&exe, "probe", "http-get", "--to", &at])
                .map_err(|e| format!("health check of node{n}: {e}"))?;
            let got = got.trim();
            let count = if n == 1 { 1 } else { 0 };
            if !got.starts_with(want) || !got.contains(&format!("\"localEndpoints\":{count}")) {
                return Err(format!(
                    "healthCheckNodePort of node{n} answered `{got}`; want {want}with localEndpoints {count}"
                ));
            }
            health.push(format!("node{n} {}", &got[..3]));
        }
        Ok(format!(
            "{cluster}; {local}; healthCheckNodePort: {}",
            health.join(", ")
        ))
    }

    /// F6: a pod's UDP exchange with the client outside the cluster: the client sees
    /// node1's address (`--enable-pod-egress`).
    fn f6(&self, f: Family) -> Result<String, String> {
        let client = [(self.ns("client"), f.client_ip())];
        let to = f.socket(&f.client_ip(), 7777);
        let (line, _, peer) = self.udp_via(f, &self.pod(1, 2), &to, &client)?;
        let node = f.node_ip(1);
        if peer != node {
            return Err(format!("the client saw {peer}, not node1's address {node}"));
        }
        Ok(format!("{line}; the client saw node1's address {peer}"))
    }

    /// Frames node `n`'s uplink took in so far: steered to the fastpath or passed to the
    /// kernel.
    fn uplink_frames(&self, n: u8) -> Result<u64, String> {
        let v = self.stats(n)?;
        let port = v["ports"].as_array().and_then(|p| p.first());
        let count = |key: &str| port.and_then(|p| p[key].as_u64()).unwrap_or(0);
        Ok(count("steered_to_fastpath") + count("passed_to_kernel"))
    }

    /// How many frames each node's uplink took in while the client sent `ECMP_FLOWS`
    /// UDP flows to `vip`, one frame each (BGP keepalives and neighbour discovery may
    /// add a few).
    fn flows_to(&self, f: Family, vip: &str) -> Result<[u64; 2], String> {
        let exe = self.xroute()?;
        let before = [self.uplink_frames(1)?, self.uplink_frames(2)?];
        self.exec(
            &self.ns("client"),
            &[
                &exe.to_string_lossy(),
                "probe",
                "udp-flows",
                "--to",
                &f.socket(vip, 7779),
                "--flows",
                &ECMP_FLOWS.to_string(),
            ],
        )
        .map_err(|e| format!("udp flows to {vip}: {e}"))?;
        // The frames cross the fabric and a node's XDP program within milliseconds:
        // wait until all are counted and the counts stand still (neighbour discovery
        // reaches both uplinks too, so the sum alone can be reached early), at most 2 s.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = [u64::MAX; 2];
        loop {
            let got = [
                self.uplink_frames(1)?.saturating_sub(before[0]),
                self.uplink_frames(2)?.saturating_sub(before[1]),
            ];
            let settled = got == last && got[0] + got[1] >= u64::from(ECMP_FLOWS);
            if settled || Instant::now() > deadline {
                return Ok(got);
            }
            last = got;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The fabric spreads flows to the service VIP that both nodes announce over both
    /// (its kernel hashes on ports: `fib_multipath_hash_policy=1`), and sends every flow
    /// to the Local-policy VIP to node1, the only one announcing it; the node refuses
    /// them (no service has that port), so each flow is one frame at one node.
    fn ecmp_spread(&self, f: Family) -> Result<String, String> {
        let (vip, local) = (f.service_vip(), f.local_vip());
        let [a, b] = self.flows_to(f, &vip)?;
        // With a fair hash, fewer than an eighth of 64 flows on one side has odds of
        // about 1e-11.
        let least = u64::from(ECMP_FLOWS / 8);
        if a < least || b < least {
            return Err(format!(
                "of {ECMP_FLOWS} flows to {vip}, node1 took {a} and node2 {b}"
            ));
        }
        let [l1, l2] = self.flows_to(f, &local)?;
        if l1 < u64::from(ECMP_FLOWS) || l2 >= least {
            return Err(format!(
                "of {ECMP_FLOWS} flows to {local} (announced by node1 only), node1 took {l1} and node2 {l2}"
            ));
        }
        Ok(format!(
            "{ECMP_FLOWS} UDP flows to {vip}: {a} reached node1, {b} node2; {ECMP_FLOWS} to {local}: {l1} reached node1"
        ))
    }

    /// From the client: a LoadBalancer IP (announced by BGP, `--advertise-loadbalancer-ip`)
    /// whose source ranges hold the client serves it over both backends; one whose
    /// ranges leave it out drops its connections (they time out, counted as
    /// `source_range`); a service with no endpoint refuses TCP with a RST and UDP with
    /// port unreachable (counted as `no_endpoints`), as kube-proxy does.
    fn lb_and_refusals(&self, f: Family, backends: &[(String, String)]) -> Result<String, String> {
        let client = self.ns("client");
        let exe = self.xroute()?;
        let exe_s = exe.to_string_lossy().to_string();
        let drops = |reason: &str| self.drops(reason);
        let servers = self.serve_on(backends, 7779, false, &|ip| {
            vec![
                exe_s.clone(),
                "probe".into(),
                "tcp-ident".into(),
                "--bind".into(),
                f.socket(ip, 7779),
                "--name".into(),
                ip.to_string(),
                "--timeout".into(),
                "30".into(),
            ]
        })?;
        let lb = f.lb_vip();
        let open = self.exec(
            &client,
            &[
                &exe_s,
                "probe",
                "tcp-connects",
                "--to",
                &f.socket(&lb, 7779),
                "--count",
                "40",
            ],
        );
        let ranged_before = drops("source_range")?;
        let closed = f.lb_closed_vip();
        let shut = self.exec(
            &client,
            &[
                &exe_s,
                "probe",
                "tcp-connects",
                "--to",
                &f.socket(&closed, 7779),
                "--count",
                "1",
            ],
        );
        let ranged = drops("source_range")?.saturating_sub(ranged_before);
        let _ = finished(servers);
        let open = open.map_err(|e| format!("LoadBalancer IP {lb}: {e}"))?;
        let open = open.trim();
        for (_, ip) in backends {
            if !open.contains(&format!("{ip}=")) {
                return Err(format!(
                    "40 connections to LoadBalancer IP {lb} never reached backend {ip}: {open}"
                ));
            }
        }
        match shut {
            Ok(out) => {
                return Err(format!(
                "LoadBalancer IP {closed}, whose source ranges leave the client out, served it: {}",
                out.trim()
            ))
            }
            Err(e) if !e.contains("timed out") => {
                return Err(format!(
                    "LoadBalancer IP {closed}: refused, not dropped: {e}"
                ))
            }
            Err(_) => {}
        }
        if ranged == 0 {
            return Err(format!(
                "the connection to {closed} timed out, but no node counted a source_range drop"
            ));
        }
        let empty = f.empty_vip();
        let refused_before = drops("no_endpoints")?;
        let tcp = self.exec(
            &client,
            &[
                &exe_s,
                "probe",
                "tcp-connects",
                "--to",
                &f.socket(&empty, 7778),
                "--count",
                "1",
            ],
        );
        match tcp {
            Err(e) if e.contains("refused") => {}
            other => {
                return Err(format!(
                    "TCP to {empty} (no endpoints) was not refused: {other:?}"
                ))
            }
        }
        let udp = self
            .exec(
                &client,
                &[
                    &exe_s,
                    "probe",
                    "udp-refused",
                    "--to",
                    &f.socket(&empty, 7777),
                ],
            )
            .map_err(|e| format!("UDP to {empty} (no endpoints): {e}"))?;
        let refused = drops("no_endpoints")?.saturating_sub(refused_before);
        if refused < 2 {
            return Err(format!(
                "TCP and UDP to {empty} refused, but the nodes counted {refused} no_endpoints"
            ));
        }
        Ok(format!(
            "40 connections to {lb}: {open}; to {closed} (client outside its source ranges): dropped ({ranged} counted); to {empty} (no endpoints): TCP connection refused, UDP {} ({refused} counted)",
            udp.trim()
        ))
    }

    /// F8: traffic from the client to node 1's own address passes to the kernel and
    /// never reaches the fastpath's workers.
    fn f8(&self, f: Family) -> Result<String, String> {
        let client = self.ns("client");
        let node = self.node(1);
        let ip = f.node_ip(1);
        let before = self.stats(1)?;
        let ping = self.ping(&client, &ip)?;
        let (udp, _) = self.udp(f, &client, &node, &ip)?;
        let tcp = self.iperf(f, &client, &node, &ip)?;
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

/// The backends that served: the servers that ended by themselves, with what they
/// printed; the others are stopped.
fn finished(servers: Vec<std::process::Child>) -> Vec<(usize, String)> {
    let mut served = Vec::new();
    for (i, mut c) in servers.into_iter().enumerate() {
        match c.try_wait() {
            Ok(Some(status)) if status.success() => {
                let mut out = String::new();
                if let Some(mut o) = c.stdout.take() {
                    use std::io::Read;
                    let _ = o.read_to_string(&mut out);
                }
                served.push((i, out));
            }
            _ => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    served
}
