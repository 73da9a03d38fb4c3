//! The DIR-24-8 baseline answers as a plain scan of its rules does, through adds,
//! replacements and deletes (including deletes that must fall back to a covering rule
//! and tbl8 groups that collapse back into tbl24): its figures are only worth comparing
//! if it is right.

use bench::dir24_8::Dir24_8;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn mask(ip: u32, d: u8) -> u32 {
    if d == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - u32::from(d)))
    }
}

fn reference(rules: &BTreeMap<(u32, u8), u32>, ip: u32) -> Option<u32> {
    rules
        .iter()
        .filter(|((p, d), _)| mask(ip, *d) == *p)
        .max_by_key(|((_, d), _)| *d)
        .map(|(_, nh)| *nh)
}

#[derive(Debug, Clone)]
enum Op {
    Add(u32, u8, u32),
    Delete(u32, u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Addresses in a few /20s so that rules nest and share tbl8 groups.
    let ip = (
        prop::sample::select(vec![0x0a00_0000u32, 0x0a00_1000, 0xc0a8_0000]),
        0u32..0x1000,
    )
        .prop_map(|(base, low)| base | low);
    prop_oneof![
        (ip.clone(), 8u8..=32, 0u32..4).prop_map(|(ip, d, nh)| Op::Add(ip, d, nh)),
        (ip, 8u8..=32).prop_map(|(ip, d)| Op::Delete(ip, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dir24_8_matches_a_scan(ops in prop::collection::vec(op(), 1..60)) {
        let mut t = Dir24_8::new().unwrap();
        let mut rules = BTreeMap::new();
        let mut probes = vec![0x0a00_0000u32, 0x0a00_0fff, 0x0a00_1fff, 0xc0a8_0fff, 0x0b00_0000];
        for op in &ops {
            match *op {
                Op::Add(ip, d, nh) => {
                    prop_assert!(t.add(ip, d, nh));
                    rules.insert((mask(ip, d), d), nh);
                    probes.extend([ip, mask(ip, d), mask(ip, d) | !mask(u32::MAX, d)]);
                }
                Op::Delete(ip, d) => {
                    t.delete(ip, d);
                    rules.remove(&(mask(ip, d), d));
                }
            }
            let mut bulk = vec![None; probes.len()];
            t.lookup_bulk(&probes, &mut bulk);
            for (&ip, b) in probes.iter().zip(bulk) {
                let want = reference(&rules, ip);
                prop_assert_eq!(t.lookup(ip), want, "lookup {:#x} after {:?}", ip, op);
                prop_assert_eq!(b, want, "lookup_bulk {:#x}", ip);
            }
        }
    }
}

#[test]
fn refuses_what_rte_lpm_refuses() {
    let mut t = Dir24_8::new().unwrap();
    assert!(!t.add(0, 0, 1));
    assert!(!t.add(0, 33, 1));
    assert!(!t.add(0x0a00_0000, 8, 1 << 24));
    assert_eq!(t.lookup(0x0a00_0001), None);
}
