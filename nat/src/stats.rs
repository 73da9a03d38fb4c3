//! Counters of every service port and of each of its backends, shared by the workers
//! (relaxed atomic additions: no lock, and a line is contended only when two workers
//! count the same backend at the same moment), kept across rebuilds of the frontends
//! so that a new snapshot does not reset them.

use crate::service::{Backend, Protocol};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A backend's traffic.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Flows it was given.
    pub flows: AtomicU64,
}

impl BackendStats {
    #[inline]
    pub fn count(&self, bytes: usize, new_flow: bool) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        if new_flow {
            self.flows.fetch_add(1, Relaxed);
        }
    }
}

/// Why a service port dropped or refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortDrop {
    /// No endpoint at all: rejected (RST, port unreachable).
    NoEndpoints,
    /// None usable here (Local policies).
    NoLocalEndpoint,
    SourceRange,
    ConntrackFull,
    /// A segment that opens no flow and belongs to none.
    Invalid,
    /// A flow of a removed backend (TCP reset).
    BackendGone,
}

impl PortDrop {
    pub const ALL: [PortDrop; 6] = [
        PortDrop::NoEndpoints,
        PortDrop::NoLocalEndpoint,
        PortDrop::SourceRange,
        PortDrop::ConntrackFull,
        PortDrop::Invalid,
        PortDrop::BackendGone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PortDrop::NoEndpoints => "no_endpoints",
            PortDrop::NoLocalEndpoint => "no_local_endpoint",
            PortDrop::SourceRange => "source_range",
            PortDrop::ConntrackFull => "conntrack_full",
            PortDrop::Invalid => "conntrack_invalid",
            PortDrop::BackendGone => "backend_gone",
        }
    }
}

/// A service port's drops by reason.
#[derive(Debug, Default)]
pub struct PortStats {
    pub drops: [AtomicU64; PortDrop::ALL.len()],
}

impl PortStats {
    #[inline]
    pub fn count(&self, why: PortDrop) {
        self.drops[why as usize].fetch_add(1, Relaxed);
    }
}

/// An endpoint of a service port as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub backend: Backend,
    pub local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A service port, for the report: where it is reached and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub id: u32,
    /// `namespace/name`.
    pub service: String,
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Its VIPs and their kinds' names (`ClusterIP`, `ExternalIP`, `LoadBalancer`).
    pub vips: Vec<(IpAddr, &'static str)>,
    pub backends: Vec<BackendInfo>,
}
