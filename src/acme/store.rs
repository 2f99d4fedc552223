//! Where the ACME service keeps what it shares between instances: the account credentials
//! (sealed under the keyring's KEK), the per-tenant order lock and the challenges' key
//! authorizations. In Redis every instance shares them; with the embedded store (one
//! instance) they live in this process.
//!
//! Redis keys (plain keys, one each; no multi-key command touches them):
//! `<prefix>acme:account:<sha256(directory)>` (sealed account credentials),
//! `<prefix>acme:lock:<tenant>` (`SET NX PX`, released by a compare-and-delete script),
//! `<prefix>acme:http01:<token>` (key authorization, expires after `CHALLENGE_TTL`),
//! `<prefix>acme:tlsalpn01:<hostname>` (TLS-ALPN-01 key authorization, same expiry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fragments::redis::RedisStore;
use crate::fragments::StoreError;

/// How long an HTTP-01 key authorization is kept.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// Compare-and-delete: only the holder's token releases the lock.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// key → (value, expiry).
type Entries = HashMap<String, (Vec<u8>, Option<Instant>)>;

/// Process-local state (embedded store, or tests).
#[derive(Default)]
pub struct Local {
    kv: Mutex<Entries>,
}

/// The ACME service's shared state.
pub enum AcmeStore {
    Redis(Arc<RedisStore>),
    Local(Local),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Local {
    fn live(&self) -> std::sync::MutexGuard<'_, Entries> {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        kv.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        kv
    }
}

impl AcmeStore {
    fn key(&self, suffix: &str) -> String {
        match self {
            AcmeStore::Redis(r) => format!("{}acme:{suffix}", r.prefix()),
            AcmeStore::Local(_) => suffix.to_string(),
        }
    }

    /// The value at `acme:<suffix>`.
    pub async fn get(&self, suffix: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(suffix);
        match self {
            AcmeStore::Redis(r) => {
                let mut conn = r.connection()?;
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            AcmeStore::Local(l) => Ok(l.live().get(&key).map(|(v, _)| v.clone())),
        }
    }

    /// Set `acme:<suffix>`; with `only_new`, only if absent (`NX`). Returns whether it was set.
    pub async fn set(
        &self,
        suffix: &str,
        value: &[u8],
        ttl: Option<Duration>,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let key = self.key(suffix);
        match self {
            AcmeStore::Redis(r) => {
                let mut conn = r.connection()?;
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(value);
                if only_new {
                    cmd.arg("NX");
                }
                if let Some(t) = ttl {
                    cmd.arg("PX").arg(t.as_millis().max(1) as u64);
                }
                let r: Option<String> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
                Ok(r.is_some())
            }
            AcmeStore::Local(l) => {
                let mut kv = l.live();
                if only_new && kv.contains_key(&key) {
                    return Ok(false);
                }
                kv.insert(key, (value.to_vec(), ttl.map(|t| Instant::now() + t)));
                Ok(true)
            }
        }
    }

    /// Delete `acme:<suffix>`.
    pub async fn delete(&self, suffix: &str) -> Result<(), StoreError> {
        let key = self.key(suffix);
        match self {
            AcmeStore::Redis(r) => {
                let mut conn = r.connection()?;
                let _: i64 = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }
            AcmeStore::Local(l) => {
                l.live().remove(&key);
                Ok(())
            }
        }
    }

    /// Take the lock `name` for `ttl`: `Some(token)` if this caller holds it now.
    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let mut raw = [0u8; 16];
        crate::token::fill_random(&mut raw);
        let token = hex::encode(raw);
        let taken = self
            .set(&format!("lock:{name}"), token.as_bytes(), Some(ttl), true)
            .await?;
        Ok(taken.then_some(token))
    }

    /// Release the lock `name` if `token` still holds it (it may have expired and been taken).
    pub async fn unlock(&self, name: &str, token: &str) -> Result<bool, StoreError> {
        let key = self.key(&format!("lock:{name}"));
        match self {
            AcmeStore::Redis(r) => {
                let mut conn = r.connection()?;
                let n: i64 = redis::Script::new(UNLOCK)
                    .key(&key)
                    .arg(token)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(n == 1)
            }
            AcmeStore::Local(l) => {
                let mut kv = l.live();
                if kv.get(&key).is_some_and(|(v, _)| v == token.as_bytes()) {
                    kv.remove(&key);
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_lock_is_exclusive_released_by_its_holder_only_and_expires() {
        let s = AcmeStore::Local(Local::default());
        let t = s.lock("a", Duration::from_secs(60)).await.unwrap().unwrap();
        assert!(s.lock("a", Duration::from_secs(60)).await.unwrap().is_none());
        assert!(s.lock("b", Duration::from_secs(60)).await.unwrap().is_some());
        assert!(!s.unlock("a", "not-the-token").await.unwrap());
        assert!(s.lock("a", Duration::from_secs(60)).await.unwrap().is_none());
        assert!(s.unlock("a", &t).await.unwrap());
        let t2 = s.lock("a", Duration::from_millis(20)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Expired: another caller takes it, and the old holder cannot release the new lock.
        let t3 = s.lock("a", Duration::from_secs(60)).await.unwrap().unwrap();
        assert!(!s.unlock("a", &t2).await.unwrap());
        assert!(s.unlock("a", &t3).await.unwrap());
    }
}
