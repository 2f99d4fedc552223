//! Validation of the header names operators configure: `tenants[].tenant_header`,
//! `tenants[].headers` and the top-level `strip_headers`. Runs at load time only.
//!
//! A configured name may not be one Tessera owns (`reserved`), nor `Authorization` (the
//! credential), and the tenant header names of all tenants are kept apart from every tenant's
//! extra `headers`, so no tenant's config can assert another tenant's identity upstream.

use http::{HeaderName, HeaderValue};

use super::{Checker, TenantConf};
use crate::reserved::reserved;

/// Headers removed from every client request by default (besides every tenant header name):
/// forwarding information that only Tessera may assert.
pub const DEFAULT_STRIP: &[&str] = &["forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-prefix"];

/// Why a configured name is refused, if it is.
fn owned(name: &HeaderName) -> Option<&'static str> {
    if name == http::header::AUTHORIZATION {
        return Some("the credential header");
    }
    reserved(name).map(|r| r.reason())
}

pub(super) fn tenant_header(key: &str, raw: Option<&str>, c: &mut Checker) -> HeaderName {
    let header_name = raw.unwrap_or("X-Tenant-Id");
    match HeaderName::from_bytes(header_name.as_bytes()) {
        Ok(h) => {
            if let Some(why) = owned(&h) {
                c.bad(
                    key,
                    format!("{header_name:?} is {why}, managed by Tessera; pick a custom name such as X-Tenant-Id"),
                );
            }
            h
        }
        Err(_) => {
            c.bad(
                key,
                format!("{header_name:?} is not a valid header name; use letters, digits and '-', e.g. X-Tenant-Id"),
            );
            HeaderName::from_static("x-tenant-id")
        }
    }
}

pub(super) fn extra_headers<'a>(
    key: &str,
    raw: impl IntoIterator<Item = (&'a String, &'a String)>,
    c: &mut Checker,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (name, value) in raw {
        let k = format!("{key}.{name}");
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => match owned(&n) {
                Some(why) => c.bad(
                    k,
                    format!("{name:?} is {why}, managed by Tessera; remove it from headers"),
                ),
                None => headers.push((n, v)),
            },
            (Err(_), _) => c.bad(k, format!("{name:?} is not a valid header name")),
            (_, Err(_)) => c.bad(k, format!("{value:?} is not a valid header value (visible ASCII only)")),
        }
    }
    headers
}

/// `strip_headers`: names removed from every request (default `DEFAULT_STRIP`).
pub(super) fn strip_headers(raw: Option<&[String]>, c: &mut Checker) -> Vec<HeaderName> {
    let Some(raw) = raw else {
        return DEFAULT_STRIP.iter().map(|n| HeaderName::from_static(n)).collect();
    };
    let mut out = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) if n == http::header::AUTHORIZATION || n == http::header::HOST => c.bad(
                format!("strip_headers[{i}]"),
                format!("{name:?} is needed to route and authenticate; remove it from strip_headers"),
            ),
            Ok(n) => out.push(n),
            Err(_) => c.bad(
                format!("strip_headers[{i}]"),
                format!("{name:?} is not a valid header name"),
            ),
        }
    }
    out
}

/// No tenant's extra `headers` may set any tenant's tenant header name.
pub(super) fn across_tenants(tenants: &[TenantConf], c: &mut Checker) {
    for (i, t) in tenants.iter().enumerate() {
        for (name, _) in &t.headers {
            if let Some(other) = tenants.iter().find(|o| o.tenant_header == *name) {
                c.bad(
                    format!("tenants[{i}].headers.{name}"),
                    format!(
                        "{name:?} is the tenant header of tenant {:?}; Tessera sets it, remove it from headers",
                        other.id
                    ),
                );
            }
        }
    }
}
