//! Discovery documents (`discovery: true`): RFC 8414 authorization server metadata and
//! OpenID Connect Discovery, fetched through the OAuth hostname.
//!
//! Runs in `request_filter` for `GET /.well-known/openid-configuration` and
//! `/.well-known/oauth-authorization-server[/…]` on a tenant's OAuth surface. Every endpoint URL
//! on the authorization server's origin (`token_endpoint`, `revocation_endpoint`,
//! `authorization_endpoint`, `jwks_uri`, `mtls_endpoint_aliases`…) is moved to the vanity
//! origin, so a client configured by discovery talks to Tessera. `issuer` is left alone: it
//! must match the `iss` of ID tokens.

use bytes::Bytes;
use serde_json::Value;

use super::{exchange, Answer, Call, OAuth};

/// Largest metadata document read.
const MAX_DOCUMENT: usize = 256 * 1024;

impl OAuth {
    pub(super) async fn discovery(&self, call: &Call<'_>, upstream_status: &mut Option<u16>) -> (Answer, &'static str) {
        let peer = call.surface.peer.load();
        let reply = match exchange::send(&self.connector, &peer, call.upstream.clone(), &[], MAX_DOCUMENT).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("tenant={} oauth discovery: {e}", call.tenant.id);
                return (Answer::upstream_failed(&e), "upstream_unavailable");
            }
        };
        *upstream_status = Some(reply.header.status.as_u16());
        if reply.too_large {
            return (
                Answer::error(502, "server_error", "the metadata document is too large"),
                "too_large",
            );
        }
        let mut doc: Option<Value> = (reply.header.status == 200)
            .then(|| serde_json::from_slice(&reply.body).ok())
            .flatten()
            .filter(Value::is_object);
        let body = match doc.as_mut() {
            Some(d) => {
                rewrite(d, &call.surface.upstream_origins, &call.vanity_origin, true);
                Bytes::from(serde_json::to_vec(d).unwrap_or_default())
            }
            None => Bytes::copy_from_slice(&reply.body),
        };
        (
            Answer::Upstream {
                header: reply.header,
                body,
            },
            if doc.is_some() { "ok" } else { "upstream_error" },
        )
    }
}

/// Rewrite every string member on one of `origins` to `vanity`, recursing into objects
/// (`mtls_endpoint_aliases`); `issuer` at the top level is kept.
fn rewrite(v: &mut Value, origins: &[String], vanity: &str, top: bool) {
    if let Value::Object(map) = v {
        for (k, member) in map.iter_mut() {
            if top && k == "issuer" {
                continue;
            }
            match member {
                Value::String(s) => {
                    if let Some(new) = rewrite_origin(s, origins, vanity) {
                        *s = new;
                    }
                }
                Value::Object(_) => rewrite(member, origins, vanity, false),
                _ => {}
            }
        }
    }
}

/// `url` with its origin replaced by `vanity`, if the origin is one of `origins` (compared
/// case-insensitively, lower-case in `origins`) and followed by a path, query or nothing.
pub fn rewrite_origin(url: &str, origins: &[String], vanity: &str) -> Option<String> {
    origins.iter().find_map(|o| {
        let head = url.get(..o.len())?;
        let rest = &url[o.len()..];
        (head.eq_ignore_ascii_case(o) && (rest.is_empty() || rest.starts_with(['/', '?', '#'])))
            .then(|| format!("{vanity}{rest}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_move_issuer_stays() {
        let origins = vec!["http://127.0.0.1:9000".to_string()];
        let mut d = serde_json::json!({
            "issuer": "http://127.0.0.1:9000",
            "token_endpoint": "http://127.0.0.1:9000/token",
            "revocation_endpoint": "HTTP://127.0.0.1:9000/token/revocation",
            "jwks_uri": "https://elsewhere.example/jwks",
            "userinfo_endpoint": "http://127.0.0.1:90001/me",
            "mtls_endpoint_aliases": {"token_endpoint": "http://127.0.0.1:9000/mtls/token"},
            "scopes_supported": ["openid"]
        });
        rewrite(&mut d, &origins, "https://oauth.acme.test:8443", true);
        assert_eq!(d["issuer"], "http://127.0.0.1:9000");
        assert_eq!(d["token_endpoint"], "https://oauth.acme.test:8443/token");
        assert_eq!(
            d["revocation_endpoint"],
            "https://oauth.acme.test:8443/token/revocation"
        );
        assert_eq!(d["jwks_uri"], "https://elsewhere.example/jwks");
        // A longer port is another origin.
        assert_eq!(d["userinfo_endpoint"], "http://127.0.0.1:90001/me");
        assert_eq!(
            d["mtls_endpoint_aliases"]["token_endpoint"],
            "https://oauth.acme.test:8443/mtls/token"
        );
    }
}
