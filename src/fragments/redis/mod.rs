//! Redis fragment store, shared by every Tessera instance.
//!
//! Key layout (documented in the README; security teams depend on it):
//! `<prefix>frag:<tenant>:<token id hex>` → sealed record (or a tombstone after an API revoke).
//! Default prefix `tessera:`, so `redis-cli DEL tessera:frag:acme:<id>` revokes.
//!
//! Read on the request path in `request_filter` (`get`: the tracked local cache, then one `GET`
//! on a miss); written by the admin path (`put`, `replace_if`). The pieces:
//! - `conn.rs`: the data connection (`DataConn`: a `ConnectionManager` for a standalone server
//!   or Sentinel's primary, or the cluster client), per-node connections, TLS trust;
//! - `tracker.rs`: the background service that keeps the cache coherent (client-side tracking,
//!   heartbeat, topology watch). While it is down the cache is empty and unused, and lookups
//!   fail closed at once; a failover or reshard ends tracking, so the cache is cleared and
//!   rebuilt against the new topology;
//! - this file: the store operations and the key layout.
//!
//! The local cache (`../cache.rs`) also remembers ids Redis does not have (negative entries),
//! so a repeated unknown id costs no round trip; a mint's `SET` evicts them like any other
//! entry (locally at once, on other instances through tracking).

mod conn;
mod tracker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::AsyncCommands;

use super::cache::{Answer, FragmentCache};
use super::{Entry, FragmentStore, Readiness, StoreError, TOMBSTONE_TTL_SECS};
use crate::config::{RedisConf, Topology};
use crate::metrics;
use crate::token::{is_tombstone, TokenId};
pub use conn::DataConn;
use conn::{direct, manager};
pub use tracker::Tracker;

/// Shared Redis store with optional tracked cache.
pub struct RedisStore {
    conf: RedisConf,
    conn: ArcSwapOption<DataConn>,
    /// `host:port` of the primary the data connection points at (Sentinel).
    primary: Mutex<Option<String>>,
    /// Primaries from the last discovery (Cluster; listing scans each).
    primaries: Mutex<Vec<String>>,
    cache: Option<FragmentCache>,
    /// Heartbeat state: false = fail closed.
    up: AtomicBool,
    tracking: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Build the store. Does not wait for Redis: an instance started while Redis is down
    /// refuses tokens (503) and becomes ready when the tracker connects. Call within a Tokio
    /// runtime that outlives the store (the connection manager spawns its tasks there).
    pub fn new(conf: RedisConf) -> Result<Arc<RedisStore>, StoreError> {
        let conn = match &conf.topology {
            Topology::Standalone { url } => Some(Arc::new(DataConn::Single(manager(&conf, url)?))),
            // Found by the tracker.
            Topology::Sentinel { .. } | Topology::Cluster { .. } => None,
        };
        let cache = conf.cache_enabled.then(|| {
            FragmentCache::new(conf.cache_capacity, conf.cache_ttl, format!("{}frag:", conf.prefix))
                .with_negative(conf.negative_cache_capacity, conf.negative_cache_ttl)
        });
        Ok(Arc::new(RedisStore {
            conf,
            conn: ArcSwapOption::new(conn),
            primary: Mutex::new(None),
            primaries: Mutex::new(Vec::new()),
            cache,
            up: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
        }))
    }

    /// The Redis key of a record.
    pub fn key(&self, tenant: &str, id: &TokenId) -> String {
        format!("{}frag:{tenant}:{id}", self.conf.prefix)
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.conf.prefix
    }

    /// A handle for data commands (also used by the session log's streams).
    pub fn connection(&self) -> Result<DataConn, StoreError> {
        self.conn
            .load_full()
            .map(|c| DataConn::clone(&c))
            .ok_or_else(|| StoreError::Unavailable("Redis topology not discovered yet".into()))
    }

    /// The background service that keeps the cache coherent and watches Redis.
    pub fn tracker(self: &Arc<Self>) -> Tracker {
        Tracker { store: self.clone() }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        metrics::global().store_up.set(i64::from(up));
    }

    fn set_tracking(&self, up: bool) {
        self.tracking.store(up, Ordering::Release);
        if let Some(c) = &self.cache {
            c.set_tracking(up);
        }
        metrics::global().tracking_up.set(i64::from(up || self.cache.is_none()));
    }

    /// After this instance wrote `id`: drop what the local cache holds for it now, rather than
    /// when Redis pushes the invalidation back (a mint answered by the admin API must work on
    /// this instance at once, a revoke must apply at once). Other instances learn it through
    /// tracking.
    fn evict_local(&self, id: &TokenId) {
        if let Some(c) = &self.cache {
            c.evict(id);
        }
    }

    fn fail(&self, op: &str, e: impl std::fmt::Display) -> StoreError {
        metrics::global().store_errors.with_label_values(&[op]).inc();
        unavailable(e)
    }

    async fn scan_on<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        pattern: &str,
        keys: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| self.fail("scan", e))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Every key matching `pattern`, on every primary.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        match &self.conf.topology {
            Topology::Cluster { .. } => {
                let primaries = self.primaries.lock().map(|p| p.clone()).unwrap_or_default();
                if primaries.is_empty() {
                    return Err(StoreError::Unavailable("cluster primaries not discovered yet".into()));
                }
                for p in primaries {
                    let mut c = direct(&self.conf.topology.node_url(&p), &self.conf, None)
                        .await
                        .map_err(|e| self.fail("scan", e))?;
                    self.scan_on(&mut c, pattern, &mut keys).await?;
                }
            }
            _ => {
                let mut c = self.connection()?;
                self.scan_on(&mut c, pattern, &mut keys).await?;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

#[async_trait]
impl FragmentStore for RedisStore {
    async fn get(&self, tenant: &str, id: &TokenId) -> Result<Option<Arc<[u8]>>, StoreError> {
        if !self.up.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("Redis heartbeat failing".into()));
        }
        let ticket = match &self.cache {
            Some(c) => {
                match c.get(tenant, id) {
                    Some(Answer::Found(v)) => {
                        metrics::global().cache_hits.inc();
                        return Ok(Some(v));
                    }
                    Some(Answer::Absent) => {
                        metrics::global().cache_negative_hits.inc();
                        return Ok(None);
                    }
                    None => {}
                }
                metrics::global().cache_misses.inc();
                c.ticket()
            }
            None => None,
        };
        let mut conn = self.connection()?;
        let v: Option<Vec<u8>> = conn.get(self.key(tenant, id)).await.map_err(|e| self.fail("get", e))?;
        let v: Option<Arc<[u8]>> = v.map(Arc::from);
        if let Some(c) = &self.cache {
            // A record or "none": both stay coherent through the same invalidations.
            c.insert(ticket, tenant, id, v.clone());
        }
        Ok(v)
    }

    async fn put(&self, tenant: &str, id: &TokenId, record: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        let key = self.key(tenant, id);
        if is_tombstone(record).is_some() {
            conn.set_ex::<_, _, ()>(key, record, TOMBSTONE_TTL_SECS).await
        } else {
            conn.set::<_, _, ()>(key, record).await
        }
        .map_err(|e| self.fail("set", e))?;
        self.evict_local(id);
        Ok(())
    }

    async fn put_expiring(&self, tenant: &str, id: &TokenId, record: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        conn.set_ex::<_, _, ()>(self.key(tenant, id), record, ttl_secs.max(1))
            .await
            .map_err(|e| self.fail("set", e))?;
        self.evict_local(id);
        Ok(())
    }

    async fn get_fresh(&self, tenant: &str, id: &TokenId) -> Result<Option<Arc<[u8]>>, StoreError> {
        if !self.up.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("Redis heartbeat failing".into()));
        }
        let mut conn = self.connection()?;
        let v: Option<Vec<u8>> = conn.get(self.key(tenant, id)).await.map_err(|e| self.fail("get", e))?;
        Ok(v.map(Arc::from))
    }

    async fn replace_if(&self, tenant: &str, id: &TokenId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        // Atomic compare-and-set on one key (one slot, so also valid on a cluster).
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end",
        );
        let mut conn = self.connection()?;
        let n: i64 = script
            .key(self.key(tenant, id))
            .arg(old)
            .arg(new)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail("replace", e))?;
        if n == 1 {
            self.evict_local(id);
        }
        Ok(n == 1)
    }

    async fn purge(&self, tenant: &str) -> Result<u64, StoreError> {
        // The id goes into a SCAN pattern: `*` would match every tenant.
        if !crate::config::valid_tenant_id(tenant) {
            return Err(StoreError::Unavailable(format!(
                "refusing to purge {tenant:?}: not a tenant id"
            )));
        }
        let mut keys = self.scan(&format!("{}frag:{tenant}:*", self.conf.prefix)).await?;
        keys.push(format!("{}log:{tenant}", self.conf.prefix));
        let mut conn = self.connection()?;
        let mut n = 0u64;
        for k in &keys {
            // One key per command: a multi-key UNLINK across cluster slots is refused.
            let gone: u64 = redis::cmd("UNLINK")
                .arg(k)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail("unlink", e))?;
            n += gone;
            // This instance forgets at once; the others through their tracking invalidations.
            if let (Some(c), Some(id)) = (&self.cache, k.rsplit_once(':').and_then(|(_, id)| TokenId::parse(id))) {
                c.evict(&id);
            }
        }
        Ok(n)
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let pattern = match tenant {
            Some(t) => format!("{}frag:{t}:*", self.conf.prefix),
            None => format!("{}frag:*", self.conf.prefix),
        };
        let keys = self.scan(&pattern).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.connection()?;
        for k in &keys {
            // One GET per key: MGET across cluster slots is not allowed (admin path only).
            let v: Option<Vec<u8>> = conn.get(k).await.map_err(|e| self.fail("get", e))?;
            let Some(v) = v else { continue };
            let rest = &k[self.conf.prefix.len() + "frag:".len()..];
            let Some((t, id)) = rest.rsplit_once(':') else {
                continue;
            };
            let Some(id) = TokenId::parse(id) else {
                continue;
            };
            out.push(Entry {
                tenant: t.to_string(),
                id,
                record: v,
            });
        }
        out.sort_by(|a, b| (&a.tenant, a.id).cmp(&(&b.tenant, b.id)));
        Ok(out)
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            store_up: self.up.load(Ordering::Acquire),
            tracking_up: self.cache.is_none() || self.tracking.load(Ordering::Acquire),
        }
    }

    fn location(&self, tenant: &str, id: &TokenId) -> String {
        self.key(tenant, id)
    }
}
