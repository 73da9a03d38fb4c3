//! The stats endpoint: `GET /metrics` (Prometheus text, per-core series labelled
//! `worker`) and `GET /stats` (the same as JSON), read from the workers' counters
//! without locks or stalling them, from the AF_XDP sockets' kernel counters, and from
//! the steering programs' maps.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use control::bgp::speaker::{self, NeighborStatus, Query, Reply};
use control::bgp::wire::Family;
use control::engine::View;
use fastpath::counters::{CoreCounters, DropReason, BATCH_BUCKETS};
use fastpath::snapshot::SnapshotCell;
use fastpath::steer::Steering;
use fastpath::worker::{xsk_stats, XskStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

/// One worker as the endpoint sees it.
#[derive(Debug)]
pub struct WorkerHandle {
    pub id: usize,
    pub core: Option<usize>,
    pub counters: Arc<CoreCounters>,
    /// Its sockets, in port order.
    pub sockets: Vec<RawFd>,
}

/// Everything the endpoint reads.
#[derive(Debug)]
pub struct Sources {
    pub node: String,
    pub ports: Vec<String>,
    pub workers: Vec<WorkerHandle>,
    pub cell: Arc<SnapshotCell>,
    pub steering: Arc<Mutex<Vec<Steering>>>,
    /// The BGP speaker, when it runs.
    pub bgp: Option<speaker::Handle>,
    /// What the control loop last read from the kernel and published.
    pub control: Arc<View>,
    /// The service proxy's tables.
    pub proxy: Arc<control::services::Proxy>,
}

#[derive(Debug, Serialize)]
pub struct NeighbourReport {
    pub addr: std::net::IpAddr,
    pub mac: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub node: String,
    /// The newest published snapshot generation.
    pub generation: u64,
    /// Routes learned by BGP in it.
    pub learned_routes: usize,
    pub workers: Vec<WorkerReport>,
    pub ports: Vec<PortReport>,
    /// The uplink's resolved neighbours, as the fastpath forwards to them.
    pub neighbours: Vec<NeighbourReport>,
    /// Neighbour MACs and port MTUs changed by the kernel's announcements.
    pub kernel_events: u64,
    /// Whole neighbour table reads.
    pub kernel_dumps: u64,
    pub conntrack: crate::services::ConntrackReport,
    /// Every service port with its backends and their counters (what `/services`
    /// and `xroute services` show).
    pub services: Vec<crate::services::ServicePortReport>,
}

#[derive(Debug, Serialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub core: Option<usize>,
    /// The snapshot generation the worker last ran a batch against.
    pub generation: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub punts: u64,
    pub replies: u64,
    pub icmp_errors: u64,
    /// ICMP errors the rate limit held back.
    pub icmp_suppressed: u64,
    pub kicks: u64,
    /// Fill ring wakeups.
    pub fill_kicks: u64,
    pub tx_errors: u64,
    /// Packets the service stage translated, flows it set up, RSTs it sent.
    pub nat_packets: u64,
    pub nat_new_flows: u64,
    pub resets: u64,
    /// How long the worker took to decide a batch, in nanoseconds: quantiles over
    /// every batch since start (an HDR histogram of the worker's latency buckets).
    pub batch_ns: BatchLatency,
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Batches by size: 1, 2–3, 4–7, 8–15, 16–31, 32–63, 64+.
    pub batches: [u64; BATCH_BUCKETS],
    /// The kernel's counters of this worker's socket on each port.
    pub sockets: Vec<SocketReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct BatchLatency {
    pub batches: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Quantiles of a worker's batch time buckets ([`fastpath::counters::latency_bucket`]),
/// each bucket counted at its lower bound.
fn batch_latency(buckets: &[u64]) -> BatchLatency {
    let Ok(mut h) = hdrhistogram::Histogram::<u64>::new(2) else {
        return BatchLatency::default();
    };
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 {
            let _ = h.record_n(fastpath::counters::latency_bucket_floor(i), n);
        }
    }
    BatchLatency {
        batches: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

#[derive(Debug, Serialize)]
pub struct SocketReport {
    pub port: String,
    #[serde(flatten)]
    pub kernel: XskStats,
}

#[derive(Debug, Serialize)]
pub struct PortReport {
    pub port: String,
    /// Whether the steering program runs natively (else generic XDP).
    pub native_xdp: bool,
    /// The MTU the snapshot holds for the port (followed from link changes).
    pub mtu: u16,
    pub steered_to_fastpath: u64,
    pub passed_to_kernel: u64,
}

const BATCH_LABELS: [&str; BATCH_BUCKETS] = ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"];

impl Sources {
    pub fn report(&self) -> Report {
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let v = w.counters.read();
                let sockets = w
                    .sockets
                    .iter()
                    .zip(&self.ports)
                    .map(|(&fd, port)| SocketReport {
                        port: port.clone(),
                        kernel: xsk_stats(fd).unwrap_or_default(),
                    })
                    .collect();
                WorkerReport {
                    worker: w.id,
                    core: w.core,
                    generation: v.generation,
                    rx_packets: v.rx_packets,
                    rx_bytes: v.rx_bytes,
                    tx_packets: v.tx_packets,
                    tx_bytes: v.tx_bytes,
                    punts: v.punts,
                    replies: v.replies,
                    icmp_errors: v.icmp_errors,
                    icmp_suppressed: v.icmp_suppressed,
                    kicks: v.kicks,
                    fill_kicks: v.fill_kicks,
                    tx_errors: v.tx_errors,
                    nat_packets: v.nat_packets,
                    nat_new_flows: v.nat_new_flows,
                    resets: v.resets,
                    batch_ns: batch_latency(&v.batch_ns),
                    drops: DropReason::ALL
                        .iter()
                        .map(|r| (r.name(), v.drops[*r as usize]))
                        .collect(),
                    batches: v.batches,
                    sockets,
                }
            })
            .collect();
        let snapshot = self.cell.load();
        let ports = match self.steering.lock() {
            Ok(steering) => steering
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let st = s.stats().unwrap_or_default();
                    PortReport {
                        port: s.interface().to_string(),
                        native_xdp: s.native(),
                        mtu: snapshot.ports.get(i).map_or(0, |p| p.mtu),
                        steered_to_fastpath: st.redirected,
                        passed_to_kernel: st.passed,
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let neighbours = match self.control.neighbours.lock() {
            Ok(n) => n
                .iter()
                .map(|(addr, m)| NeighbourReport {
                    addr: *addr,
                    mac: format!(
                        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    ),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Report {
            node: self.node.clone(),
            generation: snapshot.generation(),
            learned_routes: self
                .control
                .learned_in_snapshot
                .load(std::sync::atomic::Ordering::Relaxed),
            workers,
            ports,
            neighbours,
            kernel_events: self
                .control
                .events
                .load(std::sync::atomic::Ordering::Relaxed),
            kernel_dumps: self
                .control
                .dumps
                .load(std::sync::atomic::Ordering::Relaxed),
            conntrack: crate::services::conntrack_summary(&self.proxy),
            services: crate::services::services(&self.cell),
        }
    }
}

/// Encodes a [`Report`] taken at scrape time.
#[derive(Debug)]
struct Scrape(Arc<Sources>);

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&'static str, String)>, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = self.0.report();
        let per_worker =
            |f: &dyn Fn(&WorkerReport) -> u64| -> Vec<(Vec<(&'static str, String)>, u64)> {
                r.workers
                    .iter()
                    .map(|w| (vec![("worker", w.worker.to_string())], f(w)))
                    .collect()
            };
        counter(
            &mut enc,
            "xroute_rx_packets",
            "Frames received by the worker.",
            &per_worker(&|w| w.rx_packets),
        )?;
        counter(
            &mut enc,
            "xroute_rx_bytes",
            "Bytes received by the worker.",
            &per_worker(&|w| w.rx_bytes),
        )?;
        counter(
            &mut enc,
            "xroute_tx_packets",
            "Frames queued for transmission.",
            &per_worker(&|w| w.tx_packets),
        )?;
        counter(
            &mut enc,
            "xroute_tx_bytes",
            "Bytes queued for transmission.",
            &per_worker(&|w| w.tx_bytes),
        )?;
        counter(
            &mut enc,
            "xroute_punts",
            "Frames handed to the kernel through the host port.",
            &per_worker(&|w| w.punts),
        )?;
        counter(
            &mut enc,
            "xroute_replies",
            "ARP, neighbour advertisement and echo replies sent by the fastpath.",
            &per_worker(&|w| w.replies),
        )?;
        counter(
            &mut enc,
            "xroute_icmp_errors",
            "ICMP errors sent by the fastpath.",
            &per_worker(&|w| w.icmp_errors),
        )?;
        counter(
            &mut enc,
            "xroute_icmp_errors_suppressed",
            "ICMP errors not sent because the worker's rate limit was spent (--icmp-error-rate).",
            &per_worker(&|w| w.icmp_suppressed),
        )?;
        counter(
            &mut enc,
            "xroute_kicks",
            "Transmit ring kicks (sendto).",
            &per_worker(&|w| w.kicks),
        )?;
        counter(
            &mut enc,
            "xroute_fill_kicks",
            "Fill ring wakeups (the kernel asked for one with need_wakeup).",
            &per_worker(&|w| w.fill_kicks),
        )?;
        counter(
            &mut enc,
            "xroute_tx_errors",
            "Transmit kicks the kernel refused.",
            &per_worker(&|w| w.tx_errors),
        )?;
        counter(
            &mut enc,
            "xroute_nat_packets",
            "Packets the service stage translated.",
            &per_worker(&|w| w.nat_packets),
        )?;
        counter(
            &mut enc,
            "xroute_nat_new_flows",
            "Flows through services the worker set up.",
            &per_worker(&|w| w.nat_new_flows),
        )?;
        counter(
            &mut enc,
            "xroute_tcp_resets",
            "TCP RSTs the fastpath sent (services without endpoints, flows of removed backends).",
            &per_worker(&|w| w.resets),
        )?;
        let latency: Vec<_> = r
            .workers
            .iter()
            .flat_map(|w| {
                let b = &w.batch_ns;
                [
                    ("0.5", b.p50),
                    ("0.9", b.p90),
                    ("0.99", b.p99),
                    ("0.999", b.p999),
                    ("1", b.max),
                ]
                .into_iter()
                .map(move |(q, v)| {
                    (
                        vec![
                            ("worker", w.worker.to_string()),
                            ("quantile", q.to_string()),
                        ],
                        v as i64,
                    )
                })
            })
            .collect();
        gauge(
            &mut enc,
            "xroute_batch_latency_nanoseconds",
            "Time a worker took to decide a batch, quantiles since start.",
            &latency,
        )?;
        let ct = &r.conntrack;
        let fam = |v4: usize, v6: usize| {
            vec![
                (vec![("family", "ipv4".to_string())], v4 as i64),
                (vec![("family", "ipv6".to_string())], v6 as i64),
            ]
        };
        gauge(
            &mut enc,
            "xroute_conntrack_entries",
            "Live connection tracking entries at the last sweep (two per flow).",
            &fam(ct.entries_v4, ct.entries_v6),
        )?;
        gauge(
            &mut enc,
            "xroute_conntrack_capacity",
            "Connection tracking slots (fixed at start, --conntrack-max).",
            &fam(ct.capacity_v4, ct.capacity_v6),
        )?;
        counter(
            &mut enc,
            "xroute_conntrack_evictions",
            "Live entries overwritten because their window of the table was full.",
            &[(vec![], ct.evictions)],
        )?;
        counter(
            &mut enc,
            "xroute_conntrack_insert_failures",
            "Connection tracking inserts refused.",
            &[(vec![], ct.insert_failures)],
        )?;
        counter(
            &mut enc,
            "xroute_fragments_evictions",
            "Fragmented datagrams' translations overwritten because their window was full.",
            &[(vec![], ct.fragment_evictions)],
        )?;
        counter(
            &mut enc,
            "xroute_fragments_insert_failures",
            "Fragmented datagrams' translations not kept (every slot of the window busy).",
            &[(vec![], ct.fragment_insert_failures)],
        )?;
        let services = crate::services::services(&self.0.cell);
        let label = |p: &crate::services::ServicePortReport| {
            vec![
                ("service", p.service.clone()),
                ("port", p.port_name.clone()),
                ("protocol", p.protocol.clone()),
            ]
        };
        let per_backend = |f: &dyn Fn(&crate::services::BackendReport) -> u64| {
            services
                .iter()
                .flat_map(|p| {
                    p.backends.iter().map(move |b| {
                        let mut l = label(p);
                        l.push(("backend", SocketAddr::new(b.addr, b.port).to_string()));
                        (l, f(b))
                    })
                })
                .collect::<Vec<_>>()
        };
        counter(
            &mut enc,
            "xroute_service_backend_packets",
            "Packets through a service port to or from one of its backends.",
            &per_backend(&|b| b.packets),
        )?;
        counter(
            &mut enc,
            "xroute_service_backend_bytes",
            "Bytes through a service port to or from one of its backends.",
            &per_backend(&|b| b.bytes),
        )?;
        counter(
            &mut enc,
            "xroute_service_backend_flows",
            "Flows a backend of a service port was given.",
            &per_backend(&|b| b.flows),
        )?;
        let drops: Vec<_> = services
            .iter()
            .flat_map(|p| {
                p.drops.iter().map(move |(reason, &n)| {
                    let mut l = label(p);
                    l.push(("reason", reason.clone()));
                    (l, n)
                })
            })
            .collect();
        counter(
            &mut enc,
            "xroute_service_drops",
            "Packets a service port dropped or refused, by reason.",
            &drops,
        )?;
        let drops: Vec<_> = r
            .workers
            .iter()
            .flat_map(|w| {
                w.drops.iter().map(move |(reason, &n)| {
                    (
                        vec![
                            ("worker", w.worker.to_string()),
                            ("reason", reason.to_string()),
                        ],
                        n,
                    )
                })
            })
            .collect();
        counter(
            &mut enc,
            "xroute_drops",
            "Frames dropped, by reason.",
            &drops,
        )?;
        let batches: Vec<_> = r
            .workers
            .iter()
            .flat_map(|w| {
                w.batches.iter().zip(BATCH_LABELS).map(move |(&n, size)| {
                    (
                        vec![("worker", w.worker.to_string()), ("size", size.to_string())],
                        n,
                    )
                })
            })
            .collect();
        counter(
            &mut enc,
            "xroute_batches",
            "Receive batches, by size.",
            &batches,
        )?;
        let generations: Vec<_> = r
            .workers
            .iter()
            .map(|w| (vec![("worker", w.worker.to_string())], w.generation as i64))
            .collect();
        gauge(
            &mut enc,
            "xroute_worker_generation",
            "The snapshot generation the worker runs.",
            &generations,
        )?;
        gauge(
            &mut enc,
            "xroute_snapshot_generation",
            "The newest published snapshot generation.",
            &[(vec![], r.generation as i64)],
        )?;
        type SocketField = fn(&SocketReport) -> u64;
        let socket_fields: [(&str, &str, SocketField); 6] = [
            (
                "xroute_xsk_rx_dropped",
                "Frames the kernel dropped for the socket (rx_dropped).",
                |s| s.kernel.rx_dropped,
            ),
            (
                "xroute_xsk_rx_ring_full",
                "Frames dropped because the receive ring was full.",
                |s| s.kernel.rx_ring_full,
            ),
            (
                "xroute_xsk_rx_fill_ring_empty",
                "Times the fill ring was empty.",
                |s| s.kernel.rx_fill_ring_empty_descs,
            ),
            (
                "xroute_xsk_rx_invalid_descs",
                "Invalid receive descriptors.",
                |s| s.kernel.rx_invalid_descs,
            ),
            (
                "xroute_xsk_tx_invalid_descs",
                "Invalid transmit descriptors.",
                |s| s.kernel.tx_invalid_descs,
            ),
            (
                "xroute_xsk_tx_ring_empty",
                "Times the transmit ring was empty on a kick.",
                |s| s.kernel.tx_ring_empty_descs,
            ),
        ];
        for (name, help, f) in socket_fields {
            let series: Vec<_> = r
                .workers
                .iter()
                .flat_map(|w| {
                    w.sockets.iter().map(move |s| {
                        (
                            vec![("worker", w.worker.to_string()), ("port", s.port.clone())],
                            f(s),
                        )
                    })
                })
                .collect();
            counter(&mut enc, name, help, &series)?;
        }
        let steered: Vec<_> = r
            .ports
            .iter()
            .map(|p| (vec![("port", p.port.clone())], p.steered_to_fastpath))
            .collect();
        counter(
            &mut enc,
            "xroute_steer_to_fastpath",
            "Frames the XDP program sent to the fastpath.",
            &steered,
        )?;
        let passed: Vec<_> = r
            .ports
            .iter()
            .map(|p| (vec![("port", p.port.clone())], p.passed_to_kernel))
            .collect();
        counter(
            &mut enc,
            "xroute_steer_to_kernel",
            "Frames the XDP program passed to the kernel.",
            &passed,
        )?;
        Ok(())
    }
}

/// BGP peers' series, from the speaker's answer at scrape time.
#[derive(Debug)]
struct BgpScrape(Vec<NeighborStatus>);

impl Collector for BgpScrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = |n: &NeighborStatus| {
            vec![
                ("peer", n.address.to_string()),
                ("asn", n.asn.to_string()),
                (
                    "type",
                    if n.internal { "internal" } else { "external" }.to_string(),
                ),
            ]
        };
        let info: Vec<_> = self
            .0
            .iter()
            .map(|n| {
                let mut l = labels(n);
                l.push(("state", n.state.clone()));
                (l, 1)
            })
            .collect();
        gauge(
            &mut enc,
            "bgp_peer_info",
            "BGP peers, with their state as a label (kube-router's series).",
            &info,
        )?;
        let up: Vec<_> = self
            .0
            .iter()
            .map(|n| (labels(n), i64::from(n.state == "established")))
            .collect();
        gauge(
            &mut enc,
            "bgp_peer_up",
            "1 while the session is established.",
            &up,
        )?;
        let per = |f: &dyn Fn(&NeighborStatus) -> u64| -> Vec<(Vec<(&'static str, String)>, u64)> {
            self.0.iter().map(|n| (labels(n), f(n))).collect()
        };
        let per_gauge =
            |f: &dyn Fn(&NeighborStatus) -> usize| -> Vec<(Vec<(&'static str, String)>, i64)> {
                self.0.iter().map(|n| (labels(n), f(n) as i64)).collect()
            };
        counter(
            &mut enc,
            "controller_bgp_advertisements_received",
            "BGP UPDATE messages received from the peer.",
            &per(&|n| n.updates_received),
        )?;
        counter(
            &mut enc,
            "controller_bgp_advertisements_sent",
            "BGP UPDATE messages sent to the peer.",
            &per(&|n| n.updates_sent),
        )?;
        gauge(
            &mut enc,
            "bgp_peer_prefixes_received",
            "Prefixes the peer announces (accepted or refused by import policy).",
            &per_gauge(&|n| n.received),
        )?;
        gauge(
            &mut enc,
            "bgp_peer_prefixes_accepted",
            "Prefixes from the peer in the Loc-RIB.",
            &per_gauge(&|n| n.accepted),
        )?;
        gauge(
            &mut enc,
            "bgp_peer_prefixes_advertised",
            "Prefixes advertised to the peer (its Adj-RIB-Out).",
            &per_gauge(&|n| n.advertised),
        )?;
        Ok(())
    }
}

async fn metrics(State(s): State<Arc<Sources>>) -> impl IntoResponse {
    let mut registry = Registry::default();
    if let Some(h) = &s.bgp {
        if let Some(Reply::Neighbors(n)) = h.query(Query::Neighbors).await {
            registry.register_collector(Box::new(BgpScrape(n)));
        }
    }
    registry.register_collector(Box::new(Scrape(s)));
    let mut body = String::new();
    let result = prometheus_client::encoding::text::encode(&mut body, &registry);
    match result {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding failed",
        )
            .into_response(),
    }
}

async fn stats(State(s): State<Arc<Sources>>) -> impl IntoResponse {
    axum::Json(s.report())
}

async fn bgp_query(s: &Sources, q: Query) -> axum::response::Response {
    let Some(h) = &s.bgp else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "BGP is not running on this agent (--run-router=false)\n",
        )
            .into_response();
    };
    match h.query(q).await {
        Some(r) => axum::Json(r).into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the BGP speaker stopped\n",
        )
            .into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct FamilyParam {
    family: Option<String>,
}

async fn bgp_rib(
    State(s): State<Arc<Sources>>,
    axum::extract::Query(p): axum::extract::Query<FamilyParam>,
) -> axum::response::Response {
    let f = match p.family.as_deref().unwrap_or("ipv4") {
        "ipv4" => Family::Ipv4,
        "ipv6" => Family::Ipv6,
        other => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("family {other}: ipv4 or ipv6\n"),
            )
                .into_response()
        }
    };
    bgp_query(&s, Query::Rib(f)).await
}

#[derive(Debug, serde::Deserialize)]
struct ConntrackParams {
    service: Option<String>,
    limit: Option<usize>,
}

async fn conntrack(
    State(s): State<Arc<Sources>>,
    axum::extract::Query(p): axum::extract::Query<ConntrackParams>,
) -> axum::response::Response {
    let (service, node_port) = match p.service.as_deref().map(crate::services::parse_service) {
        None => (None, None),
        Some(Ok(x)) => x,
        Some(Err(e)) => {
            return (axum::http::StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    };
    let limit = p.limit.unwrap_or(1000);
    let proxy = Arc::clone(&s.proxy);
    // A walk of the whole table: off the endpoint's threads.
    match tokio::task::spawn_blocking(move || {
        crate::services::flows(&proxy, service, node_port, limit)
    })
    .await
    {
        Ok(f) => axum::Json(f).into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the table walk failed\n",
        )
            .into_response(),
    }
}

/// The endpoint's routes.
pub fn router(sources: Arc<Sources>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route(
            "/bgp/global",
            get(|State(s): State<Arc<Sources>>| async move { bgp_query(&s, Query::Global).await }),
        )
        .route(
            "/bgp/neighbors",
            get(|State(s): State<Arc<Sources>>| async move {
                bgp_query(&s, Query::Neighbors).await
            }),
        )
        .route("/bgp/rib", get(bgp_rib))
        .route(
            "/services",
            get(|State(s): State<Arc<Sources>>| async move {
                axum::Json(crate::services::services(&s.cell))
            }),
        )
        .route("/conntrack", get(conntrack))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(sources)
}
