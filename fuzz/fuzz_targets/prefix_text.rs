//! Prefix text (config files, annotations, route tables): never panics, and whatever it
//! accepts prints back to a text that parses to the same prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lpm::{Prefix4, Prefix6};

fuzz_target!(|text: &str| {
    if let Ok(p) = text.parse::<Prefix4>() {
        assert_eq!(p.to_string().parse::<Prefix4>(), Ok(p));
        assert!(p.contains(p.addr()) && p.contains(p.last()));
    }
    if let Ok(p) = text.parse::<Prefix6>() {
        assert_eq!(p.to_string().parse::<Prefix6>(), Ok(p));
        assert!(p.contains(p.addr()) && p.contains(p.last()));
    }
});
