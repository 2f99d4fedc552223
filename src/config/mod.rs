//! `tessera.yaml`: parsed (`raw`), then validated into the types below.
//!
//! Runs once at start-up and in `tessera check-config`; nothing here is on the request path.
//! Every problem is reported with the key, the value and what to do, and all problems are
//! reported at once. Relative paths are relative to the working directory Tessera is started
//! from (the README's commands run from the repository root).

pub mod acme;
mod headers;
mod limits;
pub mod oauth;
pub mod raw;
pub mod topology;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use crate::host::HostPattern;
use crate::tls::CertSource;
pub use limits::Limits;
pub use oauth::OAuthConf;
use raw::{RawAnomaly, RawConfig, RawStore, RawTenant};
pub use topology::Topology;

/// One problem found in a config file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Dotted key, e.g. `tenants[1].cert`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// YAML syntax, a wrong type or an unknown key.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// One or more values are invalid.
    #[error("{path}: {} problem(s):\n{}", .problems.len(), ProblemList(.problems))]
    Invalid { path: String, problems: Vec<Problem> },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            writeln!(f, "  - {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: Listen,
    pub threads: usize,
    /// Tokio work stealing between the proxy's worker threads (Pingora's default is on).
    /// Off by default here: each worker then runs its own single-threaded runtime, which costs
    /// fewer cross-CPU wake-ups per request (measured in the README's Performance notes).
    pub work_stealing: bool,
    /// Requests without a body, over TLS to a tenant without OAuth hostnames, served without
    /// pingora-proxy's generic machinery (`proxy::lean`). On by default: same phases, fewer
    /// instructions per request (README "Performance"); `false` sends every request through
    /// pingora-proxy.
    pub lean_path: bool,
    pub grace_period: Duration,
    pub tls: TlsConf,
    pub upstream: UpstreamTimeouts,
    /// `upstream.preserve_header_case`: send an HTTP/1 client's header names upstream, and an
    /// HTTP/1 upstream's response header names to the client, in their own spelling. Off by
    /// default: names then go out as Pingora writes them (lower case apart from a few standard
    /// names such as `Host` and `Content-Type`), which is also what every HTTP/2 request and
    /// response looks like, and each request costs ~16 k fewer instructions (one header map
    /// instead of two each way, edited directly; README "Performance").
    pub preserve_header_case: bool,
    pub store: StoreConf,
    pub keys: KeysConf,
    pub admin_tokens: Vec<AdminToken>,
    /// `admin.console` and `admin.audit_capacity`.
    pub admin: AdminConf,
    pub session_log: SessionLogConf,
    pub metrics: MetricsConf,
    /// Removed from every client request, besides the tenant header names of all tenants.
    pub strip_headers: Vec<HeaderName>,
    pub limits: Limits,
    /// The global `anomaly` section, as tenants inherit it (API tenants too).
    pub anomaly: AnomalyConf,
    pub tenants: Vec<TenantConf>,
    /// `acme:` (automatic certificates for `tls: {acme: true}` tenants).
    pub acme: Option<acme::AcmeConf>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsConf {
    pub default_cert: Option<CertSource>,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    /// Longest a request may stream (either direction) before it is cut, so that a revoked
    /// token cannot keep a long download or upload going. Each new request is checked anew.
    pub max_request: Duration,
}

#[derive(Debug, Clone)]
// Built once at load, never copied on the request path: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum StoreConf {
    Embedded { path: PathBuf },
    Redis(RedisConf),
}

#[derive(Debug, Clone)]
pub struct RedisConf {
    /// Where Redis is, parsed from `store.url` (`redis://`, `rediss://` (TLS),
    /// `redis+sentinel://`, or cluster seed nodes after `redis+cluster://`). Its `Debug` never
    /// shows credentials.
    pub topology: Topology,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Key prefix; fragments live at `<prefix>frag:<tenant>:<id>`.
    pub prefix: String,
    pub cache_enabled: bool,
    pub cache_capacity: usize,
    pub cache_ttl: Duration,
    /// Ids remembered as absent from Redis (negative entries); 0 turns that off.
    pub negative_cache_capacity: usize,
    /// Longest a negative entry is trusted (a cap in case an invalidation is lost).
    pub negative_cache_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// PEM CA bundle that `rediss://` servers must chain to (default: system roots).
    pub tls_ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum KeysConf {
    File(PathBuf),
    Env(String),
}

/// What an admin token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Operator,
    Tenant(String),
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scope: Scope,
}

/// The security console and the audit log (`admin.*` besides the tokens).
#[derive(Debug, Clone)]
pub struct AdminConf {
    /// A console session unused this long is over (`admin.console.idle_timeout`, 30 min).
    pub console_idle: Duration,
    /// A console session is over this long after login, used or not
    /// (`admin.console.absolute_timeout`, 8 h).
    pub console_absolute: Duration,
    /// Audit entries kept in memory, oldest dropped first (`admin.audit_capacity`, 10000).
    pub audit_capacity: usize,
}

#[derive(Debug, Clone)]
pub struct SessionLogConf {
    pub enabled: bool,
    pub stdout: bool,
    pub file: Option<PathBuf>,
    pub file_max_bytes: u64,
    pub file_keep: usize,
    pub redis_stream: bool,
    pub stream_maxlen: usize,
    pub stream_max_age: Duration,
    pub channel_capacity: usize,
    pub memory_per_tenant: usize,
}

#[derive(Debug, Clone)]
pub struct MetricsConf {
    pub tenant_label_cap: usize,
}

/// What happens when a token trips an anomaly detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyAction {
    /// Count it and mark the session record.
    Alert,
    /// Also quarantine the token until an admin clears it.
    Block,
}

#[derive(Debug, Clone)]
pub struct AnomalyConf {
    pub enabled: bool,
    pub action: AnomalyAction,
    pub z_threshold: f64,
    /// Length of one rate/bytes window.
    pub window: Duration,
    pub min_history: u64,
    pub rate_floor: f64,
    pub bytes_floor: f64,
    pub auth_failure_burst: u64,
    pub scan_distinct_404: u64,
    pub off_hours_min_history: u64,
    pub max_tracked_tokens: usize,
    pub ip_prefix_v4: u8,
    pub ip_prefix_v6: u8,
}

impl Default for AnomalyConf {
    fn default() -> Self {
        AnomalyConf {
            enabled: true,
            action: AnomalyAction::Alert,
            z_threshold: 6.0,
            window: Duration::from_secs(1),
            min_history: 30,
            rate_floor: 20.0,
            bytes_floor: 1_048_576.0,
            auth_failure_burst: 20,
            scan_distinct_404: 30,
            off_hours_min_history: 200,
            max_tracked_tokens: 100_000,
            ip_prefix_v4: 24,
            ip_prefix_v6: 48,
        }
    }
}

/// How a tenant's requests authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Clients present Part A; Tessera sends the reconstructed token (default).
    SplitToken,
    /// No token handling: route and inject headers only, the client's `Authorization` is
    /// removed. For benchmarking and for upstreams without credentials.
    None,
}

/// Where a tenant's requests go.
#[derive(Debug, Clone)]
pub struct UpstreamConf {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as the upstream expects in `Host`.
    pub authority: String,
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct TenantConf {
    pub id: Arc<str>,
    pub hostnames: Vec<HostPattern>,
    /// `None`: an ACME tenant (`tls: {acme: true}`) whose first certificate is not obtained
    /// yet; handshakes for its hostnames get `tls.default_cert` or are refused.
    pub cert: Option<CertSource>,
    pub upstream: UpstreamConf,
    pub upstream_ca: Option<Vec<Vec<u8>>>,
    pub tenant_header: HeaderName,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: AuthMode,
    pub anomaly: AnomalyConf,
    /// OAuth token swap surface (`tenants[].oauth`).
    pub oauth: Option<OAuthConf>,
}

impl TenantConf {
    /// Every hostname the tenant answers on: API hostnames, then OAuth hostnames. The
    /// certificate must cover all of them.
    pub fn all_hostnames(&self) -> impl Iterator<Item = &HostPattern> {
        self.hostnames
            .iter()
            .chain(self.oauth.iter().flat_map(|o| o.hostnames.iter()))
    }
}

/// `url` with any `user:password@` replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}***{}", &url[..i + 3], &url[j..]),
        _ => url.to_string(),
    }
}

/// Parse `250ms`, `5s`, `2m`, `1h`, `7d` or a bare number of seconds.
///
/// ```
/// use std::time::Duration;
/// use tessera::config::parse_duration;
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    // `from_secs_f64` panics beyond ~584 billion years; such a value is an error, not a panic.
    Duration::try_from_secs_f64(secs).ok()
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    key,
                    format!("{value:?} is not an IP:port address; write e.g. \"127.0.0.1:8443\" or \"[::]:8443\""),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.bad(
                        key,
                        format!("{v:?} is not a positive duration; write e.g. \"250ms\", \"5s\", \"2m\""),
                    );
                    default
                }
            },
        }
    }
}

impl Checker {
    /// `value` (or `default` when unset) if it is at least 1; a 0 is reported with the key,
    /// the value and `fix` instead of being silently raised to 1.
    fn nonzero<T: Copy + PartialEq + Default + fmt::Display>(
        &mut self,
        key: &str,
        value: Option<T>,
        default: T,
        fix: &str,
    ) -> T {
        match value {
            Some(v) if v == T::default() => {
                self.bad(key, format!("{v} is not allowed: {fix}"));
                default
            }
            Some(v) => v,
            None => default,
        }
    }
}

impl Config {
    /// Read, parse and validate a config file. Certificate files are loaded and checked.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parse and validate YAML text; `path` is used in messages only.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut c = Checker { problems: vec![] };
        let cfg = validate(raw, path, &mut c);
        if c.problems.is_empty() {
            if let Some(cfg) = cfg {
                return Ok(cfg);
            }
        }
        Err(ConfigError::Invalid {
            path: path.display().to_string(),
            problems: c.problems,
        })
    }
}

fn validate(raw: RawConfig, path: &Path, c: &mut Checker) -> Option<Config> {
    let (https, listen) = listen_conf(&raw, c);
    let threads = threads_conf(raw.threads, c);
    let work_stealing = raw.work_stealing.unwrap_or(false);
    let lean_path = raw.lean_path.unwrap_or(true);
    let grace_period = c.duration("grace_period", raw.grace_period.as_deref(), Duration::from_secs(10));
    let tls = tls_conf(&raw.tls, c);
    let upstream = upstream_timeouts(&raw.upstream, c);
    let preserve_header_case = raw.upstream.preserve_header_case.unwrap_or(false);
    let store = store_conf(raw.store, c);
    let keys = keys_conf(raw.keys, c);
    let tenant_ids: Vec<&str> = raw.tenants.iter().map(|t| t.id.as_str()).collect();
    let admin_tokens = admin_tokens(&raw.admin.tokens, &tenant_ids, c);
    let admin = admin_conf(&raw.admin, c);
    let session_log = session_log_conf(&raw.session_log, c);
    let metrics = MetricsConf {
        tenant_label_cap: raw.metrics.tenant_label_cap.unwrap_or(1000),
    };
    let global_anomaly = anomaly_conf(&AnomalyConf::default(), &raw.anomaly, "anomaly", c);
    let tenants = tenants_conf(raw.tenants, &global_anomaly, c);
    let anomaly = global_anomaly;
    headers::across_tenants(&tenants, c);
    let strip_headers = headers::strip_headers(raw.strip_headers.as_deref(), c);
    if tenants.is_empty() && c.problems.is_empty() {
        c.bad(
            "tenants",
            "no tenants configured; add at least one (see conf/tessera.example.yaml)",
        );
    }
    let limits = limits::validate(&raw.limits, c);
    let acme = raw
        .acme
        .as_ref()
        .and_then(|a| acme::validate(a, listen.http.is_some(), c));
    https?;
    Some(Config {
        path: path.to_path_buf(),
        listen,
        threads,
        work_stealing,
        lean_path,
        grace_period,
        tls,
        upstream,
        preserve_header_case,
        store,
        keys,
        admin_tokens,
        admin,
        session_log,
        metrics,
        strip_headers,
        limits,
        anomaly,
        tenants,
        acme,
    })
}

// === sections of `validate`, in file order ===

/// `listen.*`; the HTTPS address is returned apart because the config is unusable without it.
fn listen_conf(raw: &RawConfig, c: &mut Checker) -> (Option<SocketAddr>, Listen) {
    let https = c.addr("listen.https", &raw.listen.https);
    let listen = Listen {
        https: https.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        http: raw.listen.http.as_deref().and_then(|v| c.addr("listen.http", v)),
        metrics: raw.listen.metrics.as_deref().and_then(|v| c.addr("listen.metrics", v)),
        admin: raw.listen.admin.as_deref().and_then(|v| c.addr("listen.admin", v)),
    };
    if let Some(admin) = listen.admin {
        if !admin.ip().is_loopback() && raw.admin.tokens.is_empty() {
            c.bad(
                "listen.admin",
                format!("{admin} is not loopback and admin.tokens is empty; add admin tokens or bind 127.0.0.1"),
            );
        }
    }
    (https, listen)
}

fn threads_conf(raw: Option<usize>, c: &mut Checker) -> usize {
    match raw {
        Some(0) => {
            c.bad(
                "threads",
                "0 worker threads cannot serve anything; use 1 or more (default: number of CPUs)",
            );
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn tls_conf(raw: &raw::RawTls, c: &mut Checker) -> TlsConf {
    let default_cert = raw.default_cert.as_ref().and_then(|p| {
        match CertSource::load(PathBuf::from(&p.cert), PathBuf::from(&p.key), &[]) {
            Ok(s) => Some(s),
            Err(e) => {
                c.bad("tls.default_cert", e.to_string());
                None
            }
        }
    });
    TlsConf {
        default_cert,
        reload_interval: c.duration(
            "tls.reload_interval",
            raw.reload_interval.as_deref(),
            Duration::from_secs(5),
        ),
    }
}

fn upstream_timeouts(u: &raw::RawUpstreamDefaults, c: &mut Checker) -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: c.duration(
            "upstream.connect_timeout",
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        ),
        read: c.duration(
            "upstream.read_timeout",
            u.read_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        write: c.duration(
            "upstream.write_timeout",
            u.write_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        idle: c.duration(
            "upstream.idle_timeout",
            u.idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        max_request: c.duration(
            "upstream.max_request_duration",
            u.max_request_duration.as_deref(),
            Duration::from_secs(15 * 60),
        ),
    }
}

/// `store`: embedded (default) or Redis with its topology, cache and heartbeat.
fn store_conf(raw: Option<RawStore>, c: &mut Checker) -> StoreConf {
    match raw {
        None => StoreConf::Embedded {
            path: PathBuf::from("./data/tessera.redb"),
        },
        Some(RawStore::Embedded { path }) => StoreConf::Embedded {
            path: PathBuf::from(path),
        },
        Some(RawStore::Redis {
            url,
            connect_timeout,
            response_timeout,
            prefix,
            cache,
            heartbeat_interval,
            heartbeat_timeout,
            tls_ca,
        }) => {
            let tls_ca_pem = tls_ca
                .as_ref()
                .and_then(|p| match crate::tls::load_ca_ders(Path::new(p)) {
                    Ok(_) => std::fs::read(p).ok(),
                    Err(m) => {
                        c.bad("store.tls_ca", m);
                        None
                    }
                });
            let topology = Topology::parse(&url).unwrap_or_else(|e| {
                c.bad(
                    "store.url",
                    format!("{:?}: {e}; use redis://host:port/db, rediss:// for TLS, redis+sentinel://s1:26379,s2:26379/<master>[/db] or redis+cluster://n1:6379,n2:6379", redact_url(&url)),
                );
                // Never used: the error above fails validation.
                Topology::Standalone { url: String::new() }
            });
            let prefix = prefix.unwrap_or_else(|| "tessera:".to_string());
            if prefix.contains(char::is_whitespace) || prefix.contains(['*', '?', '[']) {
                c.bad(
                    "store.prefix",
                    format!("{prefix:?} contains whitespace or glob characters; use e.g. \"tessera:\""),
                );
            }
            let cache = cache.unwrap_or(raw::RawCache {
                enabled: None,
                capacity: None,
                ttl: None,
                negative_capacity: None,
                negative_ttl: None,
            });
            StoreConf::Redis(RedisConf {
                topology,
                connect_timeout: c.duration(
                    "store.connect_timeout",
                    connect_timeout.as_deref(),
                    Duration::from_millis(250),
                ),
                response_timeout: c.duration(
                    "store.response_timeout",
                    response_timeout.as_deref(),
                    Duration::from_millis(100),
                ),
                prefix,
                cache_enabled: cache.enabled.unwrap_or(true),
                cache_capacity: c.nonzero(
                    "store.cache.capacity",
                    cache.capacity,
                    100_000,
                    "use a positive record count (default 100000), or set store.cache.enabled: false",
                ),
                cache_ttl: c.duration("store.cache.ttl", cache.ttl.as_deref(), Duration::from_secs(300)),
                negative_cache_capacity: cache.negative_capacity.unwrap_or(10_000),
                negative_cache_ttl: c.duration(
                    "store.cache.negative_ttl",
                    cache.negative_ttl.as_deref(),
                    Duration::from_secs(10),
                ),
                heartbeat_interval: c.duration(
                    "store.heartbeat_interval",
                    heartbeat_interval.as_deref(),
                    Duration::from_secs(1),
                ),
                heartbeat_timeout: c.duration(
                    "store.heartbeat_timeout",
                    heartbeat_timeout.as_deref(),
                    Duration::from_millis(500),
                ),
                tls_ca_pem,
            })
        }
    }
}

fn keys_conf(raw: Option<raw::RawKeys>, c: &mut Checker) -> KeysConf {
    match raw {
        None => KeysConf::File(PathBuf::from("./conf/keyring")),
        Some(k) => {
            match (k.file, k.env) {
                (Some(f), None) => KeysConf::File(PathBuf::from(f)),
                (None, Some(e)) => KeysConf::Env(e),
                _ => {
                    c.bad("keys", "set exactly one of keys.file (a keyring file) or keys.env (an environment variable holding it)");
                    KeysConf::File(PathBuf::from("./conf/keyring"))
                }
            }
        }
    }
}

/// `admin.tokens`: hashes, scopes naming configured tenants, unique names.
fn admin_tokens(raw: &[raw::RawAdminToken], tenant_ids: &[&str], c: &mut Checker) -> Vec<AdminToken> {
    let mut admin_tokens = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let mut sha = [0u8; 32];
        if hex::decode_to_slice(&t.sha256, &mut sha).is_err() {
            c.bad(
                format!("{key}.sha256"),
                "not 64 hex characters; compute it with `printf %s \"$TOKEN\" | sha256sum` or `tessera admin-token`",
            );
            continue;
        }
        let scope = if t.scope == "operator" {
            Scope::Operator
        } else if let Some(tenant) = t.scope.strip_prefix("tenant:") {
            if !tenant_ids.contains(&tenant) {
                c.bad(
                    format!("{key}.scope"),
                    format!("{:?} names tenant {tenant:?}, which is not in tenants:", t.scope),
                );
            }
            Scope::Tenant(tenant.to_string())
        } else {
            c.bad(
                format!("{key}.scope"),
                format!("{:?} is not a scope; use \"operator\" or \"tenant:<id>\"", t.scope),
            );
            continue;
        };
        if admin_tokens.iter().any(|a: &AdminToken| a.name == t.name) {
            c.bad(
                format!("{key}.name"),
                format!("{:?} is used twice; names identify callers in logs", t.name),
            );
        }
        admin_tokens.push(AdminToken {
            name: t.name.clone(),
            sha256: sha,
            scope,
        });
    }

    admin_tokens
}

/// `admin.console.*` and `admin.audit_capacity`: positive durations, idle no longer than
/// absolute, a bounded audit ring.
fn admin_conf(a: &raw::RawAdmin, c: &mut Checker) -> AdminConf {
    let console_idle = c.duration(
        "admin.console.idle_timeout",
        a.console.idle_timeout.as_deref(),
        Duration::from_secs(30 * 60),
    );
    let console_absolute = c.duration(
        "admin.console.absolute_timeout",
        a.console.absolute_timeout.as_deref(),
        Duration::from_secs(8 * 3600),
    );
    if console_idle > console_absolute {
        c.bad(
            "admin.console.idle_timeout",
            format!(
                "{:?} is longer than admin.console.absolute_timeout ({:?}); make it shorter (defaults 30m and 8h)",
                console_idle, console_absolute
            ),
        );
    }
    let audit_capacity = c.nonzero(
        "admin.audit_capacity",
        a.audit_capacity,
        10_000,
        "use a positive number of audit entries kept in memory (default 10000)",
    );
    if audit_capacity > 1_000_000 {
        c.bad(
            "admin.audit_capacity",
            format!("{audit_capacity} is over 1000000; the ring lives in memory (default 10000)"),
        );
    }
    AdminConf {
        console_idle,
        console_absolute,
        audit_capacity,
    }
}

fn session_log_conf(s: &raw::RawSessionLog, c: &mut Checker) -> SessionLogConf {
    SessionLogConf {
        enabled: s.enabled.unwrap_or(true),
        stdout: s.stdout.unwrap_or(true),
        file: s.file.as_ref().map(PathBuf::from),
        file_max_bytes: c.nonzero(
            "session_log.file_max_bytes",
            s.file_max_bytes,
            64 * 1024 * 1024,
            "use a positive size in bytes (default 67108864), or remove session_log.file to disable the file",
        ),
        file_keep: c.nonzero(
            "session_log.file_keep",
            s.file_keep,
            5,
            "use at least 1 rotated file (default 5)",
        ),
        redis_stream: s.redis_stream.unwrap_or(true),
        stream_maxlen: c.nonzero(
            "session_log.stream_maxlen",
            s.stream_maxlen,
            100_000,
            "use a positive entry count (default 100000), or set session_log.redis_stream: false",
        ),
        stream_max_age: c.duration(
            "session_log.stream_max_age",
            s.stream_max_age.as_deref(),
            Duration::from_secs(7 * 86400),
        ),
        channel_capacity: c.nonzero(
            "session_log.channel_capacity",
            s.channel_capacity,
            65_536,
            "use a positive number of queued records (default 65536), or set session_log.enabled: false",
        ),
        memory_per_tenant: c.nonzero(
            "session_log.memory_per_tenant",
            s.memory_per_tenant,
            10_000,
            "use a positive number of records per tenant (default 10000); the admin API reads them with the embedded store",
        ),
    }
}

/// Every tenant, plus the checks across tenants: unique ids and hostnames.
fn tenants_conf(raw: Vec<RawTenant>, global_anomaly: &AnomalyConf, c: &mut Checker) -> Vec<TenantConf> {
    let mut tenants = Vec::new();
    let mut seen_hosts: std::collections::HashMap<HostPattern, String> = Default::default();
    for (i, t) in raw.into_iter().enumerate() {
        if let Some(tc) = tenant(&format!("tenants[{i}]"), t, None, global_anomaly, c) {
            for h in tc.all_hostnames() {
                if let Some(other) = seen_hosts.insert(h.clone(), tc.id.to_string()) {
                    c.bad(
                        format!("tenants[{i}].hostnames"),
                        format!("{h} is already served by tenant {other:?}; a hostname belongs to exactly one tenant"),
                    );
                }
            }
            if tenants.iter().any(|x: &TenantConf| x.id == tc.id) {
                c.bad(
                    format!("tenants[{i}].id"),
                    format!("{:?} is used twice; tenant ids must be unique", tc.id),
                );
            }
            tenants.push(tc);
        }
    }
    tenants
}

fn anomaly_conf(base: &AnomalyConf, raw: &RawAnomaly, key: &str, c: &mut Checker) -> AnomalyConf {
    let mut a = base.clone();
    if let Some(v) = raw.enabled {
        a.enabled = v;
    }
    match raw.action.as_deref() {
        None => {}
        Some("alert") => a.action = AnomalyAction::Alert,
        Some("block") => a.action = AnomalyAction::Block,
        Some(other) => c.bad(
            format!("{key}.action"),
            format!(
                "{other:?} is not an action; use \"alert\" (count and mark) or \"block\" (also quarantine the token)"
            ),
        ),
    }
    if let Some(v) = raw.z_threshold {
        if v.is_finite() && v > 0.0 {
            a.z_threshold = v;
        } else {
            c.bad(
                format!("{key}.z_threshold"),
                format!("{v} must be a positive number of standard deviations, e.g. 6"),
            );
        }
    }
    if let Some(w) = &raw.window {
        a.window = c.duration(&format!("{key}.window"), Some(w), a.window);
        if a.window < Duration::from_millis(1) {
            c.bad(
                format!("{key}.window"),
                format!("{w:?} is shorter than 1ms; use e.g. \"1s\" (default)"),
            );
            a.window = base.window;
        }
    }
    macro_rules! take {
        ($f:ident) => {
            if let Some(v) = raw.$f {
                a.$f = v.into();
            }
        };
    }
    take!(min_history);
    take!(rate_floor);
    take!(bytes_floor);
    take!(off_hours_min_history);
    a.auth_failure_burst = c.nonzero(
        &format!("{key}.auth_failure_burst"),
        raw.auth_failure_burst,
        a.auth_failure_burst,
        "use at least 1 upstream 401/403 per minute (default 20)",
    );
    a.scan_distinct_404 = c.nonzero(
        &format!("{key}.scan_distinct_404"),
        raw.scan_distinct_404,
        a.scan_distinct_404,
        "use at least 1 distinct 404 path per minute (default 30)",
    );
    a.max_tracked_tokens = c.nonzero(
        &format!("{key}.max_tracked_tokens"),
        raw.max_tracked_tokens,
        a.max_tracked_tokens,
        "use at least 1 token (default 100000), or set enabled: false to turn detection off",
    );
    if let Some(p) = raw.ip_prefix_v4 {
        if p > 32 {
            c.bad(
                format!("{key}.ip_prefix_v4"),
                format!("{p} is longer than an IPv4 address; use 0-32 (default 24)"),
            );
        } else {
            a.ip_prefix_v4 = p;
        }
    }
    if let Some(p) = raw.ip_prefix_v6 {
        if p > 128 {
            c.bad(
                format!("{key}.ip_prefix_v6"),
                format!("{p} is longer than an IPv6 address; use 0-128 (default 48)"),
            );
        } else {
            a.ip_prefix_v6 = p;
        }
    }
    a
}

/// A tenant id as config and the tenants API accept it (also keeps ids glob- and path-safe
/// in Redis key patterns and embedded key prefixes).
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub(super) fn parse_upstream(url: &str) -> Result<UpstreamConf, String> {
    let uri: Uri = url.parse().map_err(|_| {
        format!("{url:?} is not a URL; write e.g. \"https://api.saas.example\" or \"http://127.0.0.1:8080\"")
    })?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{url:?} has a path or query; upstream path prefixes are not supported, give scheme://host[:port] only"
        ));
    }
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let default_port = if tls { 443 } else { 80 };
    let authority = if port == default_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    Ok(UpstreamConf {
        tls,
        host: bare,
        port,
        authority,
        url: url.to_string(),
    })
}

/// Certificate, key and upstream CA given as PEM text rather than file paths: tenants created
/// through the admin API (`crate::runtime`).
pub struct TenantPem<'a> {
    /// Names the source in messages and logs, e.g. `api:acme`.
    pub label: String,
    /// Empty for an ACME tenant that has no certificate yet (then `key_pem` is empty too).
    pub cert_pem: &'a [u8],
    pub key_pem: &'a [u8],
    pub upstream_ca_pem: Option<&'a [u8]>,
}

/// Validate one tenant given through the admin API: the same checks and messages as a YAML
/// tenant, keys prefixed with `key` (e.g. `tenant`). `raw.cert`, `raw.key` and
/// `raw.upstream_ca` are ignored in favour of `pem`. Conflicts with other tenants are the
/// caller's (`runtime`).
pub fn validate_tenant(
    key: &str,
    raw: RawTenant,
    pem: TenantPem<'_>,
    global_anomaly: &AnomalyConf,
) -> Result<TenantConf, Vec<Problem>> {
    let mut c = Checker { problems: vec![] };
    match tenant(key, raw, Some(pem), global_anomaly, &mut c) {
        Some(t) if c.problems.is_empty() => Ok(t),
        _ => Err(c.problems),
    }
}

fn tenant(
    key: &str,
    t: RawTenant,
    pem: Option<TenantPem<'_>>,
    global: &AnomalyConf,
    c: &mut Checker,
) -> Option<TenantConf> {
    let before = c.problems.len();
    if !valid_tenant_id(&t.id) {
        c.bad(
            format!("{key}.id"),
            format!(
                "{:?} must be 1-64 characters of [a-z0-9_-] (it is used in Redis keys and metric labels)",
                t.id
            ),
        );
    }
    if t.hostnames.is_empty() {
        c.bad(
            format!("{key}.hostnames"),
            "empty; list the vanity hostnames this tenant answers on",
        );
    }
    let mut hostnames = Vec::new();
    for (j, h) in t.hostnames.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hostnames.push(p),
            Err(m) => c.bad(format!("{key}.hostnames[{j}]"), m),
        }
    }
    let oauth = t
        .oauth
        .as_ref()
        .and_then(|o| oauth::validate(&format!("{key}.oauth"), o, c));
    // The certificate must cover the OAuth hostnames too (one certificate per tenant).
    let mut cert_names = hostnames.clone();
    cert_names.extend(oauth.iter().flat_map(|o| o.hostnames.iter().cloned()));
    let loaded = match &pem {
        Some(p) if p.cert_pem.is_empty() => Ok(None),
        Some(p) => CertSource::from_pem(&p.label, p.cert_pem, p.key_pem, &cert_names).map(Some),
        None => CertSource::load(PathBuf::from(&t.cert), PathBuf::from(&t.key), &cert_names).map(Some),
    };
    let cert = match loaded {
        Ok(s) => Some(s),
        Err(e) => {
            c.bad(format!("{key}.cert"), e.to_string());
            None
        }
    };
    let upstream = match parse_upstream(&t.upstream) {
        Ok(u) => Some(u),
        Err(m) => {
            c.bad(format!("{key}.upstream"), m);
            None
        }
    };
    let ca = match &pem {
        Some(p) => p.upstream_ca_pem.map(crate::tls::ca_ders_from_pem),
        None => t.upstream_ca.as_ref().map(|p| crate::tls::load_ca_ders(Path::new(p))),
    };
    let upstream_ca = ca.and_then(|r| match r {
        Ok(v) => Some(v),
        Err(m) => {
            c.bad(format!("{key}.upstream_ca"), m);
            None
        }
    });
    let has_ca = pem
        .as_ref()
        .map_or(t.upstream_ca.is_some(), |p| p.upstream_ca_pem.is_some());
    if has_ca && upstream.as_ref().is_some_and(|u| !u.tls) {
        c.bad(
            format!("{key}.upstream_ca"),
            "set, but the upstream is http://; use https:// or drop upstream_ca",
        );
    }
    let tenant_header = headers::tenant_header(&format!("{key}.tenant_header"), t.tenant_header.as_deref(), c);
    let headers = headers::extra_headers(&format!("{key}.headers"), &t.headers, c);
    let auth = match t.auth.as_deref() {
        None | Some("split_token") => AuthMode::SplitToken,
        Some("none") => AuthMode::None,
        Some(other) => {
            c.bad(
                format!("{key}.auth"),
                format!("{other:?} is not an auth mode; use \"split_token\" (default) or \"none\""),
            );
            AuthMode::SplitToken
        }
    };
    if auth == AuthMode::None && t.oauth.is_some() {
        c.bad(
            format!("{key}.oauth"),
            "set on a tenant with auth: none; the token swap needs auth: split_token (the default)",
        );
    }
    let anomaly = match &t.anomaly {
        Some(a) => anomaly_conf(global, a, &format!("{key}.anomaly"), c),
        None => global.clone(),
    };
    if c.problems.len() > before {
        return None;
    }
    Some(TenantConf {
        id: Arc::from(t.id.as_str()),
        hostnames,
        cert: cert?,
        upstream: upstream?,
        upstream_ca,
        tenant_header,
        headers,
        auth,
        anomaly,
        oauth,
    })
}

#[cfg(test)]
mod tests;
