//! Proxy core: per-tenant TLS, routing, header injection, upstream TLS, reload, lifecycle.
//! Failure cases first, then the happy paths.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn leaf_der(pem_path: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(pem_path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn two_tenants() -> (Setup, std::net::SocketAddr) {
    let up = echo_upstream();
    let setup = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example", "*.acme.example"], up)
            .extra("    auth: none\n    headers: { X-Env: prod, X-Team: integrations }"),
        TenantSpec::new("globex", &["api.globex.example"], up)
            .extra("    auth: none\n    tenant_header: X-Amz-Tenant-Id"),
    ]);
    (setup, up)
}

#[test]
fn tls_certificate_chosen_by_sni_and_unknown_sni_refused() {
    let (setup, _) = two_tenants();
    let t = setup.start("sni");
    let acme = handshake(t.ports.https, "saas.acme.example", &setup.ca_pem).unwrap();
    assert_eq!(acme, leaf_der(&setup.path("acme.pem")));
    let wild = handshake(t.ports.https, "eu.acme.example", &setup.ca_pem).unwrap();
    assert_eq!(wild, leaf_der(&setup.path("acme.pem")));
    let globex = handshake(t.ports.https, "api.globex.example", &setup.ca_pem).unwrap();
    assert_eq!(globex, leaf_der(&setup.path("globex.pem")));
    assert_ne!(acme, globex);
    // No tenant, no default certificate: the handshake is refused.
    let err = handshake(t.ports.https, "unknown.example", &setup.ca_pem).unwrap_err();
    assert!(!err.is_empty());
    // Two labels under a wildcard do not match it.
    assert!(handshake(t.ports.https, "a.b.acme.example", &setup.ca_pem).is_err());
}

#[test]
fn default_cert_serves_unknown_sni_with_404_json() {
    let (mut setup, _) = two_tenants();
    let leaf = setup.ca.issue(&["fallback.example"]).unwrap();
    let (cert, key) = leaf.write(setup.dir.path(), "fallback").unwrap();
    setup.extra = format!(
        "tls: {{ reload_interval: 200ms, default_cert: {{ cert: \"{}\", key: \"{}\" }} }}\n",
        cert.display(),
        key.display()
    );
    // `tls:` appears twice otherwise; drop the harness default by rendering ourselves.
    let ports = Ports::new();
    let yaml = setup
        .yaml(&ports, "dflt")
        .replacen("tls: { reload_interval: 200ms }\n", "", 1);
    let t = setup.start_yaml("dflt", ports, &yaml, &[]);
    assert_eq!(
        handshake(t.ports.https, "fallback.example", &setup.ca_pem).unwrap(),
        leaf_der(&cert)
    );
    let c = t.client(&["fallback.example"]);
    let r = c.get(t.url("fallback.example", "/x")).send().unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "no_tenant");
}

#[test]
fn host_of_another_tenant_is_misdirected_421() {
    let (setup, _) = two_tenants();
    let t = setup.start("421");
    let c = t.client(&["saas.acme.example"]);
    let r = c
        .get(t.url("saas.acme.example", "/x"))
        .header("host", "api.globex.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 421);
    assert_eq!(r.headers()["content-type"], "application/json");
    // A Host no tenant serves, on a known SNI: also misdirected.
    let r = c
        .get(t.url("saas.acme.example", "/x"))
        .header("host", "nobody.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 421);
    // Plain HTTP listener: unknown Host → 404 JSON.
    let r = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/x", t.ports.http))
        .header("host", "nobody.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["error"], "no_tenant");
    assert!(t.metric("tessera_bad_requests_total", &[("reason", "misdirected")]) >= 2.0);
}

#[test]
fn tenant_and_forwarding_headers_are_set_and_spoofs_removed() {
    let (setup, up) = two_tenants();
    let t = setup.start("hdr");
    let c = t.client(&["saas.acme.example", "api.globex.example"]);
    let r = c
        .get(t.url("saas.acme.example", "/v1/items?x=1"))
        .header("x-tenant-id", "globex")
        .header("x-env", "spoofed")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "http")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-request-id", "client-req-1")
        .header("authorization", "Bearer client-supplied")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-req-1");
    let v: Value = r.json().unwrap();
    let h = &v["headers"];
    assert_eq!(v["path"], "/v1/items?x=1");
    assert_eq!(h["x-tenant-id"], "acme", "client cannot choose its tenant");
    assert_eq!(h["x-env"], "prod");
    assert_eq!(h["x-team"], "integrations");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], format!("saas.acme.example:{}", t.ports.https));
    assert_eq!(h["host"], up.to_string());
    assert_eq!(h["x-request-id"], "client-req-1");
    assert!(h.get("x-hop").is_none(), "Connection-listed header forwarded");
    assert!(h.get("proxy-authorization").is_none());
    assert!(
        h.get("authorization").is_none(),
        "auth: none strips the client's Authorization"
    );

    // Configured header name (Lambda tenant isolation) and a generated request id.
    let r = c
        .get(t.url("api.globex.example", "/"))
        .header("x-amz-tenant-id", "acme")
        .header("x-request-id", "bad id with spaces")
        .send()
        .unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(rid, "bad id with spaces");
    let v: Value = r.json().unwrap();
    assert_eq!(v["headers"]["x-amz-tenant-id"], "globex");
    assert!(v["headers"].get("x-tenant-id").is_none());
    assert_eq!(v["headers"]["x-request-id"], rid.as_str());
}

#[test]
fn http2_works() {
    let (setup, _) = two_tenants();
    let t = setup.start("h2");
    let c = client_for(&setup.ca_pem, t.ports.https, &["saas.acme.example"], true);
    for _ in 0..3 {
        let r = c.post(t.url("saas.acme.example", "/h2")).body("hello").send().unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        assert_eq!(v["headers"]["x-tenant-id"], "acme");
        assert_eq!(v["body_len"], 5);
    }
}

#[test]
fn https_upstream_verified_and_bad_upstream_cert_refused() {
    let ca = tessera::demo::certs::DemoCa::new("upstream CA").unwrap();
    let good = echo_upstream_tls(&ca, &["localhost"]);
    let wrong_name = echo_upstream_tls(&ca, &["other.example"]);
    let other_ca = tessera::demo::certs::DemoCa::new("rogue CA").unwrap();
    let rogue = echo_upstream_tls(&other_ca, &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let spec = |id: &str, host: &str, addr: std::net::SocketAddr| {
        let mut s = TenantSpec::new(id, &[host], addr)
            .extra(&format!("    auth: none\n    upstream_ca: \"{}\"", ca_file.display()));
        s.upstream = format!("https://localhost:{}", addr.port());
        s
    };
    let setup = Setup::new(vec![
        spec("good", "good.example", good),
        spec("wrongname", "wrongname.example", wrong_name),
        spec("rogue", "rogue.example", rogue),
    ]);
    let t = setup.start("uptls");
    let c = t.client(&["good.example", "wrongname.example", "rogue.example"]);
    let r = c.get(t.url("wrongname.example", "/")).send().unwrap();
    assert_eq!(r.status(), 502, "hostname mismatch must fail");
    assert_eq!(r.json::<Value>().unwrap()["error"], "bad_gateway");
    let r = c.get(t.url("rogue.example", "/")).send().unwrap();
    assert_eq!(r.status(), 502, "untrusted CA must fail");
    let r = c.get(t.url("good.example", "/ok")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["headers"]["x-tenant-id"], "good");
}

#[test]
fn unreachable_upstream_is_502_json() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let setup = Setup::new(vec![
        TenantSpec::new("dead", &["dead.example"], dead).extra("    auth: none")
    ]);
    let t = setup.start("dead");
    let r = t
        .client(&["dead.example"])
        .get(t.url("dead.example", "/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "bad_gateway");
    // The session record says why (fail_to_proxy's refusal reaches the logging phase).
    let found = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| r["status"] == 502 && r["refusal"] == "upstream_error")
    });
    assert!(
        found.is_some(),
        "no session record with refusal upstream_error: {}",
        std::fs::read_to_string(&t.sessions).unwrap_or_default()
    );
}

#[test]
fn certificate_hot_reload_seen_by_next_handshake_and_bad_file_keeps_old() {
    let (setup, _) = two_tenants();
    let t = setup.start("reload");
    let before = handshake(t.ports.https, "saas.acme.example", &setup.ca_pem).unwrap();
    // A long-lived connection opened before the reload keeps working.
    let c = t.client(&["saas.acme.example"]);
    assert_eq!(c.get(t.url("saas.acme.example", "/")).send().unwrap().status(), 200);

    let new_leaf = setup.write_cert(&setup.tenants[0]);
    let new_der = leaf_der(&setup.path("acme.pem"));
    assert_ne!(before, new_der);
    let seen = eventually(Duration::from_secs(10), || {
        handshake(t.ports.https, "saas.acme.example", &setup.ca_pem).ok() == Some(new_der.clone())
    });
    assert!(seen.is_some(), "new certificate not served");
    assert_eq!(c.get(t.url("saas.acme.example", "/")).send().unwrap().status(), 200);
    drop(new_leaf);

    // A broken certificate file: the previous certificate stays, an error is logged.
    // (Count earlier failures: writing cert then key non-atomically can fail once in between.)
    let failures = || t.log_text().matches("certificate reload failed").count();
    let before = failures();
    std::fs::write(
        setup.path("acme.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let logged = eventually(Duration::from_secs(10), || failures() > before);
    assert!(logged.is_some(), "reload error not logged");
    assert_eq!(
        handshake(t.ports.https, "saas.acme.example", &setup.ca_pem).unwrap(),
        new_der
    );
    assert!(t.metric("tessera_cert_reloads_total", &[("result", "error")]) >= 1.0);
    assert!(t.metric("tessera_cert_reloads_total", &[("result", "ok")]) >= 1.0);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let (setup, _) = two_tenants();
    let mut t = setup.start("drain");
    let c = t.client(&["saas.acme.example"]);
    let url = t.url("saas.acme.example", "/delay/1500");
    let inflight = std::thread::spawn(move || c.get(url).send().map(|r| r.status().as_u16()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.terminate(), "tessera did not exit cleanly after SIGTERM");
    assert_eq!(inflight.join().unwrap().unwrap(), 200, "in-flight request was cut");
}

#[test]
fn example_config_and_check_config_command() {
    // The shipped example must pass check-config (it references certs/ and conf/ fixtures).
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(root)
        .args(["check-config", "-c", "conf/tessera.example.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    // A broken config: exit code non-zero, messages name key, value and fix.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: { https: \"nonsense\" }\ntenants:\n  - id: Acme!\n    hostnames: [\"bad host\"]\n    cert: /nope.pem\n    key: /nope.key\n    upstream: ftp://x\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["check-config", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "listen.https",
        "\"nonsense\"",
        "tenants[0].id",
        "tenants[0].hostnames[0]",
        "tenants[0].upstream",
        "http:// or https://",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Unknown keys are errors.
    std::fs::write(&bad, "listen: { https: \"127.0.0.1:1\", htps: \"x\" }\ntenants: []\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["check-config", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `htps`"));
}

#[test]
fn long_requests_are_cut_at_max_request_duration() {
    let (mut setup, _) = two_tenants();
    setup.upstream = "{ connect_timeout: 2s, read_timeout: 10s, max_request_duration: 1s }".into();
    let t = setup.start("maxdur");
    let c = t.client(&["saas.acme.example"]);
    // Within the bound: fine.
    let r = c.get(t.url("saas.acme.example", "/delay/100")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().is_ok());
    // Past the bound: a 504, or (once streaming has begun) a cut body.
    if let Ok(r) = c.get(t.url("saas.acme.example", "/delay/1500")).send() {
        let status = r.status();
        let body = r.text();
        assert!(
            status == 504 || body.is_err(),
            "completed past the bound: {status} {body:?}"
        );
    }
    assert!(t.log_text().contains("max_request_duration"));
}

/// `proxy::lean`: HTTP/2 requests without a body skip pingora-proxy's machinery but run the
/// same phases: token swap, tenant and forwarding headers, refusals, upstream errors, session
/// records, revocation per request. Requests with a body go through pingora-proxy.
#[test]
fn lean_path_serves_http2_requests_without_a_body() {
    const UPSTREAM_TOKEN: &str = "ghp_LeanPathUpstreamSecret0123456789";
    let up = echo_upstream();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let setup = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example"], up),
        TenantSpec::new("dead", &["dead.example"], dead).extra("    auth: none"),
    ]);
    let t = setup.start("lean");
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let h2 = client_for(
        &setup.ca_pem,
        t.ports.https,
        &["saas.acme.example", "dead.example"],
        true,
    );
    let served = |path: &str| t.metric("tessera_request_paths_total", &[("path", path)]);

    let r = h2
        .get(t.url("saas.acme.example", "/v1/items?x=1"))
        .bearer_auth(&part_a)
        .header("x-request-id", "lean-1")
        .header("x-tenant-id", "globex")
        .send()
        .unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    assert_eq!(r.headers()["x-request-id"], "lean-1");
    let v: Value = r.json().unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/v1/items?x=1");
    let h = &v["headers"];
    assert_eq!(h["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));
    assert_eq!(h["x-tenant-id"], "acme", "client cannot choose its tenant");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], format!("saas.acme.example:{}", t.ports.https));
    assert_eq!(h["host"], up.to_string());
    assert_eq!(h["x-request-id"], "lean-1");
    assert_eq!((served("lean"), served("pingora_proxy")), (1.0, 0.0));

    // A wrong Part A: the same JSON 401, from the lean path.
    let wrong = format!("{}x", &part_a[..part_a.len() - 1]);
    let r = h2
        .get(t.url("saas.acme.example", "/v1/items"))
        .bearer_auth(&wrong)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(r.json::<Value>().unwrap()["error"], "invalid_token");

    // A body: pingora-proxy, same answer shape.
    let r = h2
        .post(t.url("saas.acme.example", "/upload"))
        .bearer_auth(&part_a)
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!((v["body_len"].as_u64(), v["method"].as_str()), (Some(5), Some("POST")));
    assert_eq!(v["headers"]["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));

    // An upstream that does not answer: JSON 502 from the lean path's fail_to_proxy.
    let r = h2.get(t.url("dead.example", "/")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.json::<Value>().unwrap()["error"], "bad_gateway");
    assert_eq!((served("lean"), served("pingora_proxy")), (3.0, 1.0));

    // Revoked: the next request on the same connection is refused.
    t.admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{id}"), None);
    let refused = eventually(Duration::from_secs(2), || {
        let r = h2
            .get(t.url("saas.acme.example", "/v1/items"))
            .bearer_auth(&part_a)
            .send()
            .unwrap();
        r.status() == 401
    });
    assert!(refused.is_some(), "revoked token still accepted on the lean path");

    // Session records for lean requests: status, token id, refusal reasons.
    let records = || -> Vec<Value> {
        std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let found = eventually(Duration::from_secs(5), || {
        let r = records();
        let ok = r
            .iter()
            .any(|r| r["status"] == 200 && r["token_id"] == id.as_str() && r["upstream_status"] == 200);
        let bad = r.iter().any(|r| r["status"] == 502 && r["refusal"] == "upstream_error");
        ok && bad
    });
    assert!(found.is_some(), "session records missing: {:?}", records());
    assert_not_in_files(&[&t.log, &t.sessions], &[UPSTREAM_TOKEN, &part_a[4..]]);
}

/// `lean_path: false`: every request through pingora-proxy.
#[test]
fn lean_path_off_sends_every_request_through_pingora_proxy() {
    let (mut setup, _) = two_tenants();
    setup.extra = "lean_path: false\n".into();
    let t = setup.start("nolean");
    let h2 = client_for(&setup.ca_pem, t.ports.https, &["saas.acme.example"], true);
    let r = h2.get(t.url("saas.acme.example", "/x")).send().unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    assert_eq!(r.json::<Value>().unwrap()["headers"]["x-tenant-id"], "acme");
    let served = |path: &str| t.metric("tessera_request_paths_total", &[("path", path)]);
    assert_eq!((served("lean"), served("pingora_proxy")), (0.0, 1.0));
}

/// `proxy::lean` over HTTP/1.1: body-less requests are served by the lean path, a request with
/// a body is handed to pingora-proxy after its head was read (the head and the body bytes read
/// with it are replayed), and the same keep-alive connection carries on either way.
#[test]
fn lean_path_http1_hands_bodies_to_pingora_proxy_on_the_same_connection() {
    const UPSTREAM_TOKEN: &str = "ghp_LeanPathH1UpstreamSecret012345678";
    let up = echo_upstream();
    let setup = Setup::new(vec![TenantSpec::new("acme", &["saas.acme.example"], up)]);
    let t = setup.start("leanh1");
    let (_, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let host = format!("saas.acme.example:{}", t.ports.https);
    let mut conn = raw::TlsConn::connect(t.ports.https, "saas.acme.example", &setup.ca_pem);
    let served = |path: &str| t.metric("tessera_request_paths_total", &[("path", path)]);
    let json = |(head, body): (String, Vec<u8>)| -> Value {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_slice(&body).unwrap()
    };

    // 1. GET: lean.
    conn.send(format!("GET /one HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\n\r\n").as_bytes());
    let v = json(conn.response());
    assert_eq!((v["method"].as_str(), v["path"].as_str()), (Some("GET"), Some("/one")));
    assert_eq!(v["headers"]["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));
    assert_eq!(v["headers"]["x-tenant-id"], "acme");
    assert_eq!((served("lean"), served("pingora_proxy")), (1.0, 0.0));

    // 2. POST with its body in the same write as the head: handed over, body intact.
    conn.send(
        format!(
            "POST /two HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\nContent-Length: 5\r\n\r\nhello"
        )
        .as_bytes(),
    );
    let v = json(conn.response());
    assert_eq!((v["path"].as_str(), v["body_len"].as_u64()), (Some("/two"), Some(5)));
    assert_eq!(v["headers"]["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));

    // 3. A chunked upload sent after its head, in pieces: handed over, every byte arrives.
    conn.send(
        format!(
            "POST /three HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    );
    let piece = vec![b'x'; 70_000];
    for _ in 0..3 {
        conn.send(format!("{:x}\r\n", piece.len()).as_bytes());
        conn.send(&piece);
        conn.send(b"\r\n");
    }
    conn.send(b"0\r\n\r\n");
    let v = json(conn.response());
    assert_eq!(
        (v["path"].as_str(), v["body_len"].as_u64()),
        (Some("/three"), Some(210_000))
    );

    // 4. A client-chosen tenant header and a wrong Part A, back on the lean path.
    conn.send(
        format!("GET /four HTTP/1.1\r\nHost: {host}\r\nX-Tenant-Id: globex\r\nAuthorization: Bearer {part_a}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(json(conn.response())["headers"]["x-tenant-id"], "acme");
    let wrong = format!("{}x", &part_a[..part_a.len() - 1]);
    conn.send(format!("GET /five HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {wrong}\r\n\r\n").as_bytes());
    let (head, _) = conn.response();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // A 401 keeps the connection (the client may retry): one more request on it.
    conn.send(format!("HEAD /six HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\n\r\n").as_bytes());
    let head = conn.head_only();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // And the connection is still in step: the next answer is the next request's.
    conn.send(format!("GET /seven HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\n\r\n").as_bytes());
    assert_eq!(json(conn.response())["path"], "/seven");
    assert_eq!((served("lean"), served("pingora_proxy")), (5.0, 2.0));
}

/// `proxy::lean` to an upstream that speaks only HTTP/2: the head goes out with `:authority`
/// from the upstream host, the answer (no length) reaches an HTTP/1.1 client chunked on a
/// connection that stays usable, and an HTTP/2 client gets it too.
#[test]
fn lean_path_reaches_an_http2_upstream() {
    const UPSTREAM_TOKEN: &str = "ghp_LeanPathH2UpstreamSecret01234567";
    let ca = tessera::demo::certs::DemoCa::new("upstream CA").unwrap();
    let up = echo_upstream_h2(&ca, &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let mut spec = TenantSpec::new("acme", &["saas.acme.example"], up)
        .extra(&format!("    upstream_ca: \"{}\"", ca_file.display()));
    spec.upstream = format!("https://localhost:{}", up.port());
    let setup = Setup::new(vec![spec]);
    let t = setup.start("leanh2up");
    let (_, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let host = format!("saas.acme.example:{}", t.ports.https);
    let served = |path: &str| t.metric("tessera_request_paths_total", &[("path", path)]);

    let mut conn = raw::TlsConn::connect(t.ports.https, "saas.acme.example", &setup.ca_pem);
    for path in ["/a?q=1", "/b"] {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\n\r\n").as_bytes());
        let (head, body) = conn.response();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(raw::header_values(&head, "transfer-encoding"), ["chunked"], "{head}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["proto"].as_str(), v["path"].as_str()), (Some("h2"), Some(path)));
        assert_eq!(v["authority"], format!("localhost:{}", up.port()));
        assert_eq!(v["headers"]["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));
        assert_eq!(v["headers"]["x-tenant-id"], "acme");
    }
    // A body: handed over to pingora-proxy, same upstream protocol.
    conn.send(
        format!("POST /c HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {part_a}\r\nContent-Length: 3\r\n\r\nabc")
            .as_bytes(),
    );
    let (head, body) = conn.response();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["proto"].as_str(), v["body_len"].as_u64()), (Some("h2"), Some(3)));

    let h2 = client_for(&setup.ca_pem, t.ports.https, &["saas.acme.example"], true);
    let r = h2
        .get(t.url("saas.acme.example", "/d"))
        .bearer_auth(&part_a)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!((v["proto"].as_str(), v["path"].as_str()), (Some("h2"), Some("/d")));
    assert_eq!((served("lean"), served("pingora_proxy")), (3.0, 1.0));
}

/// `proxy::lean` retries an idempotent request on a new connection when the pooled one it took
/// turns out dead (the upstream reads the request and closes), as pingora-proxy does.
#[test]
fn lean_path_retries_a_dead_pooled_connection() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = conns.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                // First request: answered (keep-alive). Second: read, then the connection closes.
                for n in 0..2 {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    if n == 0 {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    let setup = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example"], up).extra("    auth: none")
    ]);
    let t = setup.start("leanretry");
    let c = t.client(&["saas.acme.example"]);
    for i in 0..3 {
        let r = c.get(t.url("saas.acme.example", &format!("/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().unwrap(), "ok");
    }
    // Requests 2 and 3 each found the pooled connection dead and were sent again.
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(t.metric("tessera_request_paths_total", &[("path", "lean")]), 3.0);
    assert!(t.log_text().contains("retry: true"), "{}", t.log_text());
}

/// `proxy::lean`: a client that goes away while the upstream works ends the exchange at once
/// (as pingora-proxy's duplex loop does) instead of when the upstream answers.
#[test]
fn lean_path_drops_the_upstream_request_of_a_client_that_left() {
    let (setup, _) = two_tenants();
    let t = setup.start("leangone");
    let host = format!("saas.acme.example:{}", t.ports.https);
    let mut conn = raw::TlsConn::connect(t.ports.https, "saas.acme.example", &setup.ca_pem);
    conn.send(format!("GET /delay/3000 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    std::thread::sleep(Duration::from_millis(200));
    let sent = std::time::Instant::now();
    drop(conn);
    let record = || {
        std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["path"] == "/delay/3000")
    };
    let seen = eventually(Duration::from_secs(6), || record().is_some());
    assert!(seen.is_some(), "no session record");
    let r = record().unwrap();
    assert_eq!(r["status"], 0, "{r}");
    assert!(
        sent.elapsed() < Duration::from_millis(2500),
        "ended only with the upstream: {r}"
    );
    assert_eq!(t.metric("tessera_request_paths_total", &[("path", "lean")]), 1.0);
}
