//! `xroute lab check`'s last check: a backend removed from a service while flows to it
//! and to the other backend run, over both families at once. The service `spread`
//! loses node2's pod (its IPv4 and IPv6 endpoints) in both nodes' files while TCP and
//! UDP flows from a pod on node1 run through its ClusterIPs:
//!
//! - the flows on the backend left are untouched: every TCP byte arrives and every UDP
//!   answer comes from that backend;
//! - the TCP flows on the removed backend are reset (the client's next segment is
//!   answered with a RST) and the UDP ones move to the backend left at their next
//!   datagram (their entries are deleted: no stale UDP conntrack);
//! - afterwards no conntrack entry leads to the removed backend, and new connections
//!   reach only the backend left.
//!
//! The files are put back as they were when the check ends, however it ends (and a
//! passing check waits until both agents serve the whole service again); every server
//! it started is stopped, however it ends.

use super::topology::Family;
use super::Lab;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// TCP and UDP flows per family; Maglev spreads them over both backends (all 16 of a
/// kind on one backend has odds of 1 in 32,768).
const FLOWS: u16 = 16;
/// How long each flow lasts: longer than the agents take to see a changed file.
const SECONDS: u64 = 15;
/// Bytes of each TCP flow, spread over `SECONDS`.
const TCP_BYTES: u64 = 2 << 20;

/// A node's configuration file as it was; written back when dropped.
struct Restore(Vec<(PathBuf, String)>);

impl Drop for Restore {
    fn drop(&mut self) {
        for (path, text) in &self.0 {
            if let Err(e) = write_whole(path, text) {
                eprintln!("putting {} back: {e}", path.display());
            }
        }
    }
}

/// Writes `path` whole or not at all: the agent never reads a half-written file.
fn write_whole(path: &std::path::Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A line of a node's file, without the endpoints `gone` if it is the service
/// `spread`'s (an address in its endpoint list, with or without quotes, never the first).
fn without(line: &str, gone: &[String]) -> String {
    let mut l = line.to_string();
    if !l.starts_with("  - {name: spread,") {
        return l;
    }
    for g in gone {
        for form in [format!(", {g}"), format!(", \"{g}\"")] {
            for end in [",", "]"] {
                let whole = format!("{form}{end}");
                if l.contains(&whole) {
                    l = l.replacen(&whole, end, 1);
                }
            }
        }
    }
    l
}

/// Servers this check started: stopped when dropped, however the check ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One running flow: its family, protocol, source port and process.
struct Flow {
    family: Family,
    udp: bool,
    sport: u16,
    child: Child,
}

impl Lab {
    fn spawn_probe(&self, ns: &str, args: &[String]) -> Result<Child, String> {
        let exe = self.xroute()?;
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .arg("probe")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("a probe in {ns}: {e}"))
    }

    /// Waits (at most 5 s) until `n` sockets listen on `port` in `ns`.
    pub(super) fn wait_listening_n(
        &self,
        ns: &str,
        udp: bool,
        port: u16,
        n: usize,
    ) -> Result<(), String> {
        let kind = if udp { "-Hlun" } else { "-Hltn" };
        let sport = format!(":{port}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let count = self
                .exec(ns, &["ss", kind, "sport", "=", &sport])
                .map_or(0, |out| {
                    out.lines().filter(|l| !l.trim().is_empty()).count()
                });
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{count} of {n} servers listen on port {port} in {ns} after 5 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node1's conntrack entries of the service port `vip:port`: (source port of the
    /// client, backend address, backend gone).
    fn entries(&self, f: Family, vip: &str, port: u16) -> Result<Vec<(u16, String)>, String> {
        let exe = self.xroute()?;
        let out = self.exec(
            &self.node(1),
            &[
                &exe.to_string_lossy(),
                "conntrack",
                "--service",
                &f.socket(vip, port),
                "--json",
            ],
        )?;
        let flows: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("xroute conntrack --json: {e}"))?;
        let client = f.pod_ip(1, 3);
        let mut v = Vec::new();
        for e in flows.as_array().into_iter().flatten() {
            let (Some(src), Some(to)) = (e["src"].as_str(), e["to_dst"].as_str()) else {
                continue;
            };
            let Ok(src) = src.parse::<std::net::SocketAddr>() else {
                continue;
            };
            let Ok(to) = to.parse::<std::net::SocketAddr>() else {
                continue;
            };
            if src.ip().to_string() == client {
                v.push((src.port(), to.ip().to_string()));
            }
        }
        Ok(v)
    }

    /// Whether both agents serve `spread` with the backend `gone` (both families)
    /// absent (`false`: present).
    fn spread_without(&self, gone: &[String], absent: bool) -> bool {
        let Ok(exe) = self.xroute() else {
            return false;
        };
        [1, 2].iter().all(|&n| {
            let Ok(out) = self.exec(
                &self.node(n),
                &[&exe.to_string_lossy(), "services", "--json"],
            ) else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
                return false;
            };
            let ports: Vec<&serde_json::Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["service"] == "default/spread")
                .collect();
            let listed = ports.iter().any(|p| {
                p["backends"].as_array().into_iter().flatten().any(|b| {
                    b["addr"]
                        .as_str()
                        .is_some_and(|a| gone.iter().any(|g| g == a))
                })
            });
            !ports.is_empty() && listed != absent
        })
    }

    /// Both nodes' files with `spread`'s endpoints on node2's pod removed.
    fn remove_spread_backend(&self, gone: &[String]) -> Result<Restore, String> {
        let mut saved = Vec::new();
        let mut edited = Vec::new();
        for n in [1, 2] {
            let path = self.dir.join(format!("node{n}.yaml"));
            let yaml =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let out: Vec<String> = yaml.lines().map(|l| without(l, gone)).collect();
            let out = out.join("\n") + "\n";
            if out.trim_end() == yaml.trim_end() {
                return Err(format!(
                    "{}: no endpoint {gone:?} in the service spread",
                    path.display()
                ));
            }
            saved.push((path.clone(), yaml));
            edited.push((path, out));
        }
        let restore = Restore(saved);
        for (path, text) in &edited {
            write_whole(path, text)?;
        }
        Ok(restore)
    }

    /// The check (see the module's text).
    pub(super) fn backend_removed(&self) -> Result<String, String> {
        let kept_ns = self.pod(1, 2);
        let gone_ns = self.pod(2, 2);
        let client = self.pod(1, 3);
        let kept: Vec<String> = Family::BOTH.iter().map(|f| f.pod_ip(1, 2)).collect();
        let gone: Vec<String> = Family::BOTH.iter().map(|f| f.pod_ip(2, 2)).collect();
        let secs = SECONDS.to_string();
        // Servers on both backends, both families: TCP sinks on 7778, UDP idents on
        // 7777, TCP idents on 7779 (for the new connections afterwards).
        let mut servers = Procs(Vec::new());
        for (ns, addrs) in [(&kept_ns, &kept), (&gone_ns, &gone)] {
            for (f, ip) in Family::BOTH.iter().zip(addrs.iter()) {
                let s = |probe: &str, port: u16, named: bool| {
                    let mut a = vec![
                        probe.to_string(),
                        "--bind".into(),
                        f.socket(ip, port),
                        "--timeout".into(),
                        (SECONDS * 4).to_string(),
                    ];
                    if named {
                        a.extend(["--name".into(), ip.clone()]);
                    }
                    a
                };
                servers
                    .0
                    .push(self.spawn_probe(ns, &s("tcp-sinks", 7778, false))?);
                servers
                    .0
                    .push(self.spawn_probe(ns, &s("udp-ident", 7777, true))?);
            }
            self.wait_listening_n(ns, false, 7778, 2)?;
            self.wait_listening_n(ns, true, 7777, 2)?;
        }
        let stop = |mut servers: Procs| -> Vec<String> {
            std::mem::take(&mut servers.0)
                .into_iter()
                .map(|mut c| {
                    let _ = c.kill();
                    let out = c.wait_with_output().map(|o| o.stdout).unwrap_or_default();
                    String::from_utf8_lossy(&out).into_owned()
                })
                .collect()
        };
        // The flows, from source ports below the client's ephemeral range (32768 on),
        // new on each run: a UDP flow of an earlier run that moved would otherwise still
        // be in conntrack, on the backend left.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros())
            % 180;
        let base = 20_000 + 64 * seed as u16;
        let mut flows = Vec::new();
        let started = Instant::now();
        for (i, &f) in Family::BOTH.iter().enumerate() {
            let vip = f.spread_cluster_ip();
            for k in 0..FLOWS {
                let tcp_port = base + 2 * FLOWS * i as u16 + k;
                let udp_port = tcp_port + FLOWS;
                let tcp = self.spawn_probe(
                    &client,
                    &[
                        "tcp-source".into(),
                        "--to".into(),
                        f.socket(&vip, 7778),
                        "--bytes".into(),
                        TCP_BYTES.to_string(),
                        "--seconds".into(),
                        secs.clone(),
                        "--sport".into(),
                        tcp_port.to_string(),
                    ],
                );
                let udp = self.spawn_probe(
                    &client,
                    &[
                        "udp-stream".into(),
                        "--to".into(),
                        f.socket(&vip, 7777),
                        "--sport".into(),
                        udp_port.to_string(),
                        "--seconds".into(),
                        secs.clone(),
                    ],
                );
                match (tcp, udp) {
                    (Ok(t), Ok(u)) => {
                        flows.push(Flow {
                            family: f,
                            udp: false,
                            sport: tcp_port,
                            child: t,
                        });
                        flows.push(Flow {
                            family: f,
                            udp: true,
                            sport: udp_port,
                            child: u,
                        });
                    }
                    (t, u) => {
                        for c in [t, u].into_iter().flatten() {
                            flows.push(Flow {
                                family: f,
                                udp: false,
                                sport: 0,
                                child: c,
                            });
                        }
                        let _ = stop(Procs(flows.into_iter().map(|f| f.child).collect()));
                        let _ = stop(servers);
                        return Err("could not start the flows".into());
                    }
                }
            }
        }
        let result = self.removal_while(&flows, &gone, started);
        // However it went: every flow ends (by itself, within `SECONDS`), then the
        // servers stop.
        let mut outcome = Vec::new();
        for fl in flows {
            let out = fl.child.wait_with_output();
            outcome.push((fl.family, fl.udp, fl.sport, out));
        }
        // The sinks print a connection when it ends: the last FIN may need a
        // retransmission on a loaded machine.
        std::thread::sleep(Duration::from_millis(1500));
        let printed = stop(servers);
        let (restore, mut report) = result?;
        // What the TCP sinks received, by the client's source port.
        let mut received: BTreeMap<u16, String> = BTreeMap::new();
        for text in &printed {
            for line in text.lines() {
                if let Some((port, rest)) = line.split_once(' ') {
                    if let Ok(p) = port.parse::<u16>() {
                        received.insert(p, rest.to_string());
                    }
                }
            }
        }
        let on = &report.backend_of;
        let (mut tcp_kept, mut tcp_reset, mut udp_kept, mut udp_moved) = (0, 0, 0, 0);
        let (mut lost_kept, mut lost_moved) = (0, 0);
        for (f, udp, sport, out) in &outcome {
            let fam = f.name();
            let out = out
                .as_ref()
                .map_err(|e| format!("flow from port {sport}: {e}"))?;
            let Some(backend) = on.get(&(*udp, *sport)) else {
                return Err(format!(
                    "flow from port {sport} ({fam}) was never in conntrack"
                ));
            };
            let was_gone = gone.contains(backend);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            match (udp, was_gone) {
                (false, false) => {
                    if !out.status.success() {
                        return Err(format!(
                            "TCP flow from port {sport} ({fam}) on the backend left broke: {}",
                            stderr.trim()
                        ));
                    }
                    let want = TCP_BYTES.to_string();
                    if received.get(sport) != Some(&want) {
                        return Err(format!(
                            "TCP flow from port {sport} ({fam}) on the backend left: the sink got {:?}, not {want} bytes",
                            received.get(sport)
                        ));
                    }
                    tcp_kept += 1;
                }
                (false, true) => {
                    if out.status.success() {
                        return Err(format!(
                            "TCP flow from port {sport} ({fam}) on the removed backend {backend} ran to its end: it was not reset"
                        ));
                    }
                    let why = stderr.to_lowercase();
                    if !why.contains("reset") && !why.contains("broken pipe") {
                        return Err(format!(
                            "TCP flow from port {sport} ({fam}) on the removed backend {backend} ended, but not by a reset: {}",
                            stderr.trim()
                        ));
                    }
                    tcp_reset += 1;
                }
                (true, was_gone) => {
                    let runs = stdout.trim();
                    let dropped: u32 = runs
                        .split_whitespace()
                        .find_map(|kv| kv.strip_prefix("lost="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(u32::MAX);
                    let names: Vec<(&str, u32)> = runs
                        .strip_prefix("runs ")
                        .unwrap_or("")
                        .split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .filter(|(k, _)| *k != "lost")
                        .map(|(k, n)| (k, n.parse().unwrap_or(0)))
                        .collect();
                    let left = kept[Family::BOTH
                        .iter()
                        .position(|x| x.name() == fam)
                        .unwrap_or(0)]
                    .as_str();
                    let ok = if was_gone {
                        // Answers from the removed backend until its entry went, then
                        // from the one left only.
                        names.len() == 2 && names[0].0 == backend && names[1].0 == left
                    } else {
                        names.len() == 1 && names[0].0 == left
                    };
                    // A datagram or two of 200 may be lost on a loaded machine; more is
                    // a flow disturbed.
                    if !ok || dropped > 2 || !out.status.success() {
                        return Err(format!(
                            "UDP flow from port {sport} ({fam}) on {}: answers {runs} {}",
                            if was_gone {
                                "the removed backend"
                            } else {
                                "the backend left"
                            },
                            stderr.trim()
                        ));
                    }
                    if was_gone {
                        udp_moved += 1;
                        lost_moved += dropped;
                    } else {
                        udp_kept += 1;
                        lost_kept += dropped;
                    }
                }
            }
        }
        if tcp_kept == 0 || tcp_reset == 0 || udp_kept == 0 || udp_moved == 0 {
            return Err(format!(
                "the flows did not land on both backends: {:?}",
                report.backend_of
            ));
        }
        // No entry leads to the removed backend any more.
        let deadline = Instant::now() + Duration::from_secs(3);
        let stale = loop {
            let mut stale = Vec::new();
            for f in Family::BOTH {
                for port in [7777, 7778] {
                    for (sport, to) in self.entries(f, &f.spread_cluster_ip(), port)? {
                        if gone.contains(&to) && on.contains_key(&(port == 7777, sport)) {
                            stale.push(format!("{sport}->{to}:{port}"));
                        }
                    }
                }
            }
            if stale.is_empty() || Instant::now() > deadline {
                break stale;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !stale.is_empty() {
            return Err(format!(
                "conntrack entries still lead to the removed backend: {stale:?}"
            ));
        }
        // New connections reach only the backend left.
        let servers = {
            let mut s = Procs(Vec::new());
            for (f, ip) in Family::BOTH
                .iter()
                .zip(kept.iter())
                .chain(Family::BOTH.iter().zip(gone.iter()))
            {
                let ns = if kept.contains(ip) {
                    &kept_ns
                } else {
                    &gone_ns
                };
                s.0.push(self.spawn_probe(
                    ns,
                    &[
                        "tcp-ident".into(),
                        "--bind".into(),
                        f.socket(ip, 7779),
                        "--name".into(),
                        ip.clone(),
                        "--timeout".into(),
                        "20".into(),
                    ],
                )?);
            }
            self.wait_listening_n(&kept_ns, false, 7779, 2)?;
            self.wait_listening_n(&gone_ns, false, 7779, 2)?;
            s
        };
        let exe = self.xroute()?;
        let mut fresh = Vec::new();
        for (f, left) in Family::BOTH.iter().zip(kept.iter()) {
            let out = self.exec(
                &client,
                &[
                    &exe.to_string_lossy(),
                    "probe",
                    "tcp-connects",
                    "--to",
                    &f.socket(&f.spread_cluster_ip(), 7779),
                    "--count",
                    "50",
                ],
            );
            let out = out.map(|o| o.trim().to_string());
            if out.as_deref() != Ok(&format!("spread {left}=50")) {
                let _ = stop(servers);
                return Err(format!(
                    "new connections after the removal ({}): {out:?}, not all 50 on {left}",
                    f.name()
                ));
            }
            fresh.push(format!("50 on {left}"));
        }
        let _ = stop(servers);
        // Put the files back, and wait until both agents serve the whole service again.
        drop(restore);
        let back = Instant::now() + Duration::from_secs(15);
        while !self.spread_without(&gone, false) {
            if Instant::now() > back {
                return Err("the agents did not take the restored files within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        report.text.push_str(&format!(
            "; TCP: {tcp_kept} flow(s) on the backend left ran to their last byte, {tcp_reset} on the removed one were reset; UDP: {udp_kept} kept their backend ({lost_kept} datagram(s) unanswered), {udp_moved} moved to the one left ({lost_moved} unanswered); no entry left to the removed backend; new connections: {}",
            fresh.join(", ")
        ));
        Ok(report.text)
    }

    /// With the flows running: learns from node1's conntrack which backend each took,
    /// removes the backend from both files and waits until both agents serve without it,
    /// well before the flows end.
    fn removal_while(
        &self,
        flows: &[Flow],
        gone: &[String],
        started: Instant,
    ) -> Result<(Restore, Removal), String> {
        let mut backend_of: BTreeMap<(bool, u16), String> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for f in Family::BOTH {
                for (udp, port) in [(true, 7777), (false, 7778)] {
                    for (sport, to) in self.entries(f, &f.spread_cluster_ip(), port)? {
                        backend_of.insert((udp, sport), to);
                    }
                }
            }
            let all = flows
                .iter()
                .all(|f| backend_of.contains_key(&(f.udp, f.sport)));
            if all {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the flows are not all in node1's conntrack after 5 s: {backend_of:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        backend_of
            .retain(|(udp, sport), _| flows.iter().any(|f| f.udp == *udp && f.sport == *sport));
        let restore = self.remove_spread_backend(gone)?;
        let reload = Instant::now() + Duration::from_secs(SECONDS);
        while !self.spread_without(gone, true) {
            if Instant::now() > reload {
                return Err(format!(
                    "the agents did not take the changed files within {SECONDS} s"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let took = started.elapsed();
        if took + Duration::from_secs(2) > Duration::from_secs(SECONDS) {
            return Err(format!(
                "the agents took the changed files {:.1} s into {SECONDS}-second flows: too late to see the flows change",
                took.as_secs_f64()
            ));
        }
        let on_gone = backend_of.values().filter(|b| gone.contains(b)).count();
        Ok((
            restore,
            Removal {
                text: format!(
                    "{} flows through spread's ClusterIPs ({on_gone} on the removed backend), the backend removed {:.1} s in",
                    backend_of.len(),
                    took.as_secs_f64()
                ),
                backend_of,
            },
        ))
    }
}

/// What [`Lab::removal_while`] learnt.
struct Removal {
    text: String,
    /// The backend each flow (UDP or not, source port) took.
    backend_of: BTreeMap<(bool, u16), String>,
}
