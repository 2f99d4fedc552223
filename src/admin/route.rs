//! Admin API routes, parsed from method + path before any work: testable without a socket.

use http::Method;

use crate::token::TokenId;

/// One admin API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    MintToken {
        tenant: String,
    },
    ListTokens {
        tenant: String,
    },
    RevokeToken {
        tenant: String,
        id: TokenId,
    },
    RotateToken {
        tenant: String,
        id: TokenId,
    },
    UnblockToken {
        tenant: String,
        id: TokenId,
    },
    Sessions {
        tenant: String,
    },
    ListGrants {
        tenant: String,
    },
    ShowGrant {
        tenant: String,
        id: TokenId,
    },
    RevokeGrant {
        tenant: String,
        id: TokenId,
    },
    Keys,
    RotateKeys,
    /// `GET /v1/audit`: operators see every entry, a tenant scope its tenant's.
    Audit,
    /// The tenants API (operator only; `crate::runtime`).
    ListTenants,
    CreateTenant,
    ShowTenant {
        id: String,
    },
    UpdateTenant {
        id: String,
    },
    DeleteTenant {
        id: String,
    },
    AddHostname {
        id: String,
    },
    RemoveHostname {
        id: String,
        hostname: String,
    },
}

/// Why a method + path is not a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such route.
    NotFound,
    /// A token id segment is not 32 hex characters.
    BadTokenId(String),
}

impl Route {
    /// Parse a request line. Tenant ids are taken as given; the caller checks they exist.
    pub fn parse(method: &Method, path: &str) -> Result<Route, RouteError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let id = |s: &str| TokenId::parse(s).ok_or_else(|| RouteError::BadTokenId(s.to_string()));
        let t = |s: &&str| s.to_string();
        let r = match (method.as_str(), segs.as_slice()) {
            ("GET", ["healthz"]) => Route::Healthz,
            ("GET", ["readyz"]) => Route::Readyz,
            ("POST", ["v1", "tenants", tn, "tokens"]) => Route::MintToken { tenant: t(tn) },
            ("GET", ["v1", "tenants", tn, "tokens"]) => Route::ListTokens { tenant: t(tn) },
            ("DELETE", ["v1", "tenants", tn, "tokens", i]) => Route::RevokeToken {
                tenant: t(tn),
                id: id(i)?,
            },
            ("POST", ["v1", "tenants", tn, "tokens", i, "rotate"]) => Route::RotateToken {
                tenant: t(tn),
                id: id(i)?,
            },
            ("POST", ["v1", "tenants", tn, "tokens", i, "unblock"]) => Route::UnblockToken {
                tenant: t(tn),
                id: id(i)?,
            },
            ("GET", ["v1", "tenants", tn, "sessions"]) => Route::Sessions { tenant: t(tn) },
            ("GET", ["v1", "tenants", tn, "grants"]) => Route::ListGrants { tenant: t(tn) },
            ("GET", ["v1", "tenants", tn, "grants", g]) => Route::ShowGrant {
                tenant: t(tn),
                id: id(g)?,
            },
            ("DELETE", ["v1", "tenants", tn, "grants", g]) => Route::RevokeGrant {
                tenant: t(tn),
                id: id(g)?,
            },
            ("GET", ["v1", "tenants"]) => Route::ListTenants,
            ("POST", ["v1", "tenants"]) => Route::CreateTenant,
            ("GET", ["v1", "tenants", tn]) => Route::ShowTenant { id: t(tn) },
            ("PATCH", ["v1", "tenants", tn]) => Route::UpdateTenant { id: t(tn) },
            ("DELETE", ["v1", "tenants", tn]) => Route::DeleteTenant { id: t(tn) },
            ("POST", ["v1", "tenants", tn, "hostnames"]) => Route::AddHostname { id: t(tn) },
            ("DELETE", ["v1", "tenants", tn, "hostnames", h]) => Route::RemoveHostname {
                id: t(tn),
                hostname: t(h),
            },
            ("GET", ["v1", "keys"]) => Route::Keys,
            ("POST", ["v1", "keys", "rotate"]) => Route::RotateKeys,
            ("GET", ["v1", "audit"]) => Route::Audit,
            _ => return Err(RouteError::NotFound),
        };
        Ok(r)
    }

    /// Whether anyone may call it (no admin token needed).
    pub fn is_public(&self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz)
    }

    /// The tenant the call acts on, if any (checked against the caller's scope).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Route::MintToken { tenant }
            | Route::ListTokens { tenant }
            | Route::RevokeToken { tenant, .. }
            | Route::RotateToken { tenant, .. }
            | Route::UnblockToken { tenant, .. }
            | Route::Sessions { tenant }
            | Route::ListGrants { tenant }
            | Route::ShowGrant { tenant, .. }
            | Route::RevokeGrant { tenant, .. } => Some(tenant),
            // The tenants API is operator-only: no tenant-scoped caller reaches it.
            Route::Healthz
            | Route::Readyz
            | Route::Keys
            | Route::RotateKeys
            | Route::Audit
            | Route::ListTenants
            | Route::CreateTenant
            | Route::ShowTenant { .. }
            | Route::UpdateTenant { .. }
            | Route::DeleteTenant { .. }
            | Route::AddHostname { .. }
            | Route::RemoveHostname { .. } => None,
        }
    }

    /// The audit log's name for a state-changing call, `None` for reads.
    pub fn audit_action(&self) -> Option<&'static str> {
        match self {
            Route::MintToken { .. } => Some("mint"),
            Route::RevokeToken { .. } => Some("revoke"),
            Route::RotateToken { .. } => Some("rotate"),
            Route::UnblockToken { .. } => Some("unblock"),
            Route::RevokeGrant { .. } => Some("revoke_grant"),
            Route::RotateKeys => Some("rotate_keys"),
            Route::CreateTenant => Some("create_tenant"),
            Route::UpdateTenant { .. } => Some("update_tenant"),
            Route::DeleteTenant { .. } => Some("delete_tenant"),
            Route::AddHostname { .. } => Some("add_hostname"),
            Route::RemoveHostname { .. } => Some("remove_hostname"),
            _ => None,
        }
    }

    /// The token (or grant) the call acts on, if any.
    pub fn token_id(&self) -> Option<&TokenId> {
        match self {
            Route::RevokeToken { id, .. }
            | Route::RotateToken { id, .. }
            | Route::UnblockToken { id, .. }
            | Route::RevokeGrant { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the call reads a JSON body.
    pub fn has_body(&self) -> bool {
        matches!(
            self,
            Route::MintToken { .. }
                | Route::RotateToken { .. }
                | Route::CreateTenant
                | Route::UpdateTenant { .. }
                | Route::AddHostname { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = "00112233445566778899aabbccddeeff";
        let tid = TokenId::parse(id).unwrap();
        let cases = [
            (Method::GET, "/healthz".to_string(), Ok(Route::Healthz)),
            (
                Method::POST,
                "/v1/tenants/acme/tokens".into(),
                Ok(Route::MintToken { tenant: "acme".into() }),
            ),
            (
                Method::DELETE,
                format!("/v1/tenants/acme/tokens/{id}"),
                Ok(Route::RevokeToken {
                    tenant: "acme".into(),
                    id: tid,
                }),
            ),
            (
                Method::POST,
                format!("/v1/tenants/acme/tokens/{id}/rotate/"),
                Ok(Route::RotateToken {
                    tenant: "acme".into(),
                    id: tid,
                }),
            ),
            (
                Method::DELETE,
                "/v1/tenants/acme/tokens/xyz".into(),
                Err(RouteError::BadTokenId("xyz".into())),
            ),
            (
                Method::GET,
                "/v1/tenants/acme/tokens/x/y/z".into(),
                Err(RouteError::NotFound),
            ),
            (Method::PUT, "/v1/keys".into(), Err(RouteError::NotFound)),
            (Method::POST, "/v1/keys/rotate".into(), Ok(Route::RotateKeys)),
        ];
        for (m, p, want) in cases {
            assert_eq!(Route::parse(&m, &p), want, "{m} {p}");
        }
        assert_eq!(
            Route::parse(&Method::DELETE, &format!("/v1/tenants/acme/grants/{id}")),
            Ok(Route::RevokeGrant {
                tenant: "acme".into(),
                id: tid
            })
        );
        let r = Route::parse(&Method::GET, "/v1/tenants/globex/sessions").unwrap();
        assert_eq!(r.tenant(), Some("globex"));
        assert!(!r.is_public() && !r.has_body());
        assert!(Route::Readyz.is_public());
        assert_eq!(Route::parse(&Method::GET, "/v1/audit"), Ok(Route::Audit));
        assert_eq!(Route::Audit.audit_action(), None);
        assert_eq!(Route::RotateKeys.audit_action(), Some("rotate_keys"));
        let r = Route::parse(&Method::DELETE, "/v1/tenants/acme/hostnames/a.example").unwrap();
        assert_eq!(
            r,
            Route::RemoveHostname {
                id: "acme".into(),
                hostname: "a.example".into()
            }
        );
        assert_eq!(r.tenant(), None, "operator only");
        assert!(Route::parse(&Method::PATCH, "/v1/tenants/acme").unwrap().has_body());
    }
}
