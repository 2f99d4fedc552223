//! Where tenants created through the admin API are kept: beside the fragments, in Redis (shared
//! by every instance) or in the embedded database. Admin path and the tenant sync loop only;
//! never on the request path.
//!
//! Each tenant is a JSON definition (`api::TenantDef`, private key sealed) with the version it
//! was written at; a global version is bumped by every write, so an instance checks one
//! number to know whether anything changed, then the per-tenant versions to fetch only what
//! did. Redis keys (one hash slot, `{tenants}`, so a cluster runs the scripts too):
//! `<prefix>{tenants}:meta` (hash, field `version`: the counter), `<prefix>{tenants}:defs`
//! (hash id → JSON),
//! `<prefix>{tenants}:versions` (hash id → version). Writes are Lua scripts (atomic: a create
//! cannot overwrite, an update cannot resurrect a deleted tenant).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::fragments::redis::RedisStore;
use crate::fragments::{EmbeddedStore, StoreError};

/// A stored definition and its version.
pub struct Stored {
    pub version: u64,
    pub json: Vec<u8>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written at this version (the new global version).
    At(u64),
    /// A create found the id taken.
    Exists,
    /// An update or delete found no such id.
    Missing,
    /// A hostname is another API tenant's (written by another instance since this one synced).
    Taken,
    /// An update found the tenant at another version than the one it was based on.
    Changed,
}

/// Storage of API tenant definitions.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// The global version: changes with every write.
    async fn version(&self) -> Result<u64, StoreError>;
    /// Every stored tenant's version.
    async fn versions(&self) -> Result<HashMap<String, u64>, StoreError>;
    /// The definitions of `ids` (absent ones are skipped).
    async fn get(&self, ids: &[String]) -> Result<Vec<(String, Stored)>, StoreError>;
    /// Create (`base: None`) or replace an existing definition still at version `base`
    /// (compare-and-set: a change made meanwhile elsewhere is not overwritten). `hostnames`
    /// (lower case) are claimed for `id` in the same atomic step.
    async fn put(&self, id: &str, json: &[u8], hostnames: &[String], base: Option<u64>) -> Result<Written, StoreError>;
    async fn delete(&self, id: &str) -> Result<Written, StoreError>;
}

// === Redis ===

// KEYS: meta, defs, versions, hosts (hostname -> id), hostsof (id -> hostnames, space-separated).
// ARGV: id, json, 'create' | base version, hostname...
const PUT: &str = r"
local exists = redis.call('HEXISTS', KEYS[2], ARGV[1])
if ARGV[3] == 'create' then
  if exists == 1 then return -1 end
else
  if exists == 0 then return -2 end
  if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[3] then return -4 end
end
for i = 4, #ARGV do
  local owner = redis.call('HGET', KEYS[4], ARGV[i])
  if owner and owner ~= ARGV[1] then return -3 end
end
local old = redis.call('HGET', KEYS[5], ARGV[1])
if old then
  for h in string.gmatch(old, '%S+') do
    if redis.call('HGET', KEYS[4], h) == ARGV[1] then redis.call('HDEL', KEYS[4], h) end
  end
end
local list = {}
for i = 4, #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[1])
  list[#list + 1] = ARGV[i]
end
redis.call('HSET', KEYS[5], ARGV[1], table.concat(list, ' '))
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], v)
return v
";

const DELETE: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return -2 end
redis.call('HDEL', KEYS[3], ARGV[1])
local old = redis.call('HGET', KEYS[5], ARGV[1])
if old then
  for h in string.gmatch(old, '%S+') do
    if redis.call('HGET', KEYS[4], h) == ARGV[1] then redis.call('HDEL', KEYS[4], h) end
  end
  redis.call('HDEL', KEYS[5], ARGV[1])
end
return redis.call('HINCRBY', KEYS[1], 'version', 1)
";

/// API tenants in Redis (see the module doc for the keys).
pub struct RedisTenants {
    pub redis: Arc<RedisStore>,
}

impl RedisTenants {
    fn keys(&self) -> [String; 5] {
        let p = self.redis.prefix();
        [
            format!("{p}{{tenants}}:meta"),
            format!("{p}{{tenants}}:defs"),
            format!("{p}{{tenants}}:versions"),
            format!("{p}{{tenants}}:hosts"),
            format!("{p}{{tenants}}:hostsof"),
        ]
    }

    async fn script(&self, src: &str, args: &[&[u8]]) -> Result<Written, StoreError> {
        let mut conn = self.redis.connection()?;
        let script = redis::Script::new(src);
        let mut inv = script.prepare_invoke();
        for k in self.keys() {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        let v: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(match v {
            -1 => Written::Exists,
            -2 => Written::Missing,
            -3 => Written::Taken,
            -4 => Written::Changed,
            v => Written::At(v.max(0) as u64),
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl TenantStore for RedisTenants {
    async fn version(&self) -> Result<u64, StoreError> {
        let mut conn = self.redis.connection()?;
        // HGET, not GET: polled every `SYNC_INTERVAL`, kept apart from the fragment reads.
        let v: Option<u64> = redis::cmd("HGET")
            .arg(&self.keys()[0])
            .arg("version")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn versions(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut conn = self.redis.connection()?;
        redis::cmd("HGETALL")
            .arg(&self.keys()[2])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<(String, Stored)>, StoreError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.redis.connection()?;
        let [_, defs, versions, ..] = self.keys();
        let (jsons, vers): (Vec<Option<Vec<u8>>>, Vec<Option<u64>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&defs)
            .arg(ids)
            .cmd("HMGET")
            .arg(&versions)
            .arg(ids)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(ids
            .iter()
            .zip(jsons.into_iter().zip(vers))
            .filter_map(|(id, (j, v))| Some((id.clone(), Stored { version: v?, json: j? })))
            .collect())
    }

    async fn put(&self, id: &str, json: &[u8], hostnames: &[String], base: Option<u64>) -> Result<Written, StoreError> {
        let mode = base.map_or_else(|| "create".to_string(), |v| v.to_string());
        let mut args: Vec<&[u8]> = vec![id.as_bytes(), json, mode.as_bytes()];
        args.extend(hostnames.iter().map(|h| h.as_bytes()));
        self.script(PUT, &args).await
    }

    async fn delete(&self, id: &str) -> Result<Written, StoreError> {
        self.script(DELETE, &[id.as_bytes()]).await
    }
}

// === embedded ===

/// id → 8-byte little-endian version ‖ JSON; the global version under the empty key.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const VERSION_KEY: &str = "";

/// API tenants in the embedded database (one instance owns the file; released with the
/// fragments on an upgrade).
pub struct EmbeddedTenants {
    pub store: Arc<EmbeddedStore>,
    /// Serialises writers (read-check-write).
    pub lock: tokio::sync::Mutex<()>,
}

fn embedded_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded {
        path: "tenants table".into(),
        reason: e.to_string(),
    }
}

fn split(v: &[u8]) -> Option<(u64, &[u8])> {
    let (n, rest) = v.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*n), rest))
}

impl EmbeddedTenants {
    fn db(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.store
            .database()
            .ok_or_else(|| embedded_err("released to an upgraded Tessera process; send admin requests to the new one"))
    }

    /// Read everything (few writes, small table: simplicity over indexes).
    async fn read_all(&self) -> Result<HashMap<String, (u64, Vec<u8>)>, StoreError> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let r = db.begin_read().map_err(|e| e.to_string())?;
            let t = match r.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
                Err(e) => return Err(e.to_string()),
            };
            let mut out = HashMap::new();
            for item in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = item.map_err(|e| e.to_string())?;
                if let Some((ver, json)) = split(v.value()) {
                    out.insert(k.value().to_string(), (ver, json.to_vec()));
                }
            }
            Ok(out)
        })
        .await
        .map_err(embedded_err)?
        .map_err(embedded_err)
    }

    /// `base`: `None` creates; `Some(v)` replaces (or deletes) only a definition at version
    /// `v` (`Some(0)`: any version, for a delete). Hostnames need no index here: one instance
    /// owns the file and `Runtime` serialises its writes.
    async fn write(&self, id: &str, json: Option<&[u8]>, base: Option<u64>) -> Result<Written, StoreError> {
        let _g = self.lock.lock().await;
        let (db, id, json) = (self.db()?, id.to_string(), json.map(<[u8]>::to_vec));
        tokio::task::spawn_blocking(move || -> Result<Written, String> {
            let w = db.begin_write().map_err(|e| e.to_string())?;
            let out = {
                let mut t = w.open_table(TABLE).map_err(|e| e.to_string())?;
                let current = t
                    .get(id.as_str())
                    .map_err(|e| e.to_string())?
                    .and_then(|v| split(v.value()).map(|(n, _)| n));
                let exists = current.is_some();
                let version = t
                    .get(VERSION_KEY)
                    .map_err(|e| e.to_string())?
                    .and_then(|v| split(v.value()).map(|(n, _)| n))
                    .unwrap_or(0)
                    + 1;
                match (&json, exists) {
                    (Some(_), true) if base.is_none() => Written::Exists,
                    (_, false) if base.is_some() => Written::Missing,
                    (None, false) => Written::Missing,
                    (_, true) if base.is_some_and(|b| b != 0 && Some(b) != current) => Written::Changed,
                    _ => {
                        match &json {
                            Some(j) => {
                                let mut v = version.to_le_bytes().to_vec();
                                v.extend_from_slice(j);
                                t.insert(id.as_str(), v.as_slice()).map_err(|e| e.to_string())?;
                            }
                            None => {
                                t.remove(id.as_str()).map_err(|e| e.to_string())?;
                            }
                        }
                        t.insert(VERSION_KEY, version.to_le_bytes().as_slice())
                            .map_err(|e| e.to_string())?;
                        Written::At(version)
                    }
                }
            };
            w.commit().map_err(|e| e.to_string())?;
            Ok(out)
        })
        .await
        .map_err(embedded_err)?
        .map_err(embedded_err)
    }
}

#[async_trait]
impl TenantStore for EmbeddedTenants {
    async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.read_all().await?.remove(VERSION_KEY).map_or(0, |(v, _)| v))
    }

    async fn versions(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut all = self.read_all().await?;
        all.remove(VERSION_KEY);
        Ok(all.into_iter().map(|(k, (v, _))| (k, v)).collect())
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<(String, Stored)>, StoreError> {
        let mut all = self.read_all().await?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                all.remove(id.as_str())
                    .map(|(version, json)| (id.clone(), Stored { version, json }))
            })
            .collect())
    }

    async fn put(
        &self,
        id: &str,
        json: &[u8],
        _hostnames: &[String],
        base: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.write(id, Some(json), base).await
    }

    async fn delete(&self, id: &str) -> Result<Written, StoreError> {
        self.write(id, None, Some(0)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_versions_create_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("t.redb")).unwrap());
        let s = EmbeddedTenants {
            store,
            lock: Default::default(),
        };
        assert_eq!(s.version().await.unwrap(), 0);
        assert_eq!(s.put("a", b"{1}", &[], None).await.unwrap(), Written::At(1));
        assert_eq!(s.put("a", b"{2}", &[], None).await.unwrap(), Written::Exists);
        assert_eq!(s.put("b", b"{2}", &[], Some(1)).await.unwrap(), Written::Missing);
        // Based on a version that is not the stored one: refused, nothing written.
        assert_eq!(s.put("a", b"{x}", &[], Some(7)).await.unwrap(), Written::Changed);
        assert_eq!(s.put("a", b"{3}", &[], Some(1)).await.unwrap(), Written::At(2));
        assert_eq!(s.versions().await.unwrap(), HashMap::from([("a".to_string(), 2)]));
        let got = s.get(&["a".into(), "zz".into()]).await.unwrap();
        assert_eq!((got.len(), got[0].1.json.as_slice()), (1, &b"{3}"[..]));
        assert_eq!(s.delete("zz").await.unwrap(), Written::Missing);
        assert_eq!(s.delete("a").await.unwrap(), Written::At(3));
        assert_eq!(s.version().await.unwrap(), 3);
        assert!(s.versions().await.unwrap().is_empty());
    }
}
