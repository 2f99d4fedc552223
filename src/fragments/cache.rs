//! Local cache of sealed Part B records, kept coherent by Redis client-side tracking.
//!
//! Read in `request_filter` before going to Redis. It holds two kinds of entries:
//! - positive: the sealed record (ciphertext, never a reconstructed token);
//! - negative: "Redis has no record under this tenant and id", so a client repeating an
//!   unknown id (a typo, an old config, or someone probing ids) costs no Redis round trip.
//!   They have their own capacity and a shorter TTL, so a flood of random ids cannot push
//!   real records out.
//!
//! Rules that keep revocation instant and a new mint usable at once apply to both kinds:
//! - The cache answers only while tracking is up (`set_tracking`); a flush (null
//!   invalidation), a disconnect or a failed heartbeat clears it and turns it off.
//! - An insert carries the epoch read before the Redis `GET`; any invalidation, local
//!   eviction or flush in between bumps the epoch and the insert is dropped, so a concurrent
//!   `DEL` (or, for a negative entry, a concurrent mint's `SET`) cannot be undone by a slow read.
//! - An invalidated key evicts the id from both kinds; the store's own writes evict locally
//!   at once (`evict`), without waiting for Redis to push the invalidation back.
//! - Entries also expire after `ttl` (negative: `negative_ttl`), a cap in case an
//!   invalidation is lost by Redis itself.

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

/// A negative entry: no record for (tenant, id) when Redis was asked at `at`.
#[derive(Clone)]
struct Absent {
    tenant: Arc<str>,
    at: Instant,
}

/// What the cache knows about a (tenant, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The sealed record (or tombstone) Redis holds.
    Found(Arc<[u8]>),
    /// Redis holds nothing under this key.
    Absent,
}

/// Bounded, tracking-aware record cache.
pub struct FragmentCache {
    // Keyed by token id alone (128-bit random); the tenant is checked on read so a record is
    // never served for another tenant.
    map: quick_cache::sync::Cache<TokenId, Cached>,
    /// Negative entries; `None` when `negative_capacity` is 0.
    absent: Option<quick_cache::sync::Cache<TokenId, Absent>>,
    ttl: Duration,
    negative_ttl: Duration,
    epoch: AtomicU64,
    tracking: AtomicBool,
    /// `<prefix>frag:` — invalidated keys are parsed back to token ids with it.
    key_prefix: String,
}

impl FragmentCache {
    pub fn new(capacity: usize, ttl: Duration, key_prefix: String) -> FragmentCache {
        FragmentCache {
            map: quick_cache::sync::Cache::new(capacity.max(1)),
            absent: None,
            ttl,
            negative_ttl: Duration::ZERO,
            epoch: AtomicU64::new(0),
            tracking: AtomicBool::new(false),
            key_prefix,
        }
    }

    /// Also remember up to `capacity` ids Redis does not have, each for at most `ttl`.
    /// `capacity` 0 leaves negative caching off.
    pub fn with_negative(mut self, capacity: usize, ttl: Duration) -> FragmentCache {
        self.absent = (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity));
        self.negative_ttl = ttl;
        self
    }

    /// What the cache knows, if tracking is up and the entry is fresh and for this tenant.
    pub fn get(&self, tenant: &str, id: &TokenId) -> Option<Answer> {
        if !self.tracking.load(Ordering::Acquire) {
            return None;
        }
        if let Some(c) = self.map.get(id) {
            if &*c.tenant == tenant && c.at.elapsed() <= self.ttl {
                return Some(Answer::Found(c.record));
            }
        }
        let a = self.absent.as_ref()?.get(id)?;
        (&*a.tenant == tenant && a.at.elapsed() <= self.negative_ttl).then_some(Answer::Absent)
    }

    /// Call before reading Redis; pass the ticket to `insert`. `None` = do not cache.
    pub fn ticket(&self) -> Option<u64> {
        if self.tracking.load(Ordering::Acquire) {
            Some(self.epoch.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// Store what Redis answered under `ticket` (a record, or `None` for "no such key"),
    /// unless anything was invalidated since.
    pub fn insert(&self, ticket: Option<u64>, tenant: &str, id: &TokenId, record: Option<Arc<[u8]>>) {
        let Some(t) = ticket else { return };
        if !self.tracking.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != t {
            return;
        }
        let tenant = Arc::from(tenant);
        let at = Instant::now();
        match record {
            Some(record) => self.map.insert(*id, Cached { tenant, record, at }),
            None => match &self.absent {
                Some(absent) => absent.insert(*id, Absent { tenant, at }),
                None => return,
            },
        }
        // Re-check after inserting: an invalidation that raced with the insert bumped the
        // epoch; remove what we just wrote rather than risk serving it.
        if self.epoch.load(Ordering::Acquire) != t {
            self.remove(id);
        }
        self.update_gauges();
    }

    /// Handle one invalidated Redis key.
    pub fn invalidate_key(&self, key: &[u8]) {
        metrics::global().cache_invalidations.inc();
        let id = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.key_prefix.as_str()))
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(_, id)| TokenId::parse(id));
        match id {
            Some(id) => self.evict(&id),
            // A key under our prefix we cannot parse: be safe, drop everything.
            None => self.flush(),
        }
    }

    /// Forget `id` (both kinds) and void reads in flight: for an invalidation, and for this
    /// instance's own writes (a mint must work here at once, a revoke must apply at once).
    pub fn evict(&self, id: &TokenId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.remove(id);
        self.update_gauges();
    }

    fn remove(&self, id: &TokenId) {
        self.map.remove(id);
        if let Some(absent) = &self.absent {
            absent.remove(id);
        }
    }

    /// Drop every entry (flush, disconnect, heartbeat failure).
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
        if let Some(absent) = &self.absent {
            absent.clear();
        }
        metrics::global().cache_flushes.inc();
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let m = metrics::global();
        m.cache_entries.set(self.map.len() as i64);
        m.cache_negative_entries.set(self.negative_len() as i64);
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

    /// Records held (positive entries).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Ids held as absent (negative entries).
    pub fn negative_len(&self) -> usize {
        self.absent.as_ref().map_or(0, |a| a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0 && self.negative_len() == 0
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
        c.insert(Some(0), "acme", &id, Some(rec(b"x")));
        assert!(c.get("acme", &id).is_none());
        c.set_tracking(true);
        let t = c.ticket();
        c.insert(t, "acme", &id, Some(rec(b"x")));
        assert_eq!(c.get("acme", &id), Some(Answer::Found(rec(b"x"))));
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
        c.insert(t, "acme", &id, Some(rec(b"stale")));
        assert!(c.get("acme", &id).is_none());
    }

    #[test]
    fn invalidation_evicts_and_unknown_key_flushes() {
        let c = FragmentCache::new(10, Duration::from_secs(60), "t:frag:".into());
        c.set_tracking(true);
        let a = TokenId([3; 16]);
        let b = TokenId([4; 16]);
        c.insert(c.ticket(), "acme", &a, Some(rec(b"a")));
        c.insert(c.ticket(), "acme", &b, Some(rec(b"b")));
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
        c.insert(c.ticket(), "acme", &a, Some(rec(b"a")));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get("acme", &a).is_none());
    }

    fn neg_cache(capacity: usize, ttl: Duration) -> FragmentCache {
        let c = FragmentCache::new(10, Duration::from_secs(60), "t:frag:".into()).with_negative(capacity, ttl);
        c.set_tracking(true);
        c
    }

    #[test]
    fn negative_entry_answers_absent_for_its_tenant_only() {
        let c = neg_cache(10, Duration::from_secs(60));
        let id = TokenId([6; 16]);
        assert_eq!(c.get("acme", &id), None, "nothing known yet");
        c.insert(c.ticket(), "acme", &id, None);
        assert_eq!(c.get("acme", &id), Some(Answer::Absent));
        assert_eq!(c.get("globex", &id), None, "other tenant must ask Redis");
        assert_eq!(c.negative_len(), 1);
        assert_eq!(c.len(), 0, "a negative entry takes no record slot");
    }

    #[test]
    fn mint_invalidation_evicts_negative_entry() {
        let c = neg_cache(10, Duration::from_secs(60));
        let id = TokenId([7; 16]);
        let other = TokenId([8; 16]);
        c.insert(c.ticket(), "acme", &id, None);
        c.insert(c.ticket(), "acme", &other, None);
        // The SET of a mint under this id, pushed by Redis tracking.
        c.invalidate_key(format!("t:frag:acme:{id}").as_bytes());
        assert_eq!(c.get("acme", &id), None);
        assert_eq!(c.get("acme", &other), Some(Answer::Absent), "only that id is evicted");
        // This instance's own write evicts the same way.
        c.evict(&other);
        assert_eq!(c.get("acme", &other), None);
    }

    #[test]
    fn negative_read_racing_a_mint_is_not_cached() {
        let c = neg_cache(10, Duration::from_secs(60));
        let id = TokenId([9; 16]);
        let t = c.ticket();
        // GET answered nil, then the mint's SET invalidation lands before the insert.
        c.invalidate_key(format!("t:frag:acme:{id}").as_bytes());
        c.insert(t, "acme", &id, None);
        assert_eq!(c.get("acme", &id), None);
        assert_eq!(c.negative_len(), 0);
        // A local eviction (this instance minted) voids reads in flight too.
        let t = c.ticket();
        c.evict(&id);
        c.insert(t, "acme", &id, None);
        assert_eq!(c.get("acme", &id), None);
    }

    #[test]
    fn negative_entries_cleared_with_everything_else() {
        let c = neg_cache(10, Duration::from_secs(60));
        let a = TokenId([10; 16]);
        c.insert(c.ticket(), "acme", &a, None);
        c.flush();
        assert_eq!(c.get("acme", &a), None, "FLUSHALL / null invalidation");
        c.insert(c.ticket(), "acme", &a, None);
        c.invalidate_key(b"t:frag:garbage");
        assert_eq!(c.get("acme", &a), None, "unparsable key flushes");
        c.insert(c.ticket(), "acme", &a, None);
        c.set_tracking(false);
        assert_eq!(c.get("acme", &a), None, "disconnect / heartbeat loss");
        assert!(c.is_empty());
        assert!(c.ticket().is_none());
        c.insert(Some(0), "acme", &a, None);
        c.set_tracking(true);
        assert_eq!(c.get("acme", &a), None, "nothing cached while tracking was down");
    }

    #[test]
    fn negative_entries_expire_and_are_bounded() {
        let c = neg_cache(10, Duration::from_millis(1));
        let a = TokenId([11; 16]);
        c.insert(c.ticket(), "acme", &a, None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("acme", &a), None, "negative_ttl caps age");

        let c = neg_cache(10, Duration::from_secs(60));
        let keep = TokenId([12; 16]);
        c.insert(c.ticket(), "acme", &keep, Some(rec(b"real")));
        for i in 0..1000u32 {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[15] = 0xee;
            c.insert(c.ticket(), "acme", &TokenId(b), None);
        }
        assert!(c.negative_len() <= 10, "{} negative entries", c.negative_len());
        assert_eq!(
            c.get("acme", &keep),
            Some(Answer::Found(rec(b"real"))),
            "random ids never push real records out"
        );
    }

    #[test]
    fn negative_capacity_zero_is_off() {
        let c = neg_cache(0, Duration::from_secs(60));
        let a = TokenId([13; 16]);
        c.insert(c.ticket(), "acme", &a, None);
        assert_eq!(c.get("acme", &a), None);
        assert_eq!(c.negative_len(), 0);
    }
}
