//! Per-tenant session log: one record per request, written off the request path.
//!
//! The `logging` phase builds a `SessionRecord` and hands it to a bounded channel with
//! `try_send` (`SessionLogger::log`); when the channel is full the record is dropped and
//! `tessera_session_log_dropped_total{sink="channel"}` counts it. The `Writer` background
//! service wakes on the first record, lingers 20 ms, then drains up to 512 records as one
//! batch to the sinks:
//! - JSON lines on stdout and/or a file with size-based rotation (for SIEM shipping);
//! - per-tenant Redis Streams `<prefix>log:<tenant>` (`XADD … MAXLEN ~`, pipelined per batch,
//!   trimmed by age every minute) when the store is Redis;
//! - a capped in-memory ring per tenant (what the admin API reads with the embedded store).
//!
//! Records never hold a token, Part A or Part B: only the token id. Query string values are
//! replaced by `*`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::anomaly::Flags;
use crate::config::SessionLogConf;
use crate::fragments::redis::RedisStore;
use crate::metrics;
use crate::tenants::Tenant;
use crate::token::TokenId;

const MAX_PATH: usize = 1024;
const MAX_UA: usize = 256;
const BATCH: usize = 512;
/// After the first record of a batch arrives, the writer sleeps this long before draining, so
/// a busy proxy wakes it ~50 times a second instead of once per request (measured: waking per
/// record cost ~20 % of single-core throughput).
const LINGER: Duration = Duration::from_millis(20);

/// One request, as security teams read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// Unix milliseconds.
    pub ts: u64,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub method: String,
    pub host: String,
    /// Path with query values redacted.
    pub path: String,
    /// Status sent to the client (0 = none).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub request_id: String,
    /// Token verification outcome (`ok`, `revoked`, …), if a token was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// Why Tessera answered itself, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
}

/// `path?a=1&b` → `path?a=*&b`; capped at 1 KiB.
pub fn redact_path(pq: &str) -> String {
    let mut out = String::with_capacity(pq.len().min(MAX_PATH));
    match pq.split_once('?') {
        None => out.push_str(pq),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _)) => {
                        out.push_str(k);
                        out.push_str("=*");
                    }
                    None => out.push_str(pair),
                }
            }
        }
    }
    if out.len() > MAX_PATH {
        let mut cut = MAX_PATH;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

impl SessionRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: &Tenant,
        token_id: Option<TokenId>,
        ip: Option<IpAddr>,
        req: &RequestHeader,
        status: u16,
        upstream_status: Option<u16>,
        bytes_in: u64,
        bytes_out: u64,
        elapsed: Duration,
        request_id: Option<&HeaderValue>,
        verify: Option<&'static str>,
        refusal: Option<&'static str>,
        flags: Flags,
    ) -> SessionRecord {
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        SessionRecord {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            tenant: tenant.id.to_string(),
            token_id: token_id.map(|t| t.to_string()),
            client_ip: ip.map(|i| i.to_string()),
            user_agent: req.headers.get(http::header::USER_AGENT).map(|v| {
                let s = String::from_utf8_lossy(v.as_bytes());
                s.chars().take(MAX_UA).collect()
            }),
            method: req.method.as_str().to_string(),
            host: host.chars().take(255).collect(),
            path: redact_path(pq),
            status,
            upstream_status,
            bytes_in,
            bytes_out,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            request_id: request_id.and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            verify: verify.map(str::to_string),
            refusal: refusal.map(str::to_string),
            anomalies: flags.names().map(str::to_string).collect(),
        }
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SessionLogger {
    tx: Option<mpsc::Sender<SessionRecord>>,
}

impl SessionLogger {
    /// A logger that records nothing (session_log.enabled: false).
    pub fn disabled() -> SessionLogger {
        SessionLogger { tx: None }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue a record; drop and count it if the writer is behind.
    pub fn log(&self, rec: SessionRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(rec).is_err() {
                metrics::global()
                    .session_log_dropped
                    .with_label_values(&["channel"])
                    .inc();
            }
        }
    }
}

/// Filter for reading records back.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub token_id: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<u64>,
    pub limit: usize,
}

/// Owns the sinks and the in-memory rings; shared by the writer and the admin API.
pub struct SessionStore {
    conf: SessionLogConf,
    redis: Option<Arc<RedisStore>>,
    memory: Mutex<HashMap<String, VecDeque<SessionRecord>>>,
}

impl SessionStore {
    pub fn new(conf: SessionLogConf, redis: Option<Arc<RedisStore>>) -> Arc<SessionStore> {
        Arc::new(SessionStore {
            conf,
            redis,
            memory: Mutex::new(HashMap::new()),
        })
    }

    fn stream_key(&self, redis: &RedisStore, tenant: &str) -> String {
        format!("{}log:{tenant}", redis.prefix())
    }

    /// Recent records of a tenant, newest first: from Redis when configured, else memory.
    pub async fn query(&self, tenant: &str, q: &Query) -> Result<Vec<SessionRecord>, String> {
        let limit = q.limit.clamp(1, 10_000);
        let keep = |r: &SessionRecord| {
            q.token_id.as_deref().is_none_or(|t| r.token_id.as_deref() == Some(t)) && q.since.is_none_or(|s| r.ts >= s)
        };
        if let (Some(redis), true) = (&self.redis, self.conf.redis_stream) {
            let mut conn = redis.connection().map_err(|e| e.to_string())?;
            let start = q.since.map_or("-".to_string(), |s| s.to_string());
            // Read more than `limit` when filtering by token, bounded.
            let count = if q.token_id.is_some() {
                (limit * 20).min(50_000)
            } else {
                limit
            };
            let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(self.stream_key(redis, tenant))
                .arg("+")
                .arg(start)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let mut out = Vec::new();
            for e in entries.ids {
                let Some(v) = e.get::<Vec<u8>>("r") else {
                    continue;
                };
                if let Ok(r) = serde_json::from_slice::<SessionRecord>(&v) {
                    if keep(&r) {
                        out.push(r);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        let mem = self.memory.lock().map_err(|e| e.to_string())?;
        Ok(mem
            .get(tenant)
            .map(|ring| ring.iter().rev().filter(|r| keep(r)).take(limit).cloned().collect())
            .unwrap_or_default())
    }
}

/// Create the logger (request side) and the writer service (sink side).
pub fn channel(store: Arc<SessionStore>) -> (SessionLogger, Writer) {
    if !store.conf.enabled {
        return (
            SessionLogger::disabled(),
            Writer {
                rx: Mutex::new(None),
                store,
            },
        );
    }
    let (tx, rx) = mpsc::channel(store.conf.channel_capacity);
    (
        SessionLogger { tx: Some(tx) },
        Writer {
            rx: Mutex::new(Some(rx)),
            store,
        },
    )
}

/// Background service draining the channel into the sinks.
pub struct Writer {
    rx: Mutex<Option<mpsc::Receiver<SessionRecord>>>,
    store: Arc<SessionStore>,
}

struct FileSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max: u64,
    keep: usize,
}

impl FileSink {
    fn open(path: PathBuf, max: u64, keep: usize) -> FileSink {
        let mut s = FileSink {
            path,
            file: None,
            size: 0,
            max,
            keep,
        };
        s.reopen();
        s
    }

    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => {
                log::error!("session log file {}: {e}", self.path.display());
                self.file = None;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        for i in (1..self.keep).rev() {
            let from = self.path.with_extension(format!("{i}"));
            let to = self.path.with_extension(format!("{}", i + 1));
            let _ = std::fs::rename(from, to);
        }
        let _ = std::fs::rename(&self.path, self.path.with_extension("1"));
        self.reopen();
    }

    fn write(&mut self, buf: &[u8], n: usize) {
        if self.size + buf.len() as u64 > self.max && self.size > 0 {
            self.rotate();
        }
        let ok = match &mut self.file {
            Some(f) => f.write_all(buf).is_ok(),
            None => false,
        };
        if ok {
            self.size += buf.len() as u64;
            metrics::global()
                .session_log_written
                .with_label_values(&["file"])
                .inc_by(n as u64);
        } else {
            metrics::global()
                .session_log_dropped
                .with_label_values(&["file"])
                .inc_by(n as u64);
            self.reopen();
        }
    }
}

impl Writer {
    async fn write_batch(&self, batch: &[SessionRecord], file: &mut Option<FileSink>, lines: &mut Vec<u8>) {
        let conf = &self.store.conf;
        lines.clear();
        for r in batch {
            if serde_json::to_writer(&mut *lines, r).is_ok() {
                lines.push(b'\n');
            }
        }
        if conf.stdout {
            let mut out = std::io::stdout().lock();
            if out.write_all(lines).and_then(|_| out.flush()).is_ok() {
                metrics::global()
                    .session_log_written
                    .with_label_values(&["stdout"])
                    .inc_by(batch.len() as u64);
            } else {
                metrics::global()
                    .session_log_dropped
                    .with_label_values(&["stdout"])
                    .inc_by(batch.len() as u64);
            }
        }
        if let Some(f) = file {
            f.write(lines, batch.len());
        }
        if let Ok(mut mem) = self.store.memory.lock() {
            for r in batch {
                let ring = mem.entry(r.tenant.clone()).or_default();
                if ring.len() >= conf.memory_per_tenant.max(1) {
                    ring.pop_front();
                }
                ring.push_back(r.clone());
            }
        }
        if let (Some(redis), true) = (&self.store.redis, conf.redis_stream) {
            // One pipeline per tenant: each stream is one key (one slot on a cluster).
            let mut by_tenant: Vec<(&str, redis::Pipeline, u64)> = Vec::new();
            for r in batch {
                let Ok(json) = serde_json::to_vec(r) else { continue };
                let i = match by_tenant.iter().position(|(t, _, _)| *t == r.tenant.as_str()) {
                    Some(i) => i,
                    None => {
                        by_tenant.push((r.tenant.as_str(), redis::pipe(), 0));
                        by_tenant.len() - 1
                    }
                };
                let (_, pipe, n) = &mut by_tenant[i];
                pipe.cmd("XADD")
                    .arg(self.store.stream_key(redis, &r.tenant))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(conf.stream_maxlen)
                    .arg("*")
                    .arg("r")
                    .arg(json)
                    .ignore();
                *n += 1;
            }
            for (_, pipe, n) in by_tenant {
                let res = match redis.connection() {
                    Ok(mut conn) => pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match res {
                    Ok(()) => metrics::global()
                        .session_log_written
                        .with_label_values(&["redis"])
                        .inc_by(n),
                    Err(e) => {
                        log::warn!("session log: redis stream write failed: {e}");
                        metrics::global()
                            .session_log_dropped
                            .with_label_values(&["redis"])
                            .inc_by(n);
                    }
                }
            }
        }
    }

    async fn trim_by_age(&self) {
        let Some(redis) = &self.store.redis else {
            return;
        };
        if !self.store.conf.redis_stream {
            return;
        }
        let tenants: Vec<String> = self
            .store
            .memory
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let min_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(self.store.conf.stream_max_age.as_millis() as u64);
        let Ok(mut conn) = redis.connection() else { return };
        for t in tenants {
            let _: Result<(), _> = redis::cmd("XTRIM")
                .arg(self.store.stream_key(redis, &t))
                .arg("MINID")
                .arg("~")
                .arg(min_ms)
                .query_async(&mut conn)
                .await;
        }
    }
}

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let conf = &self.store.conf;
        let mut file = conf
            .file
            .clone()
            .map(|p| FileSink::open(p, conf.file_max_bytes, conf.file_keep.max(1)));
        let mut batch: Vec<SessionRecord> = Vec::with_capacity(BATCH);
        let mut lines = Vec::with_capacity(64 * 1024);
        let mut trim = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    if batch.len() < BATCH {
                        tokio::time::sleep(LINGER).await;
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                    self.write_batch(&batch, &mut file, &mut lines).await;
                    batch.clear();
                }
                _ = trim.tick() => self.trim_by_age().await,
                _ = shutdown.changed() => {
                    // Drain what is queued so a graceful stop loses nothing.
                    while let Ok(r) = rx.try_recv() {
                        batch.push(r);
                        if batch.len() == BATCH {
                            self.write_batch(&batch, &mut file, &mut lines).await;
                            batch.clear();
                        }
                    }
                    if !batch.is_empty() {
                        self.write_batch(&batch, &mut file, &mut lines).await;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let mut f = FileSink::open(path.clone(), 100, 2);
        let line = [b'x'; 60];
        for _ in 0..5 {
            f.write(&line, 1);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 60);
        assert_eq!(std::fs::metadata(path.with_extension("1")).unwrap().len(), 60);
        assert!(path.with_extension("2").exists());
        assert!(!path.with_extension("3").exists(), "keeps only file_keep rotated files");
    }

    #[test]
    fn query_values_redacted() {
        assert_eq!(redact_path("/v1/x?token=abc&flag&b=2"), "/v1/x?token=*&flag&b=*");
        assert_eq!(redact_path("/plain"), "/plain");
        let long = format!("/{}", "é".repeat(2000));
        assert!(redact_path(&long).len() <= MAX_PATH);
    }
}
