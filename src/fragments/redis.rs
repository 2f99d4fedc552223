//! Redis fragment store, shared by every Tessera instance.
//!
//! Key layout (documented in the README; security teams depend on it):
//! `<prefix>frag:<tenant>:<token id hex>` → sealed record (or a tombstone after an API revoke).
//! Default prefix `tessera:`, so `redis-cli DEL tessera:frag:acme:<id>` revokes.
//!
//! Data commands go through `DataConn`: a `ConnectionManager` (standalone, or the primary
//! found through Sentinel) or the cluster client (Redis Cluster), with response and connect
//! timeouts from config. The tracker — a background service — opens a dedicated RESP3
//! connection to every primary, registers `CLIENT TRACKING ON BCAST PREFIX <prefix>frag:`,
//! feeds invalidations to the local cache, pings every `heartbeat_interval` and re-checks the
//! topology (Sentinel's primary, Cluster's slot map). While the tracker is down the cache is
//! empty and unused, and lookups fail closed at once; a failover or reshard ends tracking, so
//! the cache is cleared and rebuilt against the new topology.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, Cmd, Pipeline, PushKind, RedisFuture, Value};

use super::cache::FragmentCache;
use super::topology::Topology;
use super::{Entry, FragmentStore, Readiness, StoreError, TOMBSTONE_TTL_SECS};
use crate::config::RedisConf;
use crate::metrics;
use crate::token::{is_tombstone, TokenId};

/// Where data commands go.
#[derive(Clone)]
pub enum DataConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for DataConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            DataConn::Single(c) => c.req_packed_command(cmd),
            DataConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            DataConn::Single(c) => c.req_packed_commands(p, offset, count),
            DataConn::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            DataConn::Single(c) => c.get_db(),
            DataConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Shared Redis store with optional tracked cache.
pub struct RedisStore {
    conf: RedisConf,
    topology: Topology,
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
    /// refuses tokens (503) and becomes ready when the tracker connects. Call within a Tokio
    /// runtime that outlives the store (the connection manager spawns its tasks there).
    pub fn new(conf: RedisConf) -> Result<Arc<RedisStore>, StoreError> {
        let topology = Topology::parse(&conf.url).map_err(|e| unavailable(format!("store.url: {e}")))?;
        let conn = match &topology {
            Topology::Standalone { url } => Some(Arc::new(DataConn::Single(Self::manager(&conf, url)?))),
            // Found by the tracker.
            Topology::Sentinel { .. } | Topology::Cluster { .. } => None,
        };
        let cache = conf
            .cache_enabled
            .then(|| FragmentCache::new(conf.cache_capacity, conf.cache_ttl, format!("{}frag:", conf.prefix)));
        Ok(Arc::new(RedisStore {
            conf,
            topology,
            conn: ArcSwapOption::new(conn),
            primary: Mutex::new(None),
            primaries: Mutex::new(Vec::new()),
            cache,
            up: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
        }))
    }

    fn manager(conf: &RedisConf, url: &str) -> Result<ConnectionManager, StoreError> {
        let client = client(conf, url).map_err(|e| unavailable(format!("store.url: {e}")))?;
        let mgr_conf = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(conf.connect_timeout))
            .set_response_timeout(Some(conf.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, mgr_conf).map_err(unavailable)
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
        match &self.topology {
            Topology::Cluster { .. } => {
                let primaries = self.primaries.lock().map(|p| p.clone()).unwrap_or_default();
                if primaries.is_empty() {
                    return Err(StoreError::Unavailable("cluster primaries not discovered yet".into()));
                }
                for p in primaries {
                    let mut c = direct(&self.topology.node_url(&p), &self.conf, None)
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

/// A client for `url`, trusting `store.tls_ca` for `rediss://` when configured.
fn client(conf: &RedisConf, url: &str) -> redis::RedisResult<redis::Client> {
    match &conf.tls_ca_pem {
        Some(ca) if url.starts_with("rediss") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

/// A plain multiplexed connection to one node (tracking, sentinel queries, per-node scans).
async fn direct(
    url: &str,
    conf: &RedisConf,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<MultiplexedConnection, String> {
    let url = if push.is_some() {
        resp3_url(url)
    } else {
        url.to_string()
    };
    let client = client(conf, &url).map_err(|e| e.to_string())?;
    let mut cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(conf.connect_timeout))
        .set_response_timeout(Some(conf.heartbeat_timeout.max(conf.response_timeout)));
    if let Some(tx) = push {
        cfg = cfg.set_push_sender(tx);
    }
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())
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
        let mut conn = self.connection()?;
        let v: Option<Vec<u8>> = conn.get(self.key(tenant, id)).await.map_err(|e| self.fail("get", e))?;
        let v: Option<Arc<[u8]>> = v.map(Arc::from);
        if let (Some(c), Some(rec)) = (&self.cache, &v) {
            c.insert(ticket, tenant, id, rec.clone());
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
        .map_err(|e| self.fail("set", e))
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
        Ok(n == 1)
    }

    async fn delete(&self, tenant: &str, id: &TokenId) -> Result<bool, StoreError> {
        let mut conn = self.connection()?;
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

    fn redis(&self) -> Option<&RedisStore> {
        Some(self)
    }
}

/// Background service: tracking connections, invalidations, heartbeat, topology watch.
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

/// What the tracker watches for a topology change.
enum Watch {
    None,
    /// Sentinel connection and the primary we track.
    Sentinel(MultiplexedConnection, String),
    /// A connection to a primary and the slot-map signature we track.
    Cluster(MultiplexedConnection, String),
}

/// Ask one sentinel for the primary's `host:port`.
async fn sentinel_master(conn: &mut MultiplexedConnection, master: &str) -> Result<String, String> {
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    addr.map(|(h, p)| format!("{h}:{p}"))
        .ok_or_else(|| format!("sentinel does not know master {master:?}"))
}

/// `CLUSTER SLOTS` → (primaries, signature of the slot map).
async fn cluster_map(conn: &mut MultiplexedConnection) -> Result<(Vec<String>, String), String> {
    let v: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    let Value::Array(ranges) = v else {
        return Err("unexpected CLUSTER SLOTS reply".into());
    };
    let mut primaries = Vec::new();
    let mut sig = Vec::new();
    for r in ranges {
        let Value::Array(items) = r else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (items.first(), items.get(1), items.get(2))
        else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = node.get(1) else { continue };
        let hp = format!("{host}:{port}");
        sig.push(format!("{start}-{end}@{hp}"));
        if !primaries.contains(&hp) {
            primaries.push(hp);
        }
    }
    if primaries.is_empty() {
        return Err("cluster has no slots assigned yet".into());
    }
    sig.sort();
    primaries.sort();
    Ok((primaries, sig.join(",")))
}

impl Tracker {
    /// Find the primaries to track, set up the data connection, and what to watch.
    async fn discover(&self) -> Result<(Vec<String>, Watch), String> {
        let s = &self.store;
        match &s.topology {
            Topology::Standalone { url } => Ok((vec![url.clone()], Watch::None)),
            Topology::Sentinel { sentinels, master, .. } => {
                let mut last = String::from("no sentinel answered");
                for sentinel in sentinels {
                    let mut c = match direct(sentinel, &s.conf, None).await {
                        Ok(c) => c,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    };
                    match sentinel_master(&mut c, master).await {
                        Ok(addr) => {
                            let changed = s
                                .primary
                                .lock()
                                .map(|p| p.as_deref() != Some(addr.as_str()))
                                .unwrap_or(true);
                            if changed {
                                let url = s.topology.node_url(&addr);
                                let m = RedisStore::manager(&s.conf, &url).map_err(|e| e.to_string())?;
                                s.conn.store(Some(Arc::new(DataConn::Single(m))));
                                if let Ok(mut p) = s.primary.lock() {
                                    *p = Some(addr.clone());
                                }
                                log::info!("redis sentinel: primary of {master:?} is {addr}");
                            }
                            return Ok((vec![s.topology.node_url(&addr)], Watch::Sentinel(c, addr)));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(format!("sentinel: {last}"))
            }
            Topology::Cluster { nodes, .. } => {
                let known = s.primaries.lock().map(|p| p.clone()).unwrap_or_default();
                let mut last = String::from("no cluster node answered");
                for node in known
                    .iter()
                    .map(|p| s.topology.node_url(p))
                    .chain(nodes.iter().cloned())
                {
                    let mut c = match direct(&node, &s.conf, None).await {
                        Ok(c) => c,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    };
                    let (primaries, sig) = match cluster_map(&mut c).await {
                        Ok(m) => m,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    };
                    if s.conn.load().is_none() {
                        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                            .connection_timeout(s.conf.connect_timeout)
                            .response_timeout(s.conf.response_timeout)
                            .retries(1);
                        if let Some(ca) = &s.conf.tls_ca_pem {
                            builder = builder.certs(redis::TlsCertificates {
                                client_tls: None,
                                root_cert: Some(ca.clone()),
                            });
                        }
                        let client = builder.build().map_err(|e| e.to_string())?;
                        let cc = client.get_async_connection().await.map_err(|e| e.to_string())?;
                        s.conn.store(Some(Arc::new(DataConn::Cluster(cc))));
                    }
                    if let Ok(mut p) = s.primaries.lock() {
                        *p = primaries.clone();
                    }
                    let urls = primaries.iter().map(|p| s.topology.node_url(p)).collect();
                    return Ok((urls, Watch::Cluster(c, sig)));
                }
                Err(format!("cluster: {last}"))
            }
        }
    }

    async fn run_once(&self, shutdown: &mut ShutdownWatch) -> TrackEnd {
        let s = &self.store;
        let not_up = |why: String| TrackEnd::Lost {
            why,
            established: false,
        };
        let (targets, mut watch) = match self.discover().await {
            Ok(t) => t,
            Err(e) => return not_up(e),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut conns = Vec::with_capacity(targets.len());
        for url in &targets {
            let mut con = match direct(url, &s.conf, Some(tx.clone())).await {
                Ok(c) => c,
                Err(e) => return not_up(format!("connect: {e}")),
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
                    return not_up(format!("CLIENT TRACKING: {e}"));
                }
            }
            conns.push(con);
        }
        drop(tx);
        s.set_tracking(true);
        s.set_up(true);
        log::info!(
            "redis tracking established on {} primary(ies) (cache {})",
            conns.len(),
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
                    let t = s.conf.heartbeat_timeout;
                    for con in conns.iter_mut() {
                        match tokio::time::timeout(t, redis::cmd("PING").query_async::<String>(con)).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return lost(format!("heartbeat: {e}")),
                            Err(_) => return lost("heartbeat timed out".into()),
                        }
                    }
                    match &mut watch {
                        Watch::None => {}
                        Watch::Sentinel(c, addr) => match tokio::time::timeout(t, sentinel_master(c, match &s.topology {
                            Topology::Sentinel { master, .. } => master,
                            _ => "",
                        })).await {
                            Ok(Ok(now)) if now == *addr => {}
                            Ok(Ok(now)) => return lost(format!("sentinel failover: primary {addr} → {now}")),
                            Ok(Err(e)) => return lost(format!("sentinel: {e}")),
                            Err(_) => return lost("sentinel timed out".into()),
                        },
                        Watch::Cluster(c, sig) => match tokio::time::timeout(t, cluster_map(c)).await {
                            Ok(Ok((_, now))) if now == *sig => {}
                            Ok(Ok(_)) => return lost("cluster topology changed (failover or reshard)".into()),
                            Ok(Err(e)) => return lost(format!("cluster: {e}")),
                            Err(_) => return lost("cluster slot check timed out".into()),
                        },
                    }
                    s.set_up(true);
                }
            }
        }
    }

    fn invalidate(&self, data: &[Value]) {
        let Some(cache) = &self.store.cache else { return };
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
