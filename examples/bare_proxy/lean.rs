//! `--lean`: the same proxy without pingora-proxy, built on pingora-core's server session,
//! HTTP/1 connector and connection pool. A measuring stick, not a product path: it answers
//! issue 11's question "is pingora-proxy's generic machinery the floor?" by serving the
//! benchmark's requests with only the work a reverse proxy cannot skip, so
//! `benches/instructions.sh` (case `lean-h1`/`lean-h2`) and `benches/load.sh` (`lean`) can put
//! its cost beside pingora-proxy's in the same run.
//!
//! What it does per request: read the request head (HTTP/1.1 or HTTP/2 downstream), take the
//! head apart as plain `http` parts, strip hop-by-hop headers, set `Host`, the tenant header
//! and `Authorization`, take a pooled HTTP/1.1 upstream connection, write the head and any
//! request body, read the response head, strip hop-by-hop headers, stream the body back, put
//! the upstream connection back in the pool, and hand the downstream connection back for
//! keep-alive. What it leaves out (and a product path would need): retries, upgrades
//! (WebSocket), CONNECT, trailers, `100 Continue`, timeouts beyond Pingora's defaults, error
//! pages beyond a bare 502, and any phase hooks.

use std::sync::Arc;

use async_trait::async_trait;
use http::header::{self, HeaderName};
use http::HeaderValue;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

/// Connection-scoped headers (RFC 9110 §7.6.1) that are never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// The lean app: one prepared peer, its `Host`, the two header values, one connector.
pub struct Lean {
    pub peer: HttpPeer,
    pub host: HeaderValue,
    pub tenant: HeaderValue,
    pub credential: HeaderValue,
    pub connector: Connector,
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // One pass to see whether anything is there; removals only when it is.
    if headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || k.as_str() == "keep-alive")
    {
        for h in &HOP_BY_HOP {
            headers.remove(h);
        }
        headers.remove("keep-alive");
    }
}

impl Lean {
    /// Forward one request; `None` when the downstream connection must not be reused.
    async fn forward(&self, session: &mut ServerSession) -> Option<()> {
        // Move the head out (no copy); the session keeps a stub with the same method, which is
        // all it consults afterwards (a response to HEAD has no body).
        let method = session.req_header().method.clone();
        let stub = RequestHeader::build(method, b"/", None).ok()?;
        let head = std::mem::replace(session.req_header_mut(), stub);
        let mut parts: http::request::Parts = head.into();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.reserve(3);
        parts.headers.insert(header::HOST, self.host.clone());
        parts.headers.insert(header::AUTHORIZATION, self.credential.clone());
        parts
            .headers
            .insert(HeaderName::from_static("x-tenant-id"), self.tenant.clone());
        if parts.version != http::Version::HTTP_11 {
            parts.version = http::Version::HTTP_11;
        }
        // HTTP/2 targets carry the authority; the upstream gets origin form.
        if parts.uri.authority().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .parse()
                .ok()?;
        }
        let up = RequestHeader::from(parts);
        let (mut client, _reused) = self.connector.get_http_session(&self.peer).await.ok()?;
        client.write_request_header(Box::new(up)).await.ok()?;
        while let Some(body) = session.read_request_body().await.ok()? {
            client.write_body(&body).await.ok()?;
        }
        client.finish_body().await.ok()?;
        client.read_response().await.ok()?;
        let resp = client.resp_header()?;
        let mut out = ResponseHeader::build_no_case(resp.status, Some(resp.headers.len())).ok()?;
        for (name, value) in resp.headers.iter() {
            if !HOP_BY_HOP.contains(name) && name.as_str() != "keep-alive" {
                out.append_header(name.clone(), value.clone()).ok()?;
            }
        }
        session.write_response_header(Box::new(out)).await.ok()?;
        while let Some(b) = client.read_body_bytes().await.ok()? {
            session.write_response_body(b, false).await.ok()?;
        }
        session.write_response_body(bytes::Bytes::new(), true).await.ok()?;
        self.connector.release_http_session(client, &self.peer, None).await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        if self.forward(&mut session).await.is_none() {
            if session.response_written().is_none() {
                let _ = session.respond_error(502).await;
            }
            return None;
        }
        let persist = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, persist))
    }
}
