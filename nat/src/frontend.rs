//! What the fastpath looks a new flow up in: every frontend of every service (a VIP,
//! port and protocol, or a NodePort), with the backends a flow may reach from inside
//! the cluster and from outside, and their Maglev tables.
//!
//! Built whole from the service model by the control side for each snapshot, never
//! changed after; lookups do not allocate.
//!
//! kube-proxy's rules for which endpoints apply: a ClusterIP follows
//! `internalTrafficPolicy`; ExternalIPs, LoadBalancer IPs and NodePorts follow
//! `externalTrafficPolicy` for clients outside the cluster, and for pods and nodes of
//! the cluster they take every endpoint of the cluster (kube-proxy short-circuits them
//! to its cluster chain; `internalTrafficPolicy` is for ClusterIPs only).
//! `loadBalancerSourceRanges` apply to LoadBalancer IPs only.

use crate::maglev::{Maglev, MaglevError};
use crate::service::{Backend, Origin, Protocol, Service, TrafficPolicy};
use crate::stats::{BackendInfo, BackendStats, PortDrop, PortInfo, PortStats};
use hashbrown::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The backends a flow may reach, and how one is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    /// Sorted.
    pub backends: Vec<Backend>,
    /// `None` when there is no backend.
    pub maglev: Option<Maglev>,
    /// With no backend: the service has no endpoint at all (reject: ICMP port
    /// unreachable, TCP RST), rather than none usable here (drop).
    pub reject: bool,
}

impl Choice {
    fn new(
        backends: Vec<Backend>,
        has_endpoints: bool,
        max_size: u32,
    ) -> Result<Arc<Choice>, MaglevError> {
        let keys: Vec<[u8; 18]> = backends.iter().map(Backend::key).collect();
        let maglev = Maglev::new(&keys, max_size)?;
        Ok(Arc::new(Choice {
            backends,
            maglev,
            reject: !has_endpoints,
        }))
    }

    /// The backend for a flow hash; `None`: reject or drop, as [`Choice::reject`] says.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<Backend> {
        let m = self.maglev.as_ref()?;
        self.backends.get(m.pick(flow_hash)).copied()
    }
}

/// How a frontend was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

/// One frontend of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// A number for the service port, the same in every build (a hash of its name),
    /// which flows carry in their entries.
    pub id: u32,
    /// The service, as `namespace/name`, and its port's name.
    pub service: String,
    pub port_name: String,
    pub kind: Kind,
    pub protocol: Protocol,
    /// For pods and nodes of the cluster.
    pub inside: Arc<Choice>,
    /// For clients outside it.
    pub outside: Arc<Choice>,
    /// `externalTrafficPolicy: Local` for outside clients: their address is kept.
    pub outside_local: bool,
    pub affinity: Option<Duration>,
    pub source_ranges: Vec<(IpAddr, u8)>,
}

impl Frontend {
    pub fn choice(&self, origin: Origin) -> &Choice {
        match origin {
            Origin::Internal => &self.inside,
            Origin::External => &self.outside,
        }
    }
}

/// FNV-1a of `service/port`: the id a service port keeps across builds and restarts.
pub fn port_id(service: &str, port: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in service.bytes().chain([b'/']).chain(port.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// Why a set of frontends cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontendError {
    #[error("service {service}: {source}")]
    Maglev {
        service: String,
        #[source]
        source: MaglevError,
    },
}

/// Every frontend, by what a packet's destination says.
#[derive(Debug, Clone, Default)]
pub struct Frontends {
    frontends: Vec<Frontend>,
    by_vip: HashMap<(IpAddr, u16, Protocol), u32>,
    by_node_port: HashMap<(u16, Protocol, bool), u32>,
    /// Each VIP's first frontend (ICMP echo, which has no port, goes there).
    vips: HashMap<IpAddr, u32>,
    /// What was left out, for the log: SCTP ports, frontends claimed twice.
    pub skipped: Vec<String>,
    /// Every service port, for the report.
    pub ports: Vec<PortInfo>,
    /// The health checks to answer, by port (`healthCheckNodePort`).
    pub health_checks: Vec<HealthCheck>,
    backend_stats: HashMap<(u32, Backend), Arc<BackendStats>>,
    port_stats: HashMap<u32, Arc<PortStats>>,
    /// Every backend choice of this build, by its backends and whether the service has
    /// endpoints: equal sets share one Maglev table, and the next build takes over the
    /// tables of sets that did not change.
    choices: HashMap<(Vec<Backend>, bool), Arc<Choice>>,
    /// The cap the tables were built with.
    max_size: u32,
}

/// A `healthCheckNodePort` and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    pub namespace: String,
    pub name: String,
    /// This node's ready endpoints of the service.
    pub local_endpoints: usize,
}

impl Frontends {
    /// The health check answered on `port`.
    pub fn health_check(&self, port: u16) -> Option<&HealthCheck> {
        self.health_checks.iter().find(|h| h.port == port)
    }

    /// Builds the frontends of `services` with Maglev tables of at most `max_size`
    /// slots. SCTP ports are left out and named in `skipped` (xroute does not serve
    /// SCTP); a VIP, port and protocol (or NodePort) claimed by two services goes to
    /// the first, the second named in `skipped`.
    pub fn build(services: &[Service], max_size: u32) -> Result<Frontends, FrontendError> {
        Self::build_reusing(services, max_size, None)
    }

    /// As [`Frontends::build`], taking over from `previous` (the build this one
    /// replaces) the Maglev tables of every backend set that did not change, so that a
    /// change to one service does not rebuild the tables of all the others.
    pub fn build_reusing(
        services: &[Service],
        max_size: u32,
        previous: Option<&Frontends>,
    ) -> Result<Frontends, FrontendError> {
        let previous = previous.filter(|p| p.max_size == max_size);
        let mut out = Frontends {
            max_size,
            ..Frontends::default()
        };
        for s in services {
            let id = format!("{}/{}", s.namespace, s.name);
            if let Some(port) = s.health_check_node_port {
                if out.health_checks.iter().any(|h| h.port == port) {
                    out.skipped.push(format!(
                        "service {id}: healthCheckNodePort {port} belongs to another service"
                    ));
                } else {
                    out.health_checks.push(HealthCheck {
                        port,
                        namespace: s.namespace.clone(),
                        name: s.name.clone(),
                        local_endpoints: s.local_ready_endpoints(),
                    });
                }
            }
            for p in &s.ports {
                if p.protocol == Protocol::Sctp {
                    out.skipped.push(format!(
                        "service {id} port {}/SCTP: SCTP is not supported",
                        p.port
                    ));
                    continue;
                }
                let err = |source| FrontendError::Maglev {
                    service: id.clone(),
                    source,
                };
                let pid = port_id(&id, &p.name);
                let backends: Vec<BackendInfo> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| {
                        Some(BackendInfo {
                            backend: Backend {
                                addr: e.addr,
                                port: *e.ports.get(&p.name)?,
                            },
                            local: e.local,
                            ready: e.ready,
                            serving: e.serving,
                            terminating: e.terminating,
                        })
                    })
                    .collect();
                for b in &backends {
                    out.backend_stats.entry((pid, b.backend)).or_default();
                }
                out.port_stats.entry(pid).or_default();
                let kind_name = |k: Kind| match k {
                    Kind::ClusterIp => "ClusterIP",
                    Kind::ExternalIp => "ExternalIP",
                    Kind::LoadBalancer => "LoadBalancer",
                    Kind::NodePort => "NodePort",
                };
                out.ports.push(PortInfo {
                    id: pid,
                    service: id.clone(),
                    port_name: p.name.clone(),
                    protocol: p.protocol,
                    port: p.port,
                    node_port: p.node_port,
                    vips: s
                        .cluster_ips
                        .iter()
                        .map(|ip| (*ip, kind_name(Kind::ClusterIp)))
                        .chain(
                            s.external_ips
                                .iter()
                                .map(|ip| (*ip, kind_name(Kind::ExternalIp))),
                        )
                        .chain(
                            s.load_balancer_ips
                                .iter()
                                .map(|ip| (*ip, kind_name(Kind::LoadBalancer))),
                        )
                        .collect(),
                    backends,
                });
                for v6 in [false, true] {
                    let family = Some(v6);
                    let any = !s
                        .usable_in(&p.name, TrafficPolicy::Cluster, family)
                        .is_empty();
                    let mut choice = |policy| -> Result<Arc<Choice>, FrontendError> {
                        let key = (s.usable_in(&p.name, policy, family), any);
                        if let Some(c) = out.choices.get(&key) {
                            return Ok(Arc::clone(c));
                        }
                        let c = match previous.and_then(|p| p.choices.get(&key)) {
                            Some(c) => Arc::clone(c),
                            None => Choice::new(key.0.clone(), any, max_size).map_err(err)?,
                        };
                        out.choices.insert(key, Arc::clone(&c));
                        Ok(c)
                    };
                    // ClusterIPs: internalTrafficPolicy. External frontends: every
                    // endpoint from inside, externalTrafficPolicy from outside.
                    let internal = choice(s.internal_policy)?;
                    let cluster = choice(TrafficPolicy::Cluster)?;
                    let external = choice(s.external_policy)?;
                    let frontend = |kind| {
                        let (inside, outside) = if kind == Kind::ClusterIp {
                            (Arc::clone(&internal), Arc::clone(&internal))
                        } else {
                            (Arc::clone(&cluster), Arc::clone(&external))
                        };
                        Frontend {
                            id: port_id(&id, &p.name),
                            service: id.clone(),
                            port_name: p.name.clone(),
                            kind,
                            protocol: p.protocol,
                            inside,
                            outside,
                            outside_local: s.external_policy == TrafficPolicy::Local
                                && kind != Kind::ClusterIp,
                            affinity: s.affinity,
                            source_ranges: if kind == Kind::LoadBalancer {
                                s.source_ranges.clone()
                            } else {
                                Vec::new()
                            },
                        }
                    };
                    let vips = s
                        .cluster_ips
                        .iter()
                        .map(|ip| (*ip, Kind::ClusterIp))
                        .chain(s.external_ips.iter().map(|ip| (*ip, Kind::ExternalIp)))
                        .chain(
                            s.load_balancer_ips
                                .iter()
                                .map(|ip| (*ip, Kind::LoadBalancer)),
                        )
                        .filter(|(ip, _)| ip.is_ipv6() == v6);
                    for (ip, kind) in vips {
                        let key = (ip, p.port, p.protocol);
                        if out.by_vip.contains_key(&key) {
                            out.skipped.push(format!(
                                "service {id}: {ip} port {} {:?} belongs to another service",
                                p.port, p.protocol
                            ));
                            continue;
                        }
                        out.by_vip.insert(key, out.frontends.len() as u32);
                        out.vips.entry(ip).or_insert(out.frontends.len() as u32);
                        out.frontends.push(frontend(kind));
                    }
                    if let Some(np) = p.node_port {
                        // One NodePort frontend per family, on the node's addresses of it.
                        let key = (np, p.protocol, v6);
                        if out.by_node_port.contains_key(&key) {
                            if !v6 {
                                out.skipped.push(format!(
                                    "service {id}: NodePort {np} {:?} belongs to another service",
                                    p.protocol
                                ));
                            }
                        } else {
                            out.by_node_port.insert(key, out.frontends.len() as u32);
                            out.frontends.push(frontend(Kind::NodePort));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The frontend of a VIP, port and protocol.
    #[inline]
    pub fn vip(&self, ip: IpAddr, port: u16, protocol: Protocol) -> Option<&Frontend> {
        let i = *self.by_vip.get(&(ip, port, protocol))?;
        self.frontends.get(i as usize)
    }

    /// Whether `ip` is a VIP of any service (a packet to it with no frontend for its
    /// port is rejected, not routed on).
    pub fn is_vip(&self, ip: IpAddr) -> bool {
        self.vips.contains_key(&ip)
    }

    /// The first frontend of a VIP: where its ICMP echo requests go.
    #[inline]
    pub fn any_of_vip(&self, ip: IpAddr) -> Option<&Frontend> {
        let i = *self.vips.get(&ip)?;
        self.frontends.get(i as usize)
    }

    /// The VIPs.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips.keys().copied()
    }

    /// The NodePorts.
    pub fn node_ports(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.by_node_port
            .keys()
            .filter(|k| !k.2)
            .map(|&(port, p, _)| (port, p))
    }

    /// The frontend of a NodePort (on the node's own addresses) for packets of one
    /// family (`v6`).
    #[inline]
    pub fn node_port(&self, port: u16, protocol: Protocol, v6: bool) -> Option<&Frontend> {
        let i = *self.by_node_port.get(&(port, protocol, v6))?;
        self.frontends.get(i as usize)
    }

    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    /// Takes over the counters of `previous` (the frontends this build replaces) for
    /// every service port and backend both have, so that counts survive rebuilds.
    pub fn keep_stats_of(&mut self, previous: &Frontends) {
        for (k, v) in self.backend_stats.iter_mut() {
            if let Some(old) = previous.backend_stats.get(k) {
                *v = Arc::clone(old);
            }
        }
        for (k, v) in self.port_stats.iter_mut() {
            if let Some(old) = previous.port_stats.get(k) {
                *v = Arc::clone(old);
            }
        }
    }

    /// Counts a packet of `bytes` for service port `id`'s `backend`.
    #[inline]
    pub fn count(&self, id: u32, backend: Backend, bytes: usize, new_flow: bool) {
        if let Some(s) = self.backend_stats.get(&(id, backend)) {
            s.count(bytes, new_flow);
        }
    }

    /// Counts a drop of service port `id`.
    #[inline]
    pub fn count_drop(&self, id: u32, why: PortDrop) {
        if let Some(s) = self.port_stats.get(&id) {
            s.count(why);
        }
    }

    /// The counters of a backend of service port `id`.
    pub fn backend_stats(&self, id: u32, backend: Backend) -> Option<&BackendStats> {
        self.backend_stats.get(&(id, backend)).map(|a| &**a)
    }

    /// The drop counters of service port `id`.
    pub fn port_stats(&self, id: u32) -> Option<&PortStats> {
        self.port_stats.get(&id).map(|a| &**a)
    }

    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Frontend> {
        self.frontends.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::DEFAULT_MAX_SIZE;
    use crate::service::{Endpoint, ServicePort};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const VIPS: [&str; 6] = [
        "10.96.0.1",
        "10.96.0.2",
        "fd00:96::1",
        "198.51.100.1",
        "fd00:51::1",
        "203.0.113.1",
    ];
    const ADDRS: [&str; 4] = [
        "10.244.1.2",
        "10.244.2.2",
        "fd00:10:244:1::2",
        "fd00:10:244:2::2",
    ];

    fn pick<T: Clone>(pool: &[T], mask: u8) -> Vec<T> {
        (0..pool.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| pool[i].clone())
            .collect()
    }

    fn policy(local: bool) -> TrafficPolicy {
        if local {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        }
    }

    /// Services drawn from small pools, so that VIPs, ports and NodePorts collide.
    fn arb_service(n: usize) -> impl Strategy<Value = Service> {
        let port = (0u8..3, 0u8..2, 0u8..3).prop_map(|(proto, port, np)| {
            (
                [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][usize::from(proto)],
                [80u16, 443][usize::from(port)],
                [None, Some(30080u16), Some(30081)][usize::from(np)],
            )
        });
        let endpoint = (0usize..4, 0u8..4, any::<[bool; 4]>());
        (
            any::<[u8; 3]>(),
            proptest::collection::vec(port, 1..3),
            proptest::collection::vec(endpoint, 0..5),
            any::<[bool; 2]>(),
        )
            .prop_map(move |(ips, ports, endpoints, [elocal, ilocal])| Service {
                namespace: "default".into(),
                name: format!("s{n}"),
                cluster_ips: pick(&VIPS[..3], ips[0])
                    .iter()
                    .map(|v| v.parse().unwrap())
                    .collect(),
                external_ips: pick(&VIPS[1..5], ips[1])
                    .iter()
                    .map(|v| v.parse().unwrap())
                    .collect(),
                load_balancer_ips: pick(&VIPS[4..], ips[2])
                    .iter()
                    .map(|v| v.parse().unwrap())
                    .collect(),
                ports: ports
                    .iter()
                    .enumerate()
                    .map(|(i, &(protocol, port, node_port))| ServicePort {
                        name: format!("p{i}"),
                        protocol,
                        port,
                        node_port,
                    })
                    .collect(),
                external_policy: policy(elocal),
                internal_policy: policy(ilocal),
                affinity: None,
                source_ranges: Vec::new(),
                health_check_node_port: None,
                endpoints: endpoints
                    .iter()
                    .map(
                        |&(a, names, [local, ready, serving, terminating])| Endpoint {
                            addr: ADDRS[a].parse().unwrap(),
                            ports: (0..2)
                                .filter(|i| names & (1 << i) != 0)
                                .map(|i| (format!("p{i}"), 8080 + i as u16))
                                .collect(),
                            local,
                            ready,
                            serving,
                            terminating,
                        },
                    )
                    .collect(),
            })
    }

    /// The reference's endpoint choice, as kube-proxy words it: of the endpoints with
    /// the port (this node's only, for Local) in the family, the ready ones; if none
    /// is, those serving while terminating.
    fn usable(s: &Service, port: &str, local: bool, v6: bool) -> Vec<Backend> {
        let candidates: Vec<&Endpoint> = s
            .endpoints
            .iter()
            .filter(|e| e.ports.contains_key(port) && e.addr.is_ipv6() == v6 && (e.local || !local))
            .collect();
        let any_ready = candidates.iter().any(|e| e.ready);
        let mut v: Vec<Backend> = candidates
            .iter()
            .filter(|e| {
                if any_ready {
                    e.ready
                } else {
                    e.serving && e.terminating
                }
            })
            .map(|e| Backend {
                addr: e.addr,
                port: e.ports[port],
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// What a frontend must be: service, port name, kind, inside and outside backends,
    /// and whether a flow with no backend is rejected.
    type Expected = (String, String, Kind, Vec<Backend>, Vec<Backend>, bool);

    fn expected(s: &Service, p: &ServicePort, kind: Kind, v6: bool) -> Expected {
        let cluster = usable(s, &p.name, false, v6);
        let (inside, outside) = if kind == Kind::ClusterIp {
            let internal = usable(s, &p.name, s.internal_policy == TrafficPolicy::Local, v6);
            (internal.clone(), internal)
        } else {
            let external = usable(s, &p.name, s.external_policy == TrafficPolicy::Local, v6);
            (cluster.clone(), external)
        };
        (
            format!("default/{}", s.name),
            p.name.clone(),
            kind,
            inside,
            outside,
            cluster.is_empty(),
        )
    }

    fn got(f: &Frontend) -> Expected {
        (
            f.service.clone(),
            f.port_name.clone(),
            f.kind,
            f.inside.backends.clone(),
            f.outside.backends.clone(),
            f.inside.reject,
        )
    }

    proptest! {
        /// Every VIP and NodePort lookup against a linear search of the services in
        /// order (the first to claim a VIP port or NodePort has it; SCTP is never
        /// served); every choice picks one of its backends, or none when empty.
        #[test]
        fn lookups_match_a_linear_search(
            services in (0usize..5).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>()),
            hash in any::<u64>(),
        ) {
            let f = Frontends::build(&services, DEFAULT_MAX_SIZE).unwrap();
            let served = |p: &ServicePort| p.protocol != Protocol::Sctp;
            for vip in VIPS {
                let ip: IpAddr = vip.parse().unwrap();
                for port in [80, 443, 8080] {
                    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                        let want = services.iter().find_map(|s| {
                            let kind = if s.cluster_ips.contains(&ip) {
                                Kind::ClusterIp
                            } else if s.external_ips.contains(&ip) {
                                Kind::ExternalIp
                            } else if s.load_balancer_ips.contains(&ip) {
                                Kind::LoadBalancer
                            } else {
                                return None;
                            };
                            let p = s.ports.iter().find(|p| served(p) && p.port == port && p.protocol == protocol)?;
                            Some(expected(s, p, kind, ip.is_ipv6()))
                        });
                        prop_assert_eq!(f.vip(ip, port, protocol).map(got), want, "{} {} {:?}", ip, port, protocol);
                    }
                }
            }
            for np in [30080, 30081, 30082] {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for v6 in [false, true] {
                        let want = services.iter().find_map(|s| {
                            let p = s.ports.iter().find(|p| served(p) && p.node_port == Some(np) && p.protocol == protocol)?;
                            Some(expected(s, p, Kind::NodePort, v6))
                        });
                        prop_assert_eq!(f.node_port(np, protocol, v6).map(got), want, "{} {:?}", np, protocol);
                    }
                }
            }
            for fe in f.iter() {
                for c in [&fe.inside, &fe.outside] {
                    match c.pick(hash) {
                        Some(b) => prop_assert!(c.backends.contains(&b)),
                        None => prop_assert!(c.backends.is_empty()),
                    }
                }
            }
        }
    }

    fn ep(last: u8, local: bool) -> Endpoint {
        Endpoint {
            addr: IpAddr::from([10, 244, u8::from(!local) + 1, last]),
            ports: BTreeMap::from([("http".to_string(), 8080), ("dns".to_string(), 53)]),
            local,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn web() -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![IpAddr::from([10, 96, 0, 10])],
            external_ips: vec![IpAddr::from([198, 51, 100, 10])],
            load_balancer_ips: Vec::new(),
            ports: vec![
                ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30080),
                },
                ServicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: None,
                },
                ServicePort {
                    name: "sig".into(),
                    protocol: Protocol::Sctp,
                    port: 9,
                    node_port: None,
                },
            ],
            external_policy: TrafficPolicy::Local,
            internal_policy: TrafficPolicy::Cluster,
            affinity: None,
            source_ranges: Vec::new(),
            health_check_node_port: Some(31999),
            endpoints: vec![ep(2, true), ep(3, false)],
        }
    }

    /// A rebuild takes over the tables of unchanged backend sets (the same `Arc`) and
    /// builds the changed ones anew; equal sets within one build share a table.
    #[test]
    fn rebuilds_reuse_the_tables_of_unchanged_backend_sets() {
        let mut other = web();
        other.name = "other".into();
        other.cluster_ips = vec![IpAddr::from([10, 96, 0, 11])];
        other.external_ips.clear();
        other.health_check_node_port = None;
        for p in other.ports.iter_mut() {
            p.node_port = None;
        }
        other.endpoints = vec![ep(7, true), ep(8, false)];
        let a = Frontends::build(&[web(), other.clone()], DEFAULT_MAX_SIZE).unwrap();
        let web_http = |f: &Frontends| {
            Arc::clone(
                &f.vip(IpAddr::from([10, 96, 0, 10]), 80, Protocol::Tcp)
                    .unwrap()
                    .inside,
            )
        };
        let other_http = |f: &Frontends| {
            Arc::clone(
                &f.vip(IpAddr::from([10, 96, 0, 11]), 80, Protocol::Tcp)
                    .unwrap()
                    .inside,
            )
        };
        // Within one build: the ExternalIP's inside choice is the ClusterIP's set.
        let ext = a
            .vip(IpAddr::from([198, 51, 100, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert!(Arc::ptr_eq(&ext.inside, &web_http(&a)));
        other.endpoints.push(ep(9, false));
        let b =
            Frontends::build_reusing(&[web(), other.clone()], DEFAULT_MAX_SIZE, Some(&a)).unwrap();
        assert!(
            Arc::ptr_eq(&web_http(&a), &web_http(&b)),
            "unchanged: taken over"
        );
        assert!(
            !Arc::ptr_eq(&other_http(&a), &other_http(&b)),
            "changed: built anew"
        );
        assert_eq!(other_http(&b).backends.len(), 3);
        assert_eq!(
            *other_http(&b),
            *Frontends::build(&[web(), other.clone()], DEFAULT_MAX_SIZE)
                .map(|f| other_http(&f))
                .unwrap()
        );
        // Another cap: nothing is taken over.
        let c = Frontends::build_reusing(&[web(), other], 3347, Some(&b)).unwrap();
        assert!(!Arc::ptr_eq(&web_http(&b), &web_http(&c)));
        assert_eq!(web_http(&c).maglev.as_ref().unwrap().len(), 3347);
    }

    #[test]
    fn frontends_by_vip_port_protocol_and_node_port() {
        let f = Frontends::build(&[web()], DEFAULT_MAX_SIZE).unwrap();
        let cip = IpAddr::from([10, 96, 0, 10]);
        let http = f.vip(cip, 80, Protocol::Tcp).unwrap();
        assert_eq!(http.kind, Kind::ClusterIp);
        assert_eq!(http.inside.backends.len(), 2);
        assert!(!http.outside_local, "a ClusterIP keeps no client address");
        // The same port, the other protocol, is not this frontend.
        assert!(f.vip(cip, 80, Protocol::Udp).is_none());
        assert_eq!(f.vip(cip, 53, Protocol::Udp).unwrap().port_name, "dns");
        // SCTP: reported, not served.
        assert!(f.vip(cip, 9, Protocol::Sctp).is_none());
        assert!(
            f.skipped.iter().any(|s| s.contains("SCTP")),
            "{:?}",
            f.skipped
        );
        // Local external policy: outside clients reach the local endpoint only.
        let ext = f
            .vip(IpAddr::from([198, 51, 100, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert_eq!(ext.outside.backends.len(), 1);
        assert_eq!(ext.outside.backends[0].addr, IpAddr::from([10, 244, 1, 2]));
        assert!(ext.outside_local);
        // ... and pods reach every endpoint through it.
        assert_eq!(ext.inside.backends.len(), 2);
        let np = f.node_port(30080, Protocol::Tcp, false).unwrap();
        assert_eq!((np.kind, np.outside.backends.len()), (Kind::NodePort, 1));
        assert!(f.node_port(30080, Protocol::Udp, false).is_none());
        assert!(f.is_vip(cip) && !f.is_vip(IpAddr::from([10, 96, 0, 11])));
    }

    #[test]
    fn health_checks_count_local_ready_endpoints_once_each() {
        let mut s = web();
        s.endpoints.push(Endpoint {
            ready: false,
            serving: true,
            terminating: true,
            ..ep(4, true)
        });
        // By address, as kube-proxy counts: ep(2) serving http and dns is one.
        let f = Frontends::build(&[s.clone()], DEFAULT_MAX_SIZE).unwrap();
        let h = f.health_check(31999).unwrap();
        assert_eq!((h.namespace.as_str(), h.name.as_str()), ("default", "web"));
        assert_eq!(h.local_endpoints, 1, "ep(3) is remote, ep(4) terminating");
        assert!(f.health_check(31998).is_none());
        // A dual-stack pod is one endpoint; a second local pod makes two.
        let mut dual = s.clone();
        dual.endpoints.push(Endpoint {
            addr: "fd00:1::2".parse().unwrap(),
            ..ep(2, true)
        });
        let f = Frontends::build(std::slice::from_ref(&dual), DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(f.health_check(31999).unwrap().local_endpoints, 1);
        dual.endpoints.push(ep(5, true));
        let f = Frontends::build(&[dual], DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(f.health_check(31999).unwrap().local_endpoints, 2);
        // A second service on the same port: the first keeps it.
        let mut other = s.clone();
        other.name = "other".into();
        other.cluster_ips = vec![IpAddr::from([10, 96, 0, 99])];
        other.ports.iter_mut().for_each(|p| p.node_port = None);
        let f = Frontends::build(&[s, other], DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(f.health_checks.len(), 1);
        assert!(f
            .skipped
            .iter()
            .any(|m| m.contains("healthCheckNodePort 31999")));
    }

    #[test]
    fn no_usable_endpoint_rejects_and_a_claimed_frontend_stays_with_its_first_service() {
        let mut empty = web();
        empty.endpoints.clear();
        let mut other = web();
        other.name = "other".into();
        let f = Frontends::build(&[empty, other], DEFAULT_MAX_SIZE).unwrap();
        let http = f
            .vip(IpAddr::from([10, 96, 0, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert_eq!(http.service, "default/web");
        assert_eq!(http.inside.pick(12345), None, "no backend: reject");
        assert!(f.skipped.iter().any(|s| s.contains("default/other")));
    }

    #[test]
    fn internal_policy_is_for_cluster_ips_source_ranges_for_load_balancers() {
        let mut s = web();
        s.internal_policy = TrafficPolicy::Local;
        s.load_balancer_ips = vec![IpAddr::from([203, 0, 113, 10])];
        s.source_ranges = vec![(IpAddr::from([192, 168, 200, 0]), 24)];
        let f = Frontends::build(&[s], DEFAULT_MAX_SIZE).unwrap();
        let cip = f
            .vip(IpAddr::from([10, 96, 0, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert_eq!(cip.inside.backends.len(), 1, "iTP Local: this node's only");
        let ext = f
            .vip(IpAddr::from([198, 51, 100, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert_eq!(
            ext.inside.backends.len(),
            2,
            "pods to an ExternalIP: every endpoint"
        );
        assert!(ext.source_ranges.is_empty() && cip.source_ranges.is_empty());
        let lb = f
            .vip(IpAddr::from([203, 0, 113, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert_eq!(lb.kind, Kind::LoadBalancer);
        assert_eq!(lb.source_ranges.len(), 1);
    }

    #[test]
    fn no_endpoint_rejects_none_here_drops() {
        // Local policy, the only endpoint on another node: drop, not reject.
        let mut s = web();
        s.endpoints = vec![ep(3, false)];
        let f = Frontends::build(&[s.clone()], DEFAULT_MAX_SIZE).unwrap();
        let ext = f
            .vip(IpAddr::from([198, 51, 100, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert!(ext.outside.backends.is_empty() && !ext.outside.reject);
        assert_eq!(ext.inside.backends.len(), 1);
        s.endpoints.clear();
        let f = Frontends::build(&[s], DEFAULT_MAX_SIZE).unwrap();
        let ext = f
            .vip(IpAddr::from([198, 51, 100, 10]), 80, Protocol::Tcp)
            .unwrap();
        assert!(ext.outside.reject && ext.inside.reject);
    }

    #[test]
    fn every_node_picks_the_same_backend_for_a_flow() {
        // Two nodes that learned the endpoints in another order.
        let a = Frontends::build(&[web()], DEFAULT_MAX_SIZE).unwrap();
        let mut w = web();
        w.endpoints.reverse();
        let b = Frontends::build(&[w], DEFAULT_MAX_SIZE).unwrap();
        let cip = IpAddr::from([10, 96, 0, 10]);
        let (fa, fb) = (
            a.vip(cip, 80, Protocol::Tcp).unwrap(),
            b.vip(cip, 80, Protocol::Tcp).unwrap(),
        );
        let mut h = 7u64;
        let mut both = [0u32; 2];
        for _ in 0..1000 {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
            let (x, y) = (fa.inside.pick(h).unwrap(), fb.inside.pick(h).unwrap());
            assert_eq!(x, y);
            both[usize::from(x.addr == IpAddr::from([10, 244, 1, 2]))] += 1;
        }
        assert!(both.iter().all(|&n| n > 300), "{both:?}");
    }
}
