//! OAuth grant calls of the admin API (`/v1/tenants/{t}/grants`). Not on the request path.
//!
//! A grant is every access and refresh record born of one OAuth authorization (see
//! `crate::oauth`). Revoking it tombstones each record: refused at every instance through the
//! same store invalidation as a token revoke.

use http::StatusCode;
use serde_json::json;

use super::{err, now, store_err, AdminState, Reply};
use crate::config::AdminToken;
use crate::oauth::grants;
use crate::token::grant;
use crate::token::TokenId;

impl AdminState {
    pub(crate) async fn list_grants(&self, tenant: &str) -> Reply {
        let list = match grants::list(self.store.as_ref(), tenant).await {
            Ok(l) => l,
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let mut out = Vec::with_capacity(list.len());
        for (id, meta) in &list {
            match grants::describe(self.store.as_ref(), &keyring, tenant, id, meta, false, now()).await {
                Ok(v) => out.push(v),
                Err(e) => return store_err(e),
            }
        }
        Reply(StatusCode::OK, json!({"tenant": tenant, "grants": out}))
    }

    pub(crate) async fn show_grant(&self, tenant: &str, id: &TokenId) -> Reply {
        let meta = match self.store.get_fresh(tenant, id).await {
            Ok(Some(raw)) => grant::decode(&raw),
            Ok(None) => None,
            Err(e) => return store_err(e),
        };
        let Some(meta) = meta else {
            return err(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no grant {id} for tenant {tenant}"),
            );
        };
        let keyring = self.keyring.load();
        match grants::describe(self.store.as_ref(), &keyring, tenant, id, &meta, true, now()).await {
            Ok(mut v) => {
                // Last use of each record, from this instance's session log.
                if let Some(records) = v.get_mut("records").and_then(|r| r.as_array_mut()) {
                    for r in records {
                        let last = match r.get("id").and_then(|i| i.as_str()) {
                            Some(tid) => self.last_use(tenant, tid).await,
                            None => None,
                        };
                        r["last_used_at"] = json!(last);
                    }
                }
                Reply(StatusCode::OK, v)
            }
            Err(e) => store_err(e),
        }
    }

    pub(crate) async fn revoke_grant(&self, caller: &AdminToken, tenant: &str, id: &TokenId) -> Reply {
        match grants::revoke(self.store.as_ref(), tenant, id, now()).await {
            Ok(Some(n)) => {
                log::info!("admin: {} revoked grant={id} tenant={tenant} records={n}", caller.name);
                Reply(
                    StatusCode::OK,
                    json!({"grant_id": id.to_string(), "revoked": true, "records_revoked": n}),
                )
            }
            Ok(None) => err(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no live grant {id} for tenant {tenant} (unknown or already revoked)"),
            ),
            Err(e) => store_err(e),
        }
    }

    /// The newest session record of `token_id` on this instance, as RFC 3339.
    async fn last_use(&self, tenant: &str, token_id: &str) -> Option<String> {
        let q = crate::session_log::Query {
            token_id: Some(token_id.to_string()),
            limit: 1,
            ..Default::default()
        };
        let recs = self.sessions.query(tenant, &q).await.ok()?;
        let ms = recs.iter().map(|r| r.ts).max()?;
        Some(super::rfc3339((ms / 1000) as i64))
    }
}
