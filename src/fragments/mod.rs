//! The fragment store: where Part B records live.
//!
//! Read on the request path in `request_filter` (`get`, once per request, answered from
//! memory for the embedded store and from the tracked local cache for Redis); written only by
//! the admin path. Two implementations:
//! - `embedded` (default): a `redb` file, crash-safe, mirrored in memory so reads never touch
//!   the disk; one process owns the file. Found and not found cost the same two hash lookups
//!   under a read lock, so it needs no negative cache.
//! - `redis` (`redis/`): shared by many instances; `redis-cli DEL <prefix>frag:<tenant>:<id>`
//!   revokes. A local cache of records and of ids Redis does not have is kept coherent with
//!   client-side tracking (`cache.rs`).
//!
//! The Redis topology (`config::Topology`) is parsed by `config`; this module only consumes it.
//!
//! Every lookup answers found / not found / unavailable. Unavailable is an error the proxy
//! turns into `503` + `Retry-After`: there is no fail-open path.

pub mod cache;
pub mod redis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::token::TokenId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time or the connection is down. Requests fail closed.
    #[error("fragment store unavailable: {0}")]
    Unavailable(String),
    /// The embedded database could not be opened or written.
    #[error("embedded store {path}: {reason}")]
    Embedded { path: String, reason: String },
}

/// A stored record with the tenant and id it belongs to.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant: String,
    pub id: TokenId,
    pub record: Vec<u8>,
}

/// Health, for `/readyz` and the metrics.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Readiness {
    /// The store answered its last check.
    pub store_up: bool,
    /// Revocation tracking is established (always true where not applicable).
    pub tracking_up: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.store_up && self.tracking_up
    }
}

/// How long tombstones left by `revoke` are kept (Redis TTL), so refusals are counted as
/// `revoked` rather than `unknown` for a while.
pub const TOMBSTONE_TTL_SECS: u64 = 30 * 24 * 3600;

/// Storage of sealed Part B records, keyed by (tenant, token id).
#[async_trait]
pub trait FragmentStore: Send + Sync {
    /// The sealed record, `None` if there is none.
    async fn get(&self, tenant: &str, id: &TokenId) -> Result<Option<Arc<[u8]>>, StoreError>;
    /// Create or replace a record.
    async fn put(&self, tenant: &str, id: &TokenId, record: &[u8]) -> Result<(), StoreError>;
    /// Create or replace a record that may be dropped after `ttl_secs` (Redis `SET … EX`): an
    /// OAuth access record past its expiry, a revoked grant. The embedded store keeps it.
    async fn put_expiring(&self, tenant: &str, id: &TokenId, record: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let _ = ttl_secs;
        self.put(tenant, id, record).await
    }
    /// The record as the store holds it now, bypassing any local cache (the OAuth grant
    /// checks, which must not act on a cached copy).
    async fn get_fresh(&self, tenant: &str, id: &TokenId) -> Result<Option<Arc<[u8]>>, StoreError> {
        self.get(tenant, id).await
    }
    /// Replace `old` with `new` only if the record is still `old` (re-sealing must not undo a
    /// concurrent revoke). Returns whether it was replaced.
    async fn replace_if(&self, tenant: &str, id: &TokenId, old: &[u8], new: &[u8]) -> Result<bool, StoreError>;
    /// Every record of `tenant`, or of all tenants.
    async fn list(&self, tenant: Option<&str>) -> Result<Vec<Entry>, StoreError>;
    /// Delete every record of `tenant` (tokens, tombstones, grants) and, in Redis, its session
    /// log stream: `DELETE /v1/tenants/{id}?purge=true`, after the tenant itself is gone.
    /// Returns how many keys were deleted. Admin path only.
    async fn purge(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Current health.
    fn readiness(&self) -> Readiness;
    /// Where a record lives, for humans (`redis-cli DEL` target or embedded key).
    fn location(&self, tenant: &str, id: &TokenId) -> String;
}

/// One tenant's records in memory.
type TenantRecords = HashMap<TokenId, Arc<[u8]>>;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("fragments");

fn embedded_key(tenant: &str, id: &TokenId) -> String {
    format!("{tenant}/{id}")
}

/// Single-instance store: a `redb` file mirrored in memory.
pub struct EmbeddedStore {
    path: PathBuf,
    /// `None` after `release` (handed over to an upgraded process): reads still work from
    /// memory, writes fail.
    db: RwLock<Option<Arc<redb::Database>>>,
    map: RwLock<HashMap<Box<str>, TenantRecords>>,
    /// Serialises writers so `replace_if` is atomic with respect to other writes.
    write_lock: tokio::sync::Mutex<()>,
}

impl EmbeddedStore {
    /// Open (or create) the database file and load it into memory.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let err = |reason: String| StoreError::Embedded {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
        }
        let db = redb::Database::create(path).map_err(|e| err(format!("{e} (is another Tessera using this file?)")))?;
        let mut map: HashMap<Box<str>, TenantRecords> = HashMap::new();
        {
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            w.open_table(TABLE).map_err(|e| err(e.to_string()))?;
            w.commit().map_err(|e| err(e.to_string()))?;
            let r = db.begin_read().map_err(|e| err(e.to_string()))?;
            let t = r.open_table(TABLE).map_err(|e| err(e.to_string()))?;
            for item in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = item.map_err(|e| err(e.to_string()))?;
                if let Some((tenant, id)) = k.value().split_once('/') {
                    if let Some(id) = TokenId::parse(id) {
                        map.entry(Box::from(tenant))
                            .or_default()
                            .insert(id, Arc::from(v.value()));
                    }
                }
            }
        }
        Ok(EmbeddedStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            map: RwLock::new(map),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Open, retrying while another process (the one being upgraded away from) still holds
    /// the file, for up to `wait`.
    pub fn open_with_retry(path: &Path, wait: std::time::Duration) -> Result<EmbeddedStore, StoreError> {
        let start = std::time::Instant::now();
        loop {
            match Self::open(path) {
                Ok(s) => return Ok(s),
                Err(e) if start.elapsed() < wait => {
                    log::debug!("waiting for the embedded store: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Close the database file so an upgraded process can open it; records stay readable
    /// from memory for requests still draining here.
    pub fn release(&self) {
        if let Ok(mut d) = self.db.write() {
            if d.take().is_some() {
                log::info!(
                    "embedded store {} released for the upgraded process",
                    self.path.display()
                );
            }
        }
    }

    /// The open database (other tables than the fragments': API tenants, `crate::runtime`);
    /// `None` after `release`.
    pub fn database(&self) -> Option<Arc<redb::Database>> {
        self.db.read().ok().and_then(|d| d.clone())
    }

    fn err(&self, reason: impl ToString) -> StoreError {
        StoreError::Embedded {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Write one key durably, off the async threads. (A revoke writes a tombstone; only a
    /// tenant purge deletes.)
    async fn write(&self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        let db =
            self.db.read().ok().and_then(|d| d.clone()).ok_or_else(|| {
                self.err("released to an upgraded Tessera process; send admin requests to the new one")
            })?;
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let w = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut t = w.open_table(TABLE).map_err(|e| e.to_string())?;
                t.insert(key.as_str(), value.as_slice()).map_err(|e| e.to_string())?;
            }
            w.commit().map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(e)),
            Err(e) => Err(self.err(e)),
        }
    }

    fn set_mem(&self, tenant: &str, id: &TokenId, value: &[u8]) {
        if let Ok(mut m) = self.map.write() {
            m.entry(Box::from(tenant)).or_default().insert(*id, Arc::from(value));
        }
    }

    fn get_mem(&self, tenant: &str, id: &TokenId) -> Option<Arc<[u8]>> {
        let m = self.map.read().ok()?;
        m.get(tenant)?.get(id).cloned()
    }
}

#[async_trait]
impl FragmentStore for EmbeddedStore {
    async fn get(&self, tenant: &str, id: &TokenId) -> Result<Option<Arc<[u8]>>, StoreError> {
        Ok(self.get_mem(tenant, id))
    }

    async fn put(&self, tenant: &str, id: &TokenId, record: &[u8]) -> Result<(), StoreError> {
        let _g = self.write_lock.lock().await;
        self.write(embedded_key(tenant, id), record.to_vec()).await?;
        self.set_mem(tenant, id, record);
        Ok(())
    }

    async fn replace_if(&self, tenant: &str, id: &TokenId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let _g = self.write_lock.lock().await;
        if self.get_mem(tenant, id).as_deref() != Some(old) {
            return Ok(false);
        }
        self.write(embedded_key(tenant, id), new.to_vec()).await?;
        self.set_mem(tenant, id, new);
        Ok(true)
    }

    async fn purge(&self, tenant: &str) -> Result<u64, StoreError> {
        if !crate::config::valid_tenant_id(tenant) {
            return Err(self.err(format!("refusing to purge {tenant:?}: not a tenant id")));
        }
        let _w = self.write_lock.lock().await;
        let db =
            self.db.read().ok().and_then(|d| d.clone()).ok_or_else(|| {
                self.err("released to an upgraded Tessera process; send admin requests to the new one")
            })?;
        let prefix = format!("{tenant}/");
        let res = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let w = db.begin_write().map_err(|e| e.to_string())?;
            let n = {
                let mut t = w.open_table(TABLE).map_err(|e| e.to_string())?;
                let gone = t
                    .extract_if(|k, _| k.starts_with(prefix.as_str()))
                    .map_err(|e| e.to_string())?
                    .count();
                gone as u64
            };
            w.commit().map_err(|e| e.to_string())?;
            Ok(n)
        })
        .await;
        let n = match res {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(self.err(e)),
            Err(e) => return Err(self.err(e)),
        };
        if let Ok(mut m) = self.map.write() {
            m.remove(tenant);
        }
        Ok(n)
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let m = self.map.read().map_err(|e| self.err(e))?;
        let mut out: Vec<Entry> = m
            .iter()
            .filter(|(t, _)| tenant.is_none_or(|want| &***t == want))
            .flat_map(|(t, ids)| {
                ids.iter().map(move |(id, v)| Entry {
                    tenant: t.to_string(),
                    id: *id,
                    record: v.to_vec(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, a.id).cmp(&(&b.tenant, b.id)));
        Ok(out)
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            store_up: true,
            tracking_up: true,
        }
    }

    fn location(&self, tenant: &str, id: &TokenId) -> String {
        format!("{}#{}", self.path.display(), embedded_key(tenant, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/t.redb");
        let id = TokenId([7; 16]);
        {
            let s = EmbeddedStore::open(&path).unwrap();
            s.put("acme", &id, b"rec1").await.unwrap();
            assert!(!s.replace_if("acme", &id, b"nope", b"rec2").await.unwrap());
            assert!(s.replace_if("acme", &id, b"rec1", b"rec2").await.unwrap());
            s.put("globex", &TokenId([8; 16]), b"g").await.unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.get("acme", &id).await.unwrap().as_deref(), Some(&b"rec2"[..]));
        assert!(s.get("globex", &id).await.unwrap().is_none());
        assert_eq!(s.list(Some("acme")).await.unwrap().len(), 1);
        assert_eq!(s.list(None).await.unwrap().len(), 2);
    }

    #[test]
    fn second_process_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let _a = EmbeddedStore::open(&path).unwrap();
        let e = EmbeddedStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("another Tessera"), "{e}");
    }
}
