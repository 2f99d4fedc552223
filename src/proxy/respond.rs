//! Responses Tessera writes itself. Few classes, generic bodies: the precise reason goes to
//! logs and counters (`label`), never to the client. Each status has exactly one body, so a
//! body never contradicts its status.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;
use serde_json::json;

use crate::token::VerifyResult;

/// The `ErrorType::Custom` name of the error raised when a request outlives
/// `upstream.max_request_duration`.
pub const DURATION_EXCEEDED: &str = "max_request_duration";

/// What was wrong with a request Tessera refused as malformed (`400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// No Host / `:authority`.
    NoHost,
    /// `Connection` lists a header Tessera manages (RFC 9110 §7.6.1 would make it hop-by-hop).
    ConnectionListsManaged,
    /// `Content-Length` values that disagree or are not numbers.
    ContentLength,
    /// The request could not be read (reported by Pingora).
    Unreadable,
}

/// Why Tessera answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed in a way Tessera checks.
    BadRequest(BadRequest),
    /// No tenant serves this SNI name / Host.
    NoTenant,
    /// SNI and Host name different tenants.
    Misdirected,
    /// Part A missing or refused; the result says why.
    Token(VerifyResult),
    /// The fragment store cannot answer: fail closed.
    StoreUnavailable,
    /// The upstream could not be reached or broke the connection.
    UpstreamError,
    /// The upstream timed out.
    UpstreamTimeout,
    /// The request outlived `upstream.max_request_duration` and was cut.
    DurationExceeded,
    /// Tessera itself failed.
    Internal,
    /// Another status surfaced by Pingora (e.g. `405` for CONNECT).
    Other(u16),
}

impl Refusal {
    /// Label for logs and session records.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadRequest(BadRequest::NoHost) => "no_host",
            Refusal::BadRequest(BadRequest::ConnectionListsManaged) => "connection_lists_managed_header",
            Refusal::BadRequest(BadRequest::ContentLength) => "bad_content_length",
            Refusal::BadRequest(BadRequest::Unreadable) => "bad_request",
            Refusal::NoTenant => "no_tenant",
            Refusal::Misdirected => "misdirected",
            Refusal::Token(v) => v.label(),
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::UpstreamError => "upstream_error",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::DurationExceeded => "max_request_duration",
            Refusal::Internal => "internal_error",
            Refusal::Other(_) => "error",
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

    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::NoTenant => 404,
            Refusal::Misdirected => 421,
            Refusal::Token(_) => 401,
            Refusal::StoreUnavailable => 503,
            Refusal::UpstreamError => 502,
            Refusal::UpstreamTimeout | Refusal::DurationExceeded => 504,
            Refusal::Internal => 500,
            Refusal::Other(c) => *c,
        }
    }

    /// The refusal for a fatal proxying error; `None` = the client is gone, send nothing.
    pub fn for_error(e: &Error) -> Option<Refusal> {
        let r = match e.etype() {
            ErrorType::Custom(DURATION_EXCEEDED) => Refusal::DurationExceeded,
            HTTPStatus(code) => Refusal::from_status(*code),
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                if e.esource() == &ErrorSource::Downstream {
                    return None;
                }
                Refusal::UpstreamTimeout
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Refusal::UpstreamError,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => return None,
                    _ => Refusal::BadRequest(BadRequest::Unreadable),
                },
                ErrorSource::Internal | ErrorSource::Unset => Refusal::Internal,
            },
        };
        Some(r)
    }

    fn from_status(code: u16) -> Refusal {
        match code {
            400 => Refusal::BadRequest(BadRequest::Unreadable),
            500 => Refusal::Internal,
            502 => Refusal::UpstreamError,
            504 => Refusal::UpstreamTimeout,
            c => Refusal::Other(c),
        }
    }

    fn body(&self) -> serde_json::Value {
        let (error, message) = match self {
            Refusal::BadRequest(BadRequest::NoHost) => ("bad_request", "the request has no Host"),
            Refusal::BadRequest(BadRequest::ConnectionListsManaged) => (
                "bad_request",
                "the Connection header lists a header Tessera manages (Authorization, Host, Content-Length, X-Forwarded-*, X-Request-Id or a tenant header); remove it from Connection",
            ),
            Refusal::BadRequest(BadRequest::ContentLength) => (
                "bad_request",
                "Content-Length must be one non-negative number (repeated values must agree)",
            ),
            Refusal::BadRequest(BadRequest::Unreadable) => ("bad_request", "the request could not be read"),
            Refusal::NoTenant => ("no_tenant", "no tenant is configured for this hostname"),
            Refusal::Misdirected => (
                "misdirected_request",
                "the Host does not match the TLS server name; open a new connection for this host",
            ),
            Refusal::Token(_) => (
                "invalid_token",
                "the access token is missing, malformed, unknown, revoked or expired",
            ),
            Refusal::StoreUnavailable => (
                "temporarily_unavailable",
                "credentials cannot be verified right now; retry later",
            ),
            Refusal::UpstreamError => ("bad_gateway", "the upstream API could not be reached"),
            Refusal::UpstreamTimeout => ("gateway_timeout", "the upstream API did not answer in time"),
            Refusal::DurationExceeded => (
                "request_too_long",
                "the request exceeded the maximum duration Tessera allows (upstream.max_request_duration) and was cut",
            ),
            Refusal::Internal => ("internal_error", "Tessera failed to handle the request"),
            Refusal::Other(_) => ("request_failed", "the request could not be proxied"),
        };
        json!({"error": error, "message": message})
    }

    /// Whether the connection must not be reused after this answer.
    fn closes(&self) -> bool {
        !matches!(self, Refusal::NoTenant | Refusal::Token(_) | Refusal::StoreUnavailable)
    }
}

/// Write the response for `r`. Keep-alive survives a 401, 404 or 503 (the client may retry on
/// the same connection) but nothing else (a 421 must use another connection, RFC 9110; after
/// a malformed request or an upstream failure the connection state is not trusted).
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
    if r.closes() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

/// The answer to an ACME HTTP-01 request: the key authorization, or `404`.
pub async fn acme_http01(session: &mut Session, key_authorization: Option<String>) -> Result<()> {
    let (status, body) = match key_authorization {
        Some(k) => (200, Bytes::from(k)),
        None => (404, Bytes::from_static(b"no such challenge\n")),
    };
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal's body names an error that fits its status class.
    #[test]
    fn bodies_match_statuses() {
        let all = [
            Refusal::BadRequest(BadRequest::NoHost),
            Refusal::BadRequest(BadRequest::ConnectionListsManaged),
            Refusal::BadRequest(BadRequest::ContentLength),
            Refusal::BadRequest(BadRequest::Unreadable),
            Refusal::NoTenant,
            Refusal::Misdirected,
            Refusal::Token(VerifyResult::Revoked),
            Refusal::StoreUnavailable,
            Refusal::UpstreamError,
            Refusal::UpstreamTimeout,
            Refusal::DurationExceeded,
            Refusal::Internal,
            Refusal::Other(405),
        ];
        for r in all {
            let error = r.body()["error"].as_str().unwrap().to_string();
            let expected: &[&str] = match r.status() {
                400 => &["bad_request"],
                401 => &["invalid_token"],
                404 => &["no_tenant"],
                421 => &["misdirected_request"],
                500 => &["internal_error"],
                502 => &["bad_gateway"],
                503 => &["temporarily_unavailable"],
                504 => &["gateway_timeout", "request_too_long"],
                _ => &["request_failed"],
            };
            assert!(expected.contains(&error.as_str()), "{r:?}: {} with {error}", r.status());
        }
    }

    #[test]
    fn errors_map_to_refusals() {
        let up = Error::new_up(ConnectRefused);
        assert_eq!(Refusal::for_error(&up), Some(Refusal::UpstreamError));
        let t = Error::new_up(ReadTimedout);
        assert_eq!(Refusal::for_error(&t), Some(Refusal::UpstreamTimeout));
        let gone = Error::new_down(ConnectionClosed);
        assert_eq!(Refusal::for_error(&gone), None);
        let bad = Error::new_down(InvalidHTTPHeader);
        assert_eq!(
            Refusal::for_error(&bad),
            Some(Refusal::BadRequest(BadRequest::Unreadable))
        );
        let cut = Error::explain(ErrorType::Custom(DURATION_EXCEEDED), "x");
        assert_eq!(Refusal::for_error(&cut), Some(Refusal::DurationExceeded));
        let internal = Error::new(HTTPStatus(500));
        assert_eq!(Refusal::for_error(&internal).map(|r| r.status()), Some(500));
    }
}
