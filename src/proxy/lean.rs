//! The lean path: requests without a body to an API hostname over TLS, served on pingora-core's
//! server session, connector and pool without pingora-proxy's generic machinery (its per-request
//! task channel, 14 KB boxed future, module contexts and request-head bookkeeping: about a third
//! of bare Pingora's instructions per request, README "Performance").
//!
//! Where it runs, per connection and per request (after the connection guard, `guard::GuardHttp`):
//!
//! ```text
//! Lean::process_new_http ─ lean connection? lean_path on, TLS, SNI names a tenant without an
//!      │                   OAuth hostname (OAuth surfaces need `response_filter`), HTTP/1 on the
//!      │                   guard's stream ─ no: pingora-proxy's HttpProxy for everything on it
//!      ▼ yes: the request head is read (HTTP/1: here, with pingora-proxy's 400 for a bad
//!      │      head and its shutdown check while idle; HTTP/2: already parsed)
//! eligible? no body (HTTP/2: END_STREAM on HEADERS; any: no Content-Length or
//!      │     Transfer-Encoding), no Upgrade, no Expect, not CONNECT, HTTP/1.1 or HTTP/2, not an
//!      │     ACME HTTP-01 path
//!      ├─ no ─▶ pingora-proxy (HTTP/2: the untouched stream; HTTP/1: `hand_over`, a new
//!      │        session fed the head and the bytes read past it, as Pingora itself continues
//!      │        a keep-alive connection)
//!      ▼ yes
//! Proxy::admit ─ the `request_filter` phase itself (guard, route, Part A → Part B → token)
//! Proxy::peer ─ the tenant's prepared peer (no copy)
//! Proxy::upstream_request ─ `upstream_request_filter` on a copy of the head
//! connector ─ pooled upstream connection (HTTP/1.1 or HTTP/2 by ALPN), peer timeouts; a failure
//!      │      on a reused connection before any response is retried on another connection
//!      │      for idempotent methods (as pingora-proxy's default policy)
//! Proxy::upstream_response ─ `upstream_response_filter` (status, time, head shaped); chunked
//!      │                     framing for an HTTP/1.1 client when the upstream gave no length
//! body ─ streamed to the client, cut at `upstream.max_request_duration` (`check_duration`)
//! Proxy::fail ─ `fail_to_proxy` on any error (JSON 502/504 if no response head went out;
//!      │        otherwise the stream is reset / the connection closed, never ended cleanly)
//! Proxy::record ─ `logging`: metrics, anomaly detection, session record
//! keep-alive ─ HTTP/1: the connection goes back to Pingora's loop for the next request
//! ```
//!
//! A request is served entirely by one path; both run the same `Proxy` phases. A hand-over
//! replays exactly the bytes the client sent; a head Pingora's parser rewrote (its escaping of
//! an illegal request line) cannot be, and gets a `400` (`bad_requests{reason="unreplayable"}`). Why bodies,
//! upgrades and `Expect` go to pingora-proxy: they need its duplex loop (an upstream may answer
//! before it has read the body; an upgraded connection carries bytes both ways). What the lean
//! path does not carry and pingora-proxy does: response trailers (only HTTP/2 upstreams send
//! them, and only for requests with bodies in practice: gRPC). `lean_path: false` sends every
//! request through pingora-proxy.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use bytes::BytesMut;
use http::{Method, Version};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession as Upstream;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession as Downstream;
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::Peer;
use prometheus::IntCounter;

use super::{Ctx, Proxy, SniInfo};
use crate::guard::GuardedStream;
use crate::metrics;
use crate::tenants::TenantTable;

/// Attempts at an upstream exchange when a reused connection fails before answering.
const MAX_ATTEMPTS: usize = 3;

/// The proxy service's HTTP app: the lean path for the requests it takes (module doc), Pingora's
/// `HttpProxy` for the rest. Both run the same `Proxy`.
pub struct Lean {
    proxy: Arc<Proxy>,
    fallback: Arc<HttpProxy<Proxy>>,
    connector: Connector,
    enabled: bool,
    lean: IntCounter,
    general: IntCounter,
}

impl Lean {
    /// `proxy` is the same value as the one inside `fallback` (`Proxy` is a bundle of shared
    /// handles); `conf` gives the upstream connector the options pingora-proxy's has.
    pub fn new(proxy: Arc<Proxy>, fallback: HttpProxy<Proxy>, conf: &Arc<ServerConf>, enabled: bool) -> Lean {
        let paths = &crate::metrics::global().request_paths;
        Lean {
            proxy,
            fallback: Arc::new(fallback),
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
            enabled,
            lean: paths.with_label_values(&["lean"]),
            general: paths.with_label_values(&["pingora_proxy"]),
        }
    }

    /// Whether this request takes the lean path (module doc). Reads only the parsed head and
    /// the TLS digest.
    fn eligible(&self, session: &mut Downstream) -> bool {
        let h1 = match session {
            Downstream::H1(_) => true,
            Downstream::H2(_) => false,
            _ => return false,
        };
        if !h1 && !session.is_body_empty() {
            return false;
        }
        let req = session.req_header();
        if req.method == Method::CONNECT
            || (h1 && req.version != Version::HTTP_11)
            || req.headers.contains_key(http::header::CONTENT_LENGTH)
            || req.headers.contains_key(http::header::TRANSFER_ENCODING)
            || req.headers.contains_key(http::header::UPGRADE)
            || req.headers.contains_key(http::header::EXPECT)
        {
            return false;
        }
        !(self.proxy.acme.is_some() && crate::acme::Http01::token(req.uri.path()).is_some())
    }

    /// Whether the connection may use the lean path at all, before anything is read: on (and
    /// the stream is the guard's, see `hand_over`), TLS with an SNI naming a tenant that has
    /// no OAuth hostname (OAuth surfaces need `response_filter`, which only pingora-proxy runs).
    fn lean_connection(&self, session: &Downstream, table: &TenantTable) -> bool {
        if !self.enabled {
            return false;
        }
        // HTTP/1 hand-overs need the guard's stream (`hand_over`); HTTP/2 never hands over.
        let guarded = || {
            session
                .stream()
                .is_some_and(|s| (**s).as_any().downcast_ref::<GuardedStream>().is_some())
        };
        if matches!(session, Downstream::H1(_)) && !guarded() {
            return false;
        }
        let sni = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<SniInfo>());
        sni.and_then(|i| i.tenant)
            .and_then(|t| table.get(t))
            .is_some_and(|t| t.oauth.is_none())
    }

    /// An HTTP/1.1 request on a lean connection: read its head, then serve it here or hand it
    /// to pingora-proxy; the connection comes back for the next request either way.
    async fn serve_h1(&self, mut session: Downstream, shutdown: &ShutdownWatch) -> Option<ReusedHttpStream> {
        // As Pingora's app loop left them (keep-alive timeout and reuses), for a hand-over.
        let persist = HttpPersistentSettings::for_session(&session);
        let reuses = session.get_keepalive_reuses_remaining();
        let read = tokio::select! {
            biased;
            r = session.read_request() => r,
            _ = shutting_down(shutdown) => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // As pingora-proxy: a malformed head gets a 400, anything else a closed connection.
                if matches!(e.etype(), InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                log::debug!("lean path: reading a request failed: {e}");
                return None;
            }
        }
        if !self.eligible(&mut session) {
            return self.hand_over(session, persist, reuses, shutdown).await;
        }
        self.lean.inc();
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        if !self.serve(&mut session).await {
            return None;
        }
        let persist = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, persist))
    }

    /// Give an HTTP/1 request whose head the lean path has read to pingora-proxy: a new
    /// session on the same connection, fed the head's bytes and whatever was read past it
    /// (`GuardedStream::take_overread`) as the start of its input, with the connection's
    /// keep-alive state, exactly as Pingora continues a connection between requests.
    async fn hand_over(
        &self,
        mut session: Downstream,
        persist: HttpPersistentSettings,
        reuses: Option<u32>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.general.inc();
        let Downstream::H1(h1) = &mut session else {
            return self.fallback.process_new_http(session, shutdown).await;
        };
        let head = h1.get_headers_raw_bytes();
        // Replayed bytes must be exactly what the client sent: the head as Pingora parsed it
        // and the guard's bytes past the head as the guard scanned it only join up when both
        // saw the head end at the same byte. They differ only when Pingora rewrote the head
        // (its escaping of an illegal request line); such a request is refused, never guessed.
        let head_len = h1
            .stream()
            .as_any()
            .downcast_ref::<GuardedStream>()
            .map(GuardedStream::head_len);
        if head_len != Some(head.len()) {
            metrics::global()
                .bad_requests
                .with_label_values(&["unreplayable"])
                .inc();
            log::debug!(
                "lean path: request head not replayable ({} bytes parsed, {head_len:?} received); 400",
                head.len()
            );
            session.set_keepalive(None);
            let _ = session.respond_error(400).await;
            return None;
        }
        let Downstream::H1(h1) = session else {
            return None;
        };
        let Ok(mut guarded) = h1.into_inner().into_any().downcast::<GuardedStream>() else {
            // Not reachable: checked just above.
            return None;
        };
        let overread = guarded.take_overread();
        let mut prefix = BytesMut::with_capacity(head.len() + overread.len());
        prefix.extend_from_slice(&head);
        prefix.extend_from_slice(&overread);
        let mut fresh = Downstream::new_http1(guarded);
        // `apply_to_session` counts a reuse; this is still the same request.
        persist.apply_to_session(&mut fresh);
        fresh.set_keepalive_reuses_remaining(reuses);
        fresh.set_pipelined_prefix(prefix);
        self.fallback.process_new_http(fresh, shutdown).await
    }

    /// One request on the lean path, start to finish. `false`: the connection must not be
    /// reused (an error ended the request).
    async fn serve(&self, session: &mut Downstream) -> bool {
        let p = &*self.proxy;
        let mut ctx = p.new_ctx();
        let mut tries = 0;
        let (error, context) = match p.admit(session, &mut ctx).await {
            Ok(true) => (None, ""),
            Ok(false) => (
                self.forward(session, &mut ctx, &mut tries).await.err(),
                "Fail to proxy:",
            ),
            Err(e) => (Some(e), "Fail to filter request:"),
        };
        if let Some(e) = &error {
            // Writes nothing once the response head went out; the stream is then dropped
            // without END_STREAM (reset), so a cut body never looks complete.
            let code = p.fail(session, e, &mut ctx).await;
            // Pingora's own error line, with the same (scrubbed) request summary.
            log::error!(
                "{context} {e}, status: {code}, tries: {tries}, retry: false, {}",
                crate::session_log::request_summary(session.req_header())
            );
        }
        p.record(session, &mut ctx);
        if error.is_some() {
            return false;
        }
        if let Err(e) = session.finish_body().await {
            log::debug!("lean path: finishing the response failed: {e}");
            return false;
        }
        true
    }

    /// `upstream_peer` to the last body byte.
    /// `tries`: upstream attempts made (for the error line).
    async fn forward(&self, session: &mut Downstream, ctx: &mut Ctx, tries: &mut usize) -> Result<()> {
        let p = &*self.proxy;
        ctx.upstream_started = Some(std::time::Instant::now());
        let peer = p.peer(ctx)?;
        let retry_allowed = is_idempotent(&session.req_header().method);
        // For a retry the head is built again from the client's; the credential is kept for it
        // as a second handle on the same wiped-on-drop buffer (no copy of the token).
        let credential = ctx.credential.clone();
        let mut attempt = 0;
        let (mut client, resp) = loop {
            attempt += 1;
            *tries = attempt;
            if attempt > 1 {
                ctx.credential = credential.clone();
            }
            let mut up = session.req_header().clone();
            p.upstream_request(session, &mut up, ctx)?;
            let (mut client, reused) = self.connector.get_http_session(&*peer).await.map_err(|e| e.into_up())?;
            client.set_read_timeout(peer.options.read_timeout);
            client.set_write_timeout(peer.options.write_timeout);
            let h2 = matches!(client, Upstream::H2(_));
            up.set_version(if h2 { Version::HTTP_2 } else { Version::HTTP_11 });
            // While the upstream works, a client that goes away (HTTP/1 close, HTTP/2 reset)
            // ends the exchange, as pingora-proxy's duplex loop does.
            let answer = tokio::select! {
                biased;
                r = exchange(&mut client, Box::new(up)) => r,
                e = client_gone(session) => return Err(e),
            };
            match answer {
                Ok(resp) => break (client, resp),
                // The upstream refused HTTP/2 (HTTP_1_1_REQUIRED) or spoke it badly: HTTP/1.1
                // from now on for this peer, as pingora-proxy does, and this request again.
                Err(e)
                    if h2
                        && matches!(e.etype(), H2Downgrade | InvalidH2)
                        && attempt < MAX_ATTEMPTS
                        && peer.get_alpn().is_none_or(|a| a.get_min_http_version() == 1) =>
                {
                    log::debug!("lean path: upstream refused HTTP/2 ({e}); using HTTP/1.1 for it");
                    self.connector.prefer_h1(&*peer);
                }
                // A reused connection the upstream had closed meanwhile: another one.
                Err(e) if reused && retry_allowed && attempt < MAX_ATTEMPTS => {
                    log::warn!(
                        "Fail to proxy: {e}, tries: {attempt}, retry: true, {}",
                        crate::session_log::request_summary(session.req_header())
                    );
                }
                Err(e) => return Err(e.into_up()),
            }
        };
        drop(credential);
        let mut resp = Box::new(resp);
        p.upstream_response(&mut resp, ctx)?;
        if matches!(session, Downstream::H1(_)) {
            // As pingora-proxy: an HTTP/1.1 client gets chunked framing when the upstream gave
            // no length (an HTTP/2 or HTTP/1.0 upstream), so the connection stays reusable.
            resp.set_version(Version::HTTP_11);
            let no_body = session.req_header().method == Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
            if !no_body
                && !resp.headers.contains_key(http::header::CONTENT_LENGTH)
                && !resp.headers.contains_key(http::header::TRANSFER_ENCODING)
            {
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        session.write_response_header(resp).await.map_err(|e| e.into_down())?;
        loop {
            let body = client.read_response_body().await.map_err(|e| e.into_up())?;
            p.check_duration(ctx)?;
            match body {
                Some(b) => session.write_response_body(b, false).await.map_err(|e| e.into_down())?,
                None => break,
            }
        }
        session
            .write_response_body(Bytes::new(), true)
            .await
            .map_err(|e| e.into_down())?;
        if client.response_done() {
            self.connector
                .release_http_session(client, &*peer, peer.idle_timeout())
                .await;
        }
        Ok(())
    }
}

/// Send a body-less request and read the final response head (informational 1xx skipped:
/// nothing was asked of them, and 101 cannot answer a request without `Upgrade`).
async fn exchange(client: &mut Upstream, head: Box<RequestHeader>) -> Result<ResponseHeader> {
    client.write_request_header(head).await?;
    client.finish_request_body().await?;
    loop {
        client.read_response_header().await?;
        let Some(resp) = client.response_header() else {
            return Error::e_explain(InvalidHTTPHeader, "upstream sent no response head");
        };
        if resp.status.is_informational() {
            if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Error::e_explain(InvalidHTTPHeader, "upstream switched protocols unasked");
            }
            continue;
        }
        return Ok(resp.clone());
    }
}

/// Resolves with an error when the client goes away while a body-less request waits for its
/// answer (HTTP/1: the connection closed or bytes after the request; HTTP/2: the stream reset).
async fn client_gone(session: &mut Downstream) -> Box<Error> {
    loop {
        match session.read_body_or_idle(true).await {
            Err(e) => return e.into_down(),
            // Not expected for a request without a body; keep waiting for the end.
            Ok(Some(_)) => continue,
            Ok(None) => std::future::pending::<()>().await,
        }
    }
}

/// Resolves once the server is shutting down (an idle keep-alive connection then closes
/// instead of waiting for another request, as pingora-proxy does).
async fn shutting_down(shutdown: &ShutdownWatch) {
    let mut watch = shutdown.clone();
    loop {
        if *watch.borrow_and_update() {
            return;
        }
        if watch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: Downstream,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let lean = self.lean_connection(&session, &self.proxy.tenants.load());
        // The lean path's futures are boxed on their own: inline, their state (kilobytes) would
        // make this future that large, and it is moved into a `Box` for every request, the
        // ones handed to pingora-proxy included (README "Performance").
        if lean && matches!(session, Downstream::H1(_)) {
            return Box::pin(self.serve_h1(session, shutdown)).await;
        }
        // An HTTP/2 stream's head is already parsed: the choice reads it, nothing is consumed.
        if lean && matches!(session, Downstream::H2(_)) && self.eligible(&mut session) {
            self.lean.inc();
            Box::pin(self.serve(&mut session)).await;
            // HTTP/2 streams are never handed back for reuse; the connection lives on.
            return None;
        }
        self.general.inc();
        self.fallback.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.fallback.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.fallback.server_options()
    }

    async fn http_cleanup(&self) {
        self.fallback.http_cleanup().await
    }
}
