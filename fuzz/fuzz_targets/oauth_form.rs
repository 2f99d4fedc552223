//! Fuzz target: the OAuth surface's client input (token and revocation forms, Basic client id).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera::fuzzing::oauth_form(data));
