//! The service proxy's model from the cluster model: each configured service as
//! [`nat::service::Service`], its endpoints local when inside this node's pod CIDRs,
//! their ports the service's target ports unless the endpoint names its own.

use crate::config::{self, Cidr, Config, EndpointConfig, SessionAffinity};
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
    /// `--conntrack-tcp-be-liberal`: TCP segments outside their flow's window are let
    /// through rather than dropped.
    pub tcp_be_liberal: bool,
    /// `--enable-pod-egress`.
    pub pod_egress: bool,
    /// `--cluster-cidr`: every pod address of the cluster (inside for pod egress and
    /// the traffic policies), where nodes' pod CIDRs are not all listed (learned by
    /// BGP instead).
    pub cluster_cidrs: Vec<Cidr>,
    /// `--service-cluster-ip-range`: where ClusterIPs come from (inside the cluster for
    /// pod egress; no ExternalIP or LoadBalancer IP may lie in it).
    pub cluster_ip_ranges: Vec<Cidr>,
    /// `--service-external-ip-range`: the ExternalIPs strict validation admits.
    pub external_ip_ranges: Vec<Cidr>,
    /// `--loadbalancer-ip-range`: the LoadBalancer IPs strict validation admits.
    pub load_balancer_ip_ranges: Vec<Cidr>,
    /// `--strict-external-ip-validation`: ExternalIPs and LoadBalancer IPs outside
    /// their ranges (all of them, with no range given) are neither served nor
    /// advertised.
    pub strict_external_ips: bool,
    /// `--service-node-port-range`, inclusive: a NodePort outside it is reported.
    pub node_port_range: (u16, u16),
    /// `--nodeport-bindon-all-ip`: NodePorts on every node address, not only on the
    /// node's first address of each family.
    pub node_port_all_ips: bool,
    /// `--ipvs-graceful-termination` with `--ipvs-graceful-period`: the TCP flows of a
    /// removed backend are reset only once this long has passed since it went.
    pub graceful: Option<Duration>,
}

/// Fragmented IPv4 datagrams whose translation is kept at once (3 MiB).
pub const FRAGMENTED_DATAGRAMS: usize = 65_536;

/// kube-router's `--service-cluster-ip-range` default.
pub const DEFAULT_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";
/// kube-router's (and Kubernetes') `--service-node-port-range` default.
pub const DEFAULT_NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

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
            tcp_be_liberal: false,
            pod_egress: true,
            cluster_cidrs: vec![],
            // 10.96.0.0/12
            cluster_ip_ranges: vec![Cidr::V4(lpm::Prefix4::new_masked(0x0a60_0000, 12))],
            external_ip_ranges: vec![],
            load_balancer_ip_ranges: vec![],
            strict_external_ips: true,
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            node_port_all_ips: false,
            graceful: None,
        }
    }
}

/// The proxy's lasting state: its settings and the tables every snapshot shares.
#[derive(Debug)]
pub struct Proxy {
    pub settings: ProxySettings,
    pub conntrack: Arc<Conntrack>,
    pub affinity: Arc<Affinity>,
    pub fragments: Arc<nat::fragments::Fragments>,
    /// The last frontends built: the next build takes their counters over.
    previous: std::sync::Mutex<Arc<Frontends>>,
    /// Live entries of the IPv4 and IPv6 tables at the last sweep.
    pub live: [std::sync::atomic::AtomicUsize; 2],
    /// Notes about the configuration already logged (each is logged once).
    noted: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Removed backends whose TCP flows drain (`--ipvs-graceful-termination`): since
    /// which second, by (service port, address, port).
    draining: std::sync::Mutex<hashbrown::HashMap<(u32, IpAddr, u16), u32>>,
    /// Counts the services' changes: a periodic sweep started before one must not
    /// judge flows by the services it started with.
    generation: std::sync::atomic::AtomicU64,
}

/// Slots of each family's conntrack table per flow of `--conntrack-max`: two entries,
/// in a table at most half full.
const ENTRIES_PER_FLOW: usize = 4;

impl Proxy {
    /// Allocates the tables (their memory is fixed from here on).
    pub fn new(settings: ProxySettings) -> Proxy {
        // Both directions of every flow, at most half the slots full (a key lives in
        // a window of 16 slots: at half load 2 in 10,000 inserts find theirs full,
        // near full load most would evict). IPv6 flows share the budget (most
        // clusters carry mostly one family): each family's table holds every flow.
        let entries = if settings.run {
            settings.conntrack_max.saturating_mul(ENTRIES_PER_FLOW)
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
            fragments: Arc::new(nat::fragments::Fragments::new(if settings.run {
                FRAGMENTED_DATAGRAMS
            } else {
                0
            })),
            settings,
            previous: Default::default(),
            live: Default::default(),
            noted: Default::default(),
            draining: Default::default(),
            generation: Default::default(),
        }
    }

    /// Configuration `c` as the proxy's flags admit it, for the service proxy and BGP
    /// alike (kube-router filters both the same way): ExternalIPs and LoadBalancer IPs
    /// that strict validation refuses are taken out, kube-router's `service.local` and
    /// `service.skiplbips` annotations are applied, NodePorts outside the node-port
    /// range are dropped. What it changes or does not implement is logged once.
    pub fn admit(&self, c: &Config) -> Config {
        let (c, notes) = admit(c, &self.settings);
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        for n in notes {
            if noted.insert(n.clone()) {
                tracing::warn!("{n}");
            }
        }
        c
    }

    /// The services part of a snapshot for configuration `c`.
    pub fn services(&self, c: &Config) -> Result<Services, FrontendError> {
        let st = &self.settings;
        let frontends = if st.run {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            let mut f = Frontends::build_reusing(&model(c), st.maglev_max, Some(&previous))?;
            for s in &f.skipped {
                tracing::warn!("{s}");
            }
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
            fragments: Arc::clone(&self.fragments),
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
            cluster: cluster_prefixes(c, st),
            service_ranges: st
                .cluster_ip_ranges
                .iter()
                .map(|r| (r.network(), r.len()))
                .collect(),
            node_port_addrs: node_port_addrs(c, st),
            pod_egress: st.pod_egress,
            masquerade_all: st.masquerade_all,
            tcp_be_liberal: st.tcp_be_liberal,
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
        let graceful = self.settings.graceful.map(seconds);
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let before = std::mem::take(&mut *draining);
        // The sweep only judges; the flows judged are dealt with after it, both
        // directions of each one after the other (the sweep meets a flow's two entries
        // at unrelated places: acting on each as met would leave the flow half there,
        // answers lost, for as long as the sweep takes).
        let mut doomed4 = Vec::new();
        let mut doomed6 = Vec::new();
        // (A flow is kept once, by its original entry; a reply entry only when its
        // original is gone.)
        macro_rules! fate {
            ($ct:ident, $get:ident, $doomed:ident) => {
                |t: &nat::conntrack::flow::Tuple<_>, n: &nat::conntrack::flow::Nat<_>| {
                    // Pod egress and outside-to-pod flows belong to no service.
                    if n.service == 0 || n.flags & flags::BACKEND_GONE != 0 {
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
                    if let (Some(period), 6) = (graceful, t.protocol) {
                        // Drains: reset once the graceful period has passed.
                        let key = (n.service, addr, port);
                        let since = before.get(&key).copied().unwrap_or(now);
                        if now < since.saturating_add(period) {
                            draining.insert(key, since);
                            return Fate::Keep;
                        }
                    }
                    if n.direction == Direction::Original {
                        gone += 1;
                    } else if $ct
                        .$get(&nat::conntrack::flow::counterpart(t, n).0, now)
                        .is_some()
                    {
                        return Fate::Keep;
                    }
                    $doomed.push((*t, *n));
                    Fate::Keep
                }
            };
        }
        // Each doomed flow, both entries: UDP and ICMP freed (the next packet picks a
        // live backend), TCP marked so that the next packet is answered with a RST (an
        // entry a worker freed meanwhile stays freed), unless it is over already.
        macro_rules! deal {
            ($ct:ident, $doomed:ident, $get:ident, $put:ident, $remove:ident) => {{
                let mut freed = 0;
                for (t, n) in &$doomed {
                    let (k, v) = nat::conntrack::flow::counterpart(t, n);
                    for (t, n) in [(*t, *n), (k, v)] {
                        // As the entry is now, and only if it still translates as the
                        // judged one did (the tuple may carry a newer flow by now).
                        let Some(cur) = $ct.$get(&t, now) else {
                            continue;
                        };
                        let same = (cur.src, cur.sport, cur.dst, cur.dport, cur.service)
                            == (n.src, n.sport, n.dst, n.dport, n.service);
                        if !same {
                            continue;
                        }
                        // A TCP flow that is over (TIME_WAIT, or reset) has nothing
                        // to reset: freed too.
                        let over = matches!(
                            nat::conntrack::tcp::State::from_u8(cur.state),
                            Some(
                                nat::conntrack::tcp::State::TimeWait
                                    | nat::conntrack::tcp::State::Close
                            )
                        );
                        if t.protocol != 6 || over {
                            freed += usize::from($ct.$remove(&t, now));
                        } else if cur.flags & flags::BACKEND_GONE == 0 {
                            let marked = nat::conntrack::flow::Nat {
                                flags: cur.flags | flags::BACKEND_GONE,
                                ..cur
                            };
                            $ct.$put(&t, &marked, now);
                        }
                    }
                }
                freed
            }};
        }
        let ct = &self.conntrack;
        let live4 = ct.sweep4(0, ct.v4.capacity(), now, fate!(ct, get4, doomed4));
        let live6 = ct.sweep6(0, ct.v6.capacity(), now, fate!(ct, get6, doomed6));
        let live4 = live4.saturating_sub(deal!(ct, doomed4, get4, put4, remove4));
        let live6 = live6.saturating_sub(deal!(ct, doomed6, get6, put6, remove6));
        if !doomed4.is_empty() || !doomed6.is_empty() {
            // A worker that read one of these entries just before it was dealt with
            // may write its copy back (a refreshed expiry, a state change), bringing a
            // freed entry back or wiping the mark: once its write is done (it takes
            // microseconds), the flows are dealt with again.
            std::thread::sleep(std::time::Duration::from_millis(20));
            deal!(ct, doomed4, get4, put4, remove4);
            deal!(ct, doomed6, get6, put6, remove6);
        }
        self.record_live(live4, live6);
        (gone, live4 + live6)
    }

    /// Whether removed backends' flows are draining (a periodic sweep must reset them
    /// when their graceful period is over).
    pub fn draining(&self) -> bool {
        !self
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The services changed (their configuration is the engine's newest).
    pub fn services_changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Which change of the services is the newest.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The periodic sweep: expired entries freed, and the flows of removed backends
    /// whose graceful period is over dealt with, if `c` (of services change
    /// `generation`) is still the newest configuration (else the change's own sweep
    /// judges them).
    pub fn periodic_sweep(&self, c: &Config, generation: u64, now: u32) {
        if self.draining() && generation == self.generation() {
            let (gone, _) = self.forget_removed_backends(c, now);
            if gone > 0 {
                tracing::info!(
                    gone,
                    "flows of removed backends reset after their graceful period"
                );
            }
        } else {
            self.sweep_expired(now);
        }
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

/// The NodePorts of `f` as the uplink's steering program keys them: (IP protocol,
/// port).
pub fn steered_node_ports(f: &Frontends) -> Vec<(u8, u16)> {
    f.node_ports()
        .filter_map(|(port, p)| match p {
            Protocol::Tcp => Some((6, port)),
            Protocol::Udp => Some((17, port)),
            Protocol::Sctp => None,
        })
        .collect()
}

/// The node addresses NodePorts are served on: the first uplink address of each
/// family, or all of them with `--nodeport-bindon-all-ip`.
pub fn node_port_addrs(c: &Config, st: &ProxySettings) -> Vec<IpAddr> {
    let all = c.uplink.addresses.iter().map(|a| a.addr);
    if st.node_port_all_ips {
        return all.collect();
    }
    let first = |v6: bool| all.clone().find(|a| a.is_ipv6() == v6);
    first(false).into_iter().chain(first(true)).collect()
}

/// The addresses inside the cluster: every node's pod CIDRs and addresses, and
/// `--cluster-cidr` (the service cluster IP ranges are no source: a packet from one
/// came from outside).
pub fn cluster_prefixes(c: &Config, st: &ProxySettings) -> Vec<(IpAddr, u8)> {
    let host = |a: IpAddr| (a, if a.is_ipv4() { 32 } else { 128 });
    let mut v: Vec<(IpAddr, u8)> = c
        .pod_cidrs
        .iter()
        .chain(c.nodes.iter().flat_map(|n| n.pod_cidrs.iter()))
        .map(|p| (p.network(), p.len()))
        .collect();
    v.extend(c.nodes.iter().map(|n| host(n.ip)));
    v.extend(c.uplink.addresses.iter().map(|a| host(a.addr)));
    v.extend(st.cluster_cidrs.iter().map(|r| (r.network(), r.len())));
    v
}

/// kube-router's service annotations.
pub mod annotation {
    /// `"true"`: both traffic policies `Local`, whatever the spec says (as kube-router
    /// sets them).
    pub const LOCAL: &str = "kube-router.io/service.local";
    /// Present: the LoadBalancer IPs are neither served nor advertised.
    pub const SKIP_LB_IPS: &str = "kube-router.io/service.skiplbips";
    /// IPVS schedulers (rr, lc, dh, sh, mh): xroute always uses Maglev.
    pub const SCHEDULER: &str = "kube-router.io/service.scheduler";
    pub const SCHED_FLAGS: &str = "kube-router.io/service.schedflags";
    /// Direct server return: not implemented, the service is NATed.
    pub const DSR: &str = "kube-router.io/service.dsr";
    /// Hairpin for the ClusterIPs and NodePorts, and the ExternalIPs: xroute hairpins
    /// every frontend, as kube-proxy does.
    pub const HAIRPIN: &str = "kube-router.io/service.hairpin";
    pub const HAIRPIN_EXTERNAL_IPS: &str = "kube-router.io/service.hairpin.externalips";
}

/// [`Proxy::admit`] without the logging: the admitted configuration and the notes.
pub fn admit(c: &Config, st: &ProxySettings) -> (Config, Vec<String>) {
    let mut out = c.clone();
    let mut notes = Vec::new();
    if st.run && st.cluster_cidrs.is_empty() {
        let unlisted: Vec<&str> = c
            .nodes
            .iter()
            .filter(|n| n.pod_cidrs.is_empty())
            .map(|n| n.name.as_str())
            .collect();
        if !unlisted.is_empty() {
            notes.push(format!(
                "nodes {} list no pod_cidrs and no --cluster-cidr is given: their pods \
                 (learned by BGP) count as outside the cluster, so this node's pods' \
                 traffic to them is SNATed as egress and theirs to services here is \
                 external (traffic policies, loadBalancerSourceRanges); give --cluster-cidr",
                unlisted.join(", ")
            ));
        }
    }
    let in_any = |ranges: &[Cidr], ip: IpAddr| ranges.iter().any(|r| r.contains(ip));
    let ranges = |r: &[Cidr]| {
        r.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for s in &mut out.services {
        let id = format!("service {}/{}", s.namespace, s.name);
        if st.strict_external_ips {
            for (ips, allowed, what, flag) in [
                (
                    &mut s.external_ips,
                    &st.external_ip_ranges,
                    "ExternalIP",
                    "--service-external-ip-range",
                ),
                (
                    &mut s.load_balancer_ips,
                    &st.load_balancer_ip_ranges,
                    "LoadBalancer IP",
                    "--loadbalancer-ip-range",
                ),
            ] {
                ips.retain(|&ip| {
                    let why = if in_any(&st.cluster_ip_ranges, ip) {
                        format!(
                            "inside --service-cluster-ip-range {}",
                            ranges(&st.cluster_ip_ranges)
                        )
                    } else if allowed.is_empty() {
                        format!("no {flag} is given")
                    } else if !in_any(allowed, ip) {
                        format!("outside {flag} {}", ranges(allowed))
                    } else {
                        return true;
                    };
                    notes.push(format!(
                        "{id}: {what} {ip} is {why}: neither served nor advertised \
                         (--strict-external-ip-validation=false admits every one)"
                    ));
                    false
                });
            }
        }
        if s.annotations.contains_key(annotation::SKIP_LB_IPS) && !s.load_balancer_ips.is_empty() {
            s.load_balancer_ips.clear();
            notes.push(format!(
                "{id}: {}: its LoadBalancer IPs are neither served nor advertised",
                annotation::SKIP_LB_IPS
            ));
        }
        if s.annotations.get(annotation::LOCAL).map(String::as_str) == Some("true") {
            s.external_traffic_policy = config::TrafficPolicy::Local;
            s.internal_traffic_policy = config::TrafficPolicy::Local;
        }
        if let Some(v) = s.annotations.get(annotation::SCHEDULER) {
            notes.push(format!(
                "{id}: {} `{v}` is not used: xroute always chooses backends by Maglev \
                 consistent hashing (the same backend on every node for a flow)",
                annotation::SCHEDULER
            ));
        }
        for a in [annotation::HAIRPIN, annotation::HAIRPIN_EXTERNAL_IPS] {
            if s.annotations.contains_key(a) {
                notes.push(format!(
                    "{id}: {a} changes nothing: xroute hairpins every frontend of every \
                     service (a pod reaching its own service may land on itself and gets \
                     its replies from the service's address)"
                ));
            }
        }
        if s.annotations.contains_key(annotation::DSR) {
            notes.push(format!(
                "{id}: {}: direct server return is not implemented; the service is \
                 served with NAT (replies return through the node)",
                annotation::DSR
            ));
        }
        let (lo, hi) = st.node_port_range;
        for p in &mut s.ports {
            // Served all the same (the API server's range is what counts; kube-router
            // uses the flag for its firewall), but the user hears of the mismatch.
            if let Some(np) = p.node_port.filter(|np| !(lo..=hi).contains(np)) {
                notes.push(format!(
                    "{id}: NodePort {np} is outside --service-node-port-range {lo}-{hi} \
                     (served; set the flag to the API server's range)"
                ));
            }
        }
    }
    (out, notes)
}

fn seconds(d: Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
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
                health_check_node_port: s.health_check_node_port,
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

    /// `--conntrack-max` flows fit: both directions of each, nothing evicted.
    #[test]
    fn the_conntrack_table_holds_conntrack_max_flows() {
        use nat::conntrack::flow::{Direction, Nat, Tuple};
        use std::net::Ipv4Addr;
        use std::sync::atomic::Ordering::Relaxed;
        let proxy = Proxy::new(ProxySettings {
            conntrack_max: 10_000,
            ..Default::default()
        });
        let ct = &proxy.conntrack;
        for i in 0..10_000u32 {
            let client = Ipv4Addr::from(0x0af4_0000 + i);
            let t = Tuple {
                src: client,
                dst: Ipv4Addr::new(10, 96, 0, 10),
                sport: 40000,
                dport: 80,
                protocol: 6,
            };
            let n = Nat {
                src: client,
                sport: 40000,
                dst: Ipv4Addr::new(10, 244, 9, 9),
                dport: 8080,
                direction: Direction::Original,
                state: 3,
                flags: 0,
                service: 1,
                expires: 1000,
                window: Default::default(),
            };
            let reply = Tuple {
                src: n.dst,
                dst: client,
                sport: 8080,
                dport: 40000,
                protocol: 6,
            };
            ct.put4(&t, &n, 1);
            ct.put4(
                &reply,
                &Nat {
                    direction: Direction::Reply,
                    ..n
                },
                1,
            );
        }
        let c = &ct.v4.counters;
        assert_eq!(c.inserts.load(Relaxed), 20_000);
        assert_eq!(
            (c.evictions.load(Relaxed), c.refused.load(Relaxed)),
            (0, 0),
            "a table of {} slots",
            ct.v4.capacity()
        );
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
                window: Default::default(),
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
        // Pod egress (SNATed to the node) and outside-to-pod flows belong to no
        // service (0): a change of the services leaves them alone.
        let egress_tcp = flow([192, 0, 2, 9], 443, 6, 0, 5);
        let egress_udp = flow([192, 0, 2, 9], 53, 17, 0, 6);
        let (gone, live) = proxy.forget_removed_backends(&c, 2);
        assert_eq!(
            (gone, live),
            (2, 10),
            "two flows gone; both entries of the UDP one freed"
        );
        let ct = &proxy.conntrack;
        for (t, r) in [stays, terminating, egress_tcp, egress_udp] {
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
            (0, 10),
            "once is enough"
        );
    }

    #[test]
    fn strict_validation_annotations_and_node_port_range_shape_what_is_served() {
        let text = CONFIG.replace(
            "    cluster_ips: [10.96.0.10]\n",
            "    cluster_ips: [10.96.0.10]\n    external_ips: [198.51.100.10, 10.96.0.50, 203.0.113.5]\n    load_balancer_ips: [192.0.2.1]\n    annotations: {kube-router.io/service.local: \"true\", kube-router.io/service.scheduler: lc, kube-router.io/service.hairpin: \"\"}\n",
        )
        .replace("node_port: 30080", "node_port: 20080")
        .replace("external_traffic_policy: Local\n", "internal_traffic_policy: Local\n");
        let c = config::parse(&text, "node.yaml").unwrap();
        let st = ProxySettings {
            external_ip_ranges: vec!["198.51.100.0/24".parse().unwrap()],
            ..ProxySettings::default()
        };
        let (a, notes) = admit(&c, &st);
        let web = &a.services[0];
        assert_eq!(web.external_ips, [IpAddr::from([198, 51, 100, 10])]);
        assert!(
            web.load_balancer_ips.is_empty(),
            "no --loadbalancer-ip-range: none admitted"
        );
        assert_eq!(
            web.cluster_ips, c.services[0].cluster_ips,
            "ClusterIPs untouched"
        );
        assert_eq!(web.external_traffic_policy, config::TrafficPolicy::Local);
        assert_eq!(
            web.internal_traffic_policy,
            config::TrafficPolicy::Local,
            "service.local sets both policies, as kube-router does"
        );
        assert_eq!(
            web.ports[0].node_port,
            Some(20080),
            "outside the range: served"
        );
        let all = notes.join("\n");
        for want in [
            "ExternalIP 10.96.0.50 is inside --service-cluster-ip-range 10.96.0.0/12",
            "ExternalIP 203.0.113.5 is outside --service-external-ip-range 198.51.100.0/24",
            "LoadBalancer IP 192.0.2.1 is no --loadbalancer-ip-range is given",
            "service.scheduler `lc` is not used: xroute always chooses backends by Maglev",
            "kube-router.io/service.hairpin changes nothing: xroute hairpins every frontend",
            "NodePort 20080 is outside --service-node-port-range 30000-32767 (served",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        // Not strict: everything admitted; the annotations still apply.
        let loose = ProxySettings {
            strict_external_ips: false,
            node_port_range: (20000, 32767),
            ..ProxySettings::default()
        };
        let (a, notes) = admit(&c, &loose);
        assert_eq!(a.services[0].external_ips.len(), 3);
        assert_eq!(a.services[0].load_balancer_ips.len(), 1);
        assert_eq!(a.services[0].ports[0].node_port, Some(20080));
        assert_eq!(notes.len(), 2, "the scheduler's and hairpin's: {notes:?}");
        // skiplbips.
        let mut skip = c.clone();
        skip.services[0]
            .annotations
            .insert(annotation::SKIP_LB_IPS.into(), String::new());
        let (a, _) = admit(&skip, &loose);
        assert!(a.services[0].load_balancer_ips.is_empty());
        // The proxy logs each note once and hands back the admitted configuration.
        let proxy = Proxy::new(ProxySettings {
            conntrack_max: 4,
            ..st
        });
        assert_eq!(proxy.admit(&c), admit(&c, &proxy.settings).0);
    }

    #[test]
    fn node_ports_are_on_the_first_address_of_each_family_or_all() {
        let c = config::parse(
            &CONFIG.replace(
                "addresses: [192.168.100.11/24]",
                "addresses: [192.168.100.11/24, 192.168.101.11/24, \"fd00::11/64\"]",
            ),
            "node.yaml",
        )
        .unwrap();
        let first = node_port_addrs(&c, &ProxySettings::default());
        assert_eq!(
            first,
            [
                IpAddr::from([192, 168, 100, 11]),
                "fd00::11".parse::<IpAddr>().unwrap()
            ]
        );
        let all = node_port_addrs(
            &c,
            &ProxySettings {
                node_port_all_ips: true,
                ..ProxySettings::default()
            },
        );
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn graceful_termination_lets_a_removed_backends_tcp_flows_drain_for_the_period() {
        use nat::conntrack::flow::{flags, Direction, Nat, Tuple};
        use std::net::Ipv4Addr;
        let c = config::parse(CONFIG, "node.yaml").unwrap();
        let proxy = Proxy::new(ProxySettings {
            conntrack_max: 64,
            graceful: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let client = Ipv4Addr::new(10, 244, 1, 9);
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let put = |protocol: u8, port: u16, service: &str| {
            let t = Tuple {
                src: client,
                dst: vip,
                sport: 5000,
                dport: port,
                protocol,
            };
            let n = Nat {
                src: client,
                sport: 5000,
                dst: Ipv4Addr::new(10, 244, 1, 7), // not an endpoint
                dport: port,
                direction: Direction::Original,
                state: 3,
                flags: 0,
                service: nat::frontend::port_id("default/web", service),
                expires: 10_000,
                window: Default::default(),
            };
            proxy.conntrack.put4(&t, &n, 1);
            t
        };
        let tcp = put(6, 8080, "http");
        let udp = put(17, 53, "dns");
        let (gone, _) = proxy.forget_removed_backends(&c, 100);
        assert_eq!(gone, 1, "the UDP flow goes at once");
        assert!(proxy.conntrack.get4(&udp, 100).is_none());
        assert_eq!(proxy.conntrack.get4(&tcp, 100).unwrap().flags, 0, "drains");
        assert!(proxy.draining());
        proxy.periodic_sweep(&c, proxy.generation(), 129);
        assert_eq!(proxy.conntrack.get4(&tcp, 129).unwrap().flags, 0, "29 s in");
        proxy.periodic_sweep(&c, proxy.generation(), 130);
        let e = proxy.conntrack.get4(&tcp, 130).unwrap();
        assert_ne!(e.flags & flags::BACKEND_GONE, 0, "30 s: reset");
        assert!(!proxy.draining(), "nothing left to drain");
    }
}
