//! Every address sampled from the real RouteViews tables in `shared/data` resolves as the
//! reference does, after the build and after a batch of removals and inserts.
//!
//! The reference here is the scan of the model tests made fast enough for 600k routes:
//! one hash set per prefix length, searched from the longest length down.

use flate2::read::GzDecoder;
use lpm::{text, Address, Lpm, LpmBuilder, NextHop, Prefix, RouteChange};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("XROUTE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    dir.join(name)
}

fn load<A: Address>(name: &str) -> Vec<(Prefix<A>, NextHop)> {
    let path = data_file(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (the real tables live in ../shared/data beside the repository, or set XROUTE_DATA)", path.display())
    });
    let mut text = String::new();
    GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gzip text");
    text::parse_table::<A>(&text)
        .expect("table parses")
        .into_iter()
        .map(|(p, asn)| (p, NextHop::new((asn % 65_535) as u16).unwrap()))
        .collect()
}

struct Reference<A: Address> {
    by_len: Vec<HashMap<A, NextHop>>,
}

impl<A: Address> Reference<A> {
    fn new(routes: &[(Prefix<A>, NextHop)]) -> Self {
        let mut by_len = vec![HashMap::new(); usize::from(A::BITS) + 1];
        for (p, v) in routes {
            by_len[usize::from(p.len())].insert(p.addr(), *v);
        }
        Reference { by_len }
    }
    fn lookup(&self, a: A) -> Option<NextHop> {
        (0..=A::BITS)
            .rev()
            .find_map(|l| self.by_len[usize::from(l)].get(&a.masked(l)).copied())
    }
    fn apply(&mut self, c: &RouteChange<A>) {
        match *c {
            RouteChange::Insert(p, v) => {
                self.by_len[usize::from(p.len())].insert(p.addr(), v);
            }
            RouteChange::Remove(p) => {
                self.by_len[usize::from(p.len())].remove(&p.addr());
            }
        }
    }
}

/// Random addresses, and for every sampled route its edges and a random address inside.
fn samples<A: Address>(
    routes: &[(Prefix<A>, NextHop)],
    rng: &mut SmallRng,
    random: impl Fn(&mut SmallRng) -> A,
    inside: impl Fn(&mut SmallRng, Prefix<A>) -> A,
) -> Vec<A> {
    let mut out: Vec<A> = (0..100_000).map(|_| random(rng)).collect();
    for _ in 0..100_000 {
        let (p, _) = routes[rng.random_range(0..routes.len())];
        out.extend([p.addr(), p.last(), inside(rng, p)]);
    }
    out
}

fn compare<A: Address>(table: &Lpm<A>, reference: &Reference<A>, addrs: &[A]) {
    let mut batch = vec![None; addrs.len()];
    table.lookup_batch(addrs, &mut batch);
    let mut wrong = 0;
    for (&a, &b) in addrs.iter().zip(&batch) {
        let want = reference.lookup(a);
        if table.lookup(a) != want || b != want {
            wrong += 1;
            assert!(wrong < 10, "too many mismatches");
            eprintln!(
                "{a:?}: single {:?} batch {b:?} reference {want:?}",
                table.lookup(a)
            );
        }
    }
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} addresses resolved differently from the reference",
        addrs.len()
    );
}

fn run<A: Address>(
    name: &str,
    random: impl Fn(&mut SmallRng) -> A + Copy,
    inside: impl Fn(&mut SmallRng, Prefix<A>) -> A + Copy,
) {
    let routes = load::<A>(name);
    assert!(
        routes.len() > 20_000,
        "{name}: only {} routes",
        routes.len()
    );
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut b = LpmBuilder::from_routes(routes.iter().copied());
    let mut reference = Reference::new(&routes);
    compare(
        &b.table(),
        &reference,
        &samples(&routes, &mut rng, random, inside),
    );

    // A batch of removals of real routes and inserts of new ones inside real prefixes.
    let mut changes = Vec::new();
    for _ in 0..20_000 {
        let (p, _) = routes[rng.random_range(0..routes.len())];
        if rng.random_bool(0.5) {
            changes.push(RouteChange::Remove(p));
        } else {
            let len = rng.random_range(p.len()..=A::BITS.min(p.len() + 8));
            let v = NextHop::new(rng.random_range(0..1000)).unwrap();
            changes.push(RouteChange::Insert(
                Prefix::new_masked(inside(&mut rng, p), len),
                v,
            ));
        }
    }
    let table = b.apply(&changes);
    changes.iter().for_each(|c| reference.apply(c));
    let now: Vec<_> = b.routes().collect();
    compare(&table, &reference, &samples(&now, &mut rng, random, inside));
}

#[test]
fn real_ipv4_table_resolves_like_the_reference() {
    run::<u32>(
        "routeviews-20151101-v4.tsv.gz",
        |rng| rng.random(),
        |rng, p| p.addr() | (rng.random::<u32>() & !u32::MAX.masked(p.len())),
    );
}

#[test]
fn real_ipv6_table_resolves_like_the_reference() {
    run::<u128>(
        "routeviews-20151101-v6.tsv.gz",
        // Uniform over 2000::/3, where every real route is, and over the rest.
        |rng| {
            if rng.random_bool(0.8) {
                (rng.random::<u128>() >> 3) | (1 << 125)
            } else {
                rng.random()
            }
        },
        |rng, p| p.addr() | (rng.random::<u128>() & !u128::MAX.masked(p.len())),
    );
}
