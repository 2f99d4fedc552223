//! `tenants[].oauth:` — the OAuth token swap surface of a tenant (`crate::oauth`), checked at
//! load time. Nothing here runs on the request path.
//!
//! ```yaml
//! oauth:
//!   hostnames: [oauth.saas.acme.example]   # proxied to `upstream`; no Part A required
//!   upstream: https://login.saas.example   # the real authorization server
//!   token_path: /oauth/token               # POST intercepted: tokens swapped for Part A
//!   revocation_path: /oauth/revoke         # optional, RFC 7009
//!   discovery: true                        # rewrite the metadata documents (default false)
//!   max_token_response_bytes: 65536        # default 64 KiB
//!   refresh_token_ttl: 90d                 # optional cap on a refresh record's life
//! ```

use std::path::Path;
use std::time::Duration;

use super::raw::RawOAuth;
use super::{parse_upstream, Checker, UpstreamConf};
use crate::host::HostPattern;

/// Default cap on a buffered token endpoint answer.
pub const DEFAULT_MAX_TOKEN_RESPONSE: usize = 64 * 1024;
const MIN_TOKEN_RESPONSE: usize = 1024;
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// Validated `oauth:` section of one tenant.
#[derive(Debug, Clone)]
pub struct OAuthConf {
    /// Hostnames of the OAuth flow (authorize pages, token endpoint, JWKS…), served with the
    /// tenant's certificate.
    pub hostnames: Vec<HostPattern>,
    /// The real authorization server.
    pub upstream: UpstreamConf,
    /// Extra trust for an `https` authorization server (DER certificates).
    pub upstream_ca: Option<Vec<Vec<u8>>>,
    /// `POST` here is the token endpoint (RFC 6749 §3.2).
    pub token_path: String,
    /// `POST` here is the revocation endpoint (RFC 7009), if the server has one.
    pub revocation_path: Option<String>,
    /// Rewrite `/.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
    pub discovery: bool,
    /// Largest token endpoint answer buffered for the swap.
    pub max_token_response_bytes: usize,
    /// Longest life of a refresh record (`None`: as long as the upstream accepts the token).
    pub refresh_token_ttl: Option<Duration>,
}

fn endpoint_path(key: &str, raw: &str, c: &mut Checker) -> String {
    let ok = raw.starts_with('/')
        && raw.len() <= 1024
        && raw
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
    if !ok {
        c.bad(
            key,
            format!("{raw:?} must be an absolute path without query or escapes, e.g. \"/oauth/token\""),
        );
    }
    raw.to_string()
}

/// Validate one tenant's `oauth:` section; problems go to `c` under `key`.
pub(super) fn validate(key: &str, raw: &RawOAuth, c: &mut Checker) -> Option<OAuthConf> {
    let before = c.problems.len();
    if raw.hostnames.is_empty() {
        c.bad(
            format!("{key}.hostnames"),
            "empty; list the hostnames integrations use as their authorization server, e.g. [oauth.saas.acme.example]",
        );
    }
    let mut hostnames = Vec::new();
    for (j, h) in raw.hostnames.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hostnames.push(p),
            Err(m) => c.bad(format!("{key}.hostnames[{j}]"), m),
        }
    }
    let upstream = match parse_upstream(&raw.upstream) {
        Ok(u) => Some(u),
        Err(m) => {
            c.bad(format!("{key}.upstream"), m);
            None
        }
    };
    let upstream_ca = raw
        .upstream_ca
        .as_ref()
        .and_then(|p| match crate::tls::load_ca_ders(Path::new(p)) {
            Ok(v) => Some(v),
            Err(m) => {
                c.bad(format!("{key}.upstream_ca"), m);
                None
            }
        });
    if raw.upstream_ca.is_some() && upstream.as_ref().is_some_and(|u| !u.tls) {
        c.bad(
            format!("{key}.upstream_ca"),
            "set, but the upstream is http://; use https:// or drop upstream_ca",
        );
    }
    let token_path = endpoint_path(&format!("{key}.token_path"), &raw.token_path, c);
    let revocation_path = raw
        .revocation_path
        .as_deref()
        .map(|p| endpoint_path(&format!("{key}.revocation_path"), p, c));
    if revocation_path.as_deref() == Some(token_path.as_str()) {
        c.bad(
            format!("{key}.revocation_path"),
            format!("{token_path:?} is also the token_path; give the revocation endpoint's own path or drop it"),
        );
    }
    let max_token_response_bytes = match raw.max_token_response_bytes {
        None => DEFAULT_MAX_TOKEN_RESPONSE,
        Some(n) if (MIN_TOKEN_RESPONSE..=MAX_TOKEN_RESPONSE).contains(&n) => n,
        Some(n) => {
            c.bad(
                format!("{key}.max_token_response_bytes"),
                format!(
                    "{n} is outside {MIN_TOKEN_RESPONSE}..={MAX_TOKEN_RESPONSE}; token answers are small JSON documents (default {DEFAULT_MAX_TOKEN_RESPONSE})"
                ),
            );
            DEFAULT_MAX_TOKEN_RESPONSE
        }
    };
    let refresh_token_ttl = raw.refresh_token_ttl.as_deref().map(|v| {
        let k = format!("{key}.refresh_token_ttl");
        let d = c.duration(&k, Some(v), Duration::from_secs(90 * 86400));
        // Record expiries are whole seconds: a shorter TTL would store an expired record.
        if d < Duration::from_secs(1) {
            c.bad(k, format!("{v:?} is shorter than 1s; use e.g. \"90d\""));
        }
        d
    });
    if c.problems.len() > before {
        return None;
    }
    Some(OAuthConf {
        hostnames,
        upstream: upstream?,
        upstream_ca,
        token_path,
        revocation_path,
        discovery: raw.discovery.unwrap_or(false),
        max_token_response_bytes,
        refresh_token_ttl,
    })
}
