//! Token calls of the admin API: mint, list, revoke, rotate, unblock. Not on the request path.
//! Part A appears in a response body exactly once (mint/rotate) and is never logged.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{err, now, rfc3339, store_err, AdminState, Reply};
use crate::config::AdminToken;
use crate::token::{self, PartA, TokenError, TokenId, TokenMeta};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    token: Zeroizing<String>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    #[serde(default)]
    pub(crate) part_a: Option<Zeroizing<String>>,
    #[serde(default)]
    pub(crate) token: Option<Zeroizing<String>>,
}

fn bad_request(message: String) -> Reply {
    err(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Parse and check a mint body (`{token, label, expires_at?, header?, scheme?}`): the upstream
/// token and its metadata, `created_at` = `now`. Everything that does not depend on the tenant
/// is checked here (the tenant's own header rules in `AdminState::check_header`). Every
/// failure is a `400`. Fuzzed (`fuzzing::admin_body`).
pub(crate) fn parse_mint(body: &[u8], now: i64) -> Result<(Zeroizing<String>, TokenMeta), Reply> {
    let req: MintBody = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("body: {e}; expected {{\"token\": \"…\", \"label\": \"…\"}}")))?;
    if req.label.len() > 200 {
        return Err(bad_request("label is longer than 200 characters".into()));
    }
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(s) => match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
            Ok(t) if t.unix_timestamp() > now => Some(t.unix_timestamp()),
            Ok(_) => return Err(bad_request(format!("expires_at {s:?} is in the past"))),
            Err(_) => {
                return Err(bad_request(format!(
                    "expires_at {s:?} is not RFC 3339, e.g. 2027-01-31T00:00:00Z"
                )))
            }
        },
    };
    let (header, scheme) = header_form(req.header.as_deref(), req.scheme.as_deref())?;
    let meta = TokenMeta {
        label: req.label,
        created_at: now,
        expires_at,
        header,
        scheme,
        replaces: None,
        kind: Default::default(),
        grant_id: None,
    };
    Ok((req.token, meta))
}

/// Parse a rotate body (`{part_a}` or `{token}`); an empty body is `{}`. The "exactly one of
/// part_a / token" check stays in `rotate`, after the store lookup. Fuzzed.
pub(crate) fn parse_rotate(body: &[u8]) -> Result<RotateBody, Reply> {
    if body.is_empty() {
        return Ok(RotateBody::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body: {e}")))
}

fn cannot_carry(header: &str, why: &str) -> Reply {
    bad_request(format!(
        "header {header:?} cannot carry a credential: it is {why}; use Authorization or an API-specific header such as X-Api-Key"
    ))
}

/// The tenant-independent form of a credential header: a valid name that is not one Tessera
/// owns on every request (`reserved`) nor `Cookie` (a client's cookies would be replaced), and
/// a plain scheme. Returns (header, scheme).
fn header_form(header: Option<&str>, scheme: Option<&str>) -> Result<(String, String), Reply> {
    let header = header.unwrap_or("Authorization");
    let name = http::HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| bad_request(format!("header {header:?} is not a valid header name")))?;
    if let Some(r) = crate::reserved::reserved(&name) {
        return Err(cannot_carry(header, r.reason()));
    }
    if name == http::header::COOKIE {
        return Err(cannot_carry(header, "the client's cookie header"));
    }
    let default_scheme = if name == http::header::AUTHORIZATION {
        "Bearer"
    } else {
        ""
    };
    let scheme = scheme.unwrap_or(default_scheme);
    if scheme.len() > 32 || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad_request(format!(
            "scheme {scheme:?} must be letters, digits or '-' (e.g. Bearer, Token), or empty"
        )));
    }
    Ok((header.to_string(), scheme.to_string()))
}

impl AdminState {
    /// The tenant's own rules for a credential header: not any tenant header, not in
    /// `strip_headers`, not one of the tenant's configured `headers`
    /// (`TenantTable::credential_conflict`). Checked at mint and at rotate (against today's
    /// config).
    fn check_header(&self, tenant: &str, header: &str) -> Result<(), Reply> {
        let name = http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| bad_request(format!("header {header:?} is not a valid header name")))?;
        let table = self.tenants.load();
        match table.by_id(tenant).and_then(|t| table.credential_conflict(t, &name)) {
            Some(why) => Err(cannot_carry(header, why)),
            None => Ok(()),
        }
    }

    pub(crate) async fn mint(&self, caller: &AdminToken, tenant: &str, body: &[u8]) -> Reply {
        let (token, meta) = match parse_mint(body, now()) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.check_header(tenant, &meta.header) {
            return r;
        }
        self.mint_meta(caller, tenant, token.as_bytes(), meta).await
    }

    async fn mint_meta(&self, caller: &AdminToken, tenant: &str, token: &[u8], meta: TokenMeta) -> Reply {
        let keyring = self.keyring.load();
        let minted = match token::mint(&keyring, tenant, token, &meta) {
            Ok(m) => m,
            Err(TokenError::BadUpstreamToken) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    TokenError::BadUpstreamToken.to_string(),
                )
            }
            Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        };
        if let Err(e) = self.store.put(tenant, &minted.id, &minted.record).await {
            return store_err(e);
        }
        log::info!(
            "admin: {} minted token_id={} tenant={tenant} label={:?}",
            caller.name,
            minted.id,
            crate::session_log::scrub_part_a(&meta.label)
        );
        Reply(
            StatusCode::CREATED,
            json!({
                "id": minted.id.to_string(),
                "part_a": minted.part_a.as_str(),
                "tenant": tenant,
                "label": meta.label,
                "created_at": rfc3339(meta.created_at),
                "expires_at": meta.expires_at.map(rfc3339),
                "header": meta.header,
                "scheme": meta.scheme,
                "replaces": meta.replaces,
                "store_key": self.store.location(tenant, &minted.id),
            }),
        )
    }

    pub(crate) async fn list(&self, tenant: &str) -> Reply {
        let entries = match self.store.list(Some(tenant)).await {
            Ok(e) => e,
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let tindex = self.tenants.load().by_id(tenant).map(|t| t.index);
        let quarantined = tindex.map(|i| self.anomaly.quarantined(i)).unwrap_or_default();
        let tokens: Vec<Value> = entries
            .iter()
            // Grant records live beside the tokens (`GET …/grants`); a grant's own id is not a token.
            .filter(|e| !token::grant::is_grant(&e.record))
            .map(|e| {
                let q = quarantined.contains(&e.id);
                if let Some(t) = token::tombstone_info(&e.record) {
                    return json!({
                        "id": e.id.to_string(),
                        "status": "revoked",
                        "revoked_at": rfc3339(t.revoked_at),
                        "kind": t.kind.map(|k| k.label()),
                        "grant_id": t.grant.map(|g| g.to_string()),
                    });
                }
                let kid = token::record_kid(&e.record).map(|k| String::from_utf8_lossy(k).into_owned());
                match token::open_meta(&keyring, tenant, &e.id, &e.record) {
                    Ok(m) => json!({
                        "id": e.id.to_string(),
                        "status": if q { "quarantined" } else if m.expires_at.is_some_and(|x| x <= now()) { "expired" } else { "active" },
                        "label": m.label,
                        "created_at": rfc3339(m.created_at),
                        "expires_at": m.expires_at.map(rfc3339),
                        "header": m.header,
                        "scheme": m.scheme,
                        "replaces": m.replaces,
                        "kid": kid,
                        "kind": m.kind.label(),
                        "grant_id": m.grant_id,
                    }),
                    Err(e2) => json!({"id": e.id.to_string(), "status": "unreadable", "reason": e2.to_string(), "kid": kid}),
                }
            })
            .collect();
        Reply(StatusCode::OK, json!({"tenant": tenant, "tokens": tokens}))
    }

    pub(crate) async fn revoke(&self, caller: &AdminToken, tenant: &str, id: &TokenId) -> Reply {
        let record = match self.store.get(tenant, id).await {
            Ok(Some(r)) if token::is_tombstone(&r).is_none() && !token::grant::is_grant(&r) => r,
            Ok(Some(_)) => {
                return err(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("token {id} is already revoked"),
                )
            }
            Ok(None) => {
                return err(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no token {id} for tenant {tenant}"),
                )
            }
            Err(e) => return store_err(e),
        };
        // The tombstone keeps the record's kind and grant, when it can be read.
        let keyring = self.keyring.load();
        let tomb = match token::open_meta(&keyring, tenant, id, &record) {
            Ok(m) => token::tombstone_of(now(), m.kind, m.grant_id.as_deref().and_then(TokenId::parse).as_ref()),
            Err(_) => token::tombstone(now()),
        };
        if let Err(e) = self.store.put(tenant, id, &tomb).await {
            return store_err(e);
        }
        log::info!("admin: {} revoked token_id={id} tenant={tenant}", caller.name);
        Reply(StatusCode::OK, json!({"id": id.to_string(), "revoked": true}))
    }

    pub(crate) async fn rotate(&self, caller: &AdminToken, tenant: &str, id: &TokenId, body: &[u8]) -> Reply {
        let req = match parse_rotate(body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let record = match self.store.get(tenant, id).await {
            Ok(Some(r)) if token::is_tombstone(&r).is_none() => r,
            Ok(_) => {
                return err(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no active token {id} for tenant {tenant}"),
                )
            }
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let mut meta = match token::open_meta(&keyring, tenant, id, &record) {
            Ok(m) => m,
            Err(e) => {
                return err(
                    StatusCode::CONFLICT,
                    "unreadable",
                    format!("record cannot be opened: {e}"),
                )
            }
        };
        // Tessera never holds the token alone: rotation needs the current Part A (to
        // reconstruct it) or the upstream token itself.
        let upstream: Zeroizing<Vec<u8>> =
            match (&req.part_a, &req.token) {
                (Some(a), None) => {
                    let part_a = match PartA::parse(a) {
                        Ok(p) if p.id == *id && p.tenant_tag == token::tenant_tag(tenant) => p,
                        _ => {
                            return err(
                                StatusCode::BAD_REQUEST,
                                "bad_request",
                                "part_a is not the current Part A of this token",
                            )
                        }
                    };
                    match token::recover_token(&keyring, tenant, &part_a, &record) {
                        Ok(t) => t,
                        Err(_) => {
                            return err(
                                StatusCode::BAD_REQUEST,
                                "bad_request",
                                "part_a is not the current Part A of this token",
                            )
                        }
                    }
                }
                (None, Some(t)) => Zeroizing::new(t.as_bytes().to_vec()),
                _ => return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "send exactly one of {\"part_a\": …} (the current Part A) or {\"token\": …} (the upstream token)",
                ),
            };
        // The stored header name is checked against today's config, as at mint.
        if let Err(r) = self.check_header(tenant, &meta.header) {
            return r;
        }
        meta.replaces = Some(id.to_string());
        meta.created_at = now();
        let reply = self.mint_meta(caller, tenant, &upstream, meta).await;
        if reply.0 != StatusCode::CREATED {
            return reply;
        }
        if let Err(e) = self.store.put(tenant, id, &token::tombstone(now())).await {
            // The new token exists; the old one is still live. Say so rather than hide it.
            log::error!("admin: rotate of token_id={id} tenant={tenant}: new token minted but old not revoked: {e}");
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                "partial",
                "new token minted but the old one could not be revoked; revoke it again",
            );
        }
        log::info!("admin: {} rotated token_id={id} tenant={tenant}", caller.name);
        reply
    }

    pub(crate) fn unblock(&self, caller: &AdminToken, tenant: &str, id: &TokenId) -> Reply {
        let Some(index) = self.tenants.load().by_id(tenant).map(|t| t.index) else {
            return err(StatusCode::NOT_FOUND, "unknown_tenant", tenant.to_string());
        };
        let was = self.anomaly.unblock(index, id);
        log::info!(
            "admin: {} unblocked token_id={id} tenant={tenant} (was quarantined: {was})",
            caller.name
        );
        Reply(StatusCode::OK, json!({"id": id.to_string(), "was_quarantined": was}))
    }
}
