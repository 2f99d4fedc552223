//! Fuzzing entry points, called by the `cargo fuzz` targets in `fuzz/` (run by `scripts/fuzz`).
//! Not used by the proxy; hidden from the docs.
//!
//! Each function takes arbitrary bytes, drives one parser the way Tessera does at run time, and
//! must never panic. Its `assert!`s are properties of the result (a parsed Part A re-encodes to
//! itself, a minted token round-trips, hop-by-hop headers are gone), so a panic here is a bug.
//!
//! | function | where it runs in Tessera |
//! |---|---|
//! | [`part_a`] | `request_filter`: `Authorization: Bearer <Part A>`, parsed before any store lookup |
//! | [`config`] | start-up and `tessera check-config`: YAML → validated `Config`; the keyring text |
//! | [`admin_body`] | admin API: JSON bodies of mint (`POST …/tokens`) and rotate (`POST …/rotate`) |
//! | [`request_head`] | the connection guard's head scan (read boundaries change nothing), then `request_filter` and `upstream_request_filter`: the header checks on the client's request head |
//! | [`oauth_form`] | `request_filter` on a tenant's OAuth surface: the token and revocation forms, the Basic client id |
//!
//! Assertion messages never print token material: the inputs are fuzzer-made, but the habit stays.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderValue, StatusCode};
use pingora::http::RequestHeader;

use crate::config::Config;
use crate::proxy::headers;
use crate::token::{self, base62, Keyring, PartA, PART_A_LEN};

/// Length of the checksummed part of a Part A (`tsr_` + body), before the 6 CRC characters.
const PART_A_SIGNED_LEN: usize = PART_A_LEN - base62::encoded_len(4);

/// [`PartA::parse`] on the input, on the Bearer value inside it (as `request_filter` does), and
/// on the input with its checksum recomputed, so the fuzzer gets past the CRC to the body decoder.
pub fn part_a(data: &[u8]) {
    if let Some(v) = headers::bearer(data) {
        check_part_a(v);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_part_a(s);
    if s.len() == PART_A_LEN && s.is_char_boundary(PART_A_SIGNED_LEN) {
        let mut fixed = String::with_capacity(PART_A_LEN);
        fixed.push_str(&s[..PART_A_SIGNED_LEN]);
        let crc = crc32fast::hash(fixed.as_bytes());
        base62::encode_into(&crc.to_be_bytes(), &mut fixed);
        check_part_a(&fixed);
    }
}

fn check_part_a(s: &str) {
    if let Ok(p) = PartA::parse(s) {
        // The encoding is canonical: exactly one string per Part A.
        assert!(
            p.encode().as_str() == s,
            "a parsed Part A does not re-encode to the same string"
        );
        assert!(PartA::parse(&p.encode()).is_ok_and(|q| q.id == p.id && q.tenant_tag == p.tenant_tag));
    }
}

/// [`Config::from_yaml`]: parse and validate. Certificate paths in the YAML are read as
/// `check-config` would (relative to the working directory: `scripts/fuzz` runs in the repo, so
/// the seeds' `certs/*.pem` exist). Inputs naming a device, `/proc` or `/sys` file or a large
/// file are skipped: reading `/dev/zero` or `/dev/stdin` would hang the fuzzer, not find a bug.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The keyring file (`keys.file` / `keys.env`) is read at start-up too.
    if let Ok(k) = Keyring::parse(text) {
        assert!(k.kids().next().is_some());
    }
    if names_unsafe_file(text) {
        return;
    }
    match Config::from_yaml(text, Path::new("fuzz.yaml")) {
        Ok(cfg) => assert!(cfg.threads >= 1, "a valid config has at least one thread"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Whether any string in the YAML names something the config loader should not read in a fuzz
/// run (a device, fifo or socket, anything under /dev, /proc, /sys, or a file over 1 MiB).
fn names_unsafe_file(text: &str) -> bool {
    let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return false;
    };
    let mut stack = vec![&v];
    while let Some(v) = stack.pop() {
        match v {
            serde_yaml::Value::String(s) if unsafe_path(s) => return true,
            serde_yaml::Value::Sequence(items) => stack.extend(items),
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    stack.push(k);
                    stack.push(v);
                }
            }
            serde_yaml::Value::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    false
}

fn unsafe_path(s: &str) -> bool {
    if s.is_empty() || s.contains('\0') {
        return false;
    }
    let Ok(real) = std::fs::canonicalize(s) else {
        return false;
    };
    if ["/dev", "/proc", "/sys", "/run"].iter().any(|p| real.starts_with(p)) {
        return true;
    }
    std::fs::metadata(&real).is_ok_and(|m| !m.is_dir() && (!m.is_file() || m.len() > 1 << 20))
}

/// One keyring for the whole run (mint + recover round trip in [`admin_body`]).
fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| {
        Keyring::parse("fuzz 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n")
            .unwrap_or_else(|e| panic!("fixed fuzz keyring: {e}"))
    })
}

/// A fixed "now" so that a run is reproducible (`expires_at` is compared with it).
const FUZZ_NOW: i64 = 1_800_000_000;

/// The admin API's body checks for mint and rotate. A mint body that passes is minted under a
/// fixed keyring and its Part A must recover the same upstream token; a rotate body's `part_a`
/// goes through [`PartA::parse`] as in `rotate`.
pub fn admin_body(data: &[u8]) {
    match crate::admin::parse_mint(data, FUZZ_NOW) {
        Ok((upstream, meta)) => {
            assert!(meta.label.len() <= 200);
            assert!(meta.expires_at.is_none_or(|t| t > FUZZ_NOW));
            assert!(http::HeaderName::from_bytes(meta.header.as_bytes()).is_ok());
            match token::mint(keyring(), "fuzz", upstream.as_bytes(), &meta) {
                Ok(minted) => {
                    let part_a = PartA::parse(&minted.part_a)
                        .unwrap_or_else(|e| panic!("a freshly minted Part A does not parse: {e}"));
                    assert!(part_a.id == minted.id);
                    let back = token::recover_token(keyring(), "fuzz", &part_a, &minted.record)
                        .unwrap_or_else(|e| panic!("a freshly minted token does not recover: {e}"));
                    assert!(back.as_slice() == upstream.as_bytes(), "recovered token differs");
                    let opened = token::open_meta(keyring(), "fuzz", &minted.id, &minted.record)
                        .unwrap_or_else(|e| panic!("minted metadata does not open: {e}"));
                    assert!(opened == meta, "sealed metadata differs");
                }
                Err(token::TokenError::BadUpstreamToken) => {}
                Err(e) => panic!("mint failed on a checked body: {e}"),
            }
        }
        Err(r) => check_reply(&r),
    }
    match crate::admin::parse_rotate(data) {
        Ok(body) => {
            if let Some(a) = &body.part_a {
                let _ = PartA::parse(a);
            }
        }
        Err(r) => check_reply(&r),
    }
}

fn check_reply(r: &crate::admin::Reply) {
    assert!(r.0 == StatusCode::BAD_REQUEST, "a body error must be a 400");
    assert!(serde_json::to_vec(&r.1).is_ok());
}

/// Maximum headers Pingora's HTTP/1 server parses (`pingora-core` `v1::common::MAX_HEADERS`).
const MAX_HEADERS: usize = 256;

/// The connection guard's head scan (`guard::HeadScan`, on every read before Pingora parses):
/// the same answer whether the bytes come in one read or two, cut where the input says.
fn head_scan_ignores_read_boundaries(data: &[u8]) {
    use crate::guard::{HeadLimits, HeadScan, Scan};
    let limits = HeadLimits {
        timeout: std::time::Duration::from_secs(1),
        max_bytes: 512,
        max_headers: 8,
    };
    let whole = HeadScan::default().feed(data, &limits);
    let cut = data.first().map_or(0, |&b| usize::from(b)) % (data.len() + 1);
    let mut scan = HeadScan::default();
    let mut split = scan.feed(&data[..cut], &limits);
    if split == Scan::More {
        split = scan.feed(&data[cut..], &limits);
    }
    assert_eq!(whole, split, "head scan answer depends on the read boundary at {cut}");
}

/// A raw HTTP/1.x request head, parsed with `httparse` into a Pingora [`RequestHeader`] as
/// Pingora's HTTP/1 server does, then every header function of the proxy in request order.
/// New header checks in `proxy::headers` are added here (one call each, same order as the proxy).
pub fn request_head(data: &[u8]) {
    head_scan_ignores_read_boundaries(data);
    let Some(mut req) = parse_head(data) else {
        return;
    };
    // request_filter: header checks before routing (a refused request goes no further).
    if headers::normalize_content_length(&mut req).is_err() {
        return;
    }
    let mut cl = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(v) = cl.next() {
        assert!(cl.next().is_none(), "more than one Content-Length after normalising");
        let b = v.as_bytes();
        assert!(
            !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b == b"0" || b[0] != b'0'),
            "Content-Length not canonical after normalising"
        );
    }
    let stripped = [http::HeaderName::from_static("x-tenant-id")];
    if headers::check_connection(&req.headers, &stripped).is_err() {
        return;
    }
    for v in req.headers.get_all(http::header::AUTHORIZATION) {
        if let Some(t) = headers::bearer(v.as_bytes()) {
            assert!(!t.is_empty() && t.trim() == t);
            part_a(t.as_bytes());
        }
    }
    let rid = headers::request_id(&req);
    assert!(
        valid_request_id(rid.as_bytes()),
        "request id is not 1-64 safe characters"
    );
    if let Some(client) = req.headers.get("x-request-id") {
        if valid_request_id(client.as_bytes()) {
            assert!(rid == client, "a valid client request id must be kept");
        }
    }

    // upstream_request_filter, through Pingora's `RequestHeader` and through the plain parts
    // `take_parts` hands over (the default path): both must leave the same headers.
    let listed = connection_options(&req);
    let mut parts = req.as_owned_parts();
    headers::strip_hop_by_hop(&mut req);
    headers::strip_hop_by_hop(&mut parts);
    assert!(
        parts.headers == req.headers,
        "hop-by-hop stripping differs between the two paths"
    );
    for name in headers::HOP_BY_HOP {
        assert!(req.headers.get(name).is_none(), "hop-by-hop header {name} kept");
    }
    if let Some(te) = req.headers.get(http::header::TE) {
        assert!(
            te.as_bytes().eq_ignore_ascii_case(b"trailers"),
            "TE other than trailers kept"
        );
    }
    for name in &listed {
        assert!(
            req.headers.get(name).is_none(),
            "header listed in Connection kept: {name}"
        );
    }
    for ip in [
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ] {
        let r = headers::append_forwarded_for(&mut req, ip);
        assert!(r.is_ok(), "X-Forwarded-For could not be set");
        assert!(headers::append_forwarded_for(&mut parts, ip).is_ok());
        assert!(
            parts.headers == req.headers,
            "X-Forwarded-For differs between the two paths"
        );
        let xff = req.headers.get("x-forwarded-for").map(HeaderValue::as_bytes);
        assert!(xff.is_some_and(|v| v.ends_with(ip.to_string().as_bytes())));
    }
}

/// Pingora's HTTP/1 request-head parsing (`pingora-core` `v1::server::read_request`), with
/// checked header values.
fn parse_head(data: &[u8]) -> Option<RequestHeader> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut hs);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return None;
    };
    let mut req = RequestHeader::build(
        parsed.method.unwrap_or(""),
        parsed.path.unwrap_or("").as_bytes(),
        Some(parsed.headers.len()),
    )
    .ok()?;
    req.set_version(match parsed.version {
        Some(1) => http::Version::HTTP_11,
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_09,
    });
    for h in parsed.headers.iter() {
        let value = HeaderValue::from_bytes(h.value).ok()?;
        req.append_header(h.name.to_string(), value).ok()?;
    }
    if req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        req.remove_header(&http::header::CONTENT_LENGTH);
    }
    Some(req)
}

/// Connection options (RFC 9110 §7.6.1), byte-wise, minus those Pingora manages itself.
fn connection_options(req: &RequestHeader) -> Vec<http::HeaderName> {
    let mut out = Vec::new();
    for v in req.headers.get_all(http::header::CONNECTION) {
        for opt in v.as_bytes().split(|&b| b == b',') {
            let opt = opt.trim_ascii().to_ascii_lowercase();
            let managed = [
                &b"close"[..],
                b"keep-alive",
                b"upgrade",
                b"transfer-encoding",
                b"content-length",
                b"host",
            ];
            if managed.contains(&opt.as_slice()) {
                continue;
            }
            if let Ok(name) = http::HeaderName::from_bytes(&opt) {
                out.push(name);
            }
        }
    }
    out
}

fn valid_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The OAuth surface's client input: the token/revocation form (parsed, re-encoded, parsed
/// again: the same pairs must come back, so the upstream reads what Tessera checked), the
/// `Content-Type` check and the client id of HTTP Basic authentication.
pub fn oauth_form(data: &[u8]) {
    use crate::oauth::form::{basic_client_id, is_form, Form, FormError, MAX_PARAMS};
    let _ = is_form(Some(data));
    if let Some(id) = basic_client_id(Some(data)) {
        assert!(
            !id.is_empty() && id.len() <= 256,
            "a Basic client id outside 1..=256 bytes"
        );
    }
    match Form::parse(data) {
        Ok(form) => {
            let again = Form::parse(&form.encode());
            assert!(
                again.is_ok_and(|f| f.pairs().eq(form.pairs())),
                "a parsed form does not re-encode to the same parameters"
            );
        }
        Err(FormError::TooMany) => {
            assert!(
                form_urlencoded::parse(data).count() > MAX_PARAMS,
                "a form within the parameter cap was refused as too long"
            );
        }
        Err(FormError::Repeated(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.display().to_string(), std::fs::read(&p).unwrap())
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    /// Every committed seed runs through its entry point (what `scripts/fuzz` starts from).
    #[test]
    fn seeds_run_clean() {
        type Entry = (&'static str, fn(&[u8]));
        let entry: [Entry; 5] = [
            ("part_a", part_a),
            ("config", config),
            ("admin_body", admin_body),
            ("request_head", request_head),
            ("oauth_form", oauth_form),
        ];
        for (target, f) in entry {
            for (name, data) in seeds(target) {
                eprintln!("{name}");
                f(&data);
            }
        }
    }

    /// The seeds reach past the first checks: a valid Part A, a config that validates, a mint
    /// body that mints, a head that parses.
    #[test]
    fn seeds_are_meaningful() {
        let valid = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/part_a/valid")).unwrap();
        assert!(PartA::parse(&valid).is_ok());
        let cfg =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/config/minimal.yaml")).unwrap();
        Config::from_yaml(&cfg, Path::new("minimal.yaml")).unwrap();
        let mint = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/admin_body/mint_full.json"
        ))
        .unwrap();
        assert!(crate::admin::parse_mint(&mint, FUZZ_NOW).is_ok());
        let head = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/request_head/hop_by_hop"
        ))
        .unwrap();
        assert!(parse_head(&head).is_some());
        let form = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/oauth_form/code")).unwrap();
        assert!(crate::oauth::form::Form::parse(&form).is_ok_and(|f| f.get("code") == Some("xyz")));
        let basic = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/oauth_form/basic")).unwrap();
        assert_eq!(
            crate::oauth::form::basic_client_id(Some(&basic)).as_deref(),
            Some("my app")
        );
    }
}
