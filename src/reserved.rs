//! Header names Tessera owns: the one list config validation, the admin API (mint/rotate) and
//! the proxy consult before a configured or stored header name may be sent upstream.
//!
//! A leaf module. On the request path it runs once per credential (`reserved` is a `match` on
//! the lower-case name, no allocation).
//!
//! Why: the credential header of a token record and a tenant's `headers` are chosen by
//! people (a tenant-scoped admin, an operator). If they could name `X-Tenant-Id`,
//! `X-Forwarded-For`, `Host` or a framing header, they could overwrite what Tessera asserts
//! to the upstream (another tenant's id) or desynchronise the upstream's framing.

use http::HeaderName;

/// Why a header name cannot be chosen by config or a token record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Hop-by-hop (RFC 9110 §7.6.1) or message framing: Pingora and Tessera manage these.
    Framing,
    /// Proxy credentials and proxy control headers.
    Proxy,
    /// Client address and forwarding information Tessera sets or strips.
    Forwarding,
    /// `X-Request-Id`: Tessera's correlation id.
    RequestId,
}

impl Reserved {
    /// A phrase for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            Reserved::Framing => "a hop-by-hop or framing header",
            Reserved::Proxy => "a proxy header",
            Reserved::Forwarding => "a forwarding header Tessera sets or strips",
            Reserved::RequestId => "Tessera's request id header",
        }
    }
}

/// Is `name` (a valid, hence lower-case, header name) one Tessera owns on every request?
/// `Authorization` is not in this list: it is the default credential header.
pub fn reserved(name: &HeaderName) -> Option<Reserved> {
    let n = name.as_str();
    let r = match n {
        "host" | "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
        | "content-length" | "expect" => Reserved::Framing,
        "proxy-authorization" | "proxy-authenticate" | "proxy-connection" => Reserved::Proxy,
        "forwarded" | "x-real-ip" | "via" => Reserved::Forwarding,
        "x-request-id" => Reserved::RequestId,
        _ if n.starts_with("x-forwarded-") => Reserved::Forwarding,
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names() {
        for n in [
            "Host",
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Content-Length",
            "Expect",
            "Proxy-Authorization",
            "Forwarded",
            "X-Real-IP",
            "X-Forwarded-For",
            "X-Forwarded-Anything",
            "X-Request-Id",
        ] {
            let h = HeaderName::from_bytes(n.as_bytes()).unwrap();
            assert!(reserved(&h).is_some(), "{n} not reserved");
        }
        for n in ["Authorization", "X-Api-Key", "X-Tenant-Id", "Cookie"] {
            let h = HeaderName::from_bytes(n.as_bytes()).unwrap();
            assert!(reserved(&h).is_none(), "{n} reserved");
        }
    }
}
