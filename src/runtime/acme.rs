//! What the ACME service (`crate::acme`, a background service) needs from the runtime: the
//! API tenants with `tls: {acme: true}` and their certificates' expiry, and a way to install
//! a new certificate. Never on the request path.
//!
//! A certificate is installed by writing it into the tenant's stored definition (`cert_pem`,
//! `key_sealed`), a compare-and-set like a `PATCH`: every instance picks it up through the
//! tenant sync, and a definition changed meanwhile is not overwritten.

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::{ApiError, Runtime};

/// An ACME tenant as the ACME service sees it.
#[derive(Debug, Clone)]
pub struct AcmeWant {
    pub id: String,
    /// Lower case, as claimed in the store.
    pub hostnames: Vec<String>,
    /// Earliest notAfter of the installed chain; `None`: no certificate yet.
    pub not_after: Option<SystemTime>,
}

impl Runtime {
    /// Every API tenant with `tls: {acme: true}`, as in force on this instance.
    pub fn acme_tenants(&self) -> Vec<AcmeWant> {
        let st = self.state();
        st.api
            .values()
            .filter(|a| a.def.is_acme())
            .map(|a| AcmeWant {
                id: a.def.id.clone(),
                hostnames: a.def.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
                not_after: a.def.tls.cert_pem.as_deref().and_then(crate::acme::not_after),
            })
            .collect()
    }

    /// Whether tenant `id` is still an ACME tenant for exactly `hostnames`, after a fresh sync.
    pub async fn acme_still_wanted(self: &Arc<Self>, want: &AcmeWant) -> Result<Option<AcmeWant>, String> {
        self.sync().await.map_err(|e| e.to_string())?;
        Ok(self
            .acme_tenants()
            .into_iter()
            .find(|w| w.id == want.id && w.hostnames == want.hostnames))
    }

    /// Store a certificate obtained for tenant `id` (key sealed like an API key) and apply it.
    /// Refused if the tenant is gone, is no longer an ACME tenant, or its hostnames changed.
    pub async fn acme_install(
        self: &Arc<Self>,
        want: &AcmeWant,
        cert_pem: String,
        key_pem: Zeroizing<String>,
    ) -> Result<(), String> {
        let _w = self.writes.lock().await;
        self.sync().await.map_err(|e| e.to_string())?;
        let (mut def, base) = {
            let st = self.state();
            match st.api.get(&want.id) {
                Some(a) if a.def.is_acme() => (a.def.clone(), a.version),
                _ => return Err(format!("tenant {:?} is no longer an ACME tenant", want.id)),
            }
        };
        let now: Vec<String> = def.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        if now != want.hostnames {
            return Err(format!("tenant {:?} changed its hostnames while ordering", want.id));
        }
        def.tls.cert_pem = Some(cert_pem);
        def.tls.key_pem = Some(key_pem);
        def.tls.key_sealed = None;
        self.write(def, Some(base))
            .await
            .map(|_| ())
            .map_err(|ApiError(status, body)| format!("{status} {}", body["message"].as_str().unwrap_or("")))
    }
}
