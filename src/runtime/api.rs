//! The definition of a tenant created through the admin API (`POST /v1/tenants`): its JSON
//! form, its stored form (private key sealed under the keyring's KEK) and its validation,
//! which is the YAML's (`config::validate_tenant`: same checks, same messages). Admin path
//! and tenant sync only.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::config::raw::{RawAnomaly, RawOAuth, RawTenant};
use crate::config::{AnomalyConf, Problem, TenantConf, TenantPem};
use crate::token::Keyring;

/// AAD purpose of a sealed TLS private key (also ACME keys, sealed the same way).
pub const KEY_PURPOSE: &str = "tls-key";

/// `tls` of a definition: `{cert_pem, key_pem}` in a request, `{cert_pem, key_sealed}` stored.
/// `{acme: true}`: the certificate is obtained by `crate::acme`, which writes `cert_pem` and
/// `key_sealed` here once it has one (every instance gets it through the tenant sync).
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// Only in requests; never stored or shown.
    #[serde(default, skip_serializing)]
    pub key_pem: Option<Zeroizing<String>>,
    /// Only stored: `base64(seal_secret(key_pem))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sealed: Option<String>,
}

/// A tenant as the API takes it (and stores it, key sealed). No `Debug`: it holds a key.
#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TenantDef {
    pub id: String,
    pub hostnames: Vec<String>,
    pub upstream: String,
    /// PEM text (not a path: every instance must be able to use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_header: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<RawAnomaly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<RawOAuth>,
    #[serde(default)]
    pub tls: TlsDef,
}

fn problem(key: &str, message: impl Into<String>) -> Vec<Problem> {
    vec![Problem {
        key: key.into(),
        message: message.into(),
    }]
}

impl TenantDef {
    /// Parse a request body (or a merged PATCH). Unknown keys and wrong types are problems.
    pub fn parse(body: &[u8]) -> Result<TenantDef, Vec<Problem>> {
        serde_json::from_slice(body).map_err(|e| problem("tenant", format!("{e}; see the tenants API in the README")))
    }

    /// Whether the certificate comes from ACME (`tls: {acme: true}`).
    pub fn is_acme(&self) -> bool {
        self.tls.acme == Some(true)
    }

    /// Seal a `key_pem` given in a request (replacing any sealed key). Called before storing.
    pub fn seal_key(&mut self, keyring: &Keyring) {
        if let Some(k) = self.tls.key_pem.take() {
            let sealed = crate::token::seal_secret(keyring, KEY_PURPOSE, &self.id, k.as_bytes());
            self.tls.key_sealed = Some(base64::engine::general_purpose::STANDARD.encode(sealed));
        }
    }

    /// Validate into the type the tenant table is built from: the YAML's checks and
    /// messages (keys prefixed `tenant.`), the private key opened from its seal if needed.
    pub fn validate(&self, keyring: &Keyring, global_anomaly: &AnomalyConf) -> Result<TenantConf, Vec<Problem>> {
        if self.oauth.as_ref().is_some_and(|o| o.upstream_ca.is_some()) {
            return Err(problem(
                "tenant.oauth.upstream_ca",
                "is a file path, which other instances may not have; leave it out (system roots) or configure this tenant in YAML",
            ));
        }
        let acme = self.is_acme();
        if acme && self.tls.cert_pem.is_none() && self.tls.key_pem.is_some() {
            return Err(problem(
                "tenant.tls.key_pem",
                "an ACME tenant gets its key with its certificate; leave key_pem out (or give cert_pem too)",
            ));
        }
        if !acme && self.tls.cert_pem.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(problem(
                "tenant.tls.cert_pem",
                "empty; give the PEM certificate chain, leaf first (or {\"acme\": true})",
            ));
        }
        let key_pem: Zeroizing<Vec<u8>> = match (&self.tls.cert_pem, &self.tls.key_pem, &self.tls.key_sealed) {
            // An ACME tenant before its first certificate: no certificate, no key.
            (None, _, _) if acme => Zeroizing::new(Vec::new()),
            (None, _, _) => {
                return Err(problem(
                    "tenant.tls.cert_pem",
                    "missing; give the PEM certificate chain, leaf first (or {\"acme\": true})",
                ))
            }
            (Some(_), Some(k), _) => Zeroizing::new(k.as_bytes().to_vec()),
            (Some(_), None, Some(sealed)) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(sealed)
                    .map_err(|_| problem("tenant.tls", "the stored key is not base64"))?;
                crate::token::open_secret(keyring, KEY_PURPOSE, &self.id, &raw)
                    .map_err(|e| problem("tenant.tls", format!("the stored private key does not open: {e}")))?
            }
            (Some(_), None, None) => {
                return Err(problem(
                    "tenant.tls.key_pem",
                    "missing; give the PEM private key of the certificate",
                ))
            }
        };
        let cert_pem = self.tls.cert_pem.as_deref().unwrap_or("");
        let raw = RawTenant {
            id: self.id.clone(),
            hostnames: self.hostnames.clone(),
            cert: String::new(),
            key: String::new(),
            upstream: self.upstream.clone(),
            upstream_ca: None,
            tenant_header: self.tenant_header.clone(),
            headers: self.headers.clone(),
            auth: self.auth.clone(),
            anomaly: self.anomaly.clone(),
            oauth: self.oauth.clone(),
        };
        let pem = TenantPem {
            label: format!("api:{}", self.id),
            cert_pem: cert_pem.as_bytes(),
            key_pem: &key_pem,
            upstream_ca_pem: self.upstream_ca.as_deref().map(str::as_bytes),
        };
        crate::config::validate_tenant("tenant", raw, pem, global_anomaly)
    }

    /// What `GET` shows: the definition without any key material.
    pub fn view(&self, version: u64) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(tls) = v.get_mut("tls").and_then(Value::as_object_mut) {
            if tls.remove("key_sealed").is_some() {
                tls.insert("key".into(), json!("sealed"));
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("source".into(), json!("api"));
            o.insert("version".into(), json!(version));
        }
        v
    }
}

/// RFC 7396 JSON merge patch of `patch` onto `base` (the `PATCH` body).
pub fn merge_patch(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge_patch(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Problems as the API's `422` body lists them.
pub fn problems_json(problems: &[Problem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| json!({"key": p.key, "message": p.message}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_replaces_removes_and_recurses() {
        let mut b = json!({"a": 1, "h": {"x": "1", "y": "2"}, "l": [1, 2]});
        merge_patch(&mut b, &json!({"a": null, "h": {"y": null, "z": "3"}, "l": [3]}));
        assert_eq!(b, json!({"h": {"x": "1", "z": "3"}, "l": [3]}));
    }

    #[test]
    fn key_is_sealed_bound_to_the_tenant_and_never_shown() {
        let ca = crate::demo::certs::DemoCa::new("t").unwrap();
        let leaf = ca.issue(&["a.example"]).unwrap();
        let keyring = Keyring::parse(&format!("k1 {}\n", "ab".repeat(32))).unwrap();
        let body = json!({"id": "a", "hostnames": ["a.example"], "upstream": "http://127.0.0.1:9",
            "tls": {"cert_pem": leaf.cert_pem, "key_pem": leaf.key_pem}});
        let mut d = TenantDef::parse(body.to_string().as_bytes()).unwrap();
        d.seal_key(&keyring);
        let stored = serde_json::to_string(&d).unwrap();
        assert!(!stored.contains("PRIVATE KEY") && stored.contains("key_sealed"));
        let back = TenantDef::parse(stored.as_bytes()).unwrap();
        assert!(back.validate(&keyring, &AnomalyConf::default()).is_ok());
        assert!(!back.view(1).to_string().contains("key_sealed"));
        // Copied to another tenant id: the seal does not open.
        let mut other = back.clone();
        other.id = "b".into();
        let e = other.validate(&keyring, &AnomalyConf::default()).err().unwrap();
        assert_eq!(e[0].key, "tenant.tls");
        // The YAML's checks and messages.
        let mut bad = back;
        bad.hostnames = vec!["b.example".into()];
        let e = bad.validate(&keyring, &AnomalyConf::default()).err().unwrap();
        assert_eq!(e[0].key, "tenant.cert");
        assert!(
            e[0].message.contains("does not cover hostname b.example"),
            "{}",
            e[0].message
        );
    }
}
