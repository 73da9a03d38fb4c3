//! BGP: the node's speaker. So far: the Loc-RIB and its decision process ([`rib`]),
//! kube-router's node annotations ([`annotations`]) and its peering rules with its
//! flags' defaults ([`peering`]). The session, the wire format (netgauze-bgp-pkt),
//! policy and the FIB and kernel sync of best routes come next.

pub mod annotations;
pub mod peering;
pub mod rib;
