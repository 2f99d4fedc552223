//! Tessera: a split-token reverse proxy on Pingora.
//!
//! Request path (one function per phase in `proxy`):
//! TLS handshake (`tls`: SNI → cert, tenant captured) → `request_filter` (tenant by SNI and
//! Host, Part A parsed, Part B fetched from `fragments`, token reconstructed by `token`) →
//! `upstream_peer` (tenant's prepared peer) → `upstream_request_filter` (credential and tenant
//! headers set, token wiped) → `logging` (`metrics`, `session_log`, `anomaly`).

pub mod acme;
pub mod admin;
pub mod anomaly;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod fragments;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod reserved;
pub mod runtime;
pub mod server;
pub mod session_log;
pub mod tenants;
pub mod tls;
pub mod token;
pub mod watch;
