//! The fabric router (BIRD) and what BGP must have done for the lab to work.
//!
//! BIRD peers with each node twice, over IPv4 and over IPv6, one family on each
//! session (as a fabric router configured per family would); the nodes mesh with
//! each other on one IPv4 session that carries both families (IPv6 routes with the
//! node's IPv6 uplink address as next hop). BIRD installs what the nodes announce
//! into the fabric's kernel with ECMP, and announces the client's subnets.

use super::topology::{Family, NODES};
use super::{sh, Lab};
use std::time::{Duration, Instant};

/// The fabric router's AS (BIRD); the nodes are in kube-router's default 64512.
const FABRIC_ASN: u32 = 64600;

/// The agents' flags: the fabric router over both families as the global external
/// peer, services' ExternalIPs advertised to it; the lab's service ranges.
pub(super) const AGENT_FLAGS: [&str; 10] = [
    "--peer-router-ips=192.168.100.1,fd00:100::1",
    "--peer-router-asns=64600,64600",
    "--advertise-external-ip",
    "--advertise-loadbalancer-ip",
    "--loadbalancer-ip-range=203.0.113.0/24,fd00:203:0:113::/64",
    "--bgp-holdtime=30s",
    "--bgp-graceful-restart=false",
    // The lab's service ranges (kube-router validates ExternalIPs against them).
    "--service-cluster-ip-range=10.96.0.0/12,fd00:96::/108",
    // The pods of both nodes (each learns the other's pod CIDR by BGP).
    "--cluster-cidr=10.244.0.0/16,fd00:10:244::/48",
    "--service-external-ip-range=198.51.100.0/24,fd00:198:51:100::/64",
];

/// Sessions per node: the other node, and the fabric over each family.
const SESSIONS: usize = 3;

impl Lab {
    /// BIRD in the fabric: eBGP with both nodes over each family, the client subnets
    /// announced to them, what they announce installed in the fabric's kernel with ECMP.
    pub(super) fn start_bird(&self) -> Result<(), String> {
        if sh(&["sh", "-c", "command -v bird"]).is_err() {
            return Err("the lab's fabric router is BIRD: apt-get install bird2".into());
        }
        let mut conf = format!(
            "router id {id};\n\
             log \"{log}\" all;\n\
             protocol device {{ }}\n\
             protocol direct {{ ipv4; ipv6; interface \"fc\"; }}\n\
             protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; merge paths on; }}\n\
             protocol kernel {{ ipv6 {{ export where source = RTS_BGP; }}; merge paths on; }}\n",
            id = Family::V4.fabric_ip(),
            log = self.dir.join("bird.log").display()
        );
        for f in Family::BOTH {
            let channel = match f {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            };
            conf.push_str(&format!(
                "template bgp node_{channel} {{\n  local {local} as {FABRIC_ASN};\n  connect retry time 2;\n\
                 \x20 {channel} {{ import all; export where net = {subnet}; }};\n}}\n",
                local = f.fabric_ip(),
                subnet = f.client_subnet(),
            ));
            for n in NODES {
                conf.push_str(&format!(
                    "protocol bgp node{n}_{channel} from node_{channel} {{ neighbor {} as 64512; }}\n",
                    f.node_ip(n)
                ));
            }
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

    pub(super) fn stop_bird(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("bird.pid")) {
            let _ = sh(&["kill", "-TERM", pid.trim()]);
            let _ = std::fs::remove_file(self.dir.join("bird.pid"));
        }
    }

    pub(super) fn birdc(&self, command: &str) -> Result<String, String> {
        let ctl = self.dir.join("bird.ctl");
        let mut args = vec!["birdc", "-s"];
        let ctl = ctl.to_string_lossy();
        args.push(&ctl);
        args.extend(command.split_whitespace());
        self.exec(&self.ns("fabric"), &args)
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

    /// The fabric kernel's route to `dst`: its next hops, sorted.
    fn fabric_next_hops(&self, f: Family, dst: &str) -> Result<Vec<String>, String> {
        let out = self.ip(
            &self.ns("fabric"),
            &format!("-j {} route show {dst}", f.ip_flag()),
        )?;
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
    pub(super) fn bgp_ready(&self) -> Result<String, String> {
        for n in NODES {
            let s = self.sessions(n)?;
            let up = s.iter().filter(|(_, st)| st == "established").count();
            if s.len() != SESSIONS || up != SESSIONS {
                return Err(format!("node{n} sessions: {s:?}"));
            }
        }
        for f in Family::BOTH {
            self.routes_ready(f)?;
        }
        Ok(format!(
            "{SESSIONS} sessions per node established; over IPv4 and IPv6 the fabric learned both pod CIDRs, the service VIP by ECMP over both nodes, the Local one via node1 only; nodes' kernels route the other pod CIDR out of xrk0"
        ))
    }

    fn routes_ready(&self, f: Family) -> Result<(), String> {
        for n in NODES {
            let cidr = f.pod_cidr(n);
            let hops = self.fabric_next_hops(f, &cidr)?;
            if hops != [f.node_ip(n)] {
                return Err(format!("the fabric's route to {cidr} goes via {hops:?}"));
            }
        }
        let vip = f.service_vip();
        let hops = self.fabric_next_hops(f, &vip)?;
        let mut both = vec![f.node_ip(1), f.node_ip(2)];
        both.sort();
        if hops != both {
            return Err(format!(
                "the fabric's route to {vip} goes via {hops:?}, not both nodes"
            ));
        }
        let local = f.local_vip();
        let hops = self.fabric_next_hops(f, &local)?;
        if hops != [f.node_ip(1)] {
            return Err(format!(
                "the fabric's route to {local} (policy Local, endpoint on node1) goes via {hops:?}"
            ));
        }
        for n in NODES {
            let cidr = f.pod_cidr(3 - n);
            let kernel = self.ip(&self.node(n), &format!("{} route show {cidr}", f.ip_flag()))?;
            if !kernel.contains("xrk0") {
                return Err(format!(
                    "node{n}'s kernel has no route to {cidr} out of xrk0: {kernel:?}"
                ));
            }
        }
        Ok(())
    }

    pub(super) fn wait_for_bgp(&self) -> Result<(), String> {
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
}
