//! Tenants at runtime: the config file reloaded while serving (real binary, real TLS, echo
//! upstream). Refusals first, then the change applied under load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn tenants() -> Setup {
    let up = echo_upstream();
    Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example"], up).extra("    auth: none\n    headers: { X-Env: prod }"),
        TenantSpec::new("globex", &["api.globex.example"], up).extra("    auth: none"),
    ])
}

/// Replace the config file in one step (rename), as an operator's deploy tool would.
fn write_config(t: &Tessera, yaml: &str) {
    let tmp = t.config.with_extension("yaml.new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, &t.config).unwrap();
}

/// The echo upstream's view of `GET https://host/` (status, received headers).
fn get(c: &reqwest::blocking::Client, t: &Tessera, host: &str) -> (u16, Value) {
    match c.get(t.url(host, "/")).send() {
        Ok(r) => {
            let s = r.status().as_u16();
            (
                s,
                r.json::<Value>().map(|v| v["headers"].clone()).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

fn reloads(t: &Tessera, result: &str) -> f64 {
    t.metric("tessera_config_reloads_total", &[("result", result)])
}

#[test]
fn bad_config_is_refused_and_the_old_one_keeps_serving() {
    let setup = tenants();
    let t = setup.start("bad");
    let c = t.client(&["saas.acme.example", "api.globex.example"]);
    assert_eq!(get(&c, &t, "saas.acme.example").0, 200);
    let good = std::fs::read_to_string(&t.config).unwrap();

    // Two problems: check-config's messages (key, value, fix) are logged, nothing applied.
    let bad = good
        .replace("X-Env: prod", "X-Env: staging")
        .replacen(
            &format!("upstream: \"{}\"", setup.tenants[1].upstream),
            "upstream: \"ftp://nowhere\"",
            1,
        )
        .replacen("hostnames: [\"saas.acme.example\"]", "hostnames: [\"bad host!\"]", 1);
    assert_ne!(bad, good);
    write_config(&t, &bad);
    let refused = eventually(Duration::from_secs(10), || reloads(&t, "invalid") >= 1.0);
    assert!(refused.is_some(), "bad config not refused; log:\n{}", t.log_text());
    let log = t.log_text();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(
        log.contains("tenants[0].upstream") && log.contains("ftp://nowhere"),
        "{log}"
    );
    assert!(log.contains("tenants[0].hostnames[0]"), "{log}");
    assert_eq!(reloads(&t, "ok"), 0.0);
    // The old config still serves, unchanged.
    let (s, h) = get(&c, &t, "saas.acme.example");
    assert_eq!((s, h["x-env"].as_str()), (200, Some("prod")));
    assert_eq!(get(&c, &t, "api.globex.example").0, 200);

    // Fixed: applied. A restart-only change in the same file is logged, not applied.
    let fixed = good
        .replace("X-Env: prod", "X-Env: staging")
        .replace("threads: 2", "threads: 1");
    write_config(&t, &fixed);
    let applied = eventually(Duration::from_secs(10), || reloads(&t, "ok") >= 1.0);
    assert!(applied.is_some(), "good config not applied; log:\n{}", t.log_text());
    assert!(t.log_text().contains("changes to threads need a restart"));
    let (s, h) = get(&c, &t, "saas.acme.example");
    assert_eq!((s, h["x-env"].as_str()), (200, Some("staging")));
}

#[test]
fn good_change_applies_under_load_without_a_failed_request() {
    let mut setup = tenants();
    let t = setup.start("good");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // A client loop on acme throughout the change: keep-alive requests, and a new connection
    // (new handshake) every 10th request.
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (ca, port) = (setup.ca_pem.clone(), t.ports.https);
        let url = t.url("saas.acme.example", "/");
        std::thread::spawn(move || {
            let mut c = client_for(&ca, port, &["saas.acme.example"], false);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if n.is_multiple_of(10) {
                    c = client_for(&ca, port, &["saas.acme.example"], false);
                }
                match c.get(&url).send() {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let c = t.client(&["saas.acme.example", "api.globex.example", "api.initech.example"]);
    assert_eq!(get(&c, &t, "api.globex.example").0, 200);
    assert!(handshake(t.ports.https, "api.globex.example", &setup.ca_pem).is_ok());
    assert!(handshake(t.ports.https, "api.initech.example", &setup.ca_pem).is_err());
    let globex_conn = t.client(&["api.globex.example"]);
    assert_eq!(get(&globex_conn, &t, "api.globex.example").0, 200);
    std::thread::sleep(Duration::from_millis(300));

    // globex removed, initech added (its certificate written first), acme's header changed.
    let up = echo_upstream();
    setup.tenants.remove(1);
    setup
        .tenants
        .push(TenantSpec::new("initech", &["api.initech.example"], up).extra("    auth: none"));
    setup.write_cert(&setup.tenants[1]);
    setup.tenants[0].extra = "    auth: none\n    headers: { X-Env: staging }\n".into();
    write_config(&t, &setup.yaml(&t.ports, "good"));

    let served = eventually(Duration::from_secs(10), || get(&c, &t, "api.initech.example").0 == 200);
    assert!(served.is_some(), "new tenant not served; log:\n{}", t.log_text());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} requests failed during the reload ({ok} ok)");
    assert!(ok >= 20, "only {ok} requests during the reload");

    assert_eq!(reloads(&t, "ok"), 1.0);
    let (s, h) = get(&c, &t, "saas.acme.example");
    assert_eq!((s, h["x-env"].as_str()), (200, Some("staging")));
    let (_, h) = get(&c, &t, "api.initech.example");
    assert_eq!(h["x-tenant-id"], "initech");
    // The removed tenant: new handshakes refused, and its open connection is refused too
    // (421: the Host no longer belongs to the tenant its handshake named).
    assert!(handshake(t.ports.https, "api.globex.example", &setup.ca_pem).is_err());
    let (s, _) = get(&globex_conn, &t, "api.globex.example");
    assert!(s == 421 || s == 0, "removed tenant answered {s}");
    let log = t.log_text();
    assert!(
        log.contains("tenants added [initech] removed [globex] changed [acme]"),
        "{log}"
    );
}
