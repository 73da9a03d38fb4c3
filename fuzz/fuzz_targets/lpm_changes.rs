//! Any sequence of route batches: the table answers as a scan of the routes does, for
//! every route's edges and the fuzzer's own addresses, one at a time and in batches.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lpm::{LpmBuilder, NextHop, Prefix, RouteChange};
use std::collections::BTreeMap;

#[derive(Arbitrary, Debug)]
struct Change {
    addr: u32,
    len: u8,
    next_hop: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    batches: Vec<Vec<Change>>,
    probes: Vec<u32>,
}

fuzz_target!(|input: Input| {
    let mut b = LpmBuilder::<u32>::new();
    let mut model: BTreeMap<Prefix<u32>, NextHop> = BTreeMap::new();
    for batch in input.batches.iter().take(8) {
        let changes: Vec<RouteChange<u32>> = batch
            .iter()
            .take(64)
            .map(|c| {
                let p = Prefix::new_masked(c.addr, c.len % 33);
                match c.next_hop {
                    Some(v) => RouteChange::Insert(p, NextHop::new(u16::from(v)).unwrap()),
                    None => RouteChange::Remove(p),
                }
            })
            .collect();
        let table = b.apply(&changes);
        for c in &changes {
            match *c {
                RouteChange::Insert(p, v) => {
                    model.insert(p, v);
                }
                RouteChange::Remove(p) => {
                    model.remove(&p);
                }
            }
        }
        let mut probes: Vec<u32> = input.probes.iter().take(64).copied().collect();
        for p in model.keys() {
            probes.extend([
                p.addr(),
                p.last(),
                p.addr().wrapping_sub(1),
                p.last().wrapping_add(1),
            ]);
        }
        let mut batch_out = vec![None; probes.len()];
        table.lookup_batch(&probes, &mut batch_out);
        for (&a, got) in probes.iter().zip(batch_out) {
            let want = model
                .iter()
                .filter(|(p, _)| p.contains(a))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, v)| *v);
            assert_eq!(table.lookup(a), want, "lookup {a:#x}");
            assert_eq!(got, want, "lookup_batch {a:#x}");
        }
    }
});
