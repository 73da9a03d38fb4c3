//! The tables against a plain reference model: a list of routes scanned in full, the
//! longest prefix that contains the address wins.

use lpm::{Address, Lpm, LpmBuilder, NextHop, Prefix, Prefix4, Prefix6, RouteChange};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The reference: every route, scanned.
#[derive(Clone, Default, Debug)]
struct Model<A: Address>(BTreeMap<Prefix<A>, NextHop>);

impl<A: Address> Model<A> {
    fn lookup(&self, addr: A) -> Option<NextHop> {
        self.0
            .iter()
            .filter(|(p, _)| p.contains(addr))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, v)| *v)
    }
    fn apply(&mut self, changes: &[RouteChange<A>]) {
        for c in changes {
            match *c {
                RouteChange::Insert(p, v) => {
                    self.0.insert(p, v);
                }
                RouteChange::Remove(p) => {
                    self.0.remove(&p);
                }
            }
        }
    }
}

fn nh(id: u16) -> NextHop {
    NextHop::new(id).unwrap()
}

/// Addresses where answers change: each route's first and last address and their
/// neighbours, plus the extra ones given.
fn probes<A: Address>(model: &Model<A>, extra: &[A], step: impl Fn(A, bool) -> A) -> Vec<A> {
    let mut out = extra.to_vec();
    for p in model.0.keys() {
        out.extend([
            p.addr(),
            p.last(),
            step(p.addr(), false),
            step(p.last(), true),
        ]);
    }
    out
}

fn step4(a: u32, up: bool) -> u32 {
    if up {
        a.wrapping_add(1)
    } else {
        a.wrapping_sub(1)
    }
}
fn step6(a: u128, up: bool) -> u128 {
    if up {
        a.wrapping_add(1)
    } else {
        a.wrapping_sub(1)
    }
}

/// Every probe answers as the model does, one at a time and in batches.
fn check<A: Address>(table: &Lpm<A>, model: &Model<A>, probes: &[A]) -> Result<(), TestCaseError> {
    let mut batch = vec![None; probes.len()];
    table.lookup_batch(probes, &mut batch);
    for (&a, &b) in probes.iter().zip(&batch) {
        let want = model.lookup(a);
        prop_assert_eq!(
            table.lookup(a),
            want,
            "lookup({:?}) with routes {:?}",
            a,
            model.0
        );
        prop_assert_eq!(b, want, "lookup_batch at {:?}", a);
    }
    prop_assert_eq!(table.len(), model.0.len());
    Ok(())
}

// Addresses concentrated on a few direct slots and on the slot boundaries, so that
// prefixes nest, overlap and straddle the direct-pointing level.
fn addr4() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => (prop::sample::select(vec![0u32, 1, 0x2_a0c1, 0x3_ffff]), any::<u16>())
            .prop_map(|(slot, low)| (slot << 14) | u32::from(low >> 2)),
        1 => any::<u32>(),
    ]
}
fn route4() -> impl Strategy<Value = (Prefix4, NextHop)> {
    (addr4(), 0u8..=32, 0u16..6).prop_map(|(a, l, v)| (Prefix::new_masked(a, l), nh(v)))
}
fn addr6() -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => (prop::sample::select(vec![0u128, 0x2001, 0xffff]), any::<u64>(), any::<u64>())
            .prop_map(|(slot, hi, lo)| (slot << 112) | (u128::from(hi >> 16) << 64) | u128::from(lo)),
        1 => any::<u128>(),
    ]
}
fn route6() -> impl Strategy<Value = (Prefix6, NextHop)> {
    (
        addr6(),
        prop_oneof![0u8..=128, 40u8..=64, 120u8..=128],
        0u16..6,
    )
        .prop_map(|(a, l, v)| (Prefix::new_masked(a, l), nh(v)))
}
fn change<A: Address>(
    route: impl Strategy<Value = (Prefix<A>, NextHop)>,
) -> impl Strategy<Value = RouteChange<A>> {
    (route, any::<bool>()).prop_map(|((p, v), ins)| {
        if ins {
            RouteChange::Insert(p, v)
        } else {
            RouteChange::Remove(p)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn ipv4_build_matches_model(routes in prop::collection::vec(route4(), 0..80),
                                extra in prop::collection::vec(addr4(), 0..40)) {
        let b = LpmBuilder::from_routes(routes.iter().copied());
        let model = Model(routes.into_iter().collect());
        check(&b.table(), &model, &probes(&model, &extra, step4))?;
    }

    #[test]
    fn ipv6_build_matches_model(routes in prop::collection::vec(route6(), 0..80),
                                extra in prop::collection::vec(addr6(), 0..40)) {
        let b = LpmBuilder::from_routes(routes.iter().copied());
        let model = Model(routes.into_iter().collect());
        check(&b.table(), &model, &probes(&model, &extra, step6))?;
    }

    #[test]
    fn ipv4_updates_match_model(
        initial in prop::collection::vec(route4(), 0..60),
        batches in prop::collection::vec(prop::collection::vec(change(route4()), 1..20), 1..6),
        extra in prop::collection::vec(addr4(), 0..20),
    ) {
        updates_match_model(initial, batches, &extra, step4)?;
    }

    #[test]
    fn ipv6_updates_match_model(
        initial in prop::collection::vec(route6(), 0..60),
        batches in prop::collection::vec(prop::collection::vec(change(route6()), 1..20), 1..6),
        extra in prop::collection::vec(addr6(), 0..20),
    ) {
        updates_match_model(initial, batches, &extra, step6)?;
    }
}

/// Applies `batches` after building from `initial`: after each, the new table answers as
/// the model does, and the table published before the batch still answers as it did.
fn updates_match_model<A: Address>(
    initial: Vec<(Prefix<A>, NextHop)>,
    batches: Vec<Vec<RouteChange<A>>>,
    extra: &[A],
    step: fn(A, bool) -> A,
) -> Result<(), TestCaseError> {
    let mut b = LpmBuilder::from_routes(initial.iter().copied());
    let mut model = Model(initial.into_iter().collect());
    for mut batch in batches {
        let before = (b.table(), model.clone());
        // Removals also hit routes that exist, not only random ones.
        if let Some((&p, _)) = model.0.iter().next() {
            batch.push(RouteChange::Remove(p));
        }
        // Every other batch goes in change by change through `stage`, which answers
        // with the route each change replaced, and `commit`.
        let t = if batch.len() % 2 == 0 {
            b.apply(&batch)
        } else {
            let mut m = model.clone();
            for c in &batch {
                let (p, v) = match *c {
                    RouteChange::Insert(p, v) => (p, Some(v)),
                    RouteChange::Remove(p) => (p, None),
                };
                prop_assert_eq!(b.stage(p, v), m.0.get(&p).copied());
                prop_assert_eq!(b.get(&p), v);
                m.apply(std::slice::from_ref(c));
            }
            b.commit()
        };
        model.apply(&batch);
        prop_assert_eq!(b.len(), model.0.len());
        prop_assert_eq!(
            b.routes().collect::<Vec<_>>(),
            model.0.iter().map(|(p, v)| (*p, *v)).collect::<Vec<_>>()
        );
        check(&t, &model, &probes(&model, extra, step))?;
        check(&before.0, &before.1, &probes(&before.1, extra, step))?;
    }
    Ok(())
}

fn p4(s: &str) -> Prefix4 {
    s.parse().unwrap()
}
fn a4(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}
fn a6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
}

#[test]
fn empty_table_misses_everything() {
    let t = LpmBuilder::<u32>::new().table();
    assert!(t.is_empty());
    for a in [0, 1, u32::MAX, a4("10.0.0.1")] {
        assert_eq!(t.lookup(a), None);
    }
    let t = LpmBuilder::<u128>::from_routes([]).table();
    assert_eq!(t.lookup(u128::MAX), None);
}

#[test]
fn default_route_and_host_routes() {
    let mut b = LpmBuilder::from_routes([(p4("0.0.0.0/0"), nh(7))]);
    assert_eq!(b.table().lookup(0), Some(nh(7)));
    assert_eq!(b.table().lookup(u32::MAX), Some(nh(7)));
    let t = b.apply(&[
        RouteChange::Insert(p4("255.255.255.255/32"), nh(1)),
        RouteChange::Insert(p4("0.0.0.0/32"), nh(2)),
        RouteChange::Insert(p4("10.1.2.3/32"), nh(3)),
    ]);
    assert_eq!(t.lookup(u32::MAX), Some(nh(1)));
    assert_eq!(t.lookup(u32::MAX - 1), Some(nh(7)));
    assert_eq!(t.lookup(0), Some(nh(2)));
    assert_eq!(t.lookup(1), Some(nh(7)));
    assert_eq!(t.lookup(a4("10.1.2.3")), Some(nh(3)));
    assert_eq!(t.lookup(a4("10.1.2.2")), Some(nh(7)));
    assert_eq!(t.lookup(a4("10.1.2.4")), Some(nh(7)));
    let t = b.apply(&[RouteChange::Remove(p4("0.0.0.0/0"))]);
    assert_eq!(t.lookup(a4("10.1.2.3")), Some(nh(3)));
    assert_eq!(t.lookup(a4("10.1.2.4")), None);
    assert_eq!(t.lookup(u32::MAX), Some(nh(1)));
}

#[test]
fn ipv6_default_and_128() {
    let mut b = LpmBuilder::from_routes([("::/0".parse::<Prefix6>().unwrap(), nh(1))]);
    let t = b.apply(&[
        RouteChange::Insert("2001:db8::1/128".parse().unwrap(), nh(2)),
        RouteChange::Insert(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
                .parse()
                .unwrap(),
            nh(3),
        ),
        RouteChange::Insert("2001:db8::/32".parse().unwrap(), nh(4)),
    ]);
    assert_eq!(t.lookup(a6("2001:db8::1")), Some(nh(2)));
    assert_eq!(t.lookup(a6("2001:db8::2")), Some(nh(4)));
    assert_eq!(t.lookup(a6("2001:db8::")), Some(nh(4)));
    assert_eq!(t.lookup(u128::MAX), Some(nh(3)));
    assert_eq!(t.lookup(u128::MAX - 1), Some(nh(1)));
    assert_eq!(t.lookup(0), Some(nh(1)));
}

#[test]
fn nested_prefixes_and_removing_the_cover() {
    let mut b = LpmBuilder::from_routes([
        (p4("10.0.0.0/8"), nh(1)),
        (p4("10.1.0.0/16"), nh(2)),
        (p4("10.1.1.0/24"), nh(3)),
        (p4("10.1.1.128/25"), nh(4)),
        (p4("10.1.1.129/32"), nh(5)),
    ]);
    let t = b.table();
    assert_eq!(t.lookup(a4("10.2.0.0")), Some(nh(1)));
    assert_eq!(t.lookup(a4("10.1.2.0")), Some(nh(2)));
    assert_eq!(t.lookup(a4("10.1.1.1")), Some(nh(3)));
    assert_eq!(t.lookup(a4("10.1.1.200")), Some(nh(4)));
    assert_eq!(t.lookup(a4("10.1.1.129")), Some(nh(5)));
    // Remove the covering /8 and the /24 between /16 and /25.
    let t = b.apply(&[
        RouteChange::Remove(p4("10.0.0.0/8")),
        RouteChange::Remove(p4("10.1.1.0/24")),
    ]);
    assert_eq!(t.lookup(a4("10.2.0.0")), None);
    assert_eq!(t.lookup(a4("10.1.1.1")), Some(nh(2)));
    assert_eq!(t.lookup(a4("10.1.1.200")), Some(nh(4)));
    assert_eq!(t.lookup(a4("10.1.1.129")), Some(nh(5)));
    // Replacing a next hop is an insert of the same prefix.
    let t = b.apply(&[RouteChange::Insert(p4("10.1.1.128/25"), nh(9))]);
    assert_eq!(t.lookup(a4("10.1.1.200")), Some(nh(9)));
    assert_eq!(b.get(&p4("10.1.1.128/25")), Some(nh(9)));
    assert_eq!(b.len(), 3);
}

#[test]
fn a_batch_that_changes_nothing_returns_the_same_table() {
    let mut b = LpmBuilder::from_routes([(p4("10.0.0.0/8"), nh(1))]);
    let t0 = b.table();
    let t1 = b.apply(&[
        RouteChange::Remove(p4("11.0.0.0/8")),
        RouteChange::Insert(p4("10.0.0.0/8"), nh(1)),
    ]);
    assert!(std::sync::Arc::ptr_eq(&t0, &t1));
}

#[test]
fn largest_next_hop_id() {
    assert_eq!(NextHop::new(NextHop::MAX).unwrap().id(), NextHop::MAX);
    assert!(NextHop::new(u16::MAX).is_none());
    assert_eq!(std::mem::size_of::<Option<NextHop>>(), 2);
    let b = LpmBuilder::from_routes([
        (p4("10.0.0.0/8"), nh(NextHop::MAX)),
        (p4("10.1.0.0/24"), nh(0)),
    ]);
    assert_eq!(b.table().lookup(a4("10.9.9.9")).unwrap().id(), NextHop::MAX);
    assert_eq!(b.table().lookup(a4("10.1.0.9")).unwrap().index(), 0);
}

#[test]
fn churn_reuses_freed_blocks() {
    // The same routes added and removed again and again: the arrays must not keep growing.
    let routes: Vec<_> = (0..2000u32)
        .map(|i| {
            (
                Prefix::new_masked(i.wrapping_mul(0x9e37_79b9), 20 + (i % 13) as u8),
                nh((i % 5) as u16),
            )
        })
        .collect();
    let mut b = LpmBuilder::from_routes(routes.iter().copied());
    let base = b.table().node_count();
    let removes: Vec<_> = routes
        .iter()
        .step_by(3)
        .map(|(p, _)| RouteChange::Remove(*p))
        .collect();
    let inserts: Vec<_> = routes
        .iter()
        .step_by(3)
        .map(|(p, v)| RouteChange::Insert(*p, *v))
        .collect();
    for _ in 0..50 {
        b.apply(&removes);
        b.apply(&inserts);
    }
    let after = b.table().node_count();
    assert!(
        after.0 <= base.0 * 2 && after.1 <= base.1 * 2,
        "grew from {base:?} to {after:?}"
    );
    let model = Model(routes.into_iter().collect());
    for (p, _) in model.0.iter().take(500) {
        assert_eq!(b.table().lookup(p.addr()), model.lookup(p.addr()));
    }
}
