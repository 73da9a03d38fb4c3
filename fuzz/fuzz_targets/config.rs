//! Any text as a node's static configuration: parsed or refused with an error that
//! names a file, and never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match control::config::parse(text, "fuzz.yaml") {
        Ok(c) => assert!(!c.node.trim().is_empty()),
        Err(e) => assert!(e.to_string().starts_with("fuzz.yaml")),
    }
});
