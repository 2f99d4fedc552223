//! Per-tenant session log: one record per request, written off the request path.
//!
//! The `logging` phase captures a `RecordDraft` (owned handles to the request's values:
//! reference-counted header values and URI, no string formatting) and hands it to a bounded
//! channel with `try_send` (`SessionLogger::log`); when the channel is full the draft is dropped
//! and `tessera_session_log_dropped_total{sink="channel"}` counts it. The `Writer` background
//! service wakes on the first draft, lingers 20 ms, then turns up to 512 drafts into JSON
//! lines (all string work happens here, off the proxy threads; a line is written straight from
//! its draft, no `SessionRecord` built) and writes them as one batch to the sinks:
//! - JSON lines on stdout and/or a file with size-based rotation (for SIEM shipping);
//! - per-tenant Redis Streams `<prefix>log:<tenant>` (`XADD … MAXLEN ~`, pipelined per batch)
//!   when the store is Redis; every configured tenant's stream, idle or not, is trimmed by
//!   `stream_max_age` (`XTRIM MINID ~`) every tenth of that age (between 1 s and 1 min);
//!   failures count in `tessera_session_log_trim_errors_total` and are logged at most once a
//!   minute;
//! - a capped in-memory ring per tenant of the same lines, when records do not go to Redis
//!   streams (what the admin API and the console read then; parsed back per query).
//!
//! Records never hold a token, Part A or Part B: only the token id. Query string values are
//! replaced by `*`, and anything Part-A-shaped (`tsr_` + 78 base62, any case of the prefix) in
//! any client-supplied field (path, host, user agent, request id, method) is replaced by
//! `tsr_[redacted]` before truncation (`scrub_part_a`).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::anomaly::Flags;
use crate::config::SessionLogConf;
use crate::fragments::redis::RedisStore;
use crate::metrics;
use crate::tenants::Tenant;
use crate::token::{TokenId, VerifyResult, PART_A_LEN, PART_A_PREFIX};

const MAX_PATH: usize = 1024;
const MAX_UA: usize = 256;
const MAX_HOST: usize = 255;
const MAX_REQUEST_ID: usize = 256;
/// What replaces a Part-A-shaped string in a record or log line.
pub const PART_A_REDACTED: &str = "tsr_[redacted]";
/// Base62 characters after the prefix in a Part A.
const PART_A_BODY: usize = PART_A_LEN - PART_A_PREFIX.len();
/// Failed trims are logged at most this often (they are all counted).
const TRIM_WARN_EVERY_MS: u64 = 60_000;
const BATCH: usize = 512;
/// After the first record of a batch arrives, the writer sleeps this long before draining, so
/// a busy proxy wakes it ~50 times a second instead of once per request (measured: waking per
/// record cost ~20 % of single-core throughput).
const LINGER: Duration = Duration::from_millis(20);

/// One request, as security teams read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// Unix milliseconds.
    pub ts: u64,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub method: String,
    pub host: String,
    /// Path with query values redacted.
    pub path: String,
    /// Status sent to the client (0 = none).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub request_id: String,
    /// Token verification outcome (`ok`, `revoked`, …), if a token was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyResult>,
    /// Why Tessera answered itself, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
    /// What happened at an OAuth token or revocation endpoint (`crate::oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthAudit>,
}

impl SessionRecord {
    /// Append the record as one JSON object (no newline): byte for byte what
    /// `serde_json::to_writer` writes (a unit test compares the two on awkward records), at
    /// about a third of the instructions. A record with an OAuth audit (token and revocation
    /// endpoint calls only) goes through serde.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if self.oauth.is_some() {
            if serde_json::to_writer(&mut *out, self).is_err() {
                // Serialising plain data into a Vec cannot fail; keep the line valid anyway.
                out.extend_from_slice(b"{}");
            }
            return;
        }
        RecordView {
            ts: self.ts,
            tenant: &self.tenant,
            token_id: self.token_id.as_deref(),
            client_ip: self.client_ip.as_deref(),
            user_agent: self.user_agent.as_deref().map(Cow::Borrowed),
            method: Cow::Borrowed(&self.method),
            host: Cow::Borrowed(&self.host),
            path: Cow::Borrowed(&self.path),
            status: self.status,
            upstream_status: self.upstream_status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: self.duration_ms,
            request_id: Cow::Borrowed(&self.request_id),
            verify: self.verify,
            refusal: self.refusal.as_deref(),
            anomalies: Anomalies::Names(&self.anomalies),
        }
        .write_json(out);
    }
}

/// A record's fields as the JSON writer reads them: borrowed from a `SessionRecord`, or from
/// a `RecordDraft` scrubbed and capped on the fly (the writer's path, `RecordDraft::write_json`:
/// no record is built, a field is copied only when scrubbing changed it).
struct RecordView<'a> {
    ts: u64,
    tenant: &'a str,
    token_id: Option<&'a str>,
    client_ip: Option<&'a str>,
    user_agent: Option<Cow<'a, str>>,
    method: Cow<'a, str>,
    host: Cow<'a, str>,
    path: Cow<'a, str>,
    status: u16,
    upstream_status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    request_id: Cow<'a, str>,
    verify: Option<VerifyResult>,
    refusal: Option<&'a str>,
    anomalies: Anomalies<'a>,
}

enum Anomalies<'a> {
    Names(&'a [String]),
    Flags(Flags),
}

impl RecordView<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"{\"ts\":");
        out.extend_from_slice(n.format(self.ts).as_bytes());
        json_field(out, b",\"tenant\":", self.tenant);
        if let Some(v) = self.token_id {
            json_field(out, b",\"token_id\":", v);
        }
        if let Some(v) = self.client_ip {
            json_field(out, b",\"client_ip\":", v);
        }
        if let Some(v) = &self.user_agent {
            json_field(out, b",\"user_agent\":", v);
        }
        json_field(out, b",\"method\":", &self.method);
        json_field(out, b",\"host\":", &self.host);
        json_field(out, b",\"path\":", &self.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(n.format(self.status).as_bytes());
        if let Some(v) = self.upstream_status {
            out.extend_from_slice(b",\"upstream_status\":");
            out.extend_from_slice(n.format(v).as_bytes());
        }
        out.extend_from_slice(b",\"bytes_in\":");
        out.extend_from_slice(n.format(self.bytes_in).as_bytes());
        out.extend_from_slice(b",\"bytes_out\":");
        out.extend_from_slice(n.format(self.bytes_out).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        if self.duration_ms.is_finite() {
            out.extend_from_slice(zmij::Buffer::new().format_finite(self.duration_ms).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        json_field(out, b",\"request_id\":", &self.request_id);
        if let Some(v) = self.verify {
            json_field(out, b",\"verify\":", v.label());
        }
        if let Some(v) = self.refusal {
            json_field(out, b",\"refusal\":", v);
        }
        let mut first = true;
        let mut anomaly = |a: &str| {
            out.extend_from_slice(if first { b",\"anomalies\":[" } else { b"," });
            first = false;
            json_str(out, a);
        };
        match &self.anomalies {
            Anomalies::Names(v) => v.iter().for_each(|a| anomaly(a)),
            Anomalies::Flags(f) => f.names().for_each(anomaly),
        }
        if !first {
            out.push(b']');
        }
        out.push(b'}');
    }

    fn to_record(&self) -> SessionRecord {
        SessionRecord {
            ts: self.ts,
            tenant: self.tenant.to_string(),
            token_id: self.token_id.map(str::to_string),
            client_ip: self.client_ip.map(str::to_string),
            user_agent: self.user_agent.as_deref().map(str::to_string),
            method: self.method.to_string(),
            host: self.host.to_string(),
            path: self.path.to_string(),
            status: self.status,
            upstream_status: self.upstream_status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: self.duration_ms,
            request_id: self.request_id.to_string(),
            verify: self.verify,
            refusal: self.refusal.map(str::to_string),
            anomalies: match &self.anomalies {
                Anomalies::Names(v) => v.to_vec(),
                Anomalies::Flags(f) => f.names().map(str::to_string).collect(),
            },
            oauth: None,
        }
    }
}

/// A header value as text (borrowed unless it holds bytes that are not UTF-8).
fn lossy(v: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

/// An IP address as text on the stack; IPv4 (the common case) without the formatting
/// machinery, which costs several hundred instructions for four small numbers.
struct IpText {
    buf: [u8; 64],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText { buf: [0; 64], len: 0 };
        match ip {
            IpAddr::V4(v4) => {
                let mut n = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.buf[t.len] = b'.';
                        t.len += 1;
                    }
                    let d = n.format(octet).as_bytes();
                    t.buf[t.len..t.len + d.len()].copy_from_slice(d);
                    t.len += d.len();
                }
            }
            IpAddr::V6(_) => {
                // The longest IPv6 text form is 45 bytes: the 64-byte buffer cannot run out.
                let mut w = &mut t.buf[..];
                if std::io::Write::write_fmt(&mut w, format_args!("{ip}")).is_ok() {
                    t.len = 64 - w.len();
                }
            }
        }
        t
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn json_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    json_str(out, value);
}

/// A JSON string as serde_json writes it: `"` and `\\` escaped, control characters as
/// `\\b \\t \\n \\f \\r` or `\\u00xx`, everything else (UTF-8 included) as is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    // Most values need no escape: one pass without an early exit (the compiler vectorises it),
    // then a single copy.
    let plain = !b
        .iter()
        .fold(false, |any, &c| any | (c < 0x20) | (c == b'"') | (c == b'\\'));
    if plain {
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        out.extend_from_slice(&b[start..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// The audit part of a session record for an OAuth token or revocation endpoint call. Ids and
/// outcomes only: never codes, verifiers, client secrets or tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OAuthAudit {
    /// `token` or `revocation`.
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The request's `grant_type` as a bounded label (`oauth::grant_type_label`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub grant_type: String,
    /// Token ids of the records this answer created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issued: Vec<String>,
    /// Token id of the refresh (or revoked) Part A the client presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    /// The result label of `tessera_oauth_token_responses_total`.
    pub outcome: String,
}

/// Replace every Part-A-shaped run (`tsr_`, any case, then at least 78 ASCII letters or
/// digits) with `tsr_[redacted]`. Borrows when there is nothing to replace, the common case.
/// A hand-written scan rather than a regex (benches/scrub.rs compares the two): every byte of
/// a match is a word byte (`[0-9A-Za-z_]`), so only word runs of at least `PART_A_LEN` bytes
/// can hold one; the scan probes one byte per `PART_A_LEN` window to skip the short runs
/// (path segments, query pairs) and looks for `tsr_` only inside long ones.
///
/// Deliberately wider than the scanners' regex `\btsr_[0-9A-Za-z]{78}\b`: no word boundary
/// is required on either side and longer runs are replaced whole, so a Part A glued to other
/// text, or with a changed prefix case, does not slip through.
pub fn scrub_part_a(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let mut out: Option<String> = None;
    // `s[..copied]` is already in `out` (or replaced).
    let mut copied = 0;
    // Invariant: every word run not yet scanned starts at `lo` or later, and `p` is the last
    // byte of the earliest window starting at `lo` (`p = lo + PART_A_LEN - 1`).
    let mut lo = 0;
    let mut p = PART_A_LEN - 1;
    while p < b.len() {
        if !is_word(b[p]) {
            lo = p + 1;
            p = lo + PART_A_LEN - 1;
            continue;
        }
        let mut q = p;
        while q > lo && is_word(b[q - 1]) {
            q -= 1;
        }
        if p + 1 - q < PART_A_LEN {
            // b[q - 1] is not a word byte: a long enough run starts at q or later.
            lo = q;
            p = q + PART_A_LEN - 1;
            continue;
        }
        let mut e = p + 1;
        while e < b.len() && is_word(b[e]) {
            e += 1;
        }
        scrub_run(s, q, e, &mut out, &mut copied);
        lo = e;
        p = e + PART_A_LEN - 1;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[copied..]);
            Cow::Owned(o)
        }
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Replace the Part-A-shaped parts of the word run `s[start..end]`. Run ends border
/// non-word (ASCII or UTF-8 lead/continuation) bytes or the string ends, so every index used
/// here is a char boundary.
fn scrub_run(s: &str, start: usize, end: usize, out: &mut Option<String>, copied: &mut usize) {
    let b = &s.as_bytes()[..end];
    let mut i = start + 3;
    while let Some(off) = b.get(i..).and_then(|r| r.iter().position(|&c| c == b'_')) {
        let u = i + off;
        i = u + 1;
        if !b[u - 3..u].eq_ignore_ascii_case(b"tsr") {
            continue;
        }
        let run = b[u + 1..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        i = u + 1 + run;
        if run < PART_A_BODY || u - 3 < *copied {
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
        o.push_str(&s[*copied..u - 3]);
        o.push_str(PART_A_REDACTED);
        *copied = i;
    }
}

/// Scrub, then cap at `max` bytes on a char boundary (so a cut never leaves half a Part A).
/// Borrowed unless scrubbing changed something.
fn clean(s: &str, max: usize) -> Cow<'_, str> {
    cap(scrub_part_a(s), max)
}

/// `s` cut to at most `max` bytes on a char boundary.
fn cap(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..cut]),
        Cow::Owned(mut o) => {
            o.truncate(cut);
            Cow::Owned(o)
        }
    }
}

/// `path?a=1&b` → `path?a=*&b`, Part-A-shaped text scrubbed; capped at 1 KiB. Borrowed when
/// there is no query and nothing to scrub.
pub fn redact_path(pq: &str) -> Cow<'_, str> {
    let pq = scrub_part_a(pq);
    if !pq.contains('?') {
        return cap(pq, MAX_PATH);
    }
    let mut out = String::with_capacity(pq.len().min(MAX_PATH));
    match pq.split_once('?') {
        None => out.push_str(&pq),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _)) => {
                        out.push_str(k);
                        out.push_str("=*");
                    }
                    None => out.push_str(pair),
                }
            }
        }
    }
    cap(Cow::Owned(out), MAX_PATH)
}

/// `METHOD path, Host: host` for Pingora's own error lines (`ProxyHttp::request_summary`),
/// with the same redaction as session records.
pub fn request_summary(req: &RequestHeader) -> String {
    let host =
        crate::host::request_authority(&req.uri, &req.headers).map_or(Cow::Borrowed("-"), String::from_utf8_lossy);
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    format!(
        "{} {}, Host: {}",
        clean(req.method.as_str(), 32),
        redact_path(pq),
        clean(&host, MAX_HOST)
    )
}

/// What the `logging` phase captures: owned handles (reference-counted header values, the
/// URI), copied numbers and enums. No formatting or scrubbing happens on the proxy thread;
/// the writer turns a draft into a JSON line (`write_json`).
#[cfg_attr(test, derive(Clone))]
pub struct RecordDraft {
    ts: u64,
    tenant: Arc<str>,
    token_id: Option<TokenId>,
    ip: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
    method: http::Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    status: u16,
    upstream_status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    elapsed: Duration,
    request_id: Option<HeaderValue>,
    verify: Option<VerifyResult>,
    refusal: Option<&'static str>,
    flags: Flags,
    oauth: Option<Box<OAuthAudit>>,
}

impl RecordDraft {
    /// Attach the OAuth audit of a token or revocation endpoint call.
    pub fn with_oauth(mut self, oauth: Option<Box<OAuthAudit>>) -> RecordDraft {
        self.oauth = oauth;
        self
    }

    /// Capture a finished request (runs in `logging`, on the proxy thread).
    #[allow(clippy::too_many_arguments)]
    pub fn capture(
        tenant: &Tenant,
        token_id: Option<TokenId>,
        ip: Option<IpAddr>,
        req: &RequestHeader,
        status: u16,
        upstream_status: Option<u16>,
        bytes_in: u64,
        bytes_out: u64,
        elapsed: Duration,
        request_id: Option<&HeaderValue>,
        verify: Option<VerifyResult>,
        refusal: Option<&'static str>,
        flags: Flags,
    ) -> RecordDraft {
        RecordDraft {
            ts: crate::clock::unix_ms(),
            tenant: tenant.id.clone(),
            token_id,
            ip,
            user_agent: req.headers.get(http::header::USER_AGENT).cloned(),
            method: req.method.clone(),
            // h2 requests carry the authority in the URI; h1 ones in `Host`.
            host: match req.uri.authority() {
                Some(_) => None,
                None => req.headers.get(http::header::HOST).cloned(),
            },
            uri: req.uri.clone(),
            status,
            upstream_status,
            bytes_in,
            bytes_out,
            elapsed,
            request_id: request_id.cloned(),
            verify,
            refusal,
            flags,
            oauth: None,
        }
    }

    /// The record as stored: query values redacted, Part-A-shaped text scrubbed from every
    /// client-supplied field, lengths capped (runs in the writer). `view` does the work, so
    /// the JSON line (`write_json`) and the record cannot disagree.
    pub fn finish(self) -> SessionRecord {
        let mut rec = self.view(|v| v.to_record());
        rec.oauth = self.oauth.map(|o| *o);
        rec
    }

    /// Append the record `finish` would build as one JSON object (no newline), byte for byte
    /// what `SessionRecord::write_json` writes for it, without building it: a field is copied
    /// only when scrubbing or capping changed it (runs in the writer, once per request).
    pub fn write_json(self, out: &mut Vec<u8>) {
        if self.oauth.is_some() {
            self.finish().write_json(out);
        } else {
            self.view(|v| v.write_json(out));
        }
    }

    /// Call `f` with the record's fields scrubbed and capped.
    fn view<R>(&self, f: impl FnOnce(&RecordView<'_>) -> R) -> R {
        let host = match self.uri.authority() {
            Some(a) => Cow::Borrowed(a.as_str()),
            None => self.host.as_ref().map_or(Cow::Borrowed(""), lossy),
        };
        let user_agent = self.user_agent.as_ref().map(lossy);
        let request_id = self.request_id.as_ref().map_or(Cow::Borrowed(""), lossy);
        let mut token_hex = [0u8; 32];
        let token_id = match self.token_id {
            Some(t) if hex::encode_to_slice(t.0, &mut token_hex).is_ok() => std::str::from_utf8(&token_hex).ok(),
            _ => None,
        };
        let ip = self.ip.map(IpText::new);
        f(&RecordView {
            ts: self.ts,
            tenant: &self.tenant,
            token_id,
            client_ip: ip.as_ref().map(IpText::as_str),
            user_agent: user_agent.as_deref().map(|v| clean(v, MAX_UA)),
            method: clean(self.method.as_str(), 32),
            host: clean(&host, MAX_HOST),
            path: redact_path(self.uri.path_and_query().map_or("/", |p| p.as_str())),
            status: self.status,
            upstream_status: self.upstream_status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: self.elapsed.as_secs_f64() * 1000.0,
            request_id: clean(&request_id, MAX_REQUEST_ID),
            verify: self.verify,
            refusal: self.refusal,
            anomalies: Anomalies::Flags(self.flags),
        })
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SessionLogger {
    tx: Option<mpsc::Sender<RecordDraft>>,
}

impl SessionLogger {
    /// A logger that records nothing (session_log.enabled: false).
    pub fn disabled() -> SessionLogger {
        SessionLogger { tx: None }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue a record; drop and count it if the writer is behind.
    pub fn log(&self, rec: RecordDraft) {
        if let Some(tx) = &self.tx {
            if tx.try_send(rec).is_err() {
                metrics::global()
                    .session_log_dropped
                    .with_label_values(&["channel"])
                    .inc();
            }
        }
    }
}

/// Filter for reading records back.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub token_id: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<u64>,
    pub limit: usize,
}

/// Owns the sinks and the in-memory rings; shared by the writer and the admin API.
pub struct SessionStore {
    conf: SessionLogConf,
    redis: Option<Arc<RedisStore>>,
    /// Every configured tenant (the live table): their streams are trimmed whether or not
    /// they log.
    tenants: Arc<crate::tenants::Tenants>,
    /// Per-tenant rings of JSON lines, kept only when they are what `query` reads (no Redis
    /// stream).
    memory: Mutex<HashMap<String, VecDeque<Stored>>>,
}

/// One record in a memory ring: its JSON line (one allocation, parsed back only when a query
/// returns it) and what queries filter on.
struct Stored {
    ts: u64,
    token_id: Option<TokenId>,
    json: Box<[u8]>,
}

impl SessionStore {
    pub fn new(
        conf: SessionLogConf,
        redis: Option<Arc<RedisStore>>,
        tenants: Arc<crate::tenants::Tenants>,
    ) -> Arc<SessionStore> {
        Arc::new(SessionStore {
            conf,
            redis,
            tenants,
            memory: Mutex::new(HashMap::new()),
        })
    }

    fn stream_key(&self, redis: &RedisStore, tenant: &str) -> String {
        format!("{}log:{tenant}", redis.prefix())
    }

    /// Recent records of a tenant, newest first: from Redis when configured, else memory.
    pub async fn query(&self, tenant: &str, q: &Query) -> Result<Vec<SessionRecord>, String> {
        let limit = q.limit.clamp(1, 10_000);
        let keep = |r: &SessionRecord| {
            q.token_id.as_deref().is_none_or(|t| r.token_id.as_deref() == Some(t)) && q.since.is_none_or(|s| r.ts >= s)
        };
        if let Some(redis) = self.stream_store() {
            let mut conn = redis.connection().map_err(|e| e.to_string())?;
            let start = q.since.map_or("-".to_string(), |s| s.to_string());
            // Read more than `limit` when filtering by token, bounded.
            let count = if q.token_id.is_some() {
                (limit * 20).min(50_000)
            } else {
                limit
            };
            let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(self.stream_key(redis, tenant))
                .arg("+")
                .arg(start)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let mut out = Vec::new();
            for e in entries.ids {
                let Some(v) = e.get::<Vec<u8>>("r") else {
                    continue;
                };
                if let Ok(r) = serde_json::from_slice::<SessionRecord>(&v) {
                    if keep(&r) {
                        out.push(r);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        // The same match as the string comparison on Redis records: an id that is not a token
        // id as records spell it (32 lower-case hex digits) matches nothing.
        let token = match q.token_id.as_deref() {
            None => None,
            Some(s) => match TokenId::parse(s).filter(|t| t.to_string() == s) {
                Some(t) => Some(t),
                None => return Ok(Vec::new()),
            },
        };
        let mem = self.memory.lock().map_err(|e| e.to_string())?;
        Ok(mem
            .get(tenant)
            .map(|ring| {
                ring.iter()
                    .rev()
                    .filter(|r| token.is_none_or(|t| r.token_id == Some(t)) && q.since.is_none_or(|s| r.ts >= s))
                    .filter_map(|r| serde_json::from_slice::<SessionRecord>(&r.json).ok())
                    .take(limit)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The Redis store, when records go to (and are read from) Redis streams.
    fn stream_store(&self) -> Option<&RedisStore> {
        self.redis.as_deref().filter(|_| self.conf.redis_stream)
    }
}

/// Create the logger (request side) and the writer service (sink side).
pub fn channel(store: Arc<SessionStore>) -> (SessionLogger, Writer) {
    if !store.conf.enabled {
        return (
            SessionLogger::disabled(),
            Writer {
                rx: Mutex::new(None),
                store,
                last_trim_warn: AtomicU64::new(0),
            },
        );
    }
    let (tx, rx) = mpsc::channel(store.conf.channel_capacity);
    (
        SessionLogger { tx: Some(tx) },
        Writer {
            rx: Mutex::new(Some(rx)),
            store,
            last_trim_warn: AtomicU64::new(0),
        },
    )
}

/// Background service draining the channel into the sinks.
pub struct Writer {
    rx: Mutex<Option<mpsc::Receiver<RecordDraft>>>,
    store: Arc<SessionStore>,
    /// Unix ms of the last logged trim failure (rate limit).
    last_trim_warn: AtomicU64,
}

/// How often streams are trimmed by age: a tenth of `stream_max_age`, between 1 s and 1 min.
fn trim_period(max_age: Duration) -> Duration {
    (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

struct FileSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max: u64,
    keep: usize,
}

impl FileSink {
    fn open(path: PathBuf, max: u64, keep: usize) -> FileSink {
        let mut s = FileSink {
            path,
            file: None,
            size: 0,
            max,
            keep,
        };
        s.reopen();
        s
    }

    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => {
                log::error!("session log file {}: {e}", self.path.display());
                self.file = None;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        for i in (1..self.keep).rev() {
            let from = self.path.with_extension(format!("{i}"));
            let to = self.path.with_extension(format!("{}", i + 1));
            let _ = std::fs::rename(from, to);
        }
        let _ = std::fs::rename(&self.path, self.path.with_extension("1"));
        self.reopen();
    }

    fn write(&mut self, buf: &[u8], n: usize) {
        if self.size + buf.len() as u64 > self.max && self.size > 0 {
            self.rotate();
        }
        let ok = match &mut self.file {
            Some(f) => f.write_all(buf).is_ok(),
            None => false,
        };
        if ok {
            self.size += buf.len() as u64;
            metrics::global()
                .session_log_written
                .with_label_values(&["file"])
                .inc_by(n as u64);
        } else {
            metrics::global()
                .session_log_dropped
                .with_label_values(&["file"])
                .inc_by(n as u64);
            self.reopen();
        }
    }
}

/// The batch's JSON lines without their newlines (`ends`: end offset of each line in `lines`).
fn each_line<'a>(lines: &'a [u8], ends: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut start = 0;
    ends.iter().map(move |&end| {
        let line = &lines[start..end.saturating_sub(1).max(start)];
        start = end;
        line
    })
}

/// The writer's reusable buffers and its file sink.
struct Batch {
    /// Tenant of each record's line.
    tenants: Vec<Arc<str>>,
    /// Memory-ring filter fields of each record (when the rings are kept).
    keys: Vec<(u64, Option<TokenId>)>,
    lines: Vec<u8>,
    /// End offset in `lines` of each record's line.
    ends: Vec<usize>,
    file: Option<FileSink>,
}

impl Writer {
    /// Write the drafts (scrubbed, redacted: `RecordDraft::write_json`) to every sink; empties
    /// `drafts`. Each record is serialised once: the file, stdout, the Redis stream and the
    /// memory ring share the JSON lines.
    async fn flush(&self, drafts: &mut Vec<RecordDraft>, out: &mut Batch) {
        let conf = &self.store.conf;
        let Batch {
            tenants,
            keys,
            lines,
            ends,
            file,
        } = out;
        tenants.clear();
        keys.clear();
        lines.clear();
        ends.clear();
        let keep_rings = self.store.stream_store().is_none();
        for d in drafts.drain(..) {
            tenants.push(d.tenant.clone());
            if keep_rings {
                keys.push((d.ts, d.token_id));
            }
            d.write_json(lines);
            lines.push(b'\n');
            ends.push(lines.len());
        }
        let n = tenants.len();
        if conf.stdout {
            let mut out = std::io::stdout().lock();
            if out.write_all(lines).and_then(|_| out.flush()).is_ok() {
                metrics::global()
                    .session_log_written
                    .with_label_values(&["stdout"])
                    .inc_by(n as u64);
            } else {
                metrics::global()
                    .session_log_dropped
                    .with_label_values(&["stdout"])
                    .inc_by(n as u64);
            }
        }
        if let Some(f) = file {
            f.write(lines, n);
        }
        if let Some(redis) = self.store.stream_store() {
            // One pipeline per tenant: each stream is one key (one slot on a cluster).
            // (tenant, stream key, pipeline, records)
            let mut by_tenant: Vec<(&str, String, redis::Pipeline, u64)> = Vec::new();
            for (tenant, json) in tenants.iter().zip(each_line(lines, ends)) {
                if json.is_empty() {
                    continue;
                }
                let i = match by_tenant.iter().position(|(t, ..)| *t == &**tenant) {
                    Some(i) => i,
                    None => {
                        let key = self.store.stream_key(redis, tenant);
                        by_tenant.push((tenant, key, redis::pipe(), 0));
                        by_tenant.len() - 1
                    }
                };
                let (_, key, pipe, n) = &mut by_tenant[i];
                pipe.cmd("XADD")
                    .arg(key.as_str())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(conf.stream_maxlen)
                    .arg("*")
                    .arg("r")
                    .arg(json)
                    .ignore();
                *n += 1;
            }
            for (_, _, pipe, n) in by_tenant {
                let res = match redis.connection() {
                    Ok(mut conn) => pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match res {
                    Ok(()) => metrics::global()
                        .session_log_written
                        .with_label_values(&["redis"])
                        .inc_by(n),
                    Err(e) => {
                        log::warn!("session log: redis stream write failed: {e}");
                        metrics::global()
                            .session_log_dropped
                            .with_label_values(&["redis"])
                            .inc_by(n);
                    }
                }
            }
        }
        if !keep_rings {
            return;
        }
        if let Ok(mut mem) = self.store.memory.lock() {
            for ((tenant, &(ts, token_id)), line) in tenants.iter().zip(keys.iter()).zip(each_line(lines, ends)) {
                let json = line.into();
                // Look up by &str first: the owned key is allocated once per tenant, not per record.
                if !mem.contains_key(&**tenant) {
                    mem.insert(tenant.to_string(), VecDeque::new());
                }
                let Some(ring) = mem.get_mut(&**tenant) else {
                    continue;
                };
                if ring.len() >= conf.memory_per_tenant {
                    ring.pop_front();
                }
                ring.push_back(Stored { ts, token_id, json });
            }
        }
    }

    /// Trim every configured tenant's stream to `stream_max_age` (idle tenants included: their
    /// streams are never touched by `XADD`'s `MAXLEN`). Errors are counted and logged at most
    /// once a minute.
    async fn trim_by_age(&self) {
        let Some(redis) = &self.store.redis else {
            return;
        };
        let tenants = self.store.tenants.load_full();
        if !self.store.conf.redis_stream || tenants.is_empty() {
            return;
        }
        let min_ms = crate::clock::unix_ms().saturating_sub(self.store.conf.stream_max_age.as_millis() as u64);
        let mut conn = match redis.connection() {
            Ok(c) => c,
            Err(e) => {
                self.trim_failed(tenants.len(), "all", &e.to_string());
                return;
            }
        };
        for t in tenants.iter().map(|t| &t.id) {
            let res: Result<u64, _> = redis::cmd("XTRIM")
                .arg(self.store.stream_key(redis, t))
                .arg("MINID")
                .arg("~")
                .arg(min_ms)
                .query_async(&mut conn)
                .await;
            if let Err(e) = res {
                self.trim_failed(1, t, &e.to_string());
            }
        }
    }

    fn trim_failed(&self, n: usize, tenant: &str, err: &str) {
        metrics::global().session_log_trim_errors.inc_by(n as u64);
        let now = crate::clock::unix_ms();
        let last = self.last_trim_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= TRIM_WARN_EVERY_MS
            && self
                .last_trim_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "session log: XTRIM by stream_max_age failed (tenant={tenant}): {err}; \
                 counted in tessera_session_log_trim_errors_total, next warning in a minute at the earliest"
            );
        }
    }
}

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let conf = &self.store.conf;
        let mut drafts: Vec<RecordDraft> = Vec::with_capacity(BATCH);
        let mut out = Batch {
            tenants: Vec::with_capacity(BATCH),
            keys: Vec::with_capacity(BATCH),
            lines: Vec::with_capacity(64 * 1024),
            ends: Vec::with_capacity(BATCH),
            file: conf
                .file
                .clone()
                .map(|p| FileSink::open(p, conf.file_max_bytes, conf.file_keep)),
        };
        let mut trim = tokio::time::interval(trim_period(conf.stream_max_age));
        loop {
            tokio::select! {
                n = rx.recv_many(&mut drafts, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    if drafts.len() < BATCH {
                        tokio::time::sleep(LINGER).await;
                        while drafts.len() < BATCH {
                            match rx.try_recv() {
                                Ok(r) => drafts.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                    self.flush(&mut drafts, &mut out).await;
                }
                _ = trim.tick() => self.trim_by_age().await,
                _ = shutdown.changed() => {
                    // Drain what is queued so a graceful stop loses nothing.
                    while let Ok(r) = rx.try_recv() {
                        drafts.push(r);
                        if drafts.len() == BATCH {
                            self.flush(&mut drafts, &mut out).await;
                        }
                    }
                    if !drafts.is_empty() {
                        self.flush(&mut drafts, &mut out).await;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_json` writes exactly what serde_json writes, for plain and awkward records
    /// (every optional field absent and present, escapes, control bytes, UTF-8, odd floats).
    #[test]
    fn write_json_matches_serde_json() {
        let nasty = "q\"uote\\back\nnl\rcr\ttab\u{8}\u{c}\u{1}\u{1f}\u{7f}é✓🦀";
        let base = SessionRecord {
            ts: 1_700_000_000_123,
            tenant: "acme".into(),
            token_id: None,
            client_ip: None,
            user_agent: None,
            method: "GET".into(),
            host: "saas.acme.example".into(),
            path: "/v1/x?a=*".into(),
            status: 200,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: u64::MAX,
            duration_ms: 0.0,
            request_id: String::new(),
            verify: None,
            refusal: None,
            anomalies: vec![],
            oauth: None,
        };
        let full = SessionRecord {
            token_id: Some("0123456789abcdef0123456789abcdef".into()),
            client_ip: Some("2001:db8::1".into()),
            user_agent: Some(nasty.into()),
            method: nasty.into(),
            host: nasty.into(),
            path: nasty.into(),
            upstream_status: Some(503),
            duration_ms: 1.234_567_890_123e-7,
            request_id: nasty.into(),
            verify: Some(VerifyResult::Revoked),
            refusal: Some("token".into()),
            anomalies: vec!["new_ip".into(), nasty.into()],
            ..base.clone()
        };
        let mut floats = vec![];
        for d in [1.0, 0.5, 12.75, 1e21, 123456.789, f64::MIN_POSITIVE, 3.0e-300] {
            floats.push(SessionRecord {
                duration_ms: d,
                ..base.clone()
            });
        }
        let with_oauth = SessionRecord {
            oauth: Some(OAuthAudit {
                endpoint: "token".into(),
                ..Default::default()
            }),
            ..full.clone()
        };
        for r in [base, full, with_oauth].into_iter().chain(floats) {
            let mut ours = Vec::new();
            r.write_json(&mut ours);
            let theirs = serde_json::to_vec(&r).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            // And it reads back (exactly, but for floats serde_json's parser rounds).
            let back: SessionRecord = serde_json::from_slice(&ours).unwrap();
            assert_eq!(
                SessionRecord {
                    duration_ms: r.duration_ms,
                    ..back
                },
                r
            );
        }
        for ip in [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.40",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
        // Every byte below 0x80 on its own, in a string.
        for c in 0u8..0x80 {
            let s = String::from(c as char);
            let mut ours = Vec::new();
            json_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "byte {c:#x}");
        }
    }

    #[test]
    fn file_sink_rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let mut f = FileSink::open(path.clone(), 100, 2);
        let line = [b'x'; 60];
        for _ in 0..5 {
            f.write(&line, 1);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 60);
        assert_eq!(std::fs::metadata(path.with_extension("1")).unwrap().len(), 60);
        assert!(path.with_extension("2").exists());
        assert!(!path.with_extension("3").exists(), "keeps only file_keep rotated files");
    }

    /// A Part-A-shaped string: `tsr_` + 78 base62 (checksum not needed to be scrubbed).
    fn part_a_like(c: char) -> String {
        format!("tsr_{}", c.to_string().repeat(PART_A_BODY))
    }

    #[test]
    fn scrub_replaces_part_a_shapes_anywhere() {
        let a = part_a_like('Q');
        assert_eq!(scrub_part_a("/v1/x"), "/v1/x");
        assert!(matches!(scrub_part_a("/v1/tsr_short_x"), Cow::Borrowed(_)));
        assert_eq!(scrub_part_a(&a), PART_A_REDACTED);
        assert_eq!(scrub_part_a(&format!("/p/{a}/q")), format!("/p/{PART_A_REDACTED}/q"));
        // Glued to other text, prefix case changed, longer run, twice, next to UTF-8.
        assert_eq!(scrub_part_a(&format!("x{a}9")), format!("x{PART_A_REDACTED}"));
        assert_eq!(
            scrub_part_a(&format!("é{}é", a.replace("tsr_", "TSR_"))),
            format!("é{PART_A_REDACTED}é")
        );
        assert_eq!(
            scrub_part_a(&format!("{a} {a}")),
            format!("{PART_A_REDACTED} {PART_A_REDACTED}")
        );
        // One base62 short of a Part A is kept.
        let short = &a[..a.len() - 1];
        assert_eq!(scrub_part_a(short), short);
        // A real Part A, as minted.
        let ring = crate::token::Keyring::parse(&format!("k1 {}", "11".repeat(32))).unwrap();
        let meta = crate::token::TokenMeta {
            label: "t".into(),
            created_at: 1,
            expires_at: None,
            header: "Authorization".into(),
            scheme: "Bearer".into(),
            replaces: None,
            kind: Default::default(),
            grant_id: None,
        };
        let real = crate::token::mint(&ring, "acme", b"upstream", &meta).unwrap().part_a;
        assert!(!scrub_part_a(&format!("ua {}", real.as_str())).contains(&real[4..]));
    }

    /// The skipping scan agrees with a plain left-to-right one on many generated strings.
    #[test]
    fn scrub_matches_a_naive_scan() {
        fn naive(s: &str) -> String {
            let b = s.as_bytes();
            let (mut out, mut i, mut copied) = (String::new(), 0, 0);
            while i + 4 <= b.len() {
                if b[i..i + 4].eq_ignore_ascii_case(b"tsr_") {
                    let run = b[i + 4..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
                    if run >= PART_A_BODY {
                        out.push_str(&s[copied..i]);
                        out.push_str(PART_A_REDACTED);
                        i += 4 + run;
                        copied = i;
                        continue;
                    }
                }
                i += 1;
            }
            out.push_str(&s[copied..]);
            out
        }
        let pieces = [
            "tsr_",
            "TsR_",
            "a",
            "Z9",
            "_",
            "/",
            "?",
            "=",
            "é",
            " ",
            "x".repeat(40).leak(),
            "tsr",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut scrubbed = 0;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..next() % 40 {
                s.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let got = scrub_part_a(&s);
            scrubbed += usize::from(matches!(got, Cow::Owned(_)));
            assert_eq!(got, naive(&s), "{s:?}");
        }
        assert!(scrubbed > 50, "only {scrubbed} generated strings held a Part A shape");
    }

    #[test]
    fn record_fields_are_scrubbed_in_the_writer() {
        let a = part_a_like('z');
        let draft = RecordDraft {
            ts: 1,
            tenant: Arc::from("acme"),
            token_id: None,
            ip: None,
            user_agent: Some(HeaderValue::from_str(&format!("agent/{a}")).unwrap()),
            method: http::Method::GET,
            uri: format!("/v1/{a}/x?k={a}&{a}=1&{a}").parse().unwrap(),
            host: Some(HeaderValue::from_str(&format!("{a}.example")).unwrap()),
            status: 401,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: 0,
            elapsed: Duration::ZERO,
            request_id: Some(HeaderValue::from_str(&a).unwrap()),
            verify: Some(VerifyResult::Malformed),
            refusal: Some("malformed"),
            flags: Flags::default(),
            oauth: None,
        };
        let mut line = Vec::new();
        draft.clone().write_json(&mut line);
        let rec = draft.finish();
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            json,
            "the writer's line is the record"
        );
        assert!(!json.contains(&a[4..]), "{json}");
        assert_eq!(
            rec.path,
            format!("/v1/{PART_A_REDACTED}/x?k=*&{PART_A_REDACTED}=*&{PART_A_REDACTED}")
        );
        assert_eq!(rec.request_id, PART_A_REDACTED);
        assert!(json.contains("\"verify\":\"malformed\""), "{json}");
    }

    /// The writer's line (`RecordDraft::write_json`, no record built) is what serde_json
    /// writes for the record `finish` builds, for drafts with every optional field absent and
    /// present, fields that need scrubbing, capping or escaping, and an OAuth audit.
    #[test]
    fn draft_line_is_the_finished_record() {
        let a = part_a_like('q');
        let base = RecordDraft {
            ts: 1_700_000_000_123,
            tenant: Arc::from("acme"),
            token_id: None,
            ip: None,
            user_agent: None,
            method: http::Method::GET,
            uri: "/".parse().unwrap(),
            host: None,
            status: 200,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: 0,
            elapsed: Duration::ZERO,
            request_id: None,
            verify: None,
            refusal: None,
            flags: Flags::default(),
            oauth: None,
        };
        let flags = {
            let mut f = Flags::default();
            for k in crate::anomaly::AnomalyKind::ALL {
                f.set(k);
            }
            f
        };
        let long_ua = format!("ua-{}é", "u".repeat(MAX_UA));
        let drafts = [
            base.clone(),
            RecordDraft {
                token_id: Some(TokenId([0xab; 16])),
                ip: Some("192.0.2.10".parse().unwrap()),
                user_agent: Some(HeaderValue::from_str(&long_ua).unwrap()),
                method: http::Method::from_bytes(b"PURGE").unwrap(),
                uri: format!("https://saas.acme.example:8443/v1/{a}?q=1&x").parse().unwrap(),
                status: 502,
                upstream_status: Some(503),
                bytes_in: 17,
                bytes_out: u64::MAX,
                elapsed: Duration::from_nanos(1_234_567),
                request_id: Some(HeaderValue::from_static("r\"id")),
                verify: Some(VerifyResult::Revoked),
                refusal: Some("revoked"),
                flags,
                ..base.clone()
            },
            RecordDraft {
                ip: Some("2001:db8::7".parse().unwrap()),
                host: Some(HeaderValue::from_bytes(b"h\xffst.example").unwrap()),
                uri: format!("/{}", "p".repeat(2 * MAX_PATH)).parse().unwrap(),
                ..base.clone()
            },
            RecordDraft {
                oauth: Some(Box::new(OAuthAudit {
                    endpoint: "token".into(),
                    ..Default::default()
                })),
                ..base.clone()
            },
        ];
        for d in drafts {
            let mut line = Vec::new();
            d.clone().write_json(&mut line);
            let rec = d.finish();
            assert_eq!(String::from_utf8(line).unwrap(), serde_json::to_string(&rec).unwrap());
            assert!(rec.path.len() <= MAX_PATH && rec.user_agent.as_ref().is_none_or(|u| u.len() <= MAX_UA));
        }
    }

    /// The memory ring (embedded store): lines written by the writer read back as the records
    /// `finish` builds, newest first, filtered by token id (spelled as records spell it) and
    /// time, capped per tenant; nothing is kept for a tenant's neighbour.
    #[tokio::test]
    async fn memory_ring_queries() {
        let conf = SessionLogConf {
            enabled: true,
            stdout: false,
            file: None,
            file_max_bytes: 1 << 20,
            file_keep: 1,
            redis_stream: false,
            stream_maxlen: 10,
            stream_max_age: Duration::from_secs(60),
            channel_capacity: 16,
            memory_per_tenant: 3,
        };
        let no_tenants: [crate::config::TenantConf; 0] = [];
        let second = Duration::from_secs(1);
        let timeouts = crate::config::UpstreamTimeouts {
            connect: second,
            read: second,
            write: second,
            idle: second,
            max_request: second,
        };
        let tenants = crate::tenants::Tenants::new(&no_tenants, &timeouts, &[]).unwrap();
        let store = SessionStore::new(conf, None, tenants);
        let (_, writer) = channel(store.clone());
        let draft = |ts: u64, tenant: &str, token: u8| RecordDraft {
            ts,
            tenant: Arc::from(tenant),
            token_id: Some(TokenId([token; 16])),
            ip: Some("192.0.2.1".parse().unwrap()),
            user_agent: None,
            method: http::Method::GET,
            uri: format!("/r{ts}?k=v").parse().unwrap(),
            host: None,
            status: 200,
            upstream_status: Some(200),
            bytes_in: 0,
            bytes_out: ts,
            elapsed: Duration::from_millis(1),
            request_id: None,
            verify: Some(VerifyResult::Ok),
            refusal: None,
            flags: Flags::default(),
            oauth: None,
        };
        let mut drafts: Vec<RecordDraft> = (1..=4).map(|ts| draft(ts, "acme", (ts % 2) as u8 * 0xab)).collect();
        drafts.push(draft(9, "globex", 0xab));
        let want: Vec<SessionRecord> = drafts.iter().map(|d| d.clone().finish()).collect();
        let mut out = Batch {
            tenants: Vec::new(),
            keys: Vec::new(),
            lines: Vec::new(),
            ends: Vec::new(),
            file: None,
        };
        writer.flush(&mut drafts, &mut out).await;
        let q = |token_id: Option<String>, since: Option<u64>, limit: usize| Query { token_id, since, limit };
        let ts = |r: Vec<SessionRecord>| r.iter().map(|r| r.ts).collect::<Vec<_>>();
        // Capped at 3 per tenant: the oldest acme record is gone; newest first.
        let all = store.query("acme", &q(None, None, 10)).await.unwrap();
        assert_eq!(all, [want[3].clone(), want[2].clone(), want[1].clone()]);
        let odd = TokenId([0xab; 16]).to_string();
        assert_eq!(
            ts(store.query("acme", &q(Some(odd.clone()), None, 10)).await.unwrap()),
            [3]
        );
        assert!(store
            .query("acme", &q(Some(odd.to_uppercase()), None, 10))
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .query("acme", &q(Some("nope".into()), None, 10))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(ts(store.query("acme", &q(None, Some(3), 10)).await.unwrap()), [4, 3]);
        assert_eq!(ts(store.query("acme", &q(None, None, 1)).await.unwrap()), [4]);
        assert_eq!(
            store.query("globex", &q(Some(odd), None, 10)).await.unwrap(),
            [want[4].clone()]
        );
        assert!(store.query("initech", &q(None, None, 10)).await.unwrap().is_empty());
    }

    /// A Part A cut by the length cap must not leave its first half behind.
    #[test]
    fn scrub_runs_before_truncation() {
        let a = part_a_like('k');
        let pq = format!("/{}{a}", "p".repeat(MAX_PATH - 40));
        let out = redact_path(&pq);
        assert!(!out.contains("kkkkkkkkkk"), "{out}");
    }

    #[test]
    fn query_values_redacted() {
        assert_eq!(redact_path("/v1/x?token=abc&flag&b=2"), "/v1/x?token=*&flag&b=*");
        assert_eq!(redact_path("/plain"), "/plain");
        let long = format!("/{}", "é".repeat(2000));
        assert!(redact_path(&long).len() <= MAX_PATH);
    }
}
