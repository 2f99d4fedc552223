//! The TLS handshake hook: runs once per TLS connection, right after the handshake and before
//! the first request. It resolves the SNI name to a tenant and leaves the answer in the TLS
//! digest, where `request_filter` reads it (`Proxy::route`).
//!
//! Pingora 0.9 with rustls does not put SNI in the digest by itself and never calls
//! `certificate_callback`; `handshake_complete_callback` is the one place SNI can be read.
//! The tenant is a stable index (`tenants` module doc): `request_filter` looks it up in the
//! request's own snapshot, so a tenant removed after the handshake is refused on the next
//! request of the same connection.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;

use crate::tenants::Tenants;

/// What the handshake leaves in the TLS digest for the HTTP layer.
#[derive(Debug)]
pub struct SniInfo {
    /// Tenant index for the SNI name, if any tenant serves it.
    pub tenant: Option<usize>,
    /// Whether the client sent SNI at all.
    pub had_sni: bool,
    /// The SNI name when no tenant served it at handshake time (a handshake completed with
    /// `tls.default_cert`), so a tenant added since is found on the connection's next request.
    /// Allocated only in that case.
    pub unknown_name: Option<Box<str>>,
}

/// Captures SNI after the handshake and resolves it to a tenant once per connection.
pub struct HandshakeHook {
    pub tenants: Arc<Tenants>,
}

#[async_trait]
impl TlsAccept for HandshakeHook {
    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = ssl.server_name();
        let tenant = name.and_then(|n| self.tenants.load().lookup(n));
        let info = SniInfo {
            tenant,
            had_sni: name.is_some(),
            unknown_name: name.filter(|_| tenant.is_none()).map(Box::from),
        };
        Some(Arc::new(info))
    }
}
