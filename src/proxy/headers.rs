//! Header helpers for `request_filter` (checks before routing), `upstream_request_filter`
//! (what is stripped and set on the way upstream) and `upstream_response_filter` (what is
//! stripped and set on the way back).

use std::cell::{Cell, RefCell};
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use zeroize::Zeroizing;

use super::respond::BadRequest;
use crate::reserved::reserved;
use crate::tenants::UpstreamName;
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
/// `Connection` lists). `HTTP2-Settings` is connection-specific (RFC 7540 §3.2.1) even when a
/// client fails to list it in `Connection`; pingora-proxy drops it too.
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "upgrade",
    "http2-settings",
];

/// The upstream request as `shape_upstream` edits it.
///
/// Pingora's `RequestHeader` keeps a second map of every name's original case for HTTP/1
/// requests, and each edit through it (`insert_header`, `remove_header`) turns the name into
/// bytes, parses them back into a `HeaderName` (an allocation for every non-standard name) and
/// updates both maps. When there is no case to keep (`take_parts`), Tessera edits the request's
/// plain `http` parts instead: a prepared `HeaderName` goes into the one header map with a
/// reference-count clone, nothing parsed or copied (README "Performance").
pub trait Upstream {
    fn headers(&self) -> &http::HeaderMap;
    /// Replace every value of a prepared name.
    fn set(&mut self, name: &UpstreamName, value: HeaderValue) -> Result<()>;
    /// Replace every value of a name known only per request (a stored credential's header).
    fn set_name(&mut self, name: HeaderName, value: HeaderValue) -> Result<()>;
    fn remove(&mut self, name: &str);
    fn uri(&self) -> &http::Uri;
    /// Whether the request target is valid UTF-8 (Pingora refuses to forward one that is not).
    fn target_is_utf8(&self) -> bool;
    fn set_uri(&mut self, uri: http::Uri);
    /// Room for `n` more headers, made once (a header map grows, rehashing, as it fills).
    fn reserve(&mut self, n: usize);
}

impl Upstream for RequestHeader {
    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn set(&mut self, name: &UpstreamName, value: HeaderValue) -> Result<()> {
        self.insert_header(name.wire.clone(), value)
    }
    fn set_name(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
        self.insert_header(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }
    fn uri(&self) -> &http::Uri {
        &self.uri
    }
    fn target_is_utf8(&self) -> bool {
        self.raw_path_is_utf8()
    }
    fn set_uri(&mut self, uri: http::Uri) {
        RequestHeader::set_uri(self, uri);
    }
    fn reserve(&mut self, _: usize) {
        // No access to Pingora's two maps; they grow as needed.
    }
}

impl Upstream for http::request::Parts {
    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn set(&mut self, name: &UpstreamName, value: HeaderValue) -> Result<()> {
        self.headers.insert(name.name.clone(), value);
        Ok(())
    }
    fn set_name(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
        self.headers.insert(name, value);
        Ok(())
    }
    fn remove(&mut self, name: &str) {
        self.headers.remove(name);
    }
    fn uri(&self) -> &http::Uri {
        &self.uri
    }
    fn target_is_utf8(&self) -> bool {
        // `take_parts` only takes requests whose target is the URI's (UTF-8) path and query.
        true
    }
    fn set_uri(&mut self, uri: http::Uri) {
        self.uri = uri;
    }
    fn reserve(&mut self, n: usize) {
        // Cannot fail: Pingora caps a request at 256 header lines, the map at 32,768 entries.
        let _ = self.headers.try_reserve(n);
    }
}

/// An upstream request taken apart by `take_parts`; `restore` puts it back.
pub struct Taken {
    pub parts: http::request::Parts,
    end_stream: Option<bool>,
}

/// Take the upstream request's plain `http` parts out of Pingora's `RequestHeader` when nothing
/// they cannot carry would be lost; `None` leaves `up` as it is.
///
/// What the parts do not carry:
/// - the original case of an HTTP/1 client's header names: dropped unless
///   `upstream.preserve_header_case` (field names are case-insensitive, RFC 9110 §5.1; the
///   upstream then gets names as every HTTP/2 client's request already reaches it: lower case
///   apart from a few standard names such as `Host`);
/// - a request target that is not the URI's path and query: absolute-form, CONNECT, `*` and
///   non-UTF-8 targets keep Pingora's handling.
pub fn take_parts(up: &mut RequestHeader, keep_case: bool) -> Option<Taken> {
    if (keep_case && up.has_case()) || up.method == http::Method::CONNECT || !up.raw_path_is_utf8() {
        return None;
    }
    let origin_form = up.raw_path().first() == Some(&b'/')
        && up
            .uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str().as_bytes() == up.raw_path());
    if !origin_form {
        return None;
    }
    let end_stream = up.send_end_stream();
    // `Parts` has no public constructor; an empty request's parts allocate nothing.
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let whole = std::mem::replace(up, empty);
    Some(Taken {
        parts: whole.into(),
        end_stream,
    })
}

/// Put a request taken by `take_parts` back (without a case map: written as Pingora writes
/// names it has no case for).
pub fn restore(up: &mut RequestHeader, taken: Taken) {
    *up = RequestHeader::from(taken.parts);
    if taken.end_stream == Some(false) {
        up.set_send_end_stream(false);
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials are not forwarded, nor any header
/// the client listed in `Connection`. Framing (`Transfer-Encoding`, `Content-Length`) is left
/// to Pingora.
pub fn strip_hop_by_hop(up: &mut impl Upstream) {
    // Most requests carry none of these: one pass over the names instead of six removals
    // (each parses and hashes its name). `Connection`-listed names need `Connection` present.
    if !up
        .headers()
        .keys()
        .any(|k| k == http::header::TE || HOP_BY_HOP.contains(&k.as_str()))
    {
        return;
    }
    let listed = connection_listed(up.headers());
    for name in listed {
        up.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        up.remove(name);
    }
    // `TE: trailers` is the one TE value allowed through (and needed by gRPC upstreams).
    let te_trailers = up
        .headers()
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        up.remove("te");
    }
}

pub static X_REQUEST_ID: UpstreamName = UpstreamName::from_static("x-request-id", "x-request-id");

/// The upstream's response for the client (runs in `upstream_response_filter`): hop-by-hop
/// headers dropped, the request id echoed as `X-Request-Id`.
///
/// As for requests (`take_parts`), the original case of an HTTP/1 upstream's header names is
/// dropped unless `upstream.preserve_header_case`: Pingora's case map costs a second insert
/// (and a name parse and copy) for every header set on the response, here and in Pingora's
/// own `Date` and `Connection`, and a lookup per header when the response is written. An
/// HTTP/1 client then gets names as Pingora writes them without case (lower case apart from
/// standard names such as `Content-Type` and `Date`), as every HTTP/2 client already does.
/// The status line's reason phrase is kept.
pub fn shape_response(resp: &mut ResponseHeader, keep_case: bool, request_id: Option<&HeaderValue>) -> Result<()> {
    strip_response_hop_by_hop(resp);
    if keep_case && resp.has_case() {
        if let Some(id) = request_id {
            resp.insert_header(X_REQUEST_ID.wire.clone(), id.clone())?;
        }
        return Ok(());
    }
    // Owned only when the upstream sent a reason other than the status's canonical one.
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    // `Parts` has no public constructor; an empty response's parts allocate nothing.
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    if let Some(id) = request_id {
        parts.headers.insert(X_REQUEST_ID.name.clone(), id.clone());
    }
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// Hop-by-hop headers of the upstream's response (RFC 9110 §7.6.1): the ones the upstream
/// listed in `Connection`, and `Keep-Alive`, `Proxy-Connection`. Pingora writes its own
/// `Connection` and framing headers for the client.
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
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

pub static X_FORWARDED_FOR: UpstreamName = UpstreamName::from_static("x-forwarded-for", "x-forwarded-for");

/// Append the client address to `X-Forwarded-For`.
pub fn append_forwarded_for(up: &mut impl Upstream, ip: IpAddr) -> Result<()> {
    let value = match up.headers().get(&X_FORWARDED_FOR.name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => HeaderValue::from_str(&format!("{prev}, {ip}"))
            .map_err(|_| Error::explain(InvalidHTTPHeader, "invalid X-Forwarded-For value"))?,
        _ => ip_value(ip),
    };
    up.set(&X_FORWARDED_FOR, value)
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

    /// `shape_response`: the case map goes unless kept, a custom reason phrase and every
    /// header stay, the request id is set (replacing an upstream's), hop-by-hop headers go.
    #[test]
    fn response_shaped_for_the_client() {
        let id = HeaderValue::from_static("rid-1");
        for keep in [false, true] {
            let mut resp = ResponseHeader::build(404, None).unwrap();
            resp.set_reason_phrase(Some("Nope")).unwrap();
            resp.append_header("X-Up-Case", "a").unwrap();
            resp.append_header("X-Up-Case", "b").unwrap();
            resp.insert_header("X-Request-Id", "upstream's").unwrap();
            resp.insert_header("Keep-Alive", "timeout=5").unwrap();
            shape_response(&mut resp, keep, Some(&id)).unwrap();
            assert_eq!(resp.has_case(), keep);
            assert_eq!(resp.status, 404);
            assert_eq!(resp.get_reason_phrase(), Some("Nope"));
            let values: Vec<_> = resp.headers.get_all("x-up-case").iter().collect();
            assert_eq!(values, ["a", "b"]);
            assert_eq!(resp.headers.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
            assert!(resp.headers.get("keep-alive").is_none());
            let mut wire = Vec::new();
            resp.header_to_h1_wire(&mut wire);
            let wire = String::from_utf8(wire).unwrap();
            let spelled = if keep { "X-Up-Case: a" } else { "x-up-case: a" };
            assert!(wire.contains(spelled), "{wire}");
        }
        // A canonical reason is not turned into a custom one, and no id means none is added.
        let mut resp = ResponseHeader::build(200, None).unwrap();
        shape_response(&mut resp, false, None).unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("OK"));
        assert!(resp.headers.get("x-request-id").is_none());
    }

    /// `take_parts` takes origin-form requests (dropping the case map unless kept) and leaves
    /// every other target, and a request whose case is kept, to Pingora; `restore` keeps the
    /// method, target, headers and HTTP/2 end-of-stream flag.
    #[test]
    fn parts_taken_only_when_nothing_is_lost() {
        let mut req = RequestHeader::build("POST", b"/p?q=1", None).unwrap();
        req.insert_header("X-Case", "1").unwrap();
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        assert!(take_parts(&mut req, true).is_none(), "case kept");
        let mut taken = take_parts(&mut req, false).expect("origin form");
        taken.parts.headers.insert("x-new", HeaderValue::from_static("2"));
        restore(&mut req, taken);
        assert!(!req.has_case());
        assert_eq!((req.method.as_str(), req.raw_path()), ("POST", &b"/p?q=1"[..]));
        assert_eq!(req.headers.get("x-case").unwrap(), "1");
        assert_eq!(req.headers.get("x-new").unwrap(), "2");
        assert_eq!(req.send_end_stream(), Some(false));
        for (method, target) in [
            ("GET", &b"http://h.example/p"[..]),
            ("CONNECT", b"h.example:443"),
            ("OPTIONS", b"*"),
            ("GET", b"/\xff"),
        ] {
            let mut req = RequestHeader::build(method, target, None).unwrap();
            assert!(take_parts(&mut req, false).is_none(), "{method} {target:?}");
            assert_eq!(req.raw_path(), target);
        }
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
