//! Tenants at runtime: the config file reloaded while serving. Never on the request path.
//!
//! `Runtime` owns the tenant definitions in force and applies a change by building a new
//! tenant table and certificate map and swapping them in (`tenants::Tenants::replace`,
//! `tls::CertStore::replace`): the tenant table first, then the certificates, so a handshake
//! that gets a new tenant's certificate always finds the tenant. A request in flight finishes
//! on the snapshot it started with; connections are not dropped.
//!
//! `ConfigReloader` (a background service) checks the config file every
//! `tls.reload_interval` (`watch::FileStamp`, like certificates and the keyring):
//! - a **valid** file applies what can change while serving: `tenants` (ids, hostnames,
//!   certificates, upstreams, headers, auth, OAuth sections, per-tenant anomaly settings),
//!   the global `anomaly` section, `strip_headers`, `upstream` timeouts and
//!   `tls.default_cert`. `tessera_config_reloads_total{result="ok"}`.
//! - an **invalid** file (what `tessera check-config` would report) is refused as a whole:
//!   the problems are logged, `result="invalid"` is counted, and the running config stays.
//!   A new upstream that does not resolve is refused the same way (`result="error"`).
//! - sections read only at start-up (`RESTART_ONLY`: listeners, threads, the store, keys,
//!   admin tokens…) are compared with the running process; a difference is logged as
//!   needing a restart and is not applied (the rest of the change is).
//!
//! Tenants created through the admin API (`api`, `store`, calls in `calls.rs`) are added on
//! top of the YAML tenants, which stay the static base: an API tenant cannot take a YAML
//! tenant's id or hostname (nor another API tenant's). The check runs on a fresh sync under
//! this instance's write lock; across instances the store's write is atomic (a Lua script in
//! Redis) and both claims the hostnames and compares the tenant's version, so two instances
//! racing for one hostname, or two PATCHes of one tenant, give one winner and one `409`. A write goes to the store and is
//! applied here at once; every other instance applies it within `SYNC_INTERVAL`
//! (`TenantSync`: one `GET` of the global version per check, then only the tenants whose
//! version changed).

mod acme;
pub mod api;
mod calls;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Config, ConfigError, Problem, TenantConf};
use crate::fragments::StoreError;
use crate::metrics;
use crate::tenants::{Swap, TenantError, Tenants};
use crate::tls::CertStore;
use crate::token::Keyring;
use crate::watch::FileStamp;
pub use acme::AcmeWant;
use api::TenantDef;
pub use calls::ApiError;
use store::TenantStore;

/// How often an instance checks the store for tenant changes made elsewhere.
///
/// Decided: a poll, no pub/sub. One `HGET` every 250 ms is 4 commands per second per
/// instance, and it bounds the delay (measured with `benches/tenants_scale.rs`: p50 142 ms,
/// p99 263 ms with 1,000 API tenants; p50 261 ms, p99 527 ms with 10,000, where the table
/// rebuild adds its time; inside the 1 s asked). Pub/sub would need one more connection per
/// instance (and per shard in a cluster) and the poll anyway, for messages missed while that
/// connection is down; it would only take the poll's ≤ 250 ms off the delay, which no
/// onboarding flow needs.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// Config sections read once at start-up: a change is logged as needing a restart.
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "threads",
    "work_stealing",
    "lean_path",
    "grace_period",
    "store",
    "keys",
    "admin.tokens",
    "session_log",
    "metrics",
    "limits",
    "tls.reload_interval",
    "upstream.max_request_duration",
    "upstream.preserve_header_case",
    "acme",
];

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The new config file does not validate (same messages as `tessera check-config`).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A tenant could not be prepared (an upstream that does not resolve).
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// The new YAML takes an id or hostname an API tenant holds.
    #[error("config {path} collides with API tenants: {}", .problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))]
    Conflict { path: String, problems: Vec<Problem> },
}

impl RuntimeError {
    /// The `result` label of `tessera_config_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RuntimeError::Invalid(_) | RuntimeError::Conflict { .. } => "invalid",
            RuntimeError::Tenant(_) => "error",
        }
    }
}

/// The values of the restart-only sections, for comparison (`Debug` text, never logged).
fn restart_signature(c: &Config) -> Vec<(&'static str, String)> {
    let v = vec![
        ("listen", format!("{:?}", c.listen)),
        ("threads", c.threads.to_string()),
        ("work_stealing", c.work_stealing.to_string()),
        ("lean_path", c.lean_path.to_string()),
        ("grace_period", format!("{:?}", c.grace_period)),
        ("store", format!("{:?}", c.store)),
        ("keys", format!("{:?}", c.keys)),
        ("admin.tokens", format!("{:?}", c.admin_tokens)),
        ("session_log", format!("{:?}", c.session_log)),
        ("metrics", format!("{:?}", c.metrics)),
        ("limits", format!("{:?}", c.limits)),
        ("tls.reload_interval", format!("{:?}", c.tls.reload_interval)),
        ("upstream.max_request_duration", format!("{:?}", c.upstream.max_request)),
        ("upstream.preserve_header_case", c.preserve_header_case.to_string()),
        ("acme", format!("{:?}", c.acme)),
    ];
    debug_assert_eq!(v.len(), RESTART_ONLY.len());
    v
}

/// An API tenant in force.
struct ApiTenant {
    version: u64,
    def: TenantDef,
    conf: TenantConf,
    /// `crate::tenants::fingerprint(&conf)`, computed once.
    fingerprint: [u8; 32],
}

/// What is in force: the YAML config and the API tenants.
struct State {
    yaml: Config,
    /// `crate::tenants::fingerprint` of each of `yaml.tenants`, in order.
    yaml_fingerprints: Vec<[u8; 32]>,
    api: BTreeMap<String, ApiTenant>,
    /// Global store version the API tenants were last synced at.
    synced: u64,
}

/// Problems of `t` against `others`: its id, its hostnames, and the tenant header names.
fn conflicts<'a>(t: &TenantConf, others: impl Iterator<Item = (&'a TenantConf, &'static str)>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |key: &str, message: String| {
        out.push(Problem {
            key: key.into(),
            message,
        })
    };
    for (o, source) in others {
        if o.id == t.id {
            bad(
                "tenant.id",
                format!("{:?} is a {source} tenant's id; pick another id", t.id),
            );
        }
        for h in t.all_hostnames() {
            if o.all_hostnames().any(|x| x == h) {
                bad(
                    "tenant.hostnames",
                    format!(
                        "{h} is served by {source} tenant {:?}; a hostname belongs to one tenant",
                        o.id
                    ),
                );
            }
        }
        for (name, _) in &t.headers {
            if o.tenant_header == *name {
                bad(
                    &format!("tenant.headers.{name}"),
                    format!(
                        "{name:?} is the tenant header of tenant {:?}; Tessera sets it, remove it",
                        o.id
                    ),
                );
            }
        }
        if o.headers.iter().any(|(n, _)| *n == t.tenant_header) {
            bad(
                "tenant.tenant_header",
                format!(
                    "{:?} is set by tenant {:?}'s headers; pick another tenant header",
                    t.tenant_header, o.id
                ),
            );
        }
    }
    out
}

/// Owns the tenant definitions in force and applies changes (see the module doc).
pub struct Runtime {
    tenants: Arc<Tenants>,
    certs: Arc<CertStore>,
    keyring: Arc<ArcSwap<Keyring>>,
    store: Box<dyn TenantStore>,
    /// Serialises this instance's tenants API writes (read, check, write): two calls here
    /// cannot both pass the collision check. Across instances the store's write is a
    /// compare-and-set that also claims the hostnames (`store::PUT`).
    writes: tokio::sync::Mutex<()>,
    /// The restart-only sections as the process started with them.
    started_with: Vec<(&'static str, String)>,
    state: Mutex<State>,
}

impl Runtime {
    /// `cfg` is the config the process started with; `tenants` and `certs` were built from it.
    /// API tenants are loaded by the first `sync`.
    pub fn new(
        cfg: Config,
        tenants: Arc<Tenants>,
        certs: Arc<CertStore>,
        keyring: Arc<ArcSwap<Keyring>>,
        store: Box<dyn TenantStore>,
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            tenants,
            certs,
            keyring,
            store,
            writes: tokio::sync::Mutex::new(()),
            started_with: restart_signature(&cfg),
            state: Mutex::new(State {
                yaml_fingerprints: cfg.tenants.iter().map(crate::tenants::fingerprint).collect(),
                yaml: cfg,
                api: BTreeMap::new(),
                synced: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live tenant table.
    pub fn tenants(&self) -> &Arc<Tenants> {
        &self.tenants
    }

    /// Restart-only sections whose value in `next` differs from the running process.
    pub fn needs_restart(&self, next: &Config) -> Vec<&'static str> {
        restart_signature(next)
            .into_iter()
            .zip(&self.started_with)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect()
    }

    /// Build and swap the table and certificates for the YAML tenants plus the API tenants.
    /// Blocking when a new upstream must be resolved.
    fn swap_in(&self, st: &State) -> Result<Swap, TenantError> {
        let y = &st.yaml;
        let confs: Vec<(&TenantConf, [u8; 32])> = y
            .tenants
            .iter()
            .zip(st.yaml_fingerprints.iter().copied())
            .chain(st.api.values().map(|a| (&a.conf, a.fingerprint)))
            .collect();
        let swap = self
            .tenants
            .replace_fingerprinted(&confs, &y.upstream, &y.strip_headers)?;
        self.certs.replace(
            confs.iter().filter_map(|(t, _)| t.cert.clone()).collect(),
            y.tls.default_cert.clone(),
        );
        Ok(swap)
    }

    /// Apply a validated config: its tenants, anomaly, header and timeout settings and default
    /// certificate, with the API tenants on top. Blocking (DNS for new upstreams).
    pub fn apply_config(&self, next: Config) -> Result<Swap, RuntimeError> {
        let mut st = self.state();
        // The YAML is the static base: it may not take what an API tenant holds.
        let mut problems = Vec::new();
        for a in st.api.values() {
            problems.extend(conflicts(&a.conf, next.tenants.iter().map(|t| (t, "YAML"))));
        }
        if !problems.is_empty() {
            return Err(RuntimeError::Conflict {
                path: next.path.display().to_string(),
                problems,
            });
        }
        let fingerprints = next.tenants.iter().map(crate::tenants::fingerprint).collect();
        let prev_fingerprints = std::mem::replace(&mut st.yaml_fingerprints, fingerprints);
        let prev = std::mem::replace(&mut st.yaml, next);
        match self.swap_in(&st) {
            Ok(swap) => Ok(swap),
            Err(e) => {
                st.yaml = prev;
                st.yaml_fingerprints = prev_fingerprints;
                Err(e.into())
            }
        }
    }

    /// Re-read the config file and apply it (see the module doc). Blocking.
    pub fn reload_file(&self) -> Result<Swap, RuntimeError> {
        let path = self.state().yaml.path.clone();
        let next = Config::load(&path)?;
        let restart = self.needs_restart(&next);
        if !restart.is_empty() {
            log::warn!(
                "config {}: changes to {} need a restart and are not applied (the running values stay)",
                path.display(),
                restart.join(", ")
            );
        }
        self.apply_config(next)
    }

    /// Apply what changed in the store since the last sync (every instance, `TenantSync`;
    /// and right after a write here). A stored tenant that no longer validates, or collides
    /// with a YAML tenant, is logged and left out; the others apply. Returns whether a new
    /// version was applied.
    pub async fn sync(self: &Arc<Self>) -> Result<bool, StoreError> {
        let version = self.store.version().await?;
        let synced = self.state().synced;
        if version == synced {
            return Ok(false);
        }
        log::debug!("tenant sync: store at version {version}, applied {synced}");
        let versions = self.store.versions().await?;
        let stale: Vec<String> = {
            let st = self.state();
            versions
                .iter()
                .filter(|(id, v)| st.api.get(*id).is_none_or(|a| a.version != **v))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let fetched = self.store.get(&stale).await?;
        // Certificates are parsed and new upstreams resolved (blocking DNS): off the async threads.
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_synced(version, &versions, fetched))
            .await
            .map_err(|e| StoreError::Unavailable(format!("tenant sync task: {e}")))
    }

    /// The second half of `sync`: validate what was fetched and swap the result in.
    fn apply_synced(
        &self,
        version: u64,
        versions: &HashMap<String, u64>,
        fetched: Vec<(String, store::Stored)>,
    ) -> bool {
        let keyring = self.keyring.load_full();
        let mut st = self.state();
        st.api.retain(|id, _| versions.contains_key(id));
        for (id, stored) in fetched {
            let checked = match TenantDef::parse(&stored.json) {
                Ok(def) if def.id == id => def.validate(&keyring, &st.yaml.anomaly).and_then(|conf| {
                    let p = conflicts(&conf, st.yaml.tenants.iter().map(|t| (t, "YAML")));
                    if p.is_empty() {
                        Ok((def, conf))
                    } else {
                        Err(p)
                    }
                }),
                _ => Err(vec![Problem {
                    key: "tenant".into(),
                    message: "the stored definition does not parse".into(),
                }]),
            };
            match checked {
                Ok((def, conf)) => {
                    let version = stored.version;
                    let fingerprint = crate::tenants::fingerprint(&conf);
                    st.api.insert(
                        id,
                        ApiTenant {
                            version,
                            def,
                            conf,
                            fingerprint,
                        },
                    );
                }
                Err(p) => {
                    let list: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
                    log::error!("stored API tenant {id:?} left out: {}", list.join("; "));
                    st.api.remove(&id);
                }
            }
        }
        match self.swap_in(&st) {
            Ok(swap) => {
                st.synced = version;
                if !swap.is_empty() {
                    log::info!("API tenants at store version {version}: tenants {swap}");
                }
                true
            }
            Err(e) => {
                log::error!("API tenants at store version {version} not applied: {e}");
                false
            }
        }
    }
}

/// Background service: re-reads the config file when it changes (module doc).
pub struct ConfigReloader {
    pub runtime: Arc<Runtime>,
    pub path: std::path::PathBuf,
    pub interval: Duration,
}

impl ConfigReloader {
    /// One reload, counted and logged.
    async fn reload(&self) {
        let rt = self.runtime.clone();
        let res = tokio::task::spawn_blocking(move || rt.reload_file()).await;
        let path = self.path.display();
        match res {
            Ok(Ok(swap)) => {
                metrics::global().config_reloads.with_label_values(&["ok"]).inc();
                log::info!("config {path} reloaded: tenants {swap}");
            }
            Ok(Err(e)) => {
                // Count first: tests (and humans) read the log line as "it happened".
                metrics::global().config_reloads.with_label_values(&[e.label()]).inc();
                log::error!("config reload refused, the running config stays: {e}");
            }
            Err(e) => {
                metrics::global().config_reloads.with_label_values(&["error"]).inc();
                log::error!("config reload of {path} failed, the running config stays: {e}");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ConfigReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let last = Mutex::new(FileStamp::of(&[&self.path]));
        crate::watch::every(self.interval, &mut shutdown, || async {
            let now = FileStamp::of(&[&self.path]);
            let changed = {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::replace(&mut *last, now.clone()) != now
            };
            if changed {
                self.reload().await;
            }
        })
        .await
    }
}

/// Background service: applies tenant changes made on other instances (`Runtime::sync`).
pub struct TenantSync(pub Arc<Runtime>);

#[async_trait]
impl BackgroundService for TenantSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let failing = std::sync::atomic::AtomicBool::new(false);
        crate::watch::every(SYNC_INTERVAL, &mut shutdown, || async {
            match self.0.sync().await {
                Ok(_) => failing.store(false, std::sync::atomic::Ordering::Relaxed),
                Err(e) => {
                    if !failing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        log::warn!("tenant sync: {e}; retrying every {SYNC_INTERVAL:?}");
                    }
                }
            }
        })
        .await
    }
}
