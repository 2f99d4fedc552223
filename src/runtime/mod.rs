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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Config, ConfigError, TenantConf};
use crate::metrics;
use crate::tenants::{Swap, TenantError, Tenants};
use crate::tls::CertStore;
use crate::watch::FileStamp;

/// Config sections read once at start-up: a change is logged as needing a restart.
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "threads",
    "work_stealing",
    "grace_period",
    "store",
    "keys",
    "admin.tokens",
    "session_log",
    "metrics",
    "limits",
    "tls.reload_interval",
    "upstream.max_request_duration",
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
}

impl RuntimeError {
    /// The `result` label of `tessera_config_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RuntimeError::Invalid(_) => "invalid",
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
        ("grace_period", format!("{:?}", c.grace_period)),
        ("store", format!("{:?}", c.store)),
        ("keys", format!("{:?}", c.keys)),
        ("admin.tokens", format!("{:?}", c.admin_tokens)),
        ("session_log", format!("{:?}", c.session_log)),
        ("metrics", format!("{:?}", c.metrics)),
        ("limits", format!("{:?}", c.limits)),
        ("tls.reload_interval", format!("{:?}", c.tls.reload_interval)),
        ("upstream.max_request_duration", format!("{:?}", c.upstream.max_request)),
    ];
    debug_assert_eq!(v.len(), RESTART_ONLY.len());
    v
}

/// What is in force: the YAML config the tenants came from.
struct State {
    yaml: Config,
}

/// Owns the tenant definitions in force and applies changes (see the module doc).
pub struct Runtime {
    tenants: Arc<Tenants>,
    certs: Arc<CertStore>,
    /// The restart-only sections as the process started with them.
    started_with: Vec<(&'static str, String)>,
    state: Mutex<State>,
}

impl Runtime {
    /// `cfg` is the config the process started with; `tenants` and `certs` were built from it.
    pub fn new(cfg: Config, tenants: Arc<Tenants>, certs: Arc<CertStore>) -> Arc<Runtime> {
        Arc::new(Runtime {
            tenants,
            certs,
            started_with: restart_signature(&cfg),
            state: Mutex::new(State { yaml: cfg }),
        })
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

    /// Apply a validated config: its tenants, anomaly, header and timeout settings and default
    /// certificate. Blocking (DNS for new upstreams): call off the async threads.
    pub fn apply_config(&self, next: Config) -> Result<Swap, RuntimeError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let confs: Vec<&TenantConf> = next.tenants.iter().collect();
        let swap = self.tenants.replace(&confs, &next.upstream, &next.strip_headers)?;
        self.certs.replace(
            next.tenants.iter().map(|t| t.cert.clone()).collect(),
            next.tls.default_cert.clone(),
        );
        st.yaml = next;
        Ok(swap)
    }

    /// Re-read the config file and apply it (see the module doc). Blocking.
    pub fn reload_file(&self) -> Result<Swap, RuntimeError> {
        let path = self.state.lock().unwrap_or_else(|p| p.into_inner()).yaml.path.clone();
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
