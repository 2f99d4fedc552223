//! Admin HTTP API on `listen.admin` (loopback by default). Not on the proxy's request path.
//!
//! ```text
//! GET    /healthz                                   liveness
//! GET    /readyz                                    store + tracking health (503 when blind)
//! POST   /v1/tenants/{t}/tokens                     mint: {token,label,expires_at?,header?,scheme?} → 201 {id,part_a,…}
//! GET    /v1/tenants/{t}/tokens                     metadata only
//! DELETE /v1/tenants/{t}/tokens/{id}                revoke (Part B replaced by a tombstone)
//! POST   /v1/tenants/{t}/tokens/{id}/rotate         new Part A: body {part_a} or {token} → 201
//! POST   /v1/tenants/{t}/tokens/{id}/unblock        lift an anomaly quarantine
//! GET    /v1/tenants/{t}/sessions?token_id=&since=&limit=
//! GET    /v1/keys                                   kids and record counts per kid (operator)
//! POST   /v1/keys/rotate                            re-seal every record under the active kid (operator)
//! ```
//! Callers send `Authorization: Bearer <admin token>`; the SHA-256 of it is compared in
//! constant time with every configured hash. Scope `operator` reaches every tenant,
//! `tenant:<id>` only that tenant. No token → 401, wrong scope → 403. Part A appears in a
//! response body exactly once (mint/rotate) and is never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::anomaly::Detector;
use crate::config::{AdminToken, Scope};
use crate::fragments::{FragmentStore, StoreError};
use crate::metrics;
use crate::session_log::{Query, SessionStore};
use crate::tenants::TenantTable;
use crate::token::{self, Keyring, PartA, TokenError, TokenId, TokenMeta};

const MAX_BODY: usize = 64 * 1024;

/// What the admin API works on.
pub struct AdminState {
    pub tokens: Vec<AdminToken>,
    pub tenants: Arc<TenantTable>,
    pub store: Arc<dyn FragmentStore>,
    pub keyring: Arc<ArcSwap<Keyring>>,
    pub sessions: Arc<SessionStore>,
    pub anomaly: Arc<Detector>,
}

/// The admin HTTP app.
pub struct AdminApp(pub Arc<AdminState>);

/// An API answer: status and JSON body.
pub(crate) struct Reply(pub(crate) StatusCode, pub(crate) Value);

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    Reply(status, json!({"error": code, "message": message.into()}))
}

fn store_err(e: StoreError) -> Reply {
    log::error!("admin: store error: {e}");
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the fragment store did not answer; retry",
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

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

/// Check header form fields of a mint request; returns (header, scheme).
fn header_form(header: Option<&str>, scheme: Option<&str>) -> Result<(String, String), Reply> {
    let header = header.unwrap_or("Authorization");
    let name = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("header {header:?} is not a valid header name"),
        )
    })?;
    if matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "te" | "upgrade" | "cookie"
    ) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("header {header:?} cannot carry a credential"),
        ));
    }
    let default_scheme = if name == http::header::AUTHORIZATION {
        "Bearer"
    } else {
        ""
    };
    let scheme = scheme.unwrap_or(default_scheme);
    if scheme.len() > 32 || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("scheme {scheme:?} must be letters, digits or '-' (e.g. Bearer, Token), or empty"),
        ));
    }
    Ok((header.to_string(), scheme.to_string()))
}

/// Parse and check a mint body (`POST /v1/tenants/{t}/tokens`): the upstream token and its
/// metadata, `created_at` = `now`. Every failure is a `400` reply. Fuzzed (`fuzzing::admin_body`).
pub(crate) fn parse_mint(body: &[u8], now: i64) -> Result<(Zeroizing<String>, TokenMeta), Reply> {
    let req: MintBody = serde_json::from_slice(body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("body: {e}; expected {{\"token\": \"…\", \"label\": \"…\"}}"),
        )
    })?;
    if req.label.len() > 200 {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "label is longer than 200 characters",
        ));
    }
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(s) => match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
            Ok(t) if t.unix_timestamp() > now => Some(t.unix_timestamp()),
            Ok(_) => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expires_at {s:?} is in the past"),
                ))
            }
            Err(_) => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expires_at {s:?} is not RFC 3339, e.g. 2027-01-31T00:00:00Z"),
                ))
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
    };
    Ok((req.token, meta))
}

/// Parse a rotate body (`POST …/{id}/rotate`); an empty body is `{}`. The "exactly one of
/// part_a / token" check stays in `rotate`, after the store lookup. Fuzzed (`fuzzing::admin_body`).
pub(crate) fn parse_rotate(body: &[u8]) -> Result<RotateBody, Reply> {
    if body.is_empty() {
        return Ok(RotateBody::default());
    }
    serde_json::from_slice(body).map_err(|e| err(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")))
}

impl AdminState {
    /// Which configured admin token this request carries. Compares against every hash, in
    /// constant time, without stopping at the first match.
    fn caller(&self, session: &ServerSession) -> Option<&AdminToken> {
        let v = session.req_header().headers.get(http::header::AUTHORIZATION)?;
        let presented = crate::proxy::bearer_value(v.as_bytes())?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }

    fn allowed(caller: &AdminToken, tenant: Option<&str>) -> bool {
        match (&caller.scope, tenant) {
            (Scope::Operator, _) => true,
            (Scope::Tenant(t), Some(want)) => t == want,
            (Scope::Tenant(_), None) => false,
        }
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().unwrap_or("").to_string();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["healthz"]) => return Reply(StatusCode::OK, json!({"status": "ok"})),
            ("GET", ["readyz"]) => {
                let r = self.store.readiness();
                let status = if r.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return Reply(
                    status,
                    json!({"ready": r.ready(), "store_up": r.store_up, "tracking_up": r.tracking_up}),
                );
            }
            _ => {}
        }
        if segs.first() != Some(&"v1") {
            return err(
                StatusCode::NOT_FOUND,
                "not_found",
                "unknown path; see the admin API list in the README",
            );
        }
        let Some(caller) = self.caller(session) else {
            return err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <admin token> (configured in admin.tokens)",
            );
        };
        let tenant = match segs.as_slice() {
            ["v1", "tenants", t, ..] => Some(*t),
            _ => None,
        };
        if let Some(t) = tenant {
            if self.tenants.by_id(t).is_none() {
                return if Self::allowed(caller, Some(t)) {
                    err(
                        StatusCode::NOT_FOUND,
                        "unknown_tenant",
                        format!("no tenant {t:?} in the configuration"),
                    )
                } else {
                    err(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "this admin token may not act on that tenant",
                    )
                };
            }
        }
        if !Self::allowed(caller, tenant) {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this admin token may not act on that tenant",
            );
        }
        let body = if method == Method::POST {
            match read_body(session).await {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            Zeroizing::new(Vec::new())
        };
        let id = |s: &str| {
            TokenId::parse(s).ok_or_else(|| {
                err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{s:?} is not a token id (32 hex characters)"),
                )
            })
        };
        let res = match (method.as_str(), segs.as_slice()) {
            ("POST", ["v1", "tenants", t, "tokens"]) => self.mint(caller, t, &body).await,
            ("GET", ["v1", "tenants", t, "tokens"]) => self.list(t).await,
            ("DELETE", ["v1", "tenants", t, "tokens", i]) => match id(i) {
                Ok(i) => self.revoke(caller, t, &i).await,
                Err(r) => r,
            },
            ("POST", ["v1", "tenants", t, "tokens", i, "rotate"]) => match id(i) {
                Ok(i) => self.rotate(caller, t, &i, &body).await,
                Err(r) => r,
            },
            ("POST", ["v1", "tenants", t, "tokens", i, "unblock"]) => match id(i) {
                Ok(i) => self.unblock(caller, t, &i),
                Err(r) => r,
            },
            ("GET", ["v1", "tenants", t, "sessions"]) => self.sessions(t, &query).await,
            ("GET", ["v1", "keys"]) => self.keys().await,
            ("POST", ["v1", "keys", "rotate"]) => self.rotate_keys(caller).await,
            _ => err(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {path}"),
            ),
        };
        res
    }

    async fn mint(&self, caller: &AdminToken, tenant: &str, body: &[u8]) -> Reply {
        let (token, meta) = match parse_mint(body, now()) {
            Ok(v) => v,
            Err(r) => return r,
        };
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
            meta.label
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

    async fn list(&self, tenant: &str) -> Reply {
        let entries = match self.store.list(Some(tenant)).await {
            Ok(e) => e,
            Err(e) => return store_err(e),
        };
        let keyring = self.keyring.load();
        let tindex = self.tenants.by_id(tenant).map(|t| t.index);
        let quarantined = tindex.map(|i| self.anomaly.quarantined(i)).unwrap_or_default();
        let tokens: Vec<Value> = entries
            .iter()
            .map(|e| {
                let q = quarantined.contains(&e.id);
                if let Some(at) = token::is_tombstone(&e.record) {
                    return json!({"id": e.id.to_string(), "status": "revoked", "revoked_at": rfc3339(at)});
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
                    }),
                    Err(e2) => json!({"id": e.id.to_string(), "status": "unreadable", "reason": e2.to_string(), "kid": kid}),
                }
            })
            .collect();
        Reply(StatusCode::OK, json!({"tenant": tenant, "tokens": tokens}))
    }

    async fn revoke(&self, caller: &AdminToken, tenant: &str, id: &TokenId) -> Reply {
        match self.store.get(tenant, id).await {
            Ok(Some(r)) if token::is_tombstone(&r).is_none() => {}
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
        }
        if let Err(e) = self.store.put(tenant, id, &token::tombstone(now())).await {
            return store_err(e);
        }
        log::info!("admin: {} revoked token_id={id} tenant={tenant}", caller.name);
        Reply(StatusCode::OK, json!({"id": id.to_string(), "revoked": true}))
    }

    async fn rotate(&self, caller: &AdminToken, tenant: &str, id: &TokenId, body: &[u8]) -> Reply {
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

    fn unblock(&self, caller: &AdminToken, tenant: &str, id: &TokenId) -> Reply {
        let Some(t) = self.tenants.by_id(tenant) else {
            return err(StatusCode::NOT_FOUND, "unknown_tenant", tenant.to_string());
        };
        let was = self.anomaly.unblock(t.index, id);
        log::info!(
            "admin: {} unblocked token_id={id} tenant={tenant} (was quarantined: {was})",
            caller.name
        );
        Reply(StatusCode::OK, json!({"id": id.to_string(), "was_quarantined": was}))
    }

    async fn sessions(&self, tenant: &str, query: &str) -> Reply {
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

    async fn keys(&self) -> Reply {
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

    async fn rotate_keys(&self, caller: &AdminToken) -> Reply {
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

async fn read_body(session: &mut ServerSession) -> Result<Zeroizing<Vec<u8>>, Reply> {
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(err(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        "request body over 64 KiB",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("reading body: {e}"),
                ))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Reply(status, body) = self.0.route(session).await;
        let outcome = match status.as_u16() {
            200..=299 => "ok",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            400..=499 => "bad_request",
            _ => "error",
        };
        metrics::global().admin_requests.with_label_values(&[outcome]).inc();
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "no-store")
            .header(http::header::CONTENT_LENGTH, bytes.len())
            .body(bytes)
            .unwrap_or_default()
    }
}
