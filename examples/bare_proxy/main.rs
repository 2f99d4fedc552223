//! A bare Pingora reverse proxy: the floor Tessera's per-request cost is measured against
//! (`benches/load.sh`, `benches/instructions.sh`, `benches/allocations.rs`).
//!
//! The same work a Tessera `auth: none` tenant asks of Pingora, and nothing else: one HTTPS
//! listener with one certificate (rustls, h2 + HTTP/1.1 by ALPN), the same runtime flavour
//! (`work_stealing: false`, `threads: 1` unless told), one upstream peer prepared at start-up,
//! and in `upstream_request_filter` the tenant header set and `Authorization` replaced by a
//! fixed bearer value. No routing, no guard, no metrics, no logging.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- \
//!     --listen 127.0.0.1:9443 --upstream 127.0.0.1:9080 --cert chain.pem --key leaf.key
//! ```
//!
//! Stops on SIGTERM/SIGINT like any Pingora server. Uses the same global allocator as the
//! `tessera` binary (`src/main.rs`), so the comparison is Pingora vs Tessera, not malloc vs malloc.

mod lean;
mod proxy;

use clap::Parser;

fn main() {
    if let Err(e) = proxy::run(proxy::Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
