//! Grants in the fragment store: create, extend, revoke, describe.
//!
//! Used by the token and revocation endpoints (`request_filter`, OAuth surface only) and by
//! the admin API / CLI (`GET|DELETE /v1/tenants/{t}/grants[/{g}]`). Never on the API request
//! path: revoking a grant tombstones each of its records, which that path already refuses
//! through the same store machinery (tracking invalidation on every instance).
//!
//! Consistency with concurrent refreshes: the grant record is only ever changed by
//! compare-and-set (`replace_if`). A refresh stores its new records first and then adds them to
//! the grant record; a revoke marks the grant record revoked first and then tombstones the
//! members it lists. Whichever CAS comes second sees the other's write: a refresh that loses
//! to a revoke tombstones its own new records and answers `invalid_grant`, and a revoke that
//! follows a refresh lists that refresh's records.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::fragments::{FragmentStore, StoreError};
use crate::token::grant::{self, GrantMeta, Member};
use crate::token::{self, Keyring, TokenId, TokenKind};

/// How long a revoked grant record is kept (like tombstones).
const REVOKED_GRANT_TTL: u64 = crate::fragments::TOMBSTONE_TTL_SECS;
/// CAS attempts before giving up on a busy grant record.
const CAS_ATTEMPTS: usize = 16;

/// What a grant lookup found.
pub enum Lookup {
    /// A live grant: its stored bytes (for CAS) and metadata.
    Live(Arc<[u8]>, GrantMeta),
    /// Revoked (or deleted from the store).
    Gone,
}

/// The grant record as the store holds it now (no cache).
pub async fn lookup(store: &dyn FragmentStore, tenant: &str, id: &TokenId) -> Result<Lookup, StoreError> {
    Ok(match store.get_fresh(tenant, id).await? {
        Some(raw) => match grant::decode(&raw) {
            Some(m) if m.revoked_at.is_none() => Lookup::Live(raw, m),
            _ => Lookup::Gone,
        },
        None => Lookup::Gone,
    })
}

/// Write a new grant record.
pub async fn create(store: &dyn FragmentStore, tenant: &str, id: &TokenId, meta: &GrantMeta) -> Result<(), StoreError> {
    store.put(tenant, id, &grant::encode(meta)).await
}

/// Apply `change` to a live grant record by CAS. `Ok(false)`: the grant is gone (revoked or
/// deleted) — the caller must not let its new records live.
pub async fn update(
    store: &dyn FragmentStore,
    tenant: &str,
    id: &TokenId,
    mut change: impl FnMut(&mut GrantMeta),
) -> Result<bool, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let Lookup::Live(raw, mut meta) = lookup(store, tenant, id).await? else {
            return Ok(false);
        };
        change(&mut meta);
        if store.replace_if(tenant, id, &raw, &grant::encode(&meta)).await? {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(format!(
        "grant {id} changed {CAS_ATTEMPTS} times during one update"
    )))
}

/// Revoke a grant: mark its record revoked, then tombstone every member. `Ok(None)` when no
/// such grant exists (or it was already revoked); otherwise the number of records tombstoned.
pub async fn revoke(
    store: &dyn FragmentStore,
    tenant: &str,
    id: &TokenId,
    now: i64,
) -> Result<Option<usize>, StoreError> {
    let mut members = None;
    for _ in 0..CAS_ATTEMPTS {
        let Lookup::Live(raw, mut meta) = lookup(store, tenant, id).await? else {
            break;
        };
        meta.revoked_at = Some(now);
        if store.replace_if(tenant, id, &raw, &grant::encode(&meta)).await? {
            // Keep the revoked record for a while (what the grant held), then let Redis drop it.
            store
                .put_expiring(tenant, id, &grant::encode(&meta), REVOKED_GRANT_TTL)
                .await?;
            members = Some(meta.members);
            break;
        }
    }
    let Some(members) = members else {
        return Ok(None);
    };
    let mut n = 0;
    for m in &members {
        if let Some(mid) = TokenId::parse(&m.id) {
            tombstone_member(store, tenant, &mid, m.kind, Some(id), now).await?;
            n += 1;
        }
    }
    Ok(Some(n))
}

/// Tombstone one record of a grant (kind and grant kept in the tombstone).
pub async fn tombstone_member(
    store: &dyn FragmentStore,
    tenant: &str,
    member: &TokenId,
    kind: TokenKind,
    grant: Option<&TokenId>,
    now: i64,
) -> Result<(), StoreError> {
    store.put(tenant, member, &token::tombstone_of(now, kind, grant)).await
}

/// A member entry for a new record.
pub fn member(id: &TokenId, kind: TokenKind, created_at: i64, expires_at: Option<i64>) -> Member {
    Member {
        id: id.to_string(),
        kind,
        created_at,
        expires_at,
    }
}

/// The admin view of one grant: metadata and, with `records`, each member's state.
pub async fn describe(
    store: &dyn FragmentStore,
    keyring: &Keyring,
    tenant: &str,
    id: &TokenId,
    meta: &GrantMeta,
    records: bool,
    now: i64,
) -> Result<Value, StoreError> {
    let rfc = |t: Option<i64>| t.map(crate::admin::rfc3339);
    let mut v = json!({
        "grant_id": id.to_string(),
        "status": if meta.revoked_at.is_some() { "revoked" } else { "active" },
        "grant_type": meta.grant_type,
        "client_id": meta.client_id,
        "created_at": crate::admin::rfc3339(meta.created_at),
        "last_refresh_at": rfc(meta.last_refresh_at),
        "refreshes": meta.refreshes,
        "revoked_at": rfc(meta.revoked_at),
        // A revoked grant keeps its member list (what it held), but none of them is live.
        "live_records": if meta.revoked_at.is_some() {
            0
        } else {
            meta.members.iter().filter(|m| m.expires_at.is_none_or(|e| e > now)).count()
        },
    });
    if records {
        let mut out = Vec::with_capacity(meta.members.len());
        for m in &meta.members {
            let Some(mid) = TokenId::parse(&m.id) else { continue };
            let state = match store.get(tenant, &mid).await? {
                None => json!({"status": "gone"}),
                Some(r) => match token::tombstone_info(&r) {
                    Some(t) => json!({"status": "revoked", "revoked_at": crate::admin::rfc3339(t.revoked_at)}),
                    None => match token::open_meta(keyring, tenant, &mid, &r) {
                        Ok(tm) if tm.expires_at.is_some_and(|e| e <= now) => json!({"status": "expired"}),
                        Ok(_) => json!({"status": "active"}),
                        Err(e) => json!({"status": "unreadable", "reason": e.to_string()}),
                    },
                },
            };
            let mut entry = json!({
                "id": m.id,
                "kind": m.kind,
                "created_at": crate::admin::rfc3339(m.created_at),
                "expires_at": rfc(m.expires_at),
            });
            if let (Some(e), Some(s)) = (entry.as_object_mut(), state.as_object()) {
                e.extend(s.clone());
            }
            out.push(entry);
        }
        v["records"] = Value::Array(out);
    }
    Ok(v)
}

/// Every grant record of `tenant` (admin listing), newest first.
pub async fn list(store: &dyn FragmentStore, tenant: &str) -> Result<Vec<(TokenId, GrantMeta)>, StoreError> {
    let mut out: Vec<(TokenId, GrantMeta)> = store
        .list(Some(tenant))
        .await?
        .into_iter()
        .filter_map(|e| grant::decode(&e.record).map(|m| (e.id, m)))
        .collect();
    out.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(a.0.cmp(&b.0)));
    Ok(out)
}
