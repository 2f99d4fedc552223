//! One HTTP/1.1 exchange with the authorization server, made from `request_filter` for the
//! intercepted OAuth endpoints (the rest of the OAuth surface goes through Pingora's proxy).
//!
//! Uses Pingora's HTTP/1 connector and its connection pool with the tenant's prepared
//! `HttpPeer` (same TLS verification, `upstream_ca`, timeouts). The answer is buffered up to a
//! cap into a buffer wiped on drop (it carries the real tokens).

use bytes::Bytes;
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use zeroize::Zeroizing;

/// The authorization server's answer.
pub(super) struct Reply {
    pub header: Box<ResponseHeader>,
    /// Wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
    /// The body was longer than the cap and was cut (the connection is closed).
    pub too_large: bool,
}

/// Send `req` with `body` to `peer` and read the answer (at most `max` body bytes).
pub(super) async fn send(
    connector: &Connector,
    peer: &HttpPeer,
    mut req: RequestHeader,
    body: &[u8],
    max: usize,
) -> pingora::Result<Reply> {
    // HTTP/1.1 whatever the peer's ALPN preference: one exchange, one connection from the pool.
    let mut peer = peer.clone();
    peer.options.set_http_version(1, 1);
    req.set_version(http::Version::HTTP_11);
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::EXPECT);
    // The answer is parsed (token endpoint, discovery): ask for it uncompressed.
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    if body.is_empty() && req.method == http::Method::GET {
        req.remove_header(&http::header::CONTENT_LENGTH);
    } else {
        req.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    let (mut s, _reused) = connector.get_http_session(&peer).await?;
    s.read_timeout = peer.options.read_timeout;
    s.write_timeout = peer.options.write_timeout;
    s.write_request_header(Box::new(req)).await?;
    if !body.is_empty() {
        s.write_body(body).await?;
    }
    s.finish_body().await?;
    loop {
        s.read_response().await?;
        // 1xx answers (100 Continue, 103 Early Hints) are followed by the real one.
        if s.get_status().is_some_and(|c| !c.is_informational()) {
            break;
        }
    }
    let header = s
        .resp_header()
        .cloned()
        .map(Box::new)
        .ok_or_else(|| pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "no response header"))?;
    let mut buf = Zeroizing::new(Vec::new());
    let mut too_large = false;
    while let Some(chunk) = s.read_body_ref().await? {
        if buf.len() + chunk.len() > max {
            too_large = true;
            break;
        }
        buf.extend_from_slice(chunk);
    }
    if too_large {
        s.shutdown().await;
    } else {
        connector
            .release_http_session(s, &peer, peer.options.idle_timeout)
            .await;
    }
    Ok(Reply {
        header,
        body: buf,
        too_large,
    })
}

/// The answer's headers for the client: hop-by-hop and framing headers removed, the length
/// set for `body`.
pub(super) fn client_header(upstream: &ResponseHeader, body: &Bytes) -> pingora::Result<ResponseHeader> {
    let mut h = upstream.clone();
    crate::proxy::headers::strip_response_hop_by_hop(&mut h);
    h.remove_header(&http::header::TRANSFER_ENCODING);
    h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    Ok(h)
}
