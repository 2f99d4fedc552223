//! Process logging: `env_logger` (`RUST_LOG`, default `info`) behind a guard.
//!
//! The guard drops DEBUG and TRACE records from every crate but Tessera. Pingora's HTTP/1
//! client logs the serialised upstream request at TRACE (`Writing request header: …`, which
//! holds the reconstructed `Authorization` header) and the proxy logs upstream body chunks at
//! DEBUG (`upstream event now: Body(…)`); no `RUST_LOG` setting may turn those on. Tessera's
//! own modules never log secrets at any level (tests/tokens.rs `secrets_never_logged` checks
//! this with `RUST_LOG=trace`).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Guarded(env_logger::Logger);

fn allowed(meta: &Metadata<'_>) -> bool {
    meta.level() <= Level::Info || meta.target().starts_with("tessera")
}

impl Log for Guarded {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        allowed(meta) && self.0.enabled(meta)
    }

    fn log(&self, record: &Record<'_>) {
        if allowed(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Install the logger; call once, first thing in `main`.
pub fn init() {
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Guarded(logger))).is_ok() {
        log::set_max_level(max.min(LevelFilter::Trace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_party_trace_is_dropped() {
        let m = |target: &'static str, level| Metadata::builder().target(target).level(level).build();
        assert!(!allowed(&m("pingora_core::protocols::http::v1::client", Level::Trace)));
        assert!(!allowed(&m("pingora_proxy::proxy_h1", Level::Debug)));
        assert!(allowed(&m("pingora_core::server", Level::Info)));
        assert!(allowed(&m("tessera::proxy", Level::Trace)));
    }
}
