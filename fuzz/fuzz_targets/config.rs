//! Fuzz target: Config loader (`config::Config::from_yaml`: YAML parse + validation) and the keyring text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera::fuzzing::config(data));
