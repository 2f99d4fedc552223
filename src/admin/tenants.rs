//! The tenants API of the admin API (`/v1/tenants…`, operator scope): JSON in and out; the
//! work is `crate::runtime`'s. Not on the request path.

use http::StatusCode;
use serde_json::Value;

use super::{err, AdminState, Reply, Route};
use crate::config::AdminToken;
use crate::runtime::ApiError;

impl AdminState {
    pub(super) async fn tenants_api(&self, caller: &AdminToken, route: Route, body: &[u8]) -> Reply {
        let rt = &self.runtime;
        let res: Result<(StatusCode, Value), ApiError> = match &route {
            Route::ListTenants => Ok((StatusCode::OK, rt.list())),
            Route::ShowTenant { id } => rt.show(id).map(|v| (StatusCode::OK, v)),
            Route::CreateTenant => rt.create(body).await.map(|v| (StatusCode::CREATED, v)),
            Route::UpdateTenant { id } => rt.update(id, body).await.map(|v| (StatusCode::OK, v)),
            Route::DeleteTenant { id } => rt.delete(id).await.map(|v| (StatusCode::OK, v)),
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
