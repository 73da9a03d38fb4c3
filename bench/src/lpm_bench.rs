//! `xroute-bench lpm`: xroute's tables against DIR-24-8 and the `prefix-trie` crate, on
//! the same routes, the same lookup keys and the same core, in one run.

use crate::dir24_8::Dir24_8;
use crate::tables::{self, Route, Space};
use anyhow::{ensure, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use lpm::{Address, Lpm, LpmBuilder, NextHop, Prefix, RouteChange};
use prefix_trie::PrefixMap;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A table under test. `Out` is whatever its lookup returns natively, so that no
/// conversion runs inside the timed loops.
pub trait Candidate<A: Space>: Sized {
    const NAME: &'static str;
    type Out: Copy + PartialEq + std::fmt::Debug;
    const NONE: Self::Out;
    fn build(routes: &[Route<A>]) -> Result<Self>;
    /// Bytes of the structure lookups read.
    fn memory_bytes(&self) -> usize;
    fn lookup(&self, a: A) -> Self::Out;
    fn lookup_batch(&self, addrs: &[A], out: &mut [Self::Out]);
    /// Applies the changes; returns when lookups see all of them.
    fn update(&mut self, changes: &[(Prefix<A>, Option<u32>)]);
    /// The answer as a next-hop id, for checking candidates against each other.
    fn id(out: Self::Out) -> Option<u16>;
}

/// xroute's Poptrie.
#[derive(Debug)]
pub struct Poptrie<A: Space> {
    builder: LpmBuilder<A>,
    table: Arc<Lpm<A>>,
}

impl<A: Space> Candidate<A> for Poptrie<A> {
    const NAME: &'static str = "xroute-poptrie";
    type Out = Option<NextHop>;
    const NONE: Self::Out = None;
    fn build(routes: &[Route<A>]) -> Result<Self> {
        let builder =
            LpmBuilder::from_routes(routes.iter().map(|&(p, asn)| (p, tables::next_hop(asn))));
        let table = builder.table();
        Ok(Poptrie { builder, table })
    }
    fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
    }
    #[inline]
    fn lookup(&self, a: A) -> Self::Out {
        self.table.lookup(a)
    }
    #[inline]
    fn lookup_batch(&self, addrs: &[A], out: &mut [Self::Out]) {
        self.table.lookup_batch(addrs, out)
    }
    fn update(&mut self, changes: &[(Prefix<A>, Option<u32>)]) {
        let batch: Vec<_> = changes
            .iter()
            .map(|&(p, asn)| match asn {
                Some(asn) => RouteChange::Insert(p, tables::next_hop(asn)),
                None => RouteChange::Remove(p),
            })
            .collect();
        self.table = self.builder.apply(&batch);
    }
    fn id(out: Self::Out) -> Option<u16> {
        out.map(NextHop::id)
    }
}

/// The DPDK-style DIR-24-8 baseline (IPv4 only).
impl Candidate<u32> for Dir24_8 {
    const NAME: &'static str = "dir-24-8";
    type Out = Option<u32>;
    const NONE: Self::Out = None;
    fn build(routes: &[Route<u32>]) -> Result<Self> {
        let mut t = Dir24_8::new()?;
        for &(p, asn) in routes {
            ensure!(
                t.add(p.addr(), p.len(), u32::from(tables::next_hop(asn).id())),
                "DIR-24-8 refuses {p}"
            );
        }
        Ok(t)
    }
    fn memory_bytes(&self) -> usize {
        Dir24_8::memory_bytes(self)
    }
    #[inline]
    fn lookup(&self, a: u32) -> Self::Out {
        Dir24_8::lookup(self, a)
    }
    #[inline]
    fn lookup_batch(&self, addrs: &[u32], out: &mut [Self::Out]) {
        self.lookup_bulk(addrs, out)
    }
    fn update(&mut self, changes: &[(Prefix<u32>, Option<u32>)]) {
        for &(p, asn) in changes {
            match asn {
                Some(asn) => {
                    self.add(p.addr(), p.len(), u32::from(tables::next_hop(asn).id()));
                }
                None => self.delete(p.addr(), p.len()),
            }
        }
    }
    fn id(out: Self::Out) -> Option<u16> {
        out.map(|v| v as u16)
    }
}

/// The `prefix-trie` crate's `PrefixMap`.
#[derive(Debug)]
pub struct PrefixTrie<P: prefix_trie::Prefix>(PrefixMap<P, NextHop>);

/// How an address family maps onto `prefix-trie`'s prefix types.
pub trait TrieFamily: Space {
    type Net: prefix_trie::Prefix + Copy + std::fmt::Debug;
    fn net(p: Prefix<Self>) -> Self::Net;
    fn host(a: Self) -> Self::Net;
}
impl TrieFamily for u32 {
    type Net = Ipv4Net;
    fn net(p: Prefix<u32>) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(p.addr()), p.len()).expect("valid prefix")
    }
    #[inline]
    fn host(a: u32) -> Ipv4Net {
        Ipv4Net::from(Ipv4Addr::from(a))
    }
}
impl TrieFamily for u128 {
    type Net = Ipv6Net;
    fn net(p: Prefix<u128>) -> Ipv6Net {
        Ipv6Net::new(Ipv6Addr::from(p.addr()), p.len()).expect("valid prefix")
    }
    #[inline]
    fn host(a: u128) -> Ipv6Net {
        Ipv6Net::from(Ipv6Addr::from(a))
    }
}

impl<A: TrieFamily> Candidate<A> for PrefixTrie<A::Net> {
    const NAME: &'static str = "prefix-trie";
    type Out = Option<NextHop>;
    const NONE: Self::Out = None;
    fn build(routes: &[Route<A>]) -> Result<Self> {
        let mut m = PrefixMap::new();
        for &(p, asn) in routes {
            m.insert(A::net(p), tables::next_hop(asn));
        }
        Ok(PrefixTrie(m))
    }
    fn memory_bytes(&self) -> usize {
        0 // measured by the counting allocator instead
    }
    #[inline]
    fn lookup(&self, a: A) -> Self::Out {
        self.0.get_lpm(&A::host(a)).map(|(_, v)| *v)
    }
    #[inline]
    fn lookup_batch(&self, addrs: &[A], out: &mut [Self::Out]) {
        for (o, &a) in out.iter_mut().zip(addrs) {
            *o = self.0.get_lpm(&A::host(a)).map(|(_, v)| *v);
        }
    }
    fn update(&mut self, changes: &[(Prefix<A>, Option<u32>)]) {
        for &(p, asn) in changes {
            match asn {
                Some(asn) => {
                    self.0.insert(A::net(p), tables::next_hop(asn));
                }
                None => {
                    self.0.remove(&A::net(p));
                }
            }
        }
    }
    fn id(out: Self::Out) -> Option<u16> {
        out.map(NextHop::id)
    }
}

/// What one candidate measured on one table (medians over the runs).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub name: &'static str,
    pub build_ms: f64,
    /// Bytes of lookup structure.
    pub memory: usize,
    /// Heap bytes the build left allocated, route store included (plus tbl24's mapping).
    pub heap: usize,
    pub single_random: f64,
    pub batch_random: f64,
    pub single_prefix: f64,
    pub batch_prefix: f64,
    pub update_ms: f64,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub runs: usize,
    pub min_time: Duration,
    pub keys: usize,
    pub updates: usize,
}

/// Heap bytes in use, from the binary's counting allocator.
pub type HeapGauge = fn() -> usize;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Lookup keys: a pool and whether every pass salts it into new random addresses.
#[derive(Debug)]
pub struct Keys<A> {
    pub pool: Vec<A>,
    pub salted: bool,
}

/// One window of lookups: passes over `keys` (each salted anew from `rng` when the pool
/// is salted) until `window` has gone by. Returns millions of lookups per second.
fn window<A: Space, C: Candidate<A>>(
    c: &C,
    keys: &Keys<A>,
    batch: bool,
    rng: &mut SmallRng,
    window: Duration,
) -> f64 {
    let mut out = [C::NONE; 64];
    let mut buf = [A::ZERO; 64];
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < window {
        let salt = if keys.salted { A::salt(rng) } else { A::ZERO };
        if batch {
            for chunk in keys.pool.chunks(64) {
                for (b, &a) in buf.iter_mut().zip(chunk) {
                    *b = a.salted(salt);
                }
                c.lookup_batch(&buf[..chunk.len()], &mut out);
                black_box(&mut out);
            }
        } else {
            for &a in &keys.pool {
                black_box(c.lookup(a.salted(salt)));
            }
        }
        done += keys.pool.len();
    }
    done as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Checks that `C` answers every key as the reference answers do.
fn agree<A: Space, C: Candidate<A>>(c: &C, keys: &[A], reference: &[Option<u16>]) -> Result<()> {
    for (&a, want) in keys.iter().zip(reference) {
        let got = C::id(c.lookup(a));
        ensure!(
            got == *want,
            "{} answers {got:?} for {a:?}, xroute's table {want:?}",
            C::NAME
        );
    }
    let mut out = vec![C::NONE; keys.len()];
    c.lookup_batch(keys, &mut out);
    for ((a, o), want) in keys.iter().zip(out).zip(reference) {
        ensure!(
            C::id(o) == *want,
            "{} batch answers {o:?} for {a:?}, xroute's {want:?}",
            C::NAME
        );
    }
    Ok(())
}

/// Random keys per pass: 64 KiB of IPv4 addresses.
pub const RANDOM_POOL: usize = 16 * 1024;

/// The lookup keys and changes of one table.
#[derive(Debug)]
pub struct Workload<A: Space> {
    pub routes: Vec<Route<A>>,
    /// Uniformly random addresses: a small pool (it stays in L1/L2, as packet headers
    /// do), salted anew on every pass.
    pub random: Keys<A>,
    /// Addresses inside the table's routes: a large fixed pool.
    pub prefixed: Keys<A>,
    pub changes: Vec<(Prefix<A>, Option<u32>)>,
    /// xroute's answers for the first keys, that every candidate must give too.
    reference: (Vec<A>, Vec<Option<u16>>),
}

impl<A: Space> Workload<A> {
    pub fn new(routes: Vec<Route<A>>, s: &Settings) -> Self {
        let random = Keys {
            pool: tables::addresses(&routes, RANDOM_POOL, false, 11),
            salted: true,
        };
        let prefixed = Keys {
            pool: tables::addresses(&routes, s.keys, true, 12),
            salted: false,
        };
        let changes = tables::changes(&routes, s.updates, 13);
        let mut keys: Vec<A> = prefixed.pool.iter().step_by(8).copied().collect();
        keys.extend(tables::addresses(&routes, s.keys / 8, false, 14));
        let table =
            LpmBuilder::from_routes(routes.iter().map(|&(p, asn)| (p, tables::next_hop(asn))))
                .table();
        let answers = keys
            .iter()
            .map(|&a| table.lookup(a).map(NextHop::id))
            .collect();
        Workload {
            routes,
            random,
            prefixed,
            changes,
            reference: (keys, answers),
        }
    }
}

/// A built candidate behind one interface, so that candidates can take turns.
pub trait Contender<A: Space> {
    /// Millions of lookups per second over one window.
    fn window(&self, keys: &Keys<A>, batch: bool, rng: &mut SmallRng, window: Duration) -> f64;
    /// Applies the changes; returns the milliseconds until lookups see them all.
    fn update(&mut self, changes: &[(Prefix<A>, Option<u32>)]) -> f64;
}

struct Built<C>(C);

impl<A: Space, C: Candidate<A>> Contender<A> for Built<C> {
    fn window(&self, keys: &Keys<A>, batch: bool, rng: &mut SmallRng, w: Duration) -> f64 {
        window(&self.0, keys, batch, rng, w)
    }
    fn update(&mut self, changes: &[(Prefix<A>, Option<u32>)]) -> f64 {
        let t = Instant::now();
        self.0.update(changes);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        black_box(self.0.lookup(A::ZERO));
        ms
    }
}

/// Builds one candidate: the candidate, and its build time and memory.
pub type Build<A> = fn(&Workload<A>, HeapGauge) -> Result<(Box<dyn Contender<A>>, Figures)>;

/// Builds `C` on `w`'s routes, measuring time and memory, and checks its answers.
pub fn build<A: Space, C: Candidate<A> + 'static>(
    w: &Workload<A>,
    heap: HeapGauge,
) -> Result<(Box<dyn Contender<A>>, Figures)> {
    let before = heap();
    let t = Instant::now();
    let c = C::build(&w.routes)?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut heap = heap().saturating_sub(before);
    if C::NAME == "dir-24-8" {
        heap += 4 << 24; // tbl24 is mapped, not allocated from the heap
    }
    agree(&c, &w.reference.0, &w.reference.1)?;
    let memory = match c.memory_bytes() {
        0 => heap,
        m => m,
    };
    Ok((
        Box::new(Built(c)),
        Figures {
            name: C::NAME,
            build_ms,
            memory,
            heap,
            ..Figures::default()
        },
    ))
}

/// One run: builds every candidate, then measures their lookups taking turns window by
/// window (50 ms each, `min_time` in all per candidate and measurement; each keeps its
/// best window), then applies the update batch to each.
///
/// Why turns and best windows: this shared VM slows a vCPU or its memory down for
/// seconds at a time without telling. Candidates measured one after the other can land
/// in different weather; taking turns puts them in the same, and a lookup loop is pure
/// CPU and memory work whose least disturbed window is the honest figure.
pub fn run_once<A: Space>(
    w: &Workload<A>,
    s: &Settings,
    builds: &[Build<A>],
    heap: HeapGauge,
) -> Result<Vec<Figures>> {
    let mut built = Vec::new();
    let mut figs = Vec::new();
    for b in builds {
        let (c, f) = b(w, heap)?;
        built.push(c);
        figs.push(f);
    }
    let mut rng = SmallRng::seed_from_u64(21);
    let win = Duration::from_millis(50).min(s.min_time);
    let windows = (s.min_time.as_millis() / win.as_millis().max(1)).max(1);
    type Field = fn(&mut Figures) -> &mut f64;
    let kinds: [(&Keys<A>, bool, Field); 4] = [
        (&w.random, false, |f| &mut f.single_random),
        (&w.random, true, |f| &mut f.batch_random),
        (&w.prefixed, false, |f| &mut f.single_prefix),
        (&w.prefixed, true, |f| &mut f.batch_prefix),
    ];
    for (keys, batch, field) in kinds {
        // One untimed window each warms caches and TLBs as a running fastpath has them.
        for c in &built {
            c.window(keys, batch, &mut rng, win);
        }
        for _ in 0..windows {
            for (c, f) in built.iter().zip(&mut figs) {
                let r = c.window(keys, batch, &mut rng, win);
                let best = field(f);
                *best = best.max(r);
            }
        }
    }
    for (c, f) in built.iter_mut().zip(&mut figs) {
        f.update_ms = c.update(&w.changes);
    }
    Ok(figs)
}

/// Medians, field by field, of several runs of one candidate.
pub fn medians(runs: &[Figures]) -> Figures {
    let m = |g: fn(&Figures) -> f64| median(runs.iter().map(g).collect());
    Figures {
        name: runs[0].name,
        build_ms: m(|f| f.build_ms),
        memory: runs[0].memory,
        heap: runs[0].heap,
        single_random: m(|f| f.single_random),
        batch_random: m(|f| f.batch_random),
        single_prefix: m(|f| f.single_prefix),
        batch_prefix: m(|f| f.batch_prefix),
        update_ms: m(|f| f.update_ms),
    }
}

/// The table of figures, one line per candidate.
pub fn report(title: &str, rows: &[Figures]) -> String {
    let mut s = format!("\n## {title}\n");
    s += &format!(
        "{:<15} {:>9} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>11}\n",
        "structure",
        "build_ms",
        "lookup_bytes",
        "heap_bytes",
        "1_rand",
        "64_rand",
        "1_pfx",
        "64_pfx",
        "10k_upd_ms"
    );
    for r in rows {
        s += &format!(
            "{:<15} {:>9.1} {:>12} {:>12} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>11.2}\n",
            r.name,
            r.build_ms,
            r.memory,
            r.heap,
            r.single_random,
            r.batch_random,
            r.single_prefix,
            r.batch_prefix,
            r.update_ms
        );
    }
    s
}

/// Prefix-length mix of a table, for the report header.
pub fn length_mix<A: Address>(routes: &[Route<A>]) -> String {
    let mut counts = vec![0usize; usize::from(A::BITS) + 1];
    for r in routes {
        counts[usize::from(r.0.len())] += 1;
    }
    let mut top: Vec<(usize, usize)> = counts.into_iter().enumerate().filter(|c| c.1 > 0).collect();
    top.sort_by_key(|c| std::cmp::Reverse(c.1));
    top.iter()
        .take(5)
        .map(|(l, c)| format!("/{l} {:.0}%", 100.0 * *c as f64 / routes.len() as f64))
        .collect::<Vec<_>>()
        .join(", ")
}
