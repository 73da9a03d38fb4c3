//! BGP: the node's speaker. So far the Loc-RIB and its decision process ([`rib`]) and
//! kube-router's node annotations ([`annotations`]);
//! the session, wire format, policy and kube-router's peering model come next.

pub mod annotations;
pub mod rib;
