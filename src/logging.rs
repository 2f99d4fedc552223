//! Process logging: `env_logger` (`RUST_LOG`, default `info`) behind a guard.
//!
//! The guard drops DEBUG and TRACE records from every crate but Tessera. Pingora's HTTP/1
//! client logs the serialised upstream request at TRACE (`Writing request header: …`, which
//! holds the reconstructed `Authorization` header) and the proxy logs upstream body chunks at
//! DEBUG (`upstream event now: Body(…)`); no `RUST_LOG` setting may turn those on. Tessera's
//! own modules never log secrets at any level (tests/tokens.rs `secrets_never_logged` checks
//! this with `RUST_LOG=trace`).
//!
//! [`RateLimited`] keeps lines an attacker can trigger at will (a refused connection, a reset
//! stream, a failed upstream request) to one line per cause per second, with a count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// One log cause, written at most once per second. Use as a `static`:
///
/// ```
/// use tessera::logging::RateLimited;
/// static REFUSED: RateLimited = RateLimited::new();
/// if let Some(n) = REFUSED.hit() {
///     log::warn!("connection refused: per-IP limit ({n} since the last line)");
/// }
/// ```
pub struct RateLimited {
    /// Second (Unix time) of the last line written.
    second: AtomicU64,
    /// Events since the last line written.
    pending: AtomicU64,
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimited {
    pub const fn new() -> RateLimited {
        RateLimited {
            second: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Record one event. Returns `Some(n)` when a line should be written now, `n` being the
    /// events since the previous line (this one included); `None` when this second already
    /// had its line.
    pub fn hit(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.hit_at(now)
    }

    fn hit_at(&self, now: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let last = self.second.load(Ordering::Relaxed);
        if last == now
            || self
                .second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.pending.swap(0, Ordering::Relaxed).max(1))
    }
}

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

    #[test]
    fn rate_limited_one_line_per_second_with_count() {
        let r = RateLimited::new();
        assert_eq!(r.hit_at(100), Some(1));
        for _ in 0..999 {
            assert_eq!(r.hit_at(100), None);
        }
        assert_eq!(
            r.hit_at(101),
            Some(1000),
            "the next second reports the suppressed events"
        );
        assert_eq!(r.hit_at(101), None);
        assert_eq!(r.hit_at(105), Some(2));
    }
}
