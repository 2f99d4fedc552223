//! The lean path: HTTP/2 requests without a body, to an API hostname, served on pingora-core's
//! server session, connector and pool without pingora-proxy's generic machinery (its per-request
//! task channel, 14 KB boxed future, module contexts and request-head bookkeeping: about a third
//! of bare Pingora's instructions per request, README "Performance").
//!
//! Where it runs, per HTTP request (after the connection guard, `guard::GuardHttp`):
//!
//! ```text
//! Lean::process_new_http ─ eligible? HTTP/2 stream, END_STREAM on its HEADERS (no body), no
//!      │                   Content-Length / Expect, not CONNECT, TLS with an SNI naming a tenant
//!      │                   that has no OAuth hostname, not an ACME HTTP-01 path, lean_path on
//!      ├─ no ─▶ pingora-proxy's HttpProxy with the same `Proxy` phases (untouched session)
//!      ▼ yes
//! Proxy::admit ─ the `request_filter` phase itself (guard, route, Part A → Part B → token)
//! Proxy::peer ─ the tenant's prepared peer (no copy)
//! Proxy::upstream_request ─ `upstream_request_filter` on a copy of the head
//! connector ─ pooled upstream connection (HTTP/1.1 or HTTP/2 by ALPN), peer timeouts; a failure
//!      │      on a reused connection before any response is retried on another connection
//!      │      for idempotent methods (as pingora-proxy's default policy)
//! Proxy::upstream_response ─ `upstream_response_filter` (status, time, head shaped)
//! body ─ streamed to the client, cut at `upstream.max_request_duration` (`check_duration`)
//! Proxy::fail ─ `fail_to_proxy` on any error (JSON 502/504 if no response head went out;
//!      │        otherwise the stream is reset, never ended cleanly)
//! Proxy::record ─ `logging`: metrics, anomaly detection, session record
//! ```
//!
//! Everything else — HTTP/1.1 (its keep-alive, pipelining and upgrades), request bodies, OAuth
//! hostnames, plaintext listeners, ACME answers — goes through pingora-proxy unchanged; the
//! choice is made before any phase runs, so a request is served entirely by one path. Why only
//! these: an HTTP/2 request's head is already parsed when the session is handed over, so the
//! choice costs nothing and falling back loses nothing; an HTTP/1 session cannot be handed to
//! pingora-proxy once its head was read (Pingora 0.9 keeps the bytes read past the head
//! private), and bodies would need pingora-proxy's duplex loop (an upstream may answer before
//! it has read the body). `lean_path: false` sends every request through pingora-proxy.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Version};
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
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
    fn eligible(&self, session: &mut Downstream, table: &TenantTable) -> bool {
        if !self.enabled || !matches!(session, Downstream::H2(_)) || !session.is_body_empty() {
            return false;
        }
        let req = session.req_header();
        if req.method == Method::CONNECT
            || req.headers.contains_key(http::header::CONTENT_LENGTH)
            || req.headers.contains_key(http::header::EXPECT)
        {
            return false;
        }
        if self.proxy.acme.is_some() && crate::acme::Http01::token(req.uri.path()).is_some() {
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

    /// One request on the lean path, start to finish.
    async fn serve(&self, session: &mut Downstream) {
        let p = &*self.proxy;
        let mut ctx = p.new_ctx();
        let error = match p.admit(session, &mut ctx).await {
            Ok(true) => None,
            Ok(false) => self.forward(session, &mut ctx).await.err(),
            Err(e) => Some(e),
        };
        if let Some(e) = &error {
            // Writes nothing once the response head went out; the stream is then dropped
            // without END_STREAM (reset), so a cut body never looks complete.
            p.fail(session, e, &mut ctx).await;
        }
        p.record(session, &mut ctx);
        if error.is_none() {
            if let Err(e) = session.finish_body().await {
                log::debug!("lean path: finishing the response failed: {e}");
            }
        }
    }

    /// `upstream_peer` to the last body byte.
    async fn forward(&self, session: &mut Downstream, ctx: &mut Ctx) -> Result<()> {
        let p = &*self.proxy;
        ctx.upstream_started = Some(std::time::Instant::now());
        let peer = p.peer(ctx)?;
        let mut up = session.req_header().clone();
        p.upstream_request(session, &mut up, ctx)?;
        let retry_allowed = is_idempotent(&up.method);
        let mut up = Some(up);
        let mut attempt = 0;
        let (mut client, resp) = loop {
            attempt += 1;
            let (mut client, reused) = self.connector.get_http_session(&*peer).await.map_err(|e| e.into_up())?;
            client.set_read_timeout(peer.options.read_timeout);
            client.set_write_timeout(peer.options.write_timeout);
            // A copy only while a retry could still need the head.
            let retry_possible = reused && retry_allowed && attempt < MAX_ATTEMPTS;
            let mut head = match (retry_possible, up.as_ref()) {
                (true, Some(u)) => Box::new(u.clone()),
                _ => match up.take() {
                    Some(u) => Box::new(u),
                    None => return Error::e_explain(InternalError, "lean path: request head already sent"),
                },
            };
            head.set_version(match client {
                Upstream::H2(_) => Version::HTTP_2,
                _ => Version::HTTP_11,
            });
            match exchange(&mut client, head).await {
                Ok(resp) => break (client, resp),
                Err(e) if retry_possible => {
                    log::debug!("lean path: reused upstream connection failed ({e}), retrying");
                }
                Err(e) => return Err(e.into_up()),
            }
        };
        let mut resp = Box::new(resp);
        p.upstream_response(&mut resp, ctx)?;
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
        let table = self.proxy.tenants.load();
        if !self.eligible(&mut session, &table) {
            drop(table);
            self.general.inc();
            return self.fallback.process_new_http(session, shutdown).await;
        }
        drop(table);
        self.lean.inc();
        self.serve(&mut session).await;
        // HTTP/2 streams are never handed back for reuse; the connection lives on in Pingora.
        None
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
