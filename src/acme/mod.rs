//! Automatic certificates (ACME, RFC 8555) for API tenants created with `tls: {acme: true}`.
//!
//! Where it runs: `AcmeService` is a Pingora background service, never on the request path.
//! Every `TICK` it looks at the ACME tenants in force (`Runtime::acme_tenants`), sets
//! `tessera_cert_expiry_seconds{tenant}`, and starts an order (one task per tenant) for each
//! tenant without a certificate or whose certificate expires within `acme.renew_before`.
//! The request-path pieces answer the CA's validation: `Http01::answer`, called by the
//! proxy's `request_filter` for `GET /.well-known/acme-challenge/{token}` (a prefix check
//! before tenant lookup), or, with `challenge: tls-alpn-01`, `tls_alpn::TlsAlpn01` before
//! the HTTPS listener's TLS handshake (see that module).
//!
//! Flow of one order: take the tenant's lock in the store (`SET NX PX` in Redis, released by
//! compare-and-delete; process-local with the embedded store), sync and check again that the
//! certificate is still needed (another instance may have just installed one), load or create
//! the ACME account (credentials sealed under the keyring's KEK in the store, so every
//! instance uses one account), order, publish the key authorizations of the configured
//! challenge in the store (any instance behind the hostname can answer the CA), wait for the
//! order, finalize with a fresh key (rcgen), and install the chain and key into the tenant's stored definition
//! (`Runtime::acme_install`: key sealed, compare-and-set). Other instances get it through the
//! tenant sync.
//!
//! Failures (CA refusal, unreachable CA, validation failure) are counted
//! (`tessera_acme_orders_total{result="error"}`), logged without secrets and retried with
//! exponential backoff (`backoff`), per tenant: other tenants and `/readyz` are unaffected.
//! Until a tenant has its first certificate, handshakes for its hostnames get
//! `tls.default_cert` if one is configured, else are refused.

pub mod store;
pub mod tls_alpn;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::config::acme::{AcmeConf, Challenge};
use crate::fragments::StoreError;
use crate::runtime::{AcmeWant, Runtime};
use crate::token::Keyring;
use store::{AcmeStore, CHALLENGE_TTL};

/// How often the service looks for tenants needing a certificate.
pub const TICK: Duration = Duration::from_millis(500);
/// Lock lifetime: longer than an order can take (each wait below is bounded by `POLL`).
const LOCK_TTL: Duration = Duration::from_secs(300);
/// Longest wait for the CA to validate, then to issue.
const POLL: Duration = Duration::from_secs(60);
/// First retry delay after a failure, doubled per consecutive failure up to `BACKOFF_CAP`.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// AAD purpose of the sealed account credentials.
const ACCOUNT_PURPOSE: &str = "acme-account";
/// The HTTP-01 path prefix (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused or could not be reached.
    #[error("ACME server: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored account does not open (another keyring?) or does not parse.
    #[error("stored ACME account: {0}")]
    Account(String),
    /// The order did not become ready / valid.
    #[error("order for {hosts} ended {status}")]
    Order { hosts: String, status: String },
    /// The CA offered no challenge of the configured type for a name (e.g. a wildcard).
    #[error("no {challenge} challenge offered for {name}; wildcard names need dns-01, which Tessera does not answer")]
    NoChallenge { challenge: &'static str, name: String },
    /// The certificate could not be installed (tenant changed meanwhile, store down).
    #[error("installing the certificate: {0}")]
    Install(String),
}

/// Delay before retry number `failures` (≥ 1): `BACKOFF_BASE · 2^(failures-1)`, capped.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// Earliest notAfter of the certificates in a PEM chain; `None` if none parses.
pub fn not_after(chain_pem: &str) -> Option<SystemTime> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            let ts = cert.validity().not_after.timestamp();
            Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap_or(0)))
        })
        .min()
}

/// Whether `want` needs a (new) certificate at `now`.
fn needs_certificate(want: &AcmeWant, renew_before: Duration, now: SystemTime) -> bool {
    match want.not_after {
        None => true,
        Some(t) => t.duration_since(now).map_or(true, |left| left < renew_before),
    }
}

/// Answers HTTP-01 challenges (request path: the proxy's `request_filter`).
pub struct Http01 {
    store: Arc<AcmeStore>,
}

impl Http01 {
    /// The token of an HTTP-01 request path, if it is one (a cheap prefix check).
    pub fn token(path: &str) -> Option<&str> {
        path.strip_prefix(HTTP01_PREFIX)
    }

    /// The key authorization for `token`, if this or another instance published it.
    pub async fn answer(&self, token: &str) -> Option<String> {
        let ok = !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return None;
        }
        match self.store.get(&format!("http01:{token}")).await {
            Ok(v) => v.and_then(|v| String::from_utf8(v).ok()),
            Err(e) => {
                log::warn!("ACME http-01: store lookup failed: {e}");
                None
            }
        }
    }
}

/// Per-tenant retry state.
#[derive(Default)]
struct Attempt {
    failures: u32,
    next_try: Option<Instant>,
    running: bool,
}

/// What one attempt did.
enum Outcome {
    Ordered,
    /// Another instance holds the lock, or the certificate is no longer needed.
    Skipped,
}

struct Inner {
    conf: AcmeConf,
    runtime: Arc<Runtime>,
    keyring: Arc<ArcSwap<Keyring>>,
    store: Arc<AcmeStore>,
    account: tokio::sync::Mutex<Option<Account>>,
    attempts: Mutex<HashMap<String, Attempt>>,
    /// Tenants with a `tessera_cert_expiry_seconds` series.
    labelled: Mutex<HashSet<String>>,
}

/// The ACME background service (see the module doc).
pub struct AcmeService {
    inner: Arc<Inner>,
}

impl AcmeService {
    /// The service and the HTTP-01 answerer the proxy uses. `redis`: the shared store, if
    /// any (else the state is process-local: one instance).
    pub fn new(
        conf: AcmeConf,
        runtime: Arc<Runtime>,
        keyring: Arc<ArcSwap<Keyring>>,
        redis: Option<Arc<crate::fragments::redis::RedisStore>>,
    ) -> (AcmeService, Arc<Http01>) {
        let store = Arc::new(match redis {
            Some(r) => AcmeStore::Redis(r),
            None => AcmeStore::Local(store::Local::default()),
        });
        let http01 = Arc::new(Http01 { store: store.clone() });
        let inner = Arc::new(Inner {
            conf,
            runtime,
            keyring,
            store,
            account: tokio::sync::Mutex::new(None),
            attempts: Mutex::new(HashMap::new()),
            labelled: Mutex::new(HashSet::new()),
        });
        (AcmeService { inner }, http01)
    }

    /// The HTTPS listener's pre-TLS callback when the challenge is `tls-alpn-01`.
    pub fn tls_alpn01(&self) -> Option<Arc<tls_alpn::TlsAlpn01>> {
        (self.inner.conf.challenge == Challenge::TlsAlpn01).then(|| {
            Arc::new(tls_alpn::TlsAlpn01 {
                store: self.inner.store.clone(),
            })
        })
    }
}

impl Inner {
    /// One look at the ACME tenants: metrics, and an order task for each one due.
    fn tick(self: &Arc<Self>) {
        let wants = self.runtime.acme_tenants();
        let now = SystemTime::now();
        let m = &crate::metrics::global().cert_expiry;
        {
            let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
            let ids: HashSet<String> = wants.iter().map(|w| w.id.clone()).collect();
            for gone in labelled.difference(&ids) {
                let _ = m.remove_label_values(&[gone]);
            }
            labelled.retain(|id| ids.contains(id));
            for w in &wants {
                if let Some(t) = w.not_after {
                    let secs = match t.duration_since(now) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    m.with_label_values(&[&w.id]).set(secs);
                    labelled.insert(w.id.clone());
                }
            }
        }
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        attempts.retain(|id, _| wants.iter().any(|w| &w.id == id));
        let instant = Instant::now();
        for w in wants {
            if !needs_certificate(&w, self.conf.renew_before, now) {
                continue;
            }
            let a = attempts.entry(w.id.clone()).or_default();
            if a.running || a.next_try.is_some_and(|t| t > instant) {
                continue;
            }
            a.running = true;
            let this = self.clone();
            tokio::spawn(async move { this.attempt(w).await });
        }
    }

    async fn attempt(self: Arc<Self>, want: AcmeWant) {
        let res = self.order_locked(&want).await;
        let orders = &crate::metrics::global().acme_orders;
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let a = attempts.entry(want.id.clone()).or_default();
        a.running = false;
        match res {
            Ok(Outcome::Ordered) => {
                orders.with_label_values(&["ok"]).inc();
                a.failures = 0;
                a.next_try = None;
            }
            Ok(Outcome::Skipped) => {
                // Another instance is ordering: look again a little later.
                a.next_try = Some(Instant::now() + BACKOFF_BASE);
            }
            Err(e) => {
                orders.with_label_values(&["error"]).inc();
                a.failures = a.failures.saturating_add(1);
                let wait = backoff(a.failures);
                a.next_try = Some(Instant::now() + wait);
                log::warn!(
                    "ACME: order for tenant {:?} ({}) failed (attempt {}), retrying in {wait:?}: {e}",
                    want.id,
                    want.hostnames.join(", "),
                    a.failures
                );
            }
        }
    }

    /// Lock, check again, order, unlock.
    async fn order_locked(&self, want: &AcmeWant) -> Result<Outcome, AcmeError> {
        let Some(token) = self.store.lock(&want.id, LOCK_TTL).await? else {
            return Ok(Outcome::Skipped);
        };
        let res = async {
            let fresh = self.runtime.acme_still_wanted(want).await.map_err(AcmeError::Install)?;
            match fresh {
                Some(w) if needs_certificate(&w, self.conf.renew_before, SystemTime::now()) => {
                    self.order(&w).await.map(|()| Outcome::Ordered)
                }
                _ => Ok(Outcome::Skipped),
            }
        }
        .await;
        if let Err(e) = self.store.unlock(&want.id, &token).await {
            log::warn!(
                "ACME: releasing the lock of tenant {:?} failed ({e}); it expires in {LOCK_TTL:?}",
                want.id
            );
        }
        res
    }

    /// The account: cached, else from the store (sealed), else created and stored.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let dir = &self.conf.directory;
        let key = format!("account:{}", hex::encode(sha2::Sha256::digest(dir.as_bytes())));
        let stored = self.store.get(&key).await?;
        let account = match stored {
            Some(sealed) => self.restore(&sealed).await?,
            None => {
                let contact: Vec<&str> = self.conf.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, creds) = self.builder()?.create(&new, dir.clone(), None).await?;
                let json = Zeroizing::new(
                    serde_json::to_vec(&creds).map_err(|e| AcmeError::Account(format!("serialising: {e}")))?,
                );
                let sealed = crate::token::seal_secret(&self.keyring.load(), ACCOUNT_PURPOSE, dir, &json);
                if self.store.set(&key, &sealed, None, true).await? {
                    log::info!("ACME: account created at {dir} and stored (sealed)");
                    account
                } else {
                    // Another instance stored its account first: use that one.
                    match self.store.get(&key).await? {
                        Some(theirs) => self.restore(&theirs).await?,
                        None => account,
                    }
                }
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.conf.ca_file {
            Some(p) => Account::builder_with_root(p)?,
            None => Account::builder()?,
        })
    }

    async fn restore(&self, sealed: &[u8]) -> Result<Account, AcmeError> {
        let json = crate::token::open_secret(&self.keyring.load(), ACCOUNT_PURPOSE, &self.conf.directory, sealed)
            .map_err(|e| AcmeError::Account(format!("does not open under the keyring: {e}")))?;
        let creds: AccountCredentials =
            serde_json::from_slice(&json).map_err(|e| AcmeError::Account(format!("does not parse: {e}")))?;
        Ok(self.builder()?.from_credentials(creds).await?)
    }

    /// One order for `want`'s hostnames, installed on success.
    async fn order(&self, want: &AcmeWant) -> Result<(), AcmeError> {
        let started = Instant::now();
        let account = self.account().await?;
        let ids: Vec<Identifier> = want.hostnames.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut published = Vec::new();
        let res = async {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Order {
                            hosts: want.hostnames.join(", "),
                            status: format!("with an authorization {other:?}"),
                        })
                    }
                }
                let name = authz.identifier().to_string();
                let challenge = self.conf.challenge;
                let kind = match challenge {
                    Challenge::Http01 => ChallengeType::Http01,
                    Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                };
                let mut ch = authz.challenge(kind).ok_or_else(|| AcmeError::NoChallenge {
                    challenge: challenge.label(),
                    name: name.clone(),
                })?;
                let key_auth = ch.key_authorization();
                // HTTP-01 is looked up by the token in the path, TLS-ALPN-01 by the SNI name.
                let suffix = match challenge {
                    Challenge::Http01 => format!("http01:{}", ch.token),
                    Challenge::TlsAlpn01 => tls_alpn::store_key(&name),
                };
                self.store
                    .set(&suffix, key_auth.as_str().as_bytes(), Some(CHALLENGE_TTL), false)
                    .await?;
                published.push(suffix);
                ch.set_ready().await?;
            }
            let policy = RetryPolicy::new().timeout(POLL);
            let status = order.poll_ready(&policy).await?;
            if status != OrderStatus::Ready {
                return Err(AcmeError::Order {
                    hosts: want.hostnames.join(", "),
                    status: format!("{status:?} (validation failed)"),
                });
            }
            let key_pem = Zeroizing::new(order.finalize().await?);
            let chain = order.poll_certificate(&policy).await?;
            Ok((chain, key_pem))
        }
        .await;
        for s in &published {
            if let Err(e) = self.store.delete(s).await {
                log::debug!("ACME: removing a challenge failed ({e}); it expires by itself");
            }
        }
        let (chain, key_pem) = res?;
        let until = not_after(&chain);
        self.runtime
            .acme_install(want, chain, key_pem)
            .await
            .map_err(AcmeError::Install)?;
        log::info!(
            "ACME: certificate for tenant {:?} ({}) installed in {:?}; expires in {:?}",
            want.id,
            want.hostnames.join(", "),
            started.elapsed(),
            until.and_then(|t| t.duration_since(SystemTime::now()).ok())
        );
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::watch::every(TICK, &mut shutdown, || async {
            self.inner.tick();
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(12), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn renewal_is_due_within_renew_before_only() {
        let now = SystemTime::now();
        let mut w = AcmeWant {
            id: "a".into(),
            hostnames: vec!["a.example".into()],
            not_after: None,
        };
        let day = Duration::from_secs(86_400);
        assert!(needs_certificate(&w, 30 * day, now));
        w.not_after = Some(now + 60 * day);
        assert!(!needs_certificate(&w, 30 * day, now));
        w.not_after = Some(now + 10 * day);
        assert!(needs_certificate(&w, 30 * day, now));
        w.not_after = Some(now - day);
        assert!(needs_certificate(&w, 30 * day, now));
    }

    #[test]
    fn not_after_is_the_earliest_of_the_chain() {
        let ca = crate::demo::certs::DemoCa::new("t").unwrap();
        let leaf = ca.issue(&["a.example"]).unwrap();
        let t = not_after(&leaf.cert_pem).unwrap();
        assert!(t > SystemTime::now());
        assert!(not_after("not a pem").is_none());
    }

    #[test]
    fn http01_token_is_a_prefix_match() {
        assert_eq!(Http01::token("/.well-known/acme-challenge/abc"), Some("abc"));
        assert_eq!(Http01::token("/.well-known/acme-challengeX"), None);
        assert_eq!(Http01::token("/v1/x"), None);
    }

    #[tokio::test]
    async fn http01_answers_published_tokens_only() {
        let store = Arc::new(AcmeStore::Local(store::Local::default()));
        store
            .set("http01:tok_1", b"tok_1.thumb", Some(CHALLENGE_TTL), false)
            .await
            .unwrap();
        let h = Http01 { store };
        assert_eq!(h.answer("tok_1").await.as_deref(), Some("tok_1.thumb"));
        assert_eq!(h.answer("tok_2").await, None);
        assert_eq!(h.answer("../x").await, None);
    }
}
