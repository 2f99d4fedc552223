//! Adversarial clients against the real binary: one file per attack.

#[path = "../common/mod.rs"]
mod common;

mod rapid_reset;
mod slowloris;
