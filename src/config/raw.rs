//! The file format of `tessera.yaml`, exactly as written by operators. Every struct rejects
//! unknown keys. Validation into the types the proxy uses lives in `super`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: RawListen,
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default)]
    pub work_stealing: Option<bool>,
    #[serde(default)]
    pub lean_path: Option<bool>,
    #[serde(default)]
    pub grace_period: Option<String>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub upstream: RawUpstreamDefaults,
    #[serde(default)]
    pub store: Option<RawStore>,
    #[serde(default)]
    pub keys: Option<RawKeys>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub session_log: RawSessionLog,
    #[serde(default)]
    pub anomaly: RawAnomaly,
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Header names removed from every client request (default: Forwarded, X-Real-IP, …).
    #[serde(default)]
    pub strip_headers: Option<Vec<String>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub acme: Option<super::acme::RawAcme>,
    pub tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub https: String,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub metrics: Option<String>,
    #[serde(default)]
    pub admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub default_cert: Option<RawCertPair>,
    #[serde(default)]
    pub reload_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamDefaults {
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_request_duration: Option<String>,
    pub preserve_header_case: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
// Built once at load, never copied on the request path: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum RawStore {
    Embedded {
        path: String,
    },
    Redis {
        url: String,
        #[serde(default)]
        connect_timeout: Option<String>,
        #[serde(default)]
        response_timeout: Option<String>,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        cache: Option<RawCache>,
        #[serde(default)]
        heartbeat_interval: Option<String>,
        #[serde(default)]
        heartbeat_timeout: Option<String>,
        #[serde(default)]
        tls_ca: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub capacity: Option<usize>,
    #[serde(default)]
    pub ttl: Option<String>,
    /// Ids remembered as absent from Redis (0 = off).
    #[serde(default)]
    pub negative_capacity: Option<usize>,
    #[serde(default)]
    pub negative_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub tokens: Vec<RawAdminToken>,
    /// `admin.console`: the security console's session lifetimes.
    #[serde(default)]
    pub console: RawConsole,
    /// Audit entries kept in memory (`GET /v1/audit`, the console's audit view).
    #[serde(default)]
    pub audit_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub idle_timeout: Option<String>,
    pub absolute_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub name: String,
    pub sha256: String,
    pub scope: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionLog {
    pub enabled: Option<bool>,
    pub stdout: Option<bool>,
    pub file: Option<String>,
    pub file_max_bytes: Option<u64>,
    pub file_keep: Option<usize>,
    pub redis_stream: Option<bool>,
    pub stream_maxlen: Option<usize>,
    pub stream_max_age: Option<String>,
    pub channel_capacity: Option<usize>,
    pub memory_per_tenant: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    pub enabled: Option<bool>,
    pub action: Option<String>,
    pub z_threshold: Option<f64>,
    pub window: Option<String>,
    pub min_history: Option<u64>,
    pub rate_floor: Option<f64>,
    pub bytes_floor: Option<f64>,
    pub auth_failure_burst: Option<u64>,
    pub scan_distinct_404: Option<u64>,
    pub off_hours_min_history: Option<u64>,
    pub max_tracked_tokens: Option<usize>,
    pub ip_prefix_v4: Option<u8>,
    pub ip_prefix_v6: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub tenant_label_cap: Option<usize>,
}

/// `limits:` — per-connection and per-client-IP limits (see `crate::guard`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub request_head_timeout: Option<String>,
    pub max_request_head_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_connections_per_ip: Option<u32>,
    pub h2_max_resets_per_ip: Option<u32>,
    pub h2_reset_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub hostnames: Vec<String>,
    pub cert: String,
    pub key: String,
    pub upstream: String,
    #[serde(default)]
    pub upstream_ca: Option<String>,
    #[serde(default)]
    pub tenant_header: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub anomaly: Option<RawAnomaly>,
    /// OAuth token swap (see `config::oauth`).
    #[serde(default)]
    pub oauth: Option<RawOAuth>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    pub hostnames: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub upstream_ca: Option<String>,
    pub token_path: String,
    #[serde(default)]
    pub revocation_path: Option<String>,
    #[serde(default)]
    pub discovery: Option<bool>,
    #[serde(default)]
    pub max_token_response_bytes: Option<usize>,
    #[serde(default)]
    pub refresh_token_ttl: Option<String>,
}
