//! The tracker: a background service (not on the request path) that keeps the local cache
//! coherent and watches Redis. It opens a dedicated RESP3 connection to every primary,
//! registers `CLIENT TRACKING ON BCAST PREFIX <prefix>frag:`, feeds invalidations to the cache
//! (positive and negative entries alike), pings every `heartbeat_interval` and re-checks the
//! topology (Sentinel's primary, Cluster's slot map). Any loss turns tracking off, which
//! clears the cache and makes lookups fail closed until it is back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::{PushKind, Value};

use super::conn::{direct, manager, DataConn};
use super::RedisStore;
use crate::config::Topology;

/// Background service: tracking connections, invalidations, heartbeat, topology watch.
pub struct Tracker {
    pub(super) store: Arc<RedisStore>,
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
        match &s.conf.topology {
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
                                let url = s.conf.topology.node_url(&addr);
                                let m = manager(&s.conf, &url).map_err(|e| e.to_string())?;
                                s.conn.store(Some(Arc::new(DataConn::Single(m))));
                                if let Ok(mut p) = s.primary.lock() {
                                    *p = Some(addr.clone());
                                }
                                log::info!("redis sentinel: primary of {master:?} is {addr}");
                            }
                            return Ok((vec![s.conf.topology.node_url(&addr)], Watch::Sentinel(c, addr)));
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
                    .map(|p| s.conf.topology.node_url(p))
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
                    let urls = primaries.iter().map(|p| s.conf.topology.node_url(p)).collect();
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
                        Watch::Sentinel(c, addr) => match tokio::time::timeout(t, sentinel_master(c, match &s.conf.topology {
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
