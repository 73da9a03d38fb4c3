//! `sessionAffinity: ClientIP`: a client keeps its backend for a frontend until it has
//! been quiet for the service's timeout (kube-proxy's `recent` match, IPVS's
//! persistence). A table of the same kind as connection tracking's, keyed by the
//! client's address and the frontend, each use of it pushing the expiry on.

use crate::conntrack::table::{Inserted, Table};
use crate::service::Backend;
use std::net::IpAddr;

/// Clients and the backends they stick to, both families in one table (IPv4 as
/// IPv4-mapped IPv6).
#[derive(Debug)]
pub struct Affinity {
    table: Table<3, 3>,
}

fn key(client: IpAddr, frontend: u32) -> [u64; 3] {
    let c = u128::from(match client {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    });
    [(c >> 64) as u64, c as u64, u64::from(frontend)]
}

impl Affinity {
    pub fn new(entries: usize) -> Affinity {
        Affinity {
            table: Table::new(entries),
        }
    }

    pub fn memory(&self) -> usize {
        self.table.memory()
    }

    /// The backend `client` sticks to for `frontend`, at second `now`.
    pub fn get(&self, client: IpAddr, frontend: u32, now: u32) -> Option<Backend> {
        let v = self.table.get(&key(client, frontend), now)?;
        let a = (u128::from(v[0]) << 64) | u128::from(v[1]);
        let a = std::net::Ipv6Addr::from(a);
        let addr = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
        Some(Backend {
            addr,
            port: (v[2] >> 32) as u16,
        })
    }

    /// `client` sticks to `backend` for `frontend` until `now + timeout` seconds.
    pub fn put(
        &self,
        client: IpAddr,
        frontend: u32,
        backend: Backend,
        now: u32,
        timeout: u32,
    ) -> Inserted {
        let a = u128::from(match backend.addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        });
        let expires = now.saturating_add(timeout.max(1));
        let value = [
            (a >> 64) as u64,
            a as u64,
            (u64::from(backend.port) << 32) | u64::from(expires),
        ];
        self.table.insert(&key(client, frontend), value, now, true)
    }

    /// Forgets `client`'s backend for `frontend` (the backend went, or affinity was
    /// switched off).
    pub fn forget(&self, client: IpAddr, frontend: u32, now: u32) -> bool {
        self.table.remove(&key(client, frontend), now)
    }

    /// From the control thread: over slots `from..from + count`, drops the expired
    /// entries and those `doomed(frontend, backend)` names (affinity switched off, a
    /// backend removed); returns how many live ones are left.
    pub fn sweep(
        &self,
        from: usize,
        count: usize,
        now: u32,
        mut doomed: impl FnMut(u32, Backend) -> bool,
    ) -> usize {
        self.table.sweep(from, count, now, |e| {
            let a =
                std::net::Ipv6Addr::from((u128::from(e.value[0]) << 64) | u128::from(e.value[1]));
            let addr = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
            doomed(
                e.key[2] as u32,
                Backend {
                    addr,
                    port: (e.value[2] >> 32) as u16,
                },
            )
        })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u32, u8, u32),
        Get(u8, u32),
        Forget(u8, u32),
        Tick(u32),
        /// A sweep dropping the entries of one backend.
        Doom(u8),
    }

    fn client(c: u8) -> IpAddr {
        if c % 2 == 0 {
            IpAddr::from([192, 168, 200, c])
        } else {
            IpAddr::from([0xfd00, 0x200, 0, 0, 0, 0, 0, u16::from(c)])
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u32..4, 0u8..4, 1u32..100).prop_map(|(c, f, b, t)| Op::Put(c, f, b, t)),
            (0u8..12, 0u32..4).prop_map(|(c, f)| Op::Get(c, f)),
            (0u8..12, 0u32..4).prop_map(|(c, f)| Op::Forget(c, f)),
            (1u32..50).prop_map(Op::Tick),
            (0u8..4).prop_map(Op::Doom),
        ]
    }

    proptest! {
        /// Against a map of (client, frontend) to backend and expiry: the same answers.
        #[test]
        fn matches_a_map_with_expiry(ops in proptest::collection::vec(op(), 1..300)) {
            let a = Affinity::new(4096);
            let mut reference: HashMap<(u8, u32), (Backend, u32)> = HashMap::new();
            let mut now = 1u32;
            for op in ops {
                match op {
                    Op::Put(c, f, bk, t) => {
                        let backend = if bk % 2 == 0 {
                            b(2 + bk, 8080 + u16::from(bk))
                        } else {
                            Backend { addr: "fd00:10:244:1::2".parse().unwrap(), port: u16::from(bk) }
                        };
                        prop_assert_eq!(a.put(client(c), f, backend, now, t), Inserted::Stored);
                        reference.insert((c, f), (backend, now + t));
                    }
                    Op::Get(c, f) => {
                        let want = reference.get(&(c, f)).filter(|(_, e)| *e > now).map(|(b, _)| *b);
                        prop_assert_eq!(a.get(client(c), f, now), want);
                    }
                    Op::Forget(c, f) => {
                        let was = reference.remove(&(c, f)).is_some_and(|(_, e)| e > now);
                        prop_assert_eq!(a.forget(client(c), f, now), was);
                    }
                    Op::Tick(d) => now += d,
                    Op::Doom(bk) => {
                        let doomed = |backend: Backend| backend.port == 8080 + u16::from(bk) || backend.port == u16::from(bk);
                        let left = a.sweep(0, a.capacity(), now, |_, backend| doomed(backend));
                        reference.retain(|_, (backend, e)| *e > now && !doomed(*backend));
                        prop_assert_eq!(left, reference.len());
                    }
                }
            }
        }
    }

    fn b(last: u8, port: u16) -> Backend {
        Backend {
            addr: IpAddr::from([10, 244, 1, last]),
            port,
        }
    }

    #[test]
    fn a_client_keeps_its_backend_until_it_has_been_quiet_for_the_timeout() {
        let a = Affinity::new(1024);
        let client = IpAddr::from([192, 168, 200, 10]);
        assert_eq!(a.get(client, 1, 0), None);
        a.put(client, 1, b(2, 8080), 0, 10800);
        assert_eq!(a.get(client, 1, 10799), Some(b(2, 8080)));
        // Per frontend: another service of the same client is its own.
        assert_eq!(a.get(client, 2, 1), None);
        // Each use pushes the expiry on.
        a.put(client, 1, b(2, 8080), 10000, 10800);
        assert_eq!(a.get(client, 1, 20000), Some(b(2, 8080)));
        assert_eq!(a.get(client, 1, 20800), None, "quiet for the timeout: gone");
    }

    #[test]
    fn both_families_and_forgetting() {
        let a = Affinity::new(64);
        let v6: IpAddr = "fd00:200::10".parse().unwrap();
        let backend = Backend {
            addr: "fd00:10:244:1::2".parse().unwrap(),
            port: 80,
        };
        a.put(v6, 9, backend, 5, 60);
        assert_eq!(a.get(v6, 9, 6), Some(backend));
        // The IPv4-mapped form of a different client does not collide.
        assert_eq!(a.get(IpAddr::from([192, 168, 200, 10]), 9, 6), None);
        assert!(a.forget(v6, 9, 6));
        assert_eq!(a.get(v6, 9, 6), None);
    }

    #[test]
    fn a_sweep_drops_the_entries_of_a_removed_backend() {
        let a = Affinity::new(1024);
        for c in 0..50u8 {
            let backend = b(2 + c % 2, 8080);
            a.put(IpAddr::from([192, 168, 200, c]), 1, backend, 0, 100);
        }
        let live = a.sweep(0, a.capacity(), 1, |_, backend| backend == b(3, 8080));
        assert_eq!(live, 25);
        assert_eq!(a.get(IpAddr::from([192, 168, 200, 1]), 1, 1), None);
        assert_eq!(
            a.get(IpAddr::from([192, 168, 200, 2]), 1, 1),
            Some(b(2, 8080))
        );
    }
}
