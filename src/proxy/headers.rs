//! Header helpers for `request_filter` (checks before routing) and `upstream_request_filter`
//! (what is stripped and set on the way upstream).

use std::cell::{Cell, RefCell};
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use zeroize::Zeroizing;

use super::respond::BadRequest;
use crate::reserved::reserved;
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

/// Longest client `X-Request-Id` accepted (a UUID is 36; a Part A, 82, never fits).
const MAX_REQUEST_ID: usize = 64;

fn valid_request_id(v: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

thread_local! {
    static RID_PREFIX: Cell<u64> = const { Cell::new(0) };
    static RID_COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// The client's `X-Request-Id` if it is 1-64 characters of `[A-Za-z0-9._:-]`, else a new id:
/// a random per-thread prefix and a counter (unique without a syscall per request).
///
/// The value is marked sensitive for one reason: HPACK then sends it as a never-indexed
/// literal. An id never repeats, so indexing it (the default) only churns the HTTP/2 header
/// table of every client and upstream connection (~3 k instructions per HTTP/2 response here).
/// It is not a secret; the session log and the headers carry it as usual.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    let mut id = request_id_value(req);
    id.set_sensitive(true);
    id
}

fn request_id_value(req: &RequestHeader) -> HeaderValue {
    const NAME: HeaderName = HeaderName::from_static("x-request-id");
    if let Some(v) = req.headers.get(NAME) {
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
    // `{prefix:016x}-{n:x}` written on the stack: one allocation (the header value's own).
    let mut buf = [0u8; 33];
    let mut len = hex_into(&mut buf, prefix, 16);
    buf[len] = b'-';
    len += 1;
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    len += hex_into(&mut buf[len..], n, digits);
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The low `digits` hex digits of `v` (lower case) at the start of `out`; returns `digits`.
fn hex_into(out: &mut [u8], v: u64, digits: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out[..digits].iter_mut().enumerate() {
        *o = HEX[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    digits
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

/// Parse one `Content-Length` field value: digits only, possibly a comma-separated list of
/// equal values (RFC 9110 §8.6). `None` if malformed or the list disagrees.
fn content_length_value(v: &[u8], seen: &mut Option<u64>) -> Option<()> {
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match seen {
            Some(prev) if *prev != n => return None,
            _ => *seen = Some(n),
        }
    }
    Some(())
}

/// `Content-Length: 5, 5`, `005` or two equal header lines become one canonical `5` before the
/// request goes anywhere, so the upstream frames the body exactly as Tessera did. Values that
/// disagree or are not numbers are refused. The common case (one canonical value) does not
/// allocate.
pub fn normalize_content_length(req: &mut RequestHeader) -> Result<(), BadRequest> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    let canonical =
        |v: &[u8]| (1..=19).contains(&v.len()) && v.iter().all(u8::is_ascii_digit) && (v == b"0" || v[0] != b'0');
    if values.next().is_none() && canonical(first.as_bytes()) {
        return Ok(());
    }
    let mut seen = None;
    for v in req.headers.get_all(http::header::CONTENT_LENGTH) {
        content_length_value(v.as_bytes(), &mut seen).ok_or(BadRequest::ContentLength)?;
    }
    let n = seen.ok_or(BadRequest::ContentLength)?;
    req.insert_header(http::header::CONTENT_LENGTH, n)
        .map_err(|_| BadRequest::ContentLength)
}

/// Connection options that name no header (RFC 9110 §7.6.1) or that Pingora handles itself.
fn connection_option(token: &str) -> bool {
    ["close", "keep-alive", "upgrade", "te"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// A client may list hop-by-hop headers in `Connection`, which would make a proxy drop them.
/// Listing one Tessera manages (`Authorization`, `Host`, a framing header, `X-Forwarded-*`,
/// `X-Request-Id`, a tenant header or a `strip_headers` entry) is refused: it is either a
/// mistake or an attempt to make a proxy drop the credential or the tenant header.
pub fn check_connection(headers: &http::HeaderMap, stripped: &[HeaderName]) -> Result<(), BadRequest> {
    for v in headers.get_all(http::header::CONNECTION) {
        // Byte-wise, like `connection_listed`: obs-text elsewhere in the value must not hide a
        // listed name.
        for token in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let Ok(token) = std::str::from_utf8(token) else {
                continue;
            };
            if token.is_empty() || connection_option(token) {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                continue;
            };
            if name == http::header::AUTHORIZATION || reserved(&name).is_some() || stripped.contains(&name) {
                return Err(BadRequest::ConnectionListsManaged);
            }
        }
    }
    Ok(())
}

/// Request headers never forwarded (besides `TE`, kept only as `TE: trailers`, and whatever
/// `Connection` lists).
pub(crate) const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "upgrade",
];

/// Forget an HTTP/1 client's header-name spelling for the upstream request (runs first in
/// `shape_upstream`, unless `upstream.preserve_header_case`).
///
/// Pingora keeps a second map of every name's original case for HTTP/1 requests, and each
/// header Tessera sets or removes then updates both maps; without it the upstream request is
/// one map, written as Pingora writes names it has no case for (lower case apart from a few
/// standard names such as `Host`), exactly as every HTTP/2 client's request already reaches
/// the upstream. Field names are case-insensitive (RFC 9110 §5.1). Measured: ~7 k fewer
/// instructions per HTTP/1.1 request (README "Performance").
///
/// Only an origin-form target (the request line's target is the URI's path and query) is
/// converted: the conversion keeps the URI, not raw target bytes, so absolute-form, CONNECT
/// and non-UTF-8 targets keep Pingora's handling and the case map.
pub fn drop_header_case(up: &mut RequestHeader) {
    if !up.has_case() || up.method == http::Method::CONNECT || !up.raw_path_is_utf8() {
        return;
    }
    let origin_form = up.raw_path().first() == Some(&b'/')
        && up
            .uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str().as_bytes() == up.raw_path());
    if !origin_form {
        return;
    }
    // `Parts` has no public constructor; an empty request's parts allocate nothing.
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let cased = std::mem::replace(up, empty);
    *up = RequestHeader::from(http::request::Parts::from(cased));
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials are not forwarded, nor any header
/// the client listed in `Connection`. Framing (`Transfer-Encoding`, `Content-Length`) is left
/// to Pingora.
pub fn strip_hop_by_hop(up: &mut RequestHeader) {
    // Most requests carry none of these: one pass over the names instead of six removals
    // (each parses and hashes its name). `Connection`-listed names need `Connection` present.
    if !up
        .headers
        .keys()
        .any(|k| k == http::header::TE || HOP_BY_HOP.contains(&k.as_str()))
    {
        return;
    }
    let listed = connection_listed(&up.headers);
    for name in listed {
        up.remove_header(name.as_str());
    }
    for name in HOP_BY_HOP {
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
    if !resp
        .headers
        .keys()
        .any(|k| matches!(k.as_str(), "connection" | "keep-alive" | "proxy-connection"))
    {
        return;
    }
    let listed = connection_listed(&resp.headers);
    for name in listed {
        resp.remove_header(name.as_str());
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

thread_local! {
    /// The last client address this thread wrote as a header value: keep-alive requests on a
    /// connection (and most requests of a busy client) reuse it without formatting or
    /// allocating (a `HeaderValue` clone is a reference count).
    static LAST_IP: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `ip` as a header value (cached per thread, see `LAST_IP`).
fn ip_value(ip: IpAddr) -> HeaderValue {
    LAST_IP.with(|last| {
        if let Some((cached, v)) = &*last.borrow() {
            if *cached == ip {
                return v.clone();
            }
        }
        // Longest IPv6 text form is 45 bytes (IPv4-mapped with zone-less dotted quad).
        let mut buf = [0u8; 64];
        let mut w = &mut buf[..];
        let written = std::io::Write::write_fmt(&mut w, format_args!("{ip}")).map(|()| 64 - w.len());
        let v = written
            .ok()
            .and_then(|n| HeaderValue::from_bytes(&buf[..n]).ok())
            .unwrap_or_else(|| HeaderValue::from_static("unknown"));
        *last.borrow_mut() = Some((ip, v.clone()));
        v
    })
}

/// Append the client address to `X-Forwarded-For`.
pub fn append_forwarded_for(up: &mut RequestHeader, ip: IpAddr) -> Result<()> {
    match up.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let value = format!("{prev}, {ip}");
            up.insert_header("x-forwarded-for", value)?;
        }
        _ => up.insert_header("x-forwarded-for", ip_value(ip))?,
    }
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
        // Generated or the client's: never HPACK-indexed (see `request_id`).
        assert!(a.is_sensitive() && request_id(&req).is_sensitive());
        req.insert_header("x-request-id", "bad value!").unwrap();
        assert_ne!(request_id(&req), "bad value!");
        let long = "a".repeat(65);
        req.insert_header("x-request-id", long.as_str()).unwrap();
        assert_ne!(request_id(&req), long.as_str());
        req.insert_header("x-request-id", "a".repeat(64).as_str()).unwrap();
        assert_eq!(request_id(&req), "a".repeat(64).as_str());
    }

    #[test]
    fn generated_request_ids_are_prefix_dash_counter() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let a = request_id(&req);
        let b = request_id(&req);
        let (pa, na) = a.to_str().unwrap().split_once('-').unwrap();
        let (pb, nb) = b.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(pa.len(), 16);
        assert_eq!(pa, pb, "one prefix per thread");
        let (na, nb) = (
            u64::from_str_radix(na, 16).unwrap(),
            u64::from_str_radix(nb, 16).unwrap(),
        );
        assert_eq!(nb, na + 1);
        // Same text as `format!("{prefix:016x}-{n:x}")`: lower case, no leading zeros.
        assert_eq!(
            b.to_str().unwrap(),
            format!("{:016x}-{nb:x}", u64::from_str_radix(pb, 16).unwrap())
        );
        let mut buf = [0u8; 16];
        assert_eq!(hex_into(&mut buf, 0x0abc, 4), 4);
        assert_eq!(&buf[..4], b"0abc");
        assert_eq!(hex_into(&mut buf, u64::MAX, 16), 16);
        assert_eq!(&buf[..16], b"ffffffffffffffff");
    }

    #[test]
    fn forwarded_for_per_address() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::ffff:192.0.2.7".parse().unwrap();
        for (ip, text) in [
            (v4, "192.0.2.7"),
            (v4, "192.0.2.7"),
            (v6, "2001:db8::ffff:c000:207"),
            (v4, "192.0.2.7"),
        ] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            append_forwarded_for(&mut req, ip).unwrap();
            assert_eq!(req.headers.get("x-forwarded-for").unwrap(), text);
            append_forwarded_for(&mut req, v6).unwrap();
            assert_eq!(
                req.headers.get("x-forwarded-for").unwrap(),
                format!("{text}, 2001:db8::ffff:c000:207").as_str()
            );
        }
    }

    fn with_cl(values: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        for v in values {
            req.append_header("content-length", *v).unwrap();
        }
        req
    }

    #[test]
    fn content_length_is_normalised() {
        for (given, want) in [
            (&["5"][..], "5"),
            (&["0"][..], "0"),
            (&["005"][..], "5"),
            (&["5, 5"][..], "5"),
            (&["5", "5"][..], "5"),
            (&[" 7 "][..], "7"),
        ] {
            let mut req = with_cl(given);
            normalize_content_length(&mut req).unwrap();
            let all: Vec<_> = req.headers.get_all("content-length").iter().collect();
            assert_eq!(all, [want], "{given:?}");
        }
        for bad in [
            &["5, 6"][..],
            &["5", "6"][..],
            &["-1"][..],
            &["0x5"][..],
            &[""][..],
            &["5,"][..],
            &["99999999999999999999"][..],
        ] {
            let mut req = with_cl(bad);
            assert_eq!(
                normalize_content_length(&mut req),
                Err(BadRequest::ContentLength),
                "{bad:?}"
            );
        }
        let mut none = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(normalize_content_length(&mut none), Ok(()));
    }

    #[test]
    fn connection_may_not_list_managed_headers() {
        let stripped = [HeaderName::from_static("x-tenant-id")];
        let check = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("connection", HeaderValue::from_str(v).unwrap());
            check_connection(&h, &stripped)
        };
        for ok in ["keep-alive", "close", "Upgrade", "TE", "keep-alive, x-custom-hop"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "authorization",
            "Keep-Alive, Authorization",
            "x-tenant-id",
            "host",
            "x-forwarded-for",
            "content-length",
            "x-request-id",
        ] {
            assert_eq!(check(bad), Err(BadRequest::ConnectionListsManaged), "{bad}");
        }
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

    /// The fast path (no hop-by-hop name present) must not skip any single one of them.
    #[test]
    fn each_hop_by_hop_name_alone_is_removed() {
        for h in HOP_BY_HOP.into_iter().chain(["te"]) {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header(h, "x").unwrap();
            req.insert_header("x-keep", "1").unwrap();
            strip_hop_by_hop(&mut req);
            assert!(req.headers.get(h).is_none(), "{h} kept");
            assert!(req.headers.get("x-keep").is_some());
        }
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        resp.insert_header("connection", "x-hop").unwrap();
        resp.insert_header("x-hop", "1").unwrap();
        resp.insert_header("proxy-connection", "1").unwrap();
        resp.insert_header("x-keep", "1").unwrap();
        strip_response_hop_by_hop(&mut resp);
        for h in ["x-hop", "proxy-connection"] {
            assert!(resp.headers.get(h).is_none(), "{h} kept");
        }
        assert!(resp.headers.get("x-keep").is_some());
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
