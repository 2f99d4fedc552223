//! The ACME TLS-ALPN-01 answerer (`src/acme/tls_alpn.rs`) reads every ClientHello on the
//! HTTPS listener before Pingora does, when `acme.challenge: tls-alpn-01` is set. What an
//! attacker sends to it: a ClientHello that never completes, bytes that are not TLS, and a
//! client offering `acme-tls/1` next to `h2` for a live hostname with no pending challenge.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::common::*;

const HOST: &str = "saas.acme.example";

fn start() -> (Setup, Tessera) {
    let mut s = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], echo_upstream()).extra("    auth: none")
    ]);
    // The directory is never contacted: no tenant asks for a certificate.
    s.extra = "acme: { directory: \"https://acme.invalid/directory\", challenge: tls-alpn-01 }\n".into();
    let t = s.start_with_env("alpn", &[("RUST_LOG", "info")]);
    (s, t)
}

fn get(s: &Setup, t: &Tessera) -> u16 {
    client_for(&s.ca_pem, t.ports.https, &[HOST], false)
        .get(t.url(HOST, "/r"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn a_stalled_or_garbage_first_flight_blocks_no_one() {
    let (s, t) = start();
    // 20 connections that send the first bytes of a TLS record header and stall, and 20
    // that send plain HTTP to the HTTPS port.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", t.ports.https)).unwrap();
        c.write_all(&[0x16, 0x03, 0x01, 0x40]).unwrap();
        stalled.push(c);
    }
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", t.ports.https)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: saas.acme.example\r\n\r\n")
            .unwrap();
        stalled.push(c);
    }
    // Ordinary clients are served meanwhile, promptly.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(&s, &t), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "5 requests took {:?} beside stalled first flights",
        started.elapsed()
    );
    drop(stalled);
    assert!(t.ready(), "tessera not ready after garbage first flights");
    assert_eq!(get(&s, &t), 200);
}

#[test]
fn acme_tls_1_beside_h2_for_a_live_hostname_is_not_served() {
    let (s, t) = start();
    assert_eq!(get(&s, &t), 200);
    pingora::tls::install_default_crypto_provider();
    let mut roots = pingora::tls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"acme-tls/1".to_vec()];
    let port = t.ports.https;
    let res = block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .map(|_| ())
    });
    // Treated as a validation: no challenge is pending for the name, so no handshake at all
    // (neither the tenant's certificate nor a challenge certificate).
    assert!(res.is_err(), "handshake offering acme-tls/1 completed");
    let counted = eventually(Duration::from_secs(5), || {
        t.metric(
            "tessera_acme_challenges_total",
            &[("challenge", "tls-alpn-01"), ("result", "unknown")],
        ) >= 1.0
    });
    assert!(counted.is_some(), "{}", t.metrics());
    assert_eq!(get(&s, &t), 200);
}
