//! Local cache of sealed Part B records, kept coherent by Redis client-side tracking.
//!
//! Read in `request_filter` before going to Redis. Rules that keep revocation instant:
//! - The cache answers only while tracking is up (`set_tracking`); a flush (null
//!   invalidation), a disconnect or a failed heartbeat clears it and turns it off.
//! - An insert carries the epoch read before the Redis `GET`; any invalidation or flush in
//!   between bumps the epoch and the insert is dropped, so a concurrent `DEL` cannot be
//!   undone by a slow read.
//! - Entries also expire after `ttl`, a cap in case an invalidation is lost by Redis itself.
//!
//! Values are the sealed records (ciphertext), never reconstructed tokens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics;
use crate::token::TokenId;

#[derive(Clone)]
struct Cached {
    tenant: Arc<str>,
    record: Arc<[u8]>,
    at: Instant,
}

/// Bounded, tracking-aware record cache.
pub struct FragmentCache {
    // Keyed by token id alone (128-bit random); the tenant is checked on read so a record is
    // never served for another tenant.
    map: quick_cache::sync::Cache<TokenId, Cached>,
    ttl: Duration,
    epoch: AtomicU64,
    tracking: AtomicBool,
    /// `<prefix>frag:` — invalidated keys are parsed back to token ids with it.
    key_prefix: String,
}

impl FragmentCache {
    pub fn new(capacity: usize, ttl: Duration, key_prefix: String) -> FragmentCache {
        FragmentCache {
            map: quick_cache::sync::Cache::new(capacity.max(1)),
            ttl,
            epoch: AtomicU64::new(0),
            tracking: AtomicBool::new(false),
            key_prefix,
        }
    }

    /// A cached record, if tracking is up and the entry is fresh and for this tenant.
    pub fn get(&self, tenant: &str, id: &TokenId) -> Option<Arc<[u8]>> {
        if !self.tracking.load(Ordering::Acquire) {
            return None;
        }
        let c = self.map.get(id)?;
        if &*c.tenant != tenant || c.at.elapsed() > self.ttl {
            return None;
        }
        Some(c.record)
    }

    /// Call before reading Redis; pass the ticket to `insert`. `None` = do not cache.
    pub fn ticket(&self) -> Option<u64> {
        if self.tracking.load(Ordering::Acquire) {
            Some(self.epoch.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// Store a record read under `ticket`, unless anything was invalidated since.
    pub fn insert(&self, ticket: Option<u64>, tenant: &str, id: &TokenId, record: Arc<[u8]>) {
        let Some(t) = ticket else { return };
        if !self.tracking.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != t {
            return;
        }
        self.map.insert(
            *id,
            Cached {
                tenant: Arc::from(tenant),
                record,
                at: Instant::now(),
            },
        );
        // Re-check after inserting: an invalidation that raced with the insert bumped the
        // epoch; remove what we just wrote rather than risk serving it.
        if self.epoch.load(Ordering::Acquire) != t {
            self.map.remove(id);
        }
        metrics::global().cache_entries.set(self.map.len() as i64);
    }

    /// Handle one invalidated Redis key.
    pub fn invalidate_key(&self, key: &[u8]) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        metrics::global().cache_invalidations.inc();
        let id = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.key_prefix.as_str()))
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(_, id)| TokenId::parse(id));
        match id {
            Some(id) => {
                self.map.remove(&id);
            }
            // A key under our prefix we cannot parse: be safe, drop everything.
            None => self.flush(),
        }
        metrics::global().cache_entries.set(self.map.len() as i64);
    }

    /// Drop every entry (flush, disconnect, heartbeat failure).
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
        metrics::global().cache_flushes.inc();
        metrics::global().cache_entries.set(0);
    }

    /// Turn cache use on (tracking established) or off (and clear).
    pub fn set_tracking(&self, up: bool) {
        if up {
            self.flush();
            self.tracking.store(true, Ordering::Release);
        } else {
            self.tracking.store(false, Ordering::Release);
            self.flush();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(b: &[u8]) -> Arc<[u8]> {
        Arc::from(b)
    }

    #[test]
    fn serves_only_while_tracking() {
        let c = FragmentCache::new(10, Duration::from_secs(60), "t:frag:".into());
        let id = TokenId([1; 16]);
        assert!(c.ticket().is_none());
        c.insert(Some(0), "acme", &id, rec(b"x"));
        assert!(c.get("acme", &id).is_none());
        c.set_tracking(true);
        let t = c.ticket();
        c.insert(t, "acme", &id, rec(b"x"));
        assert_eq!(c.get("acme", &id).as_deref(), Some(&b"x"[..]));
        assert!(c.get("globex", &id).is_none(), "other tenant must miss");
        c.set_tracking(false);
        assert!(c.get("acme", &id).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn invalidation_during_read_blocks_stale_insert() {
        let c = FragmentCache::new(10, Duration::from_secs(60), "t:frag:".into());
        c.set_tracking(true);
        let id = TokenId([2; 16]);
        let t = c.ticket();
        // DEL lands while the GET is in flight.
        c.invalidate_key(format!("t:frag:acme:{id}").as_bytes());
        c.insert(t, "acme", &id, rec(b"stale"));
        assert!(c.get("acme", &id).is_none());
    }

    #[test]
    fn invalidation_evicts_and_unknown_key_flushes() {
        let c = FragmentCache::new(10, Duration::from_secs(60), "t:frag:".into());
        c.set_tracking(true);
        let a = TokenId([3; 16]);
        let b = TokenId([4; 16]);
        c.insert(c.ticket(), "acme", &a, rec(b"a"));
        c.insert(c.ticket(), "acme", &b, rec(b"b"));
        c.invalidate_key(format!("t:frag:acme:{a}").as_bytes());
        assert!(c.get("acme", &a).is_none());
        assert!(c.get("acme", &b).is_some());
        c.invalidate_key(b"t:frag:garbage");
        assert!(c.get("acme", &b).is_none());
    }

    #[test]
    fn ttl_caps_age() {
        let c = FragmentCache::new(10, Duration::from_millis(1), "t:frag:".into());
        c.set_tracking(true);
        let a = TokenId([5; 16]);
        c.insert(c.ticket(), "acme", &a, rec(b"a"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get("acme", &a).is_none());
    }
}
