//! Redis fragment store, shared by every Tessera instance.
//!
//! Key layout (documented in the README; security teams depend on it):
//! `<prefix>frag:<tenant>:<token id hex>` → sealed record (or a tombstone after an API revoke).
//! Default prefix `tessera:`, so `redis-cli DEL tessera:frag:acme:<id>` revokes.
//!
//! Data commands go through a `ConnectionManager` (reconnects; response and connect timeouts
//! from config). A second, dedicated RESP3 connection — the tracker, a background service —
//! registers `CLIENT TRACKING ON BCAST PREFIX <prefix>frag:`, feeds invalidations to the
//! local cache and pings Redis every `heartbeat_interval`. While the tracker is down the cache
//! is empty and unused; while the heartbeat fails, lookups fail closed at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, AsyncConnectionConfig, PushKind, Value};

use super::cache::FragmentCache;
use super::{Entry, FragmentStore, Readiness, StoreError, TOMBSTONE_TTL_SECS};
use crate::config::RedisConf;
use crate::metrics;
use crate::token::{is_tombstone, TokenId};

/// Shared Redis store with optional tracked cache.
pub struct RedisStore {
    conf: RedisConf,
    conn: ConnectionManager,
    cache: Option<FragmentCache>,
    /// Heartbeat state: false = fail closed.
    up: AtomicBool,
    tracking: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `url` with `protocol=resp3` added, for the tracking connection.
fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else if url.ends_with('/') || url.matches('/').count() > 2 {
        format!("{url}?protocol=resp3")
    } else {
        format!("{url}/?protocol=resp3")
    }
}

impl RedisStore {
    /// Build the store. Does not wait for Redis: an instance started while Redis is down
    /// refuses tokens (503) and becomes ready when the tracker connects.
    pub fn new(conf: RedisConf) -> Result<Arc<RedisStore>, StoreError> {
        let client = redis::Client::open(conf.url.as_str()).map_err(|e| unavailable(format!("store.url: {e}")))?;
        let mgr_conf = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(conf.connect_timeout))
            .set_response_timeout(Some(conf.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_conf).map_err(unavailable)?;
        let cache = conf
            .cache_enabled
            .then(|| FragmentCache::new(conf.cache_capacity, conf.cache_ttl, format!("{}frag:", conf.prefix)));
        Ok(Arc::new(RedisStore {
            conf,
            conn,
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

    /// A handle for other writers (session log streams).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
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

    fn fail(&self, op: &str, e: impl std::fmt::Display) -> StoreError {
        metrics::global().store_errors.with_label_values(&[op]).inc();
        unavailable(e)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail("scan", e))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
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
                if let Some(v) = c.get(tenant, id) {
                    metrics::global().cache_hits.inc();
                    return Ok(Some(v));
                }
                metrics::global().cache_misses.inc();
                c.ticket()
            }
            None => None,
        };
        let mut conn = self.conn.clone();
        let v: Option<Vec<u8>> = conn.get(self.key(tenant, id)).await.map_err(|e| self.fail("get", e))?;
        let v: Option<Arc<[u8]>> = v.map(Arc::from);
        if let (Some(c), Some(rec)) = (&self.cache, &v) {
            c.insert(ticket, tenant, id, rec.clone());
        }
        Ok(v)
    }

    async fn put(&self, tenant: &str, id: &TokenId, record: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(tenant, id);
        if is_tombstone(record).is_some() {
            conn.set_ex::<_, _, ()>(key, record, TOMBSTONE_TTL_SECS).await
        } else {
            conn.set::<_, _, ()>(key, record).await
        }
        .map_err(|e| self.fail("set", e))
    }

    async fn replace_if(&self, tenant: &str, id: &TokenId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        // Atomic compare-and-set; KEEPTTL is not needed since only untimed records are resealed.
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end",
        );
        let mut conn = self.conn.clone();
        let n: i64 = script
            .key(self.key(tenant, id))
            .arg(old)
            .arg(new)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail("replace", e))?;
        Ok(n == 1)
    }

    async fn delete(&self, tenant: &str, id: &TokenId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 = conn.del(self.key(tenant, id)).await.map_err(|e| self.fail("del", e))?;
        Ok(n > 0)
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let pattern = match tenant {
            Some(t) => format!("{}frag:{t}:*", self.conf.prefix),
            None => format!("{}frag:*", self.conf.prefix),
        };
        let keys = self.scan(&pattern).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            let vals: Vec<Option<Vec<u8>>> = conn.mget(chunk).await.map_err(|e| self.fail("mget", e))?;
            for (k, v) in chunk.iter().zip(vals) {
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

    fn redis(&self) -> Option<&RedisStore> {
        Some(self)
    }
}

/// Background service: tracking connection, invalidations, heartbeat.
pub struct Tracker {
    store: Arc<RedisStore>,
}

enum TrackEnd {
    Shutdown,
    /// Tracking ended; `established` says whether it had come up first.
    Lost {
        why: String,
        established: bool,
    },
}

impl Tracker {
    async fn run_once(&self, shutdown: &mut ShutdownWatch) -> TrackEnd {
        let s = &self.store;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match redis::Client::open(resp3_url(&s.conf.url)) {
            Ok(c) => c,
            Err(e) => {
                return TrackEnd::Lost {
                    why: e.to_string(),
                    established: false,
                }
            }
        };
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(s.conf.connect_timeout))
            .set_response_timeout(Some(s.conf.heartbeat_timeout))
            .set_push_sender(tx);
        let mut con = match client.get_multiplexed_async_connection_with_config(&cfg).await {
            Ok(c) => c,
            Err(e) => {
                return TrackEnd::Lost {
                    why: format!("connect: {e}"),
                    established: false,
                }
            }
        };
        if s.cache.is_some() {
            let res: redis::RedisResult<()> = redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("BCAST")
                .arg("PREFIX")
                .arg(format!("{}frag:", s.conf.prefix))
                .query_async(&mut con)
                .await;
            if let Err(e) = res {
                return TrackEnd::Lost {
                    why: format!("CLIENT TRACKING: {e}"),
                    established: false,
                };
            }
        }
        s.set_tracking(true);
        s.set_up(true);
        log::info!(
            "redis tracking established (cache {})",
            if s.cache.is_some() { "on" } else { "off" }
        );
        let lost = |why: String| TrackEnd::Lost { why, established: true };
        let mut beat = tokio::time::interval(s.conf.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return TrackEnd::Shutdown,
                msg = rx.recv() => {
                    let Some(p) = msg else { return lost("push channel closed".into()) };
                    match p.kind {
                        PushKind::Invalidate => self.invalidate(&p.data),
                        PushKind::Disconnection => return lost("disconnected".into()),
                        _ => {}
                    }
                }
                _ = beat.tick() => {
                    let ping = tokio::time::timeout(
                        s.conf.heartbeat_timeout,
                        redis::cmd("PING").query_async::<String>(&mut con),
                    ).await;
                    match ping {
                        Ok(Ok(_)) => s.set_up(true),
                        Ok(Err(e)) => return lost(format!("heartbeat: {e}")),
                        Err(_) => return lost("heartbeat timed out".into()),
                    }
                }
            }
        }
    }

    fn invalidate(&self, data: &[Value]) {
        let Some(cache) = &self.store.cache else {
            return;
        };
        match data.first() {
            Some(Value::Array(keys)) => {
                for k in keys {
                    if let Value::BulkString(b) = k {
                        cache.invalidate_key(b);
                    } else {
                        cache.flush();
                    }
                }
            }
            // A null invalidation means FLUSHALL/FLUSHDB: drop everything.
            _ => cache.flush(),
        }
    }
}

#[async_trait]
impl BackgroundService for Tracker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let s = &self.store;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.run_once(&mut shutdown).await {
                TrackEnd::Shutdown => return,
                TrackEnd::Lost { why, established } => {
                    s.set_tracking(false);
                    s.set_up(false);
                    if established {
                        backoff = Duration::from_millis(50);
                        log::warn!("redis tracking lost, refusing tokens until it is back: {why}");
                    } else {
                        log::debug!("redis not reachable yet: {why}");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resp3_url;

    #[test]
    fn resp3_urls() {
        assert_eq!(
            resp3_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379/?protocol=resp3"
        );
        assert_eq!(
            resp3_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0?protocol=resp3"
        );
        assert_eq!(resp3_url("redis://h:1/0?x=1"), "redis://h:1/0?x=1&protocol=resp3");
    }
}
