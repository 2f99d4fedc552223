//! The tenants API of the admin API (`/v1/tenants…`, operator scope): JSON in and out; the
//! work is `crate::runtime`'s. Not on the request path.

use http::StatusCode;
use serde_json::Value;

use super::{err, AdminState, Reply, Route};
use crate::config::AdminToken;
use crate::runtime::ApiError;

/// `?purge=true|false` of `DELETE /v1/tenants/{id}` (absent: false).
fn purge_param(query: &str) -> Result<bool, Reply> {
    let mut purge = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match (&*k, &*v) {
            ("purge", "true") => purge = true,
            ("purge", "false") => purge = false,
            ("purge", _) => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "purge must be true or false",
                ))
            }
            _ => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "unknown query parameter; DELETE /v1/tenants/{id} takes only purge=true|false",
                ))
            }
        }
    }
    Ok(purge)
}

impl AdminState {
    pub(super) async fn tenants_api(&self, caller: &AdminToken, route: Route, body: &[u8], query: &str) -> Reply {
        let rt = &self.runtime;
        let res: Result<(StatusCode, Value), ApiError> = match &route {
            Route::ListTenants => Ok((StatusCode::OK, rt.list())),
            Route::ShowTenant { id } => rt.show(id).map(|v| (StatusCode::OK, v)),
            Route::CreateTenant => rt.create(body).await.map(|v| (StatusCode::CREATED, v)),
            Route::UpdateTenant { id } => rt.update(id, body).await.map(|v| (StatusCode::OK, v)),
            Route::DeleteTenant { id } => {
                let purge = match purge_param(query) {
                    Ok(p) => p,
                    Err(r) => return r,
                };
                if purge && !crate::config::valid_tenant_id(id) {
                    // Checked before the store sees it: the id becomes a key pattern there.
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "not a tenant id (lower-case letters, digits, '-', '_'; at most 64)",
                    );
                }
                // A purge of a tenant already removed (a retry, or records left behind by an
                // earlier plain DELETE) purges what is left; a live YAML tenant is never
                // purged (`delete` refuses it with 409 first).
                let removed = match rt.delete(id).await {
                    Err(ApiError(404, _)) if purge => Ok(serde_json::json!({"id": id, "deleted": false})),
                    other => other,
                };
                match removed {
                    Ok(mut v) if purge => match self.store.purge(id).await {
                        Ok(n) => {
                            log::info!("admin: {} purged tenant {id}: {n} store key(s) deleted", caller.name);
                            v["purged_keys"] = n.into();
                            Ok((StatusCode::OK, v))
                        }
                        Err(e) => {
                            log::error!("admin: purge of tenant {id} failed: {e}");
                            return err(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "store_unavailable",
                                "the tenant is removed but its records were not all purged; run DELETE …?purge=true again",
                            );
                        }
                    },
                    other => other.map(|v| (StatusCode::OK, v)),
                }
            }
            Route::AddHostname { id } => match serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["hostname"].as_str().map(str::to_string))
            {
                Some(h) => rt.hostname(id, &h, true).await.map(|v| (StatusCode::OK, v)),
                None => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "body must be {\"hostname\": \"name.example\"}",
                    )
                }
            },
            Route::RemoveHostname { id, hostname } => {
                rt.hostname(id, hostname, false).await.map(|v| (StatusCode::OK, v))
            }
            _ => return err(StatusCode::NOT_FOUND, "not_found", "not a tenants API route"),
        };
        match res {
            Ok((status, v)) => {
                if status != StatusCode::OK || !matches!(route, Route::ListTenants | Route::ShowTenant { .. }) {
                    log::info!("admin: {} {route:?} done", caller.name);
                }
                Reply(status, v)
            }
            Err(ApiError(status, v)) => Reply(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                v,
            ),
        }
    }
}
