//! DIR-24-8, as DPDK's `rte_lpm` builds it: the baseline xroute's IPv4 table is measured
//! against.
//!
//! `tbl24` has one 4-byte entry per /24 (2^24 of them, 64 MiB); an entry either holds
//! the next hop of the longest prefix of length 24 or less that covers it, or points at
//! a 256-entry `tbl8` group that resolves the last octet. Entry layout as in rte_lpm:
//! next hop in bits 0..24, `valid` bit 24, `valid_group` bit 25, rule depth in bits
//! 26..32. Insertion, deletion (with the covering rule's replacement) and tbl8 group
//! recycling follow `rte_lpm.c`'s `add_depth_small/big`, `delete_depth_small/big` and
//! `tbl8_recycle_check`; the lookups follow `rte_lpm_lookup` and `rte_lpm_lookup_bulk`.
//!
//! Two differences, both in the baseline's favour: rules are kept in one hash map per
//! depth (rte_lpm searches its rule array linearly, which makes its updates far slower),
//! and `tbl24` is mapped with transparent huge pages, as DPDK maps it from hugetlbfs.

use crate::hugemem::HugeArray;
use std::collections::HashMap;

const VALID: u32 = 1 << 24;
const GROUP: u32 = 1 << 25;
const NH_MASK: u32 = 0x00ff_ffff;
const GROUP_ENTRIES: usize = 256;

#[inline]
fn entry(next_hop: u32, depth: u8, group: bool) -> u32 {
    (next_hop & NH_MASK) | VALID | if group { GROUP } else { 0 } | (u32::from(depth) << 26)
}
#[inline]
fn depth_of(e: u32) -> u8 {
    (e >> 26) as u8
}
#[inline]
fn valid(e: u32) -> bool {
    e & VALID != 0
}
#[inline]
fn is_group(e: u32) -> bool {
    e & GROUP != 0
}

/// DPDK-style DIR-24-8 over IPv4 addresses in host order.
#[derive(Debug)]
pub struct Dir24_8 {
    tbl24: HugeArray,
    tbl8: Vec<u32>,
    free_groups: Vec<u32>,
    rules: Vec<HashMap<u32, u32>>,
}

fn mask(ip: u32, depth: u8) -> u32 {
    if depth == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - u32::from(depth)))
    }
}

impl Dir24_8 {
    /// An empty table.
    pub fn new() -> std::io::Result<Self> {
        Ok(Dir24_8 {
            tbl24: HugeArray::zeroed(1 << 24)?,
            tbl8: Vec::new(),
            free_groups: Vec::new(),
            rules: vec![HashMap::new(); 33],
        })
    }

    /// Bytes of lookup structure: tbl24 and the tbl8 groups allocated so far.
    pub fn memory_bytes(&self) -> usize {
        self.tbl24.len() * 4 + self.tbl8.capacity() * 4
    }

    /// tbl8 groups in use.
    pub fn groups_in_use(&self) -> usize {
        self.tbl8.len() / GROUP_ENTRIES - self.free_groups.len()
    }

    /// `rte_lpm_lookup`.
    #[inline]
    pub fn lookup(&self, ip: u32) -> Option<u32> {
        let t24 = self.tbl24.as_slice();
        let mut e = t24[(ip >> 8) as usize];
        if e & (VALID | GROUP) == (VALID | GROUP) {
            e = self.tbl8[(e & NH_MASK) as usize * GROUP_ENTRIES + (ip & 0xff) as usize];
        }
        valid(e).then_some(e & NH_MASK)
    }

    /// `rte_lpm_lookup_bulk`: one pass of independent lookups. (rte_lpm computes all
    /// tbl24 indices in a first pass; on this machine that measured slower than this
    /// plain loop, and the baseline gets its best.)
    #[inline]
    pub fn lookup_bulk(&self, ips: &[u32], out: &mut [Option<u32>]) {
        for (o, &ip) in out.iter_mut().zip(ips) {
            *o = self.lookup(ip);
        }
    }

    fn alloc_group(&mut self) -> u32 {
        if let Some(g) = self.free_groups.pop() {
            return g;
        }
        let g = (self.tbl8.len() / GROUP_ENTRIES) as u32;
        self.tbl8.resize(self.tbl8.len() + GROUP_ENTRIES, 0);
        g
    }

    fn group(&mut self, g: u32) -> &mut [u32] {
        let s = g as usize * GROUP_ENTRIES;
        &mut self.tbl8[s..s + GROUP_ENTRIES]
    }

    /// `rte_lpm_add`. Like rte_lpm, takes depths 1 to 32 and 24-bit next hops; returns
    /// false (and changes nothing) for anything else.
    pub fn add(&mut self, ip: u32, depth: u8, next_hop: u32) -> bool {
        if !(1..=32).contains(&depth) || next_hop > NH_MASK {
            return false;
        }
        let ip = mask(ip, depth);
        self.rules[usize::from(depth)].insert(ip, next_hop);
        if depth <= 24 {
            self.add_depth_small(ip, depth, next_hop);
        } else {
            self.add_depth_big(ip, depth, next_hop);
        }
        true
    }

    fn add_depth_small(&mut self, ip: u32, depth: u8, next_hop: u32) {
        let start = (ip >> 8) as usize;
        let range = 1usize << (24 - depth);
        let new = entry(next_hop, depth, false);
        for i in start..start + range {
            let e = self.tbl24.as_slice()[i];
            if !valid(e) || (!is_group(e) && depth_of(e) <= depth) {
                self.tbl24.as_mut_slice()[i] = new;
            } else if is_group(e) {
                for t in self.group(e & NH_MASK) {
                    if !valid(*t) || depth_of(*t) <= depth {
                        *t = new;
                    }
                }
            }
        }
    }

    fn add_depth_big(&mut self, ip: u32, depth: u8, next_hop: u32) {
        let i24 = (ip >> 8) as usize;
        let first = (ip & 0xff) as usize;
        let range = 1usize << (32 - depth);
        let new = entry(next_hop, depth, false);
        let e = self.tbl24.as_slice()[i24];
        if !valid(e) || !is_group(e) {
            let g = self.alloc_group();
            // A valid tbl24 entry's answer moves into every slot of the new group.
            let fill = if valid(e) { e } else { 0 };
            let grp = self.group(g);
            grp.fill(fill);
            grp[first..first + range].fill(new);
            self.tbl24.as_mut_slice()[i24] = entry(g, 0, true);
        } else {
            for t in &mut self.group(e & NH_MASK)[first..first + range] {
                if !valid(*t) || depth_of(*t) <= depth {
                    *t = new;
                }
            }
        }
    }

    /// The longest rule shorter than `depth` that covers `ip` (`find_previous_rule`).
    fn parent(&self, ip: u32, depth: u8) -> Option<(u8, u32)> {
        (1..depth).rev().find_map(|d| {
            self.rules[usize::from(d)]
                .get(&mask(ip, d))
                .map(|&nh| (d, nh))
        })
    }

    /// `rte_lpm_delete`; deleting an absent rule does nothing.
    pub fn delete(&mut self, ip: u32, depth: u8) {
        if !(1..=32).contains(&depth) {
            return;
        }
        let ip = mask(ip, depth);
        if self.rules[usize::from(depth)].remove(&ip).is_none() {
            return;
        }
        let parent = self.parent(ip, depth);
        if depth <= 24 {
            self.delete_depth_small(ip, depth, parent);
        } else {
            self.delete_depth_big(ip, depth, parent);
        }
    }

    fn delete_depth_small(&mut self, ip: u32, depth: u8, parent: Option<(u8, u32)>) {
        let start = (ip >> 8) as usize;
        let range = 1usize << (24 - depth);
        let new = parent.map_or(0, |(d, nh)| entry(nh, d, false));
        for i in start..start + range {
            let e = self.tbl24.as_slice()[i];
            if !is_group(e) && depth_of(e) <= depth {
                self.tbl24.as_mut_slice()[i] = new;
            } else if is_group(e) {
                for t in self.group(e & NH_MASK) {
                    if depth_of(*t) <= depth {
                        *t = new;
                    }
                }
            }
        }
    }

    fn delete_depth_big(&mut self, ip: u32, depth: u8, parent: Option<(u8, u32)>) {
        let i24 = (ip >> 8) as usize;
        let e24 = self.tbl24.as_slice()[i24];
        let g = e24 & NH_MASK;
        let first = (ip & 0xff) as usize;
        let range = 1usize << (32 - depth);
        let new = parent.map_or(0, |(d, nh)| entry(nh, d, false));
        for t in &mut self.group(g)[first..first + range] {
            if depth_of(*t) <= depth {
                *t = new;
            }
        }
        // tbl8_recycle_check: a group whose entries all came from one rule of /24 or
        // shorter collapses back into tbl24; an all-invalid group is freed.
        let grp = self.group(g);
        let head = grp[0];
        let collapse = if valid(head) {
            (depth_of(head) <= 24 && grp.iter().all(|t| depth_of(*t) == depth_of(head)))
                .then_some(head)
        } else {
            grp.iter().all(|t| !valid(*t)).then_some(0)
        };
        if let Some(e) = collapse {
            self.tbl24.as_mut_slice()[i24] = e;
            self.free_groups.push(g);
        }
    }
}
