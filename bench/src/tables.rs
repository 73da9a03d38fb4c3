//! Route tables for the benchmarks: the `shared/data` files, and the same tables scaled
//! to today's Internet size.
//!
//! Scaling keeps every real route and adds new ones until the table has the asked size:
//! each new route takes the length of a real route drawn at random (so the prefix-length
//! mix stays the real one), a uniformly random address in the family's space masked to
//! that length, and the origin AS of another real route drawn at random. The IPv6 space
//! here is 2000::/3, the global unicast space every real IPv6 route is in. The generator
//! is seeded, so a size always gives the same table.

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use lpm::{Address, NextHop, Prefix};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A route as the benchmarks use it: prefix and origin AS.
pub type Route<A> = (Prefix<A>, u32);

/// The folder of the real tables: `$XROUTE_DATA`, else `../shared/data` beside the repo.
pub fn data_dir() -> PathBuf {
    std::env::var_os("XROUTE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Reads a table file (gzip-compressed when it starts with the gzip magic).
pub fn load<A: Address>(path: &Path) -> Result<Vec<Route<A>>> {
    let raw =
        std::fs::read(path).with_context(|| format!("reading route table {}", path.display()))?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .with_context(|| format!("decompressing {}", path.display()))?;
        s
    } else {
        String::from_utf8(raw).with_context(|| format!("{} is not UTF-8 text", path.display()))?
    };
    let routes = lpm::text::parse_table::<A>(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    if routes.is_empty() {
        bail!("{} holds no {} route", path.display(), A::FAMILY);
    }
    Ok(routes)
}

/// The next hop a benchmark route maps to: its origin AS folded into the id space, so
/// that neighbouring prefixes of one AS share a next hop as they would in a FIB.
pub fn next_hop(asn: u32) -> NextHop {
    NextHop::new((asn % 65_535) as u16).expect("below NextHop::MAX")
}

/// A uniformly random address of the family's benchmark space.
pub trait Space: Address {
    fn random(rng: &mut SmallRng) -> Self;
    /// A random mask that [`Space::salted`] applies: an address of the space, salted,
    /// is another uniformly random address of the space.
    fn salt(rng: &mut SmallRng) -> Self;
    fn salted(self, salt: Self) -> Self;
    /// A random address inside `p`.
    fn inside(rng: &mut SmallRng, p: Prefix<Self>) -> Self;
}

impl Space for u32 {
    fn random(rng: &mut SmallRng) -> u32 {
        rng.random()
    }
    fn salt(rng: &mut SmallRng) -> u32 {
        rng.random()
    }
    #[inline(always)]
    fn salted(self, salt: u32) -> u32 {
        self ^ salt
    }
    fn inside(rng: &mut SmallRng, p: Prefix<u32>) -> u32 {
        p.addr() | (rng.random::<u32>() & !u32::MAX.masked(p.len()))
    }
}

impl Space for u128 {
    fn random(rng: &mut SmallRng) -> u128 {
        (1 << 125) | (rng.random::<u128>() >> 3)
    }
    fn salt(rng: &mut SmallRng) -> u128 {
        rng.random::<u128>() >> 3
    }
    #[inline(always)]
    fn salted(self, salt: u128) -> u128 {
        self ^ salt
    }
    fn inside(rng: &mut SmallRng, p: Prefix<u128>) -> u128 {
        p.addr() | (rng.random::<u128>() & !u128::MAX.masked(p.len()))
    }
}

/// `routes` grown to `n` routes with the same prefix-length mix (see the module doc).
/// A table already as large is returned as it is.
pub fn scale<A: Space>(routes: &[Route<A>], n: usize, seed: u64) -> Vec<Route<A>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut seen: HashSet<Prefix<A>> = routes.iter().map(|r| r.0).collect();
    let mut out = routes.to_vec();
    while out.len() < n {
        let len = routes[rng.random_range(0..routes.len())].0.len();
        let asn = routes[rng.random_range(0..routes.len())].1;
        let p = Prefix::new_masked(A::random(&mut rng), len);
        if seen.insert(p) {
            out.push((p, asn));
        }
    }
    out
}

/// `n` random changes against `routes`: half removals of existing routes, half inserts
/// of new prefixes with the table's length mix.
pub fn changes<A: Space>(
    routes: &[Route<A>],
    n: usize,
    seed: u64,
) -> Vec<(Prefix<A>, Option<u32>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let (p, asn) = routes[rng.random_range(0..routes.len())];
            if i % 2 == 0 {
                (p, None)
            } else {
                let len = routes[rng.random_range(0..routes.len())].0.len();
                (Prefix::new_masked(A::random(&mut rng), len), Some(asn))
            }
        })
        .collect()
}

/// Lookup keys: `n` uniformly random addresses, or `n` addresses each inside a random
/// route of the table.
pub fn addresses<A: Space>(
    routes: &[Route<A>],
    n: usize,
    from_prefixes: bool,
    seed: u64,
) -> Vec<A> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            if from_prefixes {
                let p = routes[rng.random_range(0..routes.len())].0;
                A::inside(&mut rng, p)
            } else {
                A::random(&mut rng)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_the_length_mix_and_is_deterministic() {
        let real: Vec<Route<u32>> = (0..1000u32)
            .map(|i| {
                (
                    Prefix::new_masked(i << 16, if i % 4 == 0 { 16 } else { 24 }),
                    i,
                )
            })
            .collect();
        let a = scale(&real, 20_000, 7);
        let b = scale(&real, 20_000, 7);
        assert_eq!(a, b);
        assert_eq!(a.len(), 20_000);
        assert_eq!(&a[..1000], &real[..]);
        let sixteens = a.iter().filter(|r| r.0.len() == 16).count() as f64 / a.len() as f64;
        assert!((sixteens - 0.25).abs() < 0.02, "share of /16: {sixteens}");
        assert_eq!(a.iter().map(|r| r.0).collect::<HashSet<_>>().len(), a.len());
        let six = scale(&[(Prefix::new_masked(1u128 << 125, 32), 1)], 100, 1);
        assert!(six
            .iter()
            .all(|r| r.0.addr() >> 125 == 1 && r.0.len() == 32));
    }
}
