//! The standing adversarial suite: what an attacker would send to each thing Tessera exposes,
//! against the real binary, real TLS, and a raw upstream that records every byte it receives.

#[path = "../common/mod.rs"]
mod common;

mod headers;
