//! Fuzz target: Admin API JSON bodies: mint (checked, minted, recovered) and rotate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera::fuzzing::admin_body(data));
