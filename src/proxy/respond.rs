//! Responses Tessera writes itself. Few classes, generic bodies: the precise reason goes to
//! logs and counters (`label`), never to the client.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::token::VerifyResult;

/// Why Tessera answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No Host / `:authority`.
    NoHost,
    /// No tenant serves this SNI name / Host.
    NoTenant,
    /// SNI and Host name different tenants.
    Misdirected,
    /// Part A missing or refused; the result says why.
    Token(VerifyResult),
    /// The fragment store cannot answer: fail closed.
    StoreUnavailable,
    /// The upstream failed (502) or sent an error Pingora surfaced.
    Upstream(u16),
    /// The upstream timed out.
    UpstreamTimeout,
}

impl Refusal {
    /// Label for logs and session records.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoHost => "no_host",
            Refusal::NoTenant => "no_tenant",
            Refusal::Misdirected => "misdirected",
            Refusal::Token(v) => v.label(),
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::Upstream(_) => "upstream_error",
            Refusal::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The verification outcome a refusal of a checked request is counted as.
    pub fn verify_result(&self) -> VerifyResult {
        match self {
            Refusal::Token(v) => *v,
            Refusal::StoreUnavailable => VerifyResult::StoreUnavailable,
            _ => VerifyResult::Malformed,
        }
    }

    fn status(&self) -> u16 {
        match self {
            Refusal::NoHost => 400,
            Refusal::NoTenant => 404,
            Refusal::Misdirected => 421,
            Refusal::Token(_) => 401,
            Refusal::StoreUnavailable => 503,
            Refusal::Upstream(c) => *c,
            Refusal::UpstreamTimeout => 504,
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Refusal::NoHost => {
                json!({"error": "bad_request", "message": "the request has no Host"})
            }
            Refusal::NoTenant => {
                json!({"error": "no_tenant", "message": "no tenant is configured for this hostname"})
            }
            Refusal::Misdirected => {
                json!({"error": "misdirected_request", "message": "the Host does not match the TLS server name; open a new connection for this host"})
            }
            Refusal::Token(_) => {
                json!({"error": "invalid_token", "message": "the access token is missing, malformed, unknown, revoked or expired"})
            }
            Refusal::StoreUnavailable => {
                json!({"error": "temporarily_unavailable", "message": "credentials cannot be verified right now; retry later"})
            }
            Refusal::Upstream(_) => {
                json!({"error": "bad_gateway", "message": "the upstream API could not be reached"})
            }
            Refusal::UpstreamTimeout => {
                json!({"error": "gateway_timeout", "message": "the upstream API did not answer in time"})
            }
        }
    }
}

/// Write the response for `r`. Keep-alive survives a 401 (the client may retry with a good
/// token) but not a 421 (RFC 9110: the client must use another connection).
pub async fn refuse(session: &mut Session, r: Refusal, request_id: Option<&HeaderValue>) -> Result<()> {
    let body: Bytes = super::json_bytes(&r.body());
    let mut resp = ResponseHeader::build(r.status(), Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    match r {
        Refusal::Token(VerifyResult::Missing) => {
            resp.insert_header(http::header::WWW_AUTHENTICATE, "Bearer realm=\"tessera\"")?;
        }
        Refusal::Token(_) => {
            resp.insert_header(
                http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"tessera\", error=\"invalid_token\"",
            )?;
        }
        Refusal::StoreUnavailable => {
            resp.insert_header(http::header::RETRY_AFTER, "1")?;
        }
        _ => {}
    }
    if let Some(id) = request_id {
        resp.insert_header("x-request-id", id.clone())?;
    }
    if matches!(
        r,
        Refusal::Misdirected | Refusal::NoHost | Refusal::Upstream(_) | Refusal::UpstreamTimeout
    ) {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Status for a fatal proxy error; 0 = the client is gone, send nothing.
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout => {
            if e.esource() == &ErrorSource::Downstream {
                0
            } else {
                504
            }
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}
