//! The service proxy's model from the cluster model: each configured service as
//! [`nat::service::Service`], its endpoints local when inside this node's pod CIDRs,
//! their ports the service's target ports unless the endpoint names its own.

use crate::config::{self, Config, EndpointConfig, SessionAffinity};
use fastpath::snapshot::Services;
use nat::affinity::Affinity;
use nat::conntrack::flow::Conntrack;
use nat::conntrack::tcp::Timeouts;
use nat::frontend::{FrontendError, Frontends};
use nat::service::{Endpoint, Protocol, Service, ServicePort, TrafficPolicy};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The service proxy's settings (the flags').
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Whether services are served at all (`--run-service-proxy`).
    pub run: bool,
    /// Flows the connection tracking table holds (each takes two entries, one per
    /// direction, in the table of its family).
    pub conntrack_max: usize,
    /// Clients `sessionAffinity: ClientIP` remembers.
    pub affinity_max: usize,
    /// The largest Maglev table of one service (`--maglev-table-max`).
    pub maglev_max: u32,
    pub timeouts: Timeouts,
    /// Ports SNATed flows take, inclusive.
    pub snat_ports: (u16, u16),
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--enable-pod-egress`.
    pub pod_egress: bool,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            run: true,
            conntrack_max: 1_000_000,
            affinity_max: 65_536,
            maglev_max: nat::maglev::DEFAULT_MAX_SIZE,
            timeouts: Timeouts::default(),
            snat_ports: fastpath::snapshot::DEFAULT_SNAT_PORTS,
            masquerade_all: false,
            pod_egress: true,
        }
    }
}

/// The proxy's lasting state: its settings and the tables every snapshot shares.
#[derive(Debug)]
pub struct Proxy {
    pub settings: ProxySettings,
    pub conntrack: Arc<Conntrack>,
    pub affinity: Arc<Affinity>,
    /// The last frontends built: the next build takes their counters over.
    previous: std::sync::Mutex<Arc<Frontends>>,
    /// Live entries of the IPv4 and IPv6 tables at the last sweep.
    pub live: [std::sync::atomic::AtomicUsize; 2],
}

impl Proxy {
    /// Allocates the tables (their memory is fixed from here on).
    pub fn new(settings: ProxySettings) -> Proxy {
        // Both directions of every flow; IPv6 flows share the budget (most clusters
        // carry mostly one family): each family's table holds every flow.
        let entries = if settings.run {
            settings.conntrack_max.saturating_mul(2)
        } else {
            0
        };
        let affinity = if settings.run {
            settings.affinity_max
        } else {
            0
        };
        Proxy {
            conntrack: Arc::new(Conntrack::new(entries, entries)),
            affinity: Arc::new(Affinity::new(affinity)),
            settings,
            previous: Default::default(),
            live: Default::default(),
        }
    }

    /// The services part of a snapshot for configuration `c`.
    pub fn services(&self, c: &Config) -> Result<Services, FrontendError> {
        let st = &self.settings;
        let frontends = if st.run {
            let mut f = Frontends::build(&model(c), st.maglev_max)?;
            for s in &f.skipped {
                tracing::warn!("{s}");
            }
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            f.keep_stats_of(&previous);
            let f = Arc::new(f);
            *previous = Arc::clone(&f);
            f
        } else {
            Arc::new(Frontends::default())
        };
        let first = |v6: bool| {
            c.uplink
                .addresses
                .iter()
                .map(|a| a.addr)
                .find(|a| a.is_ipv6() == v6)
        };
        Ok(Services {
            frontends,
            conntrack: Arc::clone(&self.conntrack),
            affinity: Arc::clone(&self.affinity),
            timeouts: st.timeouts,
            snat4: match first(false) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            snat6: match first(true) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            },
            snat_ports: st.snat_ports,
            cluster: cluster_prefixes(c),
            pod_egress: st.pod_egress,
            masquerade_all: st.masquerade_all,
        })
    }
}

impl Proxy {
    /// Sweeps the whole conntrack table against configuration `c` at second `now`:
    /// the flows of a backend that no longer is one of its service port's endpoints
    /// (in any condition: a terminating endpoint keeps its flows) are dealt with, UDP
    /// and ICMP entries freed (the next packet picks a live backend), TCP ones marked
    /// so that the next packet is answered with a RST. Returns the entries dealt with
    /// and the live ones left.
    pub fn forget_removed_backends(&self, c: &Config, now: u32) -> (usize, usize) {
        use nat::conntrack::flow::{flags, Direction, Fate};
        let mut live: hashbrown::HashMap<u32, Vec<(IpAddr, u16)>> = hashbrown::HashMap::new();
        for s in model(c) {
            let id = format!("{}/{}", s.namespace, s.name);
            for p in &s.ports {
                let set = live
                    .entry(nat::frontend::port_id(&id, &p.name))
                    .or_default();
                set.extend(
                    s.endpoints
                        .iter()
                        .filter_map(|e| e.ports.get(&p.name).map(|&port| (e.addr, port))),
                );
            }
        }
        let mut gone = 0;
        macro_rules! fate {
            () => {
                |t: &nat::conntrack::flow::Tuple<_>, n: &nat::conntrack::flow::Nat<_>| {
                    if n.flags & flags::BACKEND_GONE != 0 {
                        return Fate::Keep;
                    }
                    let (addr, port): (IpAddr, u16) = match n.direction {
                        Direction::Original => (n.dst.into(), n.dport),
                        Direction::Reply => (t.src.into(), t.sport),
                    };
                    let echo = matches!(t.protocol, 1 | 58);
                    let alive = live.get(&n.service).is_some_and(|set| {
                        set.iter().any(|&(a, p)| a == addr && (echo || p == port))
                    });
                    if alive {
                        return Fate::Keep;
                    }
                    gone += 1;
                    if t.protocol == 6 {
                        Fate::Replace(nat::conntrack::flow::Nat {
                            flags: n.flags | flags::BACKEND_GONE,
                            ..*n
                        })
                    } else {
                        Fate::Free
                    }
                }
            };
        }
        let ct = &self.conntrack;
        let live4 = ct.sweep4(0, ct.v4.capacity(), now, fate!());
        let live6 = ct.sweep6(0, ct.v6.capacity(), now, fate!());
        self.record_live(live4, live6);
        (gone, live4 + live6)
    }

    /// Frees the expired entries of both tables and records how many are live.
    pub fn sweep_expired(&self, now: u32) {
        use nat::conntrack::flow::Fate;
        let ct = &self.conntrack;
        let live4 = ct.sweep4(0, ct.v4.capacity(), now, |_, _| Fate::Keep);
        let live6 = ct.sweep6(0, ct.v6.capacity(), now, |_, _| Fate::Keep);
        self.record_live(live4, live6);
    }

    fn record_live(&self, v4: usize, v6: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.live[0].store(v4, Relaxed);
        self.live[1].store(v6, Relaxed);
    }
}

/// The sources inside the cluster: every node's pod CIDRs and addresses.
pub fn cluster_prefixes(c: &Config) -> Vec<(IpAddr, u8)> {
    let host = |a: IpAddr| (a, if a.is_ipv4() { 32 } else { 128 });
    let mut v: Vec<(IpAddr, u8)> = c
        .pod_cidrs
        .iter()
        .chain(c.nodes.iter().flat_map(|n| n.pod_cidrs.iter()))
        .map(|p| (p.network(), p.len()))
        .collect();
    v.extend(c.nodes.iter().map(|n| host(n.ip)));
    v.extend(c.uplink.addresses.iter().map(|a| host(a.addr)));
    v
}

fn policy(p: config::TrafficPolicy) -> TrafficPolicy {
    match p {
        config::TrafficPolicy::Cluster => TrafficPolicy::Cluster,
        config::TrafficPolicy::Local => TrafficPolicy::Local,
    }
}

fn protocol(p: config::Protocol) -> Protocol {
    match p {
        config::Protocol::Tcp => Protocol::Tcp,
        config::Protocol::Udp => Protocol::Udp,
        config::Protocol::Sctp => Protocol::Sctp,
    }
}

/// The services of `c` that have ports (those without are only advertised).
pub fn model(c: &Config) -> Vec<Service> {
    c.services
        .iter()
        .filter(|s| !s.ports.is_empty())
        .map(|s| {
            let target_ports: BTreeMap<String, u16> = s
                .ports
                .iter()
                .map(|p| (p.name.clone(), p.target_port.unwrap_or(p.port)))
                .collect();
            let endpoints = s
                .endpoints
                .iter()
                .map(|e| {
                    let (ready, serving, terminating) = e.conditions();
                    let ports = match e {
                        EndpointConfig::Full(f) if !f.ports.is_empty() => f.ports.clone(),
                        _ => target_ports.clone(),
                    };
                    Endpoint {
                        addr: e.ip(),
                        ports,
                        local: c.pod_cidrs.iter().any(|p| p.contains(e.ip())),
                        ready,
                        serving,
                        terminating,
                    }
                })
                .collect();
            Service {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                cluster_ips: s.cluster_ips.clone(),
                external_ips: s.external_ips.clone(),
                load_balancer_ips: s.load_balancer_ips.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        protocol: protocol(p.protocol),
                        port: p.port,
                        node_port: p.node_port,
                    })
                    .collect(),
                external_policy: policy(s.external_traffic_policy),
                internal_policy: policy(s.internal_traffic_policy),
                affinity: (s.session_affinity == SessionAffinity::ClientIp).then(|| {
                    s.session_affinity_timeout
                        .map_or(nat::service::DEFAULT_AFFINITY_TIMEOUT, |t| {
                            Duration::from_secs(u64::from(t))
                        })
                }),
                source_ranges: s
                    .load_balancer_source_ranges
                    .iter()
                    .map(|r| (r.network(), r.len()))
                    .collect(),
                endpoints,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat::service::Origin;
    use std::net::IpAddr;

    const CONFIG: &str = "\
node: node1
uplink: {interface: up0, addresses: [192.168.100.11/24]}
host_port: {interface: xrf0, peer: xrk0}
pod_cidrs: [10.244.1.0/24]
services:
  - name: web
    cluster_ips: [10.96.0.10]
    ports:
      - {name: http, port: 80, target_port: 8080, node_port: 30080}
      - {name: dns, protocol: UDP, port: 53}
    session_affinity: ClientIP
    load_balancer_source_ranges: [192.168.200.0/24]
    external_traffic_policy: Local
    endpoints:
      - 10.244.1.2
      - {ip: 10.244.2.2, ready: false, serving: true, terminating: true, ports: {http: 9090}}
  - name: advertised-only
    external_ips: [198.51.100.20]
    endpoints: [10.244.1.3]
";

    #[test]
    fn services_with_ports_are_modelled_with_their_endpoints() {
        let c = config::parse(CONFIG, "node.yaml").unwrap();
        let m = model(&c);
        assert_eq!(m.len(), 1, "a service without ports is not served");
        let s = &m[0];
        assert_eq!(s.affinity, Some(nat::service::DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(s.source_ranges, [(IpAddr::from([192, 168, 200, 0]), 24)]);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        let local = &s.endpoints[0];
        assert!(local.local && local.ready);
        assert_eq!(local.ports["http"], 8080, "the target port");
        assert_eq!(local.ports["dns"], 53, "no target port: the port");
        let remote = &s.endpoints[1];
        assert!(!remote.local && !remote.ready && remote.serving && remote.terminating);
        assert_eq!(remote.ports["http"], 9090);
        // Through the model: outside clients (Local policy) reach only the local one.
        let outside = s.usable("http", Origin::External);
        assert_eq!(outside.len(), 1);
        assert_eq!(outside[0].port, 8080);
    }

    #[test]
    fn bad_service_ports_and_timeouts_are_errors_with_their_key() {
        let bad = |from: &str, to: &str| {
            config::parse(&CONFIG.replace(from, to), "node.yaml")
                .unwrap_err()
                .to_string()
        };
        let e = bad("{name: dns, protocol: UDP", "{protocol: UDP");
        assert!(e.contains("services[0].ports[1].name"), "{e}");
        let e = bad("port: 80,", "port: 0,");
        assert!(e.contains("ports are 1 to 65535"), "{e}");
        let e = bad(
            "session_affinity: ClientIP",
            "session_affinity: ClientIP\n    session_affinity_timeout: 90000",
        );
        assert!(e.contains("session_affinity_timeout"), "{e}");
        let e = bad("ports: {http: 9090}", "ports: {grpc: 9090}");
        assert!(e.contains("`grpc` is not a port of the service"), "{e}");
        let e = bad("protocol: UDP", "protocol: QUIC");
        assert!(e.contains("services[0].ports[1].protocol"), "{e}");
    }

    #[test]
    fn removed_backends_lose_their_flows_terminating_ones_keep_them() {
        use nat::conntrack::flow::{flags, Direction, Nat, Tuple};
        use std::net::Ipv4Addr;
        let c = config::parse(CONFIG, "node.yaml").unwrap();
        let proxy = Proxy::new(ProxySettings {
            conntrack_max: 64,
            ..Default::default()
        });
        let id = nat::frontend::port_id("default/web", "http");
        let dns = nat::frontend::port_id("default/web", "dns");
        let client = Ipv4Addr::new(10, 244, 1, 9);
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let flow = |backend: [u8; 4], port: u16, protocol: u8, service: u32, sport: u16| {
            let t = Tuple {
                src: client,
                dst: vip,
                sport,
                dport: 80,
                protocol,
            };
            let n = Nat {
                src: client,
                sport,
                dst: Ipv4Addr::from(backend),
                dport: port,
                direction: Direction::Original,
                state: 3,
                flags: 0,
                service,
                expires: 1000,
            };
            let reply = Tuple {
                src: n.dst,
                dst: client,
                sport: port,
                dport: sport,
                protocol,
            };
            let back = Nat {
                src: vip,
                sport: 80,
                dst: client,
                dport: sport,
                direction: Direction::Reply,
                ..n
            };
            proxy.conntrack.put4(&t, &n, 1);
            proxy.conntrack.put4(&reply, &back, 1);
            (t, reply)
        };
        // 10.244.1.2:8080 stays; 10.244.2.2:9090 is terminating (kept); 10.244.1.7 is
        // not an endpoint (gone): its TCP flow is marked, its UDP flow freed.
        let stays = flow([10, 244, 1, 2], 8080, 6, id, 1);
        let terminating = flow([10, 244, 2, 2], 9090, 6, id, 2);
        let gone_tcp = flow([10, 244, 1, 7], 8080, 6, id, 3);
        let gone_udp = flow([10, 244, 1, 7], 53, 17, dns, 4);
        let (gone, live) = proxy.forget_removed_backends(&c, 2);
        assert_eq!((gone, live), (4, 6), "both entries of each gone flow");
        let ct = &proxy.conntrack;
        for (t, r) in [stays, terminating] {
            assert_eq!(ct.get4(&t, 2).unwrap().flags, 0);
            assert_eq!(ct.get4(&r, 2).unwrap().flags, 0);
        }
        assert_ne!(
            ct.get4(&gone_tcp.0, 2).unwrap().flags & flags::BACKEND_GONE,
            0
        );
        assert_ne!(
            ct.get4(&gone_tcp.1, 2).unwrap().flags & flags::BACKEND_GONE,
            0
        );
        assert!(ct.get4(&gone_udp.0, 2).is_none() && ct.get4(&gone_udp.1, 2).is_none());
        assert_eq!(
            proxy.forget_removed_backends(&c, 2),
            (0, 6),
            "once is enough"
        );
    }
}
