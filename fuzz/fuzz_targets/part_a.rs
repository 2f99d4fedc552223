//! Fuzz target: Part A parser (`token::PartA::parse`), as `request_filter` runs it on a Bearer value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera::fuzzing::part_a(data));
