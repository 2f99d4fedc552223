//! The TLS handshake hook: runs once per TLS connection, right after the handshake and before
//! the first request. It resolves the SNI name to a tenant and leaves the answer in the TLS
//! digest, where `request_filter` reads it (`Proxy::route`).
//!
//! Pingora 0.9 with rustls does not put SNI in the digest by itself and never calls
//! `certificate_callback`; `handshake_complete_callback` is the one place SNI can be read.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;

use crate::tenants::TenantTable;

/// What the handshake leaves in the TLS digest for the HTTP layer.
#[derive(Debug)]
pub struct SniInfo {
    /// Tenant index for the SNI name, if any tenant serves it.
    pub tenant: Option<usize>,
    /// Whether the client sent SNI at all.
    pub had_sni: bool,
}

/// Captures SNI after the handshake and resolves it to a tenant once per connection.
pub struct HandshakeHook {
    pub tenants: Arc<TenantTable>,
}

#[async_trait]
impl TlsAccept for HandshakeHook {
    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = ssl.server_name();
        let info = SniInfo {
            tenant: name.and_then(|n| self.tenants.lookup(n)),
            had_sni: name.is_some(),
        };
        Some(Arc::new(info))
    }
}
