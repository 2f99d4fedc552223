//! `tessera serve`: build every service from a validated `Config` and run Pingora.
//!
//! Services: the proxy (HTTPS listener, optional plaintext listener), the admin API, the
//! metrics endpoint, and background services (certificate/keyring/config reloaders, Redis
//! tracker, session log writer, anomaly score sweeper).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::{AdminApp, AdminState};
use crate::anomaly::{Detector, Sweeper};
use crate::config::{Config, KeysConf, StoreConf};
use crate::fragments::redis::RedisStore;
use crate::fragments::{EmbeddedStore, FragmentStore, StoreError};
use crate::metrics::{self, MetricsApp};
use crate::proxy::{HandshakeHook, Proxy};
use crate::session_log::{self, SessionStore};
use crate::tenants::{TenantError, Tenants};
use crate::tls::CertStore;
use crate::token::{Keyring, KeyringError};
use crate::watch::FileStamp;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("TLS listener setup: {0}")]
    Tls(String),
    #[error("runtime: {0}")]
    Runtime(String),
}

/// Options of `tessera serve` that are not in the config file.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// Take over the listening sockets of a running Tessera (zero-downtime upgrade).
    pub upgrade: bool,
    /// Unix socket used to hand listeners over during an upgrade.
    pub upgrade_sock: Option<PathBuf>,
}

/// Load the keyring named in config.
pub fn load_keyring(keys: &KeysConf) -> Result<Keyring, KeyringError> {
    match keys {
        KeysConf::File(p) => Keyring::load_file(p),
        KeysConf::Env(v) => Keyring::load_env(v),
    }
}

/// A runtime that lives as long as the process, for clients (Redis) whose background tasks
/// must outlive any one Pingora service runtime.
fn client_runtime() -> Result<&'static tokio::runtime::Runtime, ServeError> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tessera-clients")
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    Ok(RT.get_or_init(|| rt))
}

/// Keeps the keyring fresh: re-reads the file when it changes.
struct KeyringReloader {
    path: PathBuf,
    keyring: Arc<ArcSwap<Keyring>>,
    interval: Duration,
}

#[async_trait]
impl BackgroundService for KeyringReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stamp = |p: &PathBuf| FileStamp::of(&[p]);
        let mut last = stamp(&self.path);
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let now = stamp(&self.path);
                    if now == last {
                        continue;
                    }
                    last = now;
                    match Keyring::load_file(&self.path) {
                        Ok(k) => {
                            log::info!("keyring reloaded: active kid {}", k.active().kid);
                            self.keyring.store(Arc::new(k));
                        }
                        Err(e) => log::error!("keyring reload failed, keeping the previous keyring: {e}"),
                    }
                }
            }
        }
    }
}

/// Build everything and run until SIGTERM/SIGINT. Does not return on success.
pub fn run(cfg: Config, opts: ServeOptions) -> Result<(), ServeError> {
    pingora::tls::install_default_crypto_provider();
    metrics::global().set_tenant_label_cap(cfg.metrics.tenant_label_cap);
    let keyring = Arc::new(ArcSwap::from_pointee(load_keyring(&cfg.keys)?));
    crate::token::prepare_refusal_decoy();
    let tenants = Tenants::new(&cfg.tenants, &cfg.upstream, &cfg.strip_headers)?;

    let mut server = pingora_server(&cfg, &opts);
    // With --upgrade this blocks until the old process hands its listeners over (SIGQUIT).
    // The embedded store is opened afterwards: the old process releases the file right then.
    server.bootstrap();
    let (store, redis, tenant_store) = open_store(&cfg, &opts, &server)?;
    let (certs, tls) = tls_settings(&cfg, &tenants)?;
    // Tenants at runtime: config reload and the tenants API. API tenants are loaded before
    // serving; if the store does not answer yet, `TenantSync` loads them when it does.
    let runtime = crate::runtime::Runtime::new(
        cfg.clone(),
        tenants.clone(),
        certs.clone(),
        keyring.clone(),
        tenant_store,
    );
    if let Err(e) = client_runtime()?.block_on(runtime.sync()) {
        log::warn!("API tenants not loaded at start ({e}); they will be when the store answers");
    }

    let sessions_store = SessionStore::new(cfg.session_log.clone(), redis.clone(), tenants.clone());
    let (sessions, writer) = session_log::channel(sessions_store.clone());
    let anomaly = Detector::new(tenants.clone());

    // Automatic certificates (`acme:`): a background service plus the HTTP-01 answerer.
    let acme = cfg
        .acme
        .clone()
        .map(|conf| crate::acme::AcmeService::new(conf, runtime.clone(), keyring.clone(), redis.clone()));
    let guard = crate::guard::Guard::new(cfg.limits);
    let proxy = Proxy {
        tenants: tenants.clone(),
        store: store.clone(),
        keyring: keyring.clone(),
        sessions,
        anomaly: anomaly.clone(),
        max_request: cfg.upstream.max_request,
        preserve_header_case: cfg.preserve_header_case,
        guard: guard.clone(),
        oauth: Arc::new(crate::oauth::OAuth::default()),
        acme: acme.as_ref().map(|(_, h)| h.clone()),
    };
    let conf = server.configuration.clone();
    // The connection guard wraps Pingora's HTTP app (slowloris and HTTP/2 rapid-reset limits).
    // The lean path (`proxy::lean`) takes the requests it can serve without pingora-proxy's
    // machinery and hands the rest to Pingora's HttpProxy; both run the same `Proxy`.
    let mut general = pingora::proxy::http_proxy(&conf, proxy.clone());
    crate::guard::Guard::prepare(&mut general);
    let http = crate::proxy::Lean::new(Arc::new(proxy), general, &conf, cfg.lean_path);
    let mut proxy_service = Service::new("tessera proxy".to_string(), guard.wrap(http));
    proxy_service.add_tls_with_settings(&cfg.listen.https.to_string(), None, tls);
    // ACME TLS-ALPN-01 is answered before Pingora's handshake (`crate::acme::tls_alpn`).
    if let Some(answerer) = acme.as_ref().and_then(|(service, _)| service.tls_alpn01()) {
        proxy_service.endpoints().set_pre_tls_callback(answerer);
    }
    if let Some(http) = cfg.listen.http {
        proxy_service.add_tcp(&http.to_string());
    }
    server.add_service(proxy_service);

    if let Some(addr) = cfg.listen.admin {
        let console = crate::console::Console::new(&cfg.admin, tenants.clone());
        server.add_service(background_service(
            "console history sampler",
            crate::console::history::Sampler(console.history.clone()),
        ));
        let state = Arc::new(AdminState {
            tokens: cfg.admin_tokens.clone(),
            tenants: tenants.clone(),
            store: store.clone(),
            keyring: keyring.clone(),
            sessions: sessions_store,
            anomaly: anomaly.clone(),
            audit: crate::console::audit::AuditLog::new(cfg.admin.audit_capacity),
            console,
            runtime: runtime.clone(),
        });
        let mut admin = Service::new("tessera admin".to_string(), AdminApp(state));
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    if let Some(addr) = cfg.listen.metrics {
        let mut m = Service::new("tessera metrics".to_string(), MetricsApp);
        m.add_tcp(&addr.to_string());
        server.add_service(m);
    }

    server.add_service(background_service("certificate reloader", ArcService(certs.clone())));
    if let Some((service, _)) = acme {
        server.add_service(background_service("acme", service));
    }
    if let KeysConf::File(path) = &cfg.keys {
        server.add_service(background_service(
            "keyring reloader",
            KeyringReloader {
                path: path.clone(),
                keyring,
                interval: cfg.tls.reload_interval,
            },
        ));
    }
    if let Some(r) = &redis {
        server.add_service(background_service("redis tracker", r.tracker()));
        server.add_service(background_service(
            "tenant sync",
            crate::runtime::TenantSync(runtime.clone()),
        ));
    }
    server.add_service(background_service(
        "upstream DNS refresher",
        crate::tenants::DnsRefresher {
            tenants: tenants.clone(),
            interval: Duration::from_secs(30),
        },
    ));
    server.add_service(background_service("session log writer", writer));
    server.add_service(background_service("anomaly sweeper", Sweeper(anomaly)));

    log::info!(
        "tessera listening: https={} http={:?} admin={:?} metrics={:?}; {} tenant(s)",
        cfg.listen.https,
        cfg.listen.http,
        cfg.listen.admin,
        cfg.listen.metrics,
        tenants.load().len()
    );
    let (path, interval) = (cfg.path.clone(), cfg.tls.reload_interval);
    server.add_service(background_service(
        "config reloader",
        crate::runtime::ConfigReloader {
            runtime,
            path,
            interval,
        },
    ));
    server.run_forever();
}

/// The Pingora server: threads, grace period, the upgrade socket.
fn pingora_server(cfg: &Config, opts: &ServeOptions) -> Server {
    let mut conf = ServerConf {
        threads: cfg.threads,
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(cfg.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(cfg.grace_period.as_secs().max(1)),
        ..ServerConf::default()
    };
    conf.upgrade_sock = opts
        .upgrade_sock
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("/tmp/tessera-upgrade-{}.sock", cfg.listen.https.port()));
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    Server::new_with_opt_and_conf(opt, conf)
}

/// The store the proxy reads, its Redis side when there is one (tracking, session streams),
/// and where API tenants are kept (`runtime::store`).
type OpenedStore = (
    Arc<dyn FragmentStore>,
    Option<Arc<RedisStore>>,
    Box<dyn crate::runtime::store::TenantStore>,
);

/// Open the fragment store. The embedded store waits for an upgraded-from process to release
/// its file and releases it in turn when a new process takes our listeners (SIGQUIT); the
/// Redis store's background tasks live on the process-wide client runtime.
fn open_store(cfg: &Config, opts: &ServeOptions, server: &Server) -> Result<OpenedStore, ServeError> {
    match &cfg.store {
        StoreConf::Embedded { path } => {
            metrics::global().store_up.set(1);
            metrics::global().tracking_up.set(1);
            let wait = if opts.upgrade {
                cfg.grace_period + Duration::from_secs(5)
            } else {
                Duration::ZERO
            };
            let e = Arc::new(EmbeddedStore::open_with_retry(path, wait)?);
            let mut phases = server.watch_execution_phase();
            let released = e.clone();
            client_runtime()?.spawn(async move {
                while let Ok(phase) = phases.recv().await {
                    if matches!(phase, pingora::server::ExecutionPhase::GracefulUpgradeTransferringFds) {
                        released.release();
                    }
                }
            });
            let tenants = Box::new(crate::runtime::store::EmbeddedTenants {
                store: e.clone(),
                lock: Default::default(),
            });
            Ok((e, None, tenants))
        }
        StoreConf::Redis(rc) => {
            let rt = client_runtime()?;
            let _guard = rt.enter();
            let r = RedisStore::new(rc.clone())?;
            let tenants = Box::new(crate::runtime::store::RedisTenants { redis: r.clone() });
            Ok((r.clone(), Some(r), tenants))
        }
    }
}

/// TLS for the HTTPS listener: certificates by SNI (hot-reloaded by the returned store), SNI
/// captured for routing, h2 + h1 via ALPN.
fn tls_settings(cfg: &Config, tenants: &Arc<Tenants>) -> Result<(Arc<CertStore>, TlsSettings), ServeError> {
    let certs = CertStore::new(
        cfg.tenants.iter().filter_map(|t| t.cert.clone()).collect(),
        cfg.tls.default_cert.clone(),
        cfg.tls.reload_interval,
    );
    let mut tls = TlsSettings::with_callbacks(Box::new(HandshakeHook {
        tenants: tenants.clone(),
    }))
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    tls.set_cert_resolver(certs.resolver());
    tls.enable_h2();
    Ok((certs, tls))
}

/// Adapter: a background service held in an `Arc`.
struct ArcService<T>(Arc<T>);

#[async_trait]
impl<T: BackgroundService + Send + Sync> BackgroundService for ArcService<T> {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.start(shutdown).await
    }
}
