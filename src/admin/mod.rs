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
//! GET    /v1/tenants/{t}/grants                     OAuth grants (token swap), newest first
//! GET    /v1/tenants/{t}/grants/{g}                 one grant with its records and their state
//! DELETE /v1/tenants/{t}/grants/{g}                 revoke every access and refresh record of the grant
//! GET    /v1/tenants                                every tenant, YAML and API (operator)
//! POST   /v1/tenants                                create: {id,hostnames,upstream,tls:{cert_pem,key_pem},…} → 201
//! GET    /v1/tenants/{t}                            one tenant (no key material)
//! PATCH  /v1/tenants/{t}                            JSON merge patch of an API tenant
//! DELETE /v1/tenants/{t}                            remove an API tenant (its records are kept)
//! POST   /v1/tenants/{t}/hostnames                  {hostname} added
//! DELETE /v1/tenants/{t}/hostnames/{h}              hostname removed
//! GET    /v1/keys                                   kids and record counts per kid (operator)
//! POST   /v1/keys/rotate                            re-seal every record under the active kid (operator)
//! GET    /v1/audit?tenant=&limit=                   audit log, newest first (operator: all; tenant scope: its tenant)
//! GET    /console/…                                 security console (HTML; `crate::console`)
//! ```
//! Every state-changing call (mint, revoke, rotate, unblock, key rotation) is appended to the
//! audit log (`crate::console::audit`) with the caller's name, `source: api`; the console's
//! actions call the same methods and are recorded with `source: console`.
//! Callers send `Authorization: Bearer <admin token>`; the SHA-256 of it is compared in
//! constant time with every configured hash. Scope `operator` reaches every tenant,
//! `tenant:<id>` only that tenant. No token → 401, wrong scope → 403. Part A appears in a
//! response body exactly once (mint/rotate) and is never logged.

mod grants;
mod ops;
mod route;
mod tenants;
mod tokens;

pub(crate) use tokens::{parse_mint, parse_rotate};

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::anomaly::Detector;
pub(crate) use crate::clock::unix_secs as now;
use crate::config::{AdminToken, Scope};
use crate::console::audit::{Action, AuditLog, Source};
use crate::console::Console;
use crate::fragments::{FragmentStore, StoreError};
use crate::metrics;
use crate::session_log::SessionStore;
use crate::tenants::Tenants;
use crate::token::Keyring;
pub use route::{Route, RouteError};

const MAX_BODY: usize = 64 * 1024;

/// What the admin API works on.
pub struct AdminState {
    pub tokens: Vec<AdminToken>,
    pub tenants: Arc<Tenants>,
    pub store: Arc<dyn FragmentStore>,
    pub keyring: Arc<ArcSwap<Keyring>>,
    pub sessions: Arc<SessionStore>,
    pub anomaly: Arc<Detector>,
    /// Admin actions, API and console alike.
    pub audit: AuditLog,
    /// Console sessions and overview history.
    pub console: Console,
    /// Tenants at runtime: the tenants API (`/v1/tenants…`).
    pub runtime: Arc<crate::runtime::Runtime>,
}

/// The admin HTTP app.
pub struct AdminApp(pub Arc<AdminState>);

/// An API answer: status and JSON body.
pub(crate) struct Reply(pub(crate) StatusCode, pub(crate) Value);

pub(crate) fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    Reply(status, json!({"error": code, "message": message.into()}))
}

pub(crate) fn store_err(e: StoreError) -> Reply {
    log::error!("admin: store error: {e}");
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the fragment store did not answer; retry",
    )
}

pub(crate) fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A new admin token (`tsa_` + 64 hex characters) and the SHA-256 hex that goes into
/// `admin.tokens`. The token is shown once to whoever will call the API; config keeps only
/// the hash.
pub fn new_admin_token() -> (Zeroizing<String>, String) {
    let mut raw = Zeroizing::new([0u8; 32]);
    crate::token::fill_random(raw.as_mut());
    let token = Zeroizing::new(format!("tsa_{}", hex::encode(raw.as_ref())));
    let sha = hex::encode(Sha256::digest(token.as_bytes()));
    (token, sha)
}

impl AdminState {
    /// Which configured admin token this request carries. Compares against every hash, in
    /// constant time, without stopping at the first match.
    fn caller(&self, session: &ServerSession) -> Option<&AdminToken> {
        let v = session.req_header().headers.get(http::header::AUTHORIZATION)?;
        let presented = crate::proxy::bearer_value(v.as_bytes())?;
        self.caller_for(presented.as_bytes())
    }

    /// The configured admin token whose SHA-256 matches `presented` (API header or console
    /// login form), compared in constant time against every hash.
    pub(crate) fn caller_for(&self, presented: &[u8]) -> Option<&AdminToken> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }

    pub(crate) fn allowed(caller: &AdminToken, tenant: Option<&str>) -> bool {
        match (&caller.scope, tenant) {
            (Scope::Operator, _) => true,
            (Scope::Tenant(t), Some(want)) => t == want,
            (Scope::Tenant(_), None) => false,
        }
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let route = match Route::parse(&method, session.req_header().uri.path()) {
            Ok(r) => r,
            Err(RouteError::BadTokenId(s)) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{s:?} is not a token or grant id (32 hex characters)"),
                )
            }
            Err(RouteError::NotFound) => {
                return err(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no route for {method} {}; see the admin API list in the README",
                        session.req_header().uri.path()
                    ),
                )
            }
        };
        if route.is_public() {
            return self.public(&route);
        }
        let Some(caller) = self.caller(session) else {
            return err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <admin token> (configured in admin.tokens)",
            );
        };
        let query = session.req_header().uri.query().unwrap_or("").to_string();
        if route == Route::Audit {
            return self.audit_list(caller, &query);
        }
        if let Some(r) = self.check_scope(caller, route.tenant()) {
            return r;
        }
        let body = if route.has_body() {
            match read_body(session).await {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            Zeroizing::new(Vec::new())
        };
        let reply = match &route {
            Route::MintToken { tenant } => self.mint(caller, tenant, &body).await,
            Route::ListTokens { tenant } => self.list(tenant).await,
            Route::RevokeToken { tenant, id } => self.revoke(caller, tenant, id).await,
            Route::RotateToken { tenant, id } => self.rotate(caller, tenant, id, &body).await,
            Route::UnblockToken { tenant, id } => self.unblock(caller, tenant, id),
            Route::Sessions { tenant } => self.sessions(tenant, &query).await,
            Route::ListGrants { tenant } => self.list_grants(tenant).await,
            Route::ShowGrant { tenant, id } => self.show_grant(tenant, id).await,
            Route::RevokeGrant { tenant, id } => self.revoke_grant(caller, tenant, id).await,
            Route::Keys => self.keys().await,
            Route::RotateKeys => self.rotate_keys(caller).await,
            Route::ListTenants
            | Route::CreateTenant
            | Route::ShowTenant { .. }
            | Route::UpdateTenant { .. }
            | Route::DeleteTenant { .. }
            | Route::AddHostname { .. }
            | Route::RemoveHostname { .. } => self.tenants_api(caller, route.clone(), &body, &query).await,
            Route::Healthz | Route::Readyz | Route::Audit => self.public(&route),
        };
        if let Some(action) = route.audit_action() {
            self.audited(caller, Source::Api, action, route.tenant(), route.token_id(), &reply);
        }
        reply
    }

    /// Append a finished action to the audit log: the target, the status, and what the reply
    /// adds (a new token id after mint or rotate, the error code of a failure, rotation counts).
    /// Never copies `part_a` or anything else from the reply body.
    pub(crate) fn audited(
        &self,
        caller: &AdminToken,
        source: Source,
        action: &'static str,
        tenant: Option<&str>,
        target: Option<&crate::token::TokenId>,
        reply: &Reply,
    ) {
        let Reply(status, body) = reply;
        let mut detail = Vec::new();
        let mut target = target.map(|t| t.to_string());
        if let Some(e) = body.get("error").and_then(Value::as_str) {
            detail.push(format!("error={e}"));
        } else if let Some(new) = body.get("id").and_then(Value::as_str) {
            match &target {
                // A mint's target is the token it made.
                None => target = Some(new.to_string()),
                Some(t) if t != new => detail.push(format!("new_id={new}")),
                Some(_) => {}
            }
        }
        for k in ["resealed", "failed", "revoked", "grants_revoked", "records_revoked"] {
            if let Some(n) = body.get(k).and_then(Value::as_u64) {
                detail.push(format!("{k}={n}"));
            }
        }
        self.audit.record(
            caller,
            source,
            Action {
                action,
                tenant,
                target,
                status: status.as_u16(),
                detail: detail.join(" "),
            },
        );
    }

    /// `GET /v1/audit?tenant=&limit=`: newest first. A tenant-scoped caller sees its own
    /// tenant's entries only and may not name another tenant.
    fn audit_list(&self, caller: &AdminToken, query: &str) -> Reply {
        let (mut tenant, mut limit) = (None, 1000usize);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "tenant" => tenant = Some(v.to_string()),
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=100_000).contains(&n) => limit = n,
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("limit {v:?}: give 1-100000"),
                        )
                    }
                },
                other => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("unknown parameter {other:?}; use tenant, limit"),
                    )
                }
            }
        }
        let tenant = match (&caller.scope, tenant) {
            (Scope::Operator, t) => t,
            (Scope::Tenant(own), None) => Some(own.clone()),
            (Scope::Tenant(own), Some(t)) if *own == t => Some(t),
            (Scope::Tenant(_), Some(_)) => {
                return err(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this admin token may not act on that tenant",
                )
            }
        };
        let entries = self.audit.list(tenant.as_deref(), limit);
        Reply(StatusCode::OK, json!({"entries": entries}))
    }

    /// `/healthz` and `/readyz`.
    fn public(&self, route: &Route) -> Reply {
        if *route != Route::Readyz {
            return Reply(StatusCode::OK, json!({"status": "ok"}));
        }
        let r = self.store.readiness();
        let status = if r.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Reply(
            status,
            json!({"ready": r.ready(), "store_up": r.store_up, "tracking_up": r.tracking_up}),
        )
    }

    /// `Some(reply)` when the caller may not act on `tenant`. An unknown tenant is `404` for
    /// a caller who could see it and `403` otherwise (a tenant-scoped caller learns nothing
    /// about other tenants).
    pub(crate) fn check_scope(&self, caller: &AdminToken, tenant: Option<&str>) -> Option<Reply> {
        let forbidden = || {
            err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this admin token may not act on that tenant",
            )
        };
        if !Self::allowed(caller, tenant) {
            return Some(forbidden());
        }
        match tenant {
            Some(t) if self.tenants.load().by_id(t).is_none() => Some(err(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                format!("no tenant {t:?} in the configuration"),
            )),
            _ => None,
        }
    }
}

pub(crate) async fn read_body(session: &mut ServerSession) -> Result<Zeroizing<Vec<u8>>, Reply> {
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

/// Count an admin answer (API or console) in `tessera_admin_requests_total{outcome}`;
/// redirects count as `ok`.
pub(crate) fn count_outcome(status: StatusCode) {
    let outcome = match status.as_u16() {
        200..=399 => "ok",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        400..=499 => "bad_request",
        _ => "error",
    };
    metrics::global().admin_requests.with_label_values(&[outcome]).inc();
}

impl AdminApp {
    /// A JSON API answer, whole.
    pub async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Reply(status, body) = self.0.route(session).await;
        count_outcome(status);
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

/// Pingora's `ServeHttp` flow (read the head, answer, keep the connection) with one addition:
/// paths under `/console/` go to the console, which writes its own response (the live tail
/// streams). Everything else is the JSON API (`response`).
#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                log::debug!("admin: reading request: {e}");
                return None;
            }
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        if crate::console::is_console(http.req_header().uri.path()) {
            crate::console::serve(&self.0, &mut http, shutdown).await;
        } else {
            let (parts, body) = self.response(&mut http).await.into_parts();
            let head: ResponseHeader = parts.into();
            if let Err(e) = http.write_response_header(Box::new(head)).await {
                log::debug!("admin: writing response: {e}");
                return None;
            }
            if !body.is_empty() {
                if let Err(e) = http.write_response_body(body.into(), true).await {
                    log::debug!("admin: writing response: {e}");
                    return None;
                }
            }
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(c) => c.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                log::debug!("admin: finishing response: {e}");
                None
            }
        }
    }
}
