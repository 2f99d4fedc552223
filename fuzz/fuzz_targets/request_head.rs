//! Fuzz target: Raw HTTP/1.1 request head → Pingora `RequestHeader` → the proxy's header checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera::fuzzing::request_head(data));
