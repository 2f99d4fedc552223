//! The standing adversarial suite: what an attacker would send to each thing Tessera exposes,
//! against the real binary, real TLS, real Redis, and a raw upstream that records every byte
//! it receives. Real parts only, through the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod headers;
mod rapid_reset;
mod slowloris;
mod tls_alpn;
mod unknown_ids;
