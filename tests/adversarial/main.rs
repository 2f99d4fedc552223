//! Adversarial integration tests: a client (or whoever reads the review) tries what the
//! happy-path suites do not. Real parts only, through the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod unknown_ids;
