//! Automatic certificates (ACME) against a real CA: Pebble validating HTTP-01 on Tessera's
//! `listen.http`, real TLS handshakes verified against Pebble's root, real Redis for two
//! instances.

mod common;

use std::time::Duration;

use common::pebble::Pebble;
use common::*;
use serde_json::{json, Value};

/// The YAML tenant every instance needs, plus `acme:` pointing at `pebble`.
fn setup_for(pebble: &Pebble, setup: &mut Setup, renew_before: &str) {
    let ca_file = setup.path("pebble-https-ca.pem");
    std::fs::write(&ca_file, &pebble.https_ca_pem).unwrap();
    setup.extra = format!(
        "acme:\n  directory: \"{}\"\n  contact: [\"mailto:ops@example.com\"]\n  ca_file: \"{}\"\n  challenge: http-01\n  renew_before: {renew_before}\n",
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

#[test]
fn a_second_instance_serves_the_certificate_and_two_instances_order_once() {
    let redis = Redis::start();
    let mut setup = base();
    setup.redis_store(&redis, "");
    let ports_a = Ports::new();
    let pebble = Pebble::start(setup.dir.path(), ports_a.http, ports_a.https, None);
    setup_for(&pebble, &mut setup, "30d");
    let a = setup.start_yaml("a", ports_a, &setup.yaml(&ports_a, "a"), &[]);
    let ports_b = Ports::new();
    let b = setup.start_yaml("b", ports_b, &setup.yaml(&ports_b, "b"), &[]);
    let root = pebble.root_pem();

    // Created through B: both instances race for the order (A within one tenant sync);
    // Pebble validates on A's port, which answers from the shared store.
    let (status, v) = b.admin_call("POST", "/v1/tenants", Some(acme_tenant("shop", "shop.example")));
    assert_eq!(status, 201, "{v}");
    let leaf_a = wait_handshake(&a, "shop.example", &root, &pebble);
    let leaf_b = wait_handshake(&b, "shop.example", &root, &pebble);
    assert_eq!(leaf_a, leaf_b, "both instances serve the one certificate");
    std::thread::sleep(Duration::from_secs(2 * 500 / 1000 + 1));
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
