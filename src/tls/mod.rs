//! Downstream TLS: certificate per SNI name, captured SNI, hot reload.
//!
//! Runs during the TLS handshake, before any HTTP: `SniResolver::resolve` picks the
//! certificate (a map lookup, certs are already parsed). The proxy's handshake hook
//! (`proxy::handshake`) then records the SNI name and its tenant for `request_filter`.
//! `CertReloader` is a background service polling the files every `tls.reload_interval`.
//!
//! Pingora 0.9 with rustls never calls `certificate_callback`, so the resolver is installed with
//! `TlsSettings::set_cert_resolver`, and SNI is not in the digest unless captured in
//! `handshake_complete_callback`. Both were checked against pingora-core 0.9.1.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::host::{HostMap, HostPattern};
use crate::watch::FileStamp;

/// Why a certificate pair was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM certificate.
    #[error("cannot read certificate file {path}: {reason}; give a PEM file with the leaf certificate first")]
    Cert { path: String, reason: String },
    /// The key file could not be read or parsed.
    #[error("cannot read private key {path}: {reason}; give a PEM PKCS#8, PKCS#1 or SEC1 key")]
    Key { path: String, reason: String },
    /// The key does not belong to the certificate, or is an unsupported type.
    #[error("key {key} does not match certificate {cert} ({reason})")]
    Mismatch { cert: String, key: String, reason: String },
    /// The certificate does not name one of the tenant's hostnames.
    #[error("certificate {cert} does not cover hostname {host}; reissue it with that name in subjectAltName")]
    NotCovered { cert: String, host: String },
}

/// A certificate/key pair on disk, loaded and checked.
#[derive(Clone)]
pub struct CertSource {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub hostnames: Vec<HostPattern>,
    pub key: Arc<CertifiedKey>,
    stamp: FileStamp,
    /// Given as PEM text (admin API) rather than files: nothing to watch, `cert_path` is a
    /// label for messages.
    in_memory: bool,
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSource")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish()
    }
}

fn stamp_of(cert: &Path, key: &Path) -> FileStamp {
    FileStamp::of(&[cert, key])
}

impl CertSource {
    /// Load a pair and check that the certificate covers every hostname.
    pub fn load(cert_path: PathBuf, key_path: PathBuf, hostnames: &[HostPattern]) -> Result<CertSource, TlsError> {
        let stamp = stamp_of(&cert_path, &key_path);
        let key = load_certified_key(&cert_path, &key_path, hostnames)?;
        Ok(CertSource {
            cert_path,
            key_path,
            hostnames: hostnames.to_vec(),
            key,
            stamp,
            in_memory: false,
        })
    }

    /// A pair given as PEM text (tenants created through the admin API); `label` names it in
    /// messages. Same checks as `load`.
    pub fn from_pem(
        label: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        hostnames: &[HostPattern],
    ) -> Result<CertSource, TlsError> {
        let path = PathBuf::from(label);
        let key = certified_key_from_pem(label, cert_pem, label, key_pem, hostnames)?;
        Ok(CertSource {
            stamp: FileStamp::of(&[]),
            cert_path: path.clone(),
            key_path: path,
            hostnames: hostnames.to_vec(),
            key,
            in_memory: true,
        })
    }
}

/// Parse PEM files into a rustls `CertifiedKey`, checking the key matches and the names are
/// covered.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    hostnames: &[HostPattern],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let (cert_name, key_name) = (cert_path.display().to_string(), key_path.display().to_string());
    let cert_pem = std::fs::read(cert_path).map_err(|e| TlsError::Cert {
        path: cert_name.clone(),
        reason: e.to_string(),
    })?;
    // The key bytes are wiped once parsed.
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|e| TlsError::Key {
        path: key_name.clone(),
        reason: e.to_string(),
    })?);
    certified_key_from_pem(&cert_name, &cert_pem, &key_name, &key_pem, hostnames)
}

/// `load_certified_key` on PEM text; `cert_path` and `key_path` name the sources in messages.
fn certified_key_from_pem(
    cert_path: &str,
    cert_pem: &[u8],
    key_path: &str,
    key_pem: &[u8],
    hostnames: &[HostPattern],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_path.to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.to_string(),
        reason: e.to_string(),
    })?;
    let leaf = webpki::EndEntityCert::try_from(&certs[0])
        .map_err(|e| cert_err(format!("leaf certificate does not parse: {e}")))?;
    for h in hostnames {
        let probe = match h {
            HostPattern::Exact(n) => n.clone(),
            HostPattern::Wildcard(n) => format!("tessera-probe.{n}"),
        };
        let covered = ServerName::try_from(probe.as_str())
            .ok()
            .is_some_and(|sn| leaf.verify_is_valid_for_subject_name(&sn).is_ok());
        if !covered {
            return Err(TlsError::NotCovered {
                cert: cert_path.to_string(),
                host: h.to_string(),
            });
        }
    }
    pingora::tls::install_default_crypto_provider();
    let provider = pingora::tls::CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| TlsError::Mismatch {
            cert: cert_path.to_string(),
            key: key_path.to_string(),
            reason: "no crypto provider installed".into(),
        })?;
    let ck = CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_string(),
        key: key_path.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(ck))
}

/// A PEM bundle of CA certificates given as text (admin API `upstream_ca`) as DER blobs.
pub fn ca_ders_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse the PEM CA bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no CERTIFICATE block; give PEM CA certificates".into());
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// Read a PEM bundle of CA certificates (for `upstream_ca`) as DER blobs.
pub fn load_ca_ders(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            format!(
                "cannot read {}: {e}; give a PEM file of CA certificates",
                path.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no CERTIFICATE block; give a PEM file of CA certificates",
            path.display()
        ));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// Hostname → certificate map, rebuilt whole on every reload and swapped atomically.
#[derive(Default)]
struct CertTable {
    names: HostMap<Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    fn build(sources: &[CertSource], default: Option<&CertSource>) -> CertTable {
        let mut t = CertTable {
            default: default.map(|d| d.key.clone()),
            ..Default::default()
        };
        for s in sources {
            for h in &s.hostnames {
                t.names.insert(h, s.key.clone());
            }
        }
        t
    }
}

/// rustls certificate resolver: SNI name → tenant certificate (or the default).
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        match hello.server_name() {
            // rustls hands over SNI already lower-cased (DnsName normalises it).
            Some(name) => table.names.get(name).or(table.default.as_ref()).cloned(),
            None => table.default.clone(),
        }
    }
}

/// Owns the certificate sources, the live resolver and the reload loop.
pub struct CertStore {
    resolver: Arc<SniResolver>,
    state: std::sync::Mutex<ReloadState>,
    interval: Duration,
}

struct ReloadState {
    sources: Vec<CertSource>,
    default: Option<CertSource>,
}

impl CertStore {
    pub fn new(sources: Vec<CertSource>, default: Option<CertSource>, interval: Duration) -> Arc<CertStore> {
        let table = CertTable::build(&sources, default.as_ref());
        Arc::new(CertStore {
            resolver: Arc::new(SniResolver {
                table: ArcSwap::from_pointee(table),
            }),
            state: std::sync::Mutex::new(ReloadState { sources, default }),
            interval,
        })
    }

    pub fn resolver(&self) -> Arc<SniResolver> {
        self.resolver.clone()
    }

    /// Serve exactly `sources` (and `default`) from now on: the tenant set changed at runtime
    /// (`crate::runtime`). The new map is swapped in whole; handshakes in progress finish on
    /// the old one. Sources keep their own file stamps, so unchanged files are not re-read.
    pub fn replace(&self, sources: Vec<CertSource>, default: Option<CertSource>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.resolver
            .table
            .store(Arc::new(CertTable::build(&sources, default.as_ref())));
        *st = ReloadState { sources, default };
    }

    /// Check every pair once; reload those whose files changed. A pair that fails to load
    /// keeps serving the old certificate and is logged. Returns the number reloaded.
    pub fn reload_changed(&self) -> usize {
        let Ok(mut st) = self.state.lock() else {
            return 0;
        };
        let mut reloaded = 0;
        let ReloadState { sources, default } = &mut *st;
        for s in sources.iter_mut().chain(default.iter_mut()).filter(|s| !s.in_memory) {
            let now = stamp_of(&s.cert_path, &s.key_path);
            if now == s.stamp {
                continue;
            }
            s.stamp = now;
            match load_certified_key(&s.cert_path, &s.key_path, &s.hostnames) {
                Ok(k) => {
                    s.key = k;
                    reloaded += 1;
                    crate::metrics::global().cert_reloads.with_label_values(&["ok"]).inc();
                    log::info!("reloaded certificate {}", s.cert_path.display());
                }
                Err(e) => {
                    // Count first: tests (and humans) read the log line as "it happened".
                    crate::metrics::global()
                        .cert_reloads
                        .with_label_values(&["error"])
                        .inc();
                    log::error!("certificate reload failed, keeping the previous one: {e}");
                }
            }
        }
        if reloaded > 0 {
            self.resolver
                .table
                .store(Arc::new(CertTable::build(sources, default.as_ref())));
        }
        reloaded
    }
}

#[async_trait]
impl BackgroundService for CertStore {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::watch::every(self.interval, &mut shutdown, || async {
            self.reload_changed();
        })
        .await
    }
}
