//! The route-table text format: never panics; an error names a line that exists.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lpm::text::{parse_table, TableTextError};

fuzz_target!(|text: &str| {
    for result in [
        parse_table::<u32>(text).map(|r| r.len()),
        parse_table::<u128>(text).map(|r| r.len()),
    ] {
        match result {
            Ok(n) => assert!(n <= text.lines().count()),
            Err(
                TableTextError::Prefix { line, .. }
                | TableTextError::Shape { line, .. }
                | TableTextError::OriginAs { line, .. },
            ) => {
                assert!(line >= 1 && line <= text.lines().count())
            }
        }
    }
});
