//! `xroute-bench nat`: the `nat` crate alone, on one core: connection tracking lookups
//! at a million live flows, new-flow setups (a Maglev choice and both directions
//! inserted), and Maglev builds for ten thousand services; each with its memory. The
//! baseline in the same run is a `hashbrown` map of the same flows, the structure a
//! single-threaded proxy would use (it shares nothing between workers, so it is the
//! cost floor a shared table is measured against).

use anyhow::{ensure, Result};
use hashbrown::HashMap;
use nat::conntrack::flow::{Conntrack, Direction, Nat, Tuple};
use nat::frontend::Choice;
use nat::maglev::{Maglev, DEFAULT_MAX_SIZE};
use nat::service::Backend;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct NatArgs {
    /// Live flows in the table for the lookup measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub flows: usize,
    /// Services (of `--backends` each) for the Maglev build.
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    #[arg(long, default_value_t = 10)]
    pub backends: usize,
    /// The table's slots per entry it holds (its load is the inverse): a window of
    /// sixteen slots overflows rarely below half full.
    #[arg(long, default_value_t = 2.0)]
    pub slots_per_entry: f64,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The CPU to run on.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The client's tuple of flow `i`: a client address and port per flow, to one VIP.
fn tuple(i: u32) -> Tuple<Ipv4Addr> {
    Tuple {
        src: Ipv4Addr::from(0x0a00_0000 | (i >> 8)),
        dst: Ipv4Addr::new(10, 96, 0, 10),
        sport: 1024 + (i & 0xff) as u16,
        dport: 80,
        protocol: 6,
    }
}

/// Flow `i`'s two entries, as a worker writes them for a new flow: the client's
/// direction (to the backend Maglev picks) and the reply's (back to the VIP).
fn entries(i: u32, choice: &Choice) -> Result<[(Tuple<Ipv4Addr>, Nat<Ipv4Addr>); 2]> {
    let fwd = tuple(i);
    let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let backend = choice
        .pick(h)
        .ok_or_else(|| anyhow::anyhow!("no backend"))?;
    let IpAddr::V4(b) = backend.addr else {
        anyhow::bail!("IPv4 backends only")
    };
    let out = Nat {
        src: fwd.src,
        sport: fwd.sport,
        dst: b,
        dport: backend.port,
        direction: Direction::Original,
        state: 3,
        flags: 0,
        service: 1,
        expires: u32::MAX,
        window: Default::default(),
    };
    let reply = Tuple {
        src: b,
        sport: backend.port,
        dst: fwd.src,
        dport: fwd.sport,
        protocol: fwd.protocol,
    };
    let back = Nat {
        src: fwd.dst,
        sport: fwd.dport,
        dst: fwd.src,
        dport: fwd.sport,
        direction: Direction::Reply,
        ..out
    };
    Ok([(fwd, out), (reply, back)])
}

fn backends(n: usize, salt: u32) -> Vec<Backend> {
    (0..n as u32)
        .map(|b| Backend {
            addr: IpAddr::V4(Ipv4Addr::from(0x0af4_0000 | (salt << 8) | b)),
            port: 8080,
        })
        .collect()
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    lookups_mps: f64,
    hashmap_lookups_mps: f64,
    setups_mps: f64,
    hashmap_setups_mps: f64,
    maglev_ms: f64,
}

fn run(
    a: &NatArgs,
    ct_bytes: &mut usize,
    maglev_bytes: &mut usize,
    lost: &mut usize,
) -> Result<Figures> {
    let flows = a.flows as u32;
    let choice = {
        let b = backends(a.backends, 0);
        let keys: Vec<[u8; 18]> = b.iter().map(Backend::key).collect();
        Choice {
            maglev: Maglev::new(&keys, DEFAULT_MAX_SIZE)?,
            backends: b,
            reject: false,
        }
    };
    let mut rng = SmallRng::seed_from_u64(7);

    // Setups: a Maglev choice and both directions, into an empty table sized for the
    // flows (two entries each).
    let ct = Conntrack::new((2.0 * a.flows as f64 * a.slots_per_entry) as usize, 8);
    *ct_bytes = ct.memory();
    let t0 = Instant::now();
    for i in 0..flows {
        for (t, n) in entries(i, &choice)? {
            ct.put4(&t, &n, 1);
        }
    }
    let setups_mps = f64::from(flows) / t0.elapsed().as_secs_f64() / 1e6;
    let mut map: HashMap<Tuple<Ipv4Addr>, Nat<Ipv4Addr>> = HashMap::with_capacity(2 * a.flows);
    let t0 = Instant::now();
    for i in 0..flows {
        for (t, n) in entries(i, &choice)? {
            map.insert(t, n);
        }
    }
    let hashmap_setups_mps = f64::from(flows) / t0.elapsed().as_secs_f64() / 1e6;

    // Lookups of live flows in random order, both tables, the same keys.
    let keys: Vec<Tuple<Ipv4Addr>> = (0..4_000_000)
        .map(|_| tuple(rng.random_range(0..flows)))
        .collect();
    let t0 = Instant::now();
    let mut found = 0usize;
    let mut out = [None; nat::conntrack::flow::BATCH];
    for batch in keys.chunks(nat::conntrack::flow::BATCH) {
        ct.get4_batch(black_box(batch), 1, &mut out);
        found += out[..batch.len()].iter().filter(|o| o.is_some()).count();
    }
    let lookups_mps = keys.len() as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let t0 = Instant::now();
    let mut found_map = 0usize;
    for k in &keys {
        found_map += usize::from(map.get(black_box(k)).is_some());
    }
    let hashmap_lookups_mps = keys.len() as f64 / t0.elapsed().as_secs_f64() / 1e6;
    ensure!(
        found_map == keys.len(),
        "the baseline lost flows ({found_map} of {})",
        keys.len()
    );
    // A full window evicts (or refuses): those flows are gone, counted, never wrong.
    *lost = keys.len() - found;
    drop(map);
    drop(ct);

    // Maglev: every service's table.
    let sets: Vec<Vec<[u8; 18]>> = (0..a.services as u32)
        .map(|s| backends(a.backends, s).iter().map(Backend::key).collect())
        .collect();
    let t0 = Instant::now();
    let tables: Vec<Maglev> = sets
        .iter()
        .map(|k| Maglev::new(k, DEFAULT_MAX_SIZE))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let maglev_ms = t0.elapsed().as_secs_f64() * 1e3;
    *maglev_bytes = tables.iter().map(Maglev::memory).sum();
    Ok(Figures {
        lookups_mps,
        hashmap_lookups_mps,
        setups_mps,
        hashmap_setups_mps,
        maglev_ms,
    })
}

pub fn nat(a: NatArgs, machine: &str) -> Result<()> {
    ensure!(
        a.runs > 0 && a.flows > 0 && a.backends > 0,
        "runs, flows and backends must be positive"
    );
    if !core_affinity::set_for_current(core_affinity::CoreId { id: a.cpu }) {
        eprintln!("could not pin to CPU {}; figures are less stable", a.cpu);
    }
    println!("# xroute-bench nat on {machine}, CPU {}", a.cpu);
    println!(
        "# {} flows (two entries each), {} services x {} backends, {} runs, medians",
        a.flows, a.services, a.backends, a.runs
    );
    let (mut ct_bytes, mut maglev_bytes, mut lost) = (0, 0, 0);
    let mut runs = Vec::new();
    for _ in 0..a.runs {
        runs.push(run(&a, &mut ct_bytes, &mut maglev_bytes, &mut lost)?);
    }
    let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    let f = Figures {
        lookups_mps: m(|f| f.lookups_mps),
        hashmap_lookups_mps: m(|f| f.hashmap_lookups_mps),
        setups_mps: m(|f| f.setups_mps),
        hashmap_setups_mps: m(|f| f.hashmap_setups_mps),
        maglev_ms: m(|f| f.maglev_ms),
    };
    println!(
        "conntrack  lookups {:.1} M/s (hashbrown {:.1} M/s), setups {:.2} M flows/s (hashbrown {:.2}), {:.0} MiB, {lost} of 4M lookups missed (flows evicted from full windows)",
        f.lookups_mps,
        f.hashmap_lookups_mps,
        f.setups_mps,
        f.hashmap_setups_mps,
        ct_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "maglev     {} services x {} backends built in {:.0} ms, {:.1} MiB",
        a.services,
        a.backends,
        f.maglev_ms,
        maglev_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "ratio conntrack_lookups_millions_per_s {:.2}",
        f.lookups_mps
    );
    println!("ratio conntrack_setups_millions_per_s {:.2}", f.setups_mps);
    println!(
        "ratio conntrack_lookups_vs_hashbrown {:.2}",
        f.lookups_mps / f.hashmap_lookups_mps
    );
    println!(
        "ratio conntrack_setups_vs_hashbrown {:.2}",
        f.setups_mps / f.hashmap_setups_mps
    );
    println!("ratio maglev_build_10k_services_ms {:.0}", f.maglev_ms);
    Ok(())
}
