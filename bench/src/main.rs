//! `xroute-bench`: xroute's benchmarks. Each prints the baselines measured in the same
//! run and ends with `ratio <name> <value>` lines (see `bench/RESULTS.md`).

use anyhow::{bail, Context, Result};
use bench::dir24_8::Dir24_8;
use bench::lpm_bench::{self, Build, Figures, Poptrie, PrefixTrie, Settings, Workload};
use bench::tables::{self, Route, Space};
use clap::{Parser, Subcommand};
use ipnet::{Ipv4Net, Ipv6Net};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Counts heap bytes in use, so that every structure's memory is measured the same way.
struct CountingAlloc;
static HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with the caller's arguments;
// the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
            HEAP.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn heap_in_use() -> usize {
    HEAP.load(Ordering::Relaxed)
}

#[derive(Parser, Debug)]
#[command(
    name = "xroute-bench",
    version,
    about = "xroute's benchmarks, each with its baselines measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Longest-prefix match: xroute's Poptrie against DIR-24-8 (DPDK rte_lpm) and prefix-trie.
    Lpm(LpmArgs),
    /// Forwarding through a device under test: xroute against a bare AF_XDP forwarder,
    /// Linux forwarding and an in-kernel XDP redirect (needs root; builds namespaces).
    Fwd(bench::fwd::FwdArgs),
    /// BGP full-table ingestion: xroute's agent against BIRD, same table, same run
    /// (needs root, bird2; builds namespaces).
    BgpIngest(bench::bgp_ingest::IngestArgs),
    /// The `nat` crate alone, one core: conntrack lookups and setups at a million
    /// flows against a hashbrown map, Maglev builds for ten thousand services.
    Nat(bench::nat_bench::NatArgs),
}

#[derive(clap::Args, Debug)]
struct LpmArgs {
    /// IPv4 table, `prefix<TAB>asn` lines, gzip allowed [default: the 2015 RouteViews table
    /// in ../shared/data]
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// Also measure the IPv4 table scaled to N routes (same prefix-length mix, seeded).
    #[arg(long, value_name = "N")]
    scale: Option<usize>,
    /// IPv6 table [default: the 2015 RouteViews IPv6 table in ../shared/data]
    #[arg(long, value_name = "FILE")]
    table6: Option<PathBuf>,
    /// Also measure the IPv6 table scaled to N routes.
    #[arg(long, value_name = "N")]
    scale6: Option<usize>,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Minimum time per lookup measurement, in milliseconds.
    #[arg(long, default_value_t = 400)]
    min_time_ms: u64,
    /// Keys drawn from the table's prefixes (each measurement cycles over them; random
    /// keys are generated anew for every pass).
    #[arg(long, default_value_t = 1 << 20)]
    keys: usize,
    /// Size of the random insert/remove batch.
    #[arg(long, default_value_t = 10_000)]
    updates: usize,
    /// The CPU to run on.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Lpm(args) => lpm(args),
        Command::Fwd(args) => bench::fwd::fwd(args, &machine()),
        Command::BgpIngest(args) => bench::bgp_ingest::ingest(args, &machine()),
        Command::Nat(args) => bench::nat_bench::nat(args, &machine()),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {} CPUs, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

/// Runs every candidate `runs` times (each run: fresh builds, lookups taking turns) and
/// returns their medians.
fn measure_all<A: Space>(
    w: &Workload<A>,
    s: &Settings,
    builds: &[Build<A>],
) -> Result<Vec<Figures>> {
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); builds.len()];
    for _ in 0..s.runs {
        for (f, out) in lpm_bench::run_once(w, s, builds, heap_in_use)?
            .into_iter()
            .zip(&mut runs)
        {
            out.push(f);
        }
    }
    Ok(runs.iter().map(|r| lpm_bench::medians(r)).collect())
}

/// Measures and prints every table of a family; returns the last (largest) one's figures.
fn measure_family<A: Space>(
    tables: Vec<(String, Vec<Route<A>>)>,
    s: &Settings,
    builds: &[Build<A>],
) -> Result<Vec<Figures>> {
    let mut last = Vec::new();
    for (title, routes) in tables {
        println!(
            "\ntable: {title} (lengths: {})",
            lpm_bench::length_mix(&routes)
        );
        let w = Workload::new(routes, s);
        last = measure_all(&w, s, builds)?;
        print!("{}", lpm_bench::report(&title, &last));
    }
    Ok(last)
}

/// The tables to measure: the file as it is, and scaled when asked.
fn tables_of<A: Space>(
    path: PathBuf,
    scale: Option<usize>,
) -> Result<Vec<(String, Vec<Route<A>>)>> {
    let routes = tables::load::<A>(&path)?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut out = vec![(
        format!("{} {name}: {} routes", A::FAMILY, routes.len()),
        routes,
    )];
    if let Some(n) = scale {
        if n <= out[0].1.len() {
            bail!(
                "--scale {n}: the table has {} routes already",
                out[0].1.len()
            );
        }
        let scaled = tables::scale(&out[0].1, n, 42);
        out.push((
            format!("{} {name} scaled to {} routes", A::FAMILY, scaled.len()),
            scaled,
        ));
    }
    Ok(out)
}

fn find<'a>(rows: &'a [Figures], name: &str) -> &'a Figures {
    rows.iter()
        .find(|r| r.name == name)
        .expect("candidate measured")
}

fn lpm(args: LpmArgs) -> Result<()> {
    let machine = machine();
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu }) {
        bail!("cannot pin to CPU {} (see --cpu)", args.cpu);
    }
    let s = Settings {
        runs: args.runs.max(1),
        min_time: Duration::from_millis(args.min_time_ms),
        keys: args.keys.max(64),
        updates: args.updates,
    };
    let data = tables::data_dir();
    let v4 = tables_of::<u32>(
        args.table
            .unwrap_or_else(|| data.join("routeviews-20151101-v4.tsv.gz")),
        args.scale,
    )
    .context("IPv4 table")?;
    let v6 = tables_of::<u128>(
        args.table6
            .unwrap_or_else(|| data.join("routeviews-20151101-v6.tsv.gz")),
        args.scale6,
    )
    .context("IPv6 table")?;

    println!("# xroute-bench lpm");
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("machine: {machine}; pinned to CPU {}", args.cpu);
    println!(
        "method: medians of {} runs; in a run every candidate is built, then they take turns \
         in 50 ms windows and each keeps its best window; lookups in millions per second \
         (rand: uniform over IPv4 / 2000::/3, a pool of {} salted anew every pass; pfx: a pool of {} \
         addresses, each inside a random route); 1: one at a time, 64: batches of 64; \
         {} random changes (half removals, half new prefixes)",
        s.runs, lpm_bench::RANDOM_POOL, s.keys, s.updates
    );

    let last4 = measure_family(
        v4,
        &s,
        &[
            lpm_bench::build::<u32, Poptrie<u32>>,
            lpm_bench::build::<u32, Dir24_8>,
            lpm_bench::build::<u32, PrefixTrie<Ipv4Net>>,
        ],
    )?;
    let last6 = measure_family(
        v6,
        &s,
        &[
            lpm_bench::build::<u128, Poptrie<u128>>,
            lpm_bench::build::<u128, PrefixTrie<Ipv6Net>>,
        ],
    )?;

    let (x4, d4, t4) = (
        find(&last4, "xroute-poptrie"),
        find(&last4, "dir-24-8"),
        find(&last4, "prefix-trie"),
    );
    let (x6, t6) = (find(&last6, "xroute-poptrie"), find(&last6, "prefix-trie"));
    println!();
    println!(
        "ratio xroute_vs_dir24_8_batch_random_ipv4 {:.2}",
        x4.batch_random / d4.batch_random
    );
    println!(
        "ratio xroute_vs_prefix_trie_batch_random_ipv4 {:.2}",
        x4.batch_random / t4.batch_random
    );
    println!(
        "ratio memory_dir24_8_vs_xroute_ipv4 {:.2}",
        d4.memory as f64 / x4.memory as f64
    );
    println!(
        "ratio xroute_vs_prefix_trie_batch_random_ipv6 {:.2}",
        x6.batch_random / t6.batch_random
    );
    Ok(())
}
