//! OAuth token swap on a tenant's OAuth hostnames (`tenants[].oauth`).
//!
//! Runs in `request_filter` for requests routed to a tenant's OAuth surface
//! (`tenants::Surface::OAuth`). Three endpoints are answered here, each with one exchange with
//! the authorization server made by this module (`exchange`: Pingora's HTTP/1 connector and
//! pool, the tenant's prepared peer):
//!
//! ```text
//! POST token_path ─ form (≤ 64 KiB, names unique) ─ grant_type=refresh_token: the Part A is
//!      │            opened (refresh record of this tenant, live grant) and the real refresh
//!      │            token put in the form; anything else → 400 invalid_grant, no upstream call
//!      ├ exchange ─ non-200: passed through untouched
//!      └ 200 JSON ─ access_token / refresh_token split into records of one grant (`swap`),
//!                   stored, then the same JSON with Part A values; store down → 503 and the
//!                   real tokens are dropped
//! POST revocation_path ─ token=<Part A> → real token forwarded (RFC 7009); record tombstoned
//!                        (a refresh token: its whole grant), whatever the server answers
//! GET /.well-known/{openid-configuration,oauth-authorization-server} (discovery: true)
//!      ─ endpoint URLs on the server's origin rewritten to the vanity origin (`issuer` kept)
//! ```
//!
//! Everything else on the OAuth hostnames (authorize page, login, consent, JWKS, userinfo…) is
//! proxied by Pingora like API traffic, without requiring Part A, with `Location` headers that
//! point at the authorization server rewritten to the vanity origin (`rewrite_location`).
//!
//! Never logged or recorded: codes, PKCE verifiers, client secrets, real tokens, Part A. The
//! session record of an endpoint call carries an `OAuthAudit` (ids, grant type, outcome).

mod discovery;
mod exchange;
pub(crate) mod form;
pub mod grants;
mod revoke;
mod swap;

use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession as Session;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::fragments::{FragmentStore, StoreError};
use crate::session_log::OAuthAudit;
use crate::tenants::{OAuthSurface, Tenant};
use crate::token::{Keyring, TokenId};

pub use discovery::rewrite_origin;

/// Which intercepted endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Revocation,
    Discovery,
}

/// The metadata documents rewritten with `discovery: true` (RFC 8414 §3, OpenID Connect
/// Discovery §4). RFC 8414 also allows a path suffix (`/.well-known/oauth-authorization-server/tenant`).
const DISCOVERY_PATHS: [&str; 2] = [
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
];

/// The endpoint `method` + `path` names on `s`, if Tessera answers it itself.
pub fn endpoint(s: &OAuthSurface, method: &Method, path: &str) -> Option<Endpoint> {
    if *method == Method::POST {
        if path == s.token_path {
            return Some(Endpoint::Token);
        }
        if s.revocation_path.as_deref() == Some(path) {
            return Some(Endpoint::Revocation);
        }
    }
    if s.discovery && *method == Method::GET {
        let hit = DISCOVERY_PATHS.iter().any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if hit {
            return Some(Endpoint::Discovery);
        }
    }
    None
}

/// `grant_type` as a bounded metric label. Idempotent: a label maps to itself.
pub fn grant_type_label(g: &str) -> &'static str {
    match g {
        "device_code" => "device_code",
        "token_exchange" => "token_exchange",
        "jwt_bearer" => "jwt_bearer",
        "saml2_bearer" => "saml2_bearer",
        "other" => "other",
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "client_credentials" => "client_credentials",
        "password" => "password",
        "urn:ietf:params:oauth:grant-type:device_code" => "device_code",
        "urn:ietf:params:oauth:grant-type:token-exchange" => "token_exchange",
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => "jwt_bearer",
        "urn:ietf:params:oauth:grant-type:saml2-bearer" => "saml2_bearer",
        "" | "none" => "none",
        _ => "other",
    }
}

/// The OAuth endpoints' shared state: the connector (and its pool) to authorization servers.
pub struct OAuth {
    connector: Connector,
}

impl Default for OAuth {
    fn default() -> Self {
        OAuth {
            connector: Connector::new(None),
        }
    }
}

/// Everything one intercepted call needs, prepared by the proxy.
pub struct Call<'a> {
    pub store: &'a dyn FragmentStore,
    pub keyring: &'a Keyring,
    pub tenant: &'a Tenant,
    pub surface: &'a OAuthSurface,
    /// The request for the authorization server, shaped like any proxied request (Host,
    /// `X-Forwarded-*`, tenant header, hop-by-hop headers removed).
    pub upstream: RequestHeader,
    /// `https://<the hostname the client used>`, for discovery rewriting.
    pub vanity_origin: String,
    pub request_id: Option<HeaderValue>,
    /// Whether the client's token is held by an anomaly `block` action.
    pub quarantined: &'a (dyn Fn(&TokenId) -> bool + Sync),
}

/// What the proxy records about an intercepted call.
pub struct Outcome {
    pub upstream_status: Option<u16>,
    pub token_id: Option<TokenId>,
    pub audit: Option<Box<OAuthAudit>>,
}

/// An answer to write to the client.
enum Answer {
    /// Tessera's own JSON answer (RFC 6749 §5.2 error form).
    Own {
        status: u16,
        body: Value,
        retry_after: bool,
    },
    /// The authorization server's answer, possibly rewritten.
    Upstream { header: Box<ResponseHeader>, body: Bytes },
}

impl Answer {
    /// An RFC 6749 §5.2 error.
    fn error(status: u16, code: &str, description: &str) -> Answer {
        Answer::Own {
            status,
            body: json!({"error": code, "error_description": description}),
            retry_after: status == 503,
        }
    }

    fn store_down() -> Answer {
        Answer::error(
            503,
            "temporarily_unavailable",
            "Tessera's token store is unavailable; the tokens were dropped, authorize again",
        )
    }

    fn upstream_failed(e: &pingora::Error) -> Answer {
        let timeout = matches!(
            e.etype(),
            pingora::ErrorType::ConnectTimedout | pingora::ErrorType::ReadTimedout | pingora::ErrorType::WriteTimedout
        );
        if timeout {
            Answer::error(
                504,
                "temporarily_unavailable",
                "the authorization server did not answer in time",
            )
        } else {
            Answer::error(502, "server_error", "the authorization server could not be reached")
        }
    }
}

/// One step's failure: the answer to send and the metric `result` label.
type Refused = (Answer, &'static str);

fn store_refused(tenant: &str, e: &StoreError) -> Refused {
    log::warn!("tenant={tenant} oauth: fragment store unavailable: {e}");
    (Answer::store_down(), "store_unavailable")
}

impl OAuth {
    /// Answer an intercepted endpoint. Writes the response; the caller only logs.
    pub async fn handle(&self, endpoint: Endpoint, call: Call<'_>, session: &mut Session) -> pingora::Result<Outcome> {
        let mut audit = OAuthAudit {
            endpoint: match endpoint {
                Endpoint::Token => "token",
                Endpoint::Revocation => "revocation",
                Endpoint::Discovery => "discovery",
            }
            .into(),
            ..Default::default()
        };
        let mut upstream_status = None;
        let (answer, result) = match endpoint {
            Endpoint::Token => self.token(&call, session, &mut audit, &mut upstream_status).await,
            Endpoint::Revocation => self.revocation(&call, session, &mut audit, &mut upstream_status).await,
            Endpoint::Discovery => self.discovery(&call, &mut upstream_status).await,
        };
        audit.outcome = result.into();
        if endpoint != Endpoint::Discovery {
            let grant_type = if endpoint == Endpoint::Revocation {
                "revocation"
            } else {
                grant_type_label(&audit.grant_type)
            };
            crate::metrics::global()
                .oauth_token_responses
                .with_label_values(&[call.tenant.metrics.label.as_str(), grant_type, result])
                .inc();
        }
        write(session, answer, call.request_id.as_ref()).await?;
        let token_id = audit.used.as_deref().and_then(TokenId::parse);
        Ok(Outcome {
            upstream_status,
            token_id,
            audit: (endpoint != Endpoint::Discovery).then(|| Box::new(audit)),
        })
    }
}

/// Read the client's form body (at most `form::MAX_FORM`), wiped on drop.
async fn read_form(session: &mut Session) -> Result<Zeroizing<Vec<u8>>, Refused> {
    let ct = session.req_header().headers.get(http::header::CONTENT_TYPE);
    if !form::is_form(ct.map(|v| v.as_bytes())) {
        return Err((
            Answer::error(
                400,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            ),
            "invalid_request",
        ));
    }
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > form::MAX_FORM {
                    return Err((
                        Answer::error(400, "invalid_request", "the form is larger than 64 KiB"),
                        "invalid_request",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err((
                    Answer::error(400, "invalid_request", "the request body could not be read"),
                    "invalid_request",
                ))
            }
        }
    }
}

fn parse_form(body: &[u8]) -> Result<form::Form, Refused> {
    form::Form::parse(body).map_err(|e| (Answer::error(400, "invalid_request", &e.to_string()), "invalid_request"))
}

/// Write `answer`. Token answers always carry `Cache-Control: no-store` (RFC 6749 §5.1).
async fn write(session: &mut Session, answer: Answer, request_id: Option<&HeaderValue>) -> pingora::Result<()> {
    let (mut header, body) = match answer {
        Answer::Own {
            status,
            body,
            retry_after,
        } => {
            let body = crate::proxy::json_bytes(&body);
            let mut h = ResponseHeader::build(status, Some(6))?;
            h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
            h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
            if retry_after {
                h.insert_header(http::header::RETRY_AFTER, "1")?;
            }
            (h, body)
        }
        Answer::Upstream { header, body } => (exchange::client_header(&header, &body)?, body),
    };
    if header.headers.get(http::header::CACHE_CONTROL).is_none() {
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    }
    if let Some(id) = request_id {
        header.insert_header("x-request-id", id.clone())?;
    }
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

/// `Location` of a proxied OAuth-surface answer: an absolute URL on the authorization
/// server's origin is moved to the vanity origin, so the browser stays on Tessera (cookies
/// included). Other locations are left alone.
pub fn rewrite_location(resp: &mut ResponseHeader, s: &OAuthSurface, vanity_origin: &str) -> pingora::Result<()> {
    let Some(loc) = resp.headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if let Some(new) = rewrite_origin(loc, &s.upstream_origins, vanity_origin) {
        resp.insert_header(http::header::LOCATION, new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_type_labels_are_bounded_and_idempotent() {
        for raw in [
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "",
            "tsr_anything-a-client-sends",
        ] {
            let l = grant_type_label(raw);
            assert_eq!(grant_type_label(l), l, "{raw}");
        }
        assert_eq!(
            grant_type_label("urn:ietf:params:oauth:grant-type:device_code"),
            "device_code"
        );
        assert_eq!(grant_type_label("x".repeat(5000).as_str()), "other");
    }
}
