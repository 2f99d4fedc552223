//! The `ProxyHttp` implementation: one function per Pingora phase.
//!
//! ```text
//! TLS handshake ─ tls::SniResolver picks the cert; handshake::HandshakeHook stores SniInfo{tenant}
//!      │
//! request_filter ─ guard: an HTTP/2 stream the client already reset ends here (checked
//!      │           before routing and again after the store lookup; `guard::Guard`)
//!      │           tenants: one snapshot of the tenant table loaded, kept in ctx for every
//!      │           later phase (`tenants` module doc: swaps at runtime)
//!      │           route: tenant from SNI, Host must match (421) ─ no tenant: 404
//!      │           auth:  Part A parsed offline → quarantine check → Part B from the store
//!      │                  (503 if unavailable) → token reconstructed into ctx (401 on any failure)
//! upstream_peer ─ clone of the tenant's prepared HttpPeer
//!      │
//! upstream_request_filter ─ hop-by-hop headers dropped, Host/X-Forwarded-*/X-Request-Id set,
//!      │                    tenant header + extra headers set, credential set (sensitive), then
//!      │                    the ctx copy is dropped (zeroized); edited as plain `http` parts
//!      │                    unless header case is kept (`headers::take_parts`)
//! upstream_response_filter ─ upstream status and time recorded, hop-by-hop headers dropped,
//!      │                     X-Request-Id echoed to the client (`headers::shape_response`)
//! response_filter ─ OAuth hostnames: `Location` rewritten to the vanity origin
//! fail_to_proxy ─ upstream errors → JSON 502/504
//! logging ─ metrics, anomaly detection, session record (try_send, never awaits)
//! ```
//!
//! The phases' work lives in `impl Proxy` on pingora-core's server session, so the lean path
//! (`lean`: requests without a body) runs the same functions in the same order without
//! pingora-proxy; the `ProxyHttp` methods only adapt Pingora's `Session` to them.

mod handshake;
pub(crate) mod headers;
mod lean;
mod respond;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Downstream;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::anomaly::Detector;
use crate::config::AuthMode;
use crate::fragments::{FragmentStore, StoreError};
use crate::metrics;
use crate::session_log::OAuthAudit;
use crate::session_log::{RecordDraft, SessionLogger};
use crate::tenants::{Snapshot, Surface, Tenant, TenantTable, Tenants, UpstreamName};
use crate::token::{self, Keyring, PartA, TokenId, VerifyResult};

pub use handshake::{HandshakeHook, SniInfo};
pub use headers::bearer as bearer_value;
pub use lean::Lean;
pub use respond::{BadRequest, Refusal};

/// Everything the proxy phases share, built once at start-up. A bundle of shared handles:
/// cloning it (pingora-proxy and the lean path each hold one) shares every table and counter.
#[derive(Clone)]
pub struct Proxy {
    /// The live tenant table; a request loads it once (`Ctx::tenants`).
    pub tenants: Arc<Tenants>,
    pub store: Arc<dyn FragmentStore>,
    pub keyring: Arc<ArcSwap<Keyring>>,
    pub sessions: SessionLogger,
    pub anomaly: Arc<Detector>,
    /// See `UpstreamTimeouts::max_request`.
    pub max_request: std::time::Duration,
    /// See `Config::preserve_header_case`.
    pub preserve_header_case: bool,
    /// Connection guard: HTTP/2 streams reset by the client go no further (`guard`).
    pub guard: Arc<crate::guard::Guard>,
    /// The intercepted OAuth endpoints (token, revocation, discovery) on OAuth hostnames.
    pub oauth: Arc<crate::oauth::OAuth>,
    /// ACME HTTP-01 answers (`GET /.well-known/acme-challenge/{token}`), when `acme:` is set.
    pub acme: Option<Arc<crate::acme::Http01>>,
}

/// Per-request state. Holds the reconstructed credential only between `request_filter` and
/// `upstream_request_filter`.
pub struct Ctx {
    started: Instant,
    /// The tenant table this request runs on, loaded once in `request_filter`.
    tenants: Option<Snapshot>,
    tenant: Option<usize>,
    /// The credential header, built in `request_filter`; its value owns the only copy of the
    /// token (wiped on drop) and is marked sensitive.
    credential: Option<(HeaderName, HeaderValue)>,
    token_id: Option<TokenId>,
    /// Verification outcome, if a token was checked.
    verify: Option<VerifyResult>,
    /// Why the request was refused by Tessera itself (for logs).
    refusal: Option<Refusal>,
    request_id: Option<HeaderValue>,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<std::time::Duration>,
    upstream_status: Option<u16>,
    tls: bool,
    /// API or OAuth hostname (set by `route`).
    surface: Surface,
    /// Audit of an intercepted OAuth endpoint call, for the session record.
    oauth: Option<Box<OAuthAudit>>,
}

impl Ctx {
    fn tenant(&self) -> Option<&Tenant> {
        self.tenants.as_ref()?.get(self.tenant?)
    }
}

impl Proxy {
    /// Route the request to a tenant. `Err` carries the refusal to send.
    fn route(&self, session: &Downstream, table: &TenantTable, ctx: &mut Ctx) -> Result<usize, Refusal> {
        let sni: Option<&SniInfo> = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<SniInfo>());
        ctx.tls = sni.is_some() || session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        let host = crate::host::request_authority(&req.uri, &req.headers).and_then(|h| std::str::from_utf8(h).ok());
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            metrics::global().bad_requests.with_label_values(&["no_host"]).inc();
            return Err(Refusal::BadRequest(BadRequest::NoHost));
        };
        let host_route = table.lookup_surface(host);
        let host_tenant = host_route.map(|r| r.0);
        if let Some((_, surface)) = host_route {
            ctx.surface = surface;
        }
        match sni {
            Some(info) => match info.tenant {
                Some(t) if host_tenant == Some(t) => Ok(t),
                Some(_) => {
                    metrics::global().bad_requests.with_label_values(&["misdirected"]).inc();
                    Err(Refusal::Misdirected)
                }
                // Unknown at handshake (default certificate): a tenant added since may serve it.
                None => match info.unknown_name.as_deref().and_then(|n| table.lookup(n)) {
                    Some(t) if host_tenant == Some(t) => Ok(t),
                    _ => {
                        metrics::global().bad_requests.with_label_values(&["unknown_sni"]).inc();
                        Err(Refusal::NoTenant)
                    }
                },
            },
            // Plaintext listener: the Host header decides.
            None => host_tenant.ok_or_else(|| {
                metrics::global()
                    .bad_requests
                    .with_label_values(&["unknown_host"])
                    .inc();
                Refusal::NoTenant
            }),
        }
    }

    /// Verify Part A, reconstruct the credential and turn it into the header to send. A stored
    /// header name that collides with one Tessera sets or strips is refused here, whatever the
    /// record says (records minted before a config change included).
    async fn authenticate(
        &self,
        session: &Downstream,
        table: &TenantTable,
        tenant: &Tenant,
        ctx: &mut Ctx,
    ) -> Result<(HeaderName, HeaderValue), Refusal> {
        let auth = session.req_header().headers.get(http::header::AUTHORIZATION);
        let Some(part_a) = auth.and_then(|v| headers::bearer(v.as_bytes())) else {
            return Err(Refusal::Token(VerifyResult::Missing));
        };
        // Every 401 below does the work of a known id with a wrong Part A (`equalize_refusal`
        // or `reconstruct` itself), so response time does not say which check failed.
        let part_a = PartA::parse(part_a).map_err(|e| {
            token::equalize_refusal(None);
            Refusal::Token(e.into())
        })?;
        ctx.token_id = Some(part_a.id);
        if part_a.tenant_tag != tenant.tag {
            token::equalize_refusal(Some(&part_a));
            return Err(Refusal::Token(VerifyResult::WrongTenant));
        }
        if self.anomaly.is_quarantined(tenant.index, &part_a.id) {
            token::equalize_refusal(Some(&part_a));
            return Err(Refusal::Token(VerifyResult::Quarantined));
        }
        let record = match self.store.get(&tenant.id, &part_a.id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                token::equalize_refusal(Some(&part_a));
                return Err(Refusal::Token(VerifyResult::Unknown));
            }
            Err(StoreError::Unavailable(why)) | Err(StoreError::Embedded { reason: why, .. }) => {
                // The outage itself is logged once by the store (tracker); per request: debug.
                log::debug!(
                    "tenant={} token_id={} fragment store unavailable: {why}",
                    tenant.id,
                    part_a.id
                );
                return Err(Refusal::StoreUnavailable);
            }
        };
        let keyring = self.keyring.load();
        let cred = token::reconstruct(&keyring, &tenant.id, &part_a, &record, crate::clock::unix_secs())
            .map_err(|e| Refusal::Token(e.into()))?;
        let (name, value) = headers::credential_header(cred).map_err(|_| Refusal::Token(VerifyResult::Tampered))?;
        if let Some(why) = table.credential_conflict(tenant, &name) {
            log::warn!(
                "tenant={} token_id={} refused: its credential header {name} is {why}",
                tenant.id,
                part_a.id
            );
            return Err(Refusal::Token(VerifyResult::HeaderConflict));
        }
        Ok((name, value))
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            tenants: None,
            tenant: None,
            credential: None,
            token_id: None,
            verify: None,
            refusal: None,
            request_id: None,
            upstream_started: None,
            upstream_elapsed: None,
            upstream_status: None,
            tls: false,
            surface: Surface::Api,
            oauth: None,
        }
    }

    /// Runs first for every request. `Ok(true)` = a response was written and the request ends
    /// here; `Ok(false)` = continue to the upstream with `ctx` filled in.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.admit(session.as_downstream_mut(), ctx).await
    }

    /// No downstream modules. Pingora's default adds a response-compression module at level 0
    /// (disabled); Tessera never compresses (a proxy in front of an API passes the upstream's
    /// encoding through), and the disabled module still cost a context, a boxed filter future
    /// and four filter calls per request (~1.2 k instructions, README "Performance").
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Where to send the request: the tenant's peer, prepared at load time.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(HttpPeer::clone(&*self.peer(ctx)?)))
    }

    /// Rewrite the request for the upstream. The credential leaves `ctx` here; its buffer is
    /// owned by the header value from now on and wiped when the header map is dropped.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_request(session.as_downstream(), up, ctx)
    }

    /// Long uploads are cut at `upstream.max_request_duration`.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.check_duration(ctx)
    }

    /// Long downloads and streams are cut at `upstream.max_request_duration`: a token revoked
    /// mid-stream stops working within that bound (every new request is checked anyway).
    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        self.check_duration(ctx).map(|_| None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_response(resp, ctx)
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if ctx.surface == Surface::OAuth {
            if let Some(o) = ctx.tenant().and_then(|t| t.oauth.as_ref()) {
                crate::oauth::rewrite_location(resp, o, &vanity_origin(session.as_downstream(), ctx.tls))?;
            }
        }
        Ok(())
    }

    /// A fatal proxying error: answer with a JSON error instead of Pingora's bare page.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        FailToProxy {
            error_code: self.fail(session.as_downstream_mut(), e, ctx).await,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error lines ("Fail to proxy: …") say about the request: method, path
    /// and host with query values redacted and Part-A-shaped text scrubbed (the default prints
    /// the raw path and Host).
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        crate::session_log::request_summary(session.req_header())
    }

    /// Runs once per request, whatever happened. Never awaits I/O.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        self.record(session.as_downstream(), ctx)
    }
}

/// The phases' work on pingora-core's server session, shared by the `ProxyHttp` methods above
/// and the lean path (`lean`), which calls them in the same order.
impl Proxy {
    /// `request_filter`: `Ok(true)` = a response was written and the request ends here;
    /// `Ok(false)` = continue to the upstream with `ctx` filled in.
    pub(crate) async fn admit(&self, session: &mut Downstream, ctx: &mut Ctx) -> Result<bool> {
        // An HTTP/2 stream the client already reset ends here (no store lookup, no upstream).
        if self.guard.h2_stream_reset(session) {
            return Ok(true);
        }
        // One snapshot for the whole request (one atomic load); later phases read it from ctx.
        let table = self.tenants.load();
        // ACME HTTP-01 (`crate::acme`): a prefix check, before any tenant lookup.
        if let Some(acme) = &self.acme {
            if let Some(token) = crate::acme::Http01::token(session.req_header().uri.path()).map(str::to_owned) {
                ctx.tenants = Some(table);
                // Boxed: see `filter` (keeps the per-request future small).
                Box::pin(async {
                    let answer = acme.answer(&token).await;
                    respond::acme_http01(session, answer).await
                })
                .await?;
                return Ok(true);
            }
        }
        let res = self.filter(session, &table, ctx).await;
        ctx.tenants = Some(table);
        res
    }

    /// `upstream_peer`: the tenant's peer (API or OAuth upstream), prepared at load time.
    pub(crate) fn peer(&self, ctx: &Ctx) -> Result<Arc<HttpPeer>> {
        let tenant = ctx
            .tenant()
            .ok_or_else(|| Error::explain(InternalError, "upstream_peer without a tenant"))?;
        match (ctx.surface, &tenant.oauth) {
            (Surface::OAuth, Some(o)) => Ok(o.peer.load_full()),
            _ => Ok(tenant.peer.load_full()),
        }
    }

    /// `upstream_request_filter` on the upstream copy of the request head.
    pub(crate) fn upstream_request(&self, session: &Downstream, up: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        // The credential next (see `shape_upstream`); on OAuth hostnames without a Part A the
        // client's own `Authorization` (client authentication) passes through.
        let credential = ctx.credential.take();
        let (Some(table), Some(tenant)) = (ctx.tenants.as_deref(), ctx.tenant()) else {
            return Error::e_explain(InternalError, "upstream_request_filter without a tenant");
        };
        let oauth = ctx.surface == Surface::OAuth;
        let keep_authorization = oauth && credential.is_none();
        let host = match (oauth, &tenant.oauth) {
            (true, Some(o)) => &o.upstream_host,
            _ => &tenant.upstream_host,
        };
        self.shape_upstream(session, up, table, tenant, host, credential, keep_authorization, ctx)
    }

    /// `upstream_response_filter`: upstream status and time recorded, the head shaped for the
    /// client.
    pub(crate) fn upstream_response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        ctx.upstream_elapsed = ctx.upstream_started.map(|s| s.elapsed());
        headers::shape_response(resp, self.preserve_header_case, ctx.request_id.as_ref())
    }

    /// `fail_to_proxy`: the JSON error for `e` if it is one Tessera answers, and its status
    /// (0 = none). Once a response head went out nothing more is written: an error body appended
    /// to a started response (and, over HTTP/2, a clean END_STREAM after it) would make a cut
    /// response look complete; the connection (HTTP/1.1) or stream (HTTP/2) is dropped instead.
    pub(crate) async fn fail(&self, session: &mut Downstream, e: &Error, ctx: &mut Ctx) -> u16 {
        // A credential still in ctx (error before upstream_request_filter) is wiped here.
        ctx.credential = None;
        let refusal = Refusal::for_error(e);
        if let Some(r) = refusal {
            ctx.refusal = Some(r);
            static FAILED: crate::logging::RateLimited = crate::logging::RateLimited::new();
            if let (Some(t), Some(n)) = (ctx.tenant(), FAILED.hit()) {
                log::warn!(
                    "tenant={} upstream={} request failed: {e} ({n} upstream failures since the last line)",
                    t.id,
                    t.upstream_url
                );
            }
            let started = session.response_written().is_some();
            if !started && respond::refuse(session, r, ctx.request_id.as_ref()).await.is_err() {
                log::debug!("could not send error response");
            }
        }
        refusal.map_or(0, |r| r.status())
    }

    /// `logging`: metrics, anomaly detection, session record. Never awaits I/O.
    pub(crate) fn record(&self, session: &Downstream, ctx: &mut Ctx) {
        ctx.credential = None;
        let oauth = ctx.oauth.take();
        let Some(tenant) = ctx.tenant() else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let bytes_out = session.body_bytes_sent() as u64;
        let bytes_in = session.body_bytes_read() as u64;
        let elapsed = ctx.started.elapsed();
        let m = &tenant.metrics;
        m.request(status);
        m.duration.observe(elapsed.as_secs_f64());
        m.bytes_sent.inc_by(bytes_out);
        m.bytes_received.inc_by(bytes_in);
        if let Some(u) = ctx.upstream_elapsed {
            m.upstream_duration.observe(u.as_secs_f64());
        }
        let req = session.req_header();
        let ip = client_ip(session);
        let ua = req.headers.get(http::header::USER_AGENT).map(|v| v.as_bytes());
        let flags = self.anomaly.observe(&crate::anomaly::Observation {
            tenant,
            token_id: ctx.token_id.as_ref(),
            verify: ctx.verify,
            ip,
            user_agent: ua,
            status,
            bytes_out,
            path: req.uri.path(),
        });
        if self.sessions.enabled() {
            self.sessions.log(
                RecordDraft::capture(
                    tenant,
                    ctx.token_id,
                    ip,
                    req,
                    status,
                    ctx.upstream_status,
                    bytes_in,
                    bytes_out,
                    elapsed,
                    ctx.request_id.as_ref(),
                    ctx.verify,
                    ctx.refusal.map(|r| r.label()),
                    flags,
                )
                .with_oauth(oauth),
            );
        }
    }
    /// `request_filter` on the request's tenant snapshot: route, then authenticate or answer
    /// an intercepted OAuth endpoint. Same return values as `request_filter`.
    async fn filter(&self, session: &mut Downstream, table: &TenantTable, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = Some(headers::request_id(session.req_header()));
        let outcome = match self
            .check_headers(session, table)
            .and_then(|()| self.route(session, table, ctx))
        {
            Ok(t) => {
                ctx.tenant = Some(t);
                match table.get(t) {
                    Some(tenant) if ctx.surface == Surface::OAuth => {
                        // Boxed: its state (an exchange with the authorization server) is
                        // kilobytes, and an unboxed one would make every request's
                        // `request_filter` future that large (Pingora copies it into a `Box`
                        // per request; README "Performance").
                        if let Some(handled) = Box::pin(self.oauth_endpoint(session, table, tenant, ctx)).await {
                            return handled;
                        }
                        // Other OAuth pages need no Part A; one sent anyway (userinfo with the
                        // access Part A) is swapped like on the API.
                        if Self::carries_part_a(session) {
                            let res = self.authenticate(session, table, tenant, ctx).await;
                            let result = res.as_ref().map_or_else(Refusal::verify_result, |_| VerifyResult::Ok);
                            ctx.verify = Some(result);
                            tenant.metrics.verification(result);
                            res.map(|c| ctx.credential = Some(c))
                        } else {
                            Ok(())
                        }
                    }
                    Some(tenant) if tenant.auth == AuthMode::SplitToken => {
                        let res = self.authenticate(session, table, tenant, ctx).await;
                        let result = res.as_ref().map_or_else(Refusal::verify_result, |_| VerifyResult::Ok);
                        ctx.verify = Some(result);
                        tenant.metrics.verification(result);
                        res.map(|c| ctx.credential = Some(c))
                    }
                    _ => Ok(()),
                }
            }
            Err(r) => Err(r),
        };
        match outcome {
            // Checked again after the store lookup: a stream reset meanwhile never reaches
            // the upstream, and the credential is dropped (zeroized) here.
            Ok(()) if self.guard.h2_stream_reset(session) => {
                ctx.credential = None;
                Ok(true)
            }
            Ok(()) => Ok(false),
            Err(refusal) => {
                ctx.refusal = Some(refusal);
                // Boxed for the same reason as the OAuth endpoints: writing a response is a
                // large future, and refusals are the uncommon path.
                Box::pin(respond::refuse(session, refusal, ctx.request_id.as_ref())).await?;
                Ok(true)
            }
        }
    }

    /// The request headers for an upstream: hop-by-hop headers dropped, client copies of
    /// tenant headers and `strip_headers` removed, then the credential, then Tessera's own
    /// headers (Host, `X-Forwarded-*`, `X-Request-Id`, extra headers), the tenant header last.
    /// A client never picks its tenant, and even a record whose header name slipped past
    /// validation cannot override Tessera's headers (its name was checked in `authenticate`).
    /// Used for proxied requests and for the OAuth endpoints' own exchanges.
    #[allow(clippy::too_many_arguments)]
    fn shape_upstream(
        &self,
        session: &Downstream,
        up: &mut RequestHeader,
        table: &TenantTable,
        tenant: &Tenant,
        upstream_host: &HeaderValue,
        credential: Option<(HeaderName, HeaderValue)>,
        keep_authorization: bool,
        ctx: &Ctx,
    ) -> Result<()> {
        let shape = Shape {
            session,
            table,
            tenant,
            upstream_host,
            keep_authorization,
            ctx,
        };
        match headers::take_parts(up, self.preserve_header_case) {
            Some(mut taken) => {
                let done = shape.apply(&mut taken.parts, credential);
                headers::restore(up, taken);
                done
            }
            None => shape.apply(up, credential),
        }
    }

    /// Whether the request carries `Authorization: Bearer tsr_…`.
    fn carries_part_a(session: &Downstream) -> bool {
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| headers::bearer(v.as_bytes()))
            .is_some_and(|t| t.starts_with(token::PART_A_PREFIX))
    }

    /// Answer an intercepted OAuth endpoint (token, revocation, discovery) if the request is
    /// for one: `Some(result of request_filter)`.
    async fn oauth_endpoint(
        &self,
        session: &mut Downstream,
        table: &TenantTable,
        tenant: &Tenant,
        ctx: &mut Ctx,
    ) -> Option<Result<bool>> {
        let surface = tenant.oauth.as_ref()?;
        let req = session.req_header();
        let endpoint = crate::oauth::endpoint(surface, &req.method, req.uri.path())?;
        let mut up = req.clone();
        let path: http::Uri = match req.uri.path_and_query() {
            Some(pq) => pq.as_str().parse().unwrap_or_else(|_| http::Uri::from_static("/")),
            None => http::Uri::from_static("/"),
        };
        up.set_uri(path);
        if let Err(e) = self.shape_upstream(session, &mut up, table, tenant, &surface.upstream_host, None, true, ctx) {
            return Some(Err(e));
        }
        let keyring = self.keyring.load();
        let anomaly = &self.anomaly;
        let index = tenant.index;
        let quarantined = move |id: &TokenId| anomaly.is_quarantined(index, id);
        let call = crate::oauth::Call {
            store: self.store.as_ref(),
            keyring: &keyring,
            tenant,
            surface,
            upstream: up,
            vanity_origin: vanity_origin(session, ctx.tls),
            request_id: ctx.request_id.clone(),
            quarantined: &quarantined,
        };
        ctx.upstream_started = Some(Instant::now());
        Some(self.oauth.handle(endpoint, call, session).await.map(|o| {
            ctx.upstream_elapsed = ctx.upstream_started.map(|s| s.elapsed());
            ctx.upstream_status = o.upstream_status;
            ctx.token_id = o.token_id;
            ctx.oauth = o.audit;
            true
        }))
    }

    /// Header checks before routing: `Content-Length` normalised to one value (or refused),
    /// and `Connection` may not list a header Tessera manages.
    fn check_headers(&self, session: &mut Downstream, table: &TenantTable) -> Result<(), Refusal> {
        let req = session.req_header_mut();
        let res = headers::normalize_content_length(req)
            .and_then(|()| headers::check_connection(&req.headers, table.stripped_headers()));
        if let Err(bad) = res {
            let label = Refusal::BadRequest(bad).label();
            metrics::global().bad_requests.with_label_values(&[label]).inc();
            return Err(Refusal::BadRequest(bad));
        }
        Ok(())
    }

    pub(crate) fn check_duration(&self, ctx: &Ctx) -> Result<()> {
        if ctx.started.elapsed() > self.max_request {
            return Error::e_explain(
                ErrorType::Custom(respond::DURATION_EXCEEDED),
                "request exceeded upstream.max_request_duration",
            );
        }
        Ok(())
    }
}

/// What `shape_upstream` applies to an upstream request (see there).
struct Shape<'a> {
    session: &'a Downstream,
    table: &'a TenantTable,
    tenant: &'a Tenant,
    upstream_host: &'a HeaderValue,
    keep_authorization: bool,
    ctx: &'a Ctx,
}

/// Fixed names Tessera sets, prepared once (`UpstreamName`).
static AUTHORIZATION: UpstreamName = UpstreamName {
    name: http::header::AUTHORIZATION,
    wire: Bytes::from_static(b"Authorization"),
};
static HOST: UpstreamName = UpstreamName {
    name: http::header::HOST,
    wire: Bytes::from_static(b"Host"),
};
static X_FORWARDED_HOST: UpstreamName = UpstreamName::from_static("x-forwarded-host", "x-forwarded-host");
static X_FORWARDED_PROTO: UpstreamName = UpstreamName::from_static("x-forwarded-proto", "x-forwarded-proto");

impl Shape<'_> {
    fn apply(&self, up: &mut impl headers::Upstream, credential: Option<(HeaderName, HeaderValue)>) -> Result<()> {
        headers::strip_hop_by_hop(up);
        // Host and the credential usually replace the client's; the rest are new.
        up.reserve(5 + self.tenant.headers_wire.len());
        // A removal through Pingora's `RequestHeader` goes through both of its header maps; a
        // lookup is enough to know there is nothing to remove, the common case.
        for name in self.table.stripped_headers() {
            if up.headers().contains_key(name) {
                up.remove(name.as_str());
            }
        }
        // A credential sent as `Authorization` replaces the client's (insert replaces every
        // value), so the separate removal is only needed for other credential headers.
        let replaced = credential
            .as_ref()
            .is_some_and(|(name, _)| name == http::header::AUTHORIZATION);
        if !self.keep_authorization && !replaced {
            up.remove("authorization");
        }
        match credential {
            // Pingora would spell a `HeaderName` `authorization` on an HTTP/1 upstream that
            // keeps case, copied per request; the prepared name needs neither.
            Some((_, value)) if replaced => up.set(&AUTHORIZATION, value)?,
            Some((name, value)) => up.set_name(name, value)?,
            None => {}
        }
        // h2 carries :authority (one small copy); h1 reuses the Host value without copying.
        let original_host: Option<HeaderValue> = match self.session.req_header().uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => up.headers().get(http::header::HOST).cloned(),
        };
        up.set(&HOST, self.upstream_host.clone())?;
        // An HTTP/2 client's URI (or an HTTP/1 absolute-form target) carries the vanity
        // authority. The upstream's authority is the Host just set, so the target goes on in
        // origin form, which is what an HTTP/1 upstream gets on the wire anyway; Pingora then has
        // no authority to reconcile (it would parse Host into a rebuilt URI: ~1 k instructions
        // per HTTP/2 request). A non-UTF-8 target is left for Pingora, which refuses it.
        if up.uri().authority().is_some() && up.target_is_utf8() {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(
                up.uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            );
            if let Ok(uri) = http::Uri::from_parts(parts) {
                up.set_uri(uri);
            }
        }
        if let Some(h) = original_host {
            up.set(&X_FORWARDED_HOST, h)?;
        }
        let proto = HeaderValue::from_static(if self.ctx.tls { "https" } else { "http" });
        up.set(&X_FORWARDED_PROTO, proto)?;
        if let Some(ip) = client_ip(self.session) {
            headers::append_forwarded_for(up, ip)?;
        }
        if let Some(id) = &self.ctx.request_id {
            up.set(&headers::X_REQUEST_ID, id.clone())?;
        }
        // Names prepared at load time (no per-request parsing or copying).
        for (n, v) in &self.tenant.headers_wire {
            up.set(n, v.clone())?;
        }
        up.set(&self.tenant.tenant_header_wire, self.tenant.tenant_value.clone())
    }
}

/// `scheme://host[:port]` as the client addressed Tessera (the vanity origin).
fn vanity_origin(session: &Downstream, tls: bool) -> String {
    let req = session.req_header();
    let host = crate::host::request_authority(&req.uri, &req.headers)
        .and_then(|h| std::str::from_utf8(h).ok())
        .unwrap_or_default();
    format!("{}://{host}", if tls { "https" } else { "http" })
}

/// The client's IP address (TCP peer).
fn client_ip(session: &Downstream) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// Bytes for an error body.
pub(crate) fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
