//! BGP: the node's speaker, with kube-router's peering model.
//!
//! - [`frame`]: message framing with the header checks of RFC 4271 6.1.
//! - [`wire`]: messages and path attributes through netgauze-bgp-pkt, decode (with
//!   RFC 7606 UPDATE error handling) and encode each in a file of its own.
//! - [`fsm`]: the session state machine of RFC 4271 8, events in, actions out.
//! - [`socket`]: listeners and connections, TCP-MD5.
//! - [`session`]: one peer's session task (collisions, timers).
//! - [`rib`]: the Loc-RIB and its decision process with multipath; [`slots`], its
//!   prefix table; [`nexthop`], which paths are eligible by their next hop.
//! - [`speaker`]: the speaker's task, with import and export policy, Adj-RIB-Out,
//!   route reflection, graceful restart and FIB batches in files of their own;
//!   [`northbound`], the status types it answers queries with.
//! - [`annotations`], [`peering`], [`advertise`]: kube-router's node annotations,
//!   flags and peering rules, and what a node originates; [`cluster`], the speaker's
//!   plan from the cluster model and what changes of it tell a running speaker.

pub mod advertise;
pub mod annotations;
pub mod cluster;
pub mod frame;
pub mod fsm;
pub mod nexthop;
pub mod northbound;
pub mod peering;
pub mod rib;
pub mod session;
pub mod slots;
pub mod socket;
pub mod speaker;
pub mod wire;

/// Why the BGP speaker cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No peering can be computed for this node: the annotations' errors.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoPeering(Vec<annotations::AnnotationError>),
    #[error("--router-id `{0}`: an IPv4 address or `generate`")]
    RouterId(String),
    #[error("the node has no IPv4 address on the uplink: give --router-id")]
    NoRouterId,
    #[error("{source}{hint}", hint = if source.kind() == std::io::ErrorKind::AddrInUse { " (is another BGP speaker running? use --bgp-port)" } else { "" })]
    Listen {
        /// Where (the source's message names it too).
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Os(#[from] crate::os::Error),
}
