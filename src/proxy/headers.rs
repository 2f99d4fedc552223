//! Header helpers for `request_filter` and `upstream_request_filter`.

use std::cell::Cell;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use zeroize::Zeroizing;

use crate::token::Credential;

/// The Part A in `Authorization: Bearer <Part A>` (scheme case-insensitive, RFC 6750 §2.1).
pub fn bearer(v: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty()).then_some(token)
}

fn valid_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

thread_local! {
    static RID_PREFIX: Cell<u64> = const { Cell::new(0) };
    static RID_COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// The client's `X-Request-Id` if it is 1-128 characters of `[A-Za-z0-9._:-]`, else a new id:
/// a random per-thread prefix and a counter (unique without a syscall per request).
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get("x-request-id") {
        if valid_request_id(v.as_bytes()) {
            return v.clone();
        }
    }
    let prefix = RID_PREFIX.with(|p| {
        if p.get() == 0 {
            let mut b = [0u8; 8];
            crate::token::fill_random(&mut b);
            p.set(u64::from_le_bytes(b) | 1);
        }
        p.get()
    });
    let n = RID_COUNTER.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    let s = format!("{prefix:016x}-{n:x}");
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Header names listed in `Connection` (lower-case), minus the ones Pingora manages itself.
fn connection_listed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        // Byte-wise: obs-text anywhere in the value must not hide the options listed beside it
        // (`to_str` fails on the whole value). An option that is not UTF-8 names no header.
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .map(str::to_ascii_lowercase)
        .filter(|t| {
            !t.is_empty()
                && !matches!(
                    t.as_str(),
                    "close" | "keep-alive" | "upgrade" | "transfer-encoding" | "content-length" | "host"
                )
        })
        .collect()
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials are not forwarded, nor any header
/// the client listed in `Connection`. Framing (`Transfer-Encoding`, `Content-Length`) is left
/// to Pingora.
pub fn strip_hop_by_hop(up: &mut RequestHeader) {
    let listed = connection_listed(&up.headers);
    for name in listed {
        up.remove_header(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
    ] {
        up.remove_header(name);
    }
    // `TE: trailers` is the one TE value allowed through (and needed by gRPC upstreams).
    let te_trailers = up
        .headers
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        up.remove_header("te");
    }
}

/// Hop-by-hop headers of the upstream's response (RFC 9110 §7.6.1): the ones the upstream
/// listed in `Connection`, and `Keep-Alive`, `Proxy-Connection`. Pingora writes its own
/// `Connection` and framing headers for the client.
pub fn strip_response_hop_by_hop(resp: &mut pingora::http::ResponseHeader) {
    let listed = connection_listed(&resp.headers);
    for name in listed {
        resp.remove_header(name.as_str());
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// Append the client address to `X-Forwarded-For`.
pub fn append_forwarded_for(up: &mut RequestHeader, ip: IpAddr) -> Result<()> {
    let value = match up.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip.to_string(),
    };
    up.insert_header("x-forwarded-for", value)?;
    Ok(())
}

/// Owner of the credential bytes inside a `Bytes`: wiped when the last reference drops.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The credential as a sensitive header, without copying the secret.
pub fn credential_header(cred: Credential) -> Result<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(cred.header.as_bytes())
        .map_err(|_| Error::explain(InternalError, "stored credential header name is invalid"))?;
    let bytes = Bytes::from_owner(Wiped(cred.value));
    let mut value = HeaderValue::from_maybe_shared(bytes)
        .map_err(|_| Error::explain(InternalError, "stored credential is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer   abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(&[0xff, 0x20, 0x41]), None);
    }

    #[test]
    fn request_ids() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let a = request_id(&req);
        let b = request_id(&req);
        assert_ne!(a, b);
        req.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(request_id(&req), "abc-123");
        req.insert_header("x-request-id", "bad value!").unwrap();
        assert_ne!(request_id(&req), "bad value!");
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("connection", "keep-alive, x-secret-hop").unwrap();
        req.insert_header("x-secret-hop", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("proxy-authorization", "Basic x").unwrap();
        req.insert_header("te", "gzip").unwrap();
        req.insert_header("x-keep", "1").unwrap();
        strip_hop_by_hop(&mut req);
        for h in ["connection", "x-secret-hop", "keep-alive", "proxy-authorization", "te"] {
            assert!(req.headers.get(h).is_none(), "{h} kept");
        }
        assert!(req.headers.get("x-keep").is_some());
        req.insert_header("te", "trailers").unwrap();
        strip_hop_by_hop(&mut req);
        assert!(req.headers.get("te").is_some());
    }

    /// Found by `fuzz/` (request_head): one non-ASCII byte in `Connection` made the whole value
    /// unreadable, so the headers it listed were forwarded.
    #[test]
    fn connection_listed_despite_obs_text() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(
            "connection",
            HeaderValue::from_bytes(b"keep-alive, x-secret-hop,\xce upgrade").unwrap(),
        )
        .unwrap();
        req.insert_header("x-secret-hop", "1").unwrap();
        strip_hop_by_hop(&mut req);
        assert!(req.headers.get("x-secret-hop").is_none(), "x-secret-hop kept");
    }

    #[test]
    fn credential_is_sensitive() {
        let cred = Credential {
            header: "authorization".into(),
            value: Zeroizing::new(b"Bearer s3cret".to_vec()),
        };
        let (n, v) = credential_header(cred).unwrap();
        assert_eq!(n, "authorization");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("s3cret"));
    }
}
