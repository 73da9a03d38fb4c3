//! BGP: the node's speaker. So far: message framing with the header checks of RFC 4271
//! 6.1 ([`frame`]), the session state machine of RFC 4271 8 without I/O ([`fsm`]), the
//! Loc-RIB and its decision process ([`rib`]), kube-router's
//! node annotations ([`annotations`]) and its peering rules with its flags' defaults
//! ([`peering`]). The session, the wire format (netgauze-bgp-pkt),
//! policy and the FIB and kernel sync of best routes come next.

pub mod annotations;
pub mod frame;
pub mod fsm;
pub mod peering;
pub mod rib;
