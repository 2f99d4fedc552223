//! Session-log and keyring calls of the admin API. Not on the request path.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::json;

use super::{err, store_err, AdminState, Reply};
use crate::config::{AdminToken, Scope};
use crate::session_log::Query;
use crate::token::{self, TokenId};

impl AdminState {
    pub(crate) async fn sessions(&self, tenant: &str, query: &str) -> Reply {
        let mut q = Query {
            limit: 100,
            ..Default::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "token_id" => {
                    if TokenId::parse(v).is_none() {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("token_id {v:?} is not 32 hex characters"),
                        );
                    }
                    q.token_id = Some(v.to_ascii_lowercase());
                }
                "since" => match parse_since(v) {
                    Some(ms) => q.since = Some(ms),
                    None => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("since {v:?}: give Unix milliseconds or RFC 3339"),
                        )
                    }
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=10_000).contains(&n) => q.limit = n,
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("limit {v:?}: give 1-10000"),
                        )
                    }
                },
                other => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("unknown parameter {other:?}; use token_id, since, limit"),
                    )
                }
            }
        }
        match self.sessions.query(tenant, &q).await {
            Ok(records) => Reply(StatusCode::OK, json!({"tenant": tenant, "records": records})),
            Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e),
        }
    }

    pub(crate) async fn keys(&self) -> Reply {
        let entries = match self.store.list(None).await {
            Ok(e) => e,
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let mut by_kid: BTreeMap<String, usize> = BTreeMap::new();
        for e in &entries {
            if let Some(k) = token::record_kid(&e.record) {
                *by_kid.entry(String::from_utf8_lossy(k).into_owned()).or_default() += 1;
            }
        }
        Reply(
            StatusCode::OK,
            json!({"active": keyring.active().kid, "kids": keyring.kids().collect::<Vec<_>>(), "records_by_kid": by_kid}),
        )
    }

    pub(crate) async fn rotate_keys(&self, caller: &AdminToken) -> Reply {
        if caller.scope != Scope::Operator {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "key rotation needs an operator token",
            );
        }
        let entries = match self.store.list(None).await {
            Ok(e) => e,
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let (mut resealed, mut current, mut failed, mut raced) = (0, 0, 0, 0);
        for e in &entries {
            match token::reseal(&keyring, &e.tenant, &e.id, &e.record) {
                Ok(None) => current += 1,
                Ok(Some(new)) => match self.store.replace_if(&e.tenant, &e.id, &e.record, &new).await {
                    Ok(true) => resealed += 1,
                    // Changed meanwhile (revoked or rotated): leave it, it was written under the active key.
                    Ok(false) => raced += 1,
                    Err(e) => return store_err(e),
                },
                Err(err) => {
                    log::error!("admin: cannot reseal token_id={} tenant={}: {err}", e.id, e.tenant);
                    failed += 1;
                }
            }
        }
        log::info!(
            "admin: {} key rotation to kid={}: resealed={resealed} current={current} changed={raced} failed={failed}",
            caller.name,
            keyring.active().kid
        );
        Reply(
            StatusCode::OK,
            json!({"active_kid": keyring.active().kid, "resealed": resealed, "already_current": current, "changed_meanwhile": raced, "failed": failed}),
        )
    }
}

fn parse_since(v: &str) -> Option<u64> {
    if let Ok(ms) = v.parse::<u64>() {
        return Some(ms);
    }
    let decoded = v
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2B", "+")
        .replace("%2b", "+");
    time::OffsetDateTime::parse(&decoded, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
}
