//! TLS-ALPN-01 (RFC 8737) answered on the HTTPS listener, for `acme.challenge: tls-alpn-01`.
//!
//! Where it runs: after TCP accept, before Pingora's TLS handshake, as the HTTPS listener's
//! pre-TLS callback (installed only when this challenge is configured; otherwise no
//! connection pays for it). It reads the ClientHello (rustls parses it), puts the bytes back
//! (`Stream::rewind`) and returns: every ordinary connection then handshakes with Pingora as
//! before, the ClientHello read once more from memory.
//!
//! A ClientHello that offers the `acme-tls/1` protocol is the CA validating a name. For
//! its SNI name the answerer fetches the key authorization the ordering instance published
//! in the ACME store (`acme:tlsalpn01:<name>`, shared in Redis, so any instance behind the
//! hostname can answer), builds the challenge certificate (self-signed, the name in
//! subjectAltName, the critical `acmeIdentifier` extension holding SHA-256 of the key
//! authorization) and completes that handshake itself with ALPN `acme-tls/1`. The
//! connection is then closed: RFC 8737 §3 allows no application data on it. Pingora logs
//! the closed connection as a "downstream handshake error" naming this module's reason.
//!
//! Why not through the SNI resolver: Pingora 0.9's `TlsSettings` takes its ALPN list from a
//! closed enum (`h2`, `http/1.1`), and rustls refuses a client whose only protocol is not on
//! the server's list (`no_application_protocol`) before any resolver could help. The pre-TLS
//! callback is Pingora's own hook for work before the handshake (PROXY protocol).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::{Error, ErrorType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::store::AcmeStore;
use crate::config::acme::Challenge;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// The longest ClientHello read before giving up on parsing it (the connection then goes
/// to Pingora untouched, which refuses it if it is not TLS).
const MAX_HELLO: usize = 64 * 1024;
/// How long to wait for the ClientHello before handing the connection to Pingora as is.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// Longest time for the validation handshake and close.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The store key of a name's key authorization.
pub fn store_key(name: &str) -> String {
    format!("tlsalpn01:{}", name.to_ascii_lowercase())
}

/// What the first flight of a connection asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// An ordinary client (or not TLS, or not complete in time): Pingora handles it.
    Ordinary,
    /// A TLS-ALPN-01 validation for this SNI name (`None`: the CA sent no SNI).
    Validation(Option<String>),
}

/// Classify a ClientHello fed in pieces; `None` while more bytes are needed.
#[derive(Default)]
pub struct HelloParser {
    acceptor: Acceptor,
}

impl HelloParser {
    /// Feed bytes; `Some` once the ClientHello is complete or the input is not one.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Hello> {
        while !bytes.is_empty() {
            if self.acceptor.read_tls(&mut bytes).is_err() {
                return Some(Hello::Ordinary);
            }
        }
        match self.acceptor.accept() {
            Ok(None) => None,
            Err(_) => Some(Hello::Ordinary),
            Ok(Some(accepted)) => Some(classify(&accepted.client_hello())),
        }
    }
}

fn classify(hello: &ClientHello<'_>) -> Hello {
    let acme = hello.alpn().is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_1));
    if acme {
        Hello::Validation(hello.server_name().map(str::to_owned))
    } else {
        Hello::Ordinary
    }
}

/// Why a validation handshake was not answered.
#[derive(Debug, thiserror::Error)]
pub enum TlsAlpnError {
    /// The CA sent no SNI name.
    #[error("TLS-ALPN-01 validation without an SNI name")]
    NoName,
    /// No order published a key authorization for the name.
    #[error("no TLS-ALPN-01 challenge pending for {0:?}")]
    NotPending(String),
    /// The store did not answer.
    #[error("store: {0}")]
    Store(String),
    /// The challenge certificate could not be built.
    #[error("building the challenge certificate for {name:?}: {reason}")]
    Certificate { name: String, reason: String },
    /// The validation handshake failed or timed out.
    #[error("validation handshake for {name:?}: {reason}")]
    Handshake { name: String, reason: String },
}

/// The challenge certificate for `name` and key authorization `key_auth` (RFC 8737 §3).
pub fn challenge_certificate(name: &str, key_auth: &[u8]) -> Result<Arc<CertifiedKey>, TlsAlpnError> {
    let bad = |reason: String| TlsAlpnError::Certificate {
        name: name.to_string(),
        reason,
    };
    let digest = sha2::Sha256::digest(key_auth);
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| bad(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| bad(e.to_string()))?;
    let der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    pingora::tls::install_default_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| bad("no crypto provider installed".into()))?;
    // Not `CertifiedKey::from_der`: its key/certificate check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension it does not know.
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![der], signing)))
}

/// Always the one challenge certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The HTTPS listener's pre-TLS callback (see the module doc).
pub struct TlsAlpn01 {
    pub(super) store: Arc<AcmeStore>,
}

impl TlsAlpn01 {
    /// Read the ClientHello from `stream` and put it back; what it asks for.
    async fn read_hello(stream: &mut L4Stream) -> Hello {
        let mut parser = HelloParser::default();
        let mut seen = Vec::with_capacity(2048);
        let mut buf = [0u8; 4096];
        let hello = tokio::time::timeout(HELLO_WAIT, async {
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return Hello::Ordinary,
                    Ok(n) => n,
                };
                seen.extend_from_slice(&buf[..n]);
                if let Some(h) = parser.feed(&buf[..n]) {
                    return h;
                }
                if seen.len() > MAX_HELLO {
                    return Hello::Ordinary;
                }
            }
        })
        .await
        .unwrap_or(Hello::Ordinary);
        stream.rewind(&seen);
        hello
    }

    /// Answer one validation on `stream` (its ClientHello rewound) for `name`.
    async fn answer(&self, stream: &mut L4Stream, name: Option<String>) -> Result<String, TlsAlpnError> {
        let name = name.ok_or(TlsAlpnError::NoName)?;
        let key_auth = self
            .store
            .get(&store_key(&name))
            .await
            .map_err(|e| TlsAlpnError::Store(e.to_string()))?
            .ok_or_else(|| TlsAlpnError::NotPending(name.clone()))?;
        let key = challenge_certificate(&name, &key_auth)?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        cfg.alpn_protocols = vec![ACME_TLS_1.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let hs = |reason: String| TlsAlpnError::Handshake {
            name: name.clone(),
            reason,
        };
        tokio::time::timeout(ANSWER_WAIT, async {
            let mut tls = acceptor.accept(&mut *stream).await.map_err(|e| hs(e.to_string()))?;
            // RFC 8737 §3: no application data; close_notify and close.
            let _ = tls.shutdown().await;
            Ok::<_, TlsAlpnError>(())
        })
        .await
        .map_err(|_| hs("timed out".into()))??;
        Ok(name)
    }
}

#[async_trait]
impl PreTlsProcess for TlsAlpn01 {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Hello::Validation(name) = Self::read_hello(stream).await else {
            return Ok(());
        };
        let counter = &crate::metrics::global().acme_challenges;
        let label = Challenge::TlsAlpn01.label();
        let why = match self.answer(stream, name).await {
            Ok(name) => {
                counter.with_label_values(&[label, "answered"]).inc();
                log::info!("ACME tls-alpn-01: answered the validation of {name:?}");
                "ACME TLS-ALPN-01 validation answered; closed as RFC 8737 requires".to_string()
            }
            Err(e) => {
                let result = match e {
                    TlsAlpnError::NoName | TlsAlpnError::NotPending(_) => "unknown",
                    _ => "error",
                };
                counter.with_label_values(&[label, result]).inc();
                log::warn!("ACME tls-alpn-01: not answered: {e}");
                format!("ACME TLS-ALPN-01 validation not answered: {e}")
            }
        };
        // An error is Pingora's only way to end the connection here (it is logged by Pingora).
        Err(Error::explain(ErrorType::Custom("acme-tls-alpn-01"), why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello from rustls's client, with the given ALPN protocols and SNI.
    fn client_hello(alpn: &[&[u8]], sni: &str) -> Vec<u8> {
        pingora::tls::install_default_crypto_provider();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn validation_hellos_are_told_from_ordinary_ones() {
        let mut p = HelloParser::default();
        let hello = client_hello(&[ACME_TLS_1], "Shop.Example");
        assert_eq!(p.feed(&hello), Some(Hello::Validation(Some("shop.example".into()))));
        let mut p = HelloParser::default();
        assert_eq!(
            p.feed(&client_hello(&[b"h2", b"http/1.1"], "shop.example")),
            Some(Hello::Ordinary)
        );
        let mut p = HelloParser::default();
        assert_eq!(p.feed(&client_hello(&[], "shop.example")), Some(Hello::Ordinary));
        // Not TLS at all: ordinary (Pingora refuses it as before).
        let mut p = HelloParser::default();
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), Some(Hello::Ordinary));
    }

    #[test]
    fn a_hello_in_pieces_is_parsed_when_complete() {
        let hello = client_hello(&[ACME_TLS_1], "shop.example");
        let mut p = HelloParser::default();
        for byte in &hello[..hello.len() - 1] {
            assert_eq!(p.feed(std::slice::from_ref(byte)), None);
        }
        assert_eq!(
            p.feed(&hello[hello.len() - 1..]),
            Some(Hello::Validation(Some("shop.example".into())))
        );
    }

    #[test]
    fn the_challenge_certificate_carries_the_key_authorization_digest() {
        let key = challenge_certificate("shop.example", b"tok.thumb").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of the 32-byte digest.
        let digest = sha2::Sha256::digest(b"tok.thumb");
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(&ext.value[2..], digest.as_slice());
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value.general_names).contains("\"shop.example\""));
    }
}
