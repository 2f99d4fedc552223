//! Test harness: real parts only. Starts a real `redis-server` on a free loopback port, the
//! real `tessera` binary as a child process, and the echo upstream on `127.0.0.1:0`; clients do
//! real TLS handshakes with SNI. One file per concern, all re-exported here:
//! `redis` (servers), `setup` (tenants, certs, config, upstreams), `process` (the tessera process and
//! its clients), `raw` (byte-exact clients and a recording upstream for adversarial tests),
//! `oidc` (a real OpenID Provider and the OAuth client flows, for the token-swap tests).
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod oidc;
pub mod pebble;
mod process;
pub mod raw;
mod redis;
mod setup;

pub use process::*;
pub use redis::*;
pub use setup::*;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
/// Run `f` to completion on a fresh single-threaded runtime (for blocking test code).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}

/// Retry `f` until it returns true or `timeout` passes; returns the time it took.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
