//! Automatic certificates (ACME) against a real CA: Pebble validating HTTP-01 on Tessera's
//! `listen.http` or TLS-ALPN-01 on its `listen.https`, real TLS handshakes verified against
//! Pebble's root, real Redis for two instances.

mod common;

use std::time::Duration;

use common::pebble::Pebble;
use common::*;
use serde_json::{json, Value};

/// The YAML tenant every instance needs, plus `acme:` pointing at `pebble`.
fn setup_for(pebble: &Pebble, setup: &mut Setup, renew_before: &str) {
    setup_with(pebble, setup, renew_before, "http-01")
}

fn setup_with(pebble: &Pebble, setup: &mut Setup, renew_before: &str, challenge: &str) {
    let ca_file = setup.path("pebble-https-ca.pem");
    std::fs::write(&ca_file, &pebble.https_ca_pem).unwrap();
    setup.extra = format!(
        "acme:\n  directory: \"{}\"\n  contact: [\"mailto:ops@example.com\"]\n  ca_file: \"{}\"\n  challenge: {challenge}\n  renew_before: {renew_before}\n",
        pebble.directory,
        ca_file.display()
    );
}

fn base() -> Setup {
    Setup::new(vec![
        TenantSpec::new("static", &["static.example"], echo_upstream()).extra("    auth: none")
    ])
}

fn acme_tenant(id: &str, host: &str) -> Value {
    json!({"id": id, "hostnames": [host], "upstream": format!("http://{}", echo_upstream()),
        "auth": "none", "tls": {"acme": true}})
}

fn orders(t: &Tessera, result: &str) -> f64 {
    t.metric("tessera_acme_orders_total", &[("result", result)])
}

/// Wait for a handshake for `host` that verifies against `root`; panics with the logs if none.
fn wait_handshake(t: &Tessera, host: &str, root: &str, pebble: &Pebble) -> Vec<u8> {
    let mut leaf = Vec::new();
    let ok = eventually(Duration::from_secs(30), || match handshake(t.ports.https, host, root) {
        Ok(l) => {
            leaf = l;
            true
        }
        Err(_) => {
            std::thread::sleep(Duration::from_millis(20));
            false
        }
    });
    assert!(
        ok.is_some(),
        "no verified handshake for {host}; tessera log:\n{}\npebble log:\n{}",
        t.log_text(),
        pebble.log_text()
    );
    leaf
}

#[test]
fn http01_issues_a_certificate_that_verifies_against_pebbles_root() {
    let mut setup = base();
    let ports = Ports::new();
    let pebble = Pebble::start(setup.dir.path(), ports.http, ports.https, None);
    setup_for(&pebble, &mut setup, "30d");
    let t = setup.start_yaml("a", ports, &setup.yaml(&ports, "a"), &[]);
    let root = pebble.root_pem();

    // No certificate yet and no tls.default_cert: the handshake is refused.
    assert!(handshake(ports.https, "shop.example", &root).is_err());
    let (status, v) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201, "{v}");
    assert!(handshake(ports.https, "shop.example", &root).is_err());

    wait_handshake(&t, "shop.example", &root, &pebble);
    assert_eq!(orders(&t, "ok"), 1.0);
    // Set by the next look at the tenants (every 500 ms).
    let expiry = eventually(Duration::from_secs(5), || {
        t.metric("tessera_cert_expiry_seconds", &[("tenant", "shop")]) > 86_400.0
    });
    assert!(expiry.is_some(), "{}", t.metrics());
    // The static tenant is untouched (still its own CA's certificate).
    assert!(handshake(ports.https, "static.example", &setup.ca_pem).is_ok());

    // The admin API shows the certificate, never the key.
    let (status, v) = t.admin_call("GET", "/v1/tenants/shop", None);
    assert_eq!(status, 200);
    assert_eq!(v["tls"]["acme"], true);
    assert_eq!(v["tls"]["key"], "sealed");
    assert!(v["tls"]["cert_pem"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    let (_, list) = t.admin_call("GET", "/v1/tenants", None);
    for answer in [v.to_string(), list.to_string()] {
        assert!(
            !answer.contains("PRIVATE KEY") && !answer.contains("key_sealed"),
            "{answer}"
        );
    }
    // No key material in the log (debug level).
    let log = t.log_text();
    assert!(!log.contains("PRIVATE KEY") && !log.contains("key_pkcs8"), "{log}");
    assert!(log.contains("ACME: certificate for tenant \"shop\""), "{log}");
}

#[test]
fn an_acme_tenant_is_refused_without_an_acme_section() {
    let setup = base();
    let t = setup.start("noacme");
    let (status, v) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("tenant.tls.acme"), "{v}");
}

/// Two instances sharing a Redis and a Pebble that validates on A's ports; the ACME tenant
/// is created through B, so both race for the order (A within one tenant sync) and the CA
/// reaches A whichever ordered. Returns once both serve the certificate (the same one).
struct TwoInstances {
    redis: Redis,
    a: Tessera,
    b: Tessera,
    _pebble: Pebble,
    /// Holds the instances' files; dropped last.
    _setup: Setup,
}

fn two_instances(challenge: &str) -> TwoInstances {
    let redis = Redis::start();
    let mut setup = base();
    setup.redis_store(&redis, "");
    let ports_a = Ports::new();
    // With tls-alpn-01, Pebble's HTTP-01 port is one nothing listens on.
    let http = if challenge == "http-01" {
        ports_a.http
    } else {
        free_port()
    };
    let pebble = Pebble::start(setup.dir.path(), http, ports_a.https, None);
    setup_with(&pebble, &mut setup, "30d", challenge);
    let a = setup.start_yaml("a", ports_a, &setup.yaml(&ports_a, "a"), &[]);
    let ports_b = Ports::new();
    let b = setup.start_yaml("b", ports_b, &setup.yaml(&ports_b, "b"), &[]);
    let root = pebble.root_pem();
    let (status, v) = b.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201, "{v}");
    let leaf_a = wait_handshake(&a, "shop.example", &root, &pebble);
    let leaf_b = wait_handshake(&b, "shop.example", &root, &pebble);
    assert_eq!(leaf_a, leaf_b, "both instances serve the one certificate");
    // Longer than the ACME tick and a tenant sync: a second order would have started.
    std::thread::sleep(Duration::from_secs(2));
    TwoInstances {
        redis,
        a,
        b,
        _pebble: pebble,
        _setup: setup,
    }
}

#[test]
fn a_second_instance_serves_the_certificate_and_two_instances_order_once() {
    let TwoInstances { redis, a, b, .. } = two_instances("http-01");
    assert_eq!(
        orders(&a, "ok") + orders(&b, "ok"),
        1.0,
        "exactly one order; logs:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_eq!(orders(&a, "error") + orders(&b, "error"), 0.0);

    // The account and the certificate key are sealed in Redis.
    let keys = redis.cli(&["KEYS", "*acme:account:*"]).unwrap();
    let key = keys.lines().next().expect("account stored");
    let sealed = redis.cli(&["GET", key]).unwrap();
    assert!(!sealed.contains("key_pkcs8") && !sealed.contains("PRIVATE"), "{sealed}");
    let defs_key = redis.cli(&["KEYS", "*{tenants}:defs"]).unwrap();
    let defs = redis.cli(&["HGETALL", defs_key.trim()]).unwrap();
    assert!(defs.contains("key_sealed") && !defs.contains("PRIVATE KEY"), "{defs}");
    for t in [&a, &b] {
        let log = t.log_text();
        assert!(!log.contains("PRIVATE KEY") && !log.contains("key_pkcs8"));
    }
}

#[test]
fn a_failing_order_is_retried_and_does_not_affect_another_tenant_or_readyz() {
    let mut setup = base();
    let ports = Ports::new();
    let pebble = Pebble::start(setup.dir.path(), ports.http, ports.https, None);
    // Nothing listens on 127.0.0.2: the CA's HTTP-01 validation of this name fails.
    pebble.add_a("broken.example", "127.0.0.2");
    setup_for(&pebble, &mut setup, "30d");
    let t = setup.start_yaml("a", ports, &setup.yaml(&ports, "a"), &[]);
    let root = pebble.root_pem();

    let (status, _) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("broken", "broken.example")));
    assert_eq!(status, 201);
    let (status, _) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201);
    wait_handshake(&t, "shop.example", &root, &pebble);
    // Retried with backoff (2 s, then 4 s): at least two failed orders.
    let retried = eventually(Duration::from_secs(30), || orders(&t, "error") >= 2.0);
    assert!(retried.is_some(), "not retried; log:\n{}", t.log_text());
    assert!(handshake(ports.https, "broken.example", &root).is_err());
    assert!(t.ready(), "/readyz must not depend on ACME");
    assert_eq!(orders(&t, "ok"), 1.0);
    let log = t.log_text();
    assert!(
        log.contains("order for tenant \"broken\"") && log.contains("retrying in"),
        "{log}"
    );
}

#[test]
fn a_certificate_due_for_renewal_is_replaced() {
    let mut setup = base();
    let ports = Ports::new();
    // One-hour certificates, renewed when 2 h or less remain: every certificate is due.
    let pebble = Pebble::start(setup.dir.path(), ports.http, ports.https, Some(3600));
    setup_for(&pebble, &mut setup, "2h");
    let t = setup.start_yaml("a", ports, &setup.yaml(&ports, "a"), &[]);
    let root = pebble.root_pem();
    let (status, _) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201);
    let first = wait_handshake(&t, "shop.example", &root, &pebble);
    let renewed = eventually(Duration::from_secs(30), || {
        orders(&t, "ok") >= 2.0 && handshake(ports.https, "shop.example", &root).is_ok_and(|l| l != first)
    });
    assert!(renewed.is_some(), "not renewed; log:\n{}", t.log_text());
    let expiry = eventually(Duration::from_secs(5), || {
        let e = t.metric("tessera_cert_expiry_seconds", &[("tenant", "shop")]);
        e > 0.0 && e <= 3600.0
    });
    assert!(expiry.is_some(), "{}", t.metrics());
}

fn challenges(t: &Tessera, result: &str) -> f64 {
    t.metric(
        "tessera_acme_challenges_total",
        &[("challenge", "tls-alpn-01"), ("result", result)],
    )
}

/// A handshake offering only ALPN `acme-tls/1` for `sni`, the way a CA validates; the
/// certificate it got, or the error.
fn acme_tls_handshake(port: u16, sni: &str) -> Result<Vec<u8>, String> {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    /// The validation checks the certificate's contents, not its chain.
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls_pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls_pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pingora::tls::install_default_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default().unwrap().clone();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(b"acme-tls/1") {
            return Err(format!("ALPN {:?}", conn.alpn_protocol()));
        }
        Ok(conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    })
}

#[test]
fn tls_alpn01_is_answered_on_the_https_listener_and_ordinary_traffic_is_untouched() {
    let mut setup = base();
    let ports = Ports::new();
    // Pebble's HTTP-01 port is one nothing listens on: only TLS-ALPN-01 can succeed.
    let pebble = Pebble::start(setup.dir.path(), free_port(), ports.https, None);
    setup_with(&pebble, &mut setup, "30d", "tls-alpn-01");
    let t = setup.start_yaml("a", ports, &setup.yaml(&ports, "a"), &[]);
    let root = pebble.root_pem();

    // A validation handshake for a name with no pending challenge is refused and counted.
    assert!(acme_tls_handshake(ports.https, "nobody.example").is_err());
    let counted = eventually(Duration::from_secs(5), || challenges(&t, "unknown") >= 1.0);
    assert!(counted.is_some(), "{}", t.metrics());

    let (status, v) = t.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201, "{v}");
    wait_handshake(&t, "shop.example", &root, &pebble);
    assert_eq!(orders(&t, "ok"), 1.0);
    assert!(challenges(&t, "answered") >= 1.0, "{}", t.metrics());

    // Ordinary connections go through the pre-TLS reader to Pingora unchanged: requests over
    // HTTP/1.1 and HTTP/2 for the static tenant, and for the new one with its ACME certificate.
    for h2 in [false, true] {
        let c = client_for(&setup.ca_pem, ports.https, &["static.example"], h2);
        let r = c.get(t.url("static.example", "/r")).send().unwrap();
        assert_eq!(r.status(), 200, "h2={h2}");
        let c = client_for(&root, ports.https, &["shop.example"], h2);
        let r = c.get(t.url("shop.example", "/r")).send().unwrap();
        assert_eq!(r.status(), 200, "h2={h2}");
    }
    // The challenge is gone once the order is done: a late validation is not answered.
    assert!(acme_tls_handshake(ports.https, "shop.example").is_err());
}

#[test]
fn tls_alpn01_is_answered_by_an_instance_that_did_not_order() {
    let TwoInstances { a, b, .. } = two_instances("tls-alpn-01");
    assert_eq!(orders(&a, "ok") + orders(&b, "ok"), 1.0);
    // Pebble only ever reaches A; A answered whichever instance ordered.
    assert!(challenges(&a, "answered") >= 1.0, "{}", a.metrics());
    assert_eq!(challenges(&b, "answered"), 0.0);
}
