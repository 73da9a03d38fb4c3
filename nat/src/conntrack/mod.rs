//! Connection tracking: which backend a flow was given, and how long it keeps it.
//!
//! - [`table`]: the shared table of entries, fixed memory, no lock (its docs say why
//!   that is safe), expiry without a sweep of the whole table.
//! - [`flow`]: tuples and translations packed into entries, the tables of both
//!   families.
//! - [`tcp`]: TCP states and the timeouts of each, with kube-proxy's settings.
//! - [`window`]: TCP sequence windows, for dropping what lies outside them.
//!
//! A flow is two entries, one per direction, each keyed by the tuple its packets
//! carry: the client's packets by (client, VIP), the backend's replies by (backend,
//! client) after translation. Both carry the translation to undo or apply, so a worker
//! that receives either direction rewrites it without asking another.

pub mod flow;
pub mod table;
pub mod tcp;
pub mod window;
