//! The tenants API's operations (`/v1/tenants…` on `listen.admin`, operator scope; routed by
//! `admin`): validate with the YAML's checks, check collisions, seal the key, write to the
//! store, apply here at once. Admin path only.

use std::sync::Arc;

use serde_json::{json, Value};

use super::api::{self, TenantDef};
use super::store::Written;
use super::{conflicts, Runtime};
use crate::config::Problem;
use crate::fragments::StoreError;

/// Why a tenants API call failed: the status and JSON body to answer with.
#[derive(Debug)]
pub struct ApiError(pub u16, pub Value);

fn api_err(status: u16, code: &str, message: impl Into<String>) -> ApiError {
    ApiError(status, json!({"error": code, "message": message.into()}))
}

fn store_unavailable(e: StoreError) -> ApiError {
    log::error!("tenants API: store error: {e}");
    api_err(503, "store_unavailable", "the store did not answer; retry")
}

/// `422` with the problems (key, message naming the value and the fix), as check-config
/// reports them.
fn invalid(problems: &[Problem]) -> ApiError {
    ApiError(
        422,
        json!({"error": "invalid", "message": "the tenant does not validate; fix the keys listed", "problems": api::problems_json(problems)}),
    )
}

fn invalid_one(key: &str, message: impl Into<String>) -> ApiError {
    invalid(&[Problem {
        key: key.into(),
        message: message.into(),
    }])
}

impl Runtime {
    /// `GET /v1/tenants`: every tenant, YAML and API.
    pub fn list(&self) -> Value {
        let st = self.state();
        let yaml = st.yaml.tenants.iter().map(|t| {
            json!({"id": &*t.id, "source": "yaml", "hostnames": t.hostnames.iter().map(ToString::to_string).collect::<Vec<_>>()})
        });
        let api = st
            .api
            .values()
            .map(|a| json!({"id": a.def.id, "source": "api", "version": a.version, "hostnames": a.def.hostnames}));
        json!({"tenants": yaml.chain(api).collect::<Vec<_>>()})
    }

    /// `GET /v1/tenants/{id}`.
    pub fn show(&self, id: &str) -> Result<Value, ApiError> {
        let st = self.state();
        if let Some(a) = st.api.get(id) {
            return Ok(a.def.view(a.version));
        }
        match st.yaml.tenants.iter().find(|t| &*t.id == id) {
            Some(t) => Ok(json!({
                "id": &*t.id,
                "source": "yaml",
                "hostnames": t.all_hostnames().map(ToString::to_string).collect::<Vec<_>>(),
                "upstream": t.upstream.url,
            })),
            None => Err(api_err(404, "unknown_tenant", format!("no tenant {id:?}"))),
        }
    }

    /// Validate `def` against the YAML and the other API tenants; seal its key.
    fn check(&self, def: &mut TenantDef) -> Result<(), ApiError> {
        let keyring = self.keyring.load_full();
        let st = self.state();
        if def.is_acme() && st.yaml.acme.is_none() {
            return Err(invalid_one(
                "tenant.tls.acme",
                "this Tessera has no acme: section; configure acme (see the README) or give tls.cert_pem and tls.key_pem",
            ));
        }
        let conf = def.validate(&keyring, &st.yaml.anomaly).map_err(|p| invalid(&p))?;
        let yaml = st.yaml.tenants.iter().map(|t| (t, "YAML"));
        let others = st.api.values().filter(|a| a.def.id != def.id).map(|a| (&a.conf, "API"));
        let p = conflicts(&conf, yaml.chain(others));
        if !p.is_empty() {
            return Err(ApiError(
                409,
                json!({"error": "conflict", "message": "the tenant collides with another tenant", "problems": api::problems_json(&p)}),
            ));
        }
        def.seal_key(&keyring);
        Ok(())
    }

    /// Store `def` (create, or replace an existing API tenant) and apply it here at once.
    /// `base`: `None` creates; `Some(v)` replaces the definition read at version `v`.
    pub(super) async fn write(self: &Arc<Self>, mut def: TenantDef, base: Option<u64>) -> Result<Value, ApiError> {
        let this = self.clone();
        // Certificate parsing: off the async threads.
        def = tokio::task::spawn_blocking(move || this.check(&mut def).map(|()| def))
            .await
            .map_err(|e| api_err(500, "internal", e.to_string()))??;
        let json = serde_json::to_vec(&def).map_err(|e| api_err(500, "internal", e.to_string()))?;
        let hostnames: Vec<String> = def.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        match self
            .store
            .put(&def.id, &json, &hostnames, base)
            .await
            .map_err(store_unavailable)?
        {
            Written::At(v) => {
                self.sync().await.map_err(store_unavailable)?;
                log::info!("tenants API: tenant {} written at version {v}", def.id);
                Ok(def.view(v))
            }
            Written::Exists => Err(api_err(
                409,
                "exists",
                format!("tenant {:?} exists; PATCH it instead", def.id),
            )),
            Written::Missing => Err(api_err(404, "unknown_tenant", format!("no API tenant {:?}", def.id))),
            Written::Taken => {
                // Another instance claimed one of the hostnames after this one synced.
                self.sync().await.map_err(store_unavailable)?;
                Err(api_err(
                    409,
                    "conflict",
                    "a hostname was just taken by another tenant (a change made through another instance); see GET /v1/tenants",
                ))
            }
            Written::Changed => {
                self.sync().await.map_err(store_unavailable)?;
                Err(api_err(
                    409,
                    "changed",
                    format!(
                        "tenant {:?} was changed meanwhile (through another instance); read it again and retry",
                        def.id
                    ),
                ))
            }
        }
    }

    /// `POST /v1/tenants`.
    pub async fn create(self: &Arc<Self>, body: &[u8]) -> Result<Value, ApiError> {
        let def = TenantDef::parse(body).map_err(|p| invalid(&p))?;
        let _w = self.writes.lock().await;
        // Collisions are checked against what the store holds now, not 250 ms ago.
        self.sync().await.map_err(store_unavailable)?;
        self.write(def, None).await
    }

    /// The stored definition of an API tenant as JSON (`tls.key_sealed` kept) and its
    /// version, for a change based on it.
    fn current(&self, id: &str) -> Result<(Value, u64), ApiError> {
        let st = self.state();
        match st.api.get(id) {
            Some(a) => serde_json::to_value(&a.def)
                .map(|v| (v, a.version))
                .map_err(|e| api_err(500, "internal", e.to_string())),
            None if st.yaml.tenants.iter().any(|t| &*t.id == id) => Err(api_err(
                409,
                "yaml_tenant",
                format!("tenant {id:?} is configured in YAML; change it in the config file"),
            )),
            None => Err(api_err(404, "unknown_tenant", format!("no tenant {id:?}"))),
        }
    }

    /// `PATCH /v1/tenants/{id}`: a JSON merge patch (RFC 7396); `id` cannot change. A new
    /// `tls.key_pem` replaces the sealed key.
    pub async fn update(self: &Arc<Self>, id: &str, patch: &[u8]) -> Result<Value, ApiError> {
        let patch: Value =
            serde_json::from_slice(patch).map_err(|e| api_err(400, "bad_request", format!("body is not JSON: {e}")))?;
        let _w = self.writes.lock().await;
        self.sync().await.map_err(store_unavailable)?;
        let (mut v, base) = self.current(id)?;
        api::merge_patch(&mut v, &patch);
        if patch.pointer("/tls/key_pem").is_some() {
            if let Some(tls) = v.get_mut("tls").and_then(Value::as_object_mut) {
                tls.remove("key_sealed");
            }
        }
        if v["id"] != id {
            return Err(invalid_one(
                "tenant.id",
                "cannot change; create a new tenant and delete this one",
            ));
        }
        let def = serde_json::from_value::<TenantDef>(v).map_err(|e| invalid_one("tenant", e.to_string()))?;
        self.write(def, Some(base)).await
    }

    /// `POST /v1/tenants/{id}/hostnames` (`add`) and `DELETE …/hostnames/{hostname}`.
    pub async fn hostname(self: &Arc<Self>, id: &str, hostname: &str, add: bool) -> Result<Value, ApiError> {
        let _w = self.writes.lock().await;
        self.sync().await.map_err(store_unavailable)?;
        let (mut v, base) = self.current(id)?;
        let mut hosts: Vec<String> = serde_json::from_value(v["hostnames"].take()).unwrap_or_default();
        let had = hosts.iter().any(|h| h.eq_ignore_ascii_case(hostname));
        match (add, had) {
            (true, false) => hosts.push(hostname.to_ascii_lowercase()),
            (false, true) => hosts.retain(|h| !h.eq_ignore_ascii_case(hostname)),
            (true, true) => {
                return Err(api_err(
                    409,
                    "exists",
                    format!("{hostname} is already a hostname of {id:?}"),
                ))
            }
            (false, false) => {
                return Err(api_err(
                    404,
                    "unknown_hostname",
                    format!("{hostname} is not a hostname of {id:?}"),
                ))
            }
        }
        v["hostnames"] = json!(hosts);
        let def = serde_json::from_value::<TenantDef>(v).map_err(|e| invalid_one("tenant", e.to_string()))?;
        self.write(def, Some(base)).await
    }

    /// `DELETE /v1/tenants/{id}`: removed from the store and from every instance's table (its
    /// hostnames refused, its tokens with them). Its token records stay in the store.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<Value, ApiError> {
        let _w = self.writes.lock().await;
        self.sync().await.map_err(store_unavailable)?;
        self.current(id)?;
        match self.store.delete(id).await.map_err(store_unavailable)? {
            Written::At(v) => {
                self.sync().await.map_err(store_unavailable)?;
                log::info!("tenants API: tenant {id} deleted at version {v}");
                Ok(json!({"id": id, "deleted": true, "version": v}))
            }
            _ => Err(api_err(404, "unknown_tenant", format!("no API tenant {id:?}"))),
        }
    }
}
